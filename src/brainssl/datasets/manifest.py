"""The image manifest: one row per image file, for every dataset, in one schema.

Every layout reader returns rows in this schema, so that later stages never
look at a native layout again. Labels that a dataset lacks are left empty
(``NaN``/``None``/``""``); synthetic ground truth that real data lack goes in
the optional ``truth_*`` columns, empty for real data.

=================  ========  =========================================================================
column             dtype     meaning
=================  ========  =========================================================================
dataset            str       dataset key: one of :data:`brainssl.datasets.DATASETS`, or the name of a
                             ``kind: bids`` entry of the config (lower case, digits, ``_``)
subject            str       pseudonymous subject id ``sub-<12 hex>`` (:func:`pseudonymize`)
native_id          str       the subject id as the native layout spells it (``IXI002-Guys-0828``)
session            str       session label (``ses-d0000`` for OASIS-3; the file stem for fastMRI, each
                             file being one acquisition), else ``""``
contrast           str       T1w, T2w, FLAIR, T1ce or PD; may be ``""`` only for jpg (contrast unknown)
path               str       the image file
format             str       ``nifti``, ``fastmri_h5`` or ``jpg``
voxel_x/y/z        float     voxel size in mm along the NIfTI array axes (fastMRI: column, row, slice);
                             NaN when unknown (jpg)
shape              str       array shape, ``"x"``-joined (``"96x112x96"``)
orientation        str       nibabel axcodes of the stored array (``"LAS"``); ``""`` when unknown
seg_path           str       label map for this image (BraTS seg, Decathlon label), else ``""``
age                float     age in years at this scan; NaN when unknown
sex                str       ``M``, ``F`` or ``""``
site               str       acquisition site or scanner, ``""`` when unknown
diagnosis          str       ``control``, ``alzheimer`` (OASIS-3), or the label a BIDS entry's
                             ``values`` map gives (``autism``, ...; lower case), else ``""``
cdr                float     clinical dementia rating (0, 0.5, 1, 2, 3); NaN when unknown
pathology          str       ``none``, ``glioma``, ``meningioma``, ``pituitary`` or ``""``
idh                str       ``mutant``, ``wildtype`` or ``""``
mgmt               float     MGMT promoter methylation 1/0; NaN when unknown
survival_days      float     overall survival or follow-up (days); NaN when unknown
event              float     1 death observed, 0 censored; NaN when unknown
days_since_event   float     days from the dataset's index event (stroke onset, ...) to this scan;
                             NaN when unknown (BIDS entries: a participants/sessions column)
tumor_class        str       4-class label ``glioma``/``meningioma``/``pituitary``/``notumor``, else ``""``
split_group        str       the split the native layout prescribes (``train``/``test``), else ``""``
truth_brain_mask   str       synthetic truth: brain mask NIfTI, else ``""``
truth_tissue       str       synthetic truth: tissue label NIfTI, else ``""``
truth_hippocampus  str       synthetic truth: hippocampus (1 left, 2 right) NIfTI, else ``""``
truth_bias_field   str       synthetic truth: bias field NIfTI, else ``""``
truth_meta         str       synthetic truth: subject meta JSON (incl. sequence per file), else ``""``
=================  ========  =========================================================================

The failures table has columns ``dataset, native_id, path, reason``: one row per subject
left out (the file and why), per bad row of a dataset-level table (the table as ``path``, the
row number first in ``reason``: ``row 5: AGE 'sixty' is not a number``; the header is row 1),
and per file not used while its subject is kept (a duplicate; the reason says which file is
used). The subjects a dataset lost are the ``native_id`` values of its failures table that
are absent from its manifest.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "MANIFEST_COLUMNS",
    "FAILURE_COLUMNS",
    "ColumnSpec",
    "MANIFEST_SCHEMA",
    "pseudonymize",
    "read_manifest",
    "make_row",
    "rows_to_frame",
    "failures_frame",
    "check_manifest",
    "merge_manifests",
    "subject_ids",
    "IDS_COLUMNS",
]

CONTRASTS = ("T1w", "T2w", "FLAIR", "T1ce", "PD")
DATASET_KEYS = ("ixi", "brats21", "fastmri_brain", "oasis3", "tumor4", "hippocampus")
#: What a dataset key looks like: a registered layout's key or a user-named BIDS entry.
DATASET_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
#: Diagnosis labels: lower-case words (``control``, ``alzheimer``, ``autism``, ...).
DIAGNOSIS_PATTERN = r"^([a-z0-9][a-z0-9_]*)?$"


@dataclass(frozen=True)
class ColumnSpec:
    """One manifest column: its kind, whether it may be empty, and its allowed values.

    Attributes:
        name: column name.
        kind: ``"str"`` or ``"float"``.
        required: when True, the value may not be empty/NaN.
        allowed: allowed values (empty value aside, when not required); ``None`` for any.
        minimum: smallest allowed number (float columns), ``None`` for no bound.
    """

    name: str
    kind: str
    required: bool = False
    allowed: tuple[Any, ...] | None = None
    minimum: float | None = None


MANIFEST_SCHEMA: tuple[ColumnSpec, ...] = (
    ColumnSpec("dataset", "str", True),
    ColumnSpec("subject", "str", True),
    ColumnSpec("native_id", "str", True),
    ColumnSpec("session", "str"),
    ColumnSpec("contrast", "str", False, CONTRASTS),
    ColumnSpec("path", "str", True),
    ColumnSpec("format", "str", True, ("nifti", "fastmri_h5", "jpg")),
    ColumnSpec("voxel_x", "float", minimum=1e-6),
    ColumnSpec("voxel_y", "float", minimum=1e-6),
    ColumnSpec("voxel_z", "float", minimum=1e-6),
    ColumnSpec("shape", "str", True),
    ColumnSpec("orientation", "str"),
    ColumnSpec("seg_path", "str"),
    ColumnSpec("age", "float", minimum=0.0),
    ColumnSpec("sex", "str", False, ("M", "F")),
    ColumnSpec("site", "str"),
    ColumnSpec("diagnosis", "str"),
    ColumnSpec("cdr", "float", False, (0.0, 0.5, 1.0, 2.0, 3.0)),
    ColumnSpec("pathology", "str", False, ("none", "glioma", "meningioma", "pituitary")),
    ColumnSpec("idh", "str", False, ("mutant", "wildtype")),
    ColumnSpec("mgmt", "float", False, (0.0, 1.0)),
    ColumnSpec("survival_days", "float", minimum=0.0),
    ColumnSpec("event", "float", False, (0.0, 1.0)),
    ColumnSpec("days_since_event", "float", minimum=0.0),
    ColumnSpec("tumor_class", "str", False, ("glioma", "meningioma", "pituitary", "notumor")),
    ColumnSpec("split_group", "str", False, ("train", "test")),
    ColumnSpec("truth_brain_mask", "str"),
    ColumnSpec("truth_tissue", "str"),
    ColumnSpec("truth_hippocampus", "str"),
    ColumnSpec("truth_bias_field", "str"),
    ColumnSpec("truth_meta", "str"),
)
MANIFEST_COLUMNS: tuple[str, ...] = tuple(spec.name for spec in MANIFEST_SCHEMA)
FAILURE_COLUMNS: tuple[str, ...] = ("dataset", "native_id", "path", "reason")
#: Columns of the id table (``results/datasets/ids.tsv``): pseudonym -> dataset and native id.
IDS_COLUMNS: tuple[str, ...] = ("subject", "dataset", "native_id", "sessions")
_SUBJECT_PATTERN = r"^sub-[0-9a-f]{12}$"
_SHAPE_PATTERN = r"^\d+(x\d+)*$"


def pseudonymize(dataset: str, native_id: str) -> str:
    """Return the stable pseudonymous subject id for one native subject.

    The id depends only on the dataset key and the native subject id, so all
    sessions and files of one subject share it, and equal native ids in two
    datasets (different people) get different ids.

    Args:
        dataset: dataset key.
        native_id: subject id as spelled by the native layout (no session part).

    Returns:
        ``"sub-"`` followed by the first 12 hex digits of
        ``sha256(f"{dataset}:{native_id}")``.
    """
    digest = hashlib.sha256(f"{dataset}:{native_id}".encode()).hexdigest()
    return f"sub-{digest[:12]}"


def make_row(dataset: str, native_id: str, **values: Any) -> dict[str, Any]:
    """Build one manifest row with every column present (empty where not given).

    Args:
        dataset: dataset key.
        native_id: native subject id; ``subject`` is derived from it.
        **values: any other manifest column.

    Returns:
        A dict with exactly :data:`MANIFEST_COLUMNS` as keys.

    Raises:
        KeyError: if a keyword is not a manifest column.
    """
    unknown = set(values) - set(MANIFEST_COLUMNS)
    if unknown:
        raise KeyError(f"not manifest columns: {sorted(unknown)}")
    row: dict[str, Any] = {spec.name: (math.nan if spec.kind == "float" else "") for spec in MANIFEST_SCHEMA}
    row.update(dataset=dataset, native_id=native_id, subject=pseudonymize(dataset, native_id))
    for key, value in values.items():
        row[key] = _normalise(value, _SPECS[key].kind)
    return row


_SPECS: Mapping[str, ColumnSpec] = {spec.name: spec for spec in MANIFEST_SCHEMA}


def _normalise(value: Any, kind: str) -> Any:
    if kind == "float":
        if value is None or (isinstance(value, str) and value == ""):
            return math.nan
        return float(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def rows_to_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Turn manifest rows into a DataFrame with the schema's columns and dtypes."""
    return _schema_dtypes(pd.DataFrame(list(rows), columns=list(MANIFEST_COLUMNS)))


def _schema_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    for spec in MANIFEST_SCHEMA:
        if spec.kind == "float":
            frame[spec.name] = pd.to_numeric(frame[spec.name], errors="raise").astype("float64")
        else:
            frame[spec.name] = frame[spec.name].fillna("").astype(object)
    return frame


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest table written by the workflow, with the schema's dtypes restored.

    Empty text cells stay empty strings (not NaN), so downstream code can test
    ``if row.seg_path`` the same way on a fresh and on a re-read manifest.
    """
    path = Path(path)
    frame = (
        pd.read_parquet(path)
        if path.suffix == ".parquet"
        else pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    )
    # column-wise, not through row dicts: the workflow reads 100,000-subject manifests while it plans
    return _schema_dtypes(frame.reindex(columns=list(MANIFEST_COLUMNS)).reset_index(drop=True))


def failures_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Turn failure records into the failures table (``dataset, native_id, path, reason``)."""
    return pd.DataFrame(list(rows), columns=list(FAILURE_COLUMNS)).astype(object)


def check_manifest(df: pd.DataFrame) -> None:
    """Check a manifest against :data:`MANIFEST_SCHEMA`.

    Checks: exact column set; dtypes (numbers in float columns); required values
    present; allowed values; minimums; the ``subject``, ``shape``, ``dataset`` and
    ``diagnosis`` formats; no duplicate ``path``; and that one native subject maps to
    exactly one ``subject`` and vice versa within a dataset.

    Args:
        df: the manifest.

    Raises:
        ValueError: naming the column (and the first offending row index and value).
    """
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    extra = [c for c in df.columns if c not in MANIFEST_COLUMNS]
    if missing or extra:
        raise ValueError(f"manifest columns differ from the schema: missing {missing}, unexpected {extra}")
    for spec in MANIFEST_SCHEMA:
        _check_column(df, spec)
    _check_pattern(df, "subject", _SUBJECT_PATTERN)
    _check_pattern(df, "shape", _SHAPE_PATTERN)
    _check_pattern(df, "dataset", DATASET_PATTERN)
    _check_pattern(df, "diagnosis", DIAGNOSIS_PATTERN)
    no_contrast = (df["contrast"] == "") & (df["format"] != "jpg")
    if no_contrast.any():
        index = df.index[no_contrast][0]
        raise ValueError(f"column 'contrast', row {index}: required for {df.at[index, 'format']}")
    dup = df["path"].duplicated(keep=False)
    if dup.any():
        index = df.index[dup][0]
        raise ValueError(f"column 'path': duplicate path {df.at[index, 'path']!r} (row {index})")
    _check_identity(df)


def _check_column(df: pd.DataFrame, spec: ColumnSpec) -> None:
    col = df[spec.name]
    if spec.kind == "float":
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise ValueError(f"column {spec.name!r}: expected float dtype, got {col.dtype}")
        empty = col.isna()
    else:
        bad = col.map(lambda v: not isinstance(v, str))
        if bad.any():
            index = col.index[bad][0]
            raise ValueError(f"column {spec.name!r}, row {index}: expected a string, got {col[index]!r}")
        empty = col == ""
    if spec.required and empty.any():
        raise ValueError(f"column {spec.name!r}, row {col.index[empty][0]}: required value is empty")
    values = col[~empty]
    if spec.allowed is not None:
        bad = ~values.isin(spec.allowed)
        if bad.any():
            index = values.index[bad][0]
            raise ValueError(
                f"column {spec.name!r}, row {index}: value {values[index]!r} not in {list(spec.allowed)}"
            )
    if spec.minimum is not None:
        bad = values < spec.minimum
        if bad.any():
            index = values.index[bad][0]
            raise ValueError(f"column {spec.name!r}, row {index}: value {values[index]!r} < {spec.minimum}")


def _check_pattern(df: pd.DataFrame, column: str, pattern: str) -> None:
    bad = ~df[column].astype(str).str.fullmatch(pattern)
    if bad.any():
        index = df.index[bad][0]
        raise ValueError(f"column {column!r}, row {index}: {df.at[index, column]!r} does not match {pattern}")


def _check_identity(df: pd.DataFrame) -> None:
    if df.empty:
        return
    per_native = df.groupby(["dataset", "native_id"])["subject"].nunique()
    if (per_native > 1).any():
        key = per_native.index[per_native > 1][0]
        raise ValueError(f"column 'subject': native subject {key} appears under several subject ids")
    per_subject = df.groupby("subject")[["dataset", "native_id"]].nunique().max(axis=1)
    if (per_subject > 1).any():
        raise ValueError(
            f"column 'subject': {per_subject.index[per_subject > 1][0]} is shared by two subjects"
        )


def merge_manifests(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate per-dataset manifests into one checked manifest.

    Args:
        frames: manifests in the schema (e.g. one per dataset).

    Returns:
        One manifest, sorted by dataset, subject, session, contrast and path,
        with a fresh index.

    Raises:
        ValueError: if a frame or the merged result violates the schema
            (e.g. the same file listed twice).
    """
    checked = []
    for frame in frames:
        check_manifest(frame)
        checked.append(frame[list(MANIFEST_COLUMNS)])
    if not checked:
        return rows_to_frame([])
    merged = pd.concat(checked, ignore_index=True) if len(checked) > 1 else checked[0].copy()
    merged = merged.sort_values(["dataset", "subject", "session", "contrast", "path"], kind="stable")
    merged = merged.reset_index(drop=True)
    check_manifest(merged)
    return merged


def subject_ids(manifest: pd.DataFrame) -> pd.DataFrame:
    """The id table: every pseudonymous ``subject`` with its dataset, native id and sessions.

    Every later output names subjects by their pseudonym only (:func:`pseudonymize`); this
    table, written beside the merged manifest as ``results/datasets/ids.tsv``, finds the
    subject in its dataset again. It holds the native ids: keep it with the results, and leave
    it out of anything shared beyond those allowed to see the datasets.

    Returns:
        :data:`IDS_COLUMNS`, one row per subject (``sessions`` ``;``-joined), sorted by dataset
        and native id.
    """
    if manifest.empty:
        return pd.DataFrame(columns=list(IDS_COLUMNS))
    frame = manifest[["subject", "dataset", "native_id", "session"]].astype(str)
    grouped = frame.groupby(["subject", "dataset", "native_id"], sort=False)["session"]
    table = grouped.agg(lambda s: ";".join(sorted({v for v in s if v}))).reset_index(name="sessions")
    return table.sort_values(["dataset", "native_id"], kind="stable").reset_index(drop=True)[
        list(IDS_COLUMNS)
    ]
