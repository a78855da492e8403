"""ABIDE-style demo writer: autism and controls from several sites, in ABIDE I's BIDS layout.

Only a writer: the demo folder is read by the generic BIDS reader
(:mod:`brainssl.datasets.layouts.bids`) through a ``kind: bids`` entry with ``demo: abide``, as a
real ABIDE copy is. It follows the ABIDE I BIDS release (INDI ``RawDataBIDS``) and the columns of
the ABIDE I phenotypic table (``Phenotypic_V1_0b``)::

    <root>/dataset_description.json, README, .bidsignore (lists _truth)
    <root>/participants.tsv   participant_id, SITE_ID, DX_GROUP (1 autism, 2 control),
                              DSM_IV_TR (1 autism, 0 control), AGE_AT_SCAN, SEX (1 male, 2 female)
    <root>/sub-0050002/ses-1/anat/sub-0050002_ses-1_run-1_T1w.nii.gz (+ .json sidecar)

The real release nests one such folder per site (``RawDataBIDS/NYU/``, ...); point one entry at
each site folder, or merge them into one root with one ``participants.tsv``.

Demo cohort (the effect is :mod:`brainssl.synth.neurodev`): subject ``i`` is scanned at site
``SITES[i % 4]`` (each with its scanner's intensity scaling), ages 7-35, and is autistic
when ``frac(0.618034 k + 0.5) < share`` with ``k = i // 4`` and the site's share of autistic
subjects (:data:`AUTISM_SHARE`: 0.75, 0.25, 0.5, 0.5) -- so site predicts diagnosis in part, as in
ABIDE, and a site-only head scores above chance where sites are seen in training.
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
from brainssl.io import write_json

__all__ = [
    "AUTISM_SHARE",
    "INFO",
    "SITES",
    "diagnosis",
    "finalize",
    "native_id",
    "subject_params",
    "write_subject",
]

INFO = DatasetInfo(
    key="abide",
    name="ABIDE (autism brain imaging data exchange) demo",
    layout="BIDS: sub-00#####/ses-1/anat/sub-00#####_ses-1_run-1_T1w.nii.gz, participants.tsv with "
    "SITE_ID, DX_GROUP, AGE_AT_SCAN, SEX",
    source="https://fcon_1000.projects.nitrc.org/indi/abide/ (ABIDE I/II; BIDS under s3://fcp-indi/data/"
    "Projects/ABIDE/RawDataBIDS/)",
)
SITES = ("NYU", "UM_1", "USM", "PITT")
AUTISM_SHARE = (0.75, 0.25, 0.5, 0.5)
SESSION = "ses-1"


def native_id(index: int) -> str:
    """ABIDE I subject id of demo subject ``index`` (``0050002`` onwards)."""
    return f"{50002 + index:07d}"


def site_index(index: int) -> int:
    """The site of demo subject ``index``."""
    return index % len(SITES)


def diagnosis(index: int) -> str:
    """``autism`` or ``control``: a low-discrepancy draw against the site's share of autism."""
    k = index // len(SITES)
    return "autism" if (0.6180339887 * k + 0.5) % 1.0 < AUTISM_SHARE[site_index(index)] else "control"


def subject_params(index: int, grid_mm: float) -> dict[str, Any]:
    """Synthetic-subject settings: a child/young adult at its site, T1w only."""
    return {
        "pathology": "none",
        "diagnosis": diagnosis(index),
        "age_range": (7.0, 35.0),
        "contrasts": ("T1w",),
        "grid_mm": grid_mm,
        "sites": SITES,
        "site_index": site_index(index),
    }


def write_subject(root: Path, index: int, nid: str, make: Callable[..., Any]) -> dict[str, Any]:
    """Write one subject's T1w (run-1), its sidecar and truth; return its record."""
    subject = make()
    meta = meta_dict(subject.meta)
    anat = root / f"sub-{nid}" / SESSION / "anat"
    stem = f"sub-{nid}_{SESSION}_run-1_T1w"
    volume = subject.images["T1w"]
    path = anat / f"{stem}.nii.gz"
    save_volume(path, volume_array(volume), np.asarray(volume.affine))
    write_json(
        anat / f"{stem}.json",
        {"Modality": "MR", "MagneticFieldStrength": 3, "InstitutionName": SITES[site_index(index)]},
    )
    write_truth(
        root, nid, subject_truth(subject), {**meta, "sequence": {rel(root, path): "T1w"}}, session=SESSION
    )
    return {
        "native_id": nid,
        "files": [rel(root, path)],
        "meta": meta,
        "extra": {"site": SITES[site_index(index)]},
    }


def finalize(root: Path, shard: pd.DataFrame) -> list[Path]:
    """Write ``participants.tsv`` and the BIDS root files from the shard records."""
    rows = []
    for record in shard.to_dict("records"):
        autism = record["diagnosis"] == "autism"
        rows.append(
            {
                "participant_id": f"sub-{native_id(int(record['index']))}",  # the table read 0050002 as 50002
                "SITE_ID": SITES[site_index(int(record["index"]))],
                "DX_GROUP": 1 if autism else 2,
                "DSM_IV_TR": 1 if autism else 0,
                "AGE_AT_SCAN": round(float(record["age"]), 2),
                "SEX": 1 if record["sex"] == "M" else 2,
            }
        )
    path = root / "participants.tsv"
    write_tsv(path, pd.DataFrame(rows).sort_values("participant_id", kind="stable"))
    readme = (
        "Synthetic ABIDE-style demo cohort written by brainssl (not ABIDE data). Autistic subjects "
        "have a thicker frontal cortex (brainssl.synth.neurodev); sites differ in scanner and in "
        "their share of autistic subjects."
    )
    return [path, *write_demo_root(root, "ABIDE", readme, (TRUTH_IGNORE,))]
