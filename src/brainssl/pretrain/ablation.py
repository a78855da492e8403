"""The slice-filter ablation's runs: the filtered run's recipe on unfiltered slices, at equal steps.

Run (a) is the ordinary ``<method>-<arch>`` run on the filtered store's train split, N slices.
The variants (:data:`brainssl.ablation.VARIANTS`) train with the same settings and seed on the
train split of the unfiltered store (every brain slice, :func:`brainssl.ablation.unfiltered_overrides`):

* ``unfiltered``: every epoch draws N slices without replacement from the whole pool, a new draw
  each epoch (``epoch_images = N``: the loop's seeded permutation of the pool, cut after its
  ``N // batch_size`` batches), so it sees more distinct slices in the same steps;
* ``subset``: a fixed seeded random subset of N slices of the pool, trained like (a).

All three have ``N // batch_size`` steps per epoch, so the same steps and schedules: only which
slices they see differs. :func:`slices_seen` counts the distinct slices a run saw.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainssl.ablation import VARIANTS
from brainssl.io import sha256_file

from .order import epoch_batches

__all__ = ["ablation_from_index", "draw_subset", "slices_seen", "train_slices"]

logger = logging.getLogger(__name__)


def train_slices(index: pd.DataFrame | str | Path) -> pd.DataFrame:
    """The ``train`` rows of a slice index (the pool a run draws from), in store order."""
    from brainssl.slices import read_index

    frame = index if isinstance(index, pd.DataFrame) else read_index(index)
    return frame[frame["split"] == "train"].reset_index(drop=True)


def draw_subset(pool: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """A seeded random subset of ``size`` rows of ``pool``, drawn without replacement, in store order.

    Raises:
        ValueError: when the pool holds fewer than ``size`` rows.
    """
    if not 0 < size <= len(pool):
        raise ValueError(f"cannot draw {size} slices from a pool of {len(pool)}")
    rows = np.sort(np.random.default_rng(seed).choice(len(pool), size=size, replace=False))
    return pool.iloc[rows].reset_index(drop=True)


def slices_seen(
    pool: int, *, batch_size: int, epochs: int, seed: int, steps: int, epoch_images: int | None = None
) -> int:
    """Distinct slices of a pool of ``pool`` that ``steps`` optimizer steps of the loop feed.

    Replays the loop's data order (:func:`brainssl.pretrain.order.epoch_batches`: batch ``s`` of
    epoch ``e`` is slice ``s`` of a permutation seeded by ``(seed, e)``; the global batch is the
    same on any number of ranks).

    Args:
        pool: slices the run draws from.
        batch_size: global images per step.
        epochs: the run's epochs.
        seed: the run's seed.
        steps: optimizer steps taken (the model card's ``training_metrics.step``).
        epoch_images: images per epoch when fewer than the pool (the unfiltered variant).
    """
    per_epoch = (epoch_images or pool) // batch_size
    seen = np.zeros(pool, dtype=bool)
    done = 0
    for epoch in range(epochs):
        take = min(per_epoch, steps - done)
        if take <= 0:
            break
        common = {"seed": seed, "epoch": epoch, "start": 0, "batch_size": batch_size, "rank": 0}
        batches = epoch_batches(pool, steps_per_epoch=take, micro_batch=batch_size, accumulation=1, **common)
        seen[[i for batch in batches for i in batch]] = True
        done += take
    return int(seen.sum())


def ablation_from_index(
    filtered_index: str | Path,
    unfiltered_index: str | Path,
    out_dir: str | Path,
    settings: Mapping[str, Any],
    probe: Mapping[str, Any],
    variant: str,
    *,
    root: str | Path | None = None,
    nprocs: int = 1,
) -> dict[str, Any]:
    """Train one ablation variant and export it (what rule ``pretrain_ablation`` calls).

    Args:
        filtered_index: the filtered store's merged index: its train split sets N, its held-out
            split gives the kNN probe sets (the same as run (a)'s).
        unfiltered_index: the unfiltered store's merged index (the pool).
        out_dir: the run folder (as :func:`~brainssl.pretrain.data.pretrain_from_index`).
        settings: run (a)'s :class:`~brainssl.pretrain.settings.PretrainSettings` mapping, with ``seed``.
        probe: keyword arguments of :func:`~brainssl.pretrain.data.slice_probe_sets`.
        variant: ``unfiltered`` or ``subset``.
        root: folder that relative array paths are relative to.
        nprocs: local processes, one per GPU.

    Returns:
        The training summary, with ``pool`` (slices drawn from), ``epoch_images`` and ``slices_seen``.

    Raises:
        ValueError: for an unknown variant, or a pool smaller than the filtered train split.
    """
    from brainssl.slices import SliceDataset, check_store, read_index

    from .data import pretrain_from_index

    if variant not in VARIANTS:
        raise ValueError(f"unknown ablation variant {variant!r}; choose one of {VARIANTS}")
    size = len(train_slices(filtered_index))
    store = read_index(unfiltered_index)
    check_store(store, root=root)  # the whole store: a subset's offsets do not cover its arrays
    pool = train_slices(store)
    if len(pool) < size:
        raise ValueError(
            f"the unfiltered pool ({len(pool)} slices) is smaller than the filtered store ({size})"
        )
    run = dict(settings)
    if variant == "subset":
        train = draw_subset(pool, size, int(run.get("seed", 0)))
    else:
        train, run["epoch_images"] = pool, size
    logger.info("ablation %s: %d training slices (filtered store: %d)", variant, len(train), size)
    summary = pretrain_from_index(
        filtered_index,
        out_dir,
        run,
        probe,
        root=root,
        nprocs=nprocs,
        train_set=SliceDataset(train, root=root, check=False),
        train_sha256=sha256_file(unfiltered_index),
    )
    seen = slices_seen(
        len(train),
        batch_size=int(run["batch_size"]),
        epochs=int(run["epochs"]),
        seed=int(run.get("seed", 0)),
        steps=int(summary["step"]),
        epoch_images=run.get("epoch_images"),
    )
    return {**summary, "pool": len(train), "epoch_images": run.get("epoch_images"), "slices_seen": seen}
