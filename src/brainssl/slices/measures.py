"""Cutting, intensity mapping and per-slice measures (pure functions on arrays).

Intensity mapping (stored in every index as ``intensity_mapping``): for each volume, the
``lo``/``hi`` percentiles of the brain voxels (non-zero voxels when there is no mask) are
mapped linearly to 0 and 1 and clipped; every voxel outside the brain is 0. ``uint8`` stores
``round(255 * value)``, ``float16`` stores the value. Slices are shown in radiological
convention (anterior up, patient right on the image's left): ``image = volume[::-1, ::-1, k].T``
for a RAS volume. Each slice is zero-padded to a centred square, then resized to the
configured side with bilinear, antialiased ``torch.nn.functional.interpolate`` (labels and
masks: nearest neighbour).

Measures (all on the stored square slice, so they can be recomputed from the store):

- entropy: Shannon entropy in bits, ``-sum p log2 p`` over a histogram of ``bins`` equal
  bins on [0, 1] of the pixels of the chosen region;
- position: ``(k - k_lo) / (k_hi - k_lo)`` with ``k_lo``/``k_hi`` the lowest/highest axial
  slice holding brain (outside the brain it is < 0 or > 1; NaN for 2D images);
- area: brain pixels / all pixels of the stored square.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "INTENSITY_MAPPING",
    "brain_positions",
    "map_intensity",
    "position_keep",
    "radiological",
    "slice_entropy",
    "square_resize",
    "to_store_dtype",
]

INTENSITY_MAPPING = (
    "per volume: brain-voxel percentiles (lo, hi) -> [0, 1], clipped; background 0; "
    "uint8 = round(255 * value); radiological view; zero-pad to square, bilinear antialiased resize"
)
POSITION_TOLERANCE = 1e-9


def map_intensity(
    volume: np.ndarray, brain: np.ndarray | None, percentiles: tuple[float, float]
) -> np.ndarray:
    """Map a volume's intensities to [0, 1] from brain percentiles; background becomes 0.

    Args:
        volume: image of any shape (3D volume ``(X, Y, Z)`` or 2D image).
        brain: boolean mask of the same shape, or ``None`` to use the non-zero voxels.
        percentiles: ``(lo, hi)`` percentiles mapped to 0 and 1.

    Returns:
        float32 array of ``volume``'s shape, values in [0, 1].

    Raises:
        ValueError: if the mask's shape differs from the volume's.
    """
    data = np.asarray(volume, dtype=np.float32)
    region = (data != 0) if brain is None else np.asarray(brain, dtype=bool)
    if region.shape != data.shape:
        raise ValueError(f"mask shape {region.shape} differs from volume shape {data.shape}")
    if not region.any():
        return np.zeros_like(data)
    lo, hi = np.percentile(data[region], percentiles)
    scale = 1.0 / (hi - lo) if hi > lo else 0.0
    out = np.clip((data - lo) * scale, 0.0, 1.0)
    out[~region] = 0.0
    return out.astype(np.float32)


def radiological(volume: np.ndarray) -> np.ndarray:
    """Turn a RAS volume ``(X, Y, Z)`` into axial images ``(Z, rows=A->P, cols=R->L)``."""
    if volume.ndim != 3:
        raise ValueError(f"expected a 3D RAS volume, got shape {volume.shape}")
    return np.ascontiguousarray(np.transpose(volume[::-1, ::-1, :], (2, 1, 0)))


def square_resize(images: np.ndarray, size: int, *, label: bool = False) -> np.ndarray:
    """Zero-pad a stack of images to centred squares and resize them to ``size``.

    Args:
        images: ``(N, H, W)`` stack.
        size: output side.
        label: nearest-neighbour (labels, masks) instead of bilinear antialiased.

    Returns:
        ``(N, size, size)`` float32 (label: the input dtype).
    """
    if images.ndim != 3:
        raise ValueError(f"expected (N, H, W) images, got shape {images.shape}")
    n, h, w = images.shape
    side = max(h, w)
    padded = np.zeros((n, side, side), dtype=images.dtype)
    top, left = (side - h) // 2, (side - w) // 2
    padded[:, top : top + h, left : left + w] = images
    if side == size:
        return padded if label else padded.astype(np.float32)
    tensor = torch.from_numpy(padded.astype(np.float32)).unsqueeze(1)
    if label:
        out = F.interpolate(tensor, size=(size, size), mode="nearest")
        return out.squeeze(1).numpy().astype(images.dtype)
    out = F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.squeeze(1).clamp_(0.0, 1.0).numpy()


def to_store_dtype(images: np.ndarray, dtype: str) -> np.ndarray:
    """Quantise [0, 1] float images to the store's dtype (``uint8`` or ``float16``)."""
    if dtype == "uint8":
        return np.rint(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)
    if dtype == "float16":
        return np.clip(images, 0.0, 1.0).astype(np.float16)
    raise ValueError(f"unknown store dtype {dtype!r} (uint8 or float16)")


def slice_entropy(images: np.ndarray, regions: np.ndarray | None, bins: int) -> np.ndarray:
    """Shannon entropy (bits) of each image's intensity histogram within a region.

    Args:
        images: ``(N, H, W)`` stored slices (uint8 read as value/255, float in [0, 1]).
        regions: ``(N, H, W)`` boolean pixels to count, or ``None`` for all pixels.
        bins: equal-width bins on [0, 1].

    Returns:
        ``(N,)`` float64 entropies; 0 for an empty region.
    """
    values = images.astype(np.float64) / 255.0 if images.dtype == np.uint8 else images.astype(np.float64)
    flat = values.reshape(len(values), -1)
    index = np.minimum((flat * bins).astype(np.int64), bins - 1)
    weight = np.ones_like(flat) if regions is None else regions.reshape(len(values), -1).astype(np.float64)
    keys = index + (np.arange(len(values)) * bins)[:, None]
    counts = np.bincount(keys.ravel(), weights=weight.ravel(), minlength=len(values) * bins)
    counts = counts.reshape(len(values), bins)
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(totals > 0, counts / np.where(totals > 0, totals, 1), 0.0)
        terms = np.where(p > 0, -p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    return terms.sum(axis=1)


def brain_positions(brain_per_slice: np.ndarray) -> np.ndarray:
    """Relative inferior-superior position of each axial slice from the brain's extent.

    Args:
        brain_per_slice: ``(Z,)`` brain voxel count (or boolean) per axial slice, inferior first.

    Returns:
        ``(Z,)`` float64: 0 at the lowest brain slice, 1 at the highest; NaN if no brain.
    """
    has = np.flatnonzero(np.asarray(brain_per_slice) > 0)
    z = np.arange(len(brain_per_slice), dtype=np.float64)
    if has.size == 0:
        return np.full(len(z), np.nan)
    lo, hi = has[0], has[-1]
    return (z - lo) / max(hi - lo, 1)


def position_keep(positions: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Inclusive window test on positions (tolerance 1e-9); NaN (2D images) passes."""
    pos = np.asarray(positions, dtype=np.float64)
    inside = (pos >= window[0] - POSITION_TOLERANCE) & (pos <= window[1] + POSITION_TOLERANCE)
    return np.where(np.isnan(pos), True, inside)
