"""Shared pieces of the native layouts: NIfTI reading and writing, synthetic truth, display slices.

Writers store intensity images as int16 with ``scl_slope``/``scl_inter``
scaling and label maps as uint8, and keep the generator's (often non-RAS)
affines. Readers open every file fully, so that a truncated or otherwise bad
file is caught here and not in a training job hours later.

The other shared pieces live beside this module, split by role: :mod:`.errors` (the errors
readers raise, what they refuse and :class:`~.errors.SubjectRecorder`), :mod:`.files` (file and
folder checks, minimum sizes), :mod:`.tables` (dataset-level text tables) and
:mod:`.bids_names` (BIDS file names).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from brainssl.datasets.layouts.errors import SubjectError
from brainssl.datasets.layouts.files import check_size, require_file
from brainssl.datasets.manifest import make_row
from brainssl.io import save_nifti, write_json

__all__ = [
    "TRUTH_DIR",
    "first_readable",
    "axial_slice",
    "grid_difference",
    "meta_dict",
    "nifti_geometry",
    "read_nifti",
    "read_truth",
    "save_volume",
    "write_truth",
]

logger = logging.getLogger(__name__)

TRUTH_DIR = "_truth"
TRUTH_VOLUMES = ("brain_mask", "tissue", "hippocampus", "bias_field")


def _zooms(affine: np.ndarray) -> np.ndarray:
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


def grid_difference(img: Any, ref: Any, ref_what: str) -> str | None:
    """Describe how the voxel grid of ``img`` differs from that of ``ref``, or ``None``.

    The description names what differs: the shape, else (same shape) the orientation,
    the voxel spacing, the axis directions or the origin, with both values.
    """
    shape, ref_shape = tuple(img.shape[:3]), tuple(ref.shape[:3])
    shown = "x".join(str(n) for n in shape)
    if shape != ref_shape:
        return f"shape {shown} differs from the {ref_what}'s {'x'.join(str(n) for n in ref_shape)}"
    affine, ref_affine = np.asarray(img.affine, dtype=float), np.asarray(ref.affine, dtype=float)
    if np.allclose(affine, ref_affine, atol=1e-3):
        return None
    codes, ref_codes = "".join(nib.aff2axcodes(affine)), "".join(nib.aff2axcodes(ref_affine))
    if codes != ref_codes:
        return f"same shape {shown} but orientation {codes} differs from the {ref_what}'s {ref_codes}"
    zooms, ref_zooms = _zooms(affine), _zooms(ref_affine)
    if not np.allclose(zooms, ref_zooms, rtol=1e-4, atol=1e-3):
        return (
            f"same shape {shown} but voxel spacing {_mm(zooms)} mm differs from the {ref_what}'s "
            f"{_mm(ref_zooms)} mm"
        )
    if not np.allclose(affine[:3, :3], ref_affine[:3, :3], atol=1e-3):
        return f"same shape {shown} and spacing but the axis directions differ from the {ref_what}'s"
    shift = float(np.linalg.norm(affine[:3, 3] - ref_affine[:3, 3]))
    return f"same shape {shown} and spacing but the origin is {shift:.3g} mm away from the {ref_what}'s"


def _mm(values: Iterable[float]) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def save_volume(path: Path, data: np.ndarray, affine: np.ndarray, label: bool = False) -> None:
    """Save a 3D array as NIfTI: int16 with slope/intercept, or uint8 for label maps.

    Args:
        path: destination (``.nii.gz``).
        data: 3D array ``(X, Y, Z)`` in the acquisition grid.
        affine: 4x4 voxel-to-world (RAS mm) matrix, stored as qform and sform.
        label: store as uint8 integers without scaling.
    """
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D array, got shape {data.shape}")
    if label:
        img = nib.Nifti1Image(np.asarray(data).astype(np.uint8), affine)
        img.set_data_dtype(np.uint8)
    else:
        img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
        img.set_data_dtype(np.int16)  # nibabel picks scl_slope/scl_inter on save
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    save_nifti(path, img)


def read_nifti(path: Path, what: str = "image") -> tuple[np.ndarray, nib.Nifti1Image]:
    """Open a NIfTI file completely and check that it holds a finite 3D volume.

    Args:
        path: the file.
        what: what the file should be (used in messages).

    Returns:
        The data as float32 ``(X, Y, Z)`` and the image (header, affine).

    A 4D file with one volume, ``(X, Y, Z, 1)``, is read as ``(X, Y, Z)``.

    Raises:
        SubjectError: naming the file when it is missing, a folder, a broken symlink or
            symlink loop, not readable (permission denied), truncated or corrupt, not 3D,
            holds NaN/inf, or is smaller than
            :data:`~brainssl.datasets.layouts.files.MIN_VOLUME_SIZE` along an axis.
    """
    require_file(path, what)
    try:
        img = nib.load(path)
        data = np.asarray(img.dataobj, dtype=np.float32)
    except PermissionError as err:
        raise SubjectError(path, f"permission denied: cannot read the {what} file") from err
    except Exception as err:  # nibabel, gzip, zlib and EOF errors all mean a bad file
        raise SubjectError(
            path, f"cannot read {what} (truncated or corrupt?): {type(err).__name__}: {err}"
        ) from err
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise SubjectError(path, f"{what} must be a 3D volume, got {data.ndim}D shape {data.shape}")
    if data.size == 0:
        raise SubjectError(path, f"{what} is empty")
    check_size(path, data.shape, what)
    if not np.isfinite(data).all():
        raise SubjectError(path, f"{what} holds {int((~np.isfinite(data)).sum())} NaN/inf voxels")
    return data, img  # type: ignore[return-value]


def nifti_geometry(img: nib.Nifti1Image) -> dict[str, Any]:
    """Return voxel sizes, shape string and axcodes of a NIfTI image as manifest values."""
    zooms = img.header.get_zooms()[:3]
    return {
        "voxel_x": float(zooms[0]),
        "voxel_y": float(zooms[1]),
        "voxel_z": float(zooms[2]),
        "shape": "x".join(str(int(n)) for n in img.shape[:3]),
        "orientation": "".join(nib.aff2axcodes(img.affine)),
    }


def meta_dict(meta: Any) -> dict[str, Any]:
    """Turn a subject's meta object (dataclass or mapping) into JSON-ready values."""
    raw = asdict(meta) if is_dataclass(meta) and not isinstance(meta, type) else dict(meta)
    return {key: _jsonable(value) for key, value in raw.items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def truth_folder(root: Path, native_id: str, session: str = "") -> Path:
    """Folder of one subject's (session's) synthetic truth beside the native tree."""
    folder = root / TRUTH_DIR / native_id
    return folder / session if session else folder


def write_truth(
    root: Path,
    native_id: str,
    volumes: Mapping[str, tuple[np.ndarray, np.ndarray]],
    meta: Mapping[str, Any],
    session: str = "",
) -> dict[str, str]:
    """Write synthetic ground truth for one subject under ``<root>/_truth/<native_id>[/<session>]``.

    Args:
        root: dataset root.
        native_id: native subject id.
        volumes: name (one of ``brain_mask``, ``tissue``, ``hippocampus``,
            ``bias_field``) -> (3D array, affine).
        meta: JSON-ready subject meta; should include ``sequence`` per written file.
        session: optional session label.

    Returns:
        ``truth_<name>`` -> written path, for the manifest's truth columns.
    """
    folder = truth_folder(root, native_id, session)
    written: dict[str, str] = {}
    for name, (data, affine) in volumes.items():
        if name not in TRUTH_VOLUMES:
            raise KeyError(f"unknown truth volume {name!r}; expected one of {TRUTH_VOLUMES}")
        path = folder / f"{name}.nii.gz"
        save_volume(path, data, affine, label=name != "bias_field")
        written[f"truth_{name}"] = str(path)
    write_json(folder / "meta.json", dict(meta))
    written["truth_meta"] = str(folder / "meta.json")
    return written


def read_truth(root: Path, native_id: str, session: str = "") -> dict[str, str]:
    """Return the truth columns for one subject: existing truth files, else nothing.

    Real datasets have no ``_truth`` folder, so this returns ``{}`` and the
    manifest's truth columns stay empty.
    """
    folder = truth_folder(root, native_id, session)
    if not folder.is_dir():
        return {}
    found = {f"truth_{name}": folder / f"{name}.nii.gz" for name in TRUTH_VOLUMES}
    found["truth_meta"] = folder / "meta.json"
    return {key: str(path) for key, path in found.items() if path.is_file()}


def read_truth_meta(truth: Mapping[str, str]) -> dict[str, Any]:
    """Load the truth meta JSON named in ``truth`` (``{}`` when absent or unreadable)."""
    path = truth.get("truth_meta")
    if not path:
        return {}
    try:
        return dict(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError) as err:
        logger.warning("ignoring unreadable truth meta %s: %s", path, err)
        return {}


def image_row(
    dataset: str, native_id: str, path: Path, img: nib.Nifti1Image, **values: Any
) -> dict[str, Any]:
    """Build the manifest row of one NIfTI image (geometry from its header)."""
    return make_row(dataset, native_id, path=str(path), format="nifti", **nifti_geometry(img), **values)


def volume_array(value: Any) -> np.ndarray:
    """Return the array of a synthetic volume field (a ``Volume`` or a bare array)."""
    return np.asarray(value.data if hasattr(value, "data") else value)


def subject_affine(subject: Any) -> np.ndarray:
    """Return the shared acquisition-grid affine of a synthetic subject."""
    first = next(iter(subject.images.values()))
    return np.asarray(first.affine, dtype=np.float64)


def subject_truth(subject: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Collect a synthetic subject's truth volumes (those present) with the grid affine."""
    affine = subject_affine(subject)
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in TRUTH_VOLUMES:
        value = getattr(subject, name, None)
        if value is not None:
            found[name] = (volume_array(value), affine)
    return found


def rel(root: Path, path: Path) -> str:
    """Return ``path`` relative to ``root`` as a POSIX string (for tables and JSON)."""
    return path.relative_to(root).as_posix()


def axial_slice(
    data: np.ndarray, affine: np.ndarray, label: np.ndarray | None = None
) -> tuple[np.ndarray, int]:
    """Take the display axial slice of a volume: through the label's centre, else mid-volume.

    Args:
        data: 3D array in any voxel order.
        affine: its voxel-to-world matrix.
        label: optional label map on the same grid; the slice goes through its centre.

    Returns:
        2D array ``(rows, cols)`` with anterior up and patient left on the right, and
        the slice index along the superior axis of the RAS-reoriented volume.
    """
    ornt = nib.orientations.io_orientation(affine)
    ras = nib.orientations.apply_orientation(data, ornt)
    k = ras.shape[2] // 2
    if label is not None and np.any(label > 0):
        ras_label = nib.orientations.apply_orientation(label, ornt)
        k = int(round(np.nonzero(ras_label > 0)[2].mean()))
    return np.rot90(ras[:, :, k])[:, ::-1], k


def first_readable(candidates: list[Path], what: str) -> tuple[Path, Any, list[tuple[Path, str]]]:
    """Read the first candidate that reads; the others become notes (path, reason).

    BIDS sessions can hold several files of one contrast (runs, acquisitions); the caller orders
    them by its rule and keeps the first readable one, reporting the rest.
    """
    notes: list[tuple[Path, str]] = []
    errors: list[SubjectError] = []
    for index, path in enumerate(candidates):
        try:
            _, img = read_nifti(path, what)
        except SubjectError as err:
            errors.append(err)
            if index == len(candidates) - 1:
                raise errors[0] from None  # none reads: the lowest run's reason
            notes.append((path, f"{err.reason}; {candidates[index + 1].name} is tried instead"))
            continue
        for other in candidates[index + 1 :]:
            notes.append(
                (
                    other,
                    f"another {what} of this session: {path.name} is used (lowest run first); "
                    "this file is not used",
                )
            )
        return path, img, notes
    raise AssertionError("unreachable")  # pragma: no cover
