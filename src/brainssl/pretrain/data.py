"""The slice store as pretraining data: the training set and the held-out kNN probe sets.

Pretraining reads the merged slice index (``results/slices/index.parquet``) through
:class:`brainssl.slices.SliceDataset`, which checks the index against its arrays first,
so a corrupt shard or a disagreeing index stops the run before any training step. The
probe sets come from a held-out split: subjects are divided into a probe-train and a
probe-test half (no subject in both, so neighbouring slices of one volume cannot leak),
and each probe balances its classes by subsampling.

Probes:
    ``contrast``: the ``contrast`` column (T1w, T2w, FLAIR...), when at least two occur.
    ``position``: ``position`` (0..1 along the brain's axial extent) cut into equal bins.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.multiprocessing as mp
from torch.utils.data import Dataset

from brainssl.io import sha256_file

from .methods import export_random, train
from .probe import ProbeSet
from .settings import PretrainSettings

__all__ = ["slice_probe_sets", "pretrain_from_index", "random_from_index", "PreemptedError"]

logger = logging.getLogger(__name__)


class PreemptedError(RuntimeError):
    """Training stopped early (signal or ``max_steps``); the checkpoint is kept for the retry."""


def _labels(frame: pd.DataFrame, name: str, position_bins: int) -> np.ndarray | None:
    """Class codes of one probe per slice; -1 where the slice has no such label (2D images' position)."""
    if name == "position":
        pos = frame["position"].to_numpy(float)
        known = np.isfinite(pos)
        codes = np.full(len(pos), -1, np.int64)
        codes[known] = np.minimum(
            (pos[known].clip(0.0, 1.0) * position_bins).astype(np.int64), position_bins - 1
        )
        return codes
    column = {"contrast": "contrast", "dataset": "dataset", "pathology": "pathology"}.get(name)
    if column is None:
        raise ValueError(f"unknown probe {name!r}; choose contrast, position, dataset or pathology")
    values = frame[column].astype("string")
    codes, uniques = pd.factorize(values.where(values.str.len() > 0), sort=True)
    return codes.astype(np.int64) if len(uniques) >= 2 else None


def _balanced(labels: np.ndarray, rows: np.ndarray, n_per_class: int, rng: np.random.Generator) -> np.ndarray:
    picked = []
    for cls in np.unique(labels[rows]):
        members = rows[labels[rows] == cls]
        picked.append(rng.choice(members, size=min(n_per_class, len(members)), replace=False))
    return np.sort(np.concatenate(picked)) if picked else rows[:0]


def slice_probe_sets(
    index: str | Path,
    *,
    root: str | Path | None = None,
    split: str,
    probes: tuple[str, ...],
    n_per_class: int,
    position_bins: int,
    seed: int,
) -> dict[str, ProbeSet]:
    """Build labelled probe sets from the held-out ``split`` of a slice index.

    Args:
        index: the merged slice index (Parquet).
        root: folder that the index's relative array paths are relative to.
        split: the held-out split to draw from (``val`` or ``test``; never ``train``).
        probes: which probes to build (``contrast``, ``position``, ``dataset``, ``pathology``).
        n_per_class: at most this many slices per class on each side (probe-train, probe-test).
        position_bins: equal-width bins of ``position`` for the position probe.
        seed: subject split and subsampling seed.

    Returns:
        ``{probe name: ProbeSet}`` with uint8 images ``(N, 1, S, S)``; a probe with fewer than
        two classes on either side is left out (and logged).

    Raises:
        ValueError: if ``split`` is ``train``, has no rows, or a probe name is unknown.
    """
    from brainssl.slices import SliceDataset

    if split == "train":
        raise ValueError("probe slices must come from a held-out split, not 'train'")
    data = SliceDataset(index, root=root, split=split)
    frame = data.index
    if len(frame) == 0:
        raise ValueError(f"slice index {index} has no rows in split {split!r} for the kNN probe")
    rng = np.random.default_rng(seed)
    subjects = frame["dataset"].astype(str) + "/" + frame["subject"].astype(str)
    unique = subjects.unique()
    probe_train = set(rng.permutation(unique)[: max(1, len(unique) // 2)])
    side = subjects.isin(probe_train).to_numpy()
    out: dict[str, ProbeSet] = {}
    for name in probes:
        labels = _labels(frame, name, position_bins)
        if labels is None:
            logger.info("probe %s skipped: fewer than two classes in split %s", name, split)
            continue
        sides = [
            _balanced(labels, np.flatnonzero(mask & (labels >= 0)), n_per_class, rng)
            for mask in (side, ~side)
        ]
        if any(len(np.unique(labels[rows])) < 2 for rows in sides):
            logger.info("probe %s skipped: a subject half of %s has fewer than two classes", name, split)
            continue
        images = [torch.stack([(data[int(i)] * 255).round().to(torch.uint8) for i in rows]) for rows in sides]
        targets = [torch.from_numpy(labels[rows]).long() for rows in sides]
        out[name] = ProbeSet(images[0], targets[0], images[1], targets[1])
        logger.info("probe %s: %d / %d slices", name, len(sides[0]), len(sides[1]))
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _train_rank(local_rank: int, world: int, port: int, args: tuple, results: Any) -> None:
    """One process of a single-node multi-GPU run started by :func:`pretrain_from_index`."""
    os.environ.update(
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    summary = train(*args[:4], intensity=args[4], manifest_sha256=args[5])
    if local_rank == 0:
        results.put(summary)


def pretrain_from_index(
    index: str | Path,
    out_dir: str | Path,
    settings: Mapping[str, Any],
    probe: Mapping[str, Any],
    *,
    root: str | Path | None = None,
    intensity: str | None = None,
    nprocs: int = 1,
    train_set: Dataset | None = None,
    train_sha256: str | None = None,
) -> dict[str, Any]:
    """Train one method on the ``train`` split of a slice index and export it (what rules call).

    Args:
        index: the merged slice index (Parquet); checked against its arrays first.
        out_dir: the run folder (see :func:`~brainssl.pretrain.methods.train`).
        settings: a :class:`~brainssl.pretrain.settings.PretrainSettings` mapping.
        probe: keyword arguments of :func:`slice_probe_sets` (``split``, ``n_per_class``...).
        root: folder that relative array paths are relative to.
        intensity: the slice stage's intensity mapping, for the model card.
        nprocs: local processes, one per GPU (DDP on one node). Ignored when the environment
            already describes several processes (torchrun, or a SLURM step with several tasks).
        train_set: the training set when it is not ``index``'s train split (the slice-filter
            ablation's, :mod:`brainssl.pretrain.ablation`); the probe sets still come from ``index``.
        train_sha256: the hash of ``train_set``'s store recorded in the model card (default: ``index``'s).

    Returns:
        The training summary.

    Raises:
        PreemptedError: when a signal stopped the run (rerun to resume from the checkpoint).
        NonFiniteLossError: when the loss became NaN or infinite.
    """
    from brainssl.slices import INTENSITY_MAPPING, SliceDataset

    run = PretrainSettings.from_dict(settings)
    probes = slice_probe_sets(index, root=root, seed=run.seed, **probe)
    dataset = SliceDataset(index, root=root, split="train") if train_set is None else train_set
    args = (run, dataset, probes, out_dir, intensity or INTENSITY_MAPPING, train_sha256 or sha256_file(index))
    launched = int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1"))) > 1
    if nprocs > 1 and not launched:
        ctx = mp.get_context("spawn")
        results = ctx.SimpleQueue()
        # children replace these with the loop's checkpoint-and-stop handlers; SLURM signals them directly
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGUSR1)}
        # Snakemake runs adapters as unguarded scripts; spawn would re-run __main__ in every child
        main = sys.modules["__main__"]
        main_file = main.__dict__.pop("__file__", None)
        try:
            mp.start_processes(
                _train_rank, args=(nprocs, _free_port(), args, results), nprocs=nprocs, start_method="spawn"
            )
        finally:
            if main_file is not None:
                main.__file__ = main_file
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        summary = results.get()
    else:
        summary = train(*args[:4], intensity=args[4], manifest_sha256=args[5])
    if summary["status"] != "completed":
        raise PreemptedError(
            f"training stopped at step {summary['step']} ({summary['status']}); "
            f"rerun to resume from {summary['checkpoint']}"
        )
    return summary


def random_from_index(
    index: str | Path,
    out_dir: str | Path,
    settings: Mapping[str, Any],
    probe: Mapping[str, Any],
    *,
    root: str | Path | None = None,
    intensity: str | None = None,
) -> dict[str, Any]:
    """Export the random-initialised baseline encoder with its kNN probe results (same layout)."""
    from brainssl.slices import INTENSITY_MAPPING

    run = PretrainSettings.from_dict(settings)
    probes = slice_probe_sets(index, root=root, seed=run.seed, **probe)
    return export_random(
        run, probes, out_dir, intensity=intensity or INTENSITY_MAPPING, manifest_sha256=sha256_file(index)
    )
