"""Grids and transforms: RAS reorientation, isotropic resampling, cropping, mapping back.

nibabel affines map voxel indices to RAS+ world millimetres; SimpleITK works in
LPS. :func:`to_sitk` and :func:`from_sitk` convert between the two, so every
step can keep nibabel images at its interface while SimpleITK does the work.

Every step here preserves world coordinates, so the way back from an output
voxel to the original image is ``inv(original_affine) @ output_affine``, plus
the crop offset and, for a registered contrast, its rigid transform; a
:class:`TransformRecord` keeps all of them in JSON-able form.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk

__all__ = [
    "FIT_THREADS",
    "fixed_itk_threads",
    "to_sitk",
    "from_sitk",
    "ras_grid",
    "resample_to_grid",
    "reorient_resample",
    "crop_box",
    "crop_image",
    "sitk_transform_to_ras",
    "TransformRecord",
    "to_original_space",
]

logger = logging.getLogger(__name__)

_LPS = np.diag([-1.0, -1.0, 1.0])

FIT_THREADS = 1
"""ITK threads (and work units) of every fitting step: registration and N4.

Their results depend on the thread count, so they never follow ``preprocess.threads`` or the
machine's cores (ITK's global default, which SimpleITK's per-filter ``SetNumberOfThreads``
does not reach inside these filters):

* the Mattes MI metric sums its per-work-unit histograms in the order the threads finish,
  so with more than one work unit a registration differs from run to run under load;
* N4's B-spline fit is split by ITK's global default thread count (its sub-filters do not
  take the filter's own setting), so its field changes in the last bits with the core count.

One thread is the only count that is both repeatable and the same on every machine. The
cost is the fits' parallel speed-up (the demo's shard jobs run single-threaded anyway).
Resampling is per voxel and thread-count independent, so it keeps ``threads``.
"""


@contextlib.contextmanager
def fixed_itk_threads(count: int = FIT_THREADS) -> Iterator[None]:
    """Run the body with SimpleITK's global default thread count set to ``count``, then restore it.

    The global default is what ITK filters created inside (pyramids, metric threaders, N4's
    B-spline fitting) split their work by; setting it is the only way to reach them.
    """
    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(count)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


def to_sitk(
    img: nib.spatialimages.SpatialImage | tuple[np.ndarray, np.ndarray], dtype: Any = np.float32
) -> sitk.Image:
    """Convert a nibabel image (or a ``(data, affine)`` pair) to a SimpleITK image.

    Args:
        img: a 3D nibabel image, or a ``(data (X, Y, Z), affine (4, 4))`` pair.
        dtype: numpy dtype of the SimpleITK pixel buffer.

    Raises:
        ValueError: if the data are not 3D.
    """
    data, affine = img if isinstance(img, tuple) else (np.asanyarray(img.dataobj), img.affine)
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"expected a 3D image, got shape {data.shape}")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction = _LPS @ (affine[:3, :3] / spacing)
    out = sitk.GetImageFromArray(np.ascontiguousarray(data.astype(dtype, copy=False).transpose(2, 1, 0)))
    out.SetSpacing([float(s) for s in spacing])
    out.SetDirection([float(v) for v in direction.ravel()])
    out.SetOrigin([float(v) for v in _LPS @ affine[:3, 3]])
    return out


def from_sitk(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(data (X, Y, Z), RAS affine (4, 4))`` of a 3D SimpleITK image."""
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = _LPS @ direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = _LPS @ np.asarray(image.GetOrigin())
    return np.ascontiguousarray(data), affine


def ras_grid(
    affine: np.ndarray, shape: tuple[int, ...], spacing_mm: float
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Return the axis-aligned RAS grid at ``spacing_mm`` covering an image's voxel centres.

    Args:
        affine: (4, 4) voxel-to-world affine of the image (any orientation, oblique allowed).
        shape: the image's spatial shape.
        spacing_mm: isotropic spacing of the new grid.

    Returns:
        ``(affine (4, 4), shape)`` of the new grid: a diagonal affine whose first voxel sits
        on the lowest world corner of the image's voxel-centre bounding box.
    """
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in shape[:3]])), dtype=float)
    world = corners @ affine[:3, :3].T + affine[:3, 3]
    low, high = world.min(axis=0), world.max(axis=0)
    new_shape = tuple(
        int(np.floor((h - lo) / spacing_mm + 1e-6)) + 1 for lo, h in zip(low, high, strict=True)
    )
    out = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    out[:3, 3] = low
    return out, new_shape  # type: ignore[return-value]


def resample_to_grid(
    img: nib.spatialimages.SpatialImage,
    affine: np.ndarray,
    shape: tuple[int, int, int],
    is_label: bool = False,
    interpolation: str = "linear",
    transform: sitk.Transform | None = None,
    threads: int = 1,
) -> nib.Nifti1Image:
    """Resample an image onto a given grid (world coordinates kept, optional transform).

    Args:
        img: 3D nibabel image.
        affine: (4, 4) affine of the target grid.
        shape: target shape.
        is_label: nearest-neighbour interpolation and the input's integer dtype.
        interpolation: ``linear`` or ``bspline`` for images.
        transform: SimpleITK transform mapping target (fixed) points to ``img`` points; identity
            when ``None``.
        threads: SimpleITK threads.

    Returns:
        The resampled image (float32 for images, the label dtype for labels).
    """
    dtype = np.asarray(img.dataobj).dtype if is_label else np.float32
    if is_label and not np.issubdtype(dtype, np.integer):
        dtype = np.int32
    source = to_sitk(img, dtype=np.float32 if not is_label else dtype)
    reference = to_sitk((np.zeros(shape, dtype=np.uint8), affine), dtype=np.uint8)
    if is_label:
        method = sitk.sitkNearestNeighbor
    else:
        method = sitk.sitkBSpline if interpolation == "bspline" else sitk.sitkLinear
    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(reference)
    resampler.SetInterpolator(method)
    resampler.SetDefaultPixelValue(0)
    resampler.SetOutputPixelType(source.GetPixelID())
    resampler.SetTransform(transform if transform is not None else sitk.Transform())
    resampler.SetNumberOfThreads(threads)
    data, out_affine = from_sitk(resampler.Execute(source))
    if not is_label and interpolation == "bspline":
        data = np.maximum(data, 0.0)  # B-spline overshoot below zero has no meaning for magnitude images
    return nib.Nifti1Image(data.astype(dtype, copy=False), out_affine)


def reorient_resample(
    img: nib.spatialimages.SpatialImage,
    spacing_mm: float,
    is_label: bool = False,
    interpolation: str = "linear",
    grid: tuple[np.ndarray, tuple[int, int, int]] | None = None,
    threads: int = 1,
) -> nib.Nifti1Image:
    """Reorient an image to RAS canonical and resample it to isotropic spacing.

    ``nib.as_closest_canonical`` first permutes/flips the voxel axes (exact); if the result is
    still oblique or anisotropic, it is resampled onto the axis-aligned RAS grid
    (:func:`ras_grid`) that covers it. World coordinates are preserved throughout. Labels
    travel with their image by passing the image's output ``grid``.

    Args:
        img: 3D nibabel image (a trailing singleton 4th axis is dropped).
        spacing_mm: isotropic output spacing.
        is_label: nearest-neighbour interpolation (values stay a subset of the input's).
        interpolation: ``linear`` or ``bspline`` for images.
        grid: ``(affine, shape)`` of the output grid; default: the RAS grid of ``img``.
        threads: SimpleITK threads.

    Returns:
        A nibabel image on an RAS grid with a diagonal affine.

    Raises:
        ValueError: if ``img`` is not 3D or ``spacing_mm`` is not positive.
    """
    if spacing_mm <= 0:
        raise ValueError(f"spacing_mm must be > 0, got {spacing_mm}")
    start = time.perf_counter()
    img = _squeeze(img)
    canonical = nib.as_closest_canonical(img)
    target_affine, target_shape = (
        grid if grid is not None else ras_grid(canonical.affine, canonical.shape, spacing_mm)
    )
    if canonical.shape == tuple(target_shape) and np.allclose(canonical.affine, target_affine, atol=1e-4):
        data = np.asanyarray(canonical.dataobj)
        data = data if is_label else data.astype(np.float32)
        out = nib.Nifti1Image(np.ascontiguousarray(data), target_affine)
    else:
        out = resample_to_grid(
            canonical, target_affine, target_shape, is_label, interpolation, threads=threads
        )
    logger.debug("reorient_resample %s -> %s in %.2f s", img.shape, out.shape, time.perf_counter() - start)
    return out


def _squeeze(img: nib.spatialimages.SpatialImage) -> nib.spatialimages.SpatialImage:
    if len(img.shape) == 4 and img.shape[3] == 1:
        return nib.Nifti1Image(np.asanyarray(img.dataobj)[..., 0], img.affine)
    if len(img.shape) != 3:
        raise ValueError(f"expected a 3D image, got shape {img.shape}")
    return img


def crop_box(mask: np.ndarray, margin_vox: int) -> tuple[tuple[int, int], ...]:
    """Return the ``(start, stop)`` per axis of the mask's bounding box plus a margin.

    Raises:
        ValueError: if the mask is empty.
    """
    if not mask.any():
        raise ValueError("cannot crop to an empty brain mask")
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append((max(0, int(hits[0]) - margin_vox), min(mask.shape[axis], int(hits[-1]) + 1 + margin_vox)))
    return tuple(box)


def crop_image(img: nib.spatialimages.SpatialImage, box: tuple[tuple[int, int], ...]) -> nib.Nifti1Image:
    """Crop an image to ``box`` and shift its affine so that world coordinates are kept."""
    slices = tuple(slice(a, b) for a, b in box)
    affine = img.affine.copy()
    affine[:3, 3] = img.affine[:3, :3] @ np.array([a for a, _ in box], dtype=float) + img.affine[:3, 3]
    data = np.asanyarray(img.dataobj)[slices]
    return nib.Nifti1Image(np.ascontiguousarray(data), affine)


def sitk_transform_to_ras(transform: sitk.Transform) -> np.ndarray:
    """Return the (4, 4) RAS-world matrix of a SimpleITK affine-family transform.

    SimpleITK transforms map points of the fixed image to points of the moving image in LPS
    millimetres; the returned matrix does the same in RAS.

    Raises:
        ValueError: for a transform that is not linear (B-spline, displacement field).
    """
    if transform.GetName() == "CompositeTransform":
        composite = sitk.CompositeTransform(transform)
        matrix = np.eye(4)
        for index in range(composite.GetNumberOfTransforms()):
            matrix = matrix @ sitk_transform_to_ras(composite.GetNthTransform(index))
        return matrix
    if transform.GetName() == "Transform" or transform.GetName().startswith("IdentityTransform"):
        return np.eye(4)
    try:
        linear = np.asarray(transform.GetMatrix()).reshape(3, 3)  # type: ignore[attr-defined]
        center = np.asarray(transform.GetCenter())  # type: ignore[attr-defined]
        shift = np.asarray(transform.GetTranslation())  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError) as err:
        raise ValueError(f"cannot express a {transform.GetName()} as a matrix") from err
    lps = np.eye(4)
    lps[:3, :3] = linear
    lps[:3, 3] = shift + center - linear @ center
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ lps @ flip


@dataclass
class TransformRecord:
    """Every transform between an output voxel and the subject's original images (JSON-able).

    Attributes:
        reference: contrast whose grid the session shares.
        spacing_mm: isotropic output spacing.
        original: per contrast, ``{"affine": (4, 4), "shape": [...], "axcodes": "LPS"}`` of the
            input image.
        ras_ornt: per contrast, the nibabel orientation transform (``(3, 2)``) from the input
            axes to RAS canonical.
        resampled_affine: (4, 4) affine of the RAS grid before cropping.
        resampled_shape: shape of that grid.
        crop_offset: first voxel of the crop in the resampled grid.
        final_affine: (4, 4) affine of the written volumes.
        final_shape: shape of the written volumes.
        registrations: name -> ``{"kind", "fixed", "moving", "matrix_ras" (4, 4)}``; a
            contrast's entry maps reference-world points to that contrast's world points.
    """

    reference: str
    spacing_mm: float
    original: dict[str, dict[str, Any]] = field(default_factory=dict)
    ras_ornt: dict[str, list[list[float]]] = field(default_factory=dict)
    resampled_affine: list[list[float]] = field(default_factory=list)
    resampled_shape: list[int] = field(default_factory=list)
    crop_offset: list[int] = field(default_factory=lambda: [0, 0, 0])
    final_affine: list[list[float]] = field(default_factory=list)
    final_shape: list[int] = field(default_factory=list)
    registrations: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add_original(self, contrast: str, img: nib.spatialimages.SpatialImage) -> None:
        """Record a contrast's input grid and its reorientation to RAS."""
        affine = np.asarray(img.affine, dtype=float)
        ornt = nib.orientations.io_orientation(affine)
        self.original[contrast] = {
            "affine": affine.tolist(),
            "shape": [int(n) for n in img.shape[:3]],
            "axcodes": "".join(nib.orientations.aff2axcodes(affine)),
        }
        self.ras_ornt[contrast] = ornt.tolist()

    def to_dict(self) -> dict[str, Any]:
        """Return the record as plain JSON-able types."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransformRecord:
        """Rebuild a record written by :meth:`to_dict`."""
        return cls(**data)


def to_original_space(
    voxel_ijk: np.ndarray | list[float],
    record: TransformRecord | dict[str, Any],
    contrast: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Map output voxel indices back to world and to the original image's voxel indices.

    Args:
        voxel_ijk: (3,) or (N, 3) voxel indices in the written (cropped) volumes.
        record: the session's :class:`TransformRecord` (or its dict form from ``transforms.json``).
        contrast: whose original image to map into; default the reference. A registered
            contrast's rigid transform is applied.

    Returns:
        ``(world_ras, original_ijk)``, each of the shape of ``voxel_ijk``: the RAS world point
        in the reference's scanner space and the (fractional) voxel index in the contrast's
        original image.

    Raises:
        KeyError: if ``contrast`` is not in the record.
    """
    rec = record if isinstance(record, TransformRecord) else TransformRecord.from_dict(record)
    contrast = contrast or rec.reference
    if contrast not in rec.original:
        raise KeyError(f"contrast {contrast!r} not in transform record ({sorted(rec.original)})")
    ijk = np.atleast_2d(np.asarray(voxel_ijk, dtype=float))
    resampled = ijk + np.asarray(rec.crop_offset, dtype=float)
    grid = np.asarray(rec.resampled_affine)
    world = resampled @ grid[:3, :3].T + grid[:3, 3]
    moved = world
    if contrast in rec.registrations:
        matrix = np.asarray(rec.registrations[contrast]["matrix_ras"])
        moved = world @ matrix[:3, :3].T + matrix[:3, 3]
    inverse = np.linalg.inv(np.asarray(rec.original[contrast]["affine"]))
    original = moved @ inverse[:3, :3].T + inverse[:3, 3]
    shape = np.shape(voxel_ijk)
    return world.reshape(shape), original.reshape(shape)
