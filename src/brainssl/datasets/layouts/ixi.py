"""IXI: healthy adults from three London hospitals, T1/T2/PD NIfTI plus a demographics sheet.

Native layout::

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
    DatasetInfo,
    SubjectError,
    SubjectRecorder,
    image_row,
    meta_dict,
    read_nifti,
    read_truth,
    rel,
    require_root,
    save_volume,
    subject_truth,
    volume_array,
    write_truth,
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
        "modalities": tuple(CONTRASTS),
        "grid_mm": grid_mm,
        "sites": (SITES[index % 3],),
    }


def image_path(root: Path, nid: str, modality: str) -> Path:
    """Native path of one IXI image."""
    contrast = CONTRASTS[modality]
    return root / f"IXI-{contrast}" / f"{nid}-{contrast}.nii.gz"


def write_subject(root: Path, index: int, nid: str, make: Callable[..., Any]) -> dict[str, Any]:
    """Write one synthetic subject in the IXI layout (+ truth); return its shard record."""
    subject = make()
    files = []
    sequence = {}
    for modality in CONTRASTS:
        volume = subject.images[modality]
        path = image_path(root, nid, modality)
        save_volume(path, volume_array(volume), np.asarray(volume.affine))
        files.append(rel(root, path))
        sequence[rel(root, path)] = modality
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


def read_demographics(path: Path) -> pd.DataFrame:
    """Read the IXI demographics sheet (``.xls`` via xlrd, or ``.csv``).

    Args:
        path: ``IXI.xls`` or ``IXI.csv``.

    Returns:
        One row per ``IXI_ID`` (int) with ``sex`` (``M``/``F``/``""``) and ``age``
        (years; from ``AGE``, else from ``DOB`` and ``STUDY_DATE``). Duplicated ids
        (the real sheet has some) keep the first row with a known age.

    Raises:
        ValueError: for another suffix or when ``IXI_ID`` is missing.
    """
    if path.suffix.lower() == ".xls":
        raw = pd.read_excel(path, engine="xlrd")
    elif path.suffix.lower() == ".csv":
        raw = pd.read_csv(path)
    else:
        raise ValueError(f"{path}: IXI demographics must be .xls or .csv, not {path.suffix!r}")
    columns = {str(c).strip().upper(): c for c in raw.columns}
    if "IXI_ID" not in columns:
        raise ValueError(f"{path}: no IXI_ID column (columns: {list(raw.columns)})")
    sex_col = next((c for key, c in columns.items() if key.startswith("SEX_ID")), None)
    out = pd.DataFrame({"IXI_ID": pd.to_numeric(raw[columns["IXI_ID"]], errors="coerce")})
    sex = (
        pd.to_numeric(raw[sex_col], errors="coerce") if sex_col is not None else pd.Series(np.nan, raw.index)
    )
    out["sex"] = sex.map({1: "M", 2: "F"}).fillna("")
    age = (
        pd.to_numeric(raw[columns["AGE"]], errors="coerce")
        if "AGE" in columns
        else pd.Series(np.nan, raw.index)
    )
    if "DOB" in columns and "STUDY_DATE" in columns:
        dob = pd.to_datetime(raw[columns["DOB"]], errors="coerce")
        study = pd.to_datetime(raw[columns["STUDY_DATE"]], errors="coerce")
        age = age.fillna((study - dob).dt.days / 365.25)
    out["age"] = age.astype(float)
    out = out.dropna(subset=["IXI_ID"]).astype({"IXI_ID": int})
    out = out.sort_values("age", na_position="last", kind="stable").drop_duplicates("IXI_ID")
    return out.set_index("IXI_ID").sort_index()


def _find_demographics(root: Path) -> Path | None:
    for name in ("IXI.xls", "IXI.csv"):
        if (root / name).is_file():
            return root / name
    return None


def read(root: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read an IXI root (real or demo) into manifest rows and failures.

    Raises:
        DatasetLayoutError: if the root is missing or has no IXI image folder.
    """
    require_root(INFO, root, ("IXI-*/IXI*.nii*",))
    subjects: dict[str, dict[str, Path]] = {}
    for modality, contrast in CONTRASTS.items():
        for path in sorted((root / f"IXI-{contrast}").glob("IXI*.nii*")):
            match = _FILE.match(path.name)
            if match and match.group(4) == contrast:
                subjects.setdefault(match.group(1), {})[modality] = path
    demo_path = _find_demographics(root)
    demographics = read_demographics(demo_path) if demo_path else None
    if demographics is None:
        logger.warning("IXI: no IXI.xls/IXI.csv in %s; age and sex stay empty", root)
    recorder = SubjectRecorder(INFO.key)
    for nid in sorted(subjects):
        with recorder.subject(nid) as rows:
            rows.extend(_read_subject(root, nid, subjects[nid], demographics))
    return recorder.rows, recorder.failures


def _read_subject(
    root: Path, nid: str, found: dict[str, Path], demographics: pd.DataFrame | None
) -> list[dict[str, Any]]:
    match = _FILE.match(f"{nid}-T1.nii.gz")
    assert match is not None
    number, site = int(match.group(2)), match.group(3)
    labels: dict[str, Any] = {"site": site, "diagnosis": "control", "pathology": "none"}
    if demographics is not None and number in demographics.index:
        labels.update(age=demographics.at[number, "age"], sex=demographics.at[number, "sex"])
    truth = read_truth(root, nid)
    rows = []
    for modality in CONTRASTS:
        path = found.get(modality, image_path(root, nid, modality))
        if modality not in found:
            raise SubjectError(path, f"missing {modality} image for {nid}")
        _, img = read_nifti(path, f"{modality} image")
        rows.append(image_row(INFO.key, nid, path, img, modality=modality, **labels, **truth))
    return rows
