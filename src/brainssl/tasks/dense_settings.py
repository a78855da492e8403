"""The dense tasks' settings: one frozen dataclass per ``tasks.<task>`` config subsection.

Each class's fields are the keys of its schema section, which :mod:`brainssl.schema` generates
from them (``workflow/schemas/config.schema.yaml``). The workflow hands every dense job its subsection
merged with the shared ``tasks`` keys ``label_fractions``, ``seeds`` and ``bootstrap``
(:func:`brainssl.wiring.dense_task_params`), so those three have no default here: a null
per-task key in the config keeps the shared value. The adapter turns that mapping into
the class here with :meth:`DenseTaskSettings.from_dict` (:func:`brainssl.settings.from_mapping`),
so an unknown key is an :class:`~brainssl.settings.UnknownSettingError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from brainssl.settings import Keyed, from_mapping, setting

from .dense_sweep import MODES
from .dense_training import TrainSettings

__all__ = [
    "DenseTaskSettings",
    "HippocampusSegmentationSettings",
    "ReconstructionSettings",
    "TumorDetectionSettings",
    "TumorSegmentationSettings",
]

BRATS_CONTRASTS = ("FLAIR", "T1ce", "T2w", "T1w")
#: Datasets with hippocampus labels (Decathlon's, or the generator's truth of OASIS-3 and IXI).
HIPPOCAMPUS_DATASETS = ("hippocampus", "oasis3", "ixi")


def _contrasts() -> Any:
    return setting(
        BRATS_CONTRASTS,
        "BraTS contrasts passed through the shared encoder (their feature maps are concatenated).",
        min_items=1,
        unique_items=True,
        items={"enum": BRATS_CONTRASTS},
    )


S = TypeVar("S", bound="DenseTaskSettings")


@dataclass(frozen=True, kw_only=True)
class DenseTaskSettings:
    """The keys every dense task subsection has.

    Attributes:
        enabled: run the task (it also needs its dataset enabled).
        label_fractions: shares of training subjects (the workflow passes ``tasks.label_fractions``
            where the task's own key is null).
        seeds: label-fraction draws per fraction (``tasks.seeds`` where the task's is null).
        bootstrap: subject resamples of the confidence intervals (``tasks.bootstrap`` likewise).
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
        feature_cache_gb: largest host cache of a frozen encoder's maps of the task's slices;
            above it the frozen encoder runs on every batch (the demo's caches fit the default).
        slice_memory_gb: GB of slices and labels (reconstruction: prepared inputs and targets) held
            in memory; the rest go to files in the job's temporary folder, read one batch at a
            time (:class:`~brainssl.tasks.dense_memory.SliceSpace`).
    """

    #: The config path named in error messages.
    section: ClassVar[str] = "tasks.dense"

    enabled: bool = setting(True, "Run this dense task (needs its dataset enabled).")
    label_fractions: tuple[float, ...] = setting(
        description="Override of tasks.label_fractions (share of training subjects) for this task; "
        "null keeps the shared value. Fine-tune and scratch variants run only at the largest fraction.",
        unset=None,
        items={"exclusive_minimum": 0, "maximum": 1},
        min_items=1,
    )
    seeds: int = setting(
        description="Override of tasks.seeds for this task; null keeps the shared value.",
        unset=None,
        minimum=1,
        maximum=100,
    )
    bootstrap: int = setting(
        description="Override of tasks.bootstrap (subject resamples for confidence intervals); "
        "null keeps the shared value.",
        unset=None,
        minimum=0,
        maximum=100000,
    )
    modes: tuple[str, ...] = setting(
        MODES,
        "Variants: frozen encoders with a light decoder, pretrained encoders fine-tuned end to "
        "end, the same architecture trained from scratch.",
        min_items=1,
        unique_items=True,
        items={"enum": MODES},
    )
    epochs: int = setting(20, "Training epochs per run.", minimum=1, maximum=1000)
    batch_size: int = setting(32, "Slices per training step.", minimum=2, maximum=4096)
    lr: float = setting(1e-3, "AdamW learning rate of the decoder.", exclusive_minimum=0, maximum=1)
    encoder_lr: float = setting(
        1e-4,
        "AdamW learning rate of the encoder when it is trained (finetune, scratch).",
        exclusive_minimum=0,
        maximum=1,
    )
    weight_decay: float = setting(1e-4, "AdamW weight decay.", minimum=0, maximum=1)
    width: int = setting(32, "Channels inside the light decoder.", minimum=4, maximum=512)
    max_train_slices: int = setting(
        20000,
        "At most this many training slices per run (a seeded random subset).",
        minimum=1,
        maximum=100000000,
    )
    max_subjects: int = setting(
        0,
        "Use at most this many subjects per dataset (sorted by id; 0 = all).",
        minimum=0,
        maximum=100000000,
    )
    test_fraction: float = setting(
        0.25,
        "Share of labelled subjects held out when the preprocessing split leaves no labelled "
        "test subject (subject-level hash split).",
        exclusive_minimum=0,
        exclusive_maximum=1,
    )
    feature_cache_gb: float = setting(
        1.0,
        "Cache a frozen encoder's feature maps of all task slices on the host while they take at most "
        "this many GB (1e9 bytes; the encoder then runs once, not every epoch); above it, or at 0, the "
        "frozen encoder runs on every batch, in eval mode without gradients.",
        minimum=0,
        maximum=100000,
    )
    slice_memory_gb: float = setting(
        1.0,
        "GB (1e9 bytes) of task slices and labels (reconstruction: prepared inputs and targets) held in "
        "memory; the rest are written to files in the job's temporary folder ($TMPDIR, removed at the "
        "end) and read one batch at a time.",
        minimum=0,
        maximum=100000,
    )

    @classmethod
    def from_dict(cls: type[S], values: Mapping[str, Any]) -> S:
        """Build from the rule's settings (see :func:`brainssl.settings.from_mapping`)."""
        return from_mapping(cls, values, section=cls.section)

    @property
    def fractions(self) -> tuple[float, ...]:
        """The label fractions (``label_fractions`` as a tuple)."""
        return tuple(self.label_fractions)

    @property
    def n_seeds(self) -> int:
        """The label-fraction draws per fraction (``seeds``)."""
        return self.seeds

    @property
    def n_boot(self) -> int:
        """The bootstrap resamples (``bootstrap``)."""
        return self.bootstrap

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

    contrasts: tuple[str, ...] = _contrasts()


@dataclass(frozen=True, kw_only=True)
class HippocampusSegmentationSettings(DenseTaskSettings):
    """``tasks.hippocampus_segmentation``.

    Attributes:
        datasets: datasets to segment (the rule passes the enabled ones as its own param).
    """

    section: ClassVar[str] = "tasks.hippocampus_segmentation"

    datasets: tuple[str, ...] = setting(
        ("hippocampus",),
        "Datasets to segment (oasis3/ixi use the generator's hippocampus truth, resampled onto "
        "the preprocessed grid).",
        min_items=1,
        unique_items=True,
        items={"enum": HIPPOCAMPUS_DATASETS},
    )


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

    contrasts: tuple[str, ...] = _contrasts()
    min_box_pixels: int = setting(
        4,
        "Tumour components smaller than this (pixels of the slice grid) give no box.",
        minimum=1,
        maximum=100000,
    )
    max_detections: int = setting(
        10, "Heatmap peaks kept per slice before non-maximum suppression.", minimum=1, maximum=1000
    )
    score_threshold: float = setting(0.05, "Lowest heatmap score kept as a detection.", minimum=0, maximum=1)
    nms_iou: float = setting(
        0.5,
        "IoU above which non-maximum suppression drops the lower-scoring box.",
        exclusive_minimum=0,
        maximum=1,
    )


def _centre_fractions() -> dict[str, float]:
    return {"2": 0.16, "4": 0.08, "8": 0.04}


@dataclass(frozen=True, kw_only=True)
class ReconstructionSettings(DenseTaskSettings):
    """``tasks.reconstruction``.

    Attributes:
        masks: Cartesian column masks, named as fastMRI names them: ``random``
            (``RandomMaskFunc``), ``equispaced`` (``EquiSpacedMaskFunc``, spacing = acceleration)
            and ``equispaced_fraction`` (``EquispacedMaskFractionFunc``, about n / acceleration
            columns in all; what brainssl called ``equispaced`` before).
        accelerations: acceleration factors.
        centre_fractions: fully sampled centre share per acceleration, keyed by the factor as
            a string (as the schema writes it).
        loss: training loss of the networks: ``l1``, or ``ssim`` (fastMRI's ``SSIMLoss``).
    """

    section: ClassVar[str] = "tasks.reconstruction"

    masks: tuple[str, ...] = setting(
        ("random", "equispaced_fraction"),
        "Cartesian column masks, named as fastMRI names them: random (RandomMaskFunc), equispaced "
        "(EquiSpacedMaskFunc, spacing = acceleration) and equispaced_fraction "
        "(EquispacedMaskFractionFunc, about n / acceleration columns; brainssl's former equispaced).",
        min_items=1,
        unique_items=True,
        items={"enum": ("random", "equispaced", "equispaced_fraction")},
    )
    accelerations: tuple[int, ...] = setting(
        (2, 4), "Acceleration factors.", min_items=1, unique_items=True, items={"enum": (2, 4, 8)}
    )
    centre_fractions: dict[str, float] = setting(
        factory=_centre_fractions,
        description="Fully sampled centre share per acceleration (fastMRI: 0.08 at 4x, 0.04 at 8x).",
        keyed=Keyed(
            description="Centre fraction at {key}x.",
            constraints={"exclusive_minimum": 0, "exclusive_maximum": 1},
        ),
    )
    loss: str = setting(
        "l1", "Training loss: l1, or ssim (fastMRI's SSIMLoss, 1 - mean SSIM).", enum=["l1", "ssim"]
    )

    def centre_fraction(self, acceleration: int) -> float:
        """The fully sampled centre share at ``acceleration``."""
        return float(self.centre_fractions[str(acceleration)])
