"""One session end to end (:func:`preprocess_session`) and a chunk of sessions on disk.

Order: reorient/resample the reference (T1w when present) to an isotropic RAS grid;
bring the other contrasts onto that grid (rigid registration when their grid differs);
N4 per contrast; skull strip the reference; QC numbers; crop to the brain box; clip and
normalise intensities within the shared mask.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from brainssl.io import save_nifti, write_json

from .bias import head_mask, n4_correct
from .intensity import WM_BRIGHT, NyulLandmarks, apply_nyul, clip_percentiles, whitestripe, zscore
from .qc import qc_flags, qc_png, qc_record, touches_fov
from .settings import PreprocessSettings
from .skullstrip import register_rigid, skull_strip
from .spatial import TransformRecord, crop_box, crop_image, reorient_resample, resample_to_grid

__all__ = [
    "PreprocessError",
    "PreprocessResult",
    "validate_image",
    "preprocess_session",
    "preprocess_chunk",
    "TABLE_COLUMNS",
    "FAILURE_COLUMNS",
]

logger = logging.getLogger(__name__)

TABLE_COLUMNS = (
    "dataset",
    "subject",
    "session",
    "modality",
    "path",
    "mask_path",
    "seg_path",
    "transforms_path",
    "qc_path",
    "qc_png",
    "shape",
    "spacing_mm",
    "brain_ml",
    "snr",
    "bias_std",
    "dice",
    "qc_flags",
    "seconds_total",
)
FAILURE_COLUMNS = ("dataset", "subject", "session", "native_id", "path", "reason")
NO_SESSION = "ses-none"


class PreprocessError(ValueError):
    """An input that preprocessing refuses, with the reason recorded in the failures table."""


@dataclass(frozen=True)
class PreprocessResult:
    """Everything one session produced.

    Attributes:
        volumes: modality -> normalised, cropped RAS image (float32), all on one grid.
        mask: brain mask (uint8) on that grid.
        labels: modality (or key given) -> label image (nearest-neighbour) on that grid.
        fields: modality -> multiplicative bias field on that grid (cropped).
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
        PreprocessError: for wrong dimensionality, absurd or non-finite spacing, a singular
            affine, non-finite intensities, or an all-zero/constant image.
    """
    shape = tuple(img.shape)
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)):
        raise PreprocessError(f"{name}: wrong dimensionality, shape {shape} (need 3D)")
    if min(shape[:3]) < 2:
        raise PreprocessError(f"{name}: wrong dimensionality, shape {shape} has a flat axis")
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


def _reference(images: Mapping[str, Any], settings: PreprocessSettings) -> str:
    for modality in settings.reference:
        if modality in images:
            return modality
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
    for modality, img in images.items():
        if modality == ref:
            continue
        if _same_grid(img, images[ref]) or not settings.register_contrasts:
            with _timed(seconds, "reorient_resample"):
                volumes[modality] = reorient_resample(
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
            transform, matrix = register_rigid(
                ref_img, own, settings.registration, settings.seed, settings.threads
            )
            volumes[modality] = resample_to_grid(
                own, grid[0], grid[1], False, settings.interpolation, transform, settings.threads
            )
        transforms[modality] = transform
        record.registrations[modality] = {
            "kind": "rigid",
            "fixed": ref,
            "moving": modality,
            "matrix_ras": matrix.tolist(),
        }
    return volumes, transforms


def _normalise(
    data: np.ndarray,
    mask: np.ndarray,
    modality: str,
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
        out, stripe = whitestripe(data, mask, wm_bright=modality in WM_BRIGHT, width=norm.whitestripe_width)
        info.update(stripe)
    elif norm.method == "nyul":
        if landmarks is None or modality not in landmarks:
            raise PreprocessError(
                f"nyul normalisation needs landmarks for {modality} (fit on training subjects)"
            )
        out = apply_nyul(data, mask, landmarks[modality])
        info["landmarks"] = landmarks[modality].to_dict()
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
        images: modality -> 3D nibabel image in its original space.
        settings: the stage settings.
        truth_mask: ground-truth brain mask image (any grid in the same world space), for QC Dice.
        labels: modality -> label image on that modality's grid (a key that is not a modality
            is taken to be in the reference's world space); resampled nearest-neighbour.
        landmarks: modality -> Nyúl landmarks fitted on training subjects (method ``nyul``).

    Returns:
        The :class:`PreprocessResult`.

    Raises:
        PreprocessError: for refused inputs (see :func:`validate_image`) or an empty mask.
    """
    if not images:
        raise PreprocessError("no images in session")
    for modality, img in images.items():
        validate_image(img, settings, modality)
    ref = _reference(images, settings)
    seconds: dict[str, float] = {}
    record = TransformRecord(reference=ref, spacing_mm=settings.spacing_mm)
    for modality, img in images.items():
        record.add_original(modality, img)
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
        for modality, vol in list(volumes.items()):
            if settings.n4.enabled:
                n4 = settings.n4
                shrink = max(1, round(n4.shrink_mm / settings.spacing_mm))
                volumes[modality], field_img = n4_correct(
                    vol, head, shrink, n4.iterations, n4.convergence, n4.control_points, settings.threads
                )
                fields[modality] = np.asarray(field_img.dataobj)
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
        for modality, vol in volumes.items():
            data = np.asarray(crop_image(vol, box).dataobj, dtype=np.float32)
            normalised, norm_info[modality] = _normalise(data, cropped_mask, modality, settings, landmarks)
            out_volumes[modality] = nib.Nifti1Image(normalised, mask_img.affine)
    qc = qc_record(ref_data, brain, head, voxel_ml, fields.get(ref), truth, seconds, fov_contact)
    qc.update(
        {
            "reference": ref,
            "skull_strip": {"method": stripped.method},
            "normalisation": norm_info,
            "bias_std_per_modality": {m: _log_std(f, brain) for m, f in fields.items()},
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


# --------------------------------------------------------------------------- chunk driver


def _load(path: str) -> nib.spatialimages.SpatialImage:
    try:
        img = nib.load(path)
        np.asanyarray(img.dataobj)  # force the read: a truncated file fails here, not later
    except Exception as err:  # nibabel raises many kinds (ImageFileError, EOFError, zlib.error, OSError)
        raise PreprocessError(f"unreadable file {path}: {type(err).__name__}: {err}") from err
    return img


def _load_fastmri(path: str) -> nib.Nifti1Image:
    from brainssl.datasets.layouts.base import SubjectError
    from brainssl.datasets.layouts.fastmri import load_rss

    try:
        return load_rss(path)
    except SubjectError as err:
        raise PreprocessError(f"unreadable file {path}: {err.reason}") from err


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _session_inputs(group: pd.DataFrame) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    images: dict[str, Any] = {}
    truth_paths: list[str] = []
    seg_paths: dict[str, str] = {}
    stack_affine = None
    for row in group.itertuples(index=False):
        kind = _text(getattr(row, "format", "nifti")) or "nifti"
        if kind not in ("nifti", "fastmri_h5"):
            raise PreprocessError(f"unsupported format {row.format!r} for {row.path}")
        if row.modality in images:
            raise PreprocessError(f"modality {row.modality} listed twice in session")
        images[row.modality] = _load(row.path) if kind == "nifti" else _load_fastmri(row.path)
        if kind == "fastmri_h5":
            stack_affine = images[row.modality].affine
        truth = _text(getattr(row, "truth_brain_mask", ""))
        if truth:
            truth_paths.append(truth)
        seg = _text(getattr(row, "seg_path", ""))
        if seg and seg not in seg_paths.values():
            seg_paths[row.modality] = seg
    truth_img = _load(truth_paths[0]) if truth_paths else None
    if truth_img is not None and stack_affine is not None:
        # fastMRI truth indexes like reconstruction_rss: give it the stack's header-built affine
        truth_img = nib.Nifti1Image(np.asarray(truth_img.dataobj), stack_affine)
    labels = {modality: _load(path) for modality, path in seg_paths.items()}
    return images, truth_img, labels


@contextlib.contextmanager
def _session_folder(final: Path) -> Iterator[Path]:
    """Yield a hidden temp folder beside ``final``; rename it onto ``final`` on success only."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
            os.replace(final, trash / final.name)
            os.replace(tmp, final)
            shutil.rmtree(trash)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_session(result: PreprocessResult, folder: Path, key: dict[str, str]) -> list[dict[str, Any]]:
    ref = result.transforms.reference
    with _session_folder(folder) as tmp:
        for modality, img in result.volumes.items():
            save_nifti(tmp / f"{modality}.nii.gz", img)
        save_nifti(tmp / "mask.nii.gz", result.mask)
        seg_names: dict[str, str] = {}
        for index, (modality, lab) in enumerate(result.labels.items()):
            seg_names[modality] = "seg.nii.gz" if index == 0 else f"seg_{modality}.nii.gz"
            save_nifti(tmp / seg_names[modality], lab)
        write_json(tmp / "transforms.json", result.transforms.to_dict())
        write_json(tmp / "qc.json", result.qc)
        title = f"{key['subject']} {key['session']} {ref}" + (
            " | " + "; ".join(result.qc["flags"]) if result.qc["flags"] else ""
        )
        qc_png(
            tmp / "qc.png",
            np.asarray(result.volumes[ref].dataobj),
            np.asarray(result.mask.dataobj) > 0,
            tuple(float(z) for z in result.mask.header.get_zooms()[:3]),
            title,
        )
    seg_path = str(folder / next(iter(seg_names.values()))) if seg_names else ""
    qc = result.qc
    return [
        {
            **key,
            "modality": modality,
            "path": str(folder / f"{modality}.nii.gz"),
            "mask_path": str(folder / "mask.nii.gz"),
            "seg_path": seg_path,
            "transforms_path": str(folder / "transforms.json"),
            "qc_path": str(folder / "qc.json"),
            "qc_png": str(folder / "qc.png"),
            "shape": "x".join(str(n) for n in img.shape),
            "spacing_mm": result.transforms.spacing_mm,
            "brain_ml": qc["brain_ml"],
            "snr": qc["snr"],
            "bias_std": qc["bias_std_per_modality"].get(modality),
            "dice": qc["dice"],
            "qc_flags": "; ".join(qc["flags"]),
            "seconds_total": qc["seconds_total"],
        }
        for modality, img in result.volumes.items()
    ]


def preprocess_chunk(
    rows: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    settings: PreprocessSettings,
    *,
    landmarks: Mapping[str, NyulLandmarks] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Preprocess the sessions in a chunk of manifest rows, writing one folder per session.

    Writes ``<out>/<subject>/<session>/`` (session ``ses-none`` when empty) with
    ``<modality>.nii.gz``, ``mask.nii.gz``, ``seg.nii.gz`` (when a seg is given),
    ``transforms.json``, ``qc.json`` and ``qc.png``. A session's files go to a hidden temp
    folder renamed at the end, so a failed session leaves nothing behind. A failing session
    is recorded with its reason and the others continue.

    Args:
        rows: manifest rows (columns ``dataset, subject, session, modality, path, format``
            (``nifti``, or ``fastmri_h5`` read through
            :func:`brainssl.datasets.layouts.fastmri.load_rss`),
            optional ``seg_path, truth_brain_mask, native_id``) of one or more sessions.
        out_dir: output root.
        settings: stage settings.
        landmarks: modality -> Nyúl landmarks (method ``nyul``).

    Returns:
        ``(table, failures)``: one row per written volume (:data:`TABLE_COLUMNS`) and one per
        failed session (:data:`FAILURE_COLUMNS`).

    Raises:
        KeyError: if a required column is missing.
    """
    required = ("dataset", "subject", "session", "modality", "path")
    missing = [c for c in required if c not in rows.columns]
    if missing:
        raise KeyError(f"manifest rows lack column(s) {missing}")
    out = Path(out_dir)
    written: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    frame = rows.assign(session=rows["session"].map(_text))
    for (dataset, subject, session), group in frame.groupby(["dataset", "subject", "session"], sort=False):
        key = {"dataset": str(dataset), "subject": str(subject), "session": str(session) or NO_SESSION}
        try:
            images, truth, labels = _session_inputs(group)
            result = preprocess_session(images, settings, truth, labels, landmarks=landmarks)
            written.extend(_write_session(result, out / key["subject"] / key["session"], key))
            logger.info("%s %s: done in %.1f s", subject, key["session"], result.qc["seconds_total"])
        except Exception as err:  # one bad session must not stop the chunk; the reason is recorded
            reason = str(err) if isinstance(err, PreprocessError) else f"{type(err).__name__}: {err}"
            logger.warning("%s %s failed: %s", subject, key["session"], reason)
            native = group["native_id"].iloc[0] if "native_id" in group.columns else ""
            failures.append(
                {
                    **key,
                    "native_id": _text(native),
                    "path": ";".join(group["path"].map(str)),
                    "reason": reason,
                }
            )
    return (
        pd.DataFrame(written, columns=list(TABLE_COLUMNS)),
        pd.DataFrame(failures, columns=list(FAILURE_COLUMNS)),
    )
