import pandas as pd

from brainssl.tasks.figures import save_fraction_curves
from brainssl.tasks.results import result_row


def test_fraction_curves_draw_seeds_whose_values_round_apart(tmp_path):
    # three equal seeds whose mean lies a rounding error outside [min, max]
    value = 0.7  # pandas: mean of [0.7] * 3 - 0.7 = -1.1e-16
    rows = [
        result_row(
            task="sequence",
            dataset="brats21",
            encoder="moco-vit_tiny",
            mode="frozen",
            label_fraction=fraction,
            seed=seed,
            metric="auc",
            value=value,
        )
        for fraction in (0.1, 1.0)
        for seed in range(3)
    ]
    save_fraction_curves(pd.DataFrame(rows), tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0
