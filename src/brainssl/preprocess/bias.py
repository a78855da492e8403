"""N4 bias-field correction on a shrunk image, applied with the full-resolution field.

Tustison NJ et al., "N4ITK: Improved N3 Bias Correction", IEEE TMI 29(6), 2010. The
field is a smooth B-spline, so fitting it on an image shrunk by 4 loses nothing that
matters and is ~shrink^3 cheaper; ``GetLogBiasFieldAsImage`` then evaluates the fitted
B-spline on the full-resolution grid.

The fit and its evaluation run on :data:`~brainssl.preprocess.spatial.FIT_THREADS` ITK
threads whatever the job's thread count: N4's B-spline fit splits its work by ITK's global
default thread count, and its field differs in the last bits between counts.
"""

from __future__ import annotations

import logging
import time

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .spatial import FIT_THREADS, fixed_itk_threads, from_sitk, to_sitk

__all__ = ["n4_correct", "head_mask"]

logger = logging.getLogger(__name__)


def head_mask(data: np.ndarray) -> np.ndarray:
    """Return a rough foreground (head) mask: Otsu threshold, largest component, holes filled.

    Args:
        data: (X, Y, Z) intensities.

    Returns:
        Boolean (X, Y, Z) mask; all True when no foreground can be separated.
    """
    values = data[np.isfinite(data)]
    positive = values[values > 0]
    if positive.size < 10:
        return np.ones(data.shape, dtype=bool)
    threshold = _otsu(np.clip(positive, 0, np.percentile(positive, 99.5)))
    mask = data > threshold * 0.5
    mask = ndimage.binary_opening(mask, iterations=1)
    labels, count = ndimage.label(mask)
    if count == 0:
        return np.ones(data.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    mask = labels == int(sizes.argmax())
    mask = ndimage.binary_closing(mask, iterations=2)
    return _fill_holes(mask)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    filled = ndimage.binary_fill_holes(mask)
    for axis in range(3):  # slice-wise as well: a head open at the neck is not closed in 3D
        filled |= np.stack([ndimage.binary_fill_holes(s) for s in np.moveaxis(filled, axis, 0)], axis=axis)
    return filled


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    hist, edges = np.histogram(values, bins=bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    weight0 = np.cumsum(hist)
    weight1 = weight0[-1] - weight0
    mean0 = np.cumsum(hist * centres) / np.maximum(weight0, 1)
    total = (hist * centres).sum()
    mean1 = (total - np.cumsum(hist * centres)) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return float(centres[int(np.argmax(between))])


def n4_correct(
    img: nib.spatialimages.SpatialImage,
    mask: np.ndarray | None = None,
    shrink: int = 4,
    iterations: tuple[int, ...] = (50, 50, 30),
    convergence: float = 1e-3,
    control_points: int = 4,
) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """Correct a multiplicative bias field with N4 fitted on a shrunk copy.

    Args:
        img: 3D nibabel image (non-negative intensities; negatives are clipped to 0).
        mask: (X, Y, Z) boolean region the field is fitted on; default :func:`head_mask`.
        shrink: integer shrink factor of the fitting image (1 = full resolution).
        iterations: maximum iterations per fitting level.
        convergence: convergence threshold.
        control_points: initial control points per axis (at least 4 for cubic B-splines).

    Returns:
        ``(corrected, field)``: the corrected image (float32) and the multiplicative bias field
        (float32, ``corrected = img / field``), both on ``img``'s grid.

    Raises:
        ValueError: if ``mask`` does not match the image shape or is empty, or ``shrink`` < 1.
    """
    start = time.perf_counter()
    data = np.nan_to_num(np.asarray(img.dataobj, dtype=np.float32))
    data = np.maximum(data, 0.0)
    if mask is None:
        mask = head_mask(data)
    if mask.shape != data.shape:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {data.shape}")
    if not mask.any():
        raise ValueError("N4 mask is empty")
    if shrink < 1:
        raise ValueError(f"shrink must be >= 1, got {shrink}")
    image = to_sitk((data, img.affine), dtype=np.float32)
    mask_image = to_sitk((mask.astype(np.uint8), img.affine), dtype=np.uint8)
    small, small_mask = image, mask_image
    if shrink > 1:
        factors = [shrink] * 3
        small = sitk.Shrink(image, factors)
        small_mask = sitk.Shrink(mask_image, factors)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([int(i) for i in iterations])
    corrector.SetConvergenceThreshold(convergence)
    corrector.SetNumberOfControlPoints([control_points] * 3)
    corrector.SetNumberOfThreads(FIT_THREADS)
    corrector.SetNumberOfWorkUnits(FIT_THREADS)
    with fixed_itk_threads():
        corrector.Execute(small, small_mask)
        log_field = corrector.GetLogBiasFieldAsImage(image)
    log_data, _ = from_sitk(log_field)
    field = np.exp(log_data).astype(np.float32)
    corrected = (data / field).astype(np.float32)
    logger.debug("N4 (shrink %d) on %s in %.2f s", shrink, data.shape, time.perf_counter() - start)
    return nib.Nifti1Image(corrected, img.affine), nib.Nifti1Image(field, img.affine)
