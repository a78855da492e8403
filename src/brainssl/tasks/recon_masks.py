"""fastMRI's Cartesian under-sampling masks, each file's mask seed, and the zero-filled image.

Masks, as fastMRI (facebookresearch/fastMRI v0.3.0, ``fastmri/data/subsample.py``) names them: a
fully sampled centre of ``round(n * centre_fraction)`` columns (the phase-encoding axis, the last
axis of ``kspace``) plus

- ``random`` (``RandomMaskFunc``): every column with probability
  ``(n / acceleration - n_low) / (n - n_low)``;
- ``equispaced`` (``EquiSpacedMaskFunc``): every ``acceleration``-th column from a random offset
  (with the centre, more than ``n / acceleration`` columns);
- ``equispaced_fraction`` (``EquispacedMaskFractionFunc``): columns at a spacing adjusted so that,
  with the centre, about ``n / acceleration`` are kept, from a random offset. brainssl called this
  one ``equispaced`` before; a config that means it must now say ``equispaced_fraction``.

The draws are fastMRI's: a legacy ``numpy.random.RandomState`` seeded for the call, which first
draws the index of the (centre fraction, acceleration) pair, then the columns or the offset. So
:func:`cartesian_mask` with seed ``s`` is ``MaskFunc([centre_fraction], [acceleration])(shape,
seed=s)``. Each file's seed is fastMRI's own per-file rule (:func:`mask_seed`:
``tuple(map(ord, file_name))``, as its ``UnetDataTransform``/``VarNetDataTransform`` with
``use_seed=True`` seed the masks of validation and test files), so every slice of a file shares
one mask, the same for training and test files, and it is exactly the mask fastMRI gives that file.

The zero-filled image (:func:`zero_filled`) is the root-sum-of-squares over coils of the centred
orthonormal inverse FFT of the masked k-space, centre-cropped to the RSS target. The task that
uses them is :mod:`brainssl.tasks.reconstruction`; these need neither torch nor h5py.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from brainssl.synth.acquisition import ifft2c

__all__ = ["MASK_KINDS", "cartesian_mask", "mask_seed", "zero_filled"]

MASK_KINDS = ("random", "equispaced", "equispaced_fraction")


def mask_seed(file_name: str) -> tuple[int, ...]:
    """The per-file mask seed of fastMRI: the code points of the file's name, ``tuple(map(ord, name))``.

    The rule of ``fastmri/data/transforms.py`` (``UnetDataTransform``, ``VarNetDataTransform``
    with ``use_seed=True``), where the name is the HDF5 file's (``file_brain_AXT2_200_2000019.h5``).
    """
    return tuple(map(ord, file_name))


def cartesian_mask(
    kind: str,
    n_cols: int,
    acceleration: int,
    centre_fraction: float,
    seed: int | Sequence[int] | None,
) -> np.ndarray:
    """The column mask ``(n_cols,)`` (True = sampled) fastMRI draws for one seed.

    Equal to ``RandomMaskFunc``, ``EquiSpacedMaskFunc`` or ``EquispacedMaskFractionFunc`` of
    ``fastmri.data.subsample`` built with ``([centre_fraction], [acceleration])`` and called on a
    k-space of ``n_cols`` columns with ``seed=seed``: a ``RandomState(seed)`` first draws the pair
    index (``randint(1)``, as fastMRI's ``choose_acceleration`` does), then the columns or offset.

    Args:
        kind: ``random``, ``equispaced`` or ``equispaced_fraction``.
        n_cols: k-space columns.
        acceleration: nominal acceleration (2, 4, 8 ...).
        centre_fraction: share of fully sampled centre columns (fastMRI: 0.08 at 4x, 0.04 at 8x).
        seed: an int or a sequence of ints (:func:`mask_seed`); ``None`` draws fresh entropy.

    Raises:
        ValueError: for an unknown kind or a centre as large as the requested sampling.
    """
    if kind not in MASK_KINDS:
        raise ValueError(f"unknown mask kind {kind!r}; choose from {list(MASK_KINDS)}")
    n_low = round(n_cols * centre_fraction)
    if n_low * acceleration >= n_cols:
        raise ValueError(
            f"centre fraction {centre_fraction} at {acceleration}x leaves nothing to under-sample "
            f"({n_low} centre columns of {n_cols})"
        )
    rng = np.random.RandomState(seed)  # fastMRI's legacy generator, seeded for this call
    rng.randint(1)  # the (centre fraction, acceleration) pair, drawn first as fastMRI does
    mask = np.zeros(n_cols, dtype=bool)
    start = (n_cols - n_low + 1) // 2
    mask[start : start + n_low] = True
    if kind == "random":
        probability = (n_cols / acceleration - n_low) / (n_cols - n_low)
        mask |= rng.uniform(size=n_cols) < probability
    elif kind == "equispaced":
        offset = rng.randint(0, high=round(acceleration))
        mask[offset::acceleration] = True
    else:
        spacing = acceleration * (n_low - n_cols) / (n_low * acceleration - n_cols)
        offset = rng.randint(0, high=round(spacing))
        mask[np.around(np.arange(offset, n_cols - 1, spacing)).astype(np.uint)] = True
    return mask


def zero_filled(kspace: np.ndarray, mask: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """RSS of the inverse FFT of column-masked multi-coil k-space ``(Z, coils, ky, kx)``, centre-cropped.

    Args:
        kspace: complex k-space.
        mask: ``(kx,)`` sampled columns.
        shape: ``(H, W)`` of the RSS target to crop to.

    Returns:
        ``(Z, H, W)`` float32 magnitude.
    """
    coils = ifft2c(np.where(mask[None, None, None, :], kspace, 0))
    rss = np.sqrt((np.abs(coils) ** 2).sum(axis=1))
    h, w = shape
    top, left = (rss.shape[1] - h) // 2, (rss.shape[2] - w) // 2
    return rss[:, top : top + h, left : left + w].astype(np.float32)
