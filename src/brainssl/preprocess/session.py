"""One session end to end (:func:`preprocess_session`), in memory.

Order: reorient/resample the reference (T1w when present) to an isotropic RAS grid;
bring the other contrasts onto that grid (rigid registration when their grid differs);
N4 per contrast; skull strip the reference; QC numbers; crop to the brain box; clip and
normalise intensities within the shared mask.

Reading a session's files is :mod:`brainssl.preprocess.inputs`; running a shard of
sessions to disk is :mod:`brainssl.preprocess.shard_job`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from brainssl.datasets.layouts.files import MIN_VOLUME_SIZE

from .bias import head_mask, n4_correct
from .intensity import WM_BRIGHT, NyulLandmarks, apply_nyul, clip_percentiles, whitestripe, zscore
from .qc import qc_flags, qc_record, touches_fov
from .settings import PreprocessSettings
from .skullstrip import register_rigid, skull_strip
from .spatial import TransformRecord, crop_box, crop_image, reorient_resample, resample_to_grid

__all__ = [
    "PreprocessError",
    "PreprocessResult",
    "validate_image",
    "preprocess_session",
]

logger = logging.getLogger(__name__)


class PreprocessError(ValueError):
    """An input that preprocessing refuses, with the reason recorded in the failures table."""


@dataclass(frozen=True)
class PreprocessResult:
    """Everything one session produced.

    Attributes:
        volumes: contrast -> normalised, cropped RAS image (float32), all on one grid.
        mask: brain mask (uint8) on that grid.
        labels: contrast (or key given) -> label image (nearest-neighbour) on that grid.
        fields: contrast -> multiplicative bias field on that grid (cropped).
        transforms: every transform back to the original images.
        qc: the QC record (:func:`qc_record`) plus ``flags``, ``skull_strip`` and
            ``normalisation`` details.
    """

    volumes: dict[str, nib.Nifti1Image]
    mask: nib.Nifti1Image
    labels: dict[str, nib.Nifti1Image]
    fields: dict[str, nib.Nifti1Image]
    transforms: TransformRecord
    qc: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def _timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[step] = seconds.get(step, 0.0) + time.perf_counter() - start
        logger.info("step %s: %.2f s", step, seconds[step])


def validate_image(img: Any, settings: PreprocessSettings, name: str = "image") -> None:
    """Refuse inputs that cannot be preprocessed, naming the reason.

    Raises:
        PreprocessError: for wrong dimensionality, fewer than
            :data:`~brainssl.datasets.layouts.files.MIN_VOLUME_SIZE` voxels along an axis, absurd
            or non-finite spacing, a singular affine, non-finite intensities, an all-zero/constant
            image, or one without a positive voxel.
    """
    shape = tuple(img.shape)
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)):
        raise PreprocessError(f"{name}: wrong dimensionality, shape {shape} (need 3D)")
    if min(shape[:3]) < 2:
        raise PreprocessError(f"{name}: wrong dimensionality, shape {shape} has a flat axis")
    if min(shape[:3]) < MIN_VOLUME_SIZE:  # the manifest's limit too; ITK fails below it, unclearly
        shown = "x".join(str(int(n)) for n in shape[:3])
        raise PreprocessError(
            f"{name}: too small to process: shape {shown}, every axis needs at least {MIN_VOLUME_SIZE} voxels"
        )
    affine = np.asarray(img.affine, dtype=float)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise PreprocessError(f"{name}: singular or non-finite affine")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(spacing < settings.min_spacing_mm) or np.any(spacing > settings.max_spacing_mm):
        raise PreprocessError(
            f"{name}: absurd spacing {np.round(spacing, 4).tolist()} mm "
            f"(allowed [{settings.min_spacing_mm}, {settings.max_spacing_mm}])"
        )
    data = np.asarray(img.dataobj, dtype=np.float32)
    bad = int((~np.isfinite(data)).sum())
    if bad:
        raise PreprocessError(f"{name}: {bad} non-finite (NaN/inf) voxels")
    if not np.any(data):
        raise PreprocessError(f"{name}: image is all zero")
    if float(data.max()) == float(data.min()):
        raise PreprocessError(f"{name}: image is constant")
    if float(data.max()) <= 0.0:  # N4 and the head mask need signal above zero
        raise PreprocessError(
            f"{name}: no positive intensity (values {float(data.min()):g} to {float(data.max()):g}); "
            "a magnitude MR image is not negative (sign-flipped on export?)"
        )


def _reference(images: Mapping[str, Any], settings: PreprocessSettings) -> str:
    for contrast in settings.reference:
        if contrast in images:
            return contrast
    return next(iter(images))


def _same_grid(a: Any, b: Any) -> bool:
    return tuple(a.shape[:3]) == tuple(b.shape[:3]) and np.allclose(a.affine, b.affine, atol=1e-3)


def _to_reference_grid(
    images: Mapping[str, Any],
    ref: str,
    settings: PreprocessSettings,
    record: TransformRecord,
    seconds: dict[str, float],
) -> tuple[dict[str, nib.Nifti1Image], dict[str, Any]]:
    """Resample every contrast onto the reference's RAS grid; returns volumes and sitk transforms."""
    with _timed(seconds, "reorient_resample"):
        ref_img = reorient_resample(
            images[ref], settings.spacing_mm, False, settings.interpolation, threads=settings.threads
        )
    grid = (ref_img.affine, ref_img.shape)
    volumes = {ref: ref_img}
    transforms: dict[str, Any] = {}
    for contrast, img in images.items():
        if contrast == ref:
            continue
        if _same_grid(img, images[ref]) or not settings.register_contrasts:
            with _timed(seconds, "reorient_resample"):
                volumes[contrast] = reorient_resample(
                    img,
                    settings.spacing_mm,
                    False,
                    settings.interpolation,
                    grid=grid,
                    threads=settings.threads,
                )
            continue
        with _timed(seconds, "register_contrasts"):
            own = reorient_resample(
                img, settings.spacing_mm, False, settings.interpolation, threads=settings.threads
            )
            transform, matrix = register_rigid(ref_img, own, settings.registration, settings.seed)
            volumes[contrast] = resample_to_grid(
                own, grid[0], grid[1], False, settings.interpolation, transform, settings.threads
            )
        transforms[contrast] = transform
        record.registrations[contrast] = {
            "kind": "rigid",
            "fixed": ref,
            "moving": contrast,
            "matrix_ras": matrix.tolist(),
        }
    return volumes, transforms


def _normalise(
    data: np.ndarray,
    mask: np.ndarray,
    contrast: str,
    settings: PreprocessSettings,
    landmarks: Mapping[str, NyulLandmarks] | None,
) -> tuple[np.ndarray, dict[str, Any]]:
    norm = settings.normalisation
    info: dict[str, Any] = {"method": norm.method}
    if norm.clip_percentiles is not None:
        data = clip_percentiles(data, mask, *norm.clip_percentiles)
        info["clip_percentiles"] = list(norm.clip_percentiles)
    if norm.method == "zscore":
        out = zscore(data, mask)
    elif norm.method == "whitestripe":
        out, stripe = whitestripe(data, mask, wm_bright=contrast in WM_BRIGHT, width=norm.whitestripe_width)
        info.update(stripe)
    elif norm.method == "nyul":
        if landmarks is None or contrast not in landmarks:
            raise PreprocessError(
                f"nyul normalisation needs landmarks for {contrast} (fit on training subjects)"
            )
        out = apply_nyul(data, mask, landmarks[contrast])
        info["landmarks"] = landmarks[contrast].to_dict()
    else:
        out = data.astype(np.float32)
    if norm.zero_background:
        out = np.where(mask, out, 0.0).astype(np.float32)
    return out, info


def preprocess_session(
    images: Mapping[str, Any],
    settings: PreprocessSettings,
    truth_mask: Any | None = None,
    labels: Mapping[str, Any] | None = None,
    *,
    landmarks: Mapping[str, NyulLandmarks] | None = None,
) -> PreprocessResult:
    """Preprocess the contrasts of one session onto one grid with one brain mask.

    Args:
        images: contrast -> 3D nibabel image in its original space.
        settings: the stage settings.
        truth_mask: ground-truth brain mask image (any grid in the same world space), for QC Dice.
        labels: contrast -> label image on that contrast's grid (a key that is not a contrast
            is taken to be in the reference's world space); resampled nearest-neighbour.
        landmarks: contrast -> Nyúl landmarks fitted on training subjects (method ``nyul``).

    Returns:
        The :class:`PreprocessResult`.

    Raises:
        PreprocessError: for refused inputs (see :func:`validate_image`) or an empty mask.
    """
    if not images:
        raise PreprocessError("no images in session")
    for contrast, img in images.items():
        filename = img.get_filename() if hasattr(img, "get_filename") else None
        validate_image(img, settings, f"{contrast} ({Path(filename).name})" if filename else contrast)
    ref = _reference(images, settings)
    seconds: dict[str, float] = {}
    record = TransformRecord(reference=ref, spacing_mm=settings.spacing_mm)
    for contrast, img in images.items():
        record.add_original(contrast, img)
    volumes, sitk_transforms = _to_reference_grid(images, ref, settings, record, seconds)
    grid = (volumes[ref].affine, volumes[ref].shape)
    record.resampled_affine = np.asarray(grid[0]).tolist()
    record.resampled_shape = [int(n) for n in grid[1]]
    with _timed(seconds, "resample_labels"):
        label_imgs = {
            key: resample_to_grid(
                lab,
                grid[0],
                grid[1],
                is_label=True,
                transform=sitk_transforms.get(key),
                threads=settings.threads,
            )
            for key, lab in (labels or {}).items()
        }
        truth = None
        if truth_mask is not None:
            truth_img = resample_to_grid(
                truth_mask, grid[0], grid[1], is_label=True, threads=settings.threads
            )
            truth = np.asarray(truth_img.dataobj) > 0
    head = head_mask(np.asarray(volumes[ref].dataobj))
    fields: dict[str, np.ndarray] = {}
    with _timed(seconds, "n4"):
        for contrast, vol in list(volumes.items()):
            if settings.n4.enabled:
                n4 = settings.n4
                shrink = max(1, round(n4.shrink_mm / settings.spacing_mm))
                volumes[contrast], field_img = n4_correct(
                    vol, head, shrink, n4.iterations, n4.convergence, n4.control_points
                )
                fields[contrast] = np.asarray(field_img.dataobj)
    with _timed(seconds, f"skull_strip_{settings.skull_strip}"):
        stripped = skull_strip(
            volumes[ref], settings.skull_strip, settings.registration, settings.seed, settings.threads
        )
    brain = stripped.mask
    if not brain.any():
        raise PreprocessError("skull stripping produced an empty brain mask")
    if stripped.transform:
        record.registrations["atlas_to_icbm152"] = dict(stripped.transform)
    ref_data = np.asarray(volumes[ref].dataobj)
    fov_contact = touches_fov(brain)
    voxel_ml = float(np.prod(np.linalg.norm(grid[0][:3, :3], axis=0))) / 1000.0

    margin = int(math.ceil(settings.crop_margin_mm / settings.spacing_mm))
    box = crop_box(brain, margin)
    record.crop_offset = [int(a) for a, _ in box]
    mask_img = crop_image(nib.Nifti1Image(brain.astype(np.uint8), grid[0]), box)
    record.final_affine = np.asarray(mask_img.affine).tolist()
    record.final_shape = [int(n) for n in mask_img.shape]
    cropped_mask = np.asarray(mask_img.dataobj).astype(bool)

    out_volumes: dict[str, nib.Nifti1Image] = {}
    norm_info: dict[str, Any] = {}
    with _timed(seconds, "normalise"):
        for contrast, vol in volumes.items():
            data = np.asarray(crop_image(vol, box).dataobj, dtype=np.float32)
            normalised, norm_info[contrast] = _normalise(data, cropped_mask, contrast, settings, landmarks)
            out_volumes[contrast] = nib.Nifti1Image(normalised, mask_img.affine)
    qc = qc_record(ref_data, brain, head, voxel_ml, fields.get(ref), truth, seconds, fov_contact)
    qc.update(
        {
            "reference": ref,
            "skull_strip": {"method": stripped.method},
            "normalisation": norm_info,
            "bias_std_per_contrast": {m: _log_std(f, brain) for m, f in fields.items()},
        }
    )
    qc["flags"] = qc_flags(qc, settings.qc)
    return PreprocessResult(
        volumes=out_volumes,
        mask=mask_img,
        labels={k: crop_image(v, box) for k, v in label_imgs.items()},
        fields={m: crop_image(nib.Nifti1Image(f, grid[0]), box) for m, f in fields.items()},
        transforms=record,
        qc=qc,
    )


def _log_std(field_data: np.ndarray, brain: np.ndarray) -> float:
    values = field_data[brain]
    return float(np.log(values[values > 0]).std()) if values.size else float("nan")
