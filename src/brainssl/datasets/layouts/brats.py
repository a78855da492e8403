"""BraTS 2021: skull-stripped, co-registered glioma MRI with tumour labels and clinical tables.

Follows the RSNA-ASNR-MICCAI BraTS 2021 Task 1 training data (Baid et al. 2021,
arXiv:2107.02314; ``BraTS2021_Training_Data.tar`` on Synapse: 1,251 cases, 240 x 240 x 155 at
1 mm, skull-stripped and co-registered), the MGMT labels of the RSNA-MICCAI Brain Tumor
Radiogenomic Classification (Kaggle) and the survival table of BraTS 2020. Native layout::

    <root>/BraTS2021_00000/BraTS2021_00000_{flair,t1,t1ce,t2,seg}.nii.gz
    <root>/train_labels.csv          BraTS21ID,MGMT_value   (RSNA-MICCAI; BraTS21ID the case number,
                                                             read as 0 or 00000)
    <root>/survival_info.csv         Brats20ID,Age,Survival_days,Extent_of_Resection (BraTS 2020,
                                                             ids BraTS20_Training_001)
    <root>/brats20_to_brats21.csv    Brats20ID,BraTS2021ID  (see below)
    <root>/molecular_labels.csv      BraTS21ID,IDH          (brainssl extra, see below)

Segmentation labels: 0 background, 1 necrotic core, 2 oedema, 4 enhancing tumour.
In ``survival_info.csv`` a censored case reads ``ALIVE (361 days later)``; a plain
number is a death after that many days.

Two tables are not in the official release. ``brats20_to_brats21.csv`` maps each
BraTS 2020 id to its BraTS 2021 folder (for real data build it from the BraTS 2021
mapping file, which lists both ids per case). ``molecular_labels.csv`` holds IDH
status (``mutant``/``wildtype``), which real BraTS lacks; it is read when present.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainssl.datasets.layouts.base import (
    grid_difference,
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
from brainssl.datasets.layouts.errors import DatasetInfo, SubjectError, SubjectRecorder
from brainssl.datasets.layouts.files import folder_problem, list_dir, require_root
from brainssl.datasets.layouts.tables import (
    LabelBook,
    Table,
    is_na,
    parse_choice,
    parse_number,
    read_csv_table,
)
from brainssl.io import write_table

__all__ = ["INFO", "native_id", "subject_params", "write_subject", "finalize", "read", "parse_survival"]

logger = logging.getLogger(__name__)

INFO = DatasetInfo(
    key="brats21",
    name="BraTS 2021",
    layout="BraTS2021_#####/BraTS2021_#####_{t1,t1ce,t2,flair,seg}.nii.gz, plus train_labels.csv "
    "(BraTS21ID,MGMT_value) and optionally survival_info.csv, brats20_to_brats21.csv, molecular_labels.csv",
    source="Synapse, RSNA-ASNR-MICCAI BraTS 2021 challenge (https://www.synapse.org/brats2021)",
)
SUFFIXES = {"T1w": "t1", "T1ce": "t1ce", "T2w": "t2", "FLAIR": "flair"}
SEG_LABELS = (0, 1, 2, 4)
_FOLDER = re.compile(r"^BraTS2021_(\d{5})$")
_ALIVE = re.compile(r"^\s*ALIVE\s*\((\d+)\s*days?\s*later\)\s*$", re.IGNORECASE)


def native_id(index: int) -> str:
    """Native BraTS 2021 id of demo subject ``index``."""
    return f"BraTS2021_{index:05d}"


def subject_params(index: int, grid_mm: float) -> dict[str, Any]:
    """Synthetic-subject settings: glioma, the four BraTS contrasts."""
    return {"pathology": "glioma", "contrasts": tuple(SUFFIXES), "grid_mm": grid_mm}


def file_path(root: Path, nid: str, suffix: str) -> Path:
    """Native path of one BraTS file (``suffix`` is t1, t1ce, t2, flair or seg)."""
    return root / nid / f"{nid}_{suffix}.nii.gz"


def write_subject(root: Path, index: int, nid: str, make: Callable[..., Any]) -> dict[str, Any]:
    """Write one skull-stripped synthetic glioma subject (+ seg, truth); return its record."""
    subject = make()
    mask = volume_array(subject.brain_mask) > 0
    files, sequence = [], {}
    for contrast, suffix in SUFFIXES.items():
        volume = subject.images[contrast]
        path = file_path(root, nid, suffix)
        save_volume(path, np.where(mask, volume_array(volume), 0.0), np.asarray(volume.affine))
        files.append(rel(root, path))
        sequence[rel(root, path)] = contrast
    seg_path = file_path(root, nid, "seg")
    affine = np.asarray(subject.images["T1w"].affine)
    save_volume(seg_path, volume_array(subject.tumor), affine, label=True)
    files.append(rel(root, seg_path))
    meta = meta_dict(subject.meta)
    write_truth(root, nid, subject_truth(subject), {**meta, "sequence": sequence, "skull_stripped": True})
    return {"native_id": nid, "files": files, "meta": meta, "extra": {}}


def brats20_id(index: int) -> str:
    """BraTS-2020-style id given to demo subject ``index`` in the survival table."""
    return f"BraTS20_Training_{index + 1:03d}"


def finalize(root: Path, shard: pd.DataFrame) -> list[Path]:
    """Write train_labels.csv, survival_info.csv, brats20_to_brats21.csv and molecular_labels.csv."""
    records = sorted(shard.to_dict("records"), key=lambda r: int(r["index"]))
    mgmt, survival, mapping, molecular = [], [], [], []
    for record in records:
        number = int(_FOLDER.match(record["native_id"]).group(1))  # type: ignore[union-attr]
        if pd.notna(record["mgmt"]):
            mgmt.append({"BraTS21ID": number, "MGMT_value": int(record["mgmt"])})
        if record["idh"] in ("mutant", "wildtype"):
            molecular.append({"BraTS21ID": number, "IDH": record["idh"]})
        if pd.notna(record["survival_days"]):
            days = int(round(float(record["survival_days"])))
            event = str(record["event"]).lower() in ("true", "1", "1.0")
            rng = np.random.default_rng(int(record["seed"]))
            survival.append(
                {
                    "Brats20ID": brats20_id(int(record["index"])),
                    "Age": round(float(record["age"]), 3),
                    "Survival_days": str(days) if event else f"ALIVE ({days} days later)",
                    "Extent_of_Resection": str(rng.choice(["GTR", "STR", "NA"], p=[0.6, 0.2, 0.2])),
                }
            )
            mapping.append(
                {"Brats20ID": brats20_id(int(record["index"])), "BraTS2021ID": record["native_id"]}
            )
    tables = {
        "train_labels.csv": pd.DataFrame(mgmt, columns=["BraTS21ID", "MGMT_value"]),
        "survival_info.csv": pd.DataFrame(
            survival, columns=["Brats20ID", "Age", "Survival_days", "Extent_of_Resection"]
        ),
        "brats20_to_brats21.csv": pd.DataFrame(mapping, columns=["Brats20ID", "BraTS2021ID"]),
        "molecular_labels.csv": pd.DataFrame(molecular, columns=["BraTS21ID", "IDH"]),
    }
    paths = []
    for name, table in tables.items():
        write_table(root / name, table)
        paths.append(root / name)
    return paths


def _survival(value: Any) -> tuple[float, float]:
    """Strict :func:`parse_survival`: raises ValueError for a value that is neither form."""
    if is_na(value):
        return float("nan"), float("nan")
    text = str(value).strip()
    alive = _ALIVE.match(text)
    if alive:
        return float(alive.group(1)), 0.0
    days = parse_number(text, "Survival_days", minimum=0.0)
    return days, 1.0


def parse_survival(value: Any) -> tuple[float, float]:
    """Parse one ``Survival_days`` entry into (days, event).

    Args:
        value: ``"437"`` (death at day 437) or ``"ALIVE (361 days later)"`` (censored).

    Returns:
        ``(days, 1.0)`` for a death, ``(days, 0.0)`` when censored, ``(nan, nan)`` when unknown
        (empty, ``NA``, ``unknown``, ...) or, with a warning, unparsable. The reader itself
        refuses the subject of an unparsable value instead.
    """
    try:
        return _survival(value)
    except ValueError:
        logger.warning("BraTS: unparsed Survival_days value %r", value)
        return float("nan"), float("nan")


_CASE = re.compile(r"^\s*(\d{1,5})(?:\.0+)?\s*$")
_MGMT = {"0": 0.0, "1": 1.0}
_IDH = {"mutant": "mutant", "wildtype": "wildtype"}


def _case_id(book: LabelBook, path: Path, row: int, column: str, text: str) -> str | None:
    """The ``BraTS2021_#####`` id of a ``BraTS21ID`` cell, or ``None`` (reported as a stray row)."""
    match = _CASE.match(text)
    if match is None:
        book.stray(path, f"row {row}: {column} {text.strip()!r} is not a case number; row not used")
        return None
    return f"BraTS2021_{int(match.group(1)):05d}"


def _read_case_table(book: LabelBook, path: Path, column: str, key: str, parse: Callable[[str], Any]) -> None:
    """Read a ``BraTS21ID,<column>`` table into ``book[case][key]`` (a bad value refuses the case)."""
    table = read_csv_table(INFO, path, ("BraTS21ID", column))
    id_col, value_col = table.column("BraTS21ID"), table.column(column)
    _stray_rows(book, table)
    for number, cells in table.rows:
        nid = _case_id(book, path, number, "BraTS21ID", cells[id_col])
        if nid is None:
            continue
        try:
            value = parse(cells[value_col])
        except ValueError as err:
            book.refuse(nid, path, f"row {number}: {err}")
            continue
        book.put(nid, path, number, **{key: value})


def _mgmt(text: str) -> float:
    value = parse_choice(text, "MGMT_value", _MGMT)
    return math.nan if value is None else float(value)


def _idh(text: str) -> str:
    return parse_choice(text, "IDH", _IDH) or ""


def _read_survival(book: LabelBook, survival_path: Path, mapping: dict[str, str]) -> None:
    table = read_csv_table(INFO, survival_path, ("Brats20ID", "Age", "Survival_days"))
    id_col, age_col = table.column("Brats20ID"), table.column("Age")
    days_col = table.column("Survival_days")
    _stray_rows(book, table)
    for number, cells in table.rows:
        nid = mapping.get(cells[id_col].strip())
        if nid is None:  # not a BraTS 2021 case, or refused in the mapping
            continue
        try:
            age = parse_number(cells[age_col], "Age", minimum=0.0)
            days, event = _survival(cells[days_col])
        except ValueError as err:
            book.refuse(nid, survival_path, f"row {number}: {err}")
            continue
        book.put(nid, survival_path, number, age=age, survival_days=days, event=event)


def _read_labels(root: Path) -> LabelBook:
    """Read the label tables into a :class:`LabelBook` (a bad row refuses the case it names)."""
    book = LabelBook()
    if _present(root / "train_labels.csv"):
        _read_case_table(book, root / "train_labels.csv", "MGMT_value", "mgmt", _mgmt)
    if _present(root / "molecular_labels.csv"):
        _read_case_table(book, root / "molecular_labels.csv", "IDH", "idh", _idh)
    mapping_path, survival_path = root / "brats20_to_brats21.csv", root / "survival_info.csv"
    if _present(survival_path) and _present(mapping_path):
        _read_survival(book, survival_path, _read_mapping(book, mapping_path))
    elif _present(survival_path):
        logger.warning("BraTS: survival_info.csv without brats20_to_brats21.csv in %s; not joined", root)
    return book


def _read_mapping(book: LabelBook, path: Path) -> dict[str, str]:
    """Brats20ID -> BraTS2021 id; an id mapped to two cases maps to neither (both refused)."""
    table = read_csv_table(INFO, path, ("Brats20ID", "BraTS2021ID"))
    old_col, new_col = table.column("Brats20ID"), table.column("BraTS2021ID")
    _stray_rows(book, table)
    mapping: dict[str, str] = {}
    rows: dict[str, int] = {}
    ambiguous: set[str] = set()
    for number, cells in table.rows:
        old, new = cells[old_col].strip(), cells[new_col].strip()
        if not old or not _FOLDER.match(new):
            book.stray(
                path,
                f"row {number}: Brats20ID {old!r} -> BraTS2021ID {new!r} is not a BraTS 2021 case; "
                "row not used",
            )
            continue
        if old in mapping and mapping[old] != new:
            for nid in (mapping[old], new):
                book.refuse(
                    nid,
                    path,
                    f"row {number}: Brats20ID {old} maps to both {mapping[old]} (row {rows[old]}) and "
                    f"{new}; its survival row cannot be assigned",
                )
            ambiguous.add(old)
            continue
        mapping.setdefault(old, new)
        rows.setdefault(old, number)
    return {old: new for old, new in mapping.items() if old not in ambiguous}


def _present(path: Path) -> bool:
    """Whether a table is there at all (a folder or a broken link in its place is an error)."""
    return path.exists() or path.is_symlink()


def _stray_rows(book: LabelBook, table: Table) -> None:
    for number, reason in table.bad:
        book.stray(table.path, f"row {number}: {reason}; row not used")


def read(root: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read a BraTS 2021 root (real or demo) into manifest rows and failures.

    A bad row of a label table (a malformed value, a case listed twice with different
    values) leaves out only the case it names, reported with the file and the row.

    Raises:
        DatasetLayoutError: if the root is missing or holds no ``BraTS2021_#####`` folder, or
            a label table is unreadable or lacks a required column.
    """
    require_root(INFO, root, ("BraTS2021_*",))
    book = _read_labels(root)
    recorder = SubjectRecorder(INFO.key)
    book.report(recorder)
    for folder in (p for p in list_dir(root, "dataset root") if _FOLDER.match(p.name)):
        if folder.name in book.refused:
            continue
        with recorder.subject(folder.name) as rows:
            rows.extend(_read_subject(root, folder.name, book.get(folder.name)))
    return recorder.rows, recorder.failures


def _read_subject(root: Path, nid: str, labels: dict[str, Any]) -> list[dict[str, Any]]:
    folder = root / nid
    problem = folder_problem(folder, "subject folder")
    if problem is not None:
        raise SubjectError(folder, problem)
    if not list_dir(folder, "subject folder"):
        raise SubjectError(folder, "empty subject folder")
    seg_path = file_path(root, nid, "seg")
    seg, seg_img = read_nifti(seg_path, "segmentation")
    unexpected = sorted(set(np.unique(seg).tolist()) - set(SEG_LABELS))
    if unexpected:
        raise SubjectError(seg_path, f"segmentation labels {unexpected} not in {SEG_LABELS}")
    truth = read_truth(root, nid)
    rows = []
    for contrast, suffix in SUFFIXES.items():
        path = file_path(root, nid, suffix)
        _, img = read_nifti(path, f"{contrast} image")
        difference = grid_difference(img, seg_img, "segmentation")
        if difference is not None:
            raise SubjectError(path, f"{contrast} image grid: {difference}")
        rows.append(
            image_row(
                INFO.key,
                nid,
                path,
                img,
                contrast=contrast,
                seg_path=str(seg_path),
                pathology="glioma",
                **labels,
                **truth,
            )
        )
    return rows
