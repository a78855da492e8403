"""Medical Segmentation Decathlon Task04 Hippocampus: T1w crops with anterior/posterior labels.

Follows ``Task04_Hippocampus.tar`` of the Medical Segmentation Decathlon (Antonelli et al. 2022,
Nat. Commun. 13:4128; Simpson et al. 2019, arXiv:1902.09063): 260 training and 130 test crops
from Vanderbilt University Medical Center, read with MONAI's ``load_decathlon_datalist`` as
well as here. Native layout::

    <root>/dataset.json
    <root>/imagesTr/hippocampus_001.nii.gz   <root>/labelsTr/hippocampus_001.nii.gz
    <root>/imagesTs/hippocampus_004.nii.gz

``dataset.json`` follows MSD: ``labels`` {"0": "background", "1": "Anterior",
"2": "Posterior"}, ``modality`` {"0": "MRI"}, ``training`` as a list of
``{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}`` and ``test``
as a list of image paths. The reader uses those lists when the file exists and
otherwise globs the folders (skipping macOS ``._*`` files, which the real tar holds).
A ``dataset.json`` that is not valid JSON (e.g. truncated) stops the dataset with one
message naming it; a malformed entry is reported and skipped; a case listed twice the
same way is read once, a case listed differently twice (another label, or as training
and test case) is refused, so a test image never enters training.

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
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from brainssl.datasets.layouts.base import (
    grid_difference,
    image_row,
    meta_dict,
    read_nifti,
    read_truth,
    rel,
    save_volume,
    subject_affine,
    volume_array,
    write_truth,
)
from brainssl.datasets.layouts.errors import DatasetInfo, DatasetLayoutError, SubjectError, SubjectRecorder
from brainssl.datasets.layouts.files import list_dir, require_root
from brainssl.datasets.layouts.tables import read_text, table_error
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
    return {"pathology": "none", "contrasts": ("T1w",), "grid_mm": grid_mm, "anisotropic_prob": 0.0}


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


DATASET_JSON_KEYS = ("training: [{image, label}, ...]", "test: [image, ...]")


def _json_error(path: Path, problem: str) -> DatasetLayoutError:
    return table_error(INFO, path, problem, DATASET_JSON_KEYS, kind="keys")


def _entry_path(root: Path, value: Any, key: str) -> Path:
    """Resolve one path of a dataset.json entry; raise ValueError when it is not a relative path."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key} is {value!r}, not a path")
    relative = PurePosixPath(value.strip())
    if relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"{key} {value!r} points outside the dataset root")
    return root.joinpath(*(part for part in relative.parts if part != "."))


def _listed_cases(root: Path, recorder: SubjectRecorder) -> list[tuple[Path, Path | None]]:
    """(image, label-or-None) pairs listed in dataset.json; bad entries are reported."""
    description = root / "dataset.json"
    try:
        spec = json.loads(read_text(description, INFO))
    except json.JSONDecodeError as err:
        raise _json_error(
            description, f"not valid JSON (line {err.lineno} column {err.colno}: {err.msg}); truncated?"
        ) from err
    if not isinstance(spec, dict):
        raise _json_error(description, f"expected a JSON object, got {type(spec).__name__}")
    pairs: list[tuple[Path, Path | None]] = []
    for key in ("training", "test"):
        items = spec.get(key, [])
        if not isinstance(items, list):
            raise _json_error(description, f"{key!r} is a {type(items).__name__}, not a list")
        for number, item in enumerate(items):
            where = f"{key}[{number}]"
            try:
                if key == "training":
                    if not isinstance(item, dict):
                        raise ValueError(f"is {item!r}, not an object with 'image' and 'label'")
                    pairs.append(
                        (
                            _entry_path(root, item.get("image"), "image"),
                            _entry_path(root, item.get("label"), "label"),
                        )
                    )
                else:
                    image = item.get("image") if isinstance(item, dict) else item
                    pairs.append((_entry_path(root, image, "image"), None))
            except ValueError as err:
                raw = item.get("image") if isinstance(item, dict) else item
                # an image path outside the root names no case of this dataset (no subject lost)
                inside = isinstance(raw, str) and not {"..", "/"} & set(PurePosixPath(raw.strip()).parts)
                nid = _nid(Path(str(raw))) if inside else ""
                logger.warning("%s: %s %s: %s", INFO.key, description, where, err)
                recorder.fail(nid, description, f"{where}: {err}; entry not used")
    return pairs


def _folder_cases(root: Path, recorder: SubjectRecorder) -> list[tuple[Path, Path | None]]:
    pairs: list[tuple[Path, Path | None]] = []
    for name, with_label in (("imagesTr", True), ("imagesTs", False)):
        folder = root / name
        if not (folder.exists() or folder.is_symlink()):
            continue
        try:
            entries = list_dir(folder, f"{name} folder")
        except SubjectError as err:
            logger.warning("%s: %s", INFO.key, err)
            recorder.fail(name, err.path, err.reason)
            continue
        for path in (p for p in entries if _NAME.match(p.name)):
            pairs.append((path, root / "labelsTr" / path.name if with_label else None))
    return pairs


def _nid(image_path: Path) -> str:
    return image_path.name.split(".nii")[0]


def _cases(root: Path, recorder: SubjectRecorder) -> list[tuple[str, Path, Path | None]]:
    """Return (native id, image, label-or-None) from dataset.json, else from the folders.

    A case listed twice the same way is read once (with a warning); a case listed twice
    differently (another label, or both as training and test case) is refused and reported.
    """
    listed = root / "dataset.json"
    has_json = listed.exists() or listed.is_symlink()
    pairs = _listed_cases(root, recorder) if has_json else _folder_cases(root, recorder)
    by_id: dict[str, list[tuple[Path, Path | None]]] = {}
    for image, label in pairs:
        by_id.setdefault(_nid(image), []).append((image, label))
    cases = []
    source = str(listed) if has_json else str(root)
    for nid, entries in by_id.items():
        distinct = list(dict.fromkeys(entries))
        if len(distinct) > 1:
            shown = "; ".join(
                f"{image.relative_to(root)} with label {label.relative_to(root) if label else 'none (test)'}"
                for image, label in distinct
            )
            logger.warning("%s %s dropped: listed as %s", INFO.key, nid, shown)
            recorder.fail(nid, source, f"case listed differently more than once ({shown}); refused")
            continue
        if len(entries) > 1:
            logger.warning("%s: %s lists %s %d times; read once", INFO.key, source, nid, len(entries))
        cases.append((nid, *distinct[0]))
    return cases


def read(root: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read a Task04_Hippocampus root (real or demo) into manifest rows and failures.

    Raises:
        DatasetLayoutError: if the root is missing or has no ``imagesTr`` folder, or
            ``dataset.json`` is unreadable, not valid JSON or not in the MSD form.
    """
    require_root(INFO, root, ("imagesTr",))
    recorder = SubjectRecorder(INFO.key)
    cases = _cases(root, recorder)
    if not cases and not recorder.failures:
        recorder.fail("imagesTr", root / "imagesTr", "empty folder: no hippocampus_*.nii.gz images")
    for nid, image_path, label_path in cases:
        with recorder.subject(nid) as rows:
            rows.append(_read_case(root, nid, image_path, label_path))
    return recorder.rows, recorder.failures


def _read_case(root: Path, nid: str, image_path: Path, label_path: Path | None) -> dict[str, Any]:
    _, img = read_nifti(image_path, "T1w image")
    values: dict[str, Any] = {"split_group": "test" if label_path is None else "train"}
    if label_path is not None:
        label, label_img = read_nifti(label_path, "label map")
        unexpected = sorted(set(np.unique(label).tolist()) - {0, 1, 2})
        if unexpected:
            raise SubjectError(label_path, f"labels {unexpected} not in {{0, 1, 2}}")
        difference = grid_difference(label_img, img, "image")
        if difference is not None:
            raise SubjectError(label_path, f"label map grid: {difference}")
        values["seg_path"] = str(label_path)
    return image_row(
        INFO.key, nid, image_path, img, contrast="T1w", pathology="none", **values, **read_truth(root, nid)
    )
