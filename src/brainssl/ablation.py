"""The slice-filter ablation's names and settings (``pretrain.ablation``); imports nothing heavy.

The first seed's method claim (Huang et al.) is that pretraining on entropy- and
position-filtered slices helps. The ablation trains the same method, architecture and settings,
for the same optimizer steps, on (a) the filtered store (the ordinary ``<method>-<arch>`` run),
(b) every brain slice, unfiltered (``<method>-<arch>-unfiltered``), and (c) a seeded random
subset of those slices the size of (a)'s train split (``<method>-<arch>-subset``). The workflow
(:mod:`brainssl.wiring.ablation`), the task conclusions and this module's callers all parse
encoder names here, so the workflow reads it while Snakemake parses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from brainssl.architectures import ARCHS, METHODS
from brainssl.settings import setting

__all__ = [
    "FILTERED",
    "VARIANTS",
    "AblationSettings",
    "ablation_name",
    "ablation_pairs",
    "ablation_variant",
    "unfiltered_overrides",
]

#: The runs the ablation adds beside the filtered one, in the order tables list them.
VARIANTS = ("unfiltered", "subset")
#: The variant label of the ordinary run on the filtered store.
FILTERED = "filtered"


@dataclass(frozen=True)
class AblationSettings:
    """``pretrain.ablation``: pretraining on the filtered store against unfiltered slices.

    Attributes:
        enabled: build the unfiltered store and train, embed and evaluate the variants.
        method: the method of the ablation runs (one of ``pretrain.methods``).
        arch: their architecture (one of ``pretrain.archs``; empty: the first).
        variants: the runs besides the filtered one (:data:`VARIANTS`).
    """

    enabled: bool = setting(
        False,
        "Train the slice-filter ablation: the same run on every brain slice and on a random subset "
        "the size of the filtered store, at equal steps (an unfiltered slice store, two more "
        "pretraining runs, their embeddings and frozen-feature tasks).",
    )
    method: str = setting(
        "moco",
        "Method of the ablation runs (the first seed's: MoCo v3); must be one of pretrain.methods.",
        enum=METHODS,
    )
    arch: str = setting(
        "",
        "Architecture of the ablation runs, one of pretrain.archs (empty: the first of them).",
        enum=("", *ARCHS),
    )
    variants: tuple[str, ...] = setting(
        VARIANTS,
        "Runs beside the filtered one: unfiltered (every brain slice; each epoch draws as many as the "
        "filtered train split holds) and subset (a seeded random subset of that size, fixed).",
        min_items=1,
        unique_items=True,
        items={"enum": VARIANTS},
    )


def ablation_name(method: str, arch: str, variant: str) -> str:
    """An ablation run's encoder name: ``moco-vit_tiny-unfiltered`` (the filtered run: ``moco-vit_tiny``)."""
    if variant == FILTERED:
        return f"{method}-{arch}"
    if variant not in VARIANTS:
        raise ValueError(f"unknown ablation variant {variant!r}; choose one of {VARIANTS}")
    return f"{method}-{arch}-{variant}"


def ablation_variant(name: str) -> str | None:
    """The variant of an ablation run's encoder name (``unfiltered``, ``subset``); None for any other name."""
    parts = name.split("-")
    if len(parts) == 3 and parts[0] in METHODS and parts[1] in ARCHS and parts[2] in VARIANTS:
        return parts[2]
    return None


def ablation_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """The paired comparisons of the ablation runs among ``names``: each with its filtered run, then random.

    The filtered run comes first, so its gain is the filter's; the random-initialised encoder of
    the arch comes second, as every pretrained encoder's baseline.
    """
    pairs = []
    for name in sorted(n for n in names if ablation_variant(n)):
        filtered, arch = name.rsplit("-", 1)[0], name.split("-")[1]
        pairs += [(filtered, name)] if filtered in names else []
        pairs += [(name, f"random-{arch}")] if f"random-{arch}" in names else []
    return pairs


def unfiltered_overrides(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The slice settings of the unfiltered store: one dataset's, with the entropy and position filters off.

    Cutting, resizing, intensity mapping, the axial step and the brain-area minimum stay as they
    are, so the store holds every brain slice the filtered one could keep: entropy is compared with
    0 bits (always passes; the unused percentile is set to 0, so tuning the filter re-runs nothing
    here) and the position window widens to at least [0, 1], the lowest to the highest brain slice
    (never narrower than the filtered window, so the store is a superset).

    Args:
        settings: a dataset's slice settings (``stage_params(config, "slices", dataset, ...)``).

    Returns:
        A copy with ``entropy_mode``, ``entropy_threshold``, ``entropy_percentile`` and
        ``position_window`` replaced.
    """
    low, high = settings["position_window"]
    return {
        **settings,
        "entropy_mode": "absolute",
        "entropy_threshold": 0.0,
        "entropy_percentile": 0.0,
        "position_window": [min(0.0, float(low)), max(1.0, float(high))],
    }
