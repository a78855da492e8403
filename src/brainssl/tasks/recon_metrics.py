"""fastMRI's reconstruction metrics (MSE, NMSE, PSNR, SSIM) and its ``SSIMLoss``.

Metrics are fastMRI's ``fastmri/evaluate.py`` definitions (facebookresearch/fastMRI v0.3.0, the
``fastmri==0.3.0`` package the tests compare against), per volume ``(slices, H, W)``, with its
signatures: :func:`mse`, :func:`nmse`, :func:`psnr` and :func:`ssim` (``maxval`` defaults to the
target volume's maximum). :class:`SSIMLoss` is ``fastmri/losses.py``'s training loss: ``1 -``
mean SSIM of 7x7 uniform windows. The task that scores and trains with them is
:mod:`brainssl.tasks.reconstruction`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

__all__ = ["SSIMLoss", "mse", "nmse", "psnr", "ssim"]

SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _check_pair(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gt, pred = np.asarray(gt, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if gt.shape != pred.shape:
        raise ValueError(f"target shape {gt.shape} differs from prediction shape {pred.shape}")
    return gt, pred


def mse(gt: np.ndarray, pred: np.ndarray) -> float:
    """Mean squared error ``mean((gt - pred)^2)`` of a volume (fastMRI ``evaluate.mse``)."""
    gt, pred = _check_pair(gt, pred)
    return float(np.mean((gt - pred) ** 2))


def nmse(gt: np.ndarray, pred: np.ndarray) -> float:
    """Normalised squared error ``||gt - pred||^2 / ||gt||^2`` of a volume (fastMRI ``evaluate.nmse``)."""
    gt, pred = _check_pair(gt, pred)
    return float(np.sum((gt - pred) ** 2) / np.sum(gt**2))


def psnr(gt: np.ndarray, pred: np.ndarray, maxval: float | None = None) -> float:
    """Peak signal-to-noise ratio ``10 log10(maxval^2 / mse)`` in dB (fastMRI ``evaluate.psnr``).

    Args:
        gt: target volume.
        pred: prediction of the same shape.
        maxval: the peak; ``None`` (fastMRI's default) takes ``gt.max()`` of the volume.
    """
    gt, pred = _check_pair(gt, pred)
    peak = gt.max() if maxval is None else float(maxval)
    error = np.mean((gt - pred) ** 2)
    return math.inf if error == 0 else float(10 * np.log10(peak**2 / error))


def ssim(gt: np.ndarray, pred: np.ndarray, maxval: float | None = None) -> float:
    """Mean structural similarity over the slices of ``(slices, H, W)`` volumes (fastMRI ``evaluate.ssim``).

    Per slice, scikit-image's ``structural_similarity`` as fastMRI calls it: a 7x7 uniform
    window, sample covariances, ``K1 = 0.01``, ``K2 = 0.03``, ``data_range = maxval``, averaged
    over the windows that fit inside the slice; then the mean over slices.

    Args:
        gt: ``(slices, H, W)`` target.
        pred: prediction of the same shape.
        maxval: the data range; ``None`` (fastMRI's default) takes ``gt.max()`` of the volume.

    Raises:
        ValueError: for different shapes, a non-3D volume or slices smaller than the 7x7 window.
    """
    gt, pred = _check_pair(gt, pred)
    if gt.ndim != 3 or min(gt.shape[1:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs (slices, H, W) with H, W >= {SSIM_WINDOW}, got {gt.shape}")
    data_range = gt.max() if maxval is None else float(maxval)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    n = SSIM_WINDOW**2
    cov_norm = n / (n - 1)
    pad = SSIM_WINDOW // 2
    values = []
    for x, y in zip(gt, pred, strict=True):
        mean = {k: ndimage.uniform_filter(v, SSIM_WINDOW) for k, v in (("x", x), ("y", y))}
        xx = cov_norm * (ndimage.uniform_filter(x * x, SSIM_WINDOW) - mean["x"] ** 2)
        yy = cov_norm * (ndimage.uniform_filter(y * y, SSIM_WINDOW) - mean["y"] ** 2)
        xy = cov_norm * (ndimage.uniform_filter(x * y, SSIM_WINDOW) - mean["x"] * mean["y"])
        numerator = (2 * mean["x"] * mean["y"] + c1) * (2 * xy + c2)
        denominator = (mean["x"] ** 2 + mean["y"] ** 2 + c1) * (xx + yy + c2)
        values.append((numerator / denominator)[pad:-pad, pad:-pad].mean())
    return float(np.mean(values))


class SSIMLoss(nn.Module):
    """fastMRI's ``SSIMLoss`` (``fastmri/losses.py``): ``1 -`` mean SSIM over 7x7 uniform windows.

    Local means, variances (scaled by ``n / (n - 1)``) and covariance come from a 7x7 box filter
    over the windows that fit inside the image (no padding); ``C1 = (k1 R)^2`` and
    ``C2 = (k2 R)^2`` with the per-image data range ``R``.

    Args:
        win_size: window side (7).
        k1: 0.01.
        k2: 0.03.

    Shapes:
        ``x``, ``y``: ``(B, 1, H, W)``; ``data_range``: ``(B,)``; output: scalar, or ``(B, 1, H', W')``
        of ``1 - SSIM`` maps when ``reduced`` is false.
    """

    def __init__(self, win_size: int = SSIM_WINDOW, k1: float = SSIM_K1, k2: float = SSIM_K2) -> None:
        super().__init__()
        self.win_size, self.k1, self.k2 = win_size, k1, k2
        n = win_size**2
        self.cov_norm = n / (n - 1)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, data_range: torch.Tensor, reduced: bool = True
    ) -> torch.Tensor:
        """Return ``1 - SSIM(x, y)`` (mean over images and windows when ``reduced``)."""
        box = lambda t: F.avg_pool2d(t, self.win_size, stride=1)  # noqa: E731
        r = data_range.reshape(-1, 1, 1, 1).to(x.dtype)
        c1, c2 = (self.k1 * r) ** 2, (self.k2 * r) ** 2
        mx, my = box(x), box(y)
        vx = self.cov_norm * (box(x * x) - mx * mx)
        vy = self.cov_norm * (box(y * y) - my * my)
        vxy = self.cov_norm * (box(x * y) - mx * my)
        s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        return 1 - s.mean() if reduced else 1 - s
