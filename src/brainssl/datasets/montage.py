"""Montages: a quick visual check that each dataset holds brain MRI with sensible labels.

One PNG per dataset: a few subjects (rows) by contrast (columns), an axial
slice through the label (tumour, hippocampus) or mid-volume, reoriented to RAS
and shown in radiological convention (anterior up, patient left on the
right), with label contours on top.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import h5py
import matplotlib
import nibabel as nib
import numpy as np
import pandas as pd
from PIL import Image

from brainssl.datasets.layouts.base import axial_slice
from brainssl.datasets.manifest import CONTRASTS
from brainssl.io import atomic_path

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["save_montage", "display_slice"]

logger = logging.getLogger(__name__)

LABEL_COLOURS = {1: "#ff3b30", 2: "#ffd60a", 4: "#30d158"}


def _label_path(row: pd.Series) -> str:
    if row["seg_path"]:
        return str(row["seg_path"])
    return str(row["truth_hippocampus"])


def display_slice(row: pd.Series) -> tuple[np.ndarray, np.ndarray | None, float]:
    """Load one manifest row's display slice.

    Args:
        row: a manifest row.

    Returns:
        The 2D image (anterior up, patient left on the right), the label slice on the
        same pixels (or None), and the pixel aspect ratio (row spacing / column spacing).
    """
    path = Path(row["path"])
    label_file = _label_path(row)
    if row["format"] == "jpg":
        with Image.open(path) as handle:
            return np.asarray(handle.convert("L"), dtype=np.float32), None, 1.0
    if row["format"] == "fastmri_h5":
        with h5py.File(path, "r") as handle:
            stack = handle["reconstruction_rss"][()] if "reconstruction_rss" in handle else None
            if stack is None:
                stack = np.sqrt((np.abs(np.fft.ifft2(handle["kspace"][()])) ** 2).sum(1))
        label = np.asarray(nib.load(label_file).dataobj) if label_file else None
        k = stack.shape[0] // 2
        if label is not None and label.shape == stack.shape and label.any():
            k = int(round(np.nonzero(label)[0].mean()))
        aspect = float(row["voxel_y"] / row["voxel_x"]) if np.isfinite(row["voxel_x"]) else 1.0
        return stack[k], (label[k] if label is not None and label.shape == stack.shape else None), aspect
    img = nib.load(path)
    data = np.asarray(img.dataobj, dtype=np.float32)
    label = np.asarray(nib.load(label_file).dataobj) if label_file else None
    if label is not None and label.shape != data.shape:
        label = None
    image, k = axial_slice(data, img.affine, label)
    label_slice = axial_slice(label, img.affine, label)[0] if label is not None else None
    zooms = nib.as_closest_canonical(img).header.get_zooms()
    logger.debug("%s: slice %d", path, k)
    return image, label_slice, float(zooms[1] / zooms[0])


def _pick_subjects(manifest: pd.DataFrame, n_subjects: int) -> list[str]:
    order = manifest.sort_values(["native_id", "session"], kind="stable")
    if (order["tumor_class"] != "").any():  # one subject per class first, every class shown
        first = order.drop_duplicates("tumor_class")["subject"].tolist()
        rest = [s for s in order["subject"].drop_duplicates() if s not in first]
        return (first + rest)[: max(n_subjects, len(first))]
    return order["subject"].drop_duplicates().tolist()[:n_subjects]


def _draw(ax: Any, image: np.ndarray, label: np.ndarray | None, aspect: float) -> None:
    hi = float(np.percentile(image, 99.5)) or 1.0
    ax.imshow(image, cmap="gray", vmin=0.0, vmax=hi, aspect=aspect, interpolation="bilinear")
    if label is not None:
        for value, colour in LABEL_COLOURS.items():
            if (label == value).any():
                ax.contour(label == value, levels=[0.5], colors=[colour], linewidths=0.8)


def save_montage(dataset: str, manifest: pd.DataFrame, out_png: Path, n_subjects: int = 3) -> Any:
    """Save a subjects-by-contrast montage of one dataset as PNG.

    Args:
        dataset: dataset key (rows of other datasets are ignored).
        manifest: a manifest holding the dataset's rows.
        out_png: destination PNG.
        n_subjects: how many subjects (rows); a dataset with classes (``tumor_class``) shows
            at least one subject of every class.

    Returns:
        The (closed) matplotlib figure, for inspection.

    Raises:
        ValueError: if the manifest has no rows of ``dataset`` or ``n_subjects`` < 1.
    """
    if n_subjects < 1:
        raise ValueError(f"n_subjects must be >= 1, got {n_subjects}")
    rows = manifest[manifest["dataset"] == dataset]
    if rows.empty:
        raise ValueError(f"manifest has no rows of dataset {dataset!r}")
    subjects = _pick_subjects(rows, n_subjects)
    present = set(rows["contrast"])
    columns = [m for m in CONTRASTS if m in present] or [""]
    if dataset in ("tumor4", "fastmri_brain"):  # one image per subject: a single column
        columns = ["image"]
    cells = [(subject, column) for subject in subjects for column in columns]
    n_rows, n_cols = (1, len(subjects)) if columns == ["image"] else (len(subjects), len(columns))
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(max(2.4 * n_cols, 6.0), 2.6 * n_rows), squeeze=False, facecolor="black"
    )
    for ax, (subject, column) in zip(axes.ravel(), cells, strict=True):
        ax.set_axis_off()
        mine = rows[rows["subject"] == subject].sort_values(["session", "path"], kind="stable")
        first_session = mine[mine["session"] == mine["session"].iloc[0]]
        hit = first_session if column == "image" else first_session[first_session["contrast"] == column]
        if hit.empty:
            continue
        row = hit.iloc[0]
        image, label, aspect = display_slice(row)
        _draw(ax, image, label, aspect)
        ax.set_title(
            f"{row['native_id']}\n{row['tumor_class'] or row['contrast']}", color="white", fontsize=7
        )
    fig.suptitle(f"{dataset}: axial slices, radiological view, label contours", color="white", fontsize=9)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110, facecolor="black")
    plt.close(fig)
    return fig
