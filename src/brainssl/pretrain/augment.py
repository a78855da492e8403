"""MRI augmentations applied in batch on the training device, driven by a ``torch.Generator``.

Every operation works on a whole ``(B, 1, H, W)`` batch with per-sample random parameters
(torch ops only: ``affine_grid``/``grid_sample``, grouped convolutions, elementwise maths),
so on a GPU the data path is a few kernels per view and the CPU only reads uint8 slices.
Randomness comes only from the ``generator`` passed in, which must live on the batch's
device; global RNGs are never touched.

The set suits single-channel MRI rather than photographs: no colour jitter or
solarisation; instead intensity scale/shift and gamma (scanner and contrast variation),
Rician-like noise (magnitude images), a smooth multiplicative field (residual bias field),
Gaussian blur (resolution), random resized crops and left-right flips.

References:
    Caron et al. 2021 (DINO) multi-crop; Chen, Xie and He 2021 (MoCo v3) two-view crops.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from brainssl.settings import from_mapping, setting

__all__ = ["AugmentSettings", "MRIAugment", "random_resized_crop", "two_views", "multi_crop"]


@dataclass(frozen=True)
class AugmentSettings:
    """Probabilities and ranges of the MRI augmentations.

    Attributes:
        hflip: probability of a left-right flip.
        vflip: probability of an up-down flip (0 for axial brain slices).
        ratio: aspect-ratio range of the random resized crop.
        intensity_p: probability of ``x * a + b``.
        intensity_scale: range of ``a``.
        intensity_shift: range of ``b``.
        gamma_p: probability of ``x ** g``.
        gamma: range of ``g`` (sampled log-uniformly).
        blur_p: probability of a Gaussian blur.
        blur_sigma: range of the blur sigma in output pixels.
        noise_p: probability of Rician-like noise.
        noise_std: largest noise sigma (intensity units, image in [0, 1]).
        field_p: probability of a smooth multiplicative field ``exp(f)``.
        field_strength: standard deviation of ``f`` at the control points.
        field_grid: control points per side of the field.
    """

    hflip: float = setting(0.5, "Probability of a left-right flip.", minimum=0, maximum=1)
    vflip: float = setting(
        0.0, "Probability of an up-down flip (0 for axial brain slices).", minimum=0, maximum=1
    )
    ratio: tuple[float, float] = setting(  # (3/4, 4/3) to four decimals
        (0.75, 1.3333),
        "Aspect-ratio range of the random resized crops.",
        items={"minimum": 0.1, "maximum": 10},
    )
    intensity_p: float = setting(
        0.8, "Probability of an intensity scale and shift x * a + b.", minimum=0, maximum=1
    )
    intensity_scale: tuple[float, float] = setting(
        (0.75, 1.25), "Range of the scale a.", items={"minimum": 0, "maximum": 10}
    )
    intensity_shift: tuple[float, float] = setting(
        (-0.1, 0.1), "Range of the shift b.", items={"minimum": -1, "maximum": 1}
    )
    gamma_p: float = setting(0.5, "Probability of a gamma change x ** g.", minimum=0, maximum=1)
    gamma: tuple[float, float] = setting(
        (0.7, 1.5), "Range of g (log-uniform).", items={"minimum": 0.05, "maximum": 20}
    )
    blur_p: float = setting(0.5, "Probability of a Gaussian blur.", minimum=0, maximum=1)
    blur_sigma: tuple[float, float] = setting(
        (0.1, 1.5), "Range of the blur sigma (output pixels).", items={"minimum": 0, "maximum": 20}
    )
    noise_p: float = setting(0.5, "Probability of Rician-like noise.", minimum=0, maximum=1)
    noise_std: float = setting(0.05, "Largest noise sigma (image in [0, 1]).", minimum=0, maximum=1)
    field_p: float = setting(
        0.5,
        "Probability of a smooth multiplicative field exp(f) (bias-field-like).",
        minimum=0,
        maximum=1,
    )
    field_strength: float = setting(
        0.3, "Standard deviation of f at the control points.", minimum=0, maximum=5
    )
    field_grid: int = setting(4, "Control points per side of the field.", minimum=2, maximum=64)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AugmentSettings:
        """Build from the rule's config slice (see :func:`brainssl.settings.from_mapping`)."""
        return from_mapping(cls, values, section="pretrain.augment")


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def _coin(n: int, p: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) < p


def random_resized_crop(
    x: torch.Tensor,
    size: int,
    scale: tuple[float, float],
    generator: torch.Generator,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: float = 0.0,
    vflip: float = 0.0,
) -> torch.Tensor:
    """Crop a random box of each image (area fraction in ``scale``) and resample it to ``size``.

    One ``affine_grid`` + bilinear ``grid_sample`` for the whole batch; flips are folded into
    the affine (a negative axis scale).

    Args:
        x: ``(B, C, H, W)`` images.
        size: output side.
        scale: range of the crop's area as a fraction of the image.
        generator: on ``x.device``.
        ratio: aspect-ratio range (sampled log-uniformly).
        hflip: probability of a left-right flip.
        vflip: probability of an up-down flip.

    Returns:
        ``(B, C, size, size)``.
    """
    b, dev = x.shape[0], x.device
    area = _uniform(b, scale[0], scale[1], generator, dev)
    log_r = _uniform(b, math.log(ratio[0]), math.log(ratio[1]), generator, dev)
    w = torch.sqrt(area * torch.exp(log_r)).clamp(max=1.0)
    h = torch.sqrt(area / torch.exp(log_r)).clamp(max=1.0)
    cx = (torch.rand(b, generator=generator, device=dev) * 2 - 1) * (1 - w)
    cy = (torch.rand(b, generator=generator, device=dev) * 2 - 1) * (1 - h)
    sx = torch.where(_coin(b, hflip, generator, dev), -w, w)
    sy = torch.where(_coin(b, vflip, generator, dev), -h, h)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, sy, cy
    grid = F.affine_grid(theta, [b, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of ``(B, 1, H, W)`` with its own sigma ``(B,)`` (separable, grouped conv)."""
    b, _, height, width = x.shape
    radius = max(1, math.ceil(3 * float(sigma.max())))
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (taps[None, :] / sigma[:, None].clamp_min(1e-3)) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (B, K)
    y = x.reshape(1, b, height, width)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=b)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), kernel[:, None, :, None], groups=b)
    return y.reshape(b, 1, height, width)


class MRIAugment:
    """Intensity and noise augmentations on a batch of cropped views.

    Args:
        settings: probabilities and ranges.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> MRIAugment(AugmentSettings())(torch.rand(4, 1, 32, 32), g).shape
        torch.Size([4, 1, 32, 32])
    """

    def __init__(self, settings: AugmentSettings) -> None:
        self.s = settings

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment ``(B, 1, H, W)`` images in ``[0, 1]``; returns the same shape, clamped to ``[0, 1]``."""
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected (B, 1, H, W), got {tuple(x.shape)}")
        s, b, dev, g = self.s, x.shape[0], x.device, generator
        col = (b, 1, 1, 1)
        if s.field_p > 0:
            coarse = torch.randn(b, 1, s.field_grid, s.field_grid, generator=g, device=dev) * s.field_strength
            field = F.interpolate(coarse, size=x.shape[-2:], mode="bicubic", align_corners=False)
            on = _coin(b, s.field_p, g, dev).reshape(col)
            x = torch.where(on, x * torch.exp(field), x)
        if s.gamma_p > 0:
            gam = torch.exp(_uniform(b, math.log(s.gamma[0]), math.log(s.gamma[1]), g, dev)).reshape(col)
            on = _coin(b, s.gamma_p, g, dev).reshape(col)
            x = torch.where(on, x.clamp_min(0) ** gam, x)
        if s.intensity_p > 0:
            a = _uniform(b, *s.intensity_scale, g, dev).reshape(col)
            c = _uniform(b, *s.intensity_shift, g, dev).reshape(col)
            on = _coin(b, s.intensity_p, g, dev).reshape(col)
            x = torch.where(on, x * a + c, x)
        if s.blur_p > 0:
            sigma = _uniform(b, *s.blur_sigma, g, dev)
            on = _coin(b, s.blur_p, g, dev).reshape(col)
            x = torch.where(on, _gaussian_blur(x, sigma), x)
        if s.noise_p > 0:
            std = _uniform(b, 0.0, s.noise_std, g, dev).reshape(col)
            n1 = torch.randn(x.shape, generator=g, device=dev)
            n2 = torch.randn(x.shape, generator=g, device=dev)
            on = _coin(b, s.noise_p, g, dev).reshape(col)
            x = torch.where(on, torch.sqrt((x + std * n1) ** 2 + (std * n2) ** 2), x)
        return x.clamp(0.0, 1.0)


def two_views(
    x: torch.Tensor,
    size: int,
    scale: tuple[float, float],
    settings: AugmentSettings,
    generator: torch.Generator,
) -> list[torch.Tensor]:
    """MoCo v3's two augmented views of each image, each ``(B, 1, size, size)``."""
    aug = MRIAugment(settings)
    return [
        aug(
            random_resized_crop(x, size, scale, generator, settings.ratio, settings.hflip, settings.vflip),
            generator,
        )
        for _ in range(2)
    ]


def multi_crop(
    x: torch.Tensor,
    global_size: int,
    local_size: int,
    n_local: int,
    global_scale: tuple[float, float],
    local_scale: tuple[float, float],
    settings: AugmentSettings,
    generator: torch.Generator,
) -> list[torch.Tensor]:
    """DINO multi-crop: two global views (``global_size``) then ``n_local`` local views (``local_size``)."""
    aug = MRIAugment(settings)
    views = []
    for i in range(2 + n_local):
        size, scale = (global_size, global_scale) if i < 2 else (local_size, local_scale)
        crop = random_resized_crop(x, size, scale, generator, settings.ratio, settings.hflip, settings.vflip)
        views.append(aug(crop, generator))
    return views
