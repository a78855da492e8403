"""Dense tasks over their memory budgets: per-batch frozen encoders and disk-backed slices, same results."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from brainssl.pretrain.backbones import build_encoder
from brainssl.tasks import dense_sweep
from brainssl.tasks.dense_memory import Rows, SliceSpace, batch_tensor
from brainssl.tasks.dense_networks import DenseModel
from brainssl.tasks.dense_settings import TumorSegmentationSettings
from brainssl.tasks.dense_slices import VolumeSlices
from brainssl.tasks.dense_training import TrainSettings, regroup, seeded_generator, train_dense
from brainssl.tasks.segmentation import SegmentationSpec, run_segmentation, segmentation_loss

SPEC = SegmentationSpec("tumor_segmentation", ("wt", "tc", "et"), multilabel=True)
BATCH = 4


def _case(i: int) -> VolumeSlices:
    rng = np.random.default_rng(i)
    images = rng.random((5, 2, 32, 32)).astype(np.float32)
    labels = np.zeros((5, 32, 32), np.uint8)
    if i % 3:
        labels[1:3, 10:16, 10:18] = 2
        labels[1:3, 12:14, 12:15] = 4
    return VolumeSlices(f"sub-{i:012x}", "ses-none", images, labels, (2.0, 1.5, 1.5))


def _settings(**budgets: float) -> TumorSegmentationSettings:
    return TumorSegmentationSettings.from_dict(
        {
            "test_fraction": 0.4,
            "modes": ["frozen", "finetune"],
            "label_fractions": [0.5, 1.0],
            "seeds": 1,
            "bootstrap": 5,
            "max_train_slices": 12,
            "epochs": 2,
            "batch_size": BATCH,
            "width": 8,
            **budgets,
        }
    )


def test_over_budget_segmentation_gives_the_cached_in_memory_results(encoders, tmp_path, monkeypatch):
    """Budgets of 0 GB: no feature cache, every array in files; losses, outputs and scores agree.

    Not asserted bitwise: the per-batch frozen encoder sees batches of ``batch_size`` slices where
    the cache encoded 64 at a time, and a float32 matmul may round differently with the batch's
    composition (on this machine's CPU they happen to agree exactly). Disk-backed slices alone
    change nothing: the same values are read.
    """
    torch.set_num_threads(1)
    cases = [_case(i) for i in range(6)]
    calls: dict[str, list] = {"cached": [], "arrays": [], "history": [], "outputs": []}
    real_encode, real_train, real_predict = (
        dense_sweep.encode_slices,
        dense_sweep.train_dense,
        dense_sweep.predict_batches,
    )

    def encode(*args, **kwargs):
        calls["cached"].append(1)
        return real_encode(*args, **kwargs)

    def train(model, images, targets, *args, **kwargs):
        assert isinstance(images, Rows) and isinstance(targets, Rows)  # of the stored slices and labels
        calls["arrays"].append((type(images.parts[0]), type(targets.parts[0])))
        calls["history"].append(real_train(model, images, targets, *args, **kwargs))
        return calls["history"][-1]

    def predict(*args, **kwargs):
        batches = list(real_predict(*args, **kwargs))
        calls["outputs"].append(torch.cat(batches))
        return iter(batches)

    monkeypatch.setattr(dense_sweep, "encode_slices", encode)
    monkeypatch.setattr(dense_sweep, "train_dense", train)
    monkeypatch.setattr(dense_sweep, "predict_batches", predict)
    rows, per_subject, example = run_segmentation(cases, SPEC, "brats21", encoders, {}, _settings(), seed=1)
    assert calls["cached"], "the default budget must keep caching the demo's frozen maps"
    assert all(kinds == (np.ndarray, np.ndarray) for kinds in calls["arrays"])
    cached = {key: calls[key] for key in ("history", "outputs")}

    calls = {key: [] for key in calls}
    with SliceSpace(0, folder=tmp_path) as space:
        settings = _settings(feature_cache_gb=0, slice_memory_gb=0)
        low = run_segmentation([_kept(c, space) for c in cases], SPEC, "brats21", encoders, {}, settings, 1)
        assert space.held == 0 and space.spilled > 0 and list(tmp_path.glob("brainssl-dense-*/*"))
    assert not list(tmp_path.glob("brainssl-dense-*")), "the scratch folder outlived the task"
    assert not calls["cached"], "over feature_cache_gb the frozen maps must not be cached"
    assert calls["arrays"] and all(kinds == (np.memmap, np.memmap) for kinds in calls["arrays"])

    np.testing.assert_allclose(calls["history"], cached["history"], rtol=1e-5)
    assert len(calls["outputs"]) == len(cached["outputs"]) == 5  # 2 frozen x 2 fractions, 1 fine-tuned
    for ours, theirs in zip(calls["outputs"], cached["outputs"], strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    values = pd.DataFrame(rows)["value"].to_numpy(float)
    np.testing.assert_allclose(pd.DataFrame(low[0])["value"].to_numpy(float), values, rtol=1e-5, atol=1e-6)
    pd.testing.assert_frame_equal(low[1], per_subject, check_exact=False, rtol=1e-5, atol=1e-6)
    assert low[2]["predictions"].keys() == example["predictions"].keys()
    for name, regions in example["predictions"].items():
        np.testing.assert_array_equal(low[2]["predictions"][name], regions)


def _kept(case: VolumeSlices, space: SliceSpace) -> VolumeSlices:
    """``case`` with its arrays in ``space``, as the loaders put them."""
    return VolumeSlices(
        case.subject, case.session, space.keep(case.images), space.keep(case.labels), case.spacing
    )


def test_training_and_test_sets_are_the_stored_slices_not_copies(encoders, tmp_path, monkeypatch):
    """Spilled cases: training and prediction read the cut slices' own files, and nothing more is written.

    Segmentation's targets come from the stored labels batch by batch, detection's from each
    slice's boxes, so the scratch disk holds the cut slices and labels alone.
    """
    from brainssl.tasks.dense_settings import TumorDetectionSettings
    from brainssl.tasks.detection import run_detection
    from brainssl.tasks.detection_boxes import CenterNetTargets

    torch.set_num_threads(1)
    seen: list[tuple] = []
    real_train, real_predict = dense_sweep.train_dense, dense_sweep.predict_batches

    def train(model, images, targets, *args, **kwargs):
        seen.append(("train", images, targets))
        return real_train(model, images, targets, *args, **kwargs)

    def predict(model, images, *args, **kwargs):
        seen.append(("test", images, None))
        return real_predict(model, images, *args, **kwargs)

    monkeypatch.setattr(dense_sweep, "train_dense", train)
    monkeypatch.setattr(dense_sweep, "predict_batches", predict)
    settings = _settings(feature_cache_gb=0, slice_memory_gb=0, modes=["frozen"], label_fractions=[1.0])
    detection = TumorDetectionSettings.from_dict({**vars(settings), "contrasts": ["FLAIR", "T1ce"]})
    for task in ("segmentation", "detection"):
        seen.clear()
        with SliceSpace(0, folder=tmp_path) as space:
            cases = [_kept(_case(i), space) for i in (1, 2, 3, 4, 5, 7)]
            stored = space.spilled
            assert stored == sum(c.images.nbytes + c.labels.nbytes for c in cases)
            if task == "segmentation":
                run_segmentation(cases, SPEC, "brats21", encoders, {}, settings, seed=3)
            else:
                run_detection(cases, "brats21", encoders, {}, detection, seed=3)
            assert space.spilled == stored, f"{task} wrote a copy of its slices or targets"
            assert len(list(tmp_path.glob("brainssl-dense-*/*"))) == 2 * len(cases)
        images = {id(c.images) for c in cases}
        assert seen and {kind for kind, *_ in seen} == {"train", "test"}
        for kind, rows, targets in seen:
            assert isinstance(rows, Rows) and {id(part) for part in rows.parts} <= images, f"{task} {kind}"
            if task == "detection" and targets is not None:
                assert isinstance(targets, CenterNetTargets)
            elif targets is not None:
                assert {id(part) for part in targets.parts} <= {id(c.labels) for c in cases}


def test_rows_gather_chosen_rows_of_several_arrays():
    parts = [np.arange(n * 2, dtype=np.float32).reshape(n, 2) + 100 * n for n in (3, 1, 4)]
    picks = [np.array([True, False, True]), np.array([0]), np.array([3, 1])]
    rows = Rows(parts, picks, transform=lambda a: a * 2)
    whole = np.concatenate([p[k] for p, k in zip(parts, picks, strict=True)]) * 2
    assert len(rows) == 5 and rows.shape == (5, 2)
    np.testing.assert_array_equal(rows[:], whole)
    np.testing.assert_array_equal(rows[np.array([4, 0, 2])], whole[[4, 0, 2]])
    np.testing.assert_array_equal(rows[1:4], whole[1:4])
    np.testing.assert_array_equal(Rows(parts)[np.array([7, 3])], np.concatenate(parts)[[7, 3]])


def test_training_on_rows_reads_the_same_slices_as_a_copied_subset():
    """``rows`` replaces ``images[rows]``: the same batches, bitwise, without copying the subset."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    images = rng.random((10, 1, 32, 32)).astype(np.float32)
    targets = (rng.random((10, 3, 32, 32)) > 0.7).astype(np.float32)
    rows = np.array([7, 2, 9, 0, 4, 5])
    settings = TrainSettings(epochs=2, batch_size=4, lr=1e-3, encoder_lr=1e-4, weight_decay=0.0, width=8)
    histories = []
    for subset, kwargs in (((images[rows], targets[rows]), {}), ((images, targets), {"rows": rows})):
        torch.manual_seed(0)
        encoder = build_encoder("vit_tiny", img_size=32, depth=1, embed_dim=24, num_heads=2)
        model = DenseModel(encoder, 1, 3, frozen=True, width=8)
        loss = segmentation_loss(multilabel=True)
        histories.append(train_dense(model, *subset, loss, settings, seeded_generator(1), **kwargs))
    assert histories[0] == histories[1]


def test_frozen_encoder_sees_one_batch_at_a_time_over_the_cache_budget(encoders, monkeypatch):
    """Without a cache no more than one batch of slices is encoded (so of maps held) at a time."""
    torch.set_num_threads(1)
    sizes: list[int] = []
    real_build = dense_sweep.Variant.build

    def build(self, seed, device="cpu"):
        encoder = real_build(self, seed, device)
        forward = encoder.forward_features
        encoder.forward_features = lambda x: sizes.append(len(x)) or forward(x)
        return encoder

    monkeypatch.setattr(dense_sweep.Variant, "build", build)
    settings = _settings(feature_cache_gb=0, modes=["frozen"])
    run_segmentation([_case(i) for i in range(6)], SPEC, "brats21", encoders, {}, settings, seed=1)
    contrasts = 2
    assert sizes and max(sizes) <= 64 * contrasts  # a training batch, or a prediction batch of 64
    assert sum(size == BATCH * contrasts for size in sizes) >= 2  # encoded per training batch


def test_slice_space_spills_over_its_budget_and_removes_its_files(tmp_path):
    parts = [np.full((n, 3, 4), n, np.float32) for n in (2, 5, 1)]  # 96, 240 and 48 bytes
    with SliceSpace(400 / 1e9, folder=tmp_path) as space:
        kept = space.keep(parts[0])
        assert kept is parts[0] and space.held == 96  # within the budget: the array itself
        whole = space.concatenate(parts)
        assert isinstance(whole, np.memmap) and space.held == 96  # 96 + 384 > 400: on disk
        np.testing.assert_array_equal(whole, np.concatenate(parts))
        big = space.keep(np.ones((100, 3), np.float32))
        assert isinstance(big, np.memmap) and not big.flags.writeable
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # torch warns about a read-only array
            batch = batch_tensor(whole, np.array([3, 0]))
            batch_tensor(big, slice(0, 2))
        assert torch.equal(batch, torch.from_numpy(np.concatenate(parts)[[3, 0]]))
        assert torch.equal(batch_tensor(whole, slice(1, 3)), torch.from_numpy(np.concatenate(parts)[1:3]))
        small = space.concatenate(parts[2:])
        assert not isinstance(small, np.memmap) and space.held == 144
        assert len(list(tmp_path.glob("brainssl-dense-*/*"))) == 2
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="does not extend"):
        SliceSpace(1.0).concatenate([np.zeros((1, 2)), np.zeros((1, 3))])


def test_regroup_cuts_a_stream_of_batches_into_subjects():
    outputs = torch.arange(30.0).reshape(10, 3)
    batches = iter(outputs.split([4, 4, 2]))
    lengths = [3, 1, 5, 1]
    groups = list(regroup(batches, lengths))
    starts = np.cumsum([0, *lengths])
    for group, start, stop in zip(groups, starts[:-1], starts[1:], strict=True):
        assert torch.equal(group, outputs[start:stop])


def test_reconstruction_holds_one_volume_of_k_space_at_a_time(encoders, tmp_path, monkeypatch):
    """Every file is read when it is checked and again when its slices are prepared, then dropped."""
    import weakref

    import h5py

    from brainssl.synth.acquisition import simulate_kspace
    from brainssl.tasks import reconstruction as recon
    from brainssl.tasks.dense_settings import ReconstructionSettings

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        kspace, rss = simulate_kspace(
            rng.random((2, 32, 32)).astype(np.float32), 2, rng, readout_oversampling=2
        )
        path = tmp_path / f"file_brain_AXT1_201_60000{i}.h5"
        with h5py.File(path, "w") as handle:
            handle["kspace"], handle["reconstruction_rss"] = kspace, rss
        rows.append({"dataset": "fastmri_brain", "subject": f"sub-{i}", "path": str(path), "split": "train"})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.tsv", sep="\t", index=False)
    pd.DataFrame(rows)[["subject", "split"]].to_csv(tmp_path / "table.tsv", sep="\t", index=False)
    loaded: list[weakref.ref] = []
    alive_at_read: list[int] = []
    real_load = recon.load_recon_volume

    def load(path, subject):
        alive_at_read.append(sum(ref() is not None for ref in loaded))
        volume = real_load(path, subject)
        loaded.append(weakref.ref(volume.kspace))
        return volume

    monkeypatch.setattr(recon, "load_recon_volume", load)
    settings = ReconstructionSettings.from_dict(
        {
            **{
                k: v
                for k, v in vars(_settings(modes=["frozen"], label_fractions=[1.0])).items()
                if k != "contrasts"
            },
            "masks": ["equispaced", "random"],
            "accelerations": [4],
            "test_fraction": 0.5,
        }
    )
    outputs = {"results": tmp_path / "r.tsv", "volumes": tmp_path / "v.tsv", "overlays": tmp_path / "o.png"}
    frame = recon.reconstruction_task(
        tmp_path / "table.tsv", tmp_path / "manifest.tsv", encoders, settings, 0, outputs
    )
    assert (frame["status"] == "ok").all()
    assert len(alive_at_read) == 4 * (1 + 2)  # checked once, then read once per mask
    assert alive_at_read == [0] * len(alive_at_read), "an earlier volume's k-space was still held"
    assert all(ref() is None for ref in loaded)
