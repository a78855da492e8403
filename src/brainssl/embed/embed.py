"""Slice embeddings of a frozen encoder (or classical features) and their per-unit pooling.

One job per encoder reads every slice of the merged slice store once, in batches, and
writes two tables: ``slices.parquet`` (one row per slice: the index key columns, position,
split, subject labels and the feature columns ``f000``...) and ``subjects.parquet`` (one row
per dataset/subject/session/contrast: the mean of the slice features inside the brain-rich
position window). Downstream heads read only these tables, so they never touch images or
torch.

The classical baseline goes through the same code path: :func:`classical_features` turns a
slice into an intensity histogram of the brain plus simple shape statistics, so "what
pretraining adds" is measured against features that need no learning at all.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainssl.io import write_table
from brainssl.logs import progress
from brainssl.settings import from_mapping, setting
from brainssl.slices.plan import LABEL_COLUMNS
from brainssl.slices.store import KEY_COLUMNS, read_index

__all__ = [
    "CLASSICAL",
    "DEVICES",
    "EmbedSection",
    "EmbedSettings",
    "ExtraEncoder",
    "SLICE_COLUMNS",
    "UNIT_COLUMNS",
    "classical_features",
    "embed_index",
    "encode_slices",
    "feature_columns",
    "load_embedding_encoder",
    "pool_units",
]

logger = logging.getLogger(__name__)

#: Encoder name of the classical (histogram + shape) feature baseline.
CLASSICAL = "classical"
#: Columns that say which slice a row is, carried into ``slices.parquet``.
SLICE_COLUMNS = (*KEY_COLUMNS, "position", "area", "split", *LABEL_COLUMNS)
#: The pooling unit: one contrast of one session of one subject.
UNIT_COLUMNS = ("dataset", "subject", "session", "contrast")
#: Where encoders can run (``auto``: CUDA when present).
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class EmbedSettings:
    """How slices are embedded and pooled (the ``embed:`` config section).

    Attributes:
        batch_size: slices per forward pass.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        pool_window: slice positions (0 inferior .. 1 superior within the brain) whose
            embeddings are averaged per unit; units with no slice inside keep all slices.
        histogram_bins: bins of the classical baseline's brain intensity histogram.
    """

    batch_size: int = setting(256, "Slices per forward pass.", minimum=1, maximum=65536)
    device: str = setting(
        "auto",
        "Where encoders run: auto picks CUDA when present (CPU results are deterministic).",
        enum=DEVICES,
    )
    pool_window: tuple[float, float] = setting(
        (0.3, 0.7),
        "Slice positions (0 inferior .. 1 superior within the brain) averaged per unit; units "
        "with no slice inside keep all their slices.",
        items={"minimum": 0, "maximum": 1},
    )
    histogram_bins: int = setting(
        16, "Bins of the classical baseline's brain intensity histogram.", minimum=2, maximum=256
    )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EmbedSettings:
        """Build from the rule's config slice (see :func:`brainssl.settings.from_mapping`)."""
        return from_mapping(cls, values, section="embed")


@dataclass(frozen=True)
class ExtraEncoder:
    """One more brainssl export to embed with (natural-image checkpoints go in ``pretrain.natural``)."""

    name: str = setting(description="Encoder name in the results.", pattern="^[A-Za-z0-9_-]+$")
    weights: str = setting(description="Path of the brainssl export (encoder.safetensors).", min_length=1)


@dataclass(frozen=True)
class EmbedSection(EmbedSettings):
    """The ``embed:`` config section: the embedding settings and the extra encoders.

    Only the config schema (:mod:`brainssl.schema`) is built from it; the workflow turns
    ``extra`` into encoders (:func:`brainssl.wiring.embed_encoders`).
    """

    extra: tuple[ExtraEncoder, ...] = setting(
        (),
        "More brainssl exports to embed with: {name, weights} (an encoder.safetensors written by "
        "brainssl; natural-image checkpoints go in pretrain.natural). Names use letters, digits, "
        "'_' and '-'.",
    )


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """The feature columns (``f000``, ``f001``...) of an embedding table, in order."""
    return [c for c in frame.columns if c.startswith("f") and c[1:].isdigit()]


def _device(name: str) -> Any:
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def load_embedding_encoder(spec: Mapping[str, Any], device: Any = "cpu") -> Any:
    """Load the brainssl export an embed job names (natural-image baselines are exports too).

    Args:
        spec: ``{"weights": path}`` of an ``encoder.safetensors``.
        device: torch device.

    Returns:
        The encoder in eval mode.
    """
    from brainssl.pretrain.export import load_encoder

    return load_encoder(spec["weights"], device)


def _stored_slices(rows: pd.DataFrame, root: Path | None) -> np.ndarray:
    """Read the slices of index ``rows`` as ``(n, S, S)``, one memory map per shard."""
    out = None
    offsets = rows["offset"].to_numpy()
    for path, positions in rows.groupby("array", sort=False).indices.items():
        data = np.load(_array_path(path, root), mmap_mode="r")
        if out is None:
            out = np.empty((len(rows), *data.shape[1:]), dtype=data.dtype)
        out[positions] = data[offsets[positions]]
    return out if out is not None else np.zeros((0, 0, 0), np.uint8)


def _as_unit_float(raw: np.ndarray) -> np.ndarray:
    return raw.astype(np.float32) / 255.0 if raw.dtype == np.uint8 else raw.astype(np.float32)


def classical_features(images: np.ndarray, bins: int = 16) -> np.ndarray:
    """Intensity histogram of the brain plus shape statistics, per slice.

    The brain is the non-zero part of a slice (the slice stage maps background to 0). Per
    slice: the normalised histogram of brain intensities over ``(0, 1]`` in ``bins`` bins,
    then brain fraction of the image, mean and standard deviation of brain intensity,
    centroid row and column (0..1), the spreads along the two principal axes (square roots of
    the eigenvalues of the coordinate covariance, in image sides) and eccentricity.

    Args:
        images: ``(n, S, S)`` slices in ``[0, 1]``.
        bins: histogram bins.

    Returns:
        ``(n, bins + 8)`` float32 features.
    """
    n, height, width = images.shape
    rows, cols = np.mgrid[0:height, 0:width]
    rows = rows.ravel() / max(height - 1, 1)
    cols = cols.ravel() / max(width - 1, 1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    out = np.zeros((n, bins + 8), dtype=np.float32)
    for i, image in enumerate(images.reshape(n, -1)):
        brain = image > 0
        count = int(brain.sum())
        if count == 0:
            continue
        values = image[brain]
        out[i, :bins] = np.histogram(values, bins=edges)[0] / count
        coords = np.stack([rows[brain], cols[brain]])
        centre = coords.mean(axis=1)
        cov = np.cov(coords) if count > 1 else np.zeros((2, 2))
        major, minor = np.sqrt(np.clip(np.sort(np.linalg.eigvalsh(cov))[::-1], 0.0, None))
        eccentricity = float(np.sqrt(1.0 - (minor / major) ** 2)) if major > 0 else 0.0
        out[i, bins:] = [count / image.size, values.mean(), values.std(), *centre, major, minor, eccentricity]
    return out


def encode_slices(encoder: Any, images: np.ndarray, batch_size: int = 256, device: Any = "cpu") -> np.ndarray:
    """Embed slices with a frozen encoder, in batches, without gradients.

    Inputs are resized (bilinear) to the encoder's training size when the store's slices
    differ from it. On the CPU the result is deterministic for fixed thread settings.

    Args:
        encoder: an encoder in eval mode (``encoder(x) -> (B, D)``).
        images: ``(n, S, S)`` slices in ``[0, 1]`` (float) or uint8.
        batch_size: slices per forward pass.
        device: torch device the encoder lives on.

    Returns:
        ``(n, D)`` float32 embeddings.
    """
    import torch
    import torch.nn.functional as F

    size = int(encoder.config.get("img_size", images.shape[-1]))
    chunks = []
    with torch.inference_mode():
        for start in progress(range(0, len(images), batch_size), "embed batches"):
            batch = torch.from_numpy(_as_unit_float(images[start : start + batch_size])).unsqueeze(1)
            batch = batch.to(device)
            if batch.shape[-1] != size or batch.shape[-2] != size:
                batch = F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False)
            chunks.append(encoder(batch).float().cpu().numpy())
    dim = int(getattr(encoder, "embed_dim", 0))
    return np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)


def pool_units(slices: pd.DataFrame, window: Sequence[float]) -> pd.DataFrame:
    """Average slice features per unit (dataset, subject, session, contrast) inside a window.

    Slices whose position lies in ``[window[0], window[1]]`` are averaged; a unit without any
    such slice (a single 2D image has no position) keeps all its slices, so no unit is lost.

    Args:
        slices: a ``slices.parquet`` table.
        window: ``(low, high)`` slice positions.

    Returns:
        One row per unit: the unit columns, the subject labels, ``split``, ``n_slices``
        (slices averaged) and the mean features.
    """
    features = feature_columns(slices)
    low, high = window
    inside = slices["position"].between(low, high).to_numpy()
    has_inside = pd.Series(inside).groupby([slices[c].to_numpy() for c in UNIT_COLUMNS]).transform("any")
    chosen = slices[inside | ~has_inside.to_numpy()]
    keys = list(UNIT_COLUMNS)
    labels = [c for c in ("split", *LABEL_COLUMNS) if c in chosen.columns]
    grouped = chosen.groupby(keys, sort=True, dropna=False)
    pooled = grouped[features].mean().astype(np.float32)
    info = grouped[labels].first()
    info["n_slices"] = grouped.size()
    return pd.concat([info, pooled], axis=1).reset_index()


def embed_index(
    index_path: str | Path,
    encoder_spec: Mapping[str, Any] | None,
    slices_out: str | Path,
    units_out: str | Path,
    settings: EmbedSettings,
    root: str | Path | None = None,
    chunk: int = 2048,
) -> dict[str, Any]:
    """Embed every slice of a store with one encoder (or classical features) and pool per unit.

    Args:
        index_path: the merged slice index (``results/slices/index.parquet``).
        encoder_spec: see :func:`load_embedding_encoder`; ``None`` for the classical baseline.
        slices_out: destination of the per-slice table (Parquet).
        units_out: destination of the pooled table (Parquet).
        settings: batch size, device, pooling window, histogram bins.
        root: folder the index's array paths are relative to (default: working directory).
        chunk: slices read from the store at a time (bounds memory on large stores).

    Returns:
        Counts and the feature dimension, for the provenance record.
    """
    index = read_index(index_path).reset_index(drop=True)
    root_path = None if root is None else Path(root)
    encoder = device = None
    if encoder_spec is not None:
        device = _device(settings.device)
        encoder = load_embedding_encoder(encoder_spec, device)
    parts = []
    for start in range(0, len(index), chunk):
        images = _as_unit_float(_stored_slices(index.iloc[start : start + chunk], root_path))
        if encoder is None:
            parts.append(classical_features(images, settings.histogram_bins))
        else:
            parts.append(encode_slices(encoder, images, settings.batch_size, device))
    features = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    names = [f"f{i:03d}" for i in range(features.shape[1])]
    meta = index[[c for c in SLICE_COLUMNS if c in index.columns]].reset_index(drop=True)
    slices = pd.concat([meta, pd.DataFrame(features, columns=names)], axis=1)
    units = pool_units(slices, settings.pool_window)
    write_table(slices_out, slices)
    write_table(units_out, units)
    logger.info("embedded %d slices into %d units (%d features)", len(slices), len(units), len(names))
    return {"slices": len(slices), "units": len(units), "features": len(names)}


def _array_path(path: str, root: Path | None) -> Path:
    return Path(path) if root is None or Path(path).is_absolute() else root / path
