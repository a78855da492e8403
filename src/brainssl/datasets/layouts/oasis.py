"""OASIS-3: longitudinal ageing and Alzheimer's disease MRI in BIDS, plus a clinical table.

Native layout::

    <root>/sub-OAS30001/ses-d0129/anat/sub-OAS30001_ses-d0129[_acq-*][_run-01]_{T1w,T2w,FLAIR}.nii.gz
                                       (+ optional .json sidecars)
    <root>/OASIS3_clinical.csv   OASISID, days_to_visit, age at visit, cdr, dx1 [, GENDER]

Each MR session is matched to the clinical visit nearest in days (within
:data:`MAX_VISIT_GAP_DAYS`). ``dx1`` maps to ``control`` ("Cognitively normal")
or ``alzheimer`` (text naming AD/Alzheimer); other diagnoses stay empty.
``GENDER`` (1 male, 2 female, as in the OASIS-3 demographics table) is optional.

Demo subjects with ``index % 3 == 0`` get a second session about 2-4 years
later: a second synthetic draw from the same seed (same subject identity) with
the age fixed to the later age, so age-dependent atrophy advances.
"""

from __future__ import annotations

import json
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
from brainssl.io import write_json, write_table

__all__ = ["INFO", "native_id", "sessions", "subject_params", "write_subject", "finalize", "read"]

logger = logging.getLogger(__name__)

INFO = DatasetInfo(
    key="oasis3",
    name="OASIS-3",
    layout="BIDS: sub-OAS3####/ses-d####/anat/sub-OAS3####_ses-d####[_acq-*][_run-##]_{T1w,T2w,FLAIR}.nii.gz "
    "plus a clinical table OASIS3_clinical.csv (OASISID, days_to_visit, age at visit, cdr, dx1)",
    source="https://www.oasis-brains.org/ (OASIS-3, data use agreement via NITRC-IR/XNAT Central)",
)
MODALITIES = ("T1w", "T2w", "FLAIR")
CLINICAL_TABLE = "OASIS3_clinical.csv"
MAX_VISIT_GAP_DAYS = 365
_FILE = re.compile(
    r"^sub-(OAS3\d{4})_ses-(d\d{4})(?:_acq-[A-Za-z0-9]+)?(?:_run-\d+)?_(T1w|T2w|FLAIR)\.nii(?:\.gz)?$"
)


def native_id(index: int) -> str:
    """Native OASIS-3 id of demo subject ``index``."""
    return f"OAS3{index + 1:04d}"


def sessions(index: int) -> list[int]:
    """Days since entry of the demo subject's MR sessions (one or two)."""
    first = (53 * index) % 400
    days = [first]
    if index % 3 == 0:
        days.append(first + 730 + (97 * index) % 730)
    return days


def subject_params(index: int, grid_mm: float) -> dict[str, Any]:
    """Synthetic-subject settings: ageing cohort, controls and Alzheimer's disease."""
    return {
        "pathology": "none",
        "diagnosis": "alzheimer" if index % 3 == 1 else "control",
        "age_range": (55.0, 90.0),
        "modalities": MODALITIES,
        "grid_mm": grid_mm,
    }


def _stem(nid: str, session: str, modality: str, index: int) -> str:
    run = "_run-01" if (modality == "T1w" and index % 4 == 1) else ""
    return f"sub-{nid}_ses-{session}{run}_{modality}"


def write_subject(root: Path, index: int, nid: str, make: Callable[..., Any]) -> dict[str, Any]:
    """Write one synthetic subject's session(s) in BIDS (+ sidecars, truth); return its record."""
    days = sessions(index)
    files: list[str] = []
    visits: list[dict[str, Any]] = []
    first_meta: dict[str, Any] = {}
    for number, day in enumerate(days):
        if number == 0:
            subject = make()
            first_meta = meta_dict(subject.meta)
        else:
            later = float(first_meta["age"]) + (day - days[0]) / 365.25
            subject = make(age_range=(later, later), diagnosis=first_meta["diagnosis"])
        meta = meta_dict(subject.meta)
        session = f"d{day:04d}"
        anat = root / f"sub-{nid}" / f"ses-{session}" / "anat"
        sequence = {}
        for modality in MODALITIES:
            volume = subject.images[modality]
            stem = _stem(nid, session, modality, index)
            save_volume(anat / f"{stem}.nii.gz", volume_array(volume), np.asarray(volume.affine))
            write_json(
                anat / f"{stem}.json",
                {"Modality": "MR", "Manufacturer": str(meta.get("site", "")), "MagneticFieldStrength": 3},
            )
            files.append(rel(root, anat / f"{stem}.nii.gz"))
            sequence[rel(root, anat / f"{stem}.nii.gz")] = modality
        write_truth(
            root, nid, subject_truth(subject), {**meta, "sequence": sequence}, session=f"ses-{session}"
        )
        visits.append(
            {
                "days_to_visit": day,
                "age": meta["age"],
                "cdr": meta.get("cdr"),
                "diagnosis": meta.get("diagnosis"),
                "sex": meta.get("sex"),
            }
        )
    return {"native_id": nid, "files": files, "meta": first_meta, "extra": {"visits": visits}}


def finalize(root: Path, shard: pd.DataFrame) -> list[Path]:
    """Write the clinical table (one visit per MR session) from the shard records."""
    rows = []
    for record in shard.to_dict("records"):
        for visit in json.loads(record["extra"])["visits"]:
            cdr = visit["cdr"]
            rows.append(
                {
                    "OASISID": record["native_id"],
                    "days_to_visit": int(visit["days_to_visit"]),
                    "age at visit": round(float(visit["age"]), 2),
                    "cdr": float(cdr) if cdr is not None else np.nan,
                    "dx1": "AD Dementia" if visit["diagnosis"] == "alzheimer" else "Cognitively normal",
                    "GENDER": 1 if visit["sex"] == "M" else 2,
                }
            )
    table = pd.DataFrame(rows).sort_values(["OASISID", "days_to_visit"], kind="stable")
    path = root / CLINICAL_TABLE
    write_table(path, table)
    return [path]


def _diagnosis(dx: Any) -> str:
    text = str(dx).strip().lower() if isinstance(dx, str) else ""
    if text.startswith("cognitively normal"):
        return "control"
    if "alzheimer" in text or re.search(r"\bad\b", text):
        return "alzheimer"
    return ""


def _read_clinical(root: Path) -> pd.DataFrame | None:
    candidates = sorted(root.glob("*clinical*.csv"))
    if not candidates:
        logger.warning("OASIS-3: no clinical table (*clinical*.csv) in %s; labels stay empty", root)
        return None
    table = pd.read_csv(candidates[0])
    lower = {str(c).strip().lower(): c for c in table.columns}
    needed = ("oasisid", "days_to_visit")
    if any(name not in lower for name in needed):
        raise ValueError(f"{candidates[0]}: clinical table needs columns {needed}, has {list(table.columns)}")
    out = pd.DataFrame(
        {
            "OASISID": table[lower["oasisid"]].astype(str),
            "days": pd.to_numeric(table[lower["days_to_visit"]], errors="coerce"),
        }
    )
    out["age"] = (
        pd.to_numeric(table[lower["age at visit"]], errors="coerce") if "age at visit" in lower else np.nan
    )
    cdr_col = lower.get("cdr", lower.get("cdrtot"))
    out["cdr"] = pd.to_numeric(table[cdr_col], errors="coerce") if cdr_col is not None else np.nan
    out["diagnosis"] = table[lower["dx1"]].map(_diagnosis) if "dx1" in lower else ""
    sex = pd.to_numeric(table[lower["gender"]], errors="coerce") if "gender" in lower else None
    out["sex"] = sex.map({1: "M", 2: "F"}).fillna("") if sex is not None else ""
    return out.dropna(subset=["days"])


def _visit_labels(clinical: pd.DataFrame | None, nid: str, day: int) -> dict[str, Any]:
    if clinical is None:
        return {}
    visits = clinical[clinical["OASISID"] == nid]
    if visits.empty:
        return {}
    gaps = (visits["days"] - day).abs()
    if gaps.min() > MAX_VISIT_GAP_DAYS:
        return {"sex": visits["sex"].iloc[0]}
    best = visits.loc[gaps.idxmin()]
    return {"age": best["age"], "cdr": best["cdr"], "diagnosis": best["diagnosis"], "sex": best["sex"]}


def read(root: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read an OASIS-3 BIDS root (real or demo) into manifest rows and failures.

    Raises:
        DatasetLayoutError: if the root is missing or holds no ``sub-OAS3*/ses-*`` folder.
    """
    require_root(INFO, root, ("sub-OAS3*/ses-*",))
    clinical = _read_clinical(root)
    recorder = SubjectRecorder(INFO.key)
    for subject_dir in sorted(p for p in root.glob("sub-OAS3*") if p.is_dir()):
        nid = subject_dir.name.removeprefix("sub-")
        for session_dir in sorted(p for p in subject_dir.glob("ses-*") if p.is_dir()):
            with recorder.subject(nid) as rows:
                rows.extend(_read_session(root, nid, session_dir, clinical))
    return recorder.rows, recorder.failures


def _read_session(
    root: Path, nid: str, session_dir: Path, clinical: pd.DataFrame | None
) -> list[dict[str, Any]]:
    anat = session_dir / "anat"
    images = sorted(p for p in anat.glob("*.nii*") if _FILE.match(p.name)) if anat.is_dir() else []
    if not images:
        raise SubjectError(anat, "empty session folder: no anat/*_{T1w,T2w,FLAIR}.nii.gz")
    session = session_dir.name
    day = int(session.removeprefix("ses-d")) if re.fullmatch(r"ses-d\d+", session) else -1
    labels = _visit_labels(clinical, nid, day) if day >= 0 else {}
    truth = read_truth(root, nid, session)
    rows = []
    for path in images:
        modality = _FILE.match(path.name).group(3)  # type: ignore[union-attr]
        _, img = read_nifti(path, f"{modality} image")
        rows.append(
            image_row(
                INFO.key,
                nid,
                path,
                img,
                session=session,
                modality=modality,
                pathology="none",
                **labels,
                **truth,
            )
        )
    return rows
