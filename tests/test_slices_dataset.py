"""SliceDataset: values, DistributedSampler disjointness, pickling, and never opening NIfTI."""

from __future__ import annotations

import pickle
from pathlib import Path

import nibabel
import numpy as np
import pandas as pd
import pytest
import torch
from slices_helpers import write_table_fixture
from torch.utils.data import DataLoader, DistributedSampler

from brainssl.io import write_table
from brainssl.slices import SliceDataset, SliceSettings, build_slice_shard, load_shard_rows, plan_shards


@pytest.fixture(scope="module")
def indexes(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("slices_ds")
    table = write_table_fixture(root, "brats21", n_subjects=3, seed=5)
    plan = root / "plan.tsv"
    write_table(
        plan, plan_shards(pd.read_csv(table, sep="\t"), 2, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=2)
    )
    out = []
    for shard in (0, 1):
        files = [root / f"shard-{shard}.{k}" for k in ("npy", "labels.npy", "index.parquet", "stats.parquet")]
        build_slice_shard(load_shard_rows(table, plan, shard), SliceSettings(size=24), shard, *files)
        out.append(files[2])
    return out


def test_items_are_unit_floats_equal_to_the_store(indexes: list[Path]) -> None:
    ds = SliceDataset(indexes, labels=True, return_index=True)
    assert len(ds) == sum(len(pd.read_parquet(p)) for p in indexes)
    image, label, row = ds[len(ds) - 1]
    meta = ds.index.iloc[row]
    raw = np.load(meta["array"])[meta["offset"]]
    assert image.shape == (1, 24, 24) and image.dtype == torch.float32
    assert torch.equal(image[0], torch.from_numpy(raw.astype(np.float32) / 255.0))
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    labels = torch.stack([ds[i][1] for i in range(len(ds))])
    assert set(labels.unique().tolist()) <= {0, 1, 2, 4} and labels.max() == 4
    assert len(SliceDataset(indexes, split="train")) + len(SliceDataset(indexes, split="val")) + len(
        SliceDataset(indexes, split="test")
    ) == len(ds)


def test_distributed_sampler_splits_ranks_disjointly(indexes: list[Path]) -> None:
    ds = SliceDataset(indexes, return_index=True)
    n = len(ds) - len(ds) % 2
    ds.index, ds._file, ds._offset = ds.index.iloc[:n], ds._file[:n], ds._offset[:n]
    seen = []
    for rank in (0, 1):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=3)
        loader = DataLoader(ds, batch_size=7, sampler=sampler)
        rows = [r for _, batch_rows in loader for r in batch_rows.tolist()]
        keys = {tuple(ds.index.iloc[r][["subject", "contrast", "slice_index"]]) for r in rows}
        assert len(keys) == len(rows) == n // 2
        seen.append(keys)
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == n


def test_never_opens_nifti_and_pickles_for_workers(
    indexes: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("SliceDataset opened a NIfTI file")

    monkeypatch.setattr(nibabel, "load", refuse)
    ds = SliceDataset(indexes)
    first = ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._arrays == []
    assert torch.equal(clone[0], first)
    batches = list(DataLoader(ds, batch_size=16, num_workers=1))
    assert sum(len(b) for b in batches) == len(ds)
