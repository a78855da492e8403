"""The dataset montage of the 4-class image set: one image of every class, each titled with its class."""

from pathlib import Path

import numpy as np

from brainssl.datasets import build_manifest, finalize_demo, generate_demo_shard, save_montage
from brainssl.io import write_table


def test_tumor4_montage_shows_every_class_even_when_asked_for_fewer(tmp_path: Path) -> None:
    table = generate_demo_shard("tumor4", tmp_path / "tumor4", [0, 1, 2, 3, 4], 3, 4.0)
    write_table(tmp_path / "tumor4.tsv", table)
    finalize_demo("tumor4", tmp_path / "tumor4", [tmp_path / "tumor4.tsv"])
    manifest, failures = build_manifest("tumor4", tmp_path / "tumor4")
    assert failures.empty
    classes = sorted(set(manifest["tumor_class"]))
    assert len(classes) == 4
    fig = save_montage("tumor4", manifest, tmp_path / "montage.png", n_subjects=2)
    shown = [ax for ax in fig.axes if ax.get_images()]
    assert len(shown) == len(fig.axes) == 4, "one row of four images, no empty panel"
    assert sorted(ax.get_title().split("\n")[1] for ax in shown) == classes, "titled with the class"
    for ax in shown:
        (image,) = ax.get_images()
        assert np.asarray(image.get_array()).std() > 0
