"""Shard building: counts, the window through the whole path, splits, determinism, check_store."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from slices_helpers import write_table_fixture

from brainssl.io import write_table
from brainssl.slices import (
    SliceSettings,
    SliceStoreError,
    build_slice_shard,
    check_store,
    load_shard_rows,
    plan_shards,
)

ALL = {"entropy_mode": "absolute", "entropy_threshold": 0.0, "min_area": 0.0, "step_mm": 0.0}


def _build(root: Path, settings: SliceSettings, shard: int = 0, tag: str = "s") -> dict[str, Path]:
    table = root / "brats21" / "table.tsv"
    plan = root / "plan.tsv"
    write_table(
        plan, plan_shards(pd.read_csv(table, sep="\t"), 2, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=1)
    )
    rows = load_shard_rows(table, plan, shard)
    out = {
        k: root / "out" / f"{tag}-{shard}.{k}"
        for k in ("npy", "labels.npy", "index.parquet", "stats.parquet")
    }
    build_slice_shard(
        rows, settings, shard, out["npy"], out["labels.npy"], out["index.parquet"], out["stats.parquet"]
    )
    return out


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("slices")
    write_table_fixture(base, "brats21", n_subjects=3)
    return base


@pytest.fixture(scope="module")
def shard0(root: Path) -> dict[str, Path]:
    return _build(root, SliceSettings(size=32, position_window=(0.2, 0.8)), 0, "default")


def test_index_counts_match_arrays(shard0: dict[str, Path]) -> None:
    index = pd.read_parquet(shard0["index.parquet"])
    stats = pd.read_parquet(shard0["stats.parquet"])
    array = np.load(shard0["npy"], mmap_mode="r")
    labels = np.load(shard0["labels.npy"], mmap_mode="r")
    assert array.shape == (len(index), 32, 32) and array.dtype == np.uint8
    assert labels.shape == array.shape
    assert index["offset"].tolist() == list(range(len(index)))
    assert int(stats["kept"].sum()) == len(index) > 0
    assert len(stats) == 2 * 2 * 26  # two subjects, two contrasts, 26 axial slices
    assert check_store(index)["slices"] == len(index)
    assert "intensity_mapping" in index.attrs and index.attrs["settings"]["size"] == 32
    seg = index[index["has_seg"]]
    assert set(np.unique(labels[seg["offset"].to_numpy()])) <= {0, 1, 2, 4}
    assert labels[index.loc[~index["has_seg"], "offset"].to_numpy()].max() == 0


def test_stored_entropy_equals_reference(shard0: dict[str, Path]) -> None:
    index = pd.read_parquet(shard0["index.parquet"])
    array = np.load(shard0["npy"])
    for row in index.itertuples():
        counts = np.histogram(array[row.offset].ravel() / 255.0, bins=256, range=(0.0, 1.0))[0]
        assert row.entropy == pytest.approx(sps.entropy(counts, base=2), abs=1e-9)


def test_window_through_the_shard_keeps_exactly_the_configured_slices(root: Path) -> None:
    # brain spans axial slices 4..21: position (k - 4) / 17
    exact = SliceSettings(size=16, position_window=(5 / 17, 12 / 17), **ALL)
    index = pd.read_parquet(_build(root, exact, 0, "exact")["index.parquet"])
    assert sorted(set(index["slice_index"])) == list(range(9, 17))
    assert (index.groupby(["subject", "contrast"]).size() == 8).all()
    inner = SliceSettings(size=16, position_window=(5 / 17 + 1e-6, 12 / 17 - 1e-6), **ALL)
    index = pd.read_parquet(_build(root, inner, 0, "inner")["index.parquet"])
    assert sorted(set(index["slice_index"])) == list(range(10, 16))


def test_percentile_threshold_keeps_the_upper_part(shard0: dict[str, Path]) -> None:
    stats = pd.read_parquet(shard0["stats.parquet"])
    cand = stats[stats["reason"].isin(["", "entropy"])]
    for _, group in cand.groupby("contrast"):
        assert group["threshold"].nunique() == 1
        kept = group[group["kept"]]
        assert (kept["entropy"] >= kept["threshold"]).all()
        assert 0.4 <= group["kept"].mean() <= 0.6
    assert set(stats.loc[(stats["position"] < 0) | (stats["position"] > 1), "reason"]) == {"position"}


def test_all_slices_of_a_subject_share_one_split(root: Path, shard0: dict[str, Path]) -> None:
    index = pd.concat(
        [
            pd.read_parquet(shard0["index.parquet"]),
            pd.read_parquet(_build(root, SliceSettings(size=32), 1)["index.parquet"]),
        ]
    )
    assert (index.groupby("subject")["split"].nunique() == 1).all()
    assert index["subject"].nunique() == 3


def _sha(paths: dict[str, Path]) -> dict[str, str]:
    return {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in paths.items()}


def test_rerun_is_byte_identical(root: Path) -> None:
    settings = SliceSettings(size=32)
    first = _sha(_build(root, settings, 0, "again"))
    second = _sha(_build(root, settings, 0, "again"))
    assert first == second


def test_check_store_catches_truncation_and_count_mismatch(
    root: Path, shard0: dict[str, Path], tmp_path: Path
) -> None:
    index = pd.read_parquet(shard0["index.parquet"])
    with pytest.raises(SliceStoreError, match="index lists"):
        check_store(index.iloc[:-1])
    array = np.load(shard0["npy"])
    with pytest.raises(SliceStoreError, match="dtype"):
        check_store(
            index,
            {shard0["npy"].as_posix(): array.astype(np.float32), shard0["labels.npy"].as_posix(): array},
        )
    with pytest.raises(SliceStoreError, match=r"not \(N, S, S\)"):
        check_store(
            index, {shard0["npy"].as_posix(): array[:, :, :-1], shard0["labels.npy"].as_posix(): array}
        )
    broken = tmp_path / "broken.npy"
    broken.write_bytes(shard0["npy"].read_bytes()[:-100])
    with pytest.raises(SliceStoreError, match="truncated"):
        check_store(index.assign(array=str(broken)))
