"""One pretraining run's settings (:class:`PretrainSettings`) and the hash of those that shape the weights.

The validated config slice of one run, with every default written once (MoCo v3 / DINO ViT-S/16
values of the papers); :mod:`brainssl.pretrain.section` builds the ``pretrain:`` config section,
and so the config schema, from it, and :mod:`brainssl.pretrain.methods` builds the run's objects
from it. :func:`settings_hash` fingerprints a run's checkpoints and model card.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from brainssl.architectures import METHODS
from brainssl.settings import from_mapping, setting

from .augment import AugmentSettings
from .backbones import ARCHS

if TYPE_CHECKING:
    import torch

__all__ = ["DEVICES", "OPTIMIZERS", "PRECISIONS", "PretrainSettings", "settings_hash"]

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
        epoch_images: images each epoch draws from the train split (the slice-filter ablation's
            unfiltered run, :mod:`brainssl.pretrain.ablation`); None draws all of them.
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
    epoch_images: int | None = setting(
        None,
        "Images each epoch draws from the train split (the slice-filter ablation); null: all of them.",
        config=False,
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
    """sha256 of the settings that change the trained weights (``ignore`` lists those that do not).

    An unset ``epoch_images`` is left out, so runs that draw the whole split keep their hash.
    """
    values = {k: v for k, v in settings.to_dict().items() if k not in ignore}
    if values.get("epoch_images", 0) is None:
        del values["epoch_images"]
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()
