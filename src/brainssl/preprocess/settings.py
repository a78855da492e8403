"""Settings of the preprocessing stage, one frozen dataclass per step.

The adapter turns the ``preprocess:`` config slice into a
:class:`PreprocessSettings` once (:meth:`PreprocessSettings.from_dict`); below
that point every function takes explicit values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from brainssl.datasets.names import BIDS_NAME_PATTERN
from brainssl.settings import Keyed, from_mapping, setting

from .shards import PREPROCESS_DATASETS

__all__ = [
    "N4Settings",
    "RegistrationSettings",
    "NormalisationSettings",
    "QCRules",
    "PreprocessSettings",
    "PreprocessSection",
]

SKULL_STRIP_METHODS = ("deepbet", "atlas", "none")
NORMALISATION_METHODS = ("zscore", "whitestripe", "nyul", "none")
INTERPOLATIONS = ("linear", "bspline")


@dataclass(frozen=True)
class N4Settings:
    """N4 bias-field correction (Tustison et al. 2010) as run by SimpleITK.

    Attributes:
        enabled: run N4 at all.
        shrink_mm: the field is fitted on the image shrunk by the integer factor
            ``round(shrink_mm / spacing)`` (4 at 1.5 mm, 6 at 1 mm), then evaluated at full
            resolution (``GetLogBiasFieldAsImage``).
        iterations: maximum iterations per fitting level (one entry per level).
        convergence: convergence threshold.
        control_points: initial number of B-spline control points per axis.
    """

    enabled: bool = setting(True, "Run N4 bias-field correction.")
    shrink_mm: float = setting(
        6.0,
        "The bias field is fitted on the image shrunk to about this voxel size (mm).",
        minimum=1,
        maximum=16,
    )
    iterations: tuple[int, ...] = setting(
        (50, 50, 30),
        "Maximum N4 iterations per fitting level (one entry per level).",
        items={"minimum": 1, "maximum": 500},
        min_items=1,
        max_items=6,
    )
    convergence: float = setting(1e-3, "N4 convergence threshold.", exclusive_minimum=0, maximum=0.1)
    control_points: int = setting(
        4, "Initial B-spline control points per axis of the N4 field.", minimum=4, maximum=16
    )


@dataclass(frozen=True)
class RegistrationSettings:
    """Multi-resolution Mattes-MI registration (atlas skull strip and contrast-to-T1w).

    Attributes:
        level_mm: the voxel size (mm) each pyramid level is shrunk to, coarse to fine; the
            integer shrink factor of a level is ``round(level_mm / spacing)`` (at least 1).
        smoothing_mm: Gaussian smoothing sigma (mm) per level.
        sampling: fraction of voxels sampled at random for the metric (sparse sampling).
        histogram_bins: Mattes mutual-information bins.
        iterations: optimiser iterations per level.
        bspline: add a coarse B-spline stage after the affine one (atlas only).
        bspline_mesh: B-spline control mesh size per axis.
        template_spacing_mm: the ICBM152 template is resampled to this spacing once (cached).
    """

    level_mm: tuple[float, ...] = setting(
        (8.0, 4.0, 2.0),
        "Voxel size (mm) of each registration pyramid level, coarse to fine.",
        items={"minimum": 0.5, "maximum": 32},
        min_items=1,
        max_items=5,
    )
    smoothing_mm: tuple[float, ...] = setting(
        (4.0, 2.0, 1.0),
        "Gaussian smoothing sigma (mm) per pyramid level (same length as level_mm).",
        items={"minimum": 0, "maximum": 16},
        min_items=1,
        max_items=5,
    )
    sampling: float = setting(
        0.05,
        "Fraction of voxels sampled at random for the Mattes MI metric.",
        exclusive_minimum=0,
        maximum=1,
    )
    histogram_bins: int = setting(32, "Mattes mutual-information histogram bins.", minimum=8, maximum=256)
    iterations: int = setting(100, "Optimiser iterations per pyramid level.", minimum=1, maximum=1000)
    bspline: bool = setting(False, "Add a coarse B-spline stage after the affine one (atlas only).")
    bspline_mesh: int = setting(4, "B-spline control mesh size per axis.", minimum=2, maximum=16)
    template_spacing_mm: float = setting(
        2.0,
        "The ICBM152 template is resampled to this spacing (mm) for registration.",
        minimum=0.5,
        maximum=4,
    )


@dataclass(frozen=True)
class NormalisationSettings:
    """Intensity normalisation within the brain.

    Attributes:
        method: ``zscore``, ``whitestripe``, ``nyul`` (landmarks fitted on training subjects
            only, passed to :func:`preprocess_session`) or ``none``.
        clip_percentiles: (low, high) percentiles within the brain that intensities are clipped
            to before normalising; ``None`` disables clipping.
        whitestripe_width: half-width of the white stripe in quantile units (0.05 in the paper).
        zero_background: set voxels outside the brain mask to 0 after normalising.
    """

    method: str = setting(
        "zscore",
        "Intensity normalisation within the brain: z-score, WhiteStripe, Nyúl histogram matching "
        "(landmarks fitted on training subjects only) or none.",
        enum=NORMALISATION_METHODS,
    )
    clip_percentiles: tuple[float, float] | None = setting(
        (0.5, 99.5),
        "(low, high) brain-intensity percentiles clipped to before normalising; null disables.",
        items={"minimum": 0, "maximum": 100},
    )
    whitestripe_width: float = setting(
        0.05, "Half-width of the white stripe in quantile units.", exclusive_minimum=0, maximum=0.5
    )
    zero_background: bool = setting(True, "Set voxels outside the brain mask to 0.")


@dataclass(frozen=True)
class QCRules:
    """Thresholds that turn a QC record into flags (:func:`qc_flags`).

    Attributes:
        brain_ml: allowed brain-mask volume range (ml).
        min_snr: smallest acceptable SNR (``NaN`` SNR is not flagged).
        max_bias_std: largest acceptable std of the log bias field within the brain.
        min_dice: smallest acceptable Dice against a ground-truth mask, when one is given.
        allow_fov_contact: do not flag a mask that touches the field of view.
    """

    brain_ml: tuple[float, float] = setting(
        (800.0, 2400.0),
        "Allowed brain-mask volume range (ml); outside it a session is flagged.",
        items={"minimum": 0, "maximum": 10000},
    )
    min_snr: float = setting(5.0, "Sessions with a lower SNR estimate are flagged.", minimum=0, maximum=1000)
    max_bias_std: float = setting(
        0.5,
        "Sessions whose log bias field std within the brain exceeds this are flagged.",
        minimum=0,
        maximum=10,
    )
    min_dice: float = setting(
        0.85,
        "Sessions whose mask Dice against a ground-truth mask is lower are flagged.",
        minimum=0,
        maximum=1,
    )
    allow_fov_contact: bool = setting(False, "Do not flag a brain mask that touches the field of view.")


@dataclass(frozen=True)
class PreprocessSettings:
    """Everything :func:`preprocess_session` needs, one frozen value.

    Attributes:
        spacing_mm: isotropic output voxel size.
        interpolation: ``linear`` or ``bspline`` for images (labels are always nearest).
        reference: contrast whose grid and mask the session shares (first present one wins).
        skull_strip: ``atlas`` (default), ``deepbet`` (T1w) or ``none`` (already stripped).
        register_contrasts: rigidly register a contrast whose grid differs from the reference's.
        crop_margin_mm: margin around the brain bounding box.
        threads: threads of resampling and deepbet (the ITK fits always run on one thread, so
            results do not depend on it).
        seed: seed of the registration's random sampling.
        n4: N4 settings.
        registration: registration settings.
        normalisation: normalisation settings.
        qc: QC rules.
        max_spacing_mm: inputs with a voxel dimension above this are rejected.
        min_spacing_mm: inputs with a voxel dimension below this are rejected.
    """

    spacing_mm: float = setting(
        1.0,
        "Isotropic output voxel size (mm); 1.0 for real data, 2.0 keeps the demo fast.",
        minimum=0.5,
        maximum=4.0,
    )
    interpolation: str = setting(
        "linear",
        "Image interpolator when resampling (labels always use nearest neighbour).",
        enum=INTERPOLATIONS,
    )
    reference: tuple[str, ...] = setting(
        ("T1w", "T1ce", "T2w", "FLAIR", "PD"),
        "Contrast whose grid and mask the session shares (first present one wins).",
        config=False,
    )
    skull_strip: str = setting(
        "atlas",
        'Skull stripping of the reference contrast (T1w when present): "deepbet" (CNN, T1w), '
        '"atlas" (registration to the ICBM152 whole-head template, its brain mask propagated), '
        '"none" (already stripped data, e.g. BraTS, or crops; an intensity head mask is used).',
        enum=SKULL_STRIP_METHODS,
    )
    register_contrasts: bool = setting(
        True, "Rigidly register a contrast to the reference when their grids differ."
    )
    crop_margin_mm: float = setting(
        4.0, "Margin (mm) kept around the brain's bounding box when cropping.", minimum=0, maximum=50
    )
    threads: int = setting(
        1,
        "Cores per shard job (resampling, deepbet; the ITK fits use one); not a rerun trigger.",
        override=False,
        minimum=1,
        maximum=64,
    )
    seed: int = setting(0, "Seed of the registration's random sampling (the job's seed).", config=False)
    n4: N4Settings = setting(factory=N4Settings, description="N4 bias-field correction (SimpleITK).")
    registration: RegistrationSettings = setting(
        factory=RegistrationSettings,
        description="Multi-resolution registration (atlas skull strip, contrast to reference).",
    )
    normalisation: NormalisationSettings = setting(
        factory=NormalisationSettings,
        description="Intensity clipping and normalisation within the brain.",
    )
    qc: QCRules = setting(
        factory=QCRules, description="QC rules; a session breaking one is flagged with the reason."
    )
    max_spacing_mm: float = setting(
        8.0,
        "Inputs with a voxel dimension above this (mm) are recorded as failures.",
        minimum=1,
        maximum=20,
    )
    min_spacing_mm: float = setting(
        0.1, "Inputs with a voxel dimension below this (mm) are rejected.", config=False
    )

    def __post_init__(self) -> None:
        if self.skull_strip not in SKULL_STRIP_METHODS:
            raise ValueError(f"skull_strip must be one of {SKULL_STRIP_METHODS}, not {self.skull_strip!r}")
        method = self.normalisation.method
        if method not in NORMALISATION_METHODS:
            raise ValueError(f"normalisation.method must be one of {NORMALISATION_METHODS}, not {method!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be 'linear' or 'bspline', not {self.interpolation!r}")
        if not self.spacing_mm > 0:
            raise ValueError(f"spacing_mm must be > 0, got {self.spacing_mm}")

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> PreprocessSettings:
        """Build from the rule's config slice (see :func:`brainssl.settings.from_mapping`)."""
        return from_mapping(cls, config, section="preprocess")


@dataclass(frozen=True)
class PreprocessSection(PreprocessSettings):
    """The ``preprocess:`` config section: the session settings, the stage's own keys, overrides.

    Only the config schema (:mod:`brainssl.schema`) is built from it; jobs get their dataset's
    merged settings (:func:`brainssl.wiring.preprocess_settings`) as a :class:`PreprocessSettings`.
    """

    shard_size: int = setting(
        16,
        "Subjects per preprocessing job (10,000 subjects at 32 make 313 jobs).",
        minimum=1,
        maximum=1000,
    )
    exclude_flagged: bool = setting(
        True,
        "Drop sessions with a QC flag from results/preprocess/<dataset>/table.tsv (what later "
        "stages read); qc.tsv keeps every session with its flags either way.",
    )
    nyul_fit_subjects: int = setting(
        20,
        "Training subjects (the first in subject order) on which Nyúl landmarks are fitted "
        "when a dataset's normalisation method is nyul.",
        minimum=1,
        maximum=10000,
    )
    per_dataset: Mapping[str, PreprocessSettings] = setting(
        factory=dict,
        description="Per-dataset overrides of the settings above (no defaults of their own).",
        keyed=Keyed(
            PREPROCESS_DATASETS,
            "One dataset's preprocessing overrides; each key (nested keys merged one by one) "
            "replaces the stage value, an absent key keeps it.",
            pattern=BIDS_NAME_PATTERN,
        ),
    )
