"""Quality control of one preprocessed session: numbers, a picture and flags."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import ndimage

from brainssl.io import atomic_path

from .settings import QCRules

__all__ = ["dice", "snr_estimate", "bias_strength", "touches_fov", "qc_record", "qc_png", "qc_flags"]

# For Rician magnitude data with no signal (air) the values are Rayleigh distributed:
# std = sigma * sqrt(2 - pi / 2), so sigma = std / 0.655.
_RAYLEIGH_STD = math.sqrt(2.0 - math.pi / 2.0)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks of one shape (1.0 when both are empty).

    Raises:
        ValueError: if the shapes differ.
    """
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    a, b = a.astype(bool), b.astype(bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


def snr_estimate(data: np.ndarray, brain: np.ndarray, head: np.ndarray, min_air_voxels: int = 500) -> float:
    """Mean brain signal over the noise sigma estimated from background air (Rician corrected).

    Air is everything outside the head mask dilated by 2 voxels, excluding exact zeros
    (padding from resampling or defacing). Its std is divided by ``sqrt(2 - pi/2)``, the
    Rayleigh factor, to estimate the Gaussian noise sigma of the complex data.

    Args:
        data: (X, Y, Z) intensities before normalisation.
        brain: (X, Y, Z) brain mask.
        head: (X, Y, Z) head (foreground) mask.
        min_air_voxels: below this many air voxels the estimate is ``NaN``.
    """
    air = ~ndimage.binary_dilation(head, iterations=2) & (data != 0) & np.isfinite(data)
    if int(air.sum()) < min_air_voxels or not brain.any():
        return float("nan")
    sigma = float(data[air].std()) / _RAYLEIGH_STD
    return float("inf") if sigma == 0 else float(data[brain].mean()) / sigma


def bias_strength(field: np.ndarray, brain: np.ndarray) -> float:
    """Std of the log bias field inside the brain (0 for a flat field)."""
    values = field[brain.astype(bool)]
    values = values[values > 0]
    return float(np.log(values).std()) if values.size else float("nan")


def touches_fov(mask: np.ndarray) -> bool:
    """Whether the mask reaches any face of the array (the brain may be cut off)."""
    faces = [mask[0], mask[-1], mask[:, 0], mask[:, -1], mask[:, :, 0], mask[:, :, -1]]
    return any(bool(face.any()) for face in faces)


def qc_record(
    data: np.ndarray,
    brain: np.ndarray,
    head: np.ndarray,
    voxel_ml: float,
    field: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    seconds: Mapping[str, float] | None = None,
    fov_contact: bool | None = None,
) -> dict[str, Any]:
    """Return the QC numbers of one session (all JSON-able).

    Args:
        data: (X, Y, Z) reference intensities after bias correction, before normalisation,
            on the uncropped grid (so that air is present).
        brain: (X, Y, Z) brain mask on that grid.
        head: (X, Y, Z) head mask on that grid.
        voxel_ml: volume of one voxel in ml.
        field: (X, Y, Z) multiplicative bias field, when estimated.
        truth: (X, Y, Z) ground-truth brain mask, when known.
        seconds: seconds per step.
        fov_contact: whether the mask touches the field of view; computed from ``brain`` when
            ``None``.

    Returns:
        Keys ``brain_ml``, ``snr``, ``bias_std``, ``dice`` (``None`` without truth),
        ``mask_touches_fov``, ``seconds`` and ``seconds_total``.
    """
    seconds = dict(seconds or {})
    return {
        "brain_ml": float(brain.sum()) * voxel_ml,
        "snr": snr_estimate(data, brain, head),
        "bias_std": bias_strength(field, brain) if field is not None else None,
        "dice": dice(brain, truth) if truth is not None else None,
        "mask_touches_fov": touches_fov(brain) if fov_contact is None else bool(fov_contact),
        "seconds": seconds,
        "seconds_total": float(sum(seconds.values())),
    }


def qc_flags(record: Mapping[str, Any], rules: QCRules | None = None) -> list[str]:
    """Return the reasons (empty when none) why a session's QC record looks wrong.

    Args:
        record: a :func:`qc_record` dict.
        rules: thresholds.
    """
    rules = rules or QCRules()
    flags: list[str] = []
    low, high = rules.brain_ml
    volume = record.get("brain_ml")
    if volume is not None and not low <= volume <= high:
        flags.append(f"brain volume {volume:.0f} ml outside [{low:.0f}, {high:.0f}] ml")
    if record.get("mask_touches_fov") and not rules.allow_fov_contact:
        flags.append("brain mask touches the field of view")
    snr = record.get("snr")
    if snr is not None and not math.isnan(snr) and snr < rules.min_snr:
        flags.append(f"SNR {snr:.1f} below {rules.min_snr:.1f}")
    bias = record.get("bias_std")
    if bias is not None and not math.isnan(bias) and bias > rules.max_bias_std:
        flags.append(f"bias field std {bias:.2f} above {rules.max_bias_std:.2f}")
    overlap = record.get("dice")
    if overlap is not None and overlap < rules.min_dice:
        flags.append(f"mask Dice {overlap:.3f} below {rules.min_dice:.3f}")
    return flags


def qc_png(
    path: str | os.PathLike[str],
    data: np.ndarray,
    mask: np.ndarray,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    title: str = "",
) -> None:
    """Save three orthogonal views through the mask's centre with the mask outline.

    Uses matplotlib's object API with the Agg canvas (no global backend switch) and writes
    through :func:`brainssl.io.atomic_path`.

    Args:
        path: destination ``.png``.
        data: (X, Y, Z) RAS intensities.
        mask: (X, Y, Z) brain mask.
        spacing: voxel size, for the aspect ratio.
        title: figure title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    centre = (
        [int(round(c)) for c in ndimage.center_of_mass(mask)] if mask.any() else [n // 2 for n in mask.shape]
    )
    finite = data[np.isfinite(data)]
    vmin, vmax = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
    views = [
        ("sagittal", data[centre[0]].T, mask[centre[0]].T, spacing[2] / spacing[1]),
        ("coronal", data[:, centre[1]].T, mask[:, centre[1]].T, spacing[2] / spacing[0]),
        ("axial", data[:, :, centre[2]].T, mask[:, :, centre[2]].T, spacing[1] / spacing[0]),
    ]
    figure = Figure(figsize=(9, 3.4), dpi=100)
    FigureCanvasAgg(figure)
    for index, (name, plane, outline, aspect) in enumerate(views):
        axes = figure.add_subplot(1, 3, index + 1)
        axes.imshow(plane, cmap="gray", origin="lower", vmin=vmin, vmax=vmax, aspect=aspect)
        if outline.any() and not outline.all():
            axes.contour(outline.astype(float), levels=[0.5], colors="red", linewidths=0.8)
        axes.set_title(name, fontsize=9)
        axes.set_axis_off()
    if title:
        figure.suptitle(title, fontsize=9)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
