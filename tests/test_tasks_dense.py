"""Dense tasks: metrics against MONAI / pycocotools / hand-computed values, splits, bad input, tiny runs."""

from __future__ import annotations

import dataclasses
import math

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO
from scipy import ndimage

from brainssl.pretrain.backbones import build_encoder
from brainssl.settings import MissingSettingError, UnknownSettingError
from brainssl.slices.measures import to_store_dtype
from brainssl.slices.settings import SliceSettings
from brainssl.slices.store import build_slice_shard, merge_slice_index, read_index
from brainssl.synth.acquisition import simulate_kspace
from brainssl.tasks.dense_metrics import dice_score, hd95
from brainssl.tasks.dense_networks import DenseModel
from brainssl.tasks.dense_settings import (
    DenseTaskSettings,
    HippocampusSegmentationSettings,
    ReconstructionSettings,
    TumorDetectionSettings,
    TumorSegmentationSettings,
)
from brainssl.tasks.dense_slices import (
    VolumeSlices,
    dense_split,
    load_hippocampus_cases,
    slice_recipes,
    store_percentiles,
)
from brainssl.tasks.dense_sweep import dense_variants
from brainssl.tasks.dense_training import TrainSettings
from brainssl.tasks.detection import boxes_from_mask, centernet_targets, coco_map, decode_detections, nms
from brainssl.tasks.recon_masks import cartesian_mask, zero_filled
from brainssl.tasks.recon_metrics import nmse, psnr, ssim
from brainssl.tasks.reconstruction import load_recon_volume
from brainssl.tasks.segmentation import SegmentationSpec, run_segmentation

MONAI_DEPRECATION = "ignore::FutureWarning"


def _blobs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random((12, 20, 20)), 1.5)
    noisy = field + 0.05 * rng.standard_normal(field.shape)
    return field > np.percentile(field, 80), noisy > np.percentile(noisy, 82)


@pytest.mark.filterwarnings(MONAI_DEPRECATION)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dice_and_hd95_match_monai(seed):
    from monai.metrics import compute_dice, compute_hausdorff_distance

    truth, pred = _blobs(seed)
    spacing = (2.0, 1.3, 1.3)
    as_t = lambda a: torch.from_numpy(a)[None, None].float()  # noqa: E731
    ref_hd = float(compute_hausdorff_distance(as_t(pred), as_t(truth), percentile=95, spacing=spacing))
    assert hd95(pred, truth, spacing) == pytest.approx(ref_hd, rel=1e-5)
    assert dice_score(pred, truth) == pytest.approx(float(compute_dice(as_t(pred), as_t(truth))), rel=1e-5)


def test_hd95_and_dice_hand_cases():
    a = np.zeros((10, 10, 10), bool)
    a[2:5, 2:5, 2:5] = True
    b = np.roll(a, 3, axis=2)  # cubes side by side: every surface voxel moves by 3 voxels
    assert hd95(a, b, (1.0, 1.0, 2.0)) == pytest.approx(6.0)
    assert dice_score(a, b) == 0.0
    half = np.roll(a, 1, axis=0)  # overlap 2 of 3 layers
    assert dice_score(a, half) == pytest.approx(2 * 18 / 54)
    empty = np.zeros_like(a)
    assert dice_score(empty, empty) == 1.0 and hd95(empty, empty, (1, 1, 1)) == 0.0
    assert dice_score(a, empty) == 0.0 and math.isnan(hd95(a, empty, (1, 1, 1)))


def test_boxes_nms_and_coco_known_case():
    mask = np.zeros((32, 32), bool)
    mask[5:12, 8:20] = True
    mask[20:30, 22:27] = True
    boxes = boxes_from_mask(mask)
    assert boxes.tolist() == [[8, 5, 20, 12], [22, 20, 27, 30]]
    target = centernet_targets(boxes, 32)
    perfect = torch.from_numpy(np.concatenate([np.where(target[5:6] > 0, 10.0, -10.0), target[1:5]]))[None]
    detections = decode_detections(perfect.float(), 10, 0.05, 0.5)
    assert coco_map([boxes], detections) == pytest.approx((1.0, 1.0))
    # one box at IoU 0.6 with the truth: AP 1 at thresholds 0.5, 0.55, 0.6 and 0 above -> 3/10
    truth = [np.array([[0.0, 0.0, 10.0, 10.0]])]
    shifted = [(np.array([[0.0, 0.0, 10.0, 6.0]]), np.array([0.9]))]
    assert coco_map(truth, shifted) == pytest.approx((0.3, 1.0))
    assert all(math.isnan(v) for v in coco_map([np.zeros((0, 4))], [(np.zeros((0, 4)), np.zeros(0))]))
    candidates = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]]).float()
    kept = nms(candidates, torch.tensor([0.5, 0.9, 0.3]), 0.5)
    assert kept.tolist() == [1, 2]


def test_fastmri_metrics_hand_cases_and_monai_ssim():
    from monai.metrics import SSIMMetric

    gt = np.zeros((2, 10, 10))
    gt[:, 2:8, 2:8] = 2.0
    pred = gt + 0.1
    assert psnr(gt, pred) == pytest.approx(10 * math.log10(4 / 0.01))
    assert nmse(gt, pred) == pytest.approx(0.01 * 200 / (4 * 72))
    assert ssim(gt, gt) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    gt = rng.random((2, 20, 24))
    pred = gt + 0.1 * rng.standard_normal(gt.shape)
    metric = SSIMMetric(spatial_dims=2, data_range=float(gt.max()), kernel_type="uniform", win_size=7)
    as_t = lambda a: torch.from_numpy(a)[None, None]  # noqa: E731
    ref = np.mean([float(metric(as_t(p), as_t(g))) for g, p in zip(gt, pred, strict=True)])
    assert ssim(gt, pred) == pytest.approx(ref, abs=1e-4)


@pytest.mark.parametrize("kind", ["random", "equispaced_fraction"])
@pytest.mark.parametrize("acceleration", [2, 4])
def test_masks_keep_centre_and_rate(kind, acceleration):
    rates = []
    for seed in range(20):
        mask = cartesian_mask(kind, 320, acceleration, 0.08, seed)
        assert mask[(320 - 26 + 1) // 2 :][:26].all()
        rates.append(mask.mean())
    assert np.mean(rates) == pytest.approx(1 / acceleration, abs=0.03)


def test_zero_filled_full_mask_is_the_rss_and_nan_kspace_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    kspace, rss = simulate_kspace(rng.random((3, 16, 16)).astype(np.float32), 2, rng)
    assert np.allclose(zero_filled(kspace, np.ones(16, bool), (16, 16)), rss, atol=1e-5)
    kspace[0, 0, 0, 0] = np.nan
    path = tmp_path / "file_brain_AXT1_201_600000.h5"
    with h5py.File(path, "w") as handle:
        handle["kspace"], handle["reconstruction_rss"] = kspace, rss
    with pytest.raises(ValueError, match="file_brain_AXT1_201_600000.*NaN"):
        load_recon_volume(path, "sub-x")


def test_dense_split_keeps_subjects_on_one_side():
    subjects = [f"sub-{i:012x}" for i in range(20)]
    split = dense_split(subjects, {}, seed=3, test_fraction=0.3)
    assert set(split.values()) == {"train", "test"} and set(split) == set(subjects)
    given = dense_split(subjects, {s: ("test" if i < 4 else "val") for i, s in enumerate(subjects)}, 3, 0.3)
    assert [given[s] for s in subjects[:5]] == ["test"] * 4 + ["train"]
    with pytest.raises(ValueError, match="two labelled"):
        dense_split(subjects[:1], {}, 0, 0.3)


def _case(i: int, with_tumour: bool = True) -> VolumeSlices:
    rng = np.random.default_rng(i)
    images = rng.random((4, 1, 32, 32)).astype(np.float32)
    labels = np.zeros((4, 32, 32), np.uint8)
    if with_tumour:
        labels[1:3, 10:16, 10:18] = 2
        labels[1:3, 12:14, 12:15] = 4
    return VolumeSlices(f"sub-{i:012x}", "ses-none", images, labels, (2.0, 1.5, 1.5))


def test_tiny_segmentation_run_with_empty_masks(encoders):
    torch.set_num_threads(1)
    cases = [_case(i, with_tumour=i % 3 != 0) for i in range(6)]
    settings = TumorSegmentationSettings.from_dict(
        {
            "test_fraction": 0.4,
            "modes": ["frozen", "finetune", "scratch"],
            "label_fractions": [0.5, 1.0],
            "seeds": 1,
            "bootstrap": 10,
            "max_train_slices": 64,
            "epochs": 1,
            "width": 8,
        }
    )
    spec = SegmentationSpec("tumor_segmentation", ("wt", "tc", "et"), multilabel=True)
    rows, per_subject, example = run_segmentation(cases, spec, "brats21", encoders, {}, settings, seed=1)
    variants = {(r["encoder"], r["mode"], r["label_fraction"]) for r in rows}
    assert ("scratch-vit_tiny", "scratch", 1.0) in variants and ("moco-vit_tiny", "finetune", 1.0) in variants
    assert ("moco-vit_tiny", "frozen", 0.5) in variants
    assert ("random-vit_tiny", "finetune", 1.0) not in variants
    assert all(r["status"] == "ok" and 0 <= r["value"] <= 1 for r in rows if r["metric"].startswith("dice"))
    assert set(per_subject["subject"]) <= {c.subject for c in cases}
    assert example["predictions"]
    skipped, _, _ = run_segmentation(cases[:1], spec, "brats21", encoders, {}, settings, seed=1)
    assert skipped and all(r["status"] == "skipped" and "two" in r["reason"] for r in skipped)


def test_variants_skip_finetuning_random_encoders():
    variants = dense_variants({"moco-vit_tiny": "a", "random-vit_tiny": "b"}, ["finetune", "scratch"])
    names = [(v.encoder, v.mode) for v in variants]
    assert names == [("moco-vit_tiny", "finetune"), ("scratch-vit_tiny", "scratch")]


def test_untrained_residual_refiner_returns_its_input():
    torch.manual_seed(0)
    encoder = build_encoder("vit_tiny", img_size=32, depth=2, embed_dim=24, num_heads=2)
    model = DenseModel(encoder, 1, 1, frozen=False, width=8, residual=True).eval()
    images = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(images), images)
    plain = DenseModel(encoder, 1, 1, frozen=False, width=8).eval()
    with torch.no_grad():
        assert not torch.allclose(plain(images), images)


def _t1_table(tmp_path) -> pd.DataFrame:
    """One skull-stripped T1w volume with its brain mask, as a preprocessed table row."""
    rng = np.random.default_rng(0)
    grid = np.indices((20, 24, 18)).astype(np.float32)
    centre = np.array([9.5, 11.5, 8.5])[:, None, None, None]
    brain = (((grid - centre) / np.array([8.0, 10.0, 7.0])[:, None, None, None]) ** 2).sum(axis=0) < 1
    volume = ndimage.gaussian_filter(rng.random(brain.shape), 1.0) * 800 + 200 * rng.random(brain.shape)
    volume = np.where(brain, volume, 0).astype(np.float32)
    paths = {"path": tmp_path / "t1.nii.gz", "mask_path": tmp_path / "brain.nii.gz"}
    nib.save(nib.Nifti1Image(volume, np.diag([2.0, 2.0, 2.0, 1.0])), paths["path"])
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), np.diag([2.0, 2.0, 2.0, 1.0])), paths["mask_path"])
    row = {"dataset": "oasis3", "subject": "sub-000000000001", "session": "ses-01", "contrast": "T1w"}
    row.update({k: str(v) for k, v in paths.items()}, seg_path="", spacing_mm=2.0, split="train")
    return pd.DataFrame([row])


def _store(tmp_path, table: pd.DataFrame, settings: SliceSettings):
    """Build a one-shard slice store of ``table`` the way the workflow does (shard, then dataset index)."""
    out = tmp_path / "store"
    out.mkdir()
    files = [out / f"shard-0.{kind}" for kind in ("npy", "labels.npy", "index.parquet", "stats.parquet")]
    build_slice_shard(table, settings, 0, *files)
    merge_slice_index([files[2]], out / "index.parquet")
    return out / "index.parquet", np.load(files[0]), read_index(files[2])


@pytest.mark.parametrize("percentiles", [None, (5.0, 95.0)])
def test_dense_slices_follow_the_store_recipe(tmp_path, percentiles):
    """Dense inputs are cut with the percentiles the store recorded, and equal the store's own slices."""
    table = _t1_table(tmp_path)
    base = {"size": 32, "entropy_mode": "absolute", "entropy_threshold": 0.0, "min_area": 0.0, "step_mm": 0.0}
    settings = (
        SliceSettings(**base)
        if percentiles is None
        else SliceSettings(**base, intensity_percentiles=percentiles)
    )
    index_path, stored, index = _store(tmp_path, table, settings)
    recipes = slice_recipes({"oasis3": index_path}, {"hippocampus": {"intensity_percentiles": [1, 99]}})
    assert recipes == {"oasis3": settings.intensity_percentiles, "hippocampus": (1.0, 99.0)}
    assert store_percentiles(index_path) == settings.intensity_percentiles
    (case,), _ = load_hippocampus_cases(table, None, 32, 0, percentiles=recipes["oasis3"])
    assert len(index) > 3
    dense = to_store_dtype(case.images[index["slice_index"].to_numpy(), 0], settings.dtype)
    np.testing.assert_array_equal(dense, stored[index["offset"].to_numpy()])
    (default,), _ = load_hippocampus_cases(
        table, None, 32, 0, percentiles=SliceSettings().intensity_percentiles
    )
    assert np.array_equal(case.images, default.images) == (percentiles is None)


def test_store_without_a_recorded_recipe_is_refused(tmp_path):
    path = tmp_path / "index.parquet"
    pd.DataFrame({"dataset": ["oasis3"]}).to_parquet(path)
    with pytest.raises(ValueError, match="records no intensity_percentiles"):
        store_percentiles(path)


DENSE_SETTINGS = {
    "tumor_segmentation": TumorSegmentationSettings,
    "hippocampus_segmentation": HippocampusSegmentationSettings,
    "tumor_detection": TumorDetectionSettings,
    "reconstruction": ReconstructionSettings,
}


def _schema_tasks() -> dict:
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    return schema["properties"]["tasks"]


@pytest.mark.parametrize("task", sorted(DENSE_SETTINGS))
def test_dense_settings_fields_are_the_schema_keys(task):
    keys = set(_schema_tasks()["properties"][task]["properties"])
    assert {f.name for f in dataclasses.fields(DENSE_SETTINGS[task])} == keys


SHARED = {"label_fractions": [0.5, 1.0], "seeds": 2, "bootstrap": 7}


@pytest.mark.parametrize("task", sorted(DENSE_SETTINGS))
def test_shared_keys_are_required_and_nullable_in_the_schema(task):
    """The workflow passes the shared values where a task's own are null; the class has no default."""
    with pytest.raises(MissingSettingError, match=rf"tasks\.{task}\.label_fractions.*bootstrap"):
        DENSE_SETTINGS[task].from_dict({"epochs": 2})
    own = _schema_tasks()["properties"][task]["properties"]
    for key in SHARED:
        assert own[key]["default"] is None and "null" in own[key]["type"]
    settings = DENSE_SETTINGS[task].from_dict(SHARED)
    assert (settings.fractions, settings.n_seeds, settings.n_boot) == ((0.5, 1.0), 2, 7)
    fields = {f.name: f for f in dataclasses.fields(DenseTaskSettings)}
    assert all(fields[key].default is dataclasses.MISSING for key in SHARED)


@pytest.mark.parametrize("task", sorted(DENSE_SETTINGS))
def test_dense_settings_reject_an_unknown_key(task):
    with pytest.raises(UnknownSettingError, match=rf"tasks\.{task}\.epoch\b.*allowed"):
        DENSE_SETTINGS[task].from_dict({"epochs": 2, "epoch": 3})


def test_dense_settings_build_tuples_and_the_training_subset():
    settings = ReconstructionSettings.from_dict(
        {"label_fractions": [1], "seeds": 2, "bootstrap": 5, "accelerations": [4], "lr": 0.01, "width": 8}
    )
    assert settings.fractions == (1.0,) and settings.accelerations == (4,)
    assert settings.centre_fraction(4) == 0.08 and (settings.n_seeds, settings.n_boot) == (2, 5)
    assert settings.train == TrainSettings(
        epochs=20, batch_size=32, lr=0.01, encoder_lr=1e-4, weight_decay=1e-4, width=8
    )
    detection = TumorDetectionSettings.from_dict({**SHARED, "modes": ["frozen"], "contrasts": ["FLAIR"]})
    assert detection.modes == ("frozen",) and detection.contrasts == ("FLAIR",)
