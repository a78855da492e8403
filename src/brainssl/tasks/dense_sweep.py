"""The variants of a dense task (frozen, fine-tuned, scratch) trained at every label fraction and seed.

Each task compares :class:`Variant` s of one architecture: every encoder ``frozen``
(encoder in eval mode, no gradients), every pretrained encoder ``finetune`` d end to end, and the
same architecture trained from ``scratch`` (fresh random weights, trained end to end).

A frozen encoder's maps of every task slice are computed once and cached on the host when they
fit ``feature_cache_gb`` (the demo: the encoder then runs once, not every epoch); above it the
frozen encoder runs on every batch, under ``no_grad`` in eval mode, which gives the same maps up
to float rounding of other batch compositions. Each trained network's test outputs go batch by
batch to the task's ``evaluate``, so no more than a batch (or the task's one subject) of outputs
is held at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from brainssl.logs import progress
from brainssl.pretrain.backbones import build_encoder
from brainssl.pretrain.export import encoder_spec, load_encoder

from .dense_memory import GB, RowSource
from .dense_networks import DenseModel, encode_slices, feature_bytes
from .dense_training import predict_batches, resolve_device, seeded_generator, train_dense
from .results import label_fraction_subjects

if TYPE_CHECKING:  # dense_settings imports MODES from here
    from .dense_settings import DenseTaskSettings

__all__ = ["MODES", "SweepResult", "TrainingSet", "Variant", "dense_variants", "encoder_side", "sweep"]

logger = logging.getLogger(__name__)

MODES = ("frozen", "finetune", "scratch")


@dataclass(frozen=True)
class Variant:
    """One way of using an encoder in a dense task.

    Attributes:
        encoder: results-table name (``moco-vit_tiny``, or ``scratch-vit_tiny`` for scratch).
        mode: ``frozen``, ``finetune`` or ``scratch``.
        path: encoder weights (for scratch: the weights whose architecture is rebuilt).
    """

    encoder: str
    mode: str
    path: str

    def build(self, seed: int, device: str | torch.device = "cpu") -> nn.Module:
        """Load (or, for scratch, freshly initialise from ``seed``) the variant's encoder."""
        encoder = load_encoder(self.path, device)
        if self.mode != "scratch":
            return encoder
        spec = encoder_spec(encoder)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh = build_encoder(spec.pop("arch"), **spec)
        return fresh.to(device)


def dense_variants(encoders: Mapping[str, str], modes: Sequence[str]) -> list[Variant]:
    """List the variants of a task: frozen encoders, fine-tuned pretrained ones, scratch per architecture.

    Encoders named ``random-<arch>`` are random initialisations: they are used frozen (the
    baseline every pretrained encoder must beat) and define the architecture of
    ``scratch-<arch>``; fine-tuning one would be scratch training again.

    Args:
        encoders: ``{name: path}`` as ``ENCODERS`` in the workflow.
        modes: which of :data:`MODES` to run.

    Raises:
        ValueError: for an unknown mode.
    """
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise ValueError(f"unknown dense modes {unknown}; choose from {list(MODES)}")
    variants = []
    if "frozen" in modes:
        variants += [Variant(name, "frozen", str(path)) for name, path in sorted(encoders.items())]
    if "finetune" in modes:
        variants += [
            Variant(name, "finetune", str(path))
            for name, path in sorted(encoders.items())
            if not name.startswith("random-")
        ]
    if "scratch" in modes:
        by_arch: dict[str, str] = {}
        for name, path in sorted(encoders.items()):
            if name.startswith("random-"):  # not a natural-image baseline's name (or its patch 14)
                by_arch.setdefault(name.split("-", 1)[-1], str(path))
        variants += [Variant(f"scratch-{arch}", "scratch", path) for arch, path in sorted(by_arch.items())]
    return variants


def encoder_side(encoders: Mapping[str, str]) -> int:
    """Input side of the encoders (all of one task share it); slices are cut at this size."""
    sides = {int(Variant(n, "frozen", p).build(0).config["img_size"]) for n, p in encoders.items()}
    if len(sides) != 1:
        raise ValueError(f"encoders of one dense task must share img_size, got {sorted(sides)}")
    return sides.pop()


@dataclass
class TrainingSet:
    """Training slices of every training subject (the label fractions choose among the subjects).

    Attributes:
        subjects: ``(N,)`` subject of each slice.
        images: ``(N, C, S, S)`` inputs (arrays, or :class:`~.dense_memory.Rows` of the stored slices).
        targets: ``(N, ...)`` targets (likewise, or made batch by batch from stored labels).
    """

    subjects: np.ndarray
    images: RowSource
    targets: RowSource


@dataclass
class SweepResult:
    """The outputs of one trained variant on the test slices.

    Attributes:
        variant: encoder and mode.
        fraction: label fraction.
        seed: seed of subject choice, initialisation and shuffling.
        n_train: training subjects used.
        evaluation: what the task's ``evaluate`` made of the raw outputs on the test slices.
        history: training loss per epoch.
    """

    variant: Variant
    fraction: float
    seed: int
    n_train: int
    evaluation: Any
    history: list[float]


def sweep(
    encoders: Mapping[str, str],
    task: DenseTaskSettings,
    train: TrainingSet,
    test_images: RowSource,
    out_channels: int,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    evaluate: Callable[[Iterator[torch.Tensor]], Any],
    *,
    residual: bool = False,
    first_bias: float | None = None,
    device: str | torch.device = "cpu",
) -> list[SweepResult]:
    """Train every variant at every label fraction and seed; predict the test slices.

    Frozen encoders run at every fraction, their maps computed once and cached while they fit
    ``task.feature_cache_gb``, else computed per batch; the variants that train the encoder
    (fine-tune, scratch) run only at the largest fraction, where they are the upper reference,
    because they cost an encoder's backward pass per step.

    Args:
        encoders: encoder name -> exported weights (:func:`dense_variants` with ``task.modes``).
        task: the dense task's settings: its modes, label fractions, seeds, training settings,
            slice cap per run (a seeded random subset) and feature-cache budget.
        train: all training slices.
        test_images: ``(M, C, S, S)`` test slices.
        out_channels: decoder outputs.
        loss_fn: training loss.
        evaluate: consumes the test outputs of one trained network, ``(B, K, S, S)`` batches in
            slice order, and returns what :attr:`SweepResult.evaluation` keeps.
        residual: see :class:`DenseModel`.
        first_bias: initial bias of output channel 0 (a heatmap's prior logit, as in CenterNet).
        device: where encoders and decoders run (``tasks.device``; see
            :func:`~brainssl.tasks.dense_training.resolve_device`); outputs come back to the host.

    Returns:
        One result per trained network.
    """
    fractions, settings, max_train_slices = task.fractions, task.train, task.max_train_slices
    subjects = np.unique(train.subjects)
    device = resolve_device(device)
    results = []
    for variant in progress(dense_variants(encoders, task.modes), "dense variants"):
        encoder = variant.build(seed=0, device=device)
        frozen = variant.mode == "frozen"
        cached = frozen and _cache_fits(encoder, train, test_images, task.feature_cache_gb)
        train_feats = encode_slices(encoder, train.images, device=device) if cached else None
        test_feats = encode_slices(encoder, test_images, device=device) if cached else None
        for fraction in fractions if frozen else [max(fractions)]:
            for seed in range(task.n_seeds):
                chosen = label_fraction_subjects(subjects, None, fraction, seed)
                rows = np.flatnonzero(np.isin(train.subjects, chosen))
                if len(rows) > max_train_slices:
                    rows = np.sort(np.random.default_rng(seed).choice(rows, max_train_slices, replace=False))
                model_encoder = encoder if frozen else variant.build(seed=seed, device=device)
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    model = DenseModel(
                        model_encoder,
                        train.images.shape[1],
                        out_channels,
                        frozen=frozen,
                        width=settings.width,
                        residual=residual,
                    )
                if first_bias is not None:
                    with torch.no_grad():
                        model.decoder.head[-1].bias[0] = first_bias
                history = train_dense(
                    model,
                    train.images,
                    train.targets,
                    loss_fn,
                    settings,
                    seeded_generator(seed),
                    train_feats,
                    device=device,
                    rows=rows,
                )
                evaluation = evaluate(predict_batches(model, test_images, test_feats, device=device))
                run = SweepResult(variant, float(fraction), int(seed), len(chosen), evaluation, history)
                results.append(run)
                logger.info(
                    "%s %s fraction %.3g seed %d: %d subjects, %d slices",
                    variant.encoder,
                    variant.mode,
                    fraction,
                    seed,
                    len(chosen),
                    len(rows),
                )
    return results


def _cache_fits(encoder: nn.Module, train: TrainingSet, test_images: RowSource, budget_gb: float) -> bool:
    """Whether a frozen encoder's maps of every train and test slice fit ``budget_gb``."""
    per_slice = feature_bytes(encoder, train.images.shape[1])
    needed = (len(train.images) + len(test_images)) * per_slice
    fits = needed <= budget_gb * GB
    if not fits:
        logger.info(
            "frozen maps need %.1f GB > feature_cache_gb %.3g: encoding per batch", needed / GB, budget_gb
        )
    return fits
