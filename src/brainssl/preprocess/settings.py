"""Settings of the preprocessing stage, one frozen dataclass per step.

The adapter turns the ``preprocess:`` config slice into a
:class:`PreprocessSettings` once (:meth:`PreprocessSettings.from_dict`); below
that point every function takes explicit values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from brainssl.settings import from_mapping

__all__ = [
    "N4Settings",
    "RegistrationSettings",
    "NormalisationSettings",
    "QCRules",
    "PreprocessSettings",
]

SKULL_STRIP_METHODS = ("deepbet", "atlas", "none")
NORMALISATION_METHODS = ("zscore", "whitestripe", "nyul", "none")


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

    enabled: bool = True
    shrink_mm: float = 6.0
    iterations: tuple[int, ...] = (50, 50, 30)
    convergence: float = 1e-3
    control_points: int = 4


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

    level_mm: tuple[float, ...] = (8.0, 4.0, 2.0)
    smoothing_mm: tuple[float, ...] = (4.0, 2.0, 1.0)
    sampling: float = 0.05
    histogram_bins: int = 32
    iterations: int = 100
    bspline: bool = False
    bspline_mesh: int = 4
    template_spacing_mm: float = 2.0


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

    method: str = "zscore"
    clip_percentiles: tuple[float, float] | None = (0.5, 99.5)
    whitestripe_width: float = 0.05
    zero_background: bool = True


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

    brain_ml: tuple[float, float] = (800.0, 2400.0)
    min_snr: float = 5.0
    max_bias_std: float = 0.5
    min_dice: float = 0.85
    allow_fov_contact: bool = False


@dataclass(frozen=True)
class PreprocessSettings:
    """Everything :func:`preprocess_session` needs, one frozen value.

    Attributes:
        spacing_mm: isotropic output voxel size.
        interpolation: ``linear`` or ``bspline`` for images (labels are always nearest).
        reference: modality whose grid and mask the session shares (first present one wins).
        skull_strip: ``atlas`` (default), ``deepbet`` (T1w) or ``none`` (already stripped).
        register_contrasts: rigidly register a contrast whose grid differs from the reference's.
        crop_margin_mm: margin around the brain bounding box.
        threads: SimpleITK / torch threads used by the steps.
        seed: seed of the registration's random sampling.
        n4: N4 settings.
        registration: registration settings.
        normalisation: normalisation settings.
        qc: QC rules.
        max_spacing_mm: inputs with a voxel dimension above this are rejected.
        min_spacing_mm: inputs with a voxel dimension below this are rejected.
    """

    spacing_mm: float = 1.0
    interpolation: str = "linear"
    reference: tuple[str, ...] = ("T1w", "T1ce", "T2w", "FLAIR", "PD")
    skull_strip: str = "atlas"
    register_contrasts: bool = True
    crop_margin_mm: float = 4.0
    threads: int = 1
    seed: int = 0
    n4: N4Settings = field(default_factory=N4Settings)
    registration: RegistrationSettings = field(default_factory=RegistrationSettings)
    normalisation: NormalisationSettings = field(default_factory=NormalisationSettings)
    qc: QCRules = field(default_factory=QCRules)
    max_spacing_mm: float = 8.0
    min_spacing_mm: float = 0.1

    def __post_init__(self) -> None:
        if self.skull_strip not in SKULL_STRIP_METHODS:
            raise ValueError(f"skull_strip must be one of {SKULL_STRIP_METHODS}, not {self.skull_strip!r}")
        method = self.normalisation.method
        if method not in NORMALISATION_METHODS:
            raise ValueError(f"normalisation.method must be one of {NORMALISATION_METHODS}, not {method!r}")
        if self.interpolation not in ("linear", "bspline"):
            raise ValueError(f"interpolation must be 'linear' or 'bspline', not {self.interpolation!r}")
        if not self.spacing_mm > 0:
            raise ValueError(f"spacing_mm must be > 0, got {self.spacing_mm}")

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> PreprocessSettings:
        """Build from the rule's config slice (see :func:`brainssl.settings.from_mapping`)."""
        return from_mapping(cls, config, section="preprocess")
