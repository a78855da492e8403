"""fastMRI brain: multi-coil k-space and RSS reconstructions in HDF5, one file per acquisition.

Follows the NYU fastMRI brain release (Zbontar et al. 2018, arXiv:1811.08839; Muckley et al.
2021, IEEE TMI 40:2306, the brain challenge; the ``brain_multicoil_{train,val,test}`` archives,
which unpack into ``multicoil_train/`` etc.) and reads it as the ``fastmri`` package's ``SliceDataset`` and
data transforms do. Native layout::

    <root>/multicoil_train/file_brain_AXT1POST_201_600003.h5   (any depth; the demo's folder)
        kspace               (slices, coils, rows, cols) complex64; rows are the readout,
                             oversampled twice (640 rows for a 320-row image), cols the
                             phase encoding (the axis fastMRI's masks under-sample)
        reconstruction_rss   (slices, rows', cols') float32: RSS of the coil images
                             centre-cropped to the reconSpace matrix (absent in the test split)
        mask                 (cols,) sampled columns, only in the under-sampled test split
        ismrmrd_header       ISMRMRD XML: encoding/encodedSpace and reconSpace (matrixSize,
                             fieldOfView_mm; x is the readout = rows, y the phase encoding =
                             cols, as fastMRI's ``recon_size`` crop reads them),
                             encodingLimits/kspace_encoding_step_1 (center, maximum: the
                             acquired columns, fastMRI's padding_left/right), ...
        attrs: acquisition (AXT1, AXT1PRE, AXT1POST, AXT2, AXFLAIR), max, norm, patient_id

fastMRI has no affine. Slices are axial; rows run anterior to posterior and
columns patient right to left (radiological display). The manifest's
``voxel_x``/``voxel_y`` are the column/row spacing and ``voxel_z`` the slice
thickness (reconSpace field of view / matrix size), and ``orientation`` is
empty. A file without ``reconstruction_rss`` (fully sampled k-space) is read as
fastMRI reconstructs it: the RSS of the inverse FFT of the k-space, centre-cropped
to the reconSpace matrix (:func:`reconstruct_rss`); an under-sampled test-split
file (a ``mask`` and no ``reconstruction_rss``) has no fully sampled image and is
reported, not used. ``native_id`` is the ``patient_id`` attribute (the file stem when
absent), so files of one patient share a subject; the demo sets
``patient_id`` to the file stem. Each file is one acquisition with its own
geometry, so it is its own volume: ``session`` is the file stem, and two files
of one patient and acquisition are two sessions of one subject (never one
session with a contrast listed twice). File names must be unique under the
root: a second file of the same name in another folder is reported and not
used. Synthetic truth lives in ``_truth/<file stem>/`` as NIfTI whose arrays
index like ``reconstruction_rss``; it sits beside ``multicoil_train/``, so that
``SliceDataset(<root>/multicoil_train, challenge="multicoil")`` opens the demo files.

The demo writes every file as the real ones are: a complete ISMRMRD header (encoding
limits, acquisition system with ``receiverChannels``, sequence parameters; the
values are illustrative), k-space with :data:`READOUT_OVERSAMPLING` times the
image's rows (the synthetic head fills the centre half of the readout field of
view; the outer rows hold no signal), the RSS target cropped from it, and
:data:`N_COILS` coils (real brain files have 4 to 20, most 16 or 20; the demo
stays at the low end to keep it fast; ``write_subject(..., n_coils=16)`` writes
paper-like files). The k-space has the image's own columns, fully acquired
(``center`` = cols // 2, ``maximum`` = cols - 1: no padding).
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import h5py
import nibabel as nib
import numpy as np
import pandas as pd

from brainssl.datasets.layouts.base import (
    TRUTH_DIR,
    meta_dict,
    read_truth,
    rel,
    subject_affine,
    subject_truth,
    volume_array,
    write_truth,
)
from brainssl.datasets.layouts.errors import DatasetInfo, SubjectError, SubjectRecorder
from brainssl.datasets.layouts.files import check_size, require_file, require_root
from brainssl.datasets.layouts.ismrmrd import header_geometry, ismrmrd_header, recon_shape
from brainssl.datasets.manifest import make_row
from brainssl.io import atomic_path

__all__ = [
    "INFO",
    "ACQUISITION_CONTRAST",
    "native_id",
    "subject_params",
    "write_subject",
    "finalize",
    "read",
    "to_slice_stack",
    "rss_affine",
    "load_rss",
    "reconstruct_rss",
    "DATA_DIR",
    "N_COILS",
    "READOUT_OVERSAMPLING",
]

logger = logging.getLogger(__name__)

INFO = DatasetInfo(
    key="fastmri_brain",
    name="fastMRI brain",
    layout="file_brain_<ACQ>_###_######.h5 files (HDF5 with kspace, reconstruction_rss, ismrmrd_header "
    "and attrs acquisition/max/norm/patient_id), e.g. multicoil_train/",
    source="https://fastmri.med.nyu.edu/ (NYU fastMRI data sharing agreement)",
)
ACQUISITION_CONTRAST = {
    "AXT1": "T1w",
    "AXT1PRE": "T1w",
    "AXT1POST": "T1ce",
    "AXT2": "T2w",
    "AXFLAIR": "FLAIR",
}
ACQUISITIONS = tuple(ACQUISITION_CONTRAST)
#: Receive coils of a demo file (real brain files: 4 to 20; ``write_subject(n_coils=...)`` overrides).
N_COILS = 4
#: k-space rows per image row: the readout is oversampled twice, as in every fastMRI brain file.
READOUT_OVERSAMPLING = 2
#: The folder the demo writes its files into (the real release's ``multicoil_train/``).
DATA_DIR = "multicoil_train"
MAX_SLICES = 16  # real fastMRI brain volumes hold about 16 thick axial slices over the brain
STACK_AXCODES = ("S", "P", "L")  # (slice, row, column) of the slice stack
_NAME = re.compile(r"^file_brain_(AXT1PRE|AXT1POST|AXT1|AXT2|AXFLAIR)_\d+_\d+\.h5$")


def native_id(index: int) -> str:
    """File stem of demo acquisition ``index`` (the acquisition type cycles with the index)."""
    return f"file_brain_{ACQUISITIONS[index % len(ACQUISITIONS)]}_{201 + index % 9:03d}_{600000 + index:06d}"


def subject_params(index: int, grid_mm: float) -> dict[str, Any]:
    """Synthetic-subject settings: the one contrast this file's acquisition needs."""
    acquisition = ACQUISITIONS[index % len(ACQUISITIONS)]
    return {"contrasts": (ACQUISITION_CONTRAST[acquisition],), "grid_mm": grid_mm}


def to_slice_stack(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder a volume into fastMRI's axial slice stack ``(slice, row, column)``.

    Args:
        data: 3D array in any voxel order.
        affine: its voxel-to-world (RAS mm) matrix.

    Returns:
        The reordered array (inferior to superior slices, anterior row first,
        patient right in column 0) and the affine of that array.
    """
    transform = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt(STACK_AXCODES)
    )
    stacked = nib.orientations.apply_orientation(data, transform)
    new_affine = affine @ nib.orientations.inv_ornt_aff(transform, data.shape)
    return np.ascontiguousarray(stacked), new_affine


def brain_slices(mask_stack: np.ndarray, stack_affine: np.ndarray) -> tuple[slice, np.ndarray]:
    """Pick at most ``MAX_SLICES`` evenly spaced slices over the brain, as a thick-slice scan would.

    Returns:
        The slice selection along the stack's first axis and the affine of the selected stack.
    """
    rows = np.flatnonzero(mask_stack.reshape(mask_stack.shape[0], -1).any(axis=1))
    first, last = (int(rows[0]), int(rows[-1])) if rows.size else (0, mask_stack.shape[0] - 1)
    step = max(1, -(-(last - first + 1) // MAX_SLICES))
    picked = slice(first, last + 1, step)
    shift = np.eye(4)
    shift[0, 0], shift[0, 3] = step, first
    return picked, stack_affine @ shift


def write_subject(
    root: Path, index: int, nid: str, make: Callable[..., Any], n_coils: int | None = None
) -> dict[str, Any]:
    """Write one synthetic acquisition as a fastMRI HDF5 file (+ truth); return its record.

    Args:
        root: dataset root; the file goes to ``<root>/multicoil_train/<nid>.h5``.
        index: demo subject index (picks the acquisition).
        nid: file stem.
        make: draws the synthetic subject.
        n_coils: receive coils (default :data:`N_COILS`; real brain files have 4 to 20).
    """
    from brainssl.synth import simulate_kspace

    acquisition = ACQUISITIONS[index % len(ACQUISITIONS)]
    contrast = ACQUISITION_CONTRAST[acquisition]
    subject = make()
    volume = subject.images[contrast]
    stack, stack_affine = to_slice_stack(volume_array(volume).astype(np.float32), np.asarray(volume.affine))
    truth = {name: to_slice_stack(array, affine) for name, (array, affine) in subject_truth(subject).items()}
    mask_stack = to_slice_stack(volume_array(subject.brain_mask), np.asarray(subject.brain_mask.affine))[0]
    picked, stack_affine = brain_slices(mask_stack, stack_affine)
    stack = stack[picked]
    truth = {name: (array[picked], stack_affine) for name, (array, _) in truth.items()}
    seed = int.from_bytes(hashlib.sha256(nid.encode()).digest()[:8], "little")
    coils = N_COILS if n_coils is None else int(n_coils)
    kspace, rss = simulate_kspace(stack, coils, np.random.default_rng(seed), READOUT_OVERSAMPLING)
    zooms = np.sqrt((stack_affine[:3, :3] ** 2).sum(axis=0))  # slice, row, column spacing
    header = ismrmrd_header(nid, acquisition, kspace.shape, rss.shape, zooms)
    path = root / DATA_DIR / f"{nid}.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        handle.create_dataset("kspace", data=np.asarray(kspace, dtype=np.complex64))
        handle.create_dataset("reconstruction_rss", data=np.asarray(rss, dtype=np.float32))
        handle.create_dataset("ismrmrd_header", data=np.bytes_(header.encode()))
        handle.attrs.update(
            acquisition=acquisition, max=float(np.max(rss)), norm=float(np.linalg.norm(rss)), patient_id=nid
        )
    meta = meta_dict(subject.meta)
    write_truth(
        root,
        nid,
        truth,
        {
            **meta,
            "sequence": {rel(root, path): contrast},
            "acquisition": acquisition,
            "acquisition_affine": subject_affine(subject),
            "stack_affine": stack_affine,
        },
    )
    return {
        "native_id": nid,
        "files": [rel(root, path)],
        "meta": meta,
        "extra": {"acquisition": acquisition, "coils": coils},
    }


def finalize(root: Path, shard: pd.DataFrame) -> list[Path]:
    """FastMRI has no dataset-level tables; nothing to write."""
    return []


def reconstruct_rss(kspace: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The RSS reconstruction fastMRI makes of fully sampled multi-coil k-space, centre-cropped to ``shape``.

    ``sqrt(sum_coils |ifft2c(kspace)|^2)`` with the centred orthonormal inverse FFT, then the
    centre crop of ``fastmri.data.transforms.center_crop`` (start ``(n - crop) // 2``); this is
    how ``reconstruction_rss`` relates to ``kspace`` in the real files.

    Args:
        kspace: ``(slices, coils, rows, cols)`` complex.
        shape: ``(rows, cols)`` to crop to (:func:`~brainssl.datasets.layouts.ismrmrd.recon_shape`).

    Returns:
        ``(slices, rows, cols)`` float32.
    """
    from brainssl.synth.acquisition import ifft2c

    h, w = (int(n) for n in shape)
    rss = np.sqrt((np.abs(ifft2c(np.asarray(kspace))) ** 2).sum(axis=1))
    top, left = (rss.shape[1] - h) // 2, (rss.shape[2] - w) // 2
    return np.ascontiguousarray(rss[:, top : top + h, left : left + w], dtype=np.float32)


def _image_geometry(
    path: Path, kspace_shape: Sequence[int], rss: np.ndarray | None, header: Any, undersampled: bool
) -> tuple[tuple[int, ...], list[float]]:
    """Shape of the file's RSS image (stored, or reconstructed from the k-space) and its spacing."""
    if rss is not None and (rss.ndim != 3 or not np.isfinite(rss).all()):
        raise SubjectError(path, f"reconstruction_rss must be a finite 3D array, got shape {rss.shape}")
    spacing = [float("nan")] * 3
    if rss is not None:
        shape = tuple(int(n) for n in rss.shape)
        if header is not None:
            spacing, _ = header_geometry(path, header)
    else:
        if undersampled:
            raise SubjectError(path, _UNDERSAMPLED)
        if header is None:
            raise SubjectError(path, "no reconstruction_rss and no ismrmrd_header: the image size is unknown")
        spacing, matrix = header_geometry(path, header)
        shape = (int(kspace_shape[0]), *recon_shape(kspace_shape, matrix))
    check_size(path, shape, "reconstruction_rss" if rss is not None else "RSS of the k-space")
    return shape, spacing


def _read_file(root: Path, path: Path) -> dict[str, Any]:
    require_file(path, "HDF5 file")
    try:
        with h5py.File(path, "r") as handle:
            if "kspace" not in handle:
                raise SubjectError(path, "no 'kspace' dataset")
            kspace = handle["kspace"][()]
            rss = handle["reconstruction_rss"][()] if "reconstruction_rss" in handle else None
            header = handle["ismrmrd_header"][()] if "ismrmrd_header" in handle else None
            undersampled = "mask" in handle
            attrs = dict(handle.attrs)
    except SubjectError:
        raise
    except PermissionError as err:
        raise SubjectError(path, "permission denied: cannot read the HDF5 file") from err
    except Exception as err:  # h5py raises OSError/KeyError for truncated files
        raise SubjectError(
            path, f"cannot read HDF5 (truncated or corrupt?): {type(err).__name__}: {err}"
        ) from err
    if kspace.ndim != 4 or not np.iscomplexobj(kspace):
        raise SubjectError(
            path, f"kspace must be complex (slices, coils, ky, kx), got {kspace.dtype} {kspace.shape}"
        )
    if not np.isfinite(kspace).all():
        raise SubjectError(path, "kspace holds NaN/inf")
    shape, spacing = _image_geometry(path, kspace.shape, rss, header, undersampled)
    acquisition = _text(attrs.get("acquisition", ""))
    if acquisition not in ACQUISITION_CONTRAST:
        named = _NAME.match(path.name)
        if not named:
            raise SubjectError(path, f"unknown acquisition {acquisition!r}")
        acquisition = named.group(1)
    nid = _text(attrs.get("patient_id")) or path.stem
    truth = read_truth(root, path.stem)
    return make_row(
        INFO.key,
        nid,
        session=path.stem,
        path=str(path),
        format="fastmri_h5",
        contrast=ACQUISITION_CONTRAST[acquisition],
        voxel_x=spacing[0],
        voxel_y=spacing[1],
        voxel_z=spacing[2],
        shape="x".join(str(n) for n in shape),
        orientation="",
        **truth,
    )


_UNDERSAMPLED = (
    "under-sampled k-space (a 'mask' dataset and no reconstruction_rss, as in the test split): "
    "no fully sampled image to read"
)


def _text(value: Any) -> str:
    """An HDF5 attribute as text (bytes decoded)."""
    if value is None:
        return ""
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", errors="replace").strip()
    return str(value).strip()


def _find_files(root: Path, recorder: SubjectRecorder) -> list[Path]:
    """Every ``file_brain_*.h5`` under ``root`` outside ``_truth`` (symlinked folders are not followed).

    An unreadable folder is reported (``permission denied``) and the walk goes on; an entry
    named like a file that is a folder, a broken link or a loop is returned, for the reader
    to report.
    """
    found: list[Path] = []

    def unreadable(err: OSError) -> None:
        where = err.filename or str(root)
        reason = "permission denied: cannot list the folder" if isinstance(err, PermissionError) else str(err)
        logger.warning("%s: %s: %s", INFO.key, where, reason)
        recorder.fail("", where, reason)  # a folder: the acquisitions in it cannot be named

    for folder, dirs, files in os.walk(root, onerror=unreadable):
        here = Path(folder)
        if here == root and TRUTH_DIR in dirs:
            dirs.remove(TRUTH_DIR)
        dirs.sort()
        found.extend(here / name for name in [*files, *dirs] if fnmatch.fnmatchcase(name, "file_brain_*.h5"))
    return sorted(found)


def read(root: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read a fastMRI brain root (real or demo) into manifest rows and failures.

    Raises:
        DatasetLayoutError: if the root is missing or holds no ``file_brain_*.h5``.
    """
    require_root(INFO, root, ("**/file_brain_*.h5",))
    recorder = SubjectRecorder(INFO.key)
    used: dict[str, Path] = {}
    for path in _find_files(root, recorder):
        if path.stem in used:
            recorder.note(
                path.stem,
                path,
                f"a second file named {path.name} (first: {used[path.stem]}); file names must be unique, "
                "this file is not used",
            )
            continue
        used[path.stem] = path
        with recorder.subject(path.stem) as rows:
            rows.append(_read_file(root, path))
    return recorder.rows, recorder.failures


def rss_affine(spacing: Sequence[float], shape: Sequence[int]) -> np.ndarray:
    """Voxel-to-world affine of a ``reconstruction_rss`` stack ``(slice, row, column)``.

    fastMRI stores no position, so the stack is centred on the world origin with the
    axes of :data:`STACK_AXCODES` (slices inferior to superior, rows anterior to posterior,
    columns patient right to left).

    Args:
        spacing: ``(column, row, slice)`` spacing in mm, as the manifest's ``voxel_x/y/z``.
        shape: the stack's shape ``(slices, rows, columns)``.
    """
    if len(spacing) != 3 or len(shape) != 3:
        raise ValueError(f"need 3 spacings and a 3D shape, got {list(spacing)} and {list(shape)}")
    sx, sy, sz = (float(s) for s in spacing)
    axes = np.array([[0.0, 0.0, -sx], [0.0, -sy, 0.0], [sz, 0.0, 0.0]])  # world (R, A, S) per voxel axis
    affine = np.eye(4)
    affine[:3, :3] = axes
    centre = (np.asarray(shape, dtype=float) - 1.0) / 2.0
    affine[:3, 3] = -axes @ centre
    return affine


def load_rss(path: str | Path) -> nib.Nifti1Image:
    """Load a fastMRI file's RSS image as a 3D image with an affine from its header.

    The image is ``reconstruction_rss``; a file without it (fully sampled k-space and no
    ``mask``) is reconstructed as fastMRI does (:func:`reconstruct_rss`, cropped to the
    reconSpace matrix, :func:`~brainssl.datasets.layouts.ismrmrd.recon_shape`). Spacing comes
    from the ismrmrd header's reconSpace (:func:`~brainssl.datasets.layouts.ismrmrd.header_geometry`);
    the orientation and centring from :func:`rss_affine`. Synthetic truth volumes of the file
    index like the stack and can be wrapped with the returned affine.

    Raises:
        SubjectError: for an unreadable file, a missing header, an under-sampled file without
            ``reconstruction_rss``, or a non-3D reconstruction.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as handle:
            if "reconstruction_rss" not in handle:
                if "mask" in handle:
                    raise SubjectError(path, f"no 'reconstruction_rss' dataset ({_UNDERSAMPLED})")
                if "kspace" not in handle or "ismrmrd_header" not in handle:
                    raise SubjectError(
                        path, "no 'reconstruction_rss' dataset, nor 'kspace' and 'ismrmrd_header' to make it"
                    )
            if "ismrmrd_header" not in handle:
                raise SubjectError(path, "no 'ismrmrd_header' (geometry unknown)")
            header = handle["ismrmrd_header"][()]
            if "reconstruction_rss" in handle:
                rss = np.asarray(handle["reconstruction_rss"][()], dtype=np.float32)
            else:
                kspace = np.asarray(handle["kspace"][()])
                if kspace.ndim != 4:
                    raise SubjectError(path, f"kspace is {kspace.shape}, not (slices, coils, rows, cols)")
                rss = reconstruct_rss(kspace, recon_shape(kspace.shape, header_geometry(path, header)[1]))
    except SubjectError:
        raise
    except Exception as err:  # h5py raises OSError/KeyError for truncated files
        raise SubjectError(path, f"cannot read HDF5: {type(err).__name__}: {err}") from err
    if rss.ndim != 3:
        raise SubjectError(path, f"reconstruction_rss must be 3D (slices, y, x), got shape {rss.shape}")
    spacing, _ = header_geometry(path, header)
    return nib.Nifti1Image(rss, rss_affine(spacing, rss.shape))
