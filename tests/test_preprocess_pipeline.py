"""N4, skull stripping, the session chain and the shard driver on perturbed ICBM152 heads.

``brainssl.synth.generate_subject`` is not available yet, so test heads are built here from
the ICBM152 2009c template: posed (rotation, anisotropic scale, shift), sampled on a
non-RAS grid, multiplied by a smooth bias field and given Rician noise.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from conftest import validate_bids
from scipy import ndimage

from brainssl.preprocess import (
    N4Settings,
    NormalisationSettings,
    PreprocessSettings,
    QCRules,
    dice,
    load_template,
    n4_correct,
    preprocess_session,
    preprocess_shard,
    qc_flags,
    resample_to_grid,
    shard_job,
    strip_atlas,
    strip_deepbet,
    to_original_space,
)

sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
torch.set_num_threads(1)
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Head:
    image: nib.Nifti1Image
    truth: nib.Nifti1Image
    clean: np.ndarray
    field: np.ndarray
    pose: np.ndarray  # (4, 4) template world -> subject world


def _rotation(deg: tuple[float, float, float]) -> np.ndarray:
    ax, ay, az = np.deg2rad(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def make_head(
    spacing: tuple[float, float, float],
    seed: int,
    contrast: str = "T1w",
    axes: tuple[float, float, float] = (-1.0, -1.0, 1.0),
    oblique_deg: tuple[float, float, float] = (0.0, 0.0, 0.0),
    pose: np.ndarray | None = None,
    bias: float = 0.25,
    noise: float = 0.02,
) -> Head:
    """Template head posed by a random affine, on a (non-RAS, optionally oblique) grid."""
    rng = np.random.default_rng(seed)
    if pose is None:
        pose = np.eye(4)
        pose[:3, :3] = _rotation(tuple(rng.uniform(-8, 8, 3))) @ np.diag(rng.uniform(0.94, 1.06, 3))
        pose[:3, 3] = rng.uniform(-6, 6, 3)
    template = load_template(contrast, 1.0)
    linear = _rotation(oblique_deg) @ np.diag(np.asarray(axes) * np.asarray(spacing))
    corners = np.array([[i, j, k] for i in (0, 192) for j in (0, 228) for k in (0, 192)], float)
    world = (corners @ template.affine[:3, :3].T + template.affine[:3, 3]) @ pose[:3, :3].T + pose[:3, 3]
    ijk = world @ np.linalg.inv(linear).T
    low = ijk.min(axis=0)
    shape = tuple(int(n) for n in np.ceil(ijk.max(axis=0) - low) + 1)
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = linear @ low
    to_template = np.linalg.inv(pose) @ affine
    clean = np.asarray(resample_to_grid(template, to_template, shape).dataobj)
    truth = np.asarray(resample_to_grid(load_template("mask", 1.0), to_template, shape).dataobj) > 0.5
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    coefs = rng.uniform(-1, 1, 6)
    log_field = sum(c * g for c, g in zip(coefs[:3], grid, strict=True)) + coefs[3] * grid[0] * grid[1]
    log_field = log_field + coefs[4] * grid[2] ** 2 + coefs[5] * grid[1] * grid[2]
    log_field = bias * log_field / np.abs(log_field).max()
    field = np.exp(log_field).astype(np.float32)
    sigma = noise * float(np.percentile(clean, 99))
    noisy = np.hypot(clean * field + rng.normal(0, sigma, shape), rng.normal(0, sigma, shape))
    return Head(
        nib.Nifti1Image(noisy.astype(np.float32), affine),
        nib.Nifti1Image(truth.astype(np.uint8), affine),
        clean,
        field,
        pose,
    )


def _white_matter(head: Head) -> np.ndarray:
    brain = np.asarray(head.truth.dataobj) > 0
    threshold = np.percentile(head.clean[brain], 75)
    return ndimage.binary_erosion(brain & (head.clean > threshold))


def _cov(values: np.ndarray) -> float:
    return float(values.std() / values.mean())


def test_n4_lowers_white_matter_cov_under_a_known_field() -> None:
    head = make_head((2.0, 2.0, 2.0), seed=0, bias=0.6, noise=0.01)
    wm = _white_matter(head)
    data = np.asarray(head.image.dataobj)
    corrected, field = n4_correct(head.image, shrink=4)
    before, after = _cov(data[wm]), _cov(np.asarray(corrected.dataobj)[wm])
    clean = _cov(head.clean[wm])
    print(f"WM CoV: biased {before:.4f}  N4 {after:.4f}  bias-free {clean:.4f}")
    logger.info("WM CoV: biased %.4f  N4 %.4f  bias-free %.4f", before, after, clean)
    assert after < 0.6 * before
    assert after < clean + 0.5 * (before - clean)
    # the estimated field follows the true one up to a global scale
    estimated = np.log(np.asarray(field.dataobj)[wm])
    assert np.corrcoef(estimated, np.log(head.field[wm]))[0, 1] > 0.9


def test_atlas_skull_strip_dice_on_perturbed_head() -> None:
    head = make_head((3.0, 3.0, 3.0), seed=1, axes=(-1.0, 1.0, 1.0), oblique_deg=(4.0, 0.0, -6.0))
    result = strip_atlas(head.image, seed=0)
    score = dice(result.mask, np.asarray(head.truth.dataobj) > 0)
    print(f"atlas skull strip Dice {score:.4f}")
    assert score >= 0.9
    assert result.transform["kind"] == "affine"
    assert np.asarray(result.transform["matrix_ras"]).shape == (4, 4)


def test_deepbet_dice_on_template() -> None:
    t1 = load_template("T1w", 1.0)
    truth = np.asarray(load_template("mask", 1.0).dataobj) > 0.5
    las = nib.Nifti1Image(np.asarray(t1.dataobj)[::-1].copy(), t1.affine @ _flip_x(t1.shape[0]))
    result = strip_deepbet(las)
    score = dice(result.mask[::-1], truth)
    print(f"deepbet Dice {score:.4f}")
    assert score >= 0.95


def _flip_x(n: int) -> np.ndarray:
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = n - 1
    return flip


def _fast_settings(**changes: object) -> PreprocessSettings:
    base = {
        "spacing_mm": 3.0,
        "skull_strip": "atlas",
        "n4": N4Settings(iterations=(20, 20)),
        "qc": QCRules(brain_ml=(1000.0, 2600.0)),
    }
    base.update(changes)
    return PreprocessSettings(**base)  # type: ignore[arg-type]


def test_session_contrast_registration_and_round_trip() -> None:
    t1 = make_head((2.5, 2.5, 3.0), seed=2)
    moved = np.eye(4)
    moved[:3, :3] = _rotation((0.0, 3.0, 4.0))
    moved[:3, 3] = (4.0, -3.0, 2.0)  # the subject moved between the two scans
    t2 = make_head((3.0, 3.0, 3.0), seed=3, contrast="T2w", axes=(1.0, -1.0, 1.0), pose=moved @ t1.pose)
    settings = _fast_settings(
        n4=N4Settings(enabled=False),
        normalisation=NormalisationSettings(method="none", clip_percentiles=None, zero_background=False),
    )
    result = preprocess_session({"T2w": t2.image, "T1w": t1.image}, settings, truth_mask=t1.truth)
    record = result.transforms
    assert record.reference == "T1w" and "T2w" in record.registrations
    assert result.volumes["T1w"].shape == result.volumes["T2w"].shape == result.mask.shape
    assert result.qc["dice"] >= 0.9
    voxels = np.argwhere(np.asarray(result.mask.dataobj) > 0)[::97].astype(float)
    # reference: the written value equals the original interpolated at the returned voxel
    world, ijk = to_original_space(voxels, record.to_dict())
    original = np.asarray(t1.image.dataobj)
    expected = ndimage.map_coordinates(original, ijk.T, order=1)
    written = np.asarray(result.volumes["T1w"].dataobj)[tuple(voxels.astype(int).T)]
    assert np.allclose(written, expected, rtol=1e-3, atol=1e-2)
    # registered contrast: the returned T2w voxel shows the same anatomy (template point)
    _, ijk2 = to_original_space(voxels, record, contrast="T2w")
    anatomy_t1 = _apply(np.linalg.inv(t1.pose), world)
    anatomy_t2 = _apply(np.linalg.inv(t2.pose) @ t2.image.affine, ijk2)
    error = np.linalg.norm(anatomy_t1 - anatomy_t2, axis=1)
    print(f"T2w->T1w registration error: median {np.median(error):.2f} mm, max {error.max():.2f} mm")
    assert np.median(error) < 1.5


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def test_qc_flags_name_each_problem() -> None:
    record = {"brain_ml": 300.0, "mask_touches_fov": True, "snr": 2.0, "bias_std": 0.9, "dice": 0.5}
    flags = qc_flags(record, QCRules())
    assert len(flags) == 5
    for word in ("volume", "field of view", "SNR", "bias", "Dice"):
        assert any(word in flag for flag in flags), word
    good = {"brain_ml": 1500.0, "mask_touches_fov": False, "snr": 30.0, "bias_std": 0.1, "dice": 0.97}
    assert qc_flags(good, QCRules()) == []


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(data, affine), path)
    return str(path)


def _row(subject: str, path: str, **extra: str) -> dict[str, str]:
    base = {
        "dataset": "ixi",
        "subject": subject,
        "session": "",
        "contrast": "T1w",
        "path": path,
        "format": "nifti",
        "seg_path": "",
        "truth_brain_mask": "",
    }
    base.update(extra)
    return base


def test_shard_records_bad_inputs_and_finishes_the_rest(tmp_path: Path, monkeypatch) -> None:
    head = make_head((3.0, 3.0, 3.0), seed=4)
    affine = head.image.affine
    good = _save(tmp_path / "good.nii.gz", np.asarray(head.image.dataobj), affine)
    truth = _save(tmp_path / "good_mask.nii.gz", np.asarray(head.truth.dataobj), affine)
    seg = _save(tmp_path / "good_seg.nii.gz", np.asarray(head.truth.dataobj).astype(np.int16) * 3, affine)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b\x08 definitely not a nifti")
    shape = head.image.shape
    nan_data = np.asarray(head.image.dataobj).copy()
    nan_data[10, 10, 10] = np.nan
    absurd = np.diag([60.0, 60.0, 60.0, 1.0])
    rows = pd.DataFrame(
        [
            _row("sub-000000000001", good, truth_brain_mask=truth, seg_path=seg),
            _row("sub-000000000002", str(broken)),
            _row("sub-000000000003", _save(tmp_path / "zero.nii.gz", np.zeros(shape, np.float32), affine)),
            _row("sub-000000000004", _save(tmp_path / "nan.nii.gz", nan_data, affine)),
            _row(
                "sub-000000000005",
                _save(tmp_path / "4d.nii.gz", np.ones((*shape[:3], 2), np.float32), affine),
            ),
            _row(
                "sub-000000000006", _save(tmp_path / "absurd.nii.gz", np.asarray(head.image.dataobj), absurd)
            ),
            _row(
                "sub-000000000007", _save(tmp_path / "flat.nii.gz", np.ones((40, 40, 1), np.float32), affine)
            ),
            # readable and finite, but ITK (N4, registration) failed on these with raw errors
            _row(
                "sub-000000000008",
                _save(tmp_path / "negative.nii.gz", -1.0 - np.asarray(head.image.dataobj), affine),
            ),
            _row(
                "sub-000000000009",
                _save(tmp_path / "tiny.nii.gz", np.arange(8, dtype=np.float32).reshape(2, 2, 2), affine),
            ),
        ]
    )
    out = tmp_path / "out"
    table, failures = preprocess_shard(rows, out, _fast_settings())
    reasons = dict(zip(failures["subject"], failures["reason"], strict=True))
    assert set(reasons) == {f"sub-00000000000{i}" for i in range(2, 10)}
    assert "unreadable" in reasons["sub-000000000002"]
    assert "all zero" in reasons["sub-000000000003"]
    assert "non-finite" in reasons["sub-000000000004"]
    assert "dimensionality" in reasons["sub-000000000005"]
    assert "spacing" in reasons["sub-000000000006"]
    assert "dimensionality" in reasons["sub-000000000007"]
    assert reasons["sub-000000000008"].startswith("T1w (negative.nii.gz): no positive intensity (values -")
    assert reasons["sub-000000000009"] == (
        "T1w (tiny.nii.gz): too small to process: shape 2x2x2, every axis needs at least 8 voxels"
    )
    folder = out / "sub-000000000001" / "ses-none" / "anat"  # BIDS derivatives
    stem = "sub-000000000001_ses-none"
    assert list(table["path"]) == [str(folder / f"{stem}_desc-preproc_T1w.nii.gz")]
    names = {p.name.removeprefix(f"{stem}_") for p in folder.iterdir()}
    assert names == {
        "desc-preproc_T1w.nii.gz",
        "desc-preproc_T1w.json",
        "desc-brain_mask.nii.gz",
        "desc-brain_mask.json",
        "desc-preproc_dseg.nii.gz",
        "xfm.json",
        "qc.json",
        "qc.png",
    }
    assert table.loc[0, "mask_path"] == str(folder / f"{stem}_desc-brain_mask.nii.gz")
    assert table.loc[0, "dice"] >= 0.9
    seg_out = np.asarray(nib.load(table.loc[0, "seg_path"]).dataobj)
    assert set(np.unique(seg_out)) <= {0, 3}
    assert sorted(p.name for p in out.iterdir()) == [
        ".bidsignore",
        "dataset_description.json",
        "sub-000000000001",
    ]
    # the BIDS validator reads the folder as a derivatives dataset without an error
    code, issues = validate_bids(out)
    errors = [(i["code"], i.get("location", "")) for i in issues if i["severity"] == "error"]
    assert code == 0 and not errors, errors
    assert json.loads((out / "dataset_description.json").read_text())["GeneratedBy"][0]["Name"] == "brainssl"
    assert not [p for p in out.rglob(".*") if p.name != ".bidsignore"]  # no temp folders or files left

    # a failure while writing leaves no partial session folder behind
    def explode(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(shard_job, "qc_png", explode)
    table2, failures2 = preprocess_shard(
        rows.iloc[:1].assign(subject="sub-00000000000a"), out, _fast_settings()
    )
    assert table2.empty and "disk full" in failures2.loc[0, "reason"]
    assert not (out / "sub-00000000000a" / "ses-none").exists()
    assert not [p for p in out.rglob(".*") if p.name != ".bidsignore"]


def test_session_rejects_missing_nyul_landmarks() -> None:
    head = make_head((3.0, 3.0, 3.0), seed=5)
    settings = _fast_settings(
        skull_strip="none", n4=N4Settings(enabled=False), normalisation=NormalisationSettings(method="nyul")
    )
    with pytest.raises(ValueError, match="landmarks"):
        preprocess_session({"T1w": head.image}, settings)
