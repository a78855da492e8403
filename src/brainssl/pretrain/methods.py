"""The one place where pretraining config values become objects; ``train`` is what rules call.

:class:`PretrainSettings` is the validated config slice of one run. :func:`train` builds
the encoder, method, schedules and loop from it, trains (resuming from
``out_dir/checkpoints/last.pt`` when present), and exports the student encoder with its
model card. :func:`export_random` exports a random-initialised encoder the same way (the
baseline every downstream comparison needs).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from brainssl.architectures import METHODS
from brainssl.io import write_text
from brainssl.settings import from_mapping, setting

from .augment import AugmentSettings, multi_crop, two_views
from .backbones import ARCHS, build_encoder, is_vit
from .distributed import DistEnv, init_distributed
from .export import CARD_FILE, ENCODER_FILE, export_encoder
from .loop import Trainer
from .meta import DINO, MoCoV3
from .options import LoopOptions
from .probe import ProbeSet, run_probes
from .schedules import build_schedules

__all__ = ["PretrainSettings", "build_method", "build_trainer", "train", "export_random", "settings_hash"]

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OPTIMIZERS = ("adamw", "lars")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class PretrainSettings:
    """Settings of one pretraining run (defaults: MoCo v3 / DINO ViT-S/16 values of the papers).

    Attributes:
        method: ``moco`` or ``dino``.
        arch: ``vit_tiny``, ``vit_small``, ``vit_base``, ``resnet18`` or ``resnet50``.
        img_size: global view side (pixels, multiple of 16).
        batch_size: global batch per optimizer step (all GPUs and micro-batches).
        epochs: training epochs.
        lr: base learning rate per 256 images (scaled by ``batch_size / 256``).
        min_lr: final learning rate of the cosine.
        warmup_epochs: linear learning-rate warm-up.
        weight_decay: initial weight decay.
        weight_decay_end: final weight decay (DINO: cosine 0.04 -> 0.4; equal values: constant).
        optimizer: ``adamw`` or ``lars`` (MoCo v3 ResNet-50).
        momentum: initial EMA momentum of the momentum encoder / teacher (cosine to 1).
        temperature: MoCo v3 InfoNCE temperature.
        moco_dim: MoCo projection output width.
        moco_mlp_dim: MoCo MLP hidden width.
        random_patch_proj: freeze the ViT patch projection at random init (MoCo v3 trick).
        crop_scale: MoCo crop area range.
        moco_m_cos: MoCo v3's ``--moco-m-cos``: raise the momentum to 1 on a cosine (on, as in the
            paper's and CONFIG.md's recipes); off keeps it constant (their argparse default).
        out_dim: DINO prototypes K.
        head_hidden_dim: DINO head hidden width.
        head_bottleneck_dim: DINO head bottleneck width.
        norm_last_layer: fix DINO's last-layer gain at 1.
        head_use_bn: batch normalisation in DINO's head.
        student_temp: DINO student temperature.
        teacher_temp: DINO teacher temperature after warm-up.
        warmup_teacher_temp: DINO teacher temperature at the start.
        warmup_teacher_temp_epochs: DINO teacher-temperature warm-up length.
        center_momentum: DINO centre EMA momentum.
        n_local_crops: DINO local crops.
        local_size: DINO local crop side (multiple of 16 for ViTs).
        global_crop_scale: DINO global crop area range.
        local_crop_scale: DINO local crop area range.
        freeze_last_layer_epochs: DINO epochs with a frozen last layer.
        clip_grad: per-parameter gradient clip (DINO 3.0; 0 off).
        accumulation: micro-batches per optimizer step.
        checkpoint_every: checkpoint interval in optimizer steps (0: end only).
        log_every: metrics interval in optimizer steps.
        precision: ``auto`` (bf16 on CUDA, fp32 on CPU), ``fp32``, ``bf16``, ``fp16``.
        compile: ``torch.compile`` the student.
        channels_last: channels-last memory format for ResNets.
        seed: model-init, data-order and augmentation seed.
        workers: DataLoader worker processes.
        device: ``auto``, ``cpu`` or ``cuda``.
        knn_k: kNN probe neighbours.
        knn_temperature: kNN vote temperature.
        max_steps: stop after this many steps (tests, smoke runs); None trains to the end.
        vit_depth: override the ViT depth (tests only; None keeps the architecture's).
        augment: MRI augmentation settings.
    """

    method: str = setting(
        "dino", "Self-supervised method of the run (the rule's, from pretrain.methods).", config=False
    )
    arch: str = setting(
        "vit_small", "Encoder architecture of the run (the rule's, from pretrain.archs).", config=False
    )
    img_size: int = setting(
        224,
        "Global view side in pixels (multiple of 16); slices are resized to it.",
        minimum=16,
        maximum=1024,
        multiple_of=16,
    )
    batch_size: int = setting(
        256, "Images per optimizer step over all GPUs and micro-batches.", minimum=2, maximum=65536
    )
    epochs: int = setting(100, "Passes over the train split of the slice store.", minimum=1, maximum=10000)
    lr: float = setting(
        5e-4,
        "Base learning rate per 256 images (scaled by batch_size / 256).",
        exclusive_minimum=0,
        maximum=100,
    )
    min_lr: float = setting(1e-6, "Final learning rate of the cosine schedule.", minimum=0, maximum=1)
    warmup_epochs: int = setting(10, "Linear learning-rate warm-up (epochs).", minimum=0, maximum=1000)
    weight_decay: float = setting(0.04, "Initial weight decay.", minimum=0, maximum=10)
    weight_decay_end: float = setting(
        0.4, "Final weight decay (cosine; equal to weight_decay for a constant).", minimum=0, maximum=10
    )
    optimizer: str = setting("adamw", "adamw, or lars (MoCo v3 ResNet-50 recipe).", enum=OPTIMIZERS)
    momentum: float = setting(
        0.996, "EMA momentum of the momentum encoder / teacher at step 0 (cosine to 1).", minimum=0, maximum=1
    )
    temperature: float = setting(
        0.2, "InfoNCE temperature (ViT 0.2, ResNet-50 1.0).", group="moco", exclusive_minimum=0, maximum=10
    )
    moco_dim: int = setting(256, "Projection output width.", group="moco", minimum=8, maximum=65536)
    moco_mlp_dim: int = setting(
        4096, "Projection / prediction MLP hidden width.", group="moco", minimum=8, maximum=65536
    )
    random_patch_proj: bool = setting(
        True, "Freeze the ViT patch projection at its random init (MoCo v3 stability trick).", group="moco"
    )
    crop_scale: tuple[float, float] = setting(
        (0.2, 1.0),
        "Area range of the two random resized crops.",
        group="moco",
        items={"minimum": 0.01, "maximum": 1.0},
    )
    moco_m_cos: bool = setting(
        True,
        "MoCo v3's --moco-m-cos: momentum rises to 1 on a cosine (the paper's recipes); false: constant.",
        group="moco",
    )
    out_dim: int = setting(65536, "Prototypes K of the DINO head.", group="dino", minimum=8, maximum=262144)
    head_hidden_dim: int = setting(
        2048, "DINO head MLP hidden width.", group="dino", minimum=8, maximum=65536
    )
    head_bottleneck_dim: int = setting(
        256, "DINO head bottleneck width.", group="dino", minimum=8, maximum=65536
    )
    norm_last_layer: bool = setting(True, "Fix the weight-normalised last layer's gain at 1.", group="dino")
    head_use_bn: bool = setting(
        False, "Batch normalisation in the DINO head's hidden layers (DINO's use_bn_in_head).", group="dino"
    )
    student_temp: float = setting(
        0.1, "Student softmax temperature.", group="dino", exclusive_minimum=0, maximum=10
    )
    teacher_temp: float = setting(
        0.04, "Teacher temperature after the warm-up.", group="dino", exclusive_minimum=0, maximum=10
    )
    warmup_teacher_temp: float = setting(
        0.04,
        "Teacher temperature at the start of the warm-up.",
        group="dino",
        exclusive_minimum=0,
        maximum=10,
    )
    warmup_teacher_temp_epochs: int = setting(
        30, "Teacher-temperature warm-up length (epochs).", group="dino", minimum=0, maximum=10000
    )
    center_momentum: float = setting(
        0.9, "EMA momentum of the teacher centre.", group="dino", minimum=0, maximum=1
    )
    n_local_crops: int = setting(
        8, "Local crops per image (besides two global crops).", group="dino", minimum=0, maximum=64
    )
    local_size: int = setting(
        96,
        "Local crop side in pixels (multiple of 16).",
        group="dino",
        minimum=16,
        maximum=1024,
        multiple_of=16,
    )
    global_crop_scale: tuple[float, float] = setting(
        (0.4, 1.0), "Area range of the global crops.", group="dino", items={"minimum": 0.01, "maximum": 1.0}
    )
    local_crop_scale: tuple[float, float] = setting(
        (0.05, 0.4), "Area range of the local crops.", group="dino", items={"minimum": 0.01, "maximum": 1.0}
    )
    freeze_last_layer_epochs: int = setting(
        1, "Epochs with the head's last layer frozen.", group="dino", minimum=0, maximum=1000
    )
    clip_grad: float = setting(
        3.0, "Per-parameter gradient-norm clip (0 turns it off).", minimum=0, maximum=1000
    )
    accumulation: int = setting(
        1, "Micro-batches per optimizer step (gradient accumulation).", minimum=1, maximum=1024
    )
    checkpoint_every: int = setting(
        500,
        "Checkpoint interval in optimizer steps (0: only at the end and on preemption).",
        minimum=0,
        maximum=10000000,
    )
    log_every: int = setting(
        10,
        "Metrics interval in optimizer steps (not a rerun trigger of the weights).",
        minimum=1,
        maximum=1000000,
    )
    precision: str = setting("auto", "auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 or fp16.", enum=PRECISIONS)
    compile: bool = setting(False, "torch.compile the student network.")
    channels_last: bool = setting(True, "Channels-last memory format for ResNets.")
    seed: int = setting(0, "Model-init, data-order and augmentation seed (the job's seed).", config=False)
    workers: int = setting(
        4,
        "DataLoader worker processes per GPU (augmentation runs on the training device).",
        minimum=0,
        maximum=64,
    )
    device: str = setting("auto", "Training device: auto (CUDA when present), cpu or cuda.", enum=DEVICES)
    knn_k: int = setting(20, "Neighbours of the kNN probe.", minimum=1, maximum=1000)
    knn_temperature: float = setting(
        0.07, "Temperature of the kNN probe's weighted vote.", exclusive_minimum=0, maximum=10
    )
    max_steps: int | None = setting(
        None, "Stop after this many steps (tests, smoke runs); null trains to the end.", config=False
    )
    vit_depth: int | None = setting(
        None, "Override the ViT depth (tiny test runs); null keeps the architecture's.", minimum=1, maximum=24
    )
    augment: AugmentSettings = setting(
        factory=AugmentSettings,
        description="MRI augmentations, applied in batch on the training device (GPU when present).",
    )

    def __post_init__(self) -> None:
        if isinstance(self.augment, Mapping):  # a config mapping given directly: check and convert it
            object.__setattr__(self, "augment", AugmentSettings.from_dict(self.augment))
        checks = [
            (self.method in METHODS, f"method must be one of {METHODS}, got {self.method!r}"),
            (self.arch in ARCHS, f"arch must be one of {sorted(ARCHS)}, got {self.arch!r}"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"),
            (
                self.img_size % 16 == 0 and self.img_size > 0,
                f"img_size {self.img_size} is not a multiple of 16",
            ),
            (
                self.local_size % 16 == 0 and self.local_size > 0,
                f"local_size {self.local_size} is not a multiple of 16",
            ),
            (self.batch_size > 0 and self.epochs > 0, "batch_size and epochs must be positive"),
            (0.0 <= self.momentum <= 1.0, f"momentum {self.momentum} outside [0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PretrainSettings:
        """Build from the rule's config slice (see :func:`brainssl.settings.from_mapping`)."""
        return from_mapping(cls, values, section="pretrain")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def resolved_precision(self, device: torch.device) -> str:
        """``auto`` becomes bf16 on CUDA and fp32 on the CPU."""
        if self.precision != "auto":
            return self.precision
        return "bf16" if device.type == "cuda" else "fp32"


def settings_hash(
    settings: PretrainSettings, ignore: tuple[str, ...] = ("max_steps", "workers", "log_every")
) -> str:
    """sha256 of the settings that change the trained weights (``ignore`` lists those that do not)."""
    values = {k: v for k, v in settings.to_dict().items() if k not in ignore}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def _encoder(settings: PretrainSettings) -> nn.Module:
    overrides = {"depth": settings.vit_depth} if settings.vit_depth and is_vit(settings.arch) else {}
    return build_encoder(settings.arch, settings.img_size, **overrides)


def build_method(settings: PretrainSettings) -> nn.Module:
    """Build the encoder and the MoCo v3 or DINO method with seeded initial weights.

    The weights are drawn inside ``torch.random.fork_rng`` seeded with ``settings.seed``,
    so the caller's global RNG state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        encoder = _encoder(settings)
        aug = settings.augment
        if settings.method == "moco":
            if settings.random_patch_proj and is_vit(settings.arch):
                encoder.freeze_patch_embed()
            views = functools.partial(
                two_views, size=settings.img_size, scale=settings.crop_scale, settings=aug
            )
            return MoCoV3(
                encoder, _as_view_fn(views), settings.moco_dim, settings.moco_mlp_dim, settings.temperature
            )
        views = functools.partial(
            multi_crop,
            global_size=settings.img_size,
            local_size=settings.local_size,
            n_local=settings.n_local_crops,
            global_scale=settings.global_crop_scale,
            local_scale=settings.local_crop_scale,
            settings=aug,
        )
        return DINO(
            encoder,
            _as_view_fn(views),
            settings.out_dim,
            settings.head_hidden_dim,
            settings.head_bottleneck_dim,
            settings.norm_last_layer,
            settings.student_temp,
            settings.center_momentum,
            settings.head_use_bn,
        )


def _as_view_fn(partial: Any) -> Any:
    return lambda x, generator: partial(x, generator=generator)


def _loop_options(settings: PretrainSettings, device: torch.device) -> LoopOptions:
    return LoopOptions(
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        accumulation=settings.accumulation,
        precision=settings.resolved_precision(device),
        compile=settings.compile,
        channels_last=settings.channels_last and not is_vit(settings.arch),
        optimizer=settings.optimizer,
        clip_grad=settings.clip_grad,
        freeze_last_layer_epochs=settings.freeze_last_layer_epochs if settings.method == "dino" else 0,
        checkpoint_every=settings.checkpoint_every,
        log_every=settings.log_every,
        seed=settings.seed,
        workers=settings.workers,
        img_size=settings.img_size,
        knn_k=settings.knn_k,
        knn_temperature=settings.knn_temperature,
        max_steps=settings.max_steps,
    )


def _schedule_factory(settings: PretrainSettings) -> Any:
    def factory(steps_per_epoch: int) -> Any:
        return build_schedules(
            lr=settings.lr * settings.batch_size / 256,
            min_lr=settings.min_lr,
            warmup_epochs=settings.warmup_epochs,
            weight_decay=settings.weight_decay,
            weight_decay_end=settings.weight_decay_end,
            momentum=settings.momentum,
            teacher_temp=settings.teacher_temp,
            warmup_teacher_temp=settings.warmup_teacher_temp,
            warmup_teacher_temp_epochs=settings.warmup_teacher_temp_epochs,
            epochs=settings.epochs,
            steps_per_epoch=steps_per_epoch,
            method=settings.method,
            momentum_cosine=settings.moco_m_cos,
        )

    return factory


def build_trainer(
    settings: PretrainSettings,
    dataset: Dataset,
    probe_sets: Mapping[str, ProbeSet] | None,
    out_dir: str | Path,
    env: DistEnv,
) -> Trainer:
    """Build the method on ``env.device`` and its :class:`~brainssl.pretrain.loop.Trainer`.

    :func:`train` uses it; so does ``benchmarks/pretrain.py``, which times ``train_step``.
    """
    method = build_method(settings).to(env.device)
    return Trainer(
        method,
        dataset,
        _schedule_factory(settings),
        _loop_options(settings, env.device),
        out_dir,
        probe_sets,
        env,
        fingerprint=settings_hash(settings),
    )


def train(
    settings: PretrainSettings,
    dataset: Dataset,
    probe_sets: Mapping[str, ProbeSet] | None,
    out_dir: str | Path,
    resume: bool = True,
    *,
    intensity: dict[str, Any] | str = "slice store uint8 / 255",
    manifest_sha256: str | None = None,
) -> dict[str, Any]:
    """Pretrain an encoder and export it; the entry point of rules ``pretrain_moco``/``pretrain_dino``.

    Runs as one process or as one rank of a torchrun/SLURM job (see
    :func:`~brainssl.pretrain.distributed.init_distributed`); rank 0 writes every file.

    Args:
        settings: the run's settings.
        dataset: items are ``(1, H, W)`` float tensors in ``[0, 1]`` (or tuples starting with one).
        probe_sets: labelled held-out slices for the per-epoch kNN probe.
        out_dir: receives ``encoder.safetensors``, ``model_card.json``, ``metrics.jsonl``,
            ``metrics.csv``, ``curves.png``, ``tensorboard/`` and ``checkpoints/last.pt``.
        resume: continue from ``checkpoints/last.pt`` when it exists.
        intensity: the intensity mapping recorded in the model card.
        manifest_sha256: hash of the training index recorded in the model card.

    Returns:
        The loop summary (``status``, ``step``, losses, ``knn``, ``images_per_s``); the encoder
        is exported only when ``status == "completed"``.

    Raises:
        NonFiniteLossError: when the loss becomes NaN or infinite.
    """
    env = init_distributed(settings.device)
    try:
        if resume and env.is_main:
            _discard_foreign_checkpoint(Path(out_dir), f"{settings_hash(settings)} {manifest_sha256}")
        if env.world_size > 1:
            dist.barrier()
        trainer = build_trainer(settings, dataset, probe_sets, out_dir, env)
        method = trainer.method
        summary = trainer.fit(resume=resume)
        if summary["status"] == "completed" and env.is_main:
            out = Path(out_dir)
            export_encoder(
                method.eval_encoder,
                out / ENCODER_FILE,
                out / CARD_FILE,
                intensity=intensity,
                manifest_sha256=manifest_sha256,
                config_sha256=settings_hash(settings),
                method=settings.method,
                metrics={k: v for k, v in summary.items() if k not in ("knn", "checkpoint")},
                knn=summary["knn"],
                extra={"settings": settings.to_dict(), "world_size": env.world_size},
            )
        return summary
    finally:
        if env.owns_group:
            dist.destroy_process_group()


def _discard_foreign_checkpoint(out_dir: Path, fingerprint: str) -> None:
    """Delete a checkpoint left by a run with other settings or data, so it is never resumed.

    Resuming is for preemption; a changed config re-runs the job in the same folder, and
    continuing its old optimizer state would silently mix two runs.
    """
    folder = out_dir / "checkpoints"
    stamp = folder / "fingerprint.txt"
    last = folder / "last.pt"
    if last.is_file() and (not stamp.is_file() or stamp.read_text().strip() != fingerprint):
        logger.warning("%s was written with other settings or data: starting afresh", last)
        last.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    write_text(stamp, fingerprint + "\n")


def export_random(
    settings: PretrainSettings,
    probe_sets: Mapping[str, ProbeSet] | None,
    out_dir: str | Path,
    *,
    intensity: dict[str, Any] | str = "slice store uint8 / 255",
    manifest_sha256: str | None = None,
) -> dict[str, Any]:
    """Export a random-initialised encoder (seeded by ``settings.seed``) with its kNN probe results."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        encoder = _encoder(settings)
    device = torch.device("cuda" if settings.device != "cpu" and torch.cuda.is_available() else "cpu")
    encoder.to(device)
    knn = run_probes(
        encoder, probe_sets or {}, settings.img_size, device, settings.knn_k, settings.knn_temperature
    )
    out = Path(out_dir)
    return export_encoder(
        encoder.cpu(),
        out / ENCODER_FILE,
        out / CARD_FILE,
        intensity=intensity,
        manifest_sha256=manifest_sha256,
        config_sha256=settings_hash(settings),
        method="random",
        knn=knn,
        extra={"settings": {"arch": settings.arch, "img_size": settings.img_size, "seed": settings.seed}},
    )
