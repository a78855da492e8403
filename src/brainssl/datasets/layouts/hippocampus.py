"""Medical Segmentation Decathlon Task04 Hippocampus: T1w crops with anterior/posterior labels.

Native layout::

    <root>/dataset.json
    <root>/imagesTr/hippocampus_001.nii.gz   <root>/labelsTr/hippocampus_001.nii.gz
    <root>/imagesTs/hippocampus_004.nii.gz

``dataset.json`` follows MSD: ``labels`` {"0": "background", "1": "Anterior",
"2": "Posterior"}, ``modality`` {"0": "MRI"}, ``training`` as a list of
``{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}`` and ``test``
as a list of image paths. The reader uses those lists when the file exists and
otherwise globs the folders (skipping macOS ``._*`` files, which the real tar holds).

The demo crops one hippocampus (left for even, right for odd subjects) with a
:data:`MARGIN_MM` margin from the synthetic T1w, resamples the crop to 1 mm
(as the real set) and splits the structure at its median anterior-posterior
world coordinate into anterior (1) and posterior (2).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

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
    subject_affine,
    volume_array,
    write_truth,
)
from brainssl.io import write_json

__all__ = ["INFO", "native_id", "subject_params", "write_subject", "finalize", "read", "crop_hippocampus"]

logger = logging.getLogger(__name__)

INFO = DatasetInfo(
    key="hippocampus",
    name="Medical Segmentation Decathlon Task04_Hippocampus",
    layout="dataset.json, imagesTr/hippocampus_###.nii.gz, labelsTr/hippocampus_###.nii.gz, imagesTs/",
    source="http://medicaldecathlon.com/ (Task04_Hippocampus.tar)",
)
LABELS = {"0": "background", "1": "Anterior", "2": "Posterior"}
MARGIN_MM = 8.0
TARGET_MM = 1.0
_NAME = re.compile(r"^hippocampus_\d+\.nii(\.gz)?$")


def native_id(index: int) -> str:
    """Native id of demo subject ``index``."""
    return f"hippocampus_{index + 1:03d}"


def is_test(index: int) -> bool:
    """Whether demo subject ``index`` goes to ``imagesTs`` (every fourth)."""
    return index % 4 == 3


def subject_params(index: int, grid_mm: float) -> dict[str, Any]:
    """Synthetic-subject settings: T1w only, no tumour, isotropic voxels (as the real set)."""
    return {"pathology": "none", "modalities": ("T1w",), "grid_mm": grid_mm, "anisotropic_prob": 0.0}


def crop_hippocampus(
    image: np.ndarray, hippocampus: np.ndarray, affine: np.ndarray, side: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop one hippocampus with a margin, resample to 1 mm and split it anterior/posterior.

    Args:
        image: 3D T1w ``(X, Y, Z)``.
        hippocampus: label map on the same grid (1 left, 2 right).
        affine: voxel-to-world (RAS mm) matrix of both.
        side: 1 (left) or 2 (right).

    Returns:
        The cropped image, its label map (0 background, 1 anterior, 2 posterior)
        and the crop's affine.

    Raises:
        ValueError: if the chosen hippocampus is empty.
    """
    mask = hippocampus == side
    if not mask.any():
        raise ValueError(f"hippocampus side {side} is empty")
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    margin = np.ceil(MARGIN_MM / zooms).astype(int)
    nz = np.nonzero(mask)
    lo = np.maximum([int(a.min()) for a in nz] - margin, 0)
    hi = np.minimum([int(a.max()) + 1 for a in nz] + margin, mask.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    factor = zooms / TARGET_MM
    out_shape = tuple(max(1, math.ceil(n * f)) for n, f in zip(mask[box].shape, factor, strict=True))
    coords = np.indices(out_shape, dtype=np.float32) / factor.reshape(3, 1, 1, 1).astype(np.float32)
    crop = ndimage.map_coordinates(image[box].astype(np.float32), coords, order=1, mode="nearest")
    crop_mask = ndimage.map_coordinates(mask[box].astype(np.float32), coords, order=1, mode="nearest") >= 0.5
    crop_affine = affine.copy()
    crop_affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    crop_affine[:3, :3] = affine[:3, :3] / factor
    world_y = (crop_affine @ np.vstack([np.stack(np.nonzero(crop_mask)), np.ones(crop_mask.sum())]))[1]
    label = np.zeros(out_shape, dtype=np.uint8)
    label[crop_mask] = np.where(world_y >= np.median(world_y), 1, 2)
    return crop, label, crop_affine


def write_subject(root: Path, index: int, nid: str, make: Callable[..., Any]) -> dict[str, Any]:
    """Write one synthetic hippocampus crop (image, label unless test, truth); return its record."""
    subject = make()
    side = 1 if index % 2 == 0 else 2
    crop, label, affine = crop_hippocampus(
        volume_array(subject.images["T1w"]), volume_array(subject.hippocampus), subject_affine(subject), side
    )
    test = is_test(index)
    image_path = root / ("imagesTs" if test else "imagesTr") / f"{nid}.nii.gz"
    save_volume(image_path, crop, affine)
    files = [rel(root, image_path)]
    if not test:
        label_path = root / "labelsTr" / f"{nid}.nii.gz"
        save_volume(label_path, label, affine, label=True)
        files.append(rel(root, label_path))
    meta = meta_dict(subject.meta)
    truth_meta = {
        **meta,
        "sequence": {rel(root, image_path): "T1w"},
        "side": "left" if side == 1 else "right",
    }
    write_truth(root, nid, {"hippocampus": (np.where(label > 0, side, 0), affine)}, truth_meta)
    return {"native_id": nid, "files": files, "meta": meta, "extra": {"test": test}}


def finalize(root: Path, shard: pd.DataFrame) -> list[Path]:
    """Write the MSD ``dataset.json`` listing the training and test cases."""
    records = sorted(shard.to_dict("records"), key=lambda r: str(r["native_id"]))
    training, test = [], []
    for record in records:
        nid = record["native_id"]
        if json.loads(record["extra"])["test"]:
            test.append(f"./imagesTs/{nid}.nii.gz")
        else:
            training.append({"image": f"./imagesTr/{nid}.nii.gz", "label": f"./labelsTr/{nid}.nii.gz"})
    description = {
        "name": "Hippocampus",
        "description": "Left and right hippocampus segmentation (brainssl synthetic demo)",
        "reference": "brainssl synthetic data in the layout of Vanderbilt University Medical Center's set",
        "licence": "CC-BY-SA 4.0",
        "release": "1.0 04/05/2018",
        "tensorImageSize": "3D",
        "modality": {"0": "MRI"},
        "labels": LABELS,
        "numTraining": len(training),
        "numTest": len(test),
        "training": training,
        "test": test,
    }
    path = root / "dataset.json"
    write_json(path, description)
    return [path]


def _cases(root: Path) -> list[tuple[Path, Path | None]]:
    """Return (image, label-or-None) pairs from dataset.json, else from the folders."""
    description = root / "dataset.json"
    pairs: list[tuple[Path, Path | None]] = []
    if description.is_file():
        spec = json.loads(description.read_text(encoding="utf-8"))
        pairs += [(root / item["image"], root / item["label"]) for item in spec.get("training", [])]
        pairs += [(root / item, None) for item in spec.get("test", [])]
        return pairs
    for name, with_label in (("imagesTr", True), ("imagesTs", False)):
        folder = root / name
        for path in sorted(p for p in folder.glob("*.nii*") if _NAME.match(p.name)):
            pairs.append((path, root / "labelsTr" / path.name if with_label else None))
    return pairs


def read(root: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read a Task04_Hippocampus root (real or demo) into manifest rows and failures.

    Raises:
        DatasetLayoutError: if the root is missing or has no ``imagesTr`` folder.
    """
    require_root(INFO, root, ("imagesTr",))
    pairs = _cases(root)
    recorder = SubjectRecorder(INFO.key)
    if not pairs:
        recorder.fail("imagesTr", root / "imagesTr", "empty folder: no hippocampus_*.nii.gz images")
    for image_path, label_path in pairs:
        nid = image_path.name.split(".nii")[0]
        with recorder.subject(nid) as rows:
            rows.append(_read_case(root, nid, image_path, label_path))
    return recorder.rows, recorder.failures


def _read_case(root: Path, nid: str, image_path: Path, label_path: Path | None) -> dict[str, Any]:
    data, img = read_nifti(image_path, "T1w image")
    values: dict[str, Any] = {"split_group": "test" if label_path is None else "train"}
    if label_path is not None:
        label, label_img = read_nifti(label_path, "label map")
        unexpected = sorted(set(np.unique(label).tolist()) - {0, 1, 2})
        if unexpected:
            raise SubjectError(label_path, f"labels {unexpected} not in {{0, 1, 2}}")
        if label.shape != data.shape or not np.allclose(label_img.affine, img.affine, atol=1e-3):
            raise SubjectError(label_path, f"label grid {label.shape} differs from the image's {data.shape}")
        values["seg_path"] = str(label_path)
    return image_row(
        INFO.key, nid, image_path, img, modality="T1w", pathology="none", **values, **read_truth(root, nid)
    )
