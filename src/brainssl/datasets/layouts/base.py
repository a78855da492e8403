"""Shared pieces of the native layouts: errors, checked file and table I/O, synthetic truth.

Writers store intensity images as int16 with ``scl_slope``/``scl_inter``
scaling and label maps as uint8, and keep the generator's (often non-RAS)
affines. Readers open every file fully, so that a truncated or otherwise bad
file is caught here and not in a training job hours later.

What readers refuse, and how they say it:

* A file that cannot be used is a :class:`SubjectError` naming it and the real cause
  (:func:`file_problem`: missing, a broken symlink or a symlink loop, a folder where a
  file is expected, permission denied; then unreadable, not 3D, NaN/inf, too small).
  Its subject becomes one row of the dataset's failures table; reading goes on.
* Volumes smaller than :data:`MIN_VOLUME_SIZE` voxels along any axis, and 2D images
  smaller than :data:`MIN_IMAGE_SIZE` pixels, are refused as too small to process.
  A NIfTI of shape ``(X, Y, Z, 1)`` is read as the 3D volume ``(X, Y, Z)``.
* Dataset-level text tables (``train_labels.csv``, ``IXI.csv``, clinical tables, ...)
  are read as UTF-8, else as latin-1 with a warning (:func:`read_text`). A missing
  required column or an unparsable table stops the dataset with one
  :class:`DatasetLayoutError` naming the file and the columns expected
  (:func:`table_error`); a bad row costs only the subject it names (:class:`LabelBook`),
  reported with the file, the row number (the header is row 1, as a spreadsheet counts)
  and the reason. Cells in :data:`NA_TOKENS` mean "unknown" and stay empty.
* Several files for one slot (duplicates) are resolved by each layout's documented rule;
  the files not used are reported in the failures table (:meth:`SubjectRecorder.note`)
  and the subject is kept.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import logging
import math
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from brainssl.datasets.manifest import make_row
from brainssl.io import save_nifti, write_json

__all__ = [
    "DatasetInfo",
    "DatasetLayoutError",
    "NoUsableSubjectsError",
    "SubjectError",
    "SubjectRecorder",
    "LabelBook",
    "Table",
    "TRUTH_DIR",
    "MIN_VOLUME_SIZE",
    "MIN_IMAGE_SIZE",
    "NA_TOKENS",
    "file_problem",
    "require_file",
    "list_dir",
    "folder_problem",
    "check_size",
    "grid_difference",
    "read_text",
    "read_csv_table",
    "table_error",
    "is_na",
    "parse_number",
    "parse_choice",
    "save_volume",
    "read_nifti",
    "nifti_geometry",
    "write_truth",
    "read_truth",
    "meta_dict",
    "require_root",
    "axial_slice",
    "BIDS_ENTITIES",
    "BidsName",
    "parse_bids_name",
    "bids_image_problem",
    "bids_image_order",
]

logger = logging.getLogger(__name__)

TRUTH_DIR = "_truth"
TRUTH_VOLUMES = ("brain_mask", "tissue", "hippocampus", "bias_field")
#: Smallest accepted size, in voxels along every axis, of a NIfTI or fastMRI volume. Smaller
#: volumes (a 2x2x2 test file, a handful of slices) cannot be skull-stripped, bias-corrected,
#: registered or sliced; they are refused at the manifest instead of failing later in ITK.
MIN_VOLUME_SIZE = 8
#: Smallest accepted width and height, in pixels, of a 2D image (the 4-class JPEGs).
MIN_IMAGE_SIZE = 32
#: Table cells that mean "unknown" (compared stripped and lower-cased); such values stay empty.
NA_TOKENS = frozenset({"", "na", "n/a", "nan", "none", "null", "unknown", "?", "-"})


@dataclass(frozen=True)
class DatasetInfo:
    """What a person needs to know to provide a real copy of a dataset.

    Attributes:
        key: dataset key (``ixi``).
        name: full name.
        layout: the expected folder layout, in one or two lines.
        source: where to obtain it.
    """

    key: str
    name: str
    layout: str
    source: str


class DatasetLayoutError(ValueError):
    """A dataset root is missing or does not look like the native layout.

    Also raised for a dataset-level table that cannot be used at all (unparsable, or
    missing a required column): the message names the file and the columns expected.
    """


class NoUsableSubjectsError(DatasetLayoutError):
    """Every subject of a dataset failed; the message names the failures table."""


class SubjectError(ValueError):
    """One subject cannot be used; the message names the file and the reason."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def require_root(info: DatasetInfo, root: Path, must_contain: tuple[str, ...] = ()) -> None:
    """Raise :class:`DatasetLayoutError` unless ``root`` exists and holds ``must_contain``.

    Args:
        info: the dataset's description (used in the message).
        root: the dataset root.
        must_contain: glob patterns of which each must match at least one path.

    Raises:
        DatasetLayoutError: naming the dataset, the expected layout and the source.
    """
    problem = ""
    if not root.is_dir():
        problem = f"{root} does not exist or is not a folder"
    elif not os.access(root, os.R_OK | os.X_OK):
        problem = f"permission denied: cannot list {root}"
    else:
        absent = [pattern for pattern in must_contain if next(root.glob(pattern), None) is None]
        if absent:
            problem = f"{root} holds nothing matching {absent}"
    if problem:
        raise DatasetLayoutError(
            f"{info.name} ({info.key}): {problem}. Expected layout: {info.layout}. "
            f"Obtain it from {info.source}."
        )


@dataclass
class SubjectRecorder:
    """Collects manifest rows per subject; a failing subject becomes one failure row.

    Use ``with recorder.subject(native_id) as rows: rows.append(...)``; if the
    block raises :class:`SubjectError` (or an ``OSError`` such as ``PermissionError``),
    the subject's rows are dropped and the error is recorded (dataset, native_id, path,
    reason), and reading goes on.
    """

    dataset: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)

    @contextlib.contextmanager
    def subject(self, native_id: str) -> Iterator[list[dict[str, Any]]]:
        """Yield a list for this subject's rows; keep them only if no SubjectError is raised."""
        pending: list[dict[str, Any]] = []
        try:
            yield pending
        except SubjectError as err:
            logger.warning("%s %s dropped: %s", self.dataset, native_id, err)
            self.fail(native_id, err.path, err.reason)
            return
        except OSError as err:  # a folder or file that cannot be listed or opened
            path = err.filename if err.filename is not None else ""
            reason = (
                "permission denied"
                if isinstance(err, PermissionError)
                else f"cannot read: {type(err).__name__}: {err.strerror or err}"
            )
            logger.warning("%s %s dropped: %s: %s", self.dataset, native_id, path, reason)
            self.fail(native_id, path, reason)
            return
        self.rows.extend(pending)

    def fail(self, native_id: str, path: Path | str, reason: str) -> None:
        """Record one failure without a subject context."""
        self.failures.append(
            {"dataset": self.dataset, "native_id": native_id, "path": str(path), "reason": reason}
        )

    def note(self, native_id: str, path: Path | str, reason: str) -> None:
        """Report a file that is not used while its subject is kept (e.g. a duplicate)."""
        logger.warning("%s %s: %s: %s", self.dataset, native_id, path, reason)
        self.fail(native_id, path, reason)


def file_problem(path: Path, what: str = "file") -> str | None:
    """Say why ``path`` cannot be read as a regular file, or return ``None`` when it can.

    The reasons name the real cause: ``missing``, a broken symlink, a symlink loop, a folder
    where a file is expected, not a regular file, or permission denied (the file itself, or a
    folder above it that cannot be entered).
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            return f"{what} is a broken symlink (to {os.readlink(path)})"
        return f"missing {what} file"
    except PermissionError:
        return f"permission denied: cannot reach the {what} file (a folder above it is not readable)"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return f"{what} is a symlink loop"
        return f"cannot open {what}: {type(err).__name__}: {err.strerror or err}"
    if stat.S_ISDIR(info.st_mode):
        return f"{what} is a folder where a file is expected"
    if not stat.S_ISREG(info.st_mode):
        return f"{what} is not a regular file"
    if not os.access(path, os.R_OK):
        return f"permission denied: cannot read the {what} file"
    return None


def require_file(path: Path, what: str = "file") -> None:
    """Raise :class:`SubjectError` naming ``path`` unless it is a readable regular file."""
    problem = file_problem(path, what)
    if problem is not None:
        raise SubjectError(path, problem)


def list_dir(path: Path, what: str = "folder") -> list[Path]:
    """List a folder (sorted), raising :class:`SubjectError` with the real cause when it cannot.

    Unlike :meth:`pathlib.Path.glob`, which yields nothing for a folder it may not read, an
    unreadable folder is reported as ``permission denied``.
    """
    try:
        with os.scandir(path) as entries:
            return sorted(Path(entry.path) for entry in entries)
    except PermissionError as err:
        raise SubjectError(path, f"permission denied: cannot list the {what}") from err
    except FileNotFoundError as err:
        raise SubjectError(path, f"missing {what}") from err
    except NotADirectoryError as err:
        raise SubjectError(path, f"{what} is a file, not a folder") from err
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise SubjectError(path, f"{what} is a symlink loop") from err
        raise SubjectError(path, f"cannot list the {what}: {type(err).__name__}: {err}") from err


def folder_problem(path: Path, what: str = "folder") -> str | None:
    """Say why ``path`` cannot be used as a folder (see :func:`file_problem`), or ``None``."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return f"{what} is a broken symlink" if path.is_symlink() else f"missing {what}"
    except PermissionError:
        return f"permission denied: cannot reach the {what}"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return f"{what} is a symlink loop"
        return f"cannot open the {what}: {type(err).__name__}: {err.strerror or err}"
    if not stat.S_ISDIR(info.st_mode):
        return f"{what} is a file where a folder is expected"
    if not os.access(path, os.R_OK | os.X_OK):
        return f"permission denied: cannot list the {what}"
    return None


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


# --------------------------------------------------------------------------- dataset-level tables


def table_error(
    info: DatasetInfo, path: Path, problem: str, expected: Sequence[str], kind: str = "columns"
) -> DatasetLayoutError:
    """Build the one dataset-level error for an unusable table: the file, the problem, the columns."""
    return DatasetLayoutError(
        f"{info.name} ({info.key}): {path}: {problem}; expected {kind} {list(expected)}"
    )


def read_text(path: Path, info: DatasetInfo | None = None) -> str:
    """Read a text table: UTF-8 (a BOM is dropped), else latin-1 with a warning naming the byte.

    Raises:
        DatasetLayoutError: when the file cannot be read (permission denied, a folder, ...).
    """
    problem = file_problem(path, "table")
    if problem is None:
        try:
            data = path.read_bytes()
        except OSError as err:
            problem = "permission denied" if isinstance(err, PermissionError) else f"cannot read: {err}"
    if problem is not None:
        where = f"{info.name} ({info.key}): " if info is not None else ""
        raise DatasetLayoutError(f"{where}{path}: {problem}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        logger.warning(
            "%s: not valid UTF-8 (byte 0x%02x on line %d); read as latin-1, check the non-ASCII text",
            path,
            data[err.start],
            line,
        )
        return data.decode("latin-1")


@dataclass
class Table:
    """A dataset-level table read as text cells, with row numbers for messages.

    Attributes:
        path: the file.
        columns: the header cells (stripped).
        rows: ``(row number, {column: cell})`` per data row; the header is row 1, as a
            spreadsheet counts (for text files: the line on which the row ends).
        bad: ``(row number, reason)`` of rows that could not be split into the header's cells.
    """

    path: Path
    columns: list[str]
    rows: list[tuple[int, dict[str, str]]]
    bad: list[tuple[int, str]] = field(default_factory=list)

    def column(self, *names: str, prefix: bool = False) -> str | None:
        """Return the header cell matching one of ``names`` (case-insensitive), else ``None``."""
        lower = {c.strip().lower(): c for c in self.columns}
        for name in names:
            key = name.strip().lower()
            if key in lower:
                return lower[key]
            if prefix:
                hit = next((c for k, c in lower.items() if k.startswith(key)), None)
                if hit is not None:
                    return hit
        return None


def read_csv_table(info: DatasetInfo, path: Path, required: Sequence[str]) -> Table:
    """Read a comma-separated table into text cells; check the required columns.

    Fully empty rows are skipped; a short row is padded with empty cells (as pandas does);
    a row with more non-empty cells than the header is a bad row (:attr:`Table.bad`).

    Raises:
        DatasetLayoutError: for an unreadable or empty file, or a missing required column
            (case-insensitive), naming the file and the columns expected.
    """
    text = read_text(path, info)
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    rows: list[tuple[int, dict[str, str]]] = []
    bad: list[tuple[int, str]] = []
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            if header is None:
                raise table_error(info, path, f"cannot parse the header: {err}", required) from err
            bad.append((reader.line_num, f"cannot split the row into cells: {err}"))
            continue
        if not any(cell.strip() for cell in cells):
            continue
        if header is None:
            header = [cell.strip() for cell in cells]
            continue
        if len(cells) > len(header) and any(cell.strip() for cell in cells[len(header) :]):
            bad.append((reader.line_num, f"{len(cells)} cells but the header has {len(header)}"))
            continue
        cells = cells + [""] * (len(header) - len(cells))
        rows.append((reader.line_num, dict(zip(header, cells, strict=False))))
    if header is None:
        raise table_error(info, path, "the table is empty", required)
    table = Table(path, header, rows, bad)
    missing = [name for name in required if table.column(name) is None]
    if missing:
        raise table_error(info, path, f"missing column(s) {missing} (the header has {header})", required)
    return table


def is_na(text: Any) -> bool:
    """Whether a table cell means "unknown" (empty, ``NA``, ``unknown``, ...; see :data:`NA_TOKENS`)."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return True
    return str(text).strip().lower() in NA_TOKENS


def parse_number(text: Any, column: str, minimum: float | None = None) -> float:
    """Parse a numeric cell: NaN when unknown (:func:`is_na`).

    Raises:
        ValueError: naming the column and the value when it is not a finite number (or below
            ``minimum``).
    """
    if is_na(text):
        return math.nan
    try:
        value = float(str(text).strip())
    except ValueError:
        raise ValueError(f"{column} {str(text).strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{column} {str(text).strip()!r} is not a finite number")
    if minimum is not None and value < minimum:
        raise ValueError(f"{column} {value:g} is below {minimum:g}")
    return value


def parse_choice(text: Any, column: str, choices: Mapping[str, Any]) -> Any:
    """Map a cell through ``choices`` (keys compared lower-cased; ``1.0`` reads as ``1``).

    Returns ``None`` when the cell is unknown (:func:`is_na`).

    Raises:
        ValueError: naming the column, the value and the allowed values.
    """
    if is_na(text):
        return None
    key = str(text).strip().lower()
    if key.endswith(".0") and key[:-2].isdigit():
        key = key[:-2]
    if key not in choices:
        raise ValueError(f"{column} {str(text).strip()!r} is not one of {list(choices)}")
    return choices[key]


_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


@dataclass
class LabelBook:
    """Per-subject values from dataset-level tables; a bad or contradicting row refuses its subject.

    Readers :meth:`put` the values of each good row, :meth:`refuse` the subject a bad row
    names, and :meth:`stray` rows that name no subject. A value given twice differently (a
    subject listed twice in a table) refuses the subject too: it is never labelled by a guess.
    :meth:`report` writes all of it into the failures table.
    """

    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: dict[str, dict[str, str]] = field(default_factory=dict)
    refused: dict[str, tuple[str, str]] = field(default_factory=dict)
    strays: list[tuple[str, str, str]] = field(default_factory=list)

    def put(self, nid: str, path: Path, row: int, **values: Any) -> None:
        """Record the values of row ``row`` of ``path`` for subject ``nid``."""
        have = self.values.setdefault(nid, {})
        where = self.sources.setdefault(nid, {})
        for key, value in values.items():
            old = have.get(key, _MISSING)
            if old is not _MISSING and not _same(old, value):
                self.refuse(
                    nid,
                    path,
                    f"row {row}: {key} {value!r} contradicts {old!r} from {where[key]}; "
                    "the subject is listed twice with different values",
                )
                continue
            have[key] = value
            where.setdefault(key, f"{Path(path).name} row {row}")

    def refuse(self, nid: str, path: Path | str, reason: str) -> None:
        """Leave subject ``nid`` out; the first reason is kept."""
        self.refused.setdefault(nid, (str(path), reason))

    def stray(self, text: str, path: Path | str, reason: str) -> None:
        """Report a row that names no subject (its values are not used)."""
        self.strays.append((text, str(path), reason))

    def get(self, nid: str) -> dict[str, Any]:
        """The values of a subject that is not refused."""
        return dict(self.values.get(nid, {}))

    def report(self, recorder: SubjectRecorder) -> None:
        """Record every refused subject and stray row in the failures table."""
        for nid, (path, reason) in sorted(self.refused.items()):
            logger.warning("%s %s dropped: %s: %s", recorder.dataset, nid, path, reason)
            recorder.fail(nid, path, reason)
        for text, path, reason in self.strays:
            logger.warning("%s: %s: %s", recorder.dataset, path, reason)
            recorder.fail(text, path, reason)


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
            holds NaN/inf, or is smaller than :data:`MIN_VOLUME_SIZE` along an axis.
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


def check_size(path: Path, shape: Sequence[int], what: str, minimum: int = MIN_VOLUME_SIZE) -> None:
    """Raise :class:`SubjectError` when an axis of ``shape`` is shorter than ``minimum``."""
    if min(shape) < minimum:
        shown = "x".join(str(int(n)) for n in shape)
        unit = "voxels" if len(shape) == 3 else "pixels"
        raise SubjectError(
            path, f"{what} too small to process: shape {shown}, every axis needs at least {minimum} {unit}"
        )


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


# ------------------------------------------------------------------------------- BIDS names

#: BIDS entities in the order the specification writes them (BIDS 1.10, "Entity table").
BIDS_ENTITIES = (
    "sub", "ses", "sample", "task", "tracksys", "acq", "nuc", "voi", "ce", "trc", "stain", "rec", "dir",
    "run", "mod", "echo", "flip", "inv", "mt", "part", "proc", "hemi", "space", "split", "recording",
    "chunk", "seg", "res", "den", "label", "desc",
)  # fmt: skip
_BIDS_NAME = re.compile(r"^((?:[a-zA-Z]+-[a-zA-Z0-9]+_)+)([a-zA-Z0-9]+)((?:\.[a-zA-Z0-9]+)+)$")


@dataclass(frozen=True)
class BidsName:
    """A BIDS file name split into its entities (in file order), suffix and extension.

    ``sub-OAS30001_ses-d0129_acq-TSE_run-02_T2w.nii.gz`` is entities ``sub``, ``ses``, ``acq``,
    ``run``, suffix ``T2w`` and extension ``.nii.gz``.
    """

    entities: tuple[tuple[str, str], ...]
    suffix: str
    extension: str

    def get(self, key: str, default: str = "") -> str:
        """The label of entity ``key`` (``default`` when the name has none)."""
        return next((value for name, value in self.entities if name == key), default)

    def has(self, key: str) -> bool:
        """Whether the name carries entity ``key``."""
        return any(name == key for name, _ in self.entities)


def parse_bids_name(name: str) -> BidsName | None:
    """Split a BIDS file name; ``None`` when it is not ``sub-<label>[_<key>-<label>...]_<suffix><ext>``.

    Real datasets do not always keep the specification's entity order (``_run-01_acq-TSE_``,
    ``_echo-1_run-01_``) or its entity list, so any order and any entity key are accepted;
    a name must start with ``sub-`` and name each entity once.
    """
    match = _BIDS_NAME.match(name)
    if match is None:
        return None
    pairs = tuple(tuple(part.split("-", 1)) for part in match.group(1).rstrip("_").split("_"))
    keys = [key for key, _ in pairs]
    if keys[0] != "sub" or len(set(keys)) != len(keys):
        return None
    return BidsName(pairs, match.group(2), match.group(3))  # type: ignore[arg-type]


def bids_image_problem(name: BidsName) -> str | None:
    """Why a BIDS image is not the plain contrast its suffix names, or ``None`` when it is.

    Not the plain image: a phase, real or imaginary part (``part-phase``; ``part-mag`` is fine),
    a contrast-enhanced variant (``ce-``: not the native contrast), or one chunk of a
    multi-part acquisition (``chunk-``).
    """
    part = name.get("part").lower()
    if part and part not in ("mag", "magnitude"):
        return f"part-{name.get('part')} is not a magnitude image"
    if name.has("ce"):
        return f"ce-{name.get('ce')} is contrast-enhanced, not the plain {name.suffix}"
    if name.has("chunk"):
        return f"chunk-{name.get('chunk')} is one piece of a multi-part image"
    return None


def _number(label: str) -> tuple[int, str]:
    return (int(label), "") if label.isdigit() else (10**9, label)


def bids_image_order(name: BidsName, file_name: str) -> tuple[Any, ...]:
    """Sort key among BIDS images of one contrast in one session (the first is used).

    Lowest ``run`` first (a name without ``run-`` counts as the lowest), then no ``acq-``
    before any (then by label), no ``rec-`` before any, lowest ``echo``, fewest other
    entities, ``.nii.gz`` before ``.nii``, then the file name.
    """
    run = _number(name.get("run")) if name.has("run") else (0, "")
    echo = _number(name.get("echo")) if name.has("echo") else (0, "")
    known = {"sub", "ses", "run", "acq", "rec", "echo", "part"}
    others = tuple(sorted((k, v) for k, v in name.entities if k not in known))
    return (
        run,
        (name.has("acq"), name.get("acq")),
        (name.has("rec"), name.get("rec")),
        echo,
        len(others),
        others,
        name.extension != ".nii.gz",
        file_name,
    )
