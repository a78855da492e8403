"""Report figures: written, showing what they claim; the montage's dropped row shows the emptier slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from slices_helpers import write_table_fixture

from brainssl.io import write_table
from brainssl.slices import (
    SliceSettings,
    build_slice_shard,
    load_shard_rows,
    plan_shards,
    save_entropy_histogram,
    save_retention_figure,
    save_slice_figures,
    save_slice_montage,
)
from brainssl.splits import DEFAULT_FRACTIONS as FRACTIONS


def _shard_stats(tmp_path: Path, settings: SliceSettings) -> pd.DataFrame:
    table = write_table_fixture(tmp_path, "ixi", n_subjects=2, seed=1)
    plan = tmp_path / "plan.tsv"
    write_table(plan, plan_shards(pd.read_csv(table, sep="\t"), 4, FRACTIONS, seed=0))
    files = [tmp_path / f"s.{k}" for k in ("npy", "labels.npy", "index.parquet", "stats.parquet")]
    build_slice_shard(load_shard_rows(table, plan, 0), settings, 0, *files)
    return pd.read_parquet(files[3])


def _stats() -> pd.DataFrame:
    """Two datasets: ixi keeps 3 of 4 slices, brats21 1 of 2 (a 2D dataset: no position)."""
    return pd.DataFrame(
        {
            "dataset": ["ixi"] * 4 + ["brats21"] * 2,
            "contrast": ["T1w", "T1w", "T2w", "T2w", "", ""],
            "position": [0.05, 0.45, 0.55, 0.95, np.nan, np.nan],
            "entropy": [1.0, 4.0, 4.5, 5.0, 2.0, 3.0],
            "threshold": [2.0, 2.0, 3.0, 3.0, 2.5, 2.5],
            "kept": [False, True, True, True, False, True],
        }
    )


def test_figures_written(tmp_path: Path) -> None:
    settings = SliceSettings(size=32, montage_slices=4)
    stats = _shard_stats(tmp_path, settings)
    paths = save_slice_figures(stats, settings, tmp_path / "fig")
    for name in ("entropy.png", "retained.png", "montage.png"):
        with Image.open(paths[name]) as image:
            assert image.size[0] > 200
    retained = pd.read_csv(paths["retained.tsv"], sep="\t")
    overall = retained[retained["position_bin"] == "all"].iloc[0]
    assert overall["kept"] == stats["kept"].sum()


def test_entropy_histogram_panels_bars_and_thresholds(tmp_path: Path) -> None:
    fig = save_entropy_histogram(_stats(), tmp_path / "entropy.png")
    assert (tmp_path / "entropy.png").stat().st_size > 0
    brats, ixi = fig.axes
    assert brats.get_title() == "brats21: 1/2 kept" and ixi.get_title() == "ixi: 3/4 kept"
    for ax in (brats, ixi):
        assert ax.get_xlabel() == "entropy (bits)" and ax.get_ylabel() == "slices"
        assert [t.get_text() for t in ax.get_legend().get_texts()][:2] == ["kept", "dropped"]
        assert len(ax.patches) == 2 * 40, "40 bins, kept and dropped stacked"
        assert np.isfinite(ax.get_xlim()).all() and np.isfinite(ax.get_ylim()).all()
    kept_bars, dropped_bars = ixi.patches[:40], ixi.patches[40:]
    assert sum(p.get_height() for p in kept_bars) == 3
    assert sum(p.get_height() for p in dropped_bars) == 1
    # one threshold line per contrast, at its median threshold, named in the legend (not on the plot,
    # where the labels of close thresholds overlapped), each in its own colour and dash
    assert sorted(line.get_xdata()[0] for line in ixi.get_lines()) == [2.0, 3.0]
    assert [t.get_text() for t in ixi.get_legend().get_texts()][2:] == [
        "threshold T1w: 2.00",
        "threshold T2w: 3.00",
    ]
    assert [t.get_text() for t in brats.get_legend().get_texts()][2:] == ["threshold 2D: 2.50"]
    assert not ixi.texts and not brats.texts
    styles = {(line.get_color(), line.get_linestyle()) for line in ixi.get_lines()}
    assert len(styles) == 2, "each contrast's threshold is told apart by colour and dash"


def test_entropy_histogram_thresholds_a_hair_apart_stay_readable(tmp_path: Path) -> None:
    """fastMRI: four contrasts whose thresholds lie within one bar; every one is named, none overlaps."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    contrasts = ("FLAIR", "T1", "T1POST", "T2")
    stats = pd.DataFrame(
        {
            "dataset": "fastmri_brain",
            "contrast": np.repeat(contrasts, 10),
            "position": np.nan,
            "entropy": np.tile(np.linspace(0.5, 6.0, 10), 4),
            "threshold": np.repeat([2.10, 2.12, 2.15, 2.20], 10),
        }
    )
    stats["kept"] = stats["entropy"] >= stats["threshold"]
    fig = save_entropy_histogram(stats, tmp_path / "entropy.png")
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[2:] == [
        f"threshold {m}: {v:.2f}" for m, v in zip(contrasts, (2.10, 2.12, 2.15, 2.20), strict=True)
    ]
    assert len({(line.get_color(), str(line.get_linestyle())) for line in ax.get_lines()}) == 4
    renderer = FigureCanvasAgg(fig).get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    assert legend.x0 >= ax.get_window_extent(renderer).x1, "the legend sits beside the bars, not over them"
    assert legend.x1 <= fig.bbox.width, "and inside the figure"


def test_retention_figure_bars_per_dataset_and_lines_per_position_bin(tmp_path: Path) -> None:
    fig = save_retention_figure(_stats(), tmp_path / "retained.png")
    left, right = fig.axes
    assert left.get_title() == "retained by dataset" and left.get_ylabel() == "kept fraction"
    assert [t.get_text() for t in left.get_xticklabels()] == ["brats21", "ixi"]
    assert [p.get_height() for p in left.patches] == [0.5, 0.75]
    assert sorted(t.get_text() for t in left.texts) == ["1/2", "3/4"]
    assert right.get_title() == "retained by position"
    assert right.get_xlabel() == "relative position (0 = lowest brain slice)"
    (line,) = right.get_lines()  # brats21 has no positions, so only ixi has a line
    assert [t.get_text() for t in right.get_legend().get_texts()] == ["ixi"]
    x, y = line.get_data()
    assert np.allclose(x, [0.05, 0.45, 0.55, 0.95]) and list(y) == [0.0, 1.0, 1.0, 1.0]
    assert right.get_ylim() == (0.0, 1.05)


def test_montage_shows_kept_on_top_and_dropped_below(tmp_path: Path) -> None:
    settings = SliceSettings(size=32, montage_slices=4)
    stats = _shard_stats(tmp_path, settings)
    fig = save_slice_montage(stats, settings, tmp_path / "montage.png")
    assert fig.get_suptitle() == "ixi: kept (top) vs dropped (bottom)"
    top, bottom = fig.axes[:4], fig.axes[4:]
    assert len(fig.axes) == 8
    for ax in top + bottom:
        (image,) = ax.get_images()
        assert image.get_array().shape == (32, 32)
    assert all(ax.get_title().endswith(" kept") for ax in top)
    reasons = {ax.get_title().rsplit(" ", 1)[1] for ax in bottom}
    assert reasons <= {"entropy", "position", "area"} and "step" not in reasons

    def entropy(ax) -> float:
        return float(ax.get_title().split("\n")[1].split()[0][1:])

    assert min(entropy(ax) for ax in top) > max(entropy(ax) for ax in bottom), "dropped slices are emptier"


def test_montage_of_a_2d_image_set_kept_whole_fills_both_rows(tmp_path: Path) -> None:
    """A 4-class image set with nothing dropped: both rows show kept images of every class, no blank half."""
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    rows = []
    for cls in ("glioma", "meningioma", "notumor", "pituitary"):
        for k in range(3):
            path = tmp_path / "Training" / cls / f"{k}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            PILImage.fromarray(rng.integers(30, 255, (40, 40), dtype=np.uint8)).save(path)
            rows.append(
                {
                    "dataset": "tumor4",
                    "source": str(path),
                    "mask_source": "",
                    "slice_index": 0,
                    "position": np.nan,
                    "entropy": 6.0 + 0.01 * k,
                    "kept": True,
                    "reason": "",
                }
            )
    stats = pd.DataFrame(rows).sample(frac=1.0, random_state=1)  # shard order is by pseudonymous subject
    settings = SliceSettings(size=32, montage_slices=4)
    fig = save_slice_montage(stats, settings, tmp_path / "montage.png")
    assert fig.get_suptitle() == "tumor4: none dropped, 12 kept (both rows kept)"
    assert len(fig.axes) == 8
    for ax in fig.axes:
        (image,) = ax.get_images()
        assert image.get_array().shape == (32, 32)
        assert ax.get_title().endswith(" kept")
    classes = [ax.get_title().split("\n")[0] for ax in fig.axes]
    assert set(classes) == {"glioma", "meningioma", "notumor", "pituitary"}, "every class folder is shown"
    assert len({ax.get_images()[0].get_array().tobytes() for ax in fig.axes}) == 8, "eight different images"


def test_montage_has_no_empty_columns_when_there_are_few_slices(tmp_path: Path) -> None:
    from PIL import Image as PILImage

    rows = []
    for k, kept in enumerate((True, True, False)):
        path = tmp_path / f"{k}.png"
        PILImage.fromarray(np.full((20, 20), 40 + 60 * k, np.uint8)).save(path)
        rows.append(
            {
                "dataset": "tumor4",
                "source": str(path),
                "mask_source": "",
                "slice_index": 0,
                "position": np.nan,
                "entropy": float(k),
                "kept": kept,
                "reason": "" if kept else "entropy",
            }
        )
    fig = save_slice_montage(pd.DataFrame(rows), SliceSettings(size=16, montage_slices=8), tmp_path / "m.png")
    assert fig.get_suptitle() == "tumor4: kept (top) vs dropped (bottom)"
    assert len(fig.axes) == 4, "two columns: as many as the fuller row"
    assert [len(ax.get_images()) for ax in fig.axes] == [1, 1, 1, 0]
