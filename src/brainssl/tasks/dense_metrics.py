"""Per-subject scores of dense predictions in 3D: Dice, HD95 (as MONAI defines it), BraTS regions.

Metrics per subject and region: Dice ``2|P & T| / (|P| + |T|)`` and HD95, the larger of the
two directed 95th percentiles of surface distances in mm (the definition of MONAI's
``compute_hausdorff_distance(percentile=95)``, against which the tests check it). When
truth and prediction are both empty the region is scored Dice 1 and HD95 0; when only one is
empty, Dice 0 and HD95 NaN (a distance to nothing is undefined), counted in the
per-subject table and left out of the HD95 mean (:func:`mean_or_nan`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["BRATS_REGIONS", "brats_regions", "dice_score", "hd95", "mean_or_nan", "subject_metrics"]

BRATS_REGIONS = {"wt": (1, 2, 4), "tc": (1, 4), "et": (4,)}
"""BraTS evaluation regions as sets of labels (0 background, 1 necrosis, 2 oedema, 4 enhancing)."""


def dice_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice overlap of two boolean masks; 1.0 when both are empty."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(pred, truth).sum()) / total


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of the mask with a face neighbour outside it (the array border counts as outside)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance between two masks' surfaces, in mm.

    Args:
        pred: boolean mask.
        truth: boolean mask of the same shape.
        spacing: voxel size per axis (mm).

    Returns:
        ``max(p95(d(P -> T)), p95(d(T -> P)))`` over surface voxels; 0 if both masks are
        empty, NaN if exactly one is.

    Raises:
        ValueError: for different shapes or a spacing of the wrong length.
    """
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    if len(spacing) != pred.ndim:
        raise ValueError(f"spacing {list(spacing)} does not match {pred.ndim} dimensions")
    if not pred.any() and not truth.any():
        return 0.0
    if not pred.any() or not truth.any():
        return math.nan
    pred_edge, truth_edge = _surface(pred), _surface(truth)
    to_truth = ndimage.distance_transform_edt(~truth_edge, sampling=spacing)[pred_edge]
    to_pred = ndimage.distance_transform_edt(~pred_edge, sampling=spacing)[truth_edge]
    return float(max(np.percentile(to_truth, 95), np.percentile(to_pred, 95)))


def brats_regions(labels: np.ndarray) -> np.ndarray:
    """BraTS label map ``(...)`` -> boolean regions ``(3, ...)`` in the order WT, TC, ET."""
    return np.stack([np.isin(labels, list(values)) for values in BRATS_REGIONS.values()])


def subject_metrics(
    pred_regions: np.ndarray, true_regions: np.ndarray, names: Sequence[str], spacing: Sequence[float]
) -> dict[str, float]:
    """Dice and HD95 of each region of one subject's stacked volume.

    Args:
        pred_regions: ``(K, Z, S, S)`` boolean predictions.
        true_regions: ``(K, Z, S, S)`` boolean truth.
        names: region names (``K``).
        spacing: ``(slice, row, column)`` mm.

    Returns:
        ``{"dice_<name>": .., "hd95_<name>": ..}``.
    """
    out = {}
    for k, name in enumerate(names):
        out[f"dice_{name}"] = dice_score(pred_regions[k], true_regions[k])
        out[f"hd95_{name}"] = hd95(pred_regions[k], true_regions[k], spacing)
    return out


def mean_or_nan(values: np.ndarray) -> float:
    """Mean over finite values; NaN when there are none (no warning)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return float(finite.mean()) if finite.size else math.nan
