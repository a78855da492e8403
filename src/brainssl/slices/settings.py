"""Settings of the slices stage: one frozen dataclass built once, at the adapter.

Defaults follow the MoCo v3 brain MRI study (Huang et al., *Comput Med Imaging Graph* 2025):
keep brain-rich mid-axial slices. On 1 mm data (about 150 axial slices per cropped volume,
140 of them inside the brain) the defaults keep ~0.55 of the brain extent (77 slices), one
slice every 2 mm (39) and the upper half by entropy (~19): about eight to one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from brainssl.datasets import DATASETS
from brainssl.datasets.names import BIDS_NAME_PATTERN
from brainssl.settings import Keyed, from_mapping, setting

__all__ = [
    "ENTROPY_MODES",
    "ENTROPY_REGIONS",
    "FIGURE_KEYS",
    "PLAN_KEYS",
    "SHARD_KEYS",
    "STORE_DTYPES",
    "SliceSection",
    "SliceSettings",
]

ENTROPY_MODES = ("absolute", "percentile")
ENTROPY_REGIONS = ("image", "head", "brain")
STORE_DTYPES = ("uint8", "float16")
#: Config keys each rule depends on (its ``stage_params(..., keys=...)``); a test checks slices.smk.
PLAN_KEYS = ("shard_size",)
SHARD_KEYS = (
    "size",
    "dtype",
    "intensity_percentiles",
    "entropy_bins",
    "entropy_region",
    "entropy_mode",
    "entropy_threshold",
    "entropy_percentile",
    "position_window",
    "step_mm",
    "min_area",
)
FIGURE_KEYS = (*SHARD_KEYS, "montage_slices")


@dataclass(frozen=True)
class SliceSettings:
    """How slices are cut, measured, filtered and stored.

    Attributes:
        shard_size: subjects per shard (one array file and one job per shard).
        size: side (pixels) of the stored square slices (224 paper scale, 64/96 demo).
        dtype: ``uint8`` (value/255) or ``float16`` (value in [0, 1]).
        intensity_percentiles: per-volume percentiles ``(lo, hi)`` of the brain voxels mapped
            linearly to 0 and 1 (clipped); the background (outside the brain mask) is 0.
        entropy_bins: equal-width histogram bins over [0, 1] for the Shannon entropy.
        entropy_region: pixels the entropy is computed over: ``image`` (the whole stored
            square, background included), ``head`` (non-zero pixels of the preprocessed
            slice) or ``brain`` (brain mask; falls back to ``head`` where no mask exists).
        entropy_mode: ``absolute`` (keep entropy >= ``entropy_threshold`` bits) or
            ``percentile`` (threshold = that percentile of the candidate slices of the same
            shard and contrast, an estimate of the dataset's percentile that keeps shards
            independent of each other).
        entropy_threshold: bits, used in ``absolute`` mode.
        entropy_percentile: 0..100, used in ``percentile`` mode.
        position_window: inclusive ``(lo, hi)`` window of relative inferior-superior
            position (0 = lowest brain slice, 1 = highest); 2D images have no position and
            skip this test.
        step_mm: keep one slice every ``round(step_mm / spacing)`` (at least 1), counted
            from the lowest brain slice; adjacent 1 mm slices are near duplicates.
        min_area: smallest brain-area fraction (brain pixels / stored pixels) kept.
        montage_slices: slices per row (kept / dropped) in the report montage.
    """

    shard_size: int = setting(
        16,
        "Subjects per slice shard (one array file and one job per shard).",
        override=False,
        minimum=1,
        maximum=10000,
    )
    size: int = setting(
        224,
        "Side (pixels) of the stored square slices; 224 at paper scale, 64 or 96 for the demo.",
        minimum=8,
        maximum=1024,
    )
    dtype: str = setting(
        "uint8",
        "Stored pixel type; uint8 holds round(255 * value), float16 the value in [0, 1].",
        enum=STORE_DTYPES,
    )
    intensity_percentiles: tuple[float, float] = setting(
        (0.5, 99.5),
        "Per-volume percentiles (lo, hi) of the brain voxels mapped to 0 and 1 (clipped); "
        "everything outside the brain mask is 0.",
        items={"minimum": 0, "maximum": 100},
    )
    entropy_bins: int = setting(
        256,
        "Equal-width histogram bins on [0, 1] for the per-slice Shannon entropy (bits).",
        minimum=2,
        maximum=4096,
    )
    entropy_region: str = setting(
        "image",
        "Pixels the entropy is computed over: the whole stored square (image, background "
        "included), the non-zero pixels (head) or the brain mask (brain).",
        enum=ENTROPY_REGIONS,
    )
    entropy_mode: str = setting(
        "percentile",
        "absolute keeps slices with entropy >= entropy_threshold; percentile keeps those at or "
        "above that percentile of the candidate slices of the same shard and contrast.",
        enum=ENTROPY_MODES,
    )
    entropy_threshold: float = setting(
        4.0, "Entropy threshold in bits (entropy_mode absolute).", minimum=0, maximum=12
    )
    entropy_percentile: float = setting(
        50.0,
        "Entropy percentile below which candidate slices are dropped (entropy_mode percentile).",
        minimum=0,
        maximum=100,
    )
    position_window: tuple[float, float] = setting(
        (0.3, 0.85),
        "Inclusive window of relative inferior-superior position (0 = lowest brain slice, "
        "1 = highest) of the slices kept; 2D images have no position and skip it.",
        items={"minimum": -1, "maximum": 2},
    )
    step_mm: float = setting(
        2.0,
        "Keep one axial slice every step_mm (at least every slice; 0 keeps all).",
        minimum=0,
        maximum=20,
    )
    min_area: float = setting(
        0.05,
        "Smallest brain-area fraction (brain pixels / stored pixels) of a kept slice.",
        minimum=0,
        maximum=1,
    )
    montage_slices: int = setting(
        8,
        "Slices per row (kept / dropped) in each dataset's montage.",
        override=False,
        minimum=1,
        maximum=24,
    )

    def __post_init__(self) -> None:
        """Check ranges and enums, naming the offending key."""
        checks = {
            "shard_size": self.shard_size >= 1,
            "size": 8 <= self.size <= 1024,
            "dtype": self.dtype in STORE_DTYPES,
            "intensity_percentiles": len(self.intensity_percentiles) == 2
            and 0.0 <= self.intensity_percentiles[0] < self.intensity_percentiles[1] <= 100.0,
            "entropy_bins": 2 <= self.entropy_bins <= 4096,
            "entropy_region": self.entropy_region in ENTROPY_REGIONS,
            "entropy_mode": self.entropy_mode in ENTROPY_MODES,
            "entropy_threshold": self.entropy_threshold >= 0.0,
            "entropy_percentile": 0.0 <= self.entropy_percentile <= 100.0,
            "position_window": len(self.position_window) == 2
            and self.position_window[0] <= self.position_window[1],
            "step_mm": self.step_mm >= 0.0,
            "min_area": 0.0 <= self.min_area <= 1.0,
            "montage_slices": self.montage_slices >= 1,
        }
        bad = [key for key, ok in checks.items() if not ok]
        if bad:
            values = {key: getattr(self, key) for key in bad}
            raise ValueError(f"invalid slices setting(s): {values}")

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> SliceSettings:
        """Build from the rule's config slice (see :func:`brainssl.settings.from_mapping`)."""
        return from_mapping(cls, config, section="slices")

    def to_dict(self, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
        """Return the settings (only ``keys`` when given) as plain JSON-able values."""
        values = dataclasses.asdict(self)
        chosen = keys if keys is not None else tuple(values)
        return {k: list(values[k]) if isinstance(values[k], tuple) else values[k] for k in chosen}


@dataclass(frozen=True)
class SliceSection(SliceSettings):
    """The ``slices:`` config section: the stage's settings and their per-dataset overrides.

    Only the config schema (:mod:`brainssl.schema`) is built from it; jobs get their dataset's
    merged settings as a :class:`SliceSettings`.
    """

    per_dataset: Mapping[str, SliceSettings] = setting(
        factory=dict,
        description="Per-dataset overrides of the settings above (no defaults of their own).",
        keyed=Keyed(
            DATASETS, "Settings of the slices stage that differ for one dataset.", pattern=BIDS_NAME_PATTERN
        ),
    )
