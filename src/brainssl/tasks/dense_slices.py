"""Whole volumes cut into every axial slice with the slice store's own recipe, and split by subject.

Dense tasks score predictions per subject in 3D, so they need *every* axial slice of a test
volume, not the filtered slice store. :func:`cut_volume` cuts a preprocessed volume into the
store's view (radiological, brain-percentile intensity mapping, zero-padded square resized to
the encoder's input side; labels by nearest neighbour) and keeps the grid spacing so that 3D
distances come out in millimetres. The intensity percentiles are the ones the store recorded
for the dataset (:func:`slice_recipes`), so a change of ``slices.intensity_percentiles``
reaches the dense tasks as it reaches pretraining.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from brainssl.slices.measures import map_intensity, radiological, square_resize
from brainssl.splits import subject_split

__all__ = [
    "VolumeSlices",
    "cut_volume",
    "dense_split",
    "load_brats_cases",
    "load_hippocampus_cases",
    "resample_labels",
    "slice_recipes",
    "store_percentiles",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
#: Where a loader puts each cut array: in memory, or a disk-backed copy
#: (:meth:`brainssl.tasks.dense_memory.SliceSpace.keep`).
Keep = Callable[[np.ndarray], np.ndarray]


def _in_memory(array: np.ndarray) -> np.ndarray:
    return array


def _kept(case: VolumeSlices, keep: Keep) -> VolumeSlices:
    """``case`` with its images and labels handed to ``keep`` (one subject in memory at a time)."""
    case.images = keep(case.images)
    if case.labels is not None:
        case.labels = keep(case.labels)
    return case


@dataclass
class VolumeSlices:
    """Every axial slice of one subject's session, in the encoder's input view.

    Attributes:
        subject: pseudonymous subject id.
        session: session id.
        images: ``(Z, C, S, S)`` float32 in [0, 1], one channel per contrast.
        labels: ``(Z, S, S)`` uint8 label map on the same grid (``None`` without labels).
        spacing: ``(slice, row, column)`` spacing of the grid in mm.
    """

    subject: str
    session: str
    images: np.ndarray
    labels: np.ndarray | None
    spacing: tuple[float, float, float]


def cut_volume(
    subject: str,
    session: str,
    volumes: Sequence[np.ndarray],
    brain: np.ndarray | None,
    labels: np.ndarray | None,
    voxel_mm: float,
    size: int,
    *,
    percentiles: tuple[float, float],
) -> VolumeSlices:
    """Cut co-registered RAS volumes (one per contrast) and their labels into square axial slices.

    Args:
        subject: subject id.
        session: session id.
        volumes: ``(X, Y, Z)`` arrays on one grid, one per contrast.
        brain: boolean brain mask on that grid (``None``: non-zero voxels), for the intensity mapping.
        labels: integer label map on that grid, or ``None``.
        voxel_mm: isotropic voxel side of the preprocessed grid.
        size: output side in pixels (the encoder's ``img_size``).
        percentiles: brain percentiles ``(lo, hi)`` mapped to 0 and 1 (the store's, see
            :func:`slice_recipes`).

    Returns:
        The slices; in-plane spacing becomes ``voxel_mm * max(Y, X) / size``.

    Raises:
        ValueError: for no volumes or volumes/labels on different grids.
    """
    if not volumes:
        raise ValueError(f"{subject}: no contrast volumes given")
    shape = volumes[0].shape
    for array in [*volumes, *([labels] if labels is not None else [])]:
        if array.shape != shape:
            raise ValueError(f"{subject}: volume shape {array.shape} differs from {shape}")
    mapped = [radiological(map_intensity(v, brain, percentiles)) for v in volumes]
    channels = [square_resize(v, size) for v in mapped]
    images = np.stack(channels, axis=1).astype(np.float32)
    cut_labels = None
    if labels is not None:
        cut_labels = square_resize(radiological(np.asarray(labels).astype(np.uint8)), size, label=True)
    in_plane = voxel_mm * max(shape[0], shape[1]) / size
    return VolumeSlices(subject, session, images, cut_labels, (float(voxel_mm), in_plane, in_plane))


def store_percentiles(index: PathLike) -> tuple[float, float]:
    """The intensity percentiles a slice-store index recorded (its Parquet metadata).

    Raises:
        ValueError: when the index records no slice settings (a store older than the record).
    """
    attrs = pd.read_parquet(index, columns=["dataset"]).attrs
    try:
        lo, hi = attrs["settings"]["intensity_percentiles"]
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"{index}: the slice index records no intensity_percentiles; rebuild the store"
        ) from err
    return float(lo), float(hi)


def slice_recipes(
    stores: Mapping[str, PathLike], settings: Mapping[str, Mapping[str, Any]]
) -> dict[str, tuple[float, float]]:
    """Intensity percentiles per dataset: what the store recorded, else the effective slices settings.

    Args:
        stores: ``{dataset: results/slices/<dataset>/index.parquet}`` for the datasets the store holds.
        settings: ``{dataset: slices settings}`` (``stage_params(config, "slices", dataset)``) for
            the datasets it does not hold (the Decathlon hippocampus crops).

    Returns:
        ``{dataset: (lo, hi)}``; a dataset in both takes the store's record.
    """
    recipes = {
        d: (float(s["intensity_percentiles"][0]), float(s["intensity_percentiles"][1]))
        for d, s in settings.items()
    }
    recipes.update({d: store_percentiles(path) for d, path in stores.items()})
    return recipes


def dense_split(
    subjects: Sequence[str], table_split: Mapping[str, str], seed: int, test_fraction: float
) -> dict[str, str]:
    """Assign labelled subjects to ``train`` or ``test``, at subject level.

    The preprocessing split is kept (``test`` -> test; ``train``/``val`` -> train) when it
    leaves at least one labelled subject on each side. Otherwise (the Decathlon's own test
    cases carry no labels; tiny configurations) the labelled subjects are re-split by the
    seeded hash of :func:`brainssl.splits.subject_split` with ``test_fraction``, moving one
    subject over if a side is empty.

    Args:
        subjects: labelled subject ids.
        table_split: preprocessing split per subject.
        seed: workflow seed.
        test_fraction: share of labelled subjects for testing when re-splitting.

    Returns:
        ``{subject: "train" | "test"}``.

    Raises:
        ValueError: with fewer than two labelled subjects.
    """
    unique = sorted(set(subjects))
    if len(unique) < 2:
        raise ValueError(f"need at least two labelled subjects for a train/test split, got {len(unique)}")
    kept = {s: "test" if table_split.get(s) == "test" else "train" for s in unique}
    if set(kept.values()) == {"train", "test"}:
        return kept
    fractions = {"train": 1.0 - test_fraction, "val": 0.0, "test": test_fraction}
    hashed = {s: "test" if subject_split(s, seed, fractions) == "test" else "train" for s in unique}
    for side, other in (("test", "train"), ("train", "test")):
        if side not in hashed.values():
            hashed[sorted(s for s in unique if hashed[s] == other)[0]] = side
    logger.info(
        "preprocessing split leaves one side without labelled subjects; re-split %d subjects (%d test)",
        len(unique),
        sum(v == "test" for v in hashed.values()),
    )
    return hashed


def _session_rows(table: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    return {key: group for key, group in table.groupby(["subject", "session"], sort=True)}


def load_brats_cases(
    table: pd.DataFrame,
    contrasts: Sequence[str],
    size: int,
    max_subjects: int,
    *,
    percentiles: tuple[float, float],
    keep: Keep = _in_memory,
) -> tuple[list[VolumeSlices], list[str]]:
    """Cut the preprocessed BraTS sessions (first session per subject) into slices with their labels.

    Args:
        table: ``results/preprocess/brats21/table.tsv`` rows.
        contrasts: the contrasts used as input channels, in order.
        size: slice side.
        max_subjects: at most this many subjects (sorted by id; 0 = all).
        percentiles: the store's intensity percentiles of the dataset.
        keep: where each subject's cut slices and labels go (default: memory).

    Returns:
        The cases and one message per session that was left out (missing contrast or seg).
    """
    cases, problems = [], []
    seen: set[str] = set()
    for (subject, session), rows in _session_rows(table).items():
        if subject in seen or (max_subjects and len(seen) >= max_subjects):
            continue
        by_contrast = {r.contrast: r for r in rows.itertuples()}
        missing = [c for c in contrasts if c not in by_contrast]
        first = rows.iloc[0]
        if missing or not isinstance(first.seg_path, str) or not first.seg_path:
            problems.append(f"{subject}/{session}: missing {missing or 'segmentation'}")
            continue
        volumes = [np.asarray(nib.load(by_contrast[c].path).dataobj, dtype=np.float32) for c in contrasts]
        brain = np.asarray(nib.load(first.mask_path).dataobj) > 0
        labels = np.asarray(nib.load(first.seg_path).dataobj).round().astype(np.uint8)
        cut = cut_volume(
            subject, session, volumes, brain, labels, float(first.spacing_mm), size, percentiles=percentiles
        )
        cases.append(_kept(cut, keep))
        seen.add(subject)
    return cases, problems


def resample_labels(labels: nib.Nifti1Image, affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resampling of a label image onto another grid through world coordinates.

    Used for generator truth in the raw acquisition's space: preprocessing keeps world
    coordinates (reorientation, resampling and cropping only), so the preprocessed grid's
    affine locates each voxel in the raw label image.

    Args:
        labels: label image with its own affine.
        affine: voxel-to-world matrix of the target grid.
        shape: target grid shape.

    Returns:
        ``shape`` uint8 labels; 0 outside the source image.
    """
    to_source = np.linalg.inv(labels.affine) @ np.asarray(affine)
    grid = np.indices(tuple(shape), dtype=np.float64).reshape(3, -1)
    coords = to_source[:3, :3] @ grid + to_source[:3, 3:4]
    data = np.asarray(labels.dataobj).astype(np.float32)
    out = ndimage.map_coordinates(data, coords, order=0, mode="constant", cval=0.0)
    return out.reshape(tuple(shape)).round().astype(np.uint8)


def load_hippocampus_cases(
    table: pd.DataFrame,
    truth: Mapping[tuple[str, str], str] | None,
    size: int,
    max_subjects: int,
    *,
    percentiles: tuple[float, float],
    keep: Keep = _in_memory,
) -> tuple[list[VolumeSlices], list[str]]:
    """Cut preprocessed T1w sessions with hippocampus labels (first session per subject).

    Args:
        table: a preprocessed ``table.tsv``.
        truth: ``{(subject, session): generator hippocampus label path}`` for datasets whose
            labels are generator truth in raw space (OASIS-3, IXI); ``None`` for the Decathlon,
            whose labels are the preprocessed ``seg_path``.
        size: slice side.
        max_subjects: at most this many labelled subjects (0 = all).
        percentiles: the store's intensity percentiles of the dataset.
        keep: where each subject's cut slices and labels go (default: memory).

    Returns:
        The cases (unlabelled subjects included with ``labels=None``) and problems found.
    """
    cases, problems = [], []
    seen: set[str] = set()
    for (subject, session), rows in _session_rows(table).items():
        t1 = rows[rows.contrast == "T1w"]
        if subject in seen or t1.empty or (max_subjects and len(seen) >= max_subjects):
            continue
        row = t1.iloc[0]
        image = nib.load(row.path)
        volume = np.asarray(image.dataobj, dtype=np.float32)
        labels = None
        if truth is None and isinstance(row.seg_path, str) and row.seg_path:
            labels = np.asarray(nib.load(row.seg_path).dataobj).round().astype(np.uint8)
        elif truth is not None and truth.get((subject, session)):
            labels = resample_labels(nib.load(truth[(subject, session)]), image.affine, volume.shape)
        if labels is None:
            problems.append(f"{subject}/{session}: no hippocampus labels")
        brain = np.asarray(nib.load(row.mask_path).dataobj) > 0
        cut = cut_volume(
            subject, session, [volume], brain, labels, float(row.spacing_mm), size, percentiles=percentiles
        )
        cases.append(_kept(cut, keep))
        seen.add(subject)
    return cases, problems
