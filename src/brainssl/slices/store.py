"""The sharded slice store: cut, measure, filter and write one shard; merge; validate.

A shard is one contiguous ``.npy`` array ``(N, S, S)`` (uint8 or float16; memory-mappable),
a parallel ``uint8`` label array (``(N, S, S)``, or ``(0, S, S)`` when no kept slice has a
segmentation), an index table (one row per stored slice, :data:`INDEX_COLUMNS` plus subject
labels) and a stats table (one row per cut slice, kept or not, :data:`STATS_COLUMNS`). Rows
are ordered by subject, session, contrast, slice index, and nothing time-dependent enters a
file, so a re-run writes the same bytes. The index's pandas ``attrs`` (Parquet metadata)
hold the intensity mapping and the settings.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainssl.io import save_npy, write_table
from brainssl.logs import progress

from .measures import (
    INTENSITY_MAPPING,
    brain_positions,
    map_intensity,
    position_keep,
    radiological,
    slice_entropy,
    square_resize,
    to_store_dtype,
)
from .plan import LABEL_COLUMNS
from .settings import SHARD_KEYS, SliceSettings

__all__ = [
    "INDEX_COLUMNS",
    "STATS_COLUMNS",
    "SliceStoreError",
    "build_slice_shard",
    "check_store",
    "cut_slices",
    "merge_slice_index",
    "read_index",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
KEY_COLUMNS = ("dataset", "subject", "session", "contrast", "slice_index")
INDEX_COLUMNS = (
    *KEY_COLUMNS,
    "position",
    "entropy",
    "area",
    "shard",
    "offset",
    "split",
    "has_seg",
    "array",
    "labels",
)
STATS_COLUMNS = (
    *KEY_COLUMNS,
    "position",
    "entropy",
    "area",
    "threshold",
    "kept",
    "reason",
    "shard",
    "split",
    "source",
    "mask_source",
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class SliceStoreError(ValueError):
    """A slice store whose index disagrees with its arrays (or an unreadable array)."""


@dataclass
class VolumeSlices:
    """All axial slices of one volume (or the one slice of a 2D image), measured.

    Attributes:
        images: ``(Z, S, S)`` stored dtype.
        seg: ``(Z, S, S)`` uint8 labels, or ``None``.
        position: ``(Z,)`` relative position (NaN for 2D images).
        entropy: ``(Z,)`` bits.
        area: ``(Z,)`` brain-area fraction.
        candidate: ``(Z,)`` passes position, step and area; ``reason`` says which test failed.
    """

    images: np.ndarray
    seg: np.ndarray | None
    position: np.ndarray
    entropy: np.ndarray
    area: np.ndarray
    candidate: np.ndarray
    reason: np.ndarray


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    return str(value)


def _load_2d(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("L"), dtype=np.float32)


def _load_volume(row: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, float]:
    import nibabel as nib

    img = nib.load(row["path"])
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{row['path']}: expected a 3D volume, got shape {data.shape}")
    mask_path, seg_path = _text(row.get("mask_path")), _text(row.get("seg_path"))
    mask = np.asarray(nib.load(mask_path).dataobj) > 0 if mask_path else None
    seg = np.asarray(nib.load(seg_path).dataobj).astype(np.uint8) if seg_path else None
    for name, arr in (("mask", mask), ("seg", seg)):
        if arr is not None and arr.shape[:3] != data.shape:
            raise ValueError(f"{row['path']}: {name} shape {arr.shape} differs from volume {data.shape}")
    spacing = _text(row.get("spacing_mm"))
    z_mm = float(spacing) if spacing else float(img.header.get_zooms()[2])
    return data, mask, seg, z_mm


def cut_slices(row: Mapping[str, Any], settings: SliceSettings) -> VolumeSlices:
    """Cut, map, resize and measure every axial slice of one table row.

    Args:
        row: a preprocess-table row (``path``, optional ``mask_path``, ``seg_path``,
            ``spacing_mm``) or a 2D image manifest row (``path`` to a JPEG/PNG).
        settings: stage settings.

    Returns:
        The measured slices with the position/step/area verdict (entropy is decided per shard).
    """
    path = str(row["path"])
    size = settings.size
    if path.lower().endswith(IMAGE_SUFFIXES):
        image = _load_2d(path)
        head = image != 0
        axial = map_intensity(image, None, settings.intensity_percentiles)[None]
        head_ax, brain_ax, seg_ax, z_mm = head[None], None, None, 1.0
        position = np.full(1, np.nan)
    else:
        data, mask, seg, z_mm = _load_volume(row)
        head = data != 0
        axial = radiological(map_intensity(data, mask, settings.intensity_percentiles))
        head_ax = radiological(head)
        brain_ax = radiological(mask) if mask is not None else None
        seg_ax = radiological(seg) if seg is not None else None
        position = brain_positions((brain_ax if brain_ax is not None else head_ax).sum(axis=(1, 2)))
    images = to_store_dtype(square_resize(axial, size), settings.dtype)
    head_sq = square_resize(head_ax.astype(np.uint8), size, label=True) > 0
    brain_sq = (
        square_resize(brain_ax.astype(np.uint8), size, label=True) > 0 if brain_ax is not None else head_sq
    )
    region = {"image": None, "head": head_sq, "brain": brain_sq}[settings.entropy_region]
    entropy = slice_entropy(images, region, settings.entropy_bins)
    area = brain_sq.reshape(len(images), -1).mean(axis=1)
    in_window = position_keep(position, settings.position_window)
    stride = max(1, round(settings.step_mm / z_mm)) if settings.step_mm > 0 else 1
    lowest = np.nanargmin(np.abs(position)) if np.isfinite(position).any() else 0
    on_step = ((np.arange(len(images)) - lowest) % stride == 0) | np.isnan(position)
    big = area >= settings.min_area
    reason = np.where(~in_window, "position", np.where(~on_step, "step", np.where(~big, "area", "")))
    seg_sq = square_resize(seg_ax, size, label=True).astype(np.uint8) if seg_ax is not None else None
    return VolumeSlices(images, seg_sq, position, entropy, area, in_window & on_step & big, reason)


def _thresholds(stats: pd.DataFrame, settings: SliceSettings) -> pd.Series:
    """Entropy threshold per slice row (absolute, or the percentile of its shard and contrast)."""
    if settings.entropy_mode == "absolute":
        return pd.Series(settings.entropy_threshold, index=stats.index, dtype=float)
    out = pd.Series(np.nan, index=stats.index, dtype=float)
    for _, group in stats.groupby("contrast", sort=True):
        cand = group.loc[group["reason"] == "", "entropy"].to_numpy()
        out[group.index] = float(np.percentile(cand, settings.entropy_percentile)) if cand.size else np.inf
    return out


def _row_key(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _text(row.get(k)) for k in ("dataset", "subject", "session", "contrast")}


def build_slice_shard(
    rows: pd.DataFrame,
    settings: SliceSettings,
    shard: int,
    out_array: PathLike,
    out_labels: PathLike,
    out_index: PathLike,
    out_stats: PathLike,
) -> pd.DataFrame:
    """Cut, measure and filter the slices of one shard and write its store files.

    Args:
        rows: the shard's rows (:func:`brainssl.slices.load_shard_rows`): ``dataset, subject,
            session, contrast, path, split`` (+ ``mask_path, seg_path, spacing_mm`` and the
            subject labels of :data:`LABEL_COLUMNS` where present).
        settings: stage settings.
        shard: shard number (recorded in the tables).
        out_array: ``(N, S, S)`` slices (``.npy``).
        out_labels: ``(N, S, S)`` uint8 segmentation slices, or ``(0, S, S)`` if none.
        out_index: Parquet index of the stored slices (:data:`INDEX_COLUMNS` + labels).
        out_stats: Parquet table of every cut slice (:data:`STATS_COLUMNS`).

    Returns:
        The index.

    Raises:
        KeyError: when a required column is missing.
    """
    required = ("dataset", "subject", "session", "contrast", "path", "split")
    missing = [c for c in required if c not in rows.columns]
    if missing:
        raise KeyError(f"shard rows lack column(s) {missing}")
    ordered = rows.sort_values(["subject", "session", "contrast", "path"]).to_dict("records")
    volumes = [cut_slices(row, settings) for row in progress(ordered, "cut volumes", total=len(ordered))]
    frames = []
    for number, (row, vol) in enumerate(zip(ordered, volumes, strict=True)):
        frame = pd.DataFrame({**_row_key(row), "slice_index": np.arange(len(vol.images), dtype=np.int64)})
        frame = frame.assign(
            position=vol.position,
            entropy=vol.entropy,
            area=vol.area,
            reason=vol.reason,
            shard=int(shard),
            split=str(row["split"]),
            source=str(row["path"]),
            mask_source=_text(row.get("mask_path")),
            volume=number,
        )
        frames.append(frame)
    stats = (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*STATS_COLUMNS, "volume"])
    )
    stats["threshold"] = _thresholds(stats, settings)
    low = (stats["reason"] == "") & (stats["entropy"] < stats["threshold"])
    stats.loc[low, "reason"] = "entropy"
    stats["kept"] = stats["reason"] == ""
    kept = stats[stats["kept"]]
    size = settings.size
    chosen = [volumes[v].images[k] for v, k in zip(kept["volume"], kept["slice_index"], strict=True)]
    dtype = np.uint8 if settings.dtype == "uint8" else np.float16
    array = np.stack(chosen) if chosen else np.zeros((0, size, size), dtype)
    has_seg = np.array([volumes[v].seg is not None for v in kept["volume"]], dtype=bool)
    if has_seg.any():
        blank = np.zeros((size, size), np.uint8)
        labels = np.stack(
            [
                volumes[v].seg[k] if volumes[v].seg is not None else blank
                for v, k in zip(kept["volume"], kept["slice_index"], strict=True)
            ]
        )
    else:
        labels = np.zeros((0, size, size), np.uint8)
    index = kept[[*KEY_COLUMNS, "position", "entropy", "area", "shard", "split"]].reset_index(drop=True)
    index.insert(index.columns.get_loc("shard") + 1, "offset", np.arange(len(index), dtype=np.int64))
    index["has_seg"] = has_seg
    index["array"] = str(out_array)
    index["labels"] = str(out_labels) if has_seg.any() else ""
    index = _attach_labels(index, rows)
    index.attrs = {"intensity_mapping": INTENSITY_MAPPING, "settings": settings.to_dict(SHARD_KEYS)}
    stats = stats[list(STATS_COLUMNS)]
    stats.attrs = dict(index.attrs)
    save_npy(out_array, np.ascontiguousarray(array))
    save_npy(out_labels, np.ascontiguousarray(labels))
    write_table(out_index, index)
    write_table(out_stats, stats)
    logger.info("shard %d: %d of %d slices kept from %d volumes", shard, len(index), len(stats), len(volumes))
    return index


def _attach_labels(index: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    columns = [c for c in LABEL_COLUMNS if c in rows.columns]
    if not columns:
        return index
    per_subject = rows[["subject", *columns]].drop_duplicates("subject").astype({"subject": str})
    return index.merge(per_subject, on="subject", how="left", sort=False)


def read_index(path: PathLike) -> pd.DataFrame:
    """Read a slice index (or stats) table from Parquet, keeping its metadata."""
    return pd.read_parquet(path)


def merge_slice_index(paths: Sequence[PathLike], out: PathLike | None = None) -> pd.DataFrame:
    """Concatenate shard (or dataset) indexes in the given order, optionally writing the result.

    Args:
        paths: Parquet index or stats tables.
        out: where to write the merged table (Parquet), or ``None``.

    Returns:
        The merged table; its ``attrs`` are those of the first table.

    Raises:
        SliceStoreError: when a stored slice appears twice (same array and offset).
    """
    frames = [read_index(p) for p in paths]
    if not frames:
        raise ValueError("no tables to merge")
    merged = pd.concat(frames, ignore_index=True)
    if "offset" in merged.columns:
        dup = merged.duplicated(["array", "offset"])
        if dup.any():
            raise SliceStoreError(
                f"{int(dup.sum())} slices appear twice, e.g. {merged[dup].iloc[0].to_dict()}"
            )
    merged.attrs = dict(frames[0].attrs)
    if out is not None:
        write_table(out, merged)
    return merged


def _resolve(path: str, root: PathLike | None) -> Path:
    p = Path(path)
    return p if p.is_absolute() or root is None else Path(root) / p


def _open(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise SliceStoreError(f"{path}: unreadable or truncated array ({type(err).__name__}: {err})") from err


def _check_array(name: str, arr: np.ndarray, rows: pd.DataFrame, shape: list[tuple[int, ...]]) -> None:
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
        raise SliceStoreError(f"{name}: shape {arr.shape} is not (N, S, S)")
    if arr.dtype not in (np.uint8, np.float16):
        raise SliceStoreError(f"{name}: dtype {arr.dtype} is not uint8 or float16")
    if shape and (arr.shape[1:], arr.dtype) != shape[0]:
        raise SliceStoreError(f"{name}: slices {arr.shape[1:]} {arr.dtype} differ from {shape[0]}")
    shape.append((arr.shape[1:], arr.dtype))
    offsets = np.sort(rows["offset"].to_numpy())
    if len(rows) != len(arr) or not np.array_equal(offsets, np.arange(len(arr))):
        raise SliceStoreError(f"{name}: index lists {len(rows)} slices, array holds {len(arr)}")


def check_store(
    index: pd.DataFrame | PathLike,
    arrays: Mapping[str, np.ndarray] | None = None,
    *,
    root: PathLike | None = None,
) -> dict[str, Any]:
    """Check that a slice index agrees with its arrays; pretraining calls this first.

    Args:
        index: the index table (or its Parquet path).
        arrays: ``{array path as in the index: array}`` to check instead of opening the files.
        root: folder that relative array paths are relative to (default: current folder).

    Returns:
        ``{"slices", "arrays", "shape", "dtype"}``.

    Raises:
        SliceStoreError: on missing columns, an unreadable or truncated array, a shape, dtype or
            count mismatch, or offsets that do not cover the array exactly.
    """
    frame = read_index(index) if not isinstance(index, pd.DataFrame) else index
    missing = [c for c in INDEX_COLUMNS if c not in frame.columns]
    if missing:
        raise SliceStoreError(f"index lacks column(s) {missing}")
    seen: list[tuple[int, ...]] = []
    for name, rows in frame.groupby("array", sort=True):
        arr = arrays[name] if arrays is not None else _open(_resolve(str(name), root))
        _check_array(str(name), arr, rows, seen)
        for labels_name in sorted(set(rows["labels"].astype(str)) - {""}):
            lab = arrays[labels_name] if arrays is not None else _open(_resolve(labels_name, root))
            if lab.dtype != np.uint8 or lab.shape != arr.shape:
                raise SliceStoreError(
                    f"{labels_name}: labels {lab.shape} {lab.dtype} do not match {arr.shape} uint8"
                )
    shape, dtype = seen[0] if seen else ((), None)
    return {"slices": len(frame), "arrays": len(seen), "shape": list(shape), "dtype": str(dtype)}
