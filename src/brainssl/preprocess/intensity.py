"""Intensity normalisation within the brain: z-score, WhiteStripe, Nyúl–Udupa, clipping.

References:
    Shinohara RT et al., "Statistical normalization techniques for magnetic resonance
    imaging", NeuroImage: Clinical 6, 2014 (WhiteStripe).
    Nyúl LG, Udupa JK, Zhang X, "New variants of a method of MRI scale standardization",
    IEEE TMI 19(2), 2000 (piecewise-linear histogram standardisation).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from brainssl.io import write_json

__all__ = [
    "clip_percentiles",
    "zscore",
    "whitestripe",
    "NyulLandmarks",
    "fit_nyul",
    "apply_nyul",
    "WM_BRIGHT",
]

#: Contrasts in which white matter is the brightest brain tissue (WhiteStripe looks high).
WM_BRIGHT = ("T1w", "T1ce")

DEFAULT_PERCENTILES = (1.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 99.0)


def _brain_values(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if mask.shape != data.shape:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {data.shape}")
    values = data[mask.astype(bool)]
    if values.size < 10:
        raise ValueError(f"brain mask holds only {values.size} voxels")
    return values.astype(np.float64)


def clip_percentiles(data: np.ndarray, mask: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Clip intensities to the ``low``/``high`` percentiles of the voxels inside ``mask``.

    Args:
        data: (X, Y, Z) intensities.
        mask: (X, Y, Z) brain mask.
        low: lower percentile (0-100).
        high: upper percentile (0-100), greater than ``low``.

    Raises:
        ValueError: if the percentiles are out of order or the mask is (nearly) empty.
    """
    if not 0 <= low < high <= 100:
        raise ValueError(f"need 0 <= low < high <= 100, got {low}, {high}")
    lo, hi = np.percentile(_brain_values(data, mask), [low, high])
    return np.clip(data, lo, hi).astype(np.float32)


def zscore(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Return ``(data - mean) / std`` with the mean and std taken inside ``mask``.

    Raises:
        ValueError: if the brain intensities are constant.
    """
    values = _brain_values(data, mask)
    std = float(values.std())
    if std <= 0:
        raise ValueError("brain intensities are constant; cannot z-score")
    return ((data - values.mean()) / std).astype(np.float32)


def whitestripe(
    data: np.ndarray, mask: np.ndarray, wm_bright: bool = True, width: float = 0.05, bins: int = 256
) -> tuple[np.ndarray, dict[str, float]]:
    """Normalise by the normal-appearing white-matter "stripe" (Shinohara et al. 2014).

    The white-matter mode is the highest peak of a Gaussian-smoothed histogram of the upper
    half of brain intensities (``wm_bright``, T1-like) or of the lower half (T2-like). The
    stripe holds the brain voxels whose quantile is within ``width`` of the mode's quantile;
    the image is z-scored with the stripe's mean and std.

    Args:
        data: (X, Y, Z) intensities (bias corrected).
        mask: (X, Y, Z) brain mask.
        wm_bright: True for T1w/T1ce, False for T2w/FLAIR/PD.
        width: half-width of the stripe in quantile units.
        bins: histogram bins.

    Returns:
        ``(normalised, info)`` with info keys ``mode``, ``mean``, ``std``, ``quantile``.

    Raises:
        ValueError: if the stripe is degenerate (zero std).
    """
    values = _brain_values(data, mask)
    median = float(np.median(values))
    half = values[values >= median] if wm_bright else values[values <= median]
    hist, edges = np.histogram(half, bins=bins)
    smooth = ndimage.gaussian_filter1d(hist.astype(float), sigma=bins / 64)
    peak = int(np.argmax(smooth))
    mode = 0.5 * (edges[peak] + edges[peak + 1])
    quantile = float((values < mode).mean())
    lo, hi = np.quantile(values, [max(0.0, quantile - width), min(1.0, quantile + width)])
    stripe = values[(values >= lo) & (values <= hi)]
    std = float(stripe.std())
    if stripe.size < 10 or std <= 0:
        raise ValueError("white stripe is degenerate (too few voxels or zero spread)")
    mean = float(stripe.mean())
    info = {"mode": float(mode), "mean": mean, "std": std, "quantile": quantile}
    return ((data - mean) / std).astype(np.float32), info


@dataclass(frozen=True)
class NyulLandmarks:
    """Standard-scale landmarks of Nyúl–Udupa standardisation, fitted on training subjects.

    Attributes:
        percentiles: brain-intensity percentiles used as landmarks (first and last are the
            range ends ``pc1``/``pc2``), increasing.
        standard: the mean landmark positions on the standard scale (same length).
        scale: ``(s1, s2)``: where ``pc1`` and ``pc2`` are mapped.
        n_train: number of training images the landmarks were fitted on.
        contrast: the contrast they belong to (informational).
    """

    percentiles: tuple[float, ...]
    standard: tuple[float, ...]
    scale: tuple[float, float] = (0.0, 100.0)
    n_train: int = 0
    contrast: str = ""

    def to_dict(self) -> dict[str, object]:
        """Return the landmarks as plain JSON-able types."""
        return {
            "percentiles": list(self.percentiles),
            "standard": list(self.standard),
            "scale": list(self.scale),
            "n_train": self.n_train,
            "contrast": self.contrast,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> NyulLandmarks:
        """Rebuild landmarks from :meth:`to_dict` output."""
        return cls(
            percentiles=tuple(float(v) for v in data["percentiles"]),  # type: ignore[union-attr]
            standard=tuple(float(v) for v in data["standard"]),  # type: ignore[union-attr]
            scale=tuple(float(v) for v in data["scale"]),  # type: ignore[arg-type,union-attr]
            n_train=int(data["n_train"]),  # type: ignore[call-overload]
            contrast=str(data["contrast"]),
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the landmarks to a JSON file (atomically)."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NyulLandmarks:
        """Read landmarks written by :meth:`save`."""
        with open(path, encoding="utf-8") as handle:
            return cls.from_dict(json.load(handle))


def fit_nyul(
    images_and_masks: Sequence[tuple[np.ndarray, np.ndarray]],
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    scale: tuple[float, float] = (0.0, 100.0),
    contrast: str = "",
) -> NyulLandmarks:
    """Fit Nyúl–Udupa standard landmarks on TRAINING subjects only.

    Each training image's landmarks are mapped linearly so that its ``pc1``/``pc2``
    percentiles land on ``scale``; the standard landmarks are their means.

    Args:
        images_and_masks: ``(data (X, Y, Z), brain mask (X, Y, Z))`` per training image.
        percentiles: increasing landmark percentiles, at least 3 (e.g. 1, deciles, 99).
        scale: standard scale ``(s1, s2)``.
        contrast: stored with the landmarks.

    Raises:
        ValueError: with no training images or non-increasing percentiles.
    """
    pcs = np.asarray(percentiles, dtype=float)
    if len(images_and_masks) == 0:
        raise ValueError("fit_nyul needs at least one training image")
    if pcs.size < 3 or np.any(np.diff(pcs) <= 0):
        raise ValueError(f"percentiles must be >= 3 increasing values, got {list(percentiles)}")
    mapped = []
    for data, mask in images_and_masks:
        marks = np.percentile(_brain_values(data, mask), pcs)
        if marks[-1] <= marks[0]:
            raise ValueError("a training image has constant brain intensities")
        mapped.append(scale[0] + (marks - marks[0]) / (marks[-1] - marks[0]) * (scale[1] - scale[0]))
    standard = np.mean(mapped, axis=0)
    return NyulLandmarks(
        percentiles=tuple(float(p) for p in pcs),
        standard=tuple(float(s) for s in standard),
        scale=(float(scale[0]), float(scale[1])),
        n_train=len(images_and_masks),
        contrast=contrast,
    )


def apply_nyul(data: np.ndarray, mask: np.ndarray, landmarks: NyulLandmarks) -> np.ndarray:
    """Map an image onto the standard scale piecewise-linearly through its own landmarks.

    Intensities beyond the first/last landmark are extrapolated with the end segments' slopes.
    The landmarks are only read, never refitted, so evaluation images cannot move them.

    Raises:
        ValueError: if the image's landmarks are not strictly increasing (constant regions).
    """
    marks = np.percentile(_brain_values(data, mask), landmarks.percentiles)
    if np.any(np.diff(marks) <= 0):
        raise ValueError("image landmarks are not strictly increasing; cannot standardise")
    standard = np.asarray(landmarks.standard)
    out = np.interp(data, marks, standard)
    low_slope = (standard[1] - standard[0]) / (marks[1] - marks[0])
    high_slope = (standard[-1] - standard[-2]) / (marks[-1] - marks[-2])
    below, above = data < marks[0], data > marks[-1]
    out[below] = standard[0] + (data[below] - marks[0]) * low_slope
    out[above] = standard[-1] + (data[above] - marks[-1]) * high_slope
    return out.astype(np.float32)
