"""ATLAS-style demo writer: chronic and acute stroke T1w with lesion masks, in ATLAS v2.0's layout.

Only a writer: the demo folder is read by the generic BIDS reader
(:mod:`brainssl.datasets.layouts.bids`) through a ``kind: bids`` entry with ``demo: atlas``.
It follows the ATLAS v2.0 training release (Liew et al. 2022, Sci Data 9:320)::

    <root>/dataset_description.json, README, .bidsignore (lists _truth and *_mask.nii.gz)
    <root>/participants.tsv   participant_id, site (the cohort R001, R002, ...), age, sex
    <root>/sub-r001s001/ses-1/anat/sub-r001s001_ses-1_T1w.nii.gz
    <root>/sub-r001s001/ses-1/anat/sub-r001s001_ses-1_label-L_desc-T1lesion_mask.nii.gz
    <root>/sub-r001s001/sub-r001s001_sessions.tsv   session_id, days_since_stroke

The release nests subjects in cohort folders (``ATLAS_2/Training/R001/sub-r001s001/``) and
stores MNI-registered images (``_space-MNI152NLin2009aSym_`` before the suffix, which the reader
ignores); the demo's images are in native space and need no ``space-`` entity. ATLAS itself
publishes no time since stroke: the per-session table here stands for a cohort's own records
(BrainIAC's and BrainDINO's post-stroke timing tasks), and the entry names its column.

Demo cohort (the lesion model is :mod:`brainssl.synth.stroke`): subject ``i`` belongs to cohort
``R00{i % 3 + 1}``, is 55-75 years old (a narrow range, so that ageing's own ventricular widening
does not hide the stroke's) and was scanned ``1 + 364 frac(0.618034 i + 0.3)`` days
after the stroke (spread evenly over a year).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainssl.datasets.layouts.base import (
    meta_dict,
    rel,
    save_volume,
    subject_truth,
    volume_array,
    write_truth,
)
from brainssl.datasets.layouts.bids_demo import write_demo_root, write_tsv
from brainssl.datasets.layouts.bids_names import TRUTH_IGNORE
from brainssl.datasets.layouts.errors import DatasetInfo

__all__ = ["INFO", "MASK", "days_since_stroke", "finalize", "native_id", "subject_params", "write_subject"]

INFO = DatasetInfo(
    key="atlas",
    name="ATLAS v2.0 (anatomical tracings of lesions after stroke) demo",
    layout="BIDS-like: sub-r###s###/ses-1/anat/sub-r###s###_ses-1_T1w.nii.gz and "
    "..._label-L_desc-T1lesion_mask.nii.gz, sub-r###s###/sub-r###s###_sessions.tsv",
    source="ATLAS v2.0 via ICPSR (study 36684, data use agreement); https://atlas.grand-challenge.org/",
)
COHORTS = ("R001", "R002", "R003")
#: The lesion mask's entities and suffix (the entry's ``mask``).
MASK = "label-L_desc-T1lesion_mask"
SESSION = "ses-1"


def native_id(index: int) -> str:
    """ATLAS id of demo subject ``index``: cohort and subject number (``r001s001``)."""
    return f"r{index % len(COHORTS) + 1:03d}s{index // len(COHORTS) + 1:03d}"


def days_since_stroke(index: int) -> float:
    """Days from stroke onset to the scan of demo subject ``index``: 1 to 365, evenly spread."""
    return round(1.0 + 364.0 * ((0.6180339887 * index + 0.3) % 1.0), 1)


def subject_params(index: int, grid_mm: float) -> dict[str, Any]:
    """Synthetic-subject settings: an older adult with a stroke lesion of known age, T1w only."""
    return {
        "pathology": "none",
        "diagnosis": "control",
        "age_range": (55.0, 75.0),
        "contrasts": ("T1w",),
        "grid_mm": grid_mm,
        "sites": COHORTS,
        "site_index": index % len(COHORTS),
        "stroke_days": days_since_stroke(index),
    }


def write_subject(root: Path, index: int, nid: str, make: Callable[..., Any]) -> dict[str, Any]:
    """Write one subject's T1w, lesion mask, sessions table and truth; return its record."""
    subject = make()
    meta = meta_dict(subject.meta)
    anat = root / f"sub-{nid}" / SESSION / "anat"
    prefix = f"sub-{nid}_{SESSION}"
    volume = subject.images["T1w"]
    affine = np.asarray(volume.affine)
    image, mask = anat / f"{prefix}_T1w.nii.gz", anat / f"{prefix}_{MASK}.nii.gz"
    save_volume(image, volume_array(volume), affine)
    lesion = subject.lesion.data if subject.lesion is not None else np.zeros(volume.data.shape, np.uint8)
    save_volume(mask, lesion, affine, label=True)
    table = root / f"sub-{nid}" / f"sub-{nid}_sessions.tsv"
    write_tsv(table, pd.DataFrame({"session_id": [SESSION], "days_since_stroke": [meta["days_since_event"]]}))
    write_truth(
        root, nid, subject_truth(subject), {**meta, "sequence": {rel(root, image): "T1w"}}, session=SESSION
    )
    files = [rel(root, image), rel(root, mask), rel(root, table)]
    return {
        "native_id": nid,
        "files": files,
        "meta": meta,
        "extra": {"cohort": COHORTS[index % len(COHORTS)]},
    }


def finalize(root: Path, shard: pd.DataFrame) -> list[Path]:
    """Write ``participants.tsv`` and the BIDS root files from the shard records."""
    rows = [
        {
            "participant_id": f"sub-{native_id(int(record['index']))}",
            "site": COHORTS[int(record["index"]) % len(COHORTS)],
            "age": round(float(record["age"]), 1),
            "sex": record["sex"],
        }
        for record in shard.to_dict("records")
    ]
    path = root / "participants.tsv"
    write_tsv(path, pd.DataFrame(rows).sort_values("participant_id", kind="stable"))
    readme = (
        "Synthetic ATLAS-style demo cohort written by brainssl (not ATLAS data). Lesions change with "
        "the time since the stroke (brainssl.synth.stroke): acute swelling, later cavitation and atrophy."
    )
    return [path, *write_demo_root(root, "ATLAS", readme, (TRUTH_IGNORE, "*_mask.nii.gz"))]
