"""The dense tasks' settings: one frozen dataclass per ``tasks.<task>`` config subsection.

Each class's fields and defaults are the keys and defaults of its schema section
(``workflow/schemas/config.schema.yaml``). The workflow hands every dense job its subsection
merged with the shared ``tasks`` keys ``label_fractions``, ``seeds`` and ``bootstrap``
(:func:`brainssl.wiring.dense_task_params`); the adapter turns that mapping into
the class here with :meth:`DenseTaskSettings.from_dict` (:func:`brainssl.settings.from_mapping`),
so an unknown key is an :class:`~brainssl.settings.UnknownSettingError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from brainssl.settings import from_mapping

from .dense_training import TrainSettings

__all__ = [
    "SHARED_BOOTSTRAP",
    "SHARED_LABEL_FRACTIONS",
    "SHARED_SEEDS",
    "DenseTaskSettings",
    "HippocampusSegmentationSettings",
    "ReconstructionSettings",
    "TumorDetectionSettings",
    "TumorSegmentationSettings",
]

#: The shared ``tasks`` defaults a null per-task override stands for (schema ``tasks.*``).
SHARED_LABEL_FRACTIONS: tuple[float, ...] = (0.01, 0.1, 1.0)
SHARED_SEEDS = 3
SHARED_BOOTSTRAP = 1000

BRATS_CONTRASTS = ("FLAIR", "T1ce", "T2w", "T1w")

S = TypeVar("S", bound="DenseTaskSettings")


@dataclass(frozen=True, kw_only=True)
class DenseTaskSettings:
    """The keys every dense task subsection has.

    Attributes:
        enabled: run the task (it also needs its dataset enabled).
        label_fractions: shares of training subjects; ``None`` keeps the shared
            ``tasks.label_fractions`` (the workflow always passes the merged value).
        seeds: label-fraction draws per fraction; ``None`` keeps ``tasks.seeds``.
        bootstrap: subject resamples of the confidence intervals; ``None`` keeps ``tasks.bootstrap``.
        modes: variants (``frozen``, ``finetune``, ``scratch``).
        epochs: training epochs per run.
        batch_size: slices per training step.
        lr: AdamW learning rate of the decoder.
        encoder_lr: AdamW learning rate of a trained encoder (fine-tune, scratch).
        weight_decay: AdamW weight decay.
        width: channels inside the light decoder.
        max_train_slices: at most this many training slices per run (a seeded random subset).
        max_subjects: at most this many subjects per dataset (sorted by id; 0 = all).
        test_fraction: share of labelled subjects held out when the preprocessing split leaves
            no labelled test subject.
    """

    #: The config path named in error messages.
    section: ClassVar[str] = "tasks.dense"

    enabled: bool = True
    label_fractions: tuple[float, ...] | None = None
    seeds: int | None = None
    bootstrap: int | None = None
    modes: tuple[str, ...] = ("frozen", "finetune", "scratch")
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    encoder_lr: float = 1e-4
    weight_decay: float = 1e-4
    width: int = 32
    max_train_slices: int = 20000
    max_subjects: int = 0
    test_fraction: float = 0.25

    @classmethod
    def from_dict(cls: type[S], values: Mapping[str, Any]) -> S:
        """Build from the rule's settings (see :func:`brainssl.settings.from_mapping`)."""
        return from_mapping(cls, values, section=cls.section)

    @property
    def fractions(self) -> tuple[float, ...]:
        """The label fractions in effect (the shared default where unset)."""
        return SHARED_LABEL_FRACTIONS if self.label_fractions is None else tuple(self.label_fractions)

    @property
    def n_seeds(self) -> int:
        """The label-fraction draws in effect (the shared default where unset)."""
        return SHARED_SEEDS if self.seeds is None else self.seeds

    @property
    def n_boot(self) -> int:
        """The bootstrap resamples in effect (the shared default where unset)."""
        return SHARED_BOOTSTRAP if self.bootstrap is None else self.bootstrap

    @property
    def train(self) -> TrainSettings:
        """The training subset (epochs, batch size, learning rates, decoder width)."""
        return TrainSettings(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            encoder_lr=self.encoder_lr,
            weight_decay=self.weight_decay,
            width=self.width,
        )


@dataclass(frozen=True, kw_only=True)
class TumorSegmentationSettings(DenseTaskSettings):
    """``tasks.tumor_segmentation``.

    Attributes:
        contrasts: BraTS contrasts passed through the shared encoder, in order.
    """

    section: ClassVar[str] = "tasks.tumor_segmentation"

    contrasts: tuple[str, ...] = BRATS_CONTRASTS


@dataclass(frozen=True, kw_only=True)
class HippocampusSegmentationSettings(DenseTaskSettings):
    """``tasks.hippocampus_segmentation``.

    Attributes:
        datasets: datasets to segment (the rule passes the enabled ones as its own param).
    """

    section: ClassVar[str] = "tasks.hippocampus_segmentation"

    datasets: tuple[str, ...] = ("hippocampus",)


@dataclass(frozen=True, kw_only=True)
class TumorDetectionSettings(DenseTaskSettings):
    """``tasks.tumor_detection``.

    Attributes:
        contrasts: BraTS contrasts passed through the shared encoder, in order.
        min_box_pixels: tumour components smaller than this give no box.
        max_detections: heatmap peaks kept per slice before non-maximum suppression.
        score_threshold: lowest heatmap score kept as a detection.
        nms_iou: IoU above which non-maximum suppression drops the lower-scoring box.
    """

    section: ClassVar[str] = "tasks.tumor_detection"

    contrasts: tuple[str, ...] = BRATS_CONTRASTS
    min_box_pixels: int = 4
    max_detections: int = 10
    score_threshold: float = 0.05
    nms_iou: float = 0.5


def _centre_fractions() -> dict[str, float]:
    return {"2": 0.16, "4": 0.08, "8": 0.04}


@dataclass(frozen=True, kw_only=True)
class ReconstructionSettings(DenseTaskSettings):
    """``tasks.reconstruction``.

    Attributes:
        masks: Cartesian column masks (``random``, ``equispaced``).
        accelerations: acceleration factors.
        centre_fractions: fully sampled centre share per acceleration, keyed by the factor as
            a string (as the schema writes it).
    """

    section: ClassVar[str] = "tasks.reconstruction"

    masks: tuple[str, ...] = ("random", "equispaced")
    accelerations: tuple[int, ...] = (2, 4)
    centre_fractions: dict[str, float] = field(default_factory=_centre_fractions)

    def centre_fraction(self, acceleration: int) -> float:
        """The fully sampled centre share at ``acceleration``."""
        return float(self.centre_fractions[str(acceleration)])
