"""Report figures: written, and the montage's dropped row shows the emptier slices."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image
from slices_helpers import write_table_fixture

from brainssl.io import write_table
from brainssl.slices import SliceSettings, build_slice_shard, load_shard_rows, plan_shards, save_slice_figures
from brainssl.splits import DEFAULT_FRACTIONS as FRACTIONS


def test_figures_written(tmp_path: Path) -> None:
    table = write_table_fixture(tmp_path, "ixi", n_subjects=2, seed=1)
    plan = tmp_path / "plan.tsv"
    write_table(plan, plan_shards(pd.read_csv(table, sep="\t"), 4, FRACTIONS, seed=0))
    settings = SliceSettings(size=32, montage_slices=4)
    files = [tmp_path / f"s.{k}" for k in ("npy", "labels.npy", "index.parquet", "stats.parquet")]
    build_slice_shard(load_shard_rows(table, plan, 0), settings, 0, *files)
    stats = pd.read_parquet(files[3])
    paths = save_slice_figures(stats, settings, tmp_path / "fig")
    for name in ("entropy.png", "retained.png", "montage.png"):
        with Image.open(paths[name]) as image:
            assert image.size[0] > 200
    retained = pd.read_csv(paths["retained.tsv"], sep="\t")
    overall = retained[retained["position_bin"] == "all"].iloc[0]
    assert overall["kept"] == stats["kept"].sum()
