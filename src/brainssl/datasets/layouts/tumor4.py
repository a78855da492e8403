"""The 4-class brain tumour image set: 2D grayscale JPEG slices in class folders.

Follows the Kaggle "Brain Tumor MRI Dataset" (Masoud Nickparvar, 2021; 7,023 images combined
from figshare, SARTAJ and Br35H). Native layout::

    <root>/Training/{glioma,meningioma,notumor,pituitary}/Tr-glTr_0000.jpg ... Tr-gl_0010.jpg
    <root>/Testing/{glioma,meningioma,notumor,pituitary}/Te-glTr_0000.jpg ... Te-gl_0010.jpg

Images are numbered within each split and class folder from ``0000``; the release names the
first ten ``<Tr|Te>-<gl|me|no|pi>Tr_000#`` and the rest ``<Tr|Te>-<gl|me|no|pi>_####``, and
the demo names its images the same way. Real images vary in size (most 512 x 512) and may be
stored as RGB JPEGs; they are read as grayscale. There are no
tables: the class is the folder name and the split the top folder. The contrast of a
real image is unknown, so ``contrast`` is empty unless synthetic truth (meta
JSON in ``_truth/<file stem>/``) names it. The demo writes one 256 x 256 axial slice per
synthetic subject, through the tumour's centre (mid-brain for ``notumor``),
shown in radiological convention (anterior up, patient left on the right).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from brainssl.datasets.layouts.base import (
    axial_slice,
    meta_dict,
    read_truth,
    read_truth_meta,
    rel,
    subject_affine,
    volume_array,
    write_truth,
)
from brainssl.datasets.layouts.errors import DatasetInfo, SubjectError, SubjectRecorder
from brainssl.datasets.layouts.files import (
    MIN_IMAGE_SIZE,
    check_size,
    file_problem,
    folder_problem,
    list_dir,
    require_file,
    require_root,
)
from brainssl.datasets.manifest import make_row
from brainssl.io import atomic_path

__all__ = ["INFO", "CLASSES", "native_id", "subject_params", "write_subject", "finalize", "read"]

logger = logging.getLogger(__name__)

INFO = DatasetInfo(
    key="tumor4",
    name="Brain Tumor MRI Dataset (4 classes)",
    layout="Training/{glioma,meningioma,pituitary,notumor}/*.jpg and Testing/{...}/*.jpg",
    source='Kaggle, "Brain Tumor MRI Dataset" by Masoud Nickparvar '
    "(https://www.kaggle.com/datasets/masoudnickparvar/brain-tumor-mri-dataset)",
)
CLASSES = ("glioma", "meningioma", "pituitary", "notumor")
PREFIX = {"glioma": "gl", "meningioma": "me", "pituitary": "pi", "notumor": "no"}
SPLITS = {"Training": "train", "Testing": "test"}
CONTRASTS = ("T1ce", "T2w", "FLAIR", "T1w")
IMAGE_SIZE = 256


def _split_and_class(index: int) -> tuple[str, str]:
    return ("Testing" if index % 5 == 4 else "Training"), CLASSES[index % 4]


_CYCLE = 20  # the (split, class) pattern of demo indices repeats every 20 images


def _number(index: int) -> int:
    """Position of demo image ``index`` among the earlier images of its split and class folder."""
    key = _split_and_class(index)
    per_cycle = [r for r in range(_CYCLE) if _split_and_class(r) == key]
    return (index // _CYCLE) * len(per_cycle) + sum(1 for r in per_cycle if r < index % _CYCLE)


def native_id(index: int) -> str:
    """File stem of demo image ``index``, named as the release names its images.

    ``Tr-glTr_0000`` ... ``Tr-glTr_0009``, then ``Tr-gl_0010``: numbered within its split and
    class folder; the class cycles with the index and every fifth image is a test image.
    """
    split, cls = _split_and_class(index)
    number = _number(index)
    return f"{split[:2]}-{PREFIX[cls]}{'Tr' if number < 10 else ''}_{number:04d}"


def subject_params(index: int, grid_mm: float) -> dict[str, Any]:
    """Synthetic-subject settings: this image's tumour class and one contrast."""
    cls = CLASSES[index % 4]
    return {
        "pathology": "none" if cls == "notumor" else cls,
        "contrasts": (CONTRASTS[(index // 4) % len(CONTRASTS)],),
        "grid_mm": grid_mm,
    }


def _to_uint8(image: np.ndarray) -> np.ndarray:
    hi = float(np.percentile(image, 99.5)) or 1.0
    return (np.clip(image / hi, 0.0, 1.0) * 255).astype(np.uint8)


def write_subject(root: Path, index: int, nid: str, make: Callable[..., Any]) -> dict[str, Any]:
    """Write one synthetic subject's axial slice as a class-folder JPEG; return its record."""
    split, cls = _split_and_class(index)
    subject = make()
    contrast = next(iter(subject.images))
    tumor = volume_array(subject.tumor) if getattr(subject, "tumor", None) is not None else None
    image, k = axial_slice(volume_array(subject.images[contrast]), subject_affine(subject), tumor)
    picture = Image.fromarray(_to_uint8(image), mode="L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    path = root / split / cls / f"{nid}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="JPEG", quality=92)
    meta = meta_dict(subject.meta)
    write_truth(root, nid, {}, {**meta, "sequence": {rel(root, path): contrast}, "axial_slice_ras": k})
    return {"native_id": nid, "files": [rel(root, path)], "meta": meta, "extra": {"tumor_class": cls}}


def finalize(root: Path, shard: pd.DataFrame) -> list[Path]:
    """The 4-class set has no dataset-level tables; nothing to write."""
    return []


def _read_image(root: Path, path: Path, split: str, cls: str) -> dict[str, Any]:
    require_file(path, "JPEG image")
    try:
        with Image.open(path) as handle:
            handle.load()
            size, mode = handle.size, handle.mode
            pixels = np.asarray(handle.convert("L"), dtype=np.float32)
    except PermissionError as err:
        raise SubjectError(path, "permission denied: cannot read the JPEG image file") from err
    except Exception as err:  # PIL raises OSError for truncated files, others for garbage
        raise SubjectError(
            path, f"cannot read JPEG (truncated or corrupt?): {type(err).__name__}: {err}"
        ) from err
    if pixels.size == 0 or min(size) == 0:
        raise SubjectError(path, f"empty image (size {size})")
    if mode not in ("L", "RGB", "RGBA", "P", "I;16"):
        raise SubjectError(path, f"unexpected image mode {mode!r}")
    check_size(path, (size[1], size[0]), "JPEG image", MIN_IMAGE_SIZE)
    truth = read_truth(root, path.stem)
    sequence = read_truth_meta(truth).get("sequence", {})
    return make_row(
        INFO.key,
        path.stem,
        path=str(path),
        format="jpg",
        contrast=sequence.get(rel(root, path), ""),
        shape=f"{size[1]}x{size[0]}",
        orientation="",
        tumor_class=cls,
        pathology="none" if cls == "notumor" else cls,
        split_group=SPLITS[split],
        **truth,
    )


_IMAGE = re.compile(r"\.jpe?g$", re.IGNORECASE)


def read(root: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read a 4-class tumour root (real or demo) into manifest rows and failures.

    The native id is the file stem, so image names must be unique over all class and split
    folders. A name found in two class folders, or in ``Training/`` and ``Testing/``, is
    refused in every place (its class or split cannot be told) and reported; it is never
    labelled by a guess, and a test image never enters training. Two files of one stem in
    one folder (``x.jpg`` and ``x.jpeg``) keep the first readable one by name and report the
    other.

    Raises:
        DatasetLayoutError: if the root is missing or has no ``Training|Testing/<class>`` folder.
    """
    require_root(INFO, root, ("*/glioma",))
    recorder = SubjectRecorder(INFO.key)
    found: dict[str, list[tuple[Path, str, str]]] = {}
    for split in SPLITS:
        for cls in CLASSES:
            folder = root / split / cls
            if not (folder.exists() or folder.is_symlink()):
                continue
            try:
                problem = folder_problem(folder, "class folder")
                if problem is not None:
                    raise SubjectError(folder, problem)
                entries = list_dir(folder, "class folder")
            except SubjectError as err:
                logger.warning("%s %s/%s dropped: %s", INFO.key, split, cls, err)
                recorder.fail("", err.path, err.reason)  # a folder names no image (subject)
                continue
            images = [p for p in entries if _IMAGE.search(p.name) and not p.name.startswith(".")]
            if not images:
                recorder.fail("", folder, "empty folder: no .jpg images")
            for path in images:
                found.setdefault(path.stem, []).append((path, split, cls))
    for stem in sorted(found, key=lambda s: _first_order(found[s])):
        places = found[stem]
        folders = sorted({(split, cls) for _, split, cls in places})
        if len(folders) > 1:
            shown = ", ".join(f"{split}/{cls}" for split, cls in folders)
            for path, _, _ in places:
                recorder.fail(
                    stem,
                    path,
                    f"image name {stem!r} is in several class or split folders ({shown}); refused in "
                    "all of them, since its label or split cannot be told (rename the files)",
                )
            logger.warning("%s %s dropped: name in %s", INFO.key, stem, shown)
            continue
        ordered = sorted(places, key=lambda place: (file_problem(place[0]) is not None, place[0].name))
        path, split, cls = ordered[0]
        for other, _, _ in ordered[1:]:
            recorder.note(stem, other, f"another file named {stem!r} in this folder: {path.name} is used")
        with recorder.subject(stem) as rows:
            rows.append(_read_image(root, path, split, cls))
    return recorder.rows, recorder.failures


def _first_order(places: list[tuple[Path, str, str]]) -> tuple[int, int, str]:
    """Reading order: split, then class, then file name (as the folders are walked)."""
    path, split, cls = min(places, key=lambda p: (list(SPLITS).index(p[1]), CLASSES.index(p[2]), p[0].name))
    return list(SPLITS).index(split), CLASSES.index(cls), path.name
