"""Supervised-from-scratch baseline: rows, subject-level fits, determinism, degenerate tasks, learning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from brainssl.pretrain.backbones import build_encoder
from brainssl.pretrain.export import export_encoder
from brainssl.tasks.frozen import TaskRun, run_task
from brainssl.tasks.scratch import ScratchBaseline, ScratchSettings

SIDE = 24  # the store's side; the encoder's is 32, so slices are resized as in the embed stage
CONTRASTS = ("T1w", "FLAIR")
SHARED = {"evaluation": "kfold", "folds": 3, "label_fractions": [0.5, 1.0], "seeds": 2, "bootstrap": 20}
SETTINGS = {
    "neurodegeneration": {"datasets": ["oasis3"], "contrasts": ["T1w"], "logistic_c": 1.0},
    "sequence": {"datasets": ["oasis3"], "logistic_c": 1.0},
    "tumor4": {"datasets": ["oasis3"], "contrasts": [], "logistic_c": 1.0},
}
SCRATCH = {
    "label_fractions": [1.0],
    "seeds": 1,
    "epochs": 6,
    "batch_size": 8,
    "lr": 0.0001,
    "max_train_slices": 60,
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _store(folder, n_subjects: int = 12, slices: int = 4) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A slice store whose bright half says the diagnosis (and stripes the contrast), and its pooled table.

    Returns:
        ``(index, pooled)``: the slice index (arrays under ``folder``) and a subjects.parquet-like
        table whose features are noise (frozen heads learn nothing; only the images carry labels).
    """
    rng = np.random.default_rng(0)
    images, rows = [], []
    for i in range(n_subjects):
        alzheimer = i % 2 == 0
        for m, contrast in enumerate(CONTRASTS):
            for k in range(slices):
                image = 0.3 + rng.normal(0, 0.05, (SIDE, SIDE))
                image[:, : SIDE // 2] += 0.5 if alzheimer else 0.0  # bright half: left or right
                image[:, SIDE // 2 :] += 0.0 if alzheimer else 0.5
                image = np.clip(image, 0, 1)
                if m:  # FLAIR: stripes
                    image[::4] = 0.0
                images.append((image * 255).astype(np.uint8))
                rows.append(
                    {
                        "dataset": "oasis3",
                        "subject": f"sub-{i:02d}",
                        "session": "ses-1",
                        "contrast": contrast,
                        "position": (k + 1) / (slices + 1),
                        "split": "test" if i % 4 == 0 else "train",
                        "array": "shard.npy",
                        "offset": len(images) - 1,
                        "labels": "",
                        "diagnosis": "alzheimer" if alzheimer else "control",
                        "tumor_class": "glioma" if alzheimer else "notumor",
                    }
                )
    np.save(folder / "shard.npy", np.stack(images))
    index = pd.DataFrame(rows)
    keys = ["dataset", "subject", "session", "contrast"]
    pooled = index.groupby(keys, sort=True)[["split", "diagnosis", "tumor_class"]].first().reset_index()
    for f in range(4):
        pooled[f"f{f:03d}"] = rng.normal(size=len(pooled))
    return index, pooled


def _random_export(folder) -> str:
    path = folder / "random-vit_tiny" / "encoder.safetensors"
    path.parent.mkdir()
    encoder = build_encoder("vit_tiny", img_size=32, depth=1)
    export_encoder(
        encoder,
        path,
        path.parent / "model_card.json",
        intensity="test",
        manifest_sha256=None,
        config_sha256=None,
        method="random",
    )
    return str(path)


def _run(tmp_path, task: str, pooled: pd.DataFrame, index: pd.DataFrame, scratch=None, baseline_cls=None):
    run = TaskRun.from_params(task, SHARED, SETTINGS[task], seed=7)
    tables = {}
    for name in ("moco-vit_tiny", "random-vit_tiny"):
        tables[name] = tmp_path / f"{name}.parquet"
        pooled.to_parquet(tables[name])
    export = tmp_path / "random-vit_tiny" / "encoder.safetensors"
    path = str(export) if export.exists() else _random_export(tmp_path)
    cls = baseline_cls or ScratchBaseline
    settings = ScratchSettings.from_dict(scratch or SCRATCH)
    baseline = cls(index, {"random-vit_tiny": path}, settings, run.evaluation, (0.3, 0.7), root=tmp_path)
    return run_task(run, tables, extra_predictions=baseline)


@pytest.mark.parametrize(
    ("task", "metrics"), [("neurodegeneration", {"auc"}), ("sequence", {"macro_auc", "accuracy"})]
)
def test_scratch_rows_are_scored_and_compared(tmp_path, task, metrics):
    index, pooled = _store(tmp_path)
    outcome = _run(tmp_path, task, pooled, index)
    frame = pd.DataFrame(outcome.rows)
    scratch = frame[frame["encoder"] == "scratch-vit_tiny"]
    assert set(scratch["mode"]) == {"scratch"} and set(scratch["status"]) == {"ok"}
    assert set(scratch["metric"]) == metrics
    assert set(scratch["label_fraction"]) == {1.0} and set(scratch["seed"]) == {0}  # the configured ones only
    assert set(frame.loc[frame["encoder"] != "scratch-vit_tiny", "label_fraction"]) == {0.5, 1.0}
    assert (scratch["ci_low"] <= scratch["ci_high"]).all()  # subject bootstrap CIs
    assert (scratch["n_test"] == 12).all()  # every subject tested once, out of fold
    compared = {(c["encoder"], c["baseline"]) for c in outcome.comparisons}
    assert ("moco-vit_tiny", "scratch-vit_tiny") in compared
    units = outcome.units[(task, "oasis3")]
    values = outcome.predictions[(task, "oasis3", "scratch-vit_tiny")][(1.0, 0)].values
    assert np.allclose(values.sum(axis=1), 1.0)  # averaged slice probabilities per unit
    assert len(values) == len(units.target) == (24 if task == "sequence" else 12)


def test_scratch_learns_an_easy_problem_above_chance(tmp_path):
    """The bright half carries the diagnosis, features are noise (frozen heads at chance); can fail."""
    index, pooled = _store(tmp_path, n_subjects=18)
    frame = pd.DataFrame(_run(tmp_path, "neurodegeneration", pooled, index).rows)
    auc = frame.set_index(["encoder", "label_fraction", "seed"])["value"]
    assert auc[("scratch-vit_tiny", 1.0, 0)] > 0.9
    assert auc[("scratch-vit_tiny", 1.0, 0)] > auc[("moco-vit_tiny", 1.0, 0)]


class _Recording(ScratchBaseline):
    """Records the subjects of the slices read for training and testing, fit by fit."""

    reads: list[set[str]]

    def _images(self, rows, side):
        self.reads = [*getattr(self, "reads", []), set(rows["subject"])]
        type(self).last = self
        return super()._images(rows, side)


def test_no_subject_trains_and_tests_the_same_network(tmp_path):
    index, pooled = _store(tmp_path)
    _run(tmp_path, "sequence", pooled, index, baseline_cls=_Recording)
    reads = _Recording.last.reads
    assert len(reads) == 2 * SHARED["folds"]  # (train, test) per fit at fraction 1.0, seed 0
    tested = set()
    for train, test in zip(reads[::2], reads[1::2], strict=True):
        assert train and test and not train & test
        tested |= test
    assert tested == set(index["subject"])


def test_scratch_is_deterministic(tmp_path):
    index, pooled = _store(tmp_path)
    first = _run(tmp_path, "neurodegeneration", pooled, index)
    second = _run(tmp_path, "neurodegeneration", pooled, index)
    key = ("neurodegeneration", "oasis3", "scratch-vit_tiny")
    a, b = first.predictions[key][(1.0, 0)].values, second.predictions[key][(1.0, 0)].values
    assert np.array_equal(a, b)
    assert not np.allclose(a, a.mean(axis=0))  # not a constant prediction that would trivially agree


def test_degenerate_task_gives_skipped_scratch_rows(tmp_path):
    index, pooled = _store(tmp_path)
    pooled = pooled.assign(tumor_class="glioma")
    frame = pd.DataFrame(_run(tmp_path, "tumor4", pooled, index).rows)
    scratch = frame[frame["encoder"] == "scratch-vit_tiny"]
    assert len(scratch) == 3 and set(scratch["status"]) == {"skipped"} and set(scratch["mode"]) == {"scratch"}
    assert scratch["reason"].str.contains("one class only").all() and scratch["value"].isna().all()


def test_scratch_fractions_must_be_evaluated_fractions(tmp_path):
    index, pooled = _store(tmp_path)
    with pytest.raises(ValueError, match="not among tasks.label_fractions"):
        _run(tmp_path, "neurodegeneration", pooled, index, scratch={**SCRATCH, "label_fractions": [0.3]})
