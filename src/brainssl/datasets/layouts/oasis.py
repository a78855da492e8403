"""OASIS-3: longitudinal ageing and Alzheimer's disease MRI in BIDS, plus a clinical table.

Follows the OASIS-3 release (LaMontagne et al. 2019, medRxiv 10.1101/2019.12.13.19014902;
https://www.oasis-brains.org/) as its BIDS download scripts lay it out, with the clinical
visits of its UDS/ADRC tables (``OASISID``, ``days_to_visit``, ``age at visit``, CDR,
``dx1``; ``GENDER`` from the demographics table) merged into one CSV. Native layout::

    <root>/sub-OAS30001/ses-d0129/anat/sub-OAS30001_ses-d0129[_acq-TSE][_run-01]_{T1w,T2w,FLAIR}.nii.gz
                                       (+ .json sidecars; other suffixes, e.g. T2star, angio, and
                                       other folders, e.g. func/, dwi/, fmap/, swi/, are ignored)
    <root>/OASIS3_clinical.csv   OASISID, days_to_visit, age at visit, cdr, dx1 [, GENDER]
    <root>/dataset_description.json, participants.tsv, README, .bidsignore   (BIDS; optional)

File names are read as BIDS names (:func:`~brainssl.datasets.layouts.bids_names.parse_bids_name`):
any entities in any order (``acq-``, ``run-``, ``rec-``, ``echo-``, ...), the suffix naming the
contrast. Several files of one contrast in a session are resolved by :func:`_run_order` (lowest
run, no ``acq-`` first, then lowest echo; see :func:`read`); a phase or real/imaginary part, a
contrast-enhanced (``ce-``) variant or one ``chunk-`` of an image is reported and not used.
Sidecars, ``*_scans.tsv``, ``*_sessions.tsv`` and the dataset-level BIDS files are not read.

Each MR session is matched to the clinical visit nearest in days (within
:data:`MAX_VISIT_GAP_DAYS`). ``dx1`` maps to ``control`` ("Cognitively normal")
or ``alzheimer`` (text naming AD/Alzheimer); other diagnoses stay empty.
``GENDER`` (1 male, 2 female, as in the OASIS-3 demographics table) is optional.

The demo folder is valid BIDS (``bids-validator`` reports no error): :func:`finalize` writes
``dataset_description.json``, ``participants.tsv``, ``README`` and a ``.bidsignore`` for the
clinical table and ``_truth/``. Demo subjects with ``index % 3 == 0`` get a second session
about 2-4 years later: a second synthetic draw from the same seed (same subject identity) with
the age fixed to the later age, so age-dependent atrophy advances; subjects with
``index % 4 == 1`` name their T1w ``run-01``.
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
    first_readable,
    image_row,
    meta_dict,
    read_truth,
    rel,
    save_volume,
    subject_truth,
    volume_array,
    write_truth,
)
from brainssl.datasets.layouts.bids_names import (
    TRUTH_IGNORE,
    BidsName,
    bids_image_order,
    bids_image_problem,
    parse_bids_name,
)
from brainssl.datasets.layouts.errors import DatasetInfo, SubjectError, SubjectRecorder
from brainssl.datasets.layouts.files import folder_problem, list_dir, require_root
from brainssl.datasets.layouts.tables import LabelBook, parse_choice, parse_number, read_csv_table
from brainssl.io import atomic_write, write_json, write_table

__all__ = ["INFO", "native_id", "sessions", "subject_params", "write_subject", "finalize", "read"]

logger = logging.getLogger(__name__)

INFO = DatasetInfo(
    key="oasis3",
    name="OASIS-3",
    layout="BIDS: sub-OAS3####/ses-d####/anat/sub-OAS3####_ses-d####[_acq-*][_run-##]..."
    "_{T1w,T2w,FLAIR}.nii.gz plus a clinical table OASIS3_clinical.csv "
    "(OASISID, days_to_visit, age at visit, cdr, dx1)",
    source="https://www.oasis-brains.org/ (OASIS-3, data use agreement via NITRC-IR/XNAT Central)",
)
CONTRASTS = ("T1w", "T2w", "FLAIR")
CLINICAL_TABLE = "OASIS3_clinical.csv"
MAX_VISIT_GAP_DAYS = 365


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
        "contrasts": CONTRASTS,
        "grid_mm": grid_mm,
    }


def _stem(nid: str, session: str, contrast: str, index: int) -> str:
    run = "_run-01" if (contrast == "T1w" and index % 4 == 1) else ""
    return f"sub-{nid}_ses-{session}{run}_{contrast}"


#: Illustrative sequence parameters of the demo sidecars (s, s, s, deg; MPRAGE, TSE, FLAIR at 3 T).
_SEQUENCES = {
    "T1w": {"MRAcquisitionType": "3D", "RepetitionTime": 2.4, "EchoTime": 0.00316, "InversionTime": 1.0},
    "T2w": {"MRAcquisitionType": "2D", "RepetitionTime": 3.2, "EchoTime": 0.455},
    "FLAIR": {"MRAcquisitionType": "2D", "RepetitionTime": 9.0, "EchoTime": 0.091, "InversionTime": 2.5},
}


def _sidecar(contrast: str, site: str) -> dict[str, Any]:
    """The JSON sidecar of a demo image (BIDS keys as dcm2niix writes them; values illustrative)."""
    return {
        "Modality": "MR",
        "MagneticFieldStrength": 3,
        "Manufacturer": "brainssl",
        "ManufacturersModelName": "synthetic demo",
        "InstitutionName": site,
        **_SEQUENCES[contrast],
        "FlipAngle": 8 if contrast == "T1w" else 150,
    }


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
        for contrast in CONTRASTS:
            volume = subject.images[contrast]
            stem = _stem(nid, session, contrast, index)
            save_volume(anat / f"{stem}.nii.gz", volume_array(volume), np.asarray(volume.affine))
            write_json(anat / f"{stem}.json", _sidecar(contrast, str(meta.get("site", ""))))
            files.append(rel(root, anat / f"{stem}.nii.gz"))
            sequence[rel(root, anat / f"{stem}.nii.gz")] = contrast
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
    """Write the clinical table (one visit per MR session) and the BIDS dataset files.

    The BIDS files make the demo folder valid BIDS (``bids-validator`` reports no error):
    ``dataset_description.json``, ``participants.tsv`` (+ ``participants.json``), ``README``
    and a ``.bidsignore`` naming what is not BIDS (the clinical table, ``_truth/``).
    """
    return [_write_clinical(root, shard), *_write_bids_files(root, shard)]


#: BIDS version the demo's dataset_description.json declares (bids-validator 3.0.2's schema reads it).
BIDS_VERSION = "1.10.0"
#: ``.bidsignore`` lines.
BIDS_IGNORE = (
    "# not BIDS: the OASIS-3 clinical table, brainssl's synthetic truth",
    CLINICAL_TABLE,
    TRUTH_IGNORE,
)


_README = """Synthetic OASIS-3-style cohort written by brainssl (not real data).

Laid out as the OASIS-3 BIDS release: sub-OAS3####/ses-d####/anat/ with T1w, T2w and FLAIR
images and JSON sidecars; OASIS3_clinical.csv holds the visits (OASISID, days_to_visit,
age at visit, cdr, dx1, GENDER); _truth/ holds the generator's ground truth. Both are listed
in .bidsignore. The real data: https://www.oasis-brains.org/
"""


def _write_bids_files(root: Path, shard: pd.DataFrame) -> list[Path]:
    description = {
        "Name": "OASIS-3 synthetic demo (brainssl), in the layout of the OASIS-3 BIDS release",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "raw",
        "License": "CC0",
        "Authors": ["brainssl synthetic cohort generator"],
        "HowToAcknowledge": "Synthetic data; the real OASIS-3 is at https://www.oasis-brains.org/",
        "ReferencesAndLinks": ["https://www.oasis-brains.org/"],
    }
    records = sorted(shard.to_dict("records"), key=lambda r: str(r["native_id"]))
    participants = pd.DataFrame(
        {
            "participant_id": [f"sub-{r['native_id']}" for r in records],
            "sex": [r["sex"] if r["sex"] in ("M", "F") else "n/a" for r in records],
        }
    )
    sidecar = {
        "participant_id": {"Description": "OASIS-3 subject id (OASISID) with the BIDS sub- prefix"},
        "sex": {"Description": "sex (GENDER of the clinical table)", "Levels": {"M": "male", "F": "female"}},
    }
    paths = [
        root / "dataset_description.json",
        root / "participants.tsv",
        root / "participants.json",
        root / "README",
    ]
    write_json(paths[0], description)
    write_table(paths[1], participants)
    write_json(paths[2], sidecar)
    with atomic_write(paths[3], "w") as handle:
        handle.write(_README)
    ignore = root / ".bidsignore"
    with atomic_write(ignore, "w") as handle:
        handle.write("".join(f"{line}\n" for line in BIDS_IGNORE))
    return [*paths, ignore]


def _write_clinical(root: Path, shard: pd.DataFrame) -> Path:
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
    return path


def _diagnosis(dx: Any) -> str:
    text = str(dx).strip().lower() if isinstance(dx, str) else ""
    if text.startswith("cognitively normal"):
        return "control"
    if "alzheimer" in text or re.search(r"\bad\b", text):
        return "alzheimer"
    return ""


_CDR = {"0": 0.0, "0.5": 0.5, "1": 1.0, "2": 2.0, "3": 3.0}  # "1.0" reads as "1" (parse_choice)
_GENDER = {"1": "M", "2": "F"}


def _read_clinical(root: Path, book: LabelBook) -> pd.DataFrame | None:
    """Read the clinical table; a bad row refuses its subject in ``book`` (all its sessions)."""
    candidates = sorted(root.glob("*clinical*.csv"))
    if not candidates:
        logger.warning("OASIS-3: no clinical table (*clinical*.csv) in %s; labels stay empty", root)
        return None
    path = candidates[0]
    table = read_csv_table(INFO, path, ("OASISID", "days_to_visit"))
    id_col, days_col = table.column("OASISID"), table.column("days_to_visit")
    age_col, cdr_col = table.column("age at visit"), table.column("cdr", "cdrtot")
    dx_col, sex_col = table.column("dx1"), table.column("gender")
    for number, reason in table.bad:
        book.stray(path, f"row {number}: {reason}; row not used")
    records: list[dict[str, Any]] = []
    seen: dict[tuple[str, float], tuple[int, dict[str, Any]]] = {}
    for number, cells in table.rows:
        nid = cells[id_col].strip()
        if not nid:
            book.stray(path, f"row {number}: empty OASISID; row not used")
            continue
        try:
            days = parse_number(cells[days_col], "days_to_visit")
            if np.isnan(days):
                raise ValueError("days_to_visit is empty, so the visit cannot be matched to a session")
            age = parse_number(cells[age_col], "age at visit", minimum=0.0) if age_col else np.nan
            cdr = parse_choice(cells[cdr_col], cdr_col, _CDR) if cdr_col else None
            sex = parse_choice(cells[sex_col], sex_col, _GENDER) if sex_col else None
        except ValueError as err:
            book.refuse(nid, path, f"row {number}: {err}")
            continue
        record = {
            "OASISID": nid,
            "days": days,
            "age": age,
            "cdr": np.nan if cdr is None else cdr,
            "diagnosis": _diagnosis(cells[dx_col]) if dx_col else "",
            "sex": sex or "",
        }
        key = (nid, days)
        if key in seen and any(not _same(seen[key][1][k], record[k]) for k in record):
            book.refuse(
                nid,
                path,
                f"row {number}: a second, different row for visit day {days:g} (first in row {seen[key][0]})",
            )
            continue
        seen.setdefault(key, (number, record))
        records.append(record)
    columns = ["OASISID", "days", "age", "cdr", "diagnosis", "sex"]
    out = pd.DataFrame(records, columns=columns).astype({"days": float, "age": float, "cdr": float})
    return out[~out["OASISID"].isin(book.refused)].reset_index(drop=True)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True
    return bool(a == b)


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

    Several files of one contrast in a session (``run-01``/``run-02``, ``acq-`` variants,
    ``.nii`` beside ``.nii.gz``) are resolved by :func:`_run_order`: the lowest run is used
    (a file without ``run-`` counts as the lowest); if it cannot be read, the next one is.
    The other files are reported and the session is kept. A bad row of the clinical table
    leaves out only its subject (every session of it).

    Raises:
        DatasetLayoutError: if the root is missing or holds no ``sub-OAS3*/ses-*`` folder, or
            the clinical table is unreadable or lacks ``OASISID``/``days_to_visit``.
    """
    require_root(INFO, root, ("sub-OAS3*/ses-*",))
    book = LabelBook()
    clinical = _read_clinical(root, book)
    recorder = SubjectRecorder(INFO.key)
    book.report(recorder)
    for subject_dir in (p for p in list_dir(root, "dataset root") if _SUBJECT_DIR.fullmatch(p.name)):
        nid = subject_dir.name.removeprefix("sub-")
        if nid in book.refused:
            continue
        try:  # an unreadable subject folder is one failure, not a silent gap
            problem = folder_problem(subject_dir, "subject folder")
            if problem is not None:
                raise SubjectError(subject_dir, problem)
            sessions = [p for p in list_dir(subject_dir, "subject folder") if _SESSION_DIR.fullmatch(p.name)]
        except SubjectError as err:
            logger.warning("%s %s dropped: %s", INFO.key, nid, err)
            recorder.fail(nid, err.path, err.reason)
            continue
        for session_dir in sessions:
            with recorder.subject(nid) as rows:
                rows.extend(_read_session(root, nid, session_dir, clinical, recorder))
    return recorder.rows, recorder.failures


_SUBJECT_DIR = re.compile(r"sub-OAS3[0-9A-Za-z]+")
_SESSION_DIR = re.compile(r"ses-[0-9A-Za-z]+")


def _run_order(path: Path) -> tuple[Any, ...]:
    """Sort key among files of one contrast (:func:`~brainssl.datasets.layouts.bids_names.bids_image_order`).

    Lowest run first (none = the lowest), no acq- first, then no rec-, lowest echo, .nii.gz first.
    """
    name = parse_bids_name(path.name)
    assert name is not None
    return bids_image_order(name, path.name)


def _image_name(path: Path) -> BidsName | None:
    """The BIDS name of an OASIS image (suffix T1w, T2w or FLAIR; .nii or .nii.gz), else ``None``."""
    name = parse_bids_name(path.name)
    if name is None or name.suffix not in CONTRASTS or name.extension not in (".nii", ".nii.gz"):
        return None
    return name if name.has("ses") else None


def _read_session(
    root: Path, nid: str, session_dir: Path, clinical: pd.DataFrame | None, recorder: SubjectRecorder
) -> list[dict[str, Any]]:
    problem = folder_problem(session_dir, "session folder")
    if problem is not None:
        raise SubjectError(session_dir, problem)
    anat = session_dir / "anat"
    entries = list_dir(anat, "anat folder") if anat.exists() or anat.is_symlink() else []
    images = [p for p in entries if _image_name(p) is not None]
    if not images:
        raise SubjectError(anat, "empty session folder: no anat/*_{T1w,T2w,FLAIR}.nii.gz")
    session = session_dir.name
    day = int(session.removeprefix("ses-d")) if re.fullmatch(r"ses-d\d+", session) else -1
    labels = _visit_labels(clinical, nid, day) if day >= 0 else {}
    truth = read_truth(root, nid, session)
    by_contrast: dict[str, list[Path]] = {}
    for path in images:
        name = _image_name(path)
        assert name is not None
        if name.get("sub") != nid or f"ses-{name.get('ses')}" != session:
            recorder.note(
                nid,
                path,
                f"names sub-{name.get('sub')} ses-{name.get('ses')}, not this folder's sub-{nid} {session}; "
                "this file is not used",
            )
            continue
        problem = bids_image_problem(name)
        if problem is not None:
            recorder.note(nid, path, f"{problem}; this file is not used as the session's {name.suffix}")
            continue
        by_contrast.setdefault(name.suffix, []).append(path)
    if not by_contrast:
        raise SubjectError(anat, f"no image of sub-{nid} {session} in the session folder")
    rows = []
    for contrast in CONTRASTS:
        candidates = sorted(by_contrast.get(contrast, []), key=_run_order)
        if not candidates:
            continue
        path, img, notes = first_readable(candidates, f"{contrast} image")
        for other, reason in notes:
            recorder.note(nid, other, reason)
        rows.append(
            image_row(
                INFO.key,
                nid,
                path,
                img,
                session=session,
                contrast=contrast,
                pathology="none",
                **labels,
                **truth,
            )
        )
    rows.sort(key=lambda row: row["path"])
    return rows
