"""Acquisition effects: bias field, thick slices, Rician noise, site scaling, orientation, k-space."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from nibabel import orientations

from brainssl.synth.anatomy import smooth_field

logger = logging.getLogger(__name__)

__all__ = [
    "SITE_SCALING",
    "Acquisition",
    "block_mean",
    "block_centre",
    "reorient",
    "rician",
    "simulate_kspace",
]

# site: (intensity scale, additive offset) applied after noise, as scanners and
# reconstruction pipelines do; sites beyond these three reuse them cyclically.
SITE_SCALING: tuple[tuple[float, float], ...] = ((1000.0, 0.0), (780.0, 25.0), (1350.0, 60.0))


@dataclass(frozen=True)
class Acquisition:
    """How one subject was scanned."""

    site_index: int
    snr: float
    thick_axis: int | None  # grid axis acquired with thick slices, or None
    thick_factor: int
    orientation: str  # axis codes of the stored array ("RAS", "LPS", ...) or "oblique"
    axcodes: str  # axis codes actually applied to the array


def bias_field(shape: tuple[int, int, int], rng: np.random.Generator, strength: float = 0.2) -> np.ndarray:
    """Smooth multiplicative field exp(f), f a low-order cosine field of RMS ``strength``; float32."""
    return np.exp(smooth_field(shape, rng, order=3, amplitude=strength)).astype(np.float32)


def block_mean(vol: np.ndarray, axis: int | None, factor: int) -> np.ndarray:
    """Average ``factor`` consecutive slices along ``axis`` (thick-slice partial volume)."""
    if axis is None or factor == 1:
        return vol
    n = vol.shape[axis] // factor
    cut = np.take(vol, np.arange(n * factor), axis=axis)
    shape = list(cut.shape)
    shape[axis : axis + 1] = [n, factor]
    return cut.reshape(shape).mean(axis=axis + 1, dtype=np.float32)


def block_centre(vol: np.ndarray, axis: int | None, factor: int) -> np.ndarray:
    """Keep the centre slice of each block of ``factor`` slices (labels of thick slices)."""
    if axis is None or factor == 1:
        return vol
    n = vol.shape[axis] // factor
    return np.take(vol, np.arange(n) * factor + factor // 2, axis=axis)


def thick_affine(affine: np.ndarray, axis: int | None, factor: int) -> np.ndarray:
    """Affine of the thick-slice grid: voxel j covers fine voxels factor*j .. factor*j + factor - 1."""
    out = affine.copy()
    if axis is None or factor == 1:
        return out
    out[:3, 3] = affine[:3, 3] + affine[:3, axis] * (factor - 1) / 2.0
    out[:3, axis] = affine[:3, axis] * factor
    return out


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of std ``sigma`` per channel; float32."""
    real = signal + rng.standard_normal(signal.shape, dtype=np.float32) * np.float32(sigma)
    imag = rng.standard_normal(signal.shape, dtype=np.float32) * np.float32(sigma)
    return np.sqrt(real * real + imag * imag)


def reorient(affine: np.ndarray, shape: tuple[int, ...], axcodes: str) -> tuple[np.ndarray, np.ndarray]:
    """Orientation transform that stores a grid in ``axcodes`` order, and the matching affine.

    Args:
        affine: (4, 4) affine of the grid as synthesised.
        shape: its shape.
        axcodes: target axis codes, e.g. "LPS".

    Returns:
        (ornt for :func:`nibabel.orientations.apply_orientation`, new (4, 4) affine).
    """
    start = orientations.io_orientation(affine)
    ornt = orientations.ornt_transform(start, orientations.axcodes2ornt(tuple(axcodes)))
    new_affine = affine @ orientations.inv_ornt_aff(ornt, shape)
    return ornt, new_affine


def _coil_maps(
    shape: tuple[int, int], n_coils: int, rng: np.random.Generator, top: int = 0, rows: int | None = None
) -> np.ndarray:
    """Smooth complex coil sensitivities around the head, normalised to sum |S|^2 = 1.

    Coordinates run from -1 to 1 over the ``rows`` image rows starting at row ``top`` (the
    reconstructed field of view) and over all columns; rows outside it (a readout-oversampled
    grid) continue the same coordinates, so the maps inside the field of view do not depend
    on the oversampling.
    """
    ny, nx = shape
    rows = ny if rows is None else rows
    y_axis = -1.0 + 2.0 * (np.arange(ny) - top) / max(rows - 1, 1)
    y, x = np.meshgrid(y_axis, np.linspace(-1, 1, nx), indexing="ij")
    angles = 2 * np.pi * (np.arange(n_coils) / n_coils + rng.uniform(0, 1.0 / n_coils))
    maps = np.empty((n_coils, ny, nx), dtype=np.complex64)
    for c, a in enumerate(angles):
        cy, cx = 1.3 * np.sin(a), 1.3 * np.cos(a)
        width = rng.uniform(0.7, 1.1)
        mag = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * width**2))
        phase = rng.uniform(-np.pi, np.pi) + rng.normal(0, 1.0) * x + rng.normal(0, 1.0) * y
        maps[c] = mag * np.exp(1j * phase)
    return maps / np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))


def simulate_kspace(
    image: np.ndarray, n_coils: int, rng: np.random.Generator, readout_oversampling: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """fastMRI-style multi-coil k-space for a stack of 2D axial slices.

    Coil images are the slice times smooth synthetic coil sensitivities (normalised so that
    their root-sum-of-squares is one), transformed with a centred orthonormal 2D FFT. With
    ``readout_oversampling`` ``r > 1`` the rows (the readout axis, ``ky`` here as in fastMRI's
    arrays) cover ``r`` times the field of view, as a scanner's oversampled readout does: the
    slice sits in the centre rows of an ``r * ky`` grid (the outer rows hold no signal), so
    ``kspace`` has ``r * ky`` rows, and ``rss`` is the RSS of the coil images centre-cropped to
    the slice's ``(ky, kx)``, as fastMRI's ``reconstruction_rss`` is (640 x 320 k-space, 320 x
    320 target in the brain files).

    Args:
        image: (slices, ky, kx) real magnitude images.
        n_coils: number of receive coils (>= 1).
        rng: generator for the coil geometry (the same draws for any oversampling).
        readout_oversampling: rows of k-space per image row (>= 1).

    Returns:
        (kspace complex64 (slices, coils, r * ky, kx), rss float32 (slices, ky, kx)); the RSS of
        the coil images (centred orthonormal ifft2 of ``kspace``), centre-cropped as fastMRI
        crops (start row ``(r * ky - ky) // 2``), equals ``rss``.

    Raises:
        ValueError: if ``image`` is not 3D, ``n_coils`` < 1 or ``readout_oversampling`` < 1.
    """
    if image.ndim != 3:
        raise ValueError(f"image must be (slices, ky, kx), got shape {image.shape}")
    if n_coils < 1:
        raise ValueError(f"n_coils must be >= 1, got {n_coils}")
    if readout_oversampling < 1:
        raise ValueError(f"readout_oversampling must be >= 1, got {readout_oversampling}")
    z, ny, nx = image.shape
    rows = readout_oversampling * ny
    top = (rows - ny) // 2
    maps = _coil_maps((rows, nx), n_coils, rng, top=top, rows=ny)
    padded = np.zeros((z, rows, nx), dtype=np.float32)
    padded[:, top : top + ny] = image
    kspace = fft2c(padded[:, None] * maps[None]).astype(np.complex64)
    rss = np.sqrt((np.abs(ifft2c(kspace)) ** 2).sum(1))[:, top : top + ny]
    return kspace, np.ascontiguousarray(rss, dtype=np.float32)


def fft2c(x: np.ndarray) -> np.ndarray:
    """Centred orthonormal 2D FFT over the last two axes."""
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def ifft2c(k: np.ndarray) -> np.ndarray:
    """Centred orthonormal 2D inverse FFT over the last two axes."""
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
