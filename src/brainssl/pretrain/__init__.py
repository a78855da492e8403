"""Self-supervised pretraining: MoCo v3 and DINO on 2D MRI slices, resumable, DDP-ready.

Layout follows dinov2's split by role: ``augment`` (MRI views on the device),
``backbones`` (ViT / ResNet encoders), ``heads``, ``losses``, ``schedules``, ``ema``,
``meta`` (the methods as modules), ``optim``, ``distributed``, ``loop``, ``checkpoint``,
``probe``, ``export``, ``settings`` (one run's settings), ``methods`` (settings -> objects;
:func:`train`), ``data`` (slice store -> training set and kNN probe sets; what the rules call) and
``natural``/``natural_export`` (ImageNet-style checkpoints as one-channel encoders).
"""

from .augment import AugmentSettings, MRIAugment, multi_crop, random_resized_crop, two_views
from .backbones import ARCHS, ResNet, VisionTransformer, build_encoder, load_natural_image_weights
from .checkpoint import load_checkpoint, save_checkpoint
from .data import PreemptedError, pretrain_from_index, random_from_index, slice_probe_sets
from .distributed import DistEnv, init_distributed, slurm_to_torchrun_env
from .export import export_encoder, load_encoder
from .heads import DINOHead, MLPHead
from .loop import NonFiniteLossError, Trainer
from .losses import DINOLoss, MoCoV3Loss, dino_cross_entropy, infonce
from .meta import DINO, MoCoV3
from .methods import build_method, build_trainer, export_random, train
from .natural import NaturalBaseline, load_baseline
from .natural_export import natural_from_index, synthetic_checkpoint
from .options import LoopOptions
from .probe import ProbeSet, knn_accuracy, run_probes
from .schedules import Schedules, build_schedules, cosine_schedule, teacher_temperature_schedule
from .settings import PretrainSettings, settings_hash

__all__ = [
    "ARCHS",
    "AugmentSettings",
    "DINO",
    "DINOHead",
    "DINOLoss",
    "DistEnv",
    "LoopOptions",
    "MLPHead",
    "MRIAugment",
    "MoCoV3",
    "MoCoV3Loss",
    "NaturalBaseline",
    "NonFiniteLossError",
    "PreemptedError",
    "PretrainSettings",
    "ProbeSet",
    "ResNet",
    "Schedules",
    "Trainer",
    "VisionTransformer",
    "build_encoder",
    "build_method",
    "build_trainer",
    "build_schedules",
    "cosine_schedule",
    "dino_cross_entropy",
    "export_encoder",
    "export_random",
    "infonce",
    "init_distributed",
    "knn_accuracy",
    "load_checkpoint",
    "load_baseline",
    "load_encoder",
    "load_natural_image_weights",
    "pretrain_from_index",
    "random_from_index",
    "multi_crop",
    "natural_from_index",
    "random_resized_crop",
    "run_probes",
    "save_checkpoint",
    "settings_hash",
    "slice_probe_sets",
    "slurm_to_torchrun_env",
    "synthetic_checkpoint",
    "teacher_temperature_schedule",
    "train",
    "two_views",
]
