"""BraTS 2021: skull-stripped, co-registered glioma MRI with tumour labels and clinical tables.

Native layout::

    <root>/BraTS2021_00000/BraTS2021_00000_{t1,t1ce,t2,flair,seg}.nii.gz
    <root>/train_labels.csv          BraTS21ID,MGMT_value   (RSNA-MICCAI; ids as integers)
    <root>/survival_info.csv         Brats20ID,Age,Survival_days,Extent_of_Resection (BraTS 2020)
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
    return {"pathology": "glioma", "modalities": tuple(SUFFIXES), "grid_mm": grid_mm}


def file_path(root: Path, nid: str, suffix: str) -> Path:
    """Native path of one BraTS file (``suffix`` is t1, t1ce, t2, flair or seg)."""
    return root / nid / f"{nid}_{suffix}.nii.gz"


def write_subject(root: Path, index: int, nid: str, make: Callable[..., Any]) -> dict[str, Any]:
    """Write one skull-stripped synthetic glioma subject (+ seg, truth); return its record."""
    subject = make()
    mask = volume_array(subject.brain_mask) > 0
    files, sequence = [], {}
    for modality, suffix in SUFFIXES.items():
        volume = subject.images[modality]
        path = file_path(root, nid, suffix)
        save_volume(path, np.where(mask, volume_array(volume), 0.0), np.asarray(volume.affine))
        files.append(rel(root, path))
        sequence[rel(root, path)] = modality
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


def parse_survival(value: Any) -> tuple[float, float]:
    """Parse one ``Survival_days`` entry into (days, event).

    Args:
        value: ``"437"`` (death at day 437) or ``"ALIVE (361 days later)"`` (censored).

    Returns:
        ``(days, 1.0)`` for a death, ``(days, 0.0)`` when censored, ``(nan, nan)`` when unknown.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return float("nan"), float("nan")
    text = str(value).strip()
    alive = _ALIVE.match(text)
    if alive:
        return float(alive.group(1)), 0.0
    try:
        return float(text), 1.0
    except ValueError:
        logger.warning("BraTS: unparsed Survival_days value %r", text)
        return float("nan"), float("nan")


def _read_labels(root: Path) -> dict[str, dict[str, Any]]:
    labels: dict[str, dict[str, Any]] = {}

    def put(nid: str, **values: Any) -> None:
        labels.setdefault(nid, {}).update(values)

    if (root / "train_labels.csv").is_file():
        table = pd.read_csv(root / "train_labels.csv", dtype={"BraTS21ID": str})
        for row in table.itertuples(index=False):
            put(f"BraTS2021_{int(row.BraTS21ID):05d}", mgmt=float(row.MGMT_value))
    if (root / "molecular_labels.csv").is_file():
        table = pd.read_csv(root / "molecular_labels.csv", dtype={"BraTS21ID": str, "IDH": str})
        for row in table.itertuples(index=False):
            put(f"BraTS2021_{int(row.BraTS21ID):05d}", idh=str(row.IDH).strip().lower())
    mapping_path, survival_path = root / "brats20_to_brats21.csv", root / "survival_info.csv"
    if survival_path.is_file() and mapping_path.is_file():
        mapping = pd.read_csv(mapping_path, dtype=str).set_index("Brats20ID")["BraTS2021ID"]
        table = pd.read_csv(survival_path, dtype={"Survival_days": str})
        for row in table.itertuples(index=False):
            if row.Brats20ID in mapping.index:
                days, event = parse_survival(row.Survival_days)
                put(mapping[row.Brats20ID], age=float(row.Age), survival_days=days, event=event)
    elif survival_path.is_file():
        logger.warning("BraTS: survival_info.csv without brats20_to_brats21.csv in %s; not joined", root)
    return labels


def read(root: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read a BraTS 2021 root (real or demo) into manifest rows and failures.

    Raises:
        DatasetLayoutError: if the root is missing or holds no ``BraTS2021_#####`` folder.
    """
    require_root(INFO, root, ("BraTS2021_*",))
    labels = _read_labels(root)
    recorder = SubjectRecorder(INFO.key)
    for folder in sorted(p for p in root.glob("BraTS2021_*") if p.is_dir() and _FOLDER.match(p.name)):
        with recorder.subject(folder.name) as rows:
            rows.extend(_read_subject(root, folder.name, labels.get(folder.name, {})))
    return recorder.rows, recorder.failures


def _read_subject(root: Path, nid: str, labels: dict[str, Any]) -> list[dict[str, Any]]:
    folder = root / nid
    if not any(folder.iterdir()):
        raise SubjectError(folder, "empty subject folder")
    seg_path = file_path(root, nid, "seg")
    seg, seg_img = read_nifti(seg_path, "segmentation")
    unexpected = sorted(set(np.unique(seg).tolist()) - set(SEG_LABELS))
    if unexpected:
        raise SubjectError(seg_path, f"segmentation labels {unexpected} not in {SEG_LABELS}")
    truth = read_truth(root, nid)
    rows = []
    for modality, suffix in SUFFIXES.items():
        path = file_path(root, nid, suffix)
        data, img = read_nifti(path, f"{modality} image")
        if data.shape != seg.shape or not np.allclose(img.affine, seg_img.affine, atol=1e-3):
            raise SubjectError(path, f"grid {data.shape} differs from the segmentation's {seg.shape}")
        rows.append(
            image_row(
                INFO.key,
                nid,
                path,
                img,
                modality=modality,
                seg_path=str(seg_path),
                pathology="glioma",
                **labels,
                **truth,
            )
        )
    return rows
