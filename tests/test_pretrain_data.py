import numpy as np
import pandas as pd
import pytest
import torch

from brainssl.pretrain import load_checkpoint, pretrain_from_index, slice_probe_sets
from brainssl.slices import INDEX_COLUMNS

PROBES = ("contrast", "position")


def _store(tmp_path, n_subjects=6, per_subject=12, size=16):
    rng = np.random.default_rng(0)
    n = n_subjects * per_subject
    arr = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
    np.save(tmp_path / "shard-0.npy", arr)
    rows = []
    for i in range(n):
        subject, k = divmod(i, per_subject)
        rows.append(
            {
                "dataset": "ixi",
                "subject": f"s{subject}",
                "session": "",
                "contrast": ["T1w", "T2w"][k % 2],
                "slice_index": k,
                "position": (k + 0.5) / per_subject,
                "entropy": 1.0,
                "area": 0.5,
                "shard": 0,
                "offset": i,
                "split": "val" if subject < 4 else "train",
                "has_seg": False,
                "array": str(tmp_path / "shard-0.npy"),
                "labels": "",
            }
        )
    index = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
    index.to_parquet(tmp_path / "index.parquet")
    return tmp_path / "index.parquet", arr


def test_probe_sets_hold_out_subjects_and_balance_classes(tmp_path):
    path, arr = _store(tmp_path)
    probes = slice_probe_sets(path, split="val", probes=PROBES, n_per_class=3, position_bins=3, seed=1)
    assert set(probes) == {"contrast", "position"}
    c = probes["contrast"]
    assert c.train_images.dtype == torch.uint8 and c.train_images.shape[1:] == (1, 16, 16)
    assert torch.bincount(c.train_labels).tolist() == [3, 3] and torch.bincount(c.test_labels).tolist() == [
        3,
        3,
    ]
    assert torch.bincount(probes["position"].train_labels).tolist() == [3, 3, 3]
    # probe-train and probe-test images come from different subjects (2 + 2 of the 4 val subjects)
    subject_of = {arr[i].tobytes(): i // 12 for i in range(len(arr))}
    train_subjects = {subject_of[x.numpy()[0].tobytes()] for x in c.train_images}
    test_subjects = {subject_of[x.numpy()[0].tobytes()] for x in c.test_images}
    assert train_subjects.isdisjoint(test_subjects) and train_subjects | test_subjects <= {0, 1, 2, 3}


def test_probe_sets_refuse_the_train_split(tmp_path):
    path, _ = _store(tmp_path)
    with pytest.raises(ValueError, match="held-out split"):
        slice_probe_sets(path, split="train", probes=PROBES, n_per_class=3, position_bins=3, seed=1)


@pytest.mark.slow
def test_pretrain_from_index_two_local_processes(tmp_path):
    path, _ = _store(tmp_path)
    settings = dict(
        method="moco",
        arch="vit_tiny",
        img_size=16,
        batch_size=8,
        epochs=1,
        vit_depth=1,
        moco_dim=16,
        moco_mlp_dim=32,
        device="cpu",
        warmup_epochs=0,
        checkpoint_every=0,
        seed=1,
    )
    probe = {"split": "val", "probes": PROBES, "n_per_class": 4, "position_bins": 3}
    summary = pretrain_from_index(path, tmp_path / "run", settings, probe, nprocs=2)
    assert summary["status"] == "completed" and summary["step"] == 3  # 24 train slices // 8
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["position"]["world_size"] == 2
    assert (
        set(summary["knn"]) == {"contrast", "position"}
        and (tmp_path / "run" / "encoder.safetensors").is_file()
    )


def test_position_probe_leaves_out_slices_without_a_position(tmp_path):
    index_path, _ = _store(tmp_path)
    index = pd.read_parquet(index_path)
    index.loc[index["subject"] == "s0", "position"] = float("nan")  # e.g. 2D tumour images
    index.to_parquet(index_path)
    probes = slice_probe_sets(
        index_path, split="val", probes=("position", "dataset"), n_per_class=100, position_bins=3, seed=0
    )
    assert "dataset" not in probes, "one dataset is no probe"
    position = probes["position"]
    labels = torch.cat([position.train_labels, position.test_labels])
    assert labels.min() >= 0 and labels.max() <= 2
    assert len(labels) == 3 * 12, "only the three val subjects with positions take part"
