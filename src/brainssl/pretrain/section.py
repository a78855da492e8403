"""The ``pretrain:`` config section: run settings, the runs, their overrides, probe and resources.

:class:`~brainssl.pretrain.settings.PretrainSettings` holds one run's settings; the section adds
which runs there are (``archs`` x ``methods``), the per-method and per-architecture overrides
(:func:`brainssl.config.pretrain_run_settings` merges them), the kNN probe every export is
scored with and what each job requests. Only the config schema (:mod:`brainssl.schema`) is built
from :class:`PretrainSection`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from brainssl.ablation import AblationSettings
from brainssl.architectures import ARCHS, METHODS
from brainssl.settings import Keyed, setting

from .natural import NaturalBaseline
from .settings import PretrainSettings

__all__ = ["PROBE_SPLITS", "PROBES", "ProbeSettings", "PretrainSection", "ResourceSettings"]

#: Labels the kNN probe can be run on (:func:`brainssl.pretrain.data.slice_probe_sets`).
PROBES = ("contrast", "position", "dataset", "pathology")
#: Splits of the slice store the probe slices can come from.
PROBE_SPLITS = ("train", "val", "test")
_RUN_OVERRIDES = "Pretraining settings that differ for one method or one (arch, method) pair."


@dataclass(frozen=True)
class ProbeSettings:
    """``pretrain.probe``: the kNN probe on labelled held-out slices."""

    split: str = setting(
        "val",
        "Split the probe slices come from (never the training subjects when val or test).",
        enum=PROBE_SPLITS,
    )
    probes: tuple[str, ...] = setting(
        ("contrast", "position"),
        "Labels probed: MRI contrast, slice-position bin, dataset, pathology.",
        min_items=1,
        unique_items=True,
        items={"enum": PROBES},
    )
    n_per_class: int = setting(
        1000, "Largest number of probe slices per class (balanced).", minimum=1, maximum=100000
    )
    position_bins: int = setting(5, "Equal-width bins of the relative slice position.", minimum=2, maximum=50)


@dataclass(frozen=True)
class ResourceSettings:
    """``pretrain.resources``: what each pretraining job requests."""

    gpus: int = setting(0, "GPUs per job (one DDP process each); 0 trains on the CPU.", minimum=0, maximum=64)
    gpu_model: str | None = setting(None, "GPU model to request, e.g. a100 or h100 (null: any).")
    threads: int = setting(2, "CPU cores per job.", minimum=1, maximum=512)
    mem_mb: int = setting(8000, "Memory per job (MB).", minimum=500, maximum=4000000)
    runtime: int = setting(60, "Wall time per attempt (minutes).", minimum=1, maximum=100000)
    retries: int = setting(
        2,
        "Resubmissions after preemption or failure; each resumes from the last checkpoint.",
        minimum=0,
        maximum=100,
    )


@dataclass(frozen=True)
class PretrainSection(PretrainSettings):
    """The ``pretrain:`` config section (run settings with ``group`` nest under ``moco``/``dino``)."""

    #: The subsections that settings declared with ``group`` nest in, and what they hold.
    setting_groups: ClassVar[Mapping[str, str]] = {
        "moco": "MoCo v3's own settings (per_method.moco overrides shared ones for MoCo runs).",
        "dino": "DINO's own settings (per_method.dino overrides shared ones for DINO runs).",
    }

    archs: tuple[str, ...] = setting(
        ("vit_tiny",),
        "Encoder architectures (2D, one channel): ViT-Tiny/Small/Base with patch 16, ResNet-18/50.",
        min_items=1,
        unique_items=True,
        items={"enum": tuple(ARCHS)},
    )
    methods: tuple[str, ...] = setting(
        METHODS,
        "Self-supervised methods trained for every arch (the random baseline is always exported).",
        unique_items=True,
        items={"enum": METHODS},
    )
    per_method: Mapping[str, PretrainSettings] = setting(
        factory=dict,
        description="Overrides of any setting for one method, e.g. per_method.moco.lr "
        "(MoCo v3 and DINO recipes differ).",
        keyed=Keyed(METHODS, _RUN_OVERRIDES),
    )
    per_arch: Mapping[str, Mapping[str, PretrainSettings]] = setting(
        factory=dict,
        description="Overrides for one architecture and method, e.g. per_arch.resnet50.moco.optimizer lars.",
        keyed=Keyed(
            tuple(ARCHS),
            "Overrides for {key} runs, per method.",
            value=Keyed(METHODS, _RUN_OVERRIDES),
        ),
    )
    probe: ProbeSettings = setting(
        factory=ProbeSettings,
        description="kNN probe on labelled held-out slices, run every epoch and on the exported encoders.",
    )
    resources: ResourceSettings = setting(
        factory=ResourceSettings,
        description="What each pretraining job requests (the SLURM profile turns these into sbatch options).",
    )
    natural: tuple[NaturalBaseline, ...] = setting(
        (),
        "Natural-image baselines: {name, arch, weights, layout} of an ImageNet-style checkpoint (timm, "
        "torchvision, DINO, DINOv2), exported as results/pretrain/<name>/ with the RGB first layer summed "
        "to one channel; read by embed, probes and every task like the trained encoders.",
    )
    ablation: AblationSettings = setting(
        factory=AblationSettings,
        description="The slice-filter ablation: one method and arch pretrained on the filtered store, on "
        "every brain slice and on a random subset of the filtered store's size, at equal steps.",
    )
