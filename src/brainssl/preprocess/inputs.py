"""A session's input images, read from its manifest rows (:func:`_session_inputs`).

Split from :mod:`brainssl.preprocess.session` because both the shard job
(:mod:`brainssl.preprocess.shard_job`) and the landmark fit (:mod:`brainssl.preprocess.cohort`)
read sessions the same way: NIfTI or fastMRI HDF5 images, an optional ground-truth brain mask
and optional segmentations. An unreadable file becomes a :class:`PreprocessError` naming it.
"""

from __future__ import annotations

import math
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from .session import PreprocessError


def _load(path: str) -> nib.spatialimages.SpatialImage:
    try:
        img = nib.load(path)
        np.asanyarray(img.dataobj)  # force the read: a truncated file fails here, not later
    except Exception as err:  # nibabel raises many kinds (ImageFileError, EOFError, zlib.error, OSError)
        raise PreprocessError(f"unreadable file {path}: {type(err).__name__}: {err}") from err
    return img


def _load_fastmri(path: str) -> nib.Nifti1Image:
    from brainssl.datasets.layouts.errors import SubjectError
    from brainssl.datasets.layouts.fastmri import load_rss

    try:
        return load_rss(path)
    except SubjectError as err:
        raise PreprocessError(f"unreadable file {path}: {err.reason}") from err


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _session_inputs(group: pd.DataFrame) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    images: dict[str, Any] = {}
    truth_paths: list[str] = []
    seg_paths: dict[str, str] = {}
    stack_affine = None
    for row in group.itertuples(index=False):
        kind = _text(getattr(row, "format", "nifti")) or "nifti"
        if kind not in ("nifti", "fastmri_h5"):
            raise PreprocessError(f"unsupported format {row.format!r} for {row.path}")
        if row.contrast in images:
            raise PreprocessError(f"contrast {row.contrast} listed twice in session")
        images[row.contrast] = _load(row.path) if kind == "nifti" else _load_fastmri(row.path)
        if kind == "fastmri_h5":
            stack_affine = images[row.contrast].affine
        truth = _text(getattr(row, "truth_brain_mask", ""))
        if truth:
            truth_paths.append(truth)
        seg = _text(getattr(row, "seg_path", ""))
        if seg and seg not in seg_paths.values():
            seg_paths[row.contrast] = seg
    truth_img = _load(truth_paths[0]) if truth_paths else None
    if truth_img is not None and stack_affine is not None:
        # fastMRI truth indexes like reconstruction_rss: give it the stack's header-built affine
        truth_img = nib.Nifti1Image(np.asarray(truth_img.dataobj), stack_affine)
    labels = {contrast: _load(path) for contrast, path in seg_paths.items()}
    return images, truth_img, labels
