"""IXI: healthy adults from three London hospitals, T1/T2/PD NIfTI plus a demographics sheet.

Follows the IXI release of brain-development.org (about 600 subjects at Guy's (Philips 1.5 T),
Hammersmith (HH, Philips 3 T) and the Institute of Psychiatry (IOP, GE 1.5 T); archives
``IXI-T1.tar``, ``IXI-T2.tar``, ``IXI-PD.tar``, each a flat set of ``.nii.gz`` files, unpacked
into a folder of the archive's name; ``IXI-MRA``/``IXI-DTI`` folders are ignored). Native layout::

    <root>/IXI-T1/IXI002-Guys-0828-T1.nii.gz
    <root>/IXI-T2/IXI002-Guys-0828-T2.nii.gz
    <root>/IXI-PD/IXI002-Guys-0828-PD.nii.gz
    <root>/IXI.xls            (real download; the demo writes IXI.csv with the same columns)

Demographics columns: ``IXI_ID`` (the number in ``IXI002``), ``SEX_ID (1=m, 2=f)``,
``HEIGHT``, ``WEIGHT``, ``ETHNIC_ID``, ``MARITAL_ID``, ``OCCUPATION_ID``,
``QUALIFICATION_ID``, ``DOB``, ``DATE_AVAILABLE``, ``STUDY_DATE``, ``AGE``.
Subjects missing any of the three contrasts are reported as failures.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainssl.datasets.layouts.base import (
    image_row,
    meta_dict,
    read_nifti,
    read_truth,
    rel,
    save_volume,
    subject_truth,
    volume_array,
    write_truth,
)
from brainssl.datasets.layouts.errors import DatasetInfo, DatasetLayoutError, SubjectError, SubjectRecorder
from brainssl.datasets.layouts.files import file_problem, list_dir, require_root
from brainssl.datasets.layouts.tables import (
    Table,
    is_na,
    parse_choice,
    parse_number,
    read_csv_table,
    table_error,
)
from brainssl.io import write_table

__all__ = ["INFO", "native_id", "subject_params", "write_subject", "finalize", "read", "read_demographics"]

logger = logging.getLogger(__name__)

INFO = DatasetInfo(
    key="ixi",
    name="IXI",
    layout="IXI-T1/IXI###-{HH,Guys,IOP}-####-T1.nii.gz, IXI-T2/...-T2.nii.gz, IXI-PD/...-PD.nii.gz "
    "and the demographics sheet IXI.xls (or IXI.csv) in the root",
    source="https://brain-development.org/ixi-dataset/",
)
SITES = ("HH", "Guys", "IOP")
CONTRASTS = {"T1w": "T1", "T2w": "T2", "PD": "PD"}
SEX_COLUMN = "SEX_ID (1=m, 2=f)"
_FILE = re.compile(r"^(IXI(\d{3,})-(HH|Guys|IOP)-\d{4})-(T1|T2|PD)\.nii(\.gz)?$")


def native_id(index: int) -> str:
    """Native IXI id of demo subject ``index`` (``IXI002-Guys-0828`` style)."""
    return f"IXI{index + 2:03d}-{SITES[index % 3]}-{(1000 + 7919 * index) % 10000:04d}"


def subject_params(index: int, grid_mm: float) -> dict[str, Any]:
    """Synthetic-subject settings for demo subject ``index``: healthy, T1w/T2w/PD, its site."""
    return {
        "pathology": "none",
        "diagnosis": "control",
        "contrasts": tuple(CONTRASTS),
        "grid_mm": grid_mm,
        "sites": (SITES[index % 3],),
    }


def image_path(root: Path, nid: str, contrast: str) -> Path:
    """Native path of one IXI image."""
    suffix = CONTRASTS[contrast]
    return root / f"IXI-{suffix}" / f"{nid}-{suffix}.nii.gz"


def write_subject(root: Path, index: int, nid: str, make: Callable[..., Any]) -> dict[str, Any]:
    """Write one synthetic subject in the IXI layout (+ truth); return its shard record."""
    subject = make()
    files = []
    sequence = {}
    for contrast in CONTRASTS:
        volume = subject.images[contrast]
        path = image_path(root, nid, contrast)
        save_volume(path, volume_array(volume), np.asarray(volume.affine))
        files.append(rel(root, path))
        sequence[rel(root, path)] = contrast
    meta = meta_dict(subject.meta)
    write_truth(root, nid, subject_truth(subject), {**meta, "sequence": sequence})
    return {"native_id": nid, "files": files, "meta": meta, "extra": {}}


def finalize(root: Path, shard: pd.DataFrame) -> list[Path]:
    """Write ``IXI.csv`` (the real IXI.xls columns) from the shard records."""
    rows = [_demographics_row(record) for record in shard.to_dict("records")]
    table = pd.DataFrame(rows).sort_values("IXI_ID", kind="stable")
    path = root / "IXI.csv"
    write_table(path, table)
    return [path]


def _demographics_row(record: dict[str, Any]) -> dict[str, Any]:
    rng = np.random.default_rng(int(record["seed"]))
    age = float(record["age"])
    study = dt.date(2005, 6, 1) + dt.timedelta(days=int(rng.integers(0, 540)))
    dob = study - dt.timedelta(days=round(age * 365.25))
    male = record["sex"] == "M"
    return {
        "IXI_ID": int(_FILE.match(f"{record['native_id']}-T1.nii.gz").group(2)),  # type: ignore[union-attr]
        SEX_COLUMN: 1 if male else 2,
        "HEIGHT": int(rng.normal(178 if male else 164, 7)),
        "WEIGHT": int(rng.normal(80 if male else 66, 10)),
        "ETHNIC_ID": int(rng.integers(1, 7)),
        "MARITAL_ID": int(rng.integers(1, 6)),
        "OCCUPATION_ID": int(rng.integers(1, 9)),
        "QUALIFICATION_ID": int(rng.integers(1, 6)),
        "DOB": dob.isoformat(),
        "DATE_AVAILABLE": 1,
        "STUDY_DATE": study.isoformat(),
        "AGE": round((study - dob).days / 365.25, 2),
    }


_ID = re.compile(r"^\s*(\d+)(?:\.0+)?\s*$")
_SEX = {"1": "M", "2": "F"}
DEMOGRAPHICS_COLUMNS = ("IXI_ID", SEX_COLUMN, "AGE", "DOB", "STUDY_DATE")


def _cell_text(value: Any) -> str:
    """A spreadsheet cell as text (empty for a blank cell)."""
    if value is None or (not isinstance(value, str) and bool(pd.isna(value))):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _demographics_table(path: Path) -> Table:
    if path.suffix.lower() == ".csv":
        return read_csv_table(INFO, path, ("IXI_ID",))
    if path.suffix.lower() != ".xls":
        raise DatasetLayoutError(f"{path}: IXI demographics must be .xls or .csv, not {path.suffix!r}")
    try:
        raw = pd.read_excel(path, engine="xlrd", dtype=object)
    except PermissionError as err:
        raise table_error(INFO, path, "permission denied", DEMOGRAPHICS_COLUMNS) from err
    except Exception as err:  # xlrd raises its own errors for a truncated or non-xls file
        raise table_error(
            INFO, path, f"cannot read the spreadsheet: {type(err).__name__}: {err}", DEMOGRAPHICS_COLUMNS
        ) from err
    columns = [str(c).strip() for c in raw.columns]
    rows = [
        (index + 2, dict(zip(columns, (_cell_text(v) for v in values), strict=True)))
        for index, values in enumerate(raw.itertuples(index=False, name=None))
        if any(_cell_text(v).strip() for v in values)
    ]
    table = Table(path, columns, rows)
    if table.column("IXI_ID") is None:
        raise table_error(
            INFO, path, f"missing column(s) ['IXI_ID'] (the header has {columns})", DEMOGRAPHICS_COLUMNS
        )
    return table


def _read_demographics(path: Path) -> tuple[pd.DataFrame, dict[int, str], list[str]]:
    """Read the sheet: (table by IXI_ID, reason per IXI_ID with a bad row, reasons of rows naming no id)."""
    table = _demographics_table(path)
    id_col = table.column("IXI_ID")
    assert id_col is not None
    sex_col = table.column("SEX_ID", prefix=True)
    age_col, dob_col, study_col = table.column("AGE"), table.column("DOB"), table.column("STUDY_DATE")
    strays = [f"row {number}: {reason}; row not used" for number, reason in table.bad]
    bad: dict[int, str] = {}
    records: list[tuple[int, str, float]] = []
    for number, cells in table.rows:
        match = _ID.match(cells[id_col])
        if match is None:
            text = cells[id_col].strip()
            strays.append(f"row {number}: IXI_ID {text!r} is not a number; row not used")
            continue
        subject = int(match.group(1))
        try:
            sex = parse_choice(cells[sex_col], sex_col, _SEX) if sex_col is not None else None
            age = parse_number(cells[age_col], "AGE", minimum=0.0) if age_col is not None else np.nan
            if np.isnan(age) and dob_col is not None and study_col is not None:
                dob, study = _date(cells[dob_col], "DOB"), _date(cells[study_col], "STUDY_DATE")
                if dob is not None and study is not None:
                    age = (study - dob).days / 365.25
                    if age < 0:
                        raise ValueError(f"STUDY_DATE {cells[study_col]!r} is before DOB {cells[dob_col]!r}")
        except ValueError as err:
            bad.setdefault(subject, f"row {number}: {err}")
            continue
        records.append((subject, sex or "", float(age)))
    out = pd.DataFrame(records, columns=["IXI_ID", "sex", "age"]).astype({"IXI_ID": int, "age": float})
    out = out.sort_values("age", na_position="last", kind="stable").drop_duplicates("IXI_ID")
    return out.set_index("IXI_ID").sort_index(), bad, strays


def _date(text: str, column: str) -> pd.Timestamp | None:
    if is_na(text):
        return None
    try:
        value = pd.Timestamp(text.strip())
    except (ValueError, TypeError):
        raise ValueError(f"{column} {text.strip()!r} is not a date") from None
    return None if value is pd.NaT else value


def read_demographics(path: Path) -> pd.DataFrame:
    """Read the IXI demographics sheet (``.xls`` via xlrd, or ``.csv``).

    Text files are read as UTF-8, else latin-1 with a warning. Cells that mean "unknown"
    (empty, ``NA``, ...) stay empty; a row with a malformed value (an ``IXI_ID`` that is not a
    number, a ``SEX_ID`` other than 1 or 2, an ``AGE`` or date that does not parse) is left
    out here, and :func:`read` reports it and leaves out its subject.

    Args:
        path: ``IXI.xls`` or ``IXI.csv``.

    Returns:
        One row per ``IXI_ID`` (int) with ``sex`` (``M``/``F``/``""``) and ``age``
        (years; from ``AGE``, else from ``DOB`` and ``STUDY_DATE``). Duplicated ids
        (the real sheet has some) keep the first row with a known age.

    Raises:
        DatasetLayoutError: (a ValueError) for another suffix, an unreadable file, or when
            ``IXI_ID`` is missing; the message names the file and the columns expected.
    """
    return _read_demographics(path)[0]


def _find_demographics(root: Path) -> Path | None:
    for name in ("IXI.xls", "IXI.csv"):
        if (root / name).exists() or (root / name).is_symlink():
            return root / name
    return None


def _scan(root: Path, recorder: SubjectRecorder) -> tuple[dict[str, dict[str, list[Path]]], dict[str, str]]:
    """Image files per subject and contrast, and the reason per contrast whose folder is unreadable."""
    subjects: dict[str, dict[str, list[Path]]] = {}
    unreadable: dict[str, str] = {}
    for contrast, suffix in CONTRASTS.items():
        folder = root / f"IXI-{suffix}"
        if not (folder.exists() or folder.is_symlink()):
            continue
        try:
            entries = list_dir(folder, f"IXI-{suffix} folder")
        except SubjectError as err:
            recorder.fail(f"IXI-{suffix}", err.path, err.reason)
            unreadable[contrast] = f"{err.path}: {err.reason}"
            continue
        for path in entries:
            match = _FILE.match(path.name)
            if match and match.group(4) == suffix:
                subjects.setdefault(match.group(1), {}).setdefault(contrast, []).append(path)
    return subjects, unreadable


def _preference(path: Path) -> tuple[bool, bool, str]:
    """Sort key of duplicate candidates: readable files first, then ``.nii.gz``, then the name."""
    return (file_problem(path) is not None, not path.name.endswith(".gz"), path.name)


def read(root: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read an IXI root (real or demo) into manifest rows and failures.

    A contrast present twice (``.nii.gz`` and ``.nii``) uses the ``.nii.gz`` file (the form
    IXI ships; a file that cannot be opened loses to one that can) and reports the other. A
    bad row of the demographics sheet leaves out only its subject.

    Raises:
        DatasetLayoutError: if the root is missing or has no IXI image folder, or the
            demographics sheet is unreadable or has no ``IXI_ID`` column.
    """
    require_root(INFO, root, ("IXI-*/IXI*.nii*",))
    recorder = SubjectRecorder(INFO.key)
    subjects, unreadable = _scan(root, recorder)
    demo_path = _find_demographics(root)
    demographics, bad, strays = _read_demographics(demo_path) if demo_path else (None, {}, [])
    if demographics is None:
        logger.warning("IXI: no IXI.xls/IXI.csv in %s; age and sex stay empty", root)
    numbers = {nid: int(_FILE.match(f"{nid}-T1.nii.gz").group(2)) for nid in subjects}  # type: ignore[union-attr]
    for reason in strays:  # rows that name no subject: an empty native id, no subject lost
        recorder.note("", demo_path, reason)
    for number, reason in sorted(bad.items()):
        named = sorted(nid for nid, n in numbers.items() if n == number)
        if not named:  # a bad row of a subject without images costs no subject
            recorder.note("", demo_path, f"{reason} (IXI{number:03d} has no images; row not used)")
        for nid in named:
            logger.warning("IXI %s dropped: %s: %s", nid, demo_path, reason)
            recorder.fail(nid, str(demo_path), reason)
    for nid in sorted(subjects):
        if numbers[nid] in bad:
            continue
        found: dict[str, Path] = {}
        for contrast, candidates in subjects[nid].items():
            ordered = sorted(candidates, key=_preference)
            found[contrast] = ordered[0]
            for other in ordered[1:]:
                recorder.note(
                    nid,
                    other,
                    f"duplicate {contrast} image: {ordered[0].name} is used (.nii.gz before .nii); "
                    "this file is not used",
                )
        with recorder.subject(nid) as rows:
            rows.extend(_read_subject(root, nid, found, demographics, unreadable))
    return recorder.rows, recorder.failures


def _read_subject(
    root: Path,
    nid: str,
    found: dict[str, Path],
    demographics: pd.DataFrame | None,
    unreadable: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    match = _FILE.match(f"{nid}-T1.nii.gz")
    assert match is not None
    number, site = int(match.group(2)), match.group(3)
    labels: dict[str, Any] = {"site": site, "diagnosis": "control", "pathology": "none"}
    if demographics is not None and number in demographics.index:
        labels.update(age=demographics.at[number, "age"], sex=demographics.at[number, "sex"])
    truth = read_truth(root, nid)
    rows = []
    for contrast in CONTRASTS:
        path = found.get(contrast, image_path(root, nid, contrast))
        if contrast not in found:
            why = f" ({unreadable[contrast]})" if unreadable and contrast in unreadable else ""
            raise SubjectError(path, f"missing {contrast} image for {nid}{why}")
        _, img = read_nifti(path, f"{contrast} image")
        rows.append(image_row(INFO.key, nid, path, img, contrast=contrast, **labels, **truth))
    return rows
