"""Training and inference of a dense network on slices, seeded apart from the global RNG.

Every task network (dense decoders, fine-tuned and scratch encoders, the scratch classifiers)
trains on the device :func:`resolve_device` picks from the ``tasks.device`` setting. On the CPU
nothing differs from a device-less loop (float32, same order of operations, so results do not
change). On CUDA the forward passes run under bf16 autocast (:func:`autocast`; losses are computed
in float32 on the upcast outputs), batches are gathered on the host and copied from pinned memory
without blocking (:func:`to_device`), and outputs come back to the host as float32.

Inputs are read one batch at a time (:func:`~brainssl.tasks.dense_memory.batch_tensor`), so they may
be disk-backed memory maps; :func:`predict_batches` hands the outputs back batch by batch, so that
callers score them without holding every test slice's outputs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .dense_memory import RowSource, batch_tensor
from .dense_networks import DenseModel

__all__ = [
    "DEVICES",
    "TrainSettings",
    "autocast",
    "predict_batches",
    "regroup",
    "resolve_device",
    "run_epochs",
    "seeded_generator",
    "to_device",
    "train_dense",
]

logger = logging.getLogger(__name__)

#: Values of a ``device`` setting: ``auto`` takes CUDA when torch finds a GPU, else the CPU.
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device = "cpu", setting: str = "tasks.device") -> torch.device:
    """The torch device a ``device`` setting names.

    Args:
        name: ``auto`` (CUDA when torch finds a GPU, else the CPU), ``cpu``, ``cuda`` or
            ``cuda:<index>``; a :class:`torch.device` is returned as it is.
        setting: the config key named in the error message.

    Raises:
        ValueError: for another name.
        RuntimeError: for ``cuda`` where torch finds no GPU (never a silent CPU fallback).
    """
    if isinstance(name, torch.device):
        return name
    if name not in DEVICES and not name.startswith("cuda:"):
        raise ValueError(f"{setting} = {name!r}: not one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"{setting} = {name!r} but torch finds no CUDA GPU here (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda or 'none'}); use 'cpu' or 'auto', or run the job where a GPU is"
        )
    return torch.device(name)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; nothing on the CPU (float32 there, so CPU results stay as they were)."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host batch on ``device``: pinned and copied without blocking on CUDA; as it is on the CPU."""
    if device.type != "cuda":
        return tensor
    if tensor.device.type == "cpu":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


@dataclass(frozen=True)
class TrainSettings:
    """How long and how fast a dense head (or whole network) trains.

    The training subset of a dense task's settings
    (:attr:`brainssl.tasks.dense_settings.DenseTaskSettings.train`), whose defaults it takes.

    Attributes:
        epochs: passes over the training slices.
        batch_size: slices per step.
        lr: AdamW learning rate of the decoder.
        encoder_lr: learning rate of a trained encoder (fine-tune / scratch).
        weight_decay: AdamW weight decay.
        width: decoder width.
    """

    epochs: int
    batch_size: int
    lr: float
    encoder_lr: float
    weight_decay: float
    width: int


def run_epochs(
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    n_samples: int,
    epochs: int,
    batch_size: int,
    optimiser: torch.optim.Optimizer,
    generator: torch.Generator,
) -> list[float]:
    """Shuffled mini-batch epochs over ``n_samples``; returns the mean loss of each epoch.

    ``batch_loss(indices)`` computes one batch's loss. A last batch of one sample is skipped
    (BatchNorm needs two), and a non-finite loss raises ``ValueError`` naming the epoch.
    """
    history = []
    for epoch in range(epochs):
        order = torch.randperm(n_samples, generator=generator)
        total, count = 0.0, 0
        for start in range(0, n_samples, batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < 2 and n_samples > 1:
                continue
            loss = batch_loss(idx)
            if not torch.isfinite(loss):
                raise ValueError(f"non-finite training loss at epoch {epoch}")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        history.append(total / max(count, 1))
    return history


def train_dense(
    model: DenseModel,
    images: RowSource,
    targets: RowSource,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    settings: TrainSettings,
    generator: torch.Generator,
    features: Sequence[torch.Tensor] | None = None,
    device: str | torch.device = "cpu",
    rows: np.ndarray | None = None,
) -> list[float]:
    """Train ``model`` on slices; return the mean loss of each epoch.

    Args:
        model: the network (its encoder frozen or not).
        images: ``(N, C, S, S)`` float32 inputs.
        targets: ``(N, ...)`` targets ``loss_fn`` understands.
        loss_fn: ``loss_fn(output, target) -> scalar``.
        settings: epochs, batch size, learning rates.
        generator: shuffling order.
        features: cached encoder maps of ``images`` (frozen encoders only; on the host). ``None``
            for a frozen encoder runs it on every batch, in eval mode without gradients.
        device: where the model trains (:func:`resolve_device`); batches are copied there.
        rows: the slices of ``images``, ``targets`` and ``features`` to train on (``None``: all);
            each batch reads only its own rows, so no subset is copied.

    Raises:
        ValueError: for no training slices, mismatched lengths or a non-finite loss.
    """
    if len(images) == 0 or len(images) != len(targets):
        raise ValueError(f"need matching, non-empty images and targets, got {len(images)} and {len(targets)}")
    chosen = np.arange(len(images)) if rows is None else np.asarray(rows)
    if len(chosen) == 0:
        raise ValueError("need at least one training row")
    device = resolve_device(device)
    model.to(device)
    groups = [{"params": list(model.decoder.parameters()), "lr": settings.lr}]
    if not model.frozen:
        groups.append({"params": list(model.encoder.parameters()), "lr": settings.encoder_lr})
    optimiser = torch.optim.AdamW(groups, weight_decay=settings.weight_decay)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        picked = chosen[idx.numpy()]
        batch_features = None
        if features is not None:
            batch_features = [to_device(f[torch.from_numpy(picked)], device) for f in features]
        with autocast(device):
            output = model(to_device(batch_tensor(images, picked), device), batch_features)
        return loss_fn(output.float(), to_device(batch_tensor(targets, picked), device))

    model.train()
    history = run_epochs(batch_loss, len(chosen), settings.epochs, settings.batch_size, optimiser, generator)
    logger.info("trained %d epochs on %d slices: loss %s", settings.epochs, len(chosen), _fmt(history))
    return history


def _fmt(values: Sequence[float]) -> str:
    return " ".join(f"{v:.4f}" for v in values) if values else "-"


def predict_batches(
    model: DenseModel,
    images: RowSource,
    features: Sequence[torch.Tensor] | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> Iterator[torch.Tensor]:
    """Run ``model`` in eval mode over ``(N, C, S, S)`` slices; yield the raw outputs batch by batch.

    Each batch is ``(B, K, S, S)`` float32 on the host, wherever ``device`` (:func:`resolve_device`)
    puts the model; ``features`` are cached maps of a frozen encoder (``None``: computed per batch).
    """
    device = resolve_device(device)
    model.to(device)
    model.eval()
    for start in range(0, len(images), batch_size):
        stop = start + batch_size
        batch_features = None if features is None else [to_device(f[start:stop], device) for f in features]
        with torch.no_grad(), autocast(device):
            output = model(to_device(batch_tensor(images, slice(start, stop)), device), batch_features)
        yield output.float().cpu()


def regroup(batches: Iterable[torch.Tensor], lengths: Sequence[int]) -> Iterator[torch.Tensor]:
    """Consecutive runs of ``lengths`` rows from a stream of batches: one subject's outputs at a time."""
    stream = iter(batches)
    pending: list[torch.Tensor] = []
    have = 0
    for length in lengths:
        while have < length:
            batch = next(stream)
            pending.append(batch)
            have += len(batch)
        joined = torch.cat(pending) if len(pending) > 1 else pending[0] if pending else torch.zeros(0)
        yield joined[:length]
        rest = joined[length:]
        pending, have = ([rest] if len(rest) else []), len(rest)


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator for shuffling (never the global RNG)."""
    return torch.Generator().manual_seed(int(seed))
