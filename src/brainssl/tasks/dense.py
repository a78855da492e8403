"""Shared machinery of the dense tasks: slices of whole volumes, encoder variants, a decoder, training.

Dense tasks score predictions per subject in 3D, so they need *every* axial slice of a test
volume, not the filtered slice store. :func:`cut_volume` cuts a preprocessed volume into the
store's view (radiological, brain-percentile intensity mapping, zero-padded square resized to
the encoder's input side; labels by nearest neighbour) and keeps the grid spacing so that 3D
distances come out in millimetres.

One network serves every dense task: the encoder's four feature maps
(``forward_features``) feed :class:`DenseDecoder`, a feature-pyramid top-down fusion
followed by progressive x2 upsampling (as in SETR-PUP, Zheng et al. 2021, CVPR) and a
full-resolution image stem concatenated before the output convolution (the input skip of
UNETR, Hatamizadeh et al. 2022, WACV). For a ResNet the pyramid levels are its stage outputs
at strides 4-32 (U-Net-like skips); for a ViT the four token maps share stride 16, and the
image stem carries the fine detail. Several contrasts pass the *shared* encoder one by one
and their maps are concatenated channel-wise.

Each task compares :class:`Variant` s of one architecture: every encoder ``frozen``
(encoder in eval mode, no gradients, features computed once and cached), every pretrained
encoder ``finetune`` d end to end, and the same architecture trained from ``scratch``
(fresh random weights, trained end to end).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from brainssl.pretrain.backbones import build_encoder
from brainssl.pretrain.export import encoder_spec, load_encoder
from brainssl.slices.measures import map_intensity, radiological, square_resize
from brainssl.splits import subject_split

__all__ = [
    "MODES",
    "DenseDecoder",
    "DenseModel",
    "TrainSettings",
    "VolumeSlices",
    "Variant",
    "cut_volume",
    "dense_split",
    "dense_variants",
    "encode_contrasts",
    "encode_slices",
    "mean_or_nan",
    "predict",
    "seeded_generator",
    "SweepResult",
    "sweep",
    "TrainingSet",
    "train_dense",
]

logger = logging.getLogger(__name__)

MODES = ("frozen", "finetune", "scratch")
INTENSITY_PERCENTILES = (0.5, 99.5)
"""The slice store's intensity mapping (``brainssl.slices.measures``)."""


# ------------------------------------------------------------------------- volumes


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
    mapped = [radiological(map_intensity(v, brain, INTENSITY_PERCENTILES)) for v in volumes]
    channels = [square_resize(v, size) for v in mapped]
    images = np.stack(channels, axis=1).astype(np.float32)
    cut_labels = None
    if labels is not None:
        cut_labels = square_resize(radiological(np.asarray(labels).astype(np.uint8)), size, label=True)
    in_plane = voxel_mm * max(shape[0], shape[1]) / size
    return VolumeSlices(subject, session, images, cut_labels, (float(voxel_mm), in_plane, in_plane))


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


# ------------------------------------------------------------------------ variants


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
            by_arch.setdefault(name.split("-", 1)[-1], str(path))
        variants += [Variant(f"scratch-{arch}", "scratch", path) for arch, path in sorted(by_arch.items())]
    return variants


# -------------------------------------------------------------------------- models


def _conv(in_ch: int, out_ch: int) -> nn.Sequential:
    conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
    return nn.Sequential(conv, nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class DenseDecoder(nn.Module):
    """Light decoder from four encoder maps (plus the input image) to full-resolution outputs.

    Args:
        level_dims: channels of the four maps (already multiplied by the number of contrasts).
        image_channels: channels of the input image (contrasts).
        out_channels: output channels (classes, regions, heatmap + sizes, or one image).
        width: channels inside the decoder.

    Shapes:
        features: four ``(B, level_dims[i], h_i, w_i)`` maps; image ``(B, image_channels, H, W)``
        -> ``(B, out_channels, H, W)``.
    """

    def __init__(self, level_dims: Sequence[int], image_channels: int, out_channels: int, width: int = 32):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(d, width, 1) for d in level_dims)
        self.fuse = _conv(width, width)
        self.up = _conv(width, width)
        self.stem = nn.Sequential(_conv(image_channels, width // 2), _conv(width // 2, width // 2))
        self.head = nn.Sequential(_conv(width + width // 2, width), nn.Conv2d(width, out_channels, 1))

    def forward(self, features: Sequence[torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        """Fuse the pyramid top-down, upsample x2 until the image size, add the image stem."""
        x = self.lateral[-1](features[-1])
        for lateral, feature in zip(self.lateral[-2::-1], features[-2::-1], strict=True):
            x = F.interpolate(x, size=feature.shape[-2:], mode="bilinear", align_corners=False)
            x = x + lateral(feature)
        x = self.fuse(x)
        size = image.shape[-2:]
        while x.shape[-2] * 2 <= size[0] and x.shape[-1] * 2 <= size[1]:
            x = self.up(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.head(torch.cat([x, self.stem(image)], dim=1))


class DenseModel(nn.Module):
    """Shared encoder over contrasts + :class:`DenseDecoder`; frozen or trained end to end.

    Args:
        encoder: a :func:`~brainssl.pretrain.backbones.build_encoder` encoder (one input channel).
        n_contrasts: input channels, each passed through the encoder separately.
        out_channels: decoder outputs.
        frozen: keep the encoder in eval mode without gradients.
        width: decoder width.
        residual: add the first input channel to output channel 0, the output layer starting at zero
            (reconstruction refines its input).
    """

    def __init__(
        self,
        encoder: nn.Module,
        n_contrasts: int,
        out_channels: int,
        *,
        frozen: bool,
        width: int = 32,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.frozen = frozen
        self.residual = residual
        self.n_contrasts = n_contrasts
        with torch.no_grad():
            probe = encoder.forward_features(torch.zeros(1, 1, *_input_side(encoder)))
        dims = [m.shape[1] * n_contrasts for m in probe]
        self.decoder = DenseDecoder(dims, n_contrasts, out_channels, width)
        if residual:
            # an untrained refiner returns its input, so training starts from the input's quality
            nn.init.zeros_(self.decoder.head[-1].weight)
            nn.init.zeros_(self.decoder.head[-1].bias)
        if frozen:
            encoder.requires_grad_(False)
            encoder.eval()

    def train(self, mode: bool = True) -> DenseModel:
        """Switch to training mode, leaving a frozen encoder in eval mode (BatchNorm/dropout fixed)."""
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``(B, C, H, W)`` -> four maps ``(B, C * D_i, h_i, w_i)`` through the shared encoder."""
        return encode_contrasts(self.encoder, images)

    def forward(self, images: torch.Tensor, features: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Predict from images; ``features`` may carry cached maps of a frozen encoder."""
        if features is None:
            if self.frozen:
                with torch.no_grad():
                    features = self.encode(images)
            else:
                features = self.encode(images)
        out = self.decoder(features, images)
        if self.residual:
            out = torch.cat([out[:, :1] + images[:, :1], out[:, 1:]], dim=1)
        return out


def _input_side(encoder: nn.Module) -> tuple[int, int]:
    side = int(encoder.config["img_size"])  # type: ignore[index]
    return side, side


def encode_contrasts(encoder: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Pass each contrast of ``(B, C, H, W)`` through the shared encoder; concatenate the maps channel-wise.

    Returns:
        Four maps ``(B, C * D_i, h_i, w_i)``.
    """
    b, c = images.shape[:2]
    maps = encoder.forward_features(images.reshape(b * c, 1, *images.shape[-2:]))
    return [m.reshape(b, c * m.shape[1], *m.shape[-2:]) for m in maps]


@torch.no_grad()
def encode_slices(encoder: nn.Module, images: np.ndarray, batch_size: int = 64) -> list[torch.Tensor]:
    """Cache a frozen encoder's maps of ``(N, C, S, S)`` slices (contrasts through the shared encoder)."""
    encoder.eval()
    chunks: list[list[torch.Tensor]] = []
    for start in range(0, len(images), batch_size):
        chunks.append(encode_contrasts(encoder, torch.from_numpy(images[start : start + batch_size])))
    if not chunks:
        raise ValueError("no slices to encode")
    return [torch.cat([c[i] for c in chunks]) for i in range(len(chunks[0]))]


# ------------------------------------------------------------------------ training


@dataclass(frozen=True)
class TrainSettings:
    """How long and how fast a dense head (or whole network) trains.

    Attributes:
        epochs: passes over the training slices.
        batch_size: slices per step.
        lr: AdamW learning rate of the decoder.
        encoder_lr: learning rate of a trained encoder (fine-tune / scratch).
        weight_decay: AdamW weight decay.
        width: decoder width.
    """

    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-3
    encoder_lr: float = 1e-4
    weight_decay: float = 1e-4
    width: int = 32

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainSettings:
        """Build from a config subsection, ignoring keys that are not training settings."""
        return cls(**{k: values[k] for k in cls.__dataclass_fields__ if k in values})


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
    images: np.ndarray,
    targets: np.ndarray,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    settings: TrainSettings,
    generator: torch.Generator,
    features: Sequence[torch.Tensor] | None = None,
) -> list[float]:
    """Train ``model`` on slices; return the mean loss of each epoch.

    Args:
        model: the network (its encoder frozen or not).
        images: ``(N, C, S, S)`` float32 inputs.
        targets: ``(N, ...)`` targets ``loss_fn`` understands.
        loss_fn: ``loss_fn(output, target) -> scalar``.
        settings: epochs, batch size, learning rates.
        generator: shuffling order.
        features: cached encoder maps of ``images`` (frozen encoders only).

    Raises:
        ValueError: for no training slices, mismatched lengths or a non-finite loss.
    """
    if len(images) == 0 or len(images) != len(targets):
        raise ValueError(f"need matching, non-empty images and targets, got {len(images)} and {len(targets)}")
    groups = [{"params": list(model.decoder.parameters()), "lr": settings.lr}]
    if not model.frozen:
        groups.append({"params": list(model.encoder.parameters()), "lr": settings.encoder_lr})
    optimiser = torch.optim.AdamW(groups, weight_decay=settings.weight_decay)
    image_t, target_t = torch.from_numpy(images), torch.from_numpy(targets)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        batch_features = None if features is None else [f[idx] for f in features]
        return loss_fn(model(image_t[idx], batch_features), target_t[idx])

    model.train()
    history = run_epochs(batch_loss, len(images), settings.epochs, settings.batch_size, optimiser, generator)
    logger.info("trained %d epochs on %d slices: loss %s", settings.epochs, len(images), _fmt(history))
    return history


def _fmt(values: Sequence[float]) -> str:
    return " ".join(f"{v:.4f}" for v in values) if values else "-"


@torch.no_grad()
def predict(
    model: DenseModel,
    images: np.ndarray,
    features: Sequence[torch.Tensor] | None = None,
    batch_size: int = 64,
) -> torch.Tensor:
    """Run ``model`` in eval mode over ``(N, C, S, S)`` slices; return the raw outputs ``(N, K, S, S)``."""
    model.eval()
    outs = []
    for start in range(0, len(images), batch_size):
        stop = start + batch_size
        batch_features = None if features is None else [f[start:stop] for f in features]
        outs.append(model(torch.from_numpy(images[start:stop]), batch_features))
    return torch.cat(outs) if outs else torch.zeros(0)


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator for shuffling (never the global RNG)."""
    return torch.Generator().manual_seed(int(seed))


def mean_or_nan(values: np.ndarray) -> float:
    """Mean over finite values; NaN when there are none (no warning)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return float(finite.mean()) if finite.size else math.nan


# --------------------------------------------------------------------------- sweep


@dataclass
class TrainingSet:
    """Training slices of every training subject (the label fractions choose among the subjects).

    Attributes:
        subjects: ``(N,)`` subject of each slice.
        images: ``(N, C, S, S)`` inputs.
        targets: ``(N, ...)`` targets.
    """

    subjects: np.ndarray
    images: np.ndarray
    targets: np.ndarray


@dataclass
class SweepResult:
    """The outputs of one trained variant on the test slices.

    Attributes:
        variant: encoder and mode.
        fraction: label fraction.
        seed: seed of subject choice, initialisation and shuffling.
        n_train: training subjects used.
        outputs: ``(M, K, S, S)`` raw outputs on the test slices.
        history: training loss per epoch.
    """

    variant: Variant
    fraction: float
    seed: int
    n_train: int
    outputs: torch.Tensor
    history: list[float]


def sweep(
    variants: Sequence[Variant],
    train: TrainingSet,
    test_images: np.ndarray,
    fractions: Sequence[float],
    seeds: Sequence[int],
    settings: TrainSettings,
    out_channels: int,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    max_train_slices: int,
    residual: bool = False,
    first_bias: float | None = None,
) -> list[SweepResult]:
    """Train every variant at every label fraction and seed; predict the test slices.

    Frozen encoders run at every fraction with their maps computed once and cached; the
    variants that train the encoder (fine-tune, scratch) run only at the largest fraction,
    where they are the upper reference, because they cost an encoder's backward pass per step.

    Args:
        variants: from :func:`dense_variants`.
        train: all training slices.
        test_images: ``(M, C, S, S)`` test slices.
        fractions: label fractions (share of training subjects).
        seeds: seeds.
        settings: training settings.
        out_channels: decoder outputs.
        loss_fn: training loss.
        max_train_slices: cap on training slices per run (a seeded random subset).
        residual: see :class:`DenseModel`.
        first_bias: initial bias of output channel 0 (a heatmap's prior logit, as in CenterNet).

    Returns:
        One result per trained network.
    """
    from brainssl.tasks.results import label_fraction_subjects

    subjects = np.unique(train.subjects)
    results = []
    for variant in variants:
        encoder = variant.build(seed=0)
        frozen = variant.mode == "frozen"
        train_feats = encode_slices(encoder, train.images) if frozen else None
        test_feats = encode_slices(encoder, test_images) if frozen else None
        for fraction in fractions if frozen else [max(fractions)]:
            for seed in seeds:
                chosen = label_fraction_subjects(subjects, None, fraction, seed)
                rows = np.flatnonzero(np.isin(train.subjects, chosen))
                if len(rows) > max_train_slices:
                    rows = np.sort(np.random.default_rng(seed).choice(rows, max_train_slices, replace=False))
                model_encoder = encoder if frozen else variant.build(seed=seed)
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
                feats = None if train_feats is None else [f[torch.from_numpy(rows)] for f in train_feats]
                history = train_dense(
                    model,
                    train.images[rows],
                    train.targets[rows],
                    loss_fn,
                    settings,
                    seeded_generator(seed),
                    feats,
                )
                outputs = predict(model, test_images, test_feats)
                run = SweepResult(variant, float(fraction), int(seed), len(chosen), outputs, history)
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
