"""The frozen-feature tasks' settings: one frozen dataclass per ``tasks.<task>`` config subsection.

Each task's :class:`~brainssl.tasks.registry.Task` entry names its class here; the config schema
(:mod:`brainssl.schema`) is generated from them. The task job reads its subsection as a mapping
(:func:`brainssl.tasks.registry.task_specs` builds the prediction targets from it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from brainssl.datasets import DATASETS
from brainssl.datasets.manifest import CONTRASTS, DATASET_PATTERN, DIAGNOSIS_PATTERN
from brainssl.settings import setting

__all__ = [
    "EMBEDDED_DATASETS",
    "BrainAgeSettings",
    "FrozenTaskSettings",
    "MolecularSettings",
    "NeurodegenerationSettings",
    "NeurodevelopmentalSettings",
    "StrokeTimeSettings",
    "SURVIVAL_MODELS",
    "SequenceSettings",
    "SurvivalSettings",
    "Tumor4Settings",
]

#: Datasets of the slice store, whose pooled embeddings the frozen heads read (the Decathlon
#: hippocampus crops are not embedded: see :func:`brainssl.wiring.slice_datasets`).
EMBEDDED_DATASETS = tuple(d for d in DATASETS if d != "hippocampus")
#: Survival heads: ridge-penalised Cox and random survival forest.
SURVIVAL_MODELS = ("cox", "rsf")


def _datasets(default: tuple[str, ...], description: str) -> Any:
    return setting(default, description, min_items=1, unique_items=True, items={"enum": EMBEDDED_DATASETS})


def _any_datasets(default: tuple[str, ...], description: str) -> Any:
    """Datasets of any name: user-named BIDS entries (``kind: bids``) as well as registered ones."""
    return setting(default, description, min_items=1, unique_items=True, items={"pattern": DATASET_PATTERN})


def _contrasts(default: tuple[str, ...]) -> Any:
    return setting(
        default,
        "Contrasts averaged per subject (empty = all).",
        unique_items=True,
        items={"enum": CONTRASTS},
    )


def _logistic_c() -> Any:
    return setting(
        1.0,
        "Inverse L2 penalty of the logistic-regression head (on standardised features).",
        exclusive_minimum=0,
        maximum=1000000,
    )


@dataclass(frozen=True, kw_only=True)
class FrozenTaskSettings:
    """The key every frozen-feature task subsection has."""

    enabled: bool = setting(True, "Run this task.")


@dataclass(frozen=True, kw_only=True)
class Tumor4Settings(FrozenTaskSettings):
    """``tasks.tumor4``."""

    datasets: tuple[str, ...] = _datasets(("tumor4",), "Datasets with tumor_class labels.")
    contrasts: tuple[str, ...] = _contrasts(())
    logistic_c: float = _logistic_c()


@dataclass(frozen=True, kw_only=True)
class SequenceSettings(FrozenTaskSettings):
    """``tasks.sequence``."""

    datasets: tuple[str, ...] = _datasets(("brats21",), "Datasets whose contrasts are classified.")
    logistic_c: float = _logistic_c()


@dataclass(frozen=True, kw_only=True)
class NeurodegenerationSettings(FrozenTaskSettings):
    """``tasks.neurodegeneration``."""

    datasets: tuple[str, ...] = _datasets(("oasis3",), "Datasets with diagnosis labels.")
    contrasts: tuple[str, ...] = _contrasts(("T1w",))
    logistic_c: float = _logistic_c()


@dataclass(frozen=True, kw_only=True)
class MolecularSettings(FrozenTaskSettings):
    """``tasks.molecular``."""

    datasets: tuple[str, ...] = _datasets(("brats21",), "Datasets with idh/mgmt labels.")
    contrasts: tuple[str, ...] = _contrasts(())
    logistic_c: float = _logistic_c()


@dataclass(frozen=True, kw_only=True)
class BrainAgeSettings(FrozenTaskSettings):
    """``tasks.brain_age``."""

    datasets: tuple[str, ...] = _datasets(
        ("ixi", "oasis3"), "Datasets with ages (each evaluated on its own)."
    )
    contrasts: tuple[str, ...] = _contrasts(("T1w",))
    ridge_alpha: float = setting(
        10.0,
        "L2 penalty of the ridge head (on standardised features).",
        exclusive_minimum=0,
        maximum=1000000,
    )
    controls_only: bool = setting(
        True, "Fit and score brain age on subjects without a disease diagnosis only."
    )


@dataclass(frozen=True, kw_only=True)
class SurvivalSettings(FrozenTaskSettings):
    """``tasks.survival``."""

    datasets: tuple[str, ...] = _datasets(("brats21",), "Datasets with survival_days/event in the manifest.")
    contrasts: tuple[str, ...] = _contrasts(())
    models: tuple[str, ...] = setting(
        SURVIVAL_MODELS,
        "Survival heads: ridge-penalised Cox (cox) and random survival forest (rsf).",
        min_items=1,
        unique_items=True,
        items={"enum": SURVIVAL_MODELS},
    )
    cox_alpha: float = setting(10.0, "Ridge penalty of the Cox head.", minimum=0, maximum=1000000)
    rsf_trees: int = setting(100, "Trees of the random survival forest.", minimum=1, maximum=5000)
    rsf_min_leaf: int = setting(3, "Minimum subjects per forest leaf.", minimum=1, maximum=1000)


@dataclass(frozen=True, kw_only=True)
class NeurodevelopmentalSettings(FrozenTaskSettings):
    """``tasks.neurodevelopmental``."""

    datasets: tuple[str, ...] = _any_datasets(
        ("abide",),
        "Datasets with a diagnosis and a site per subject (a kind: bids entry such as the "
        "ABIDE-style demo, or any dataset with those labels); each is evaluated on its own.",
    )
    contrasts: tuple[str, ...] = _contrasts(("T1w",))
    positive: str = setting(
        "autism", "The condition's diagnosis label (the positive class).", pattern=DIAGNOSIS_PATTERN
    )
    control: str = setting(
        "control",
        "The comparison group's diagnosis label; subjects with other labels are left out.",
        pattern=DIAGNOSIS_PATTERN,
    )
    site_evaluation: str = setting(
        "leave_site_out",
        "leave_site_out: every site's subjects in one test fold (min(tasks.folds, sites) folds, "
        "stratified by class where it can), so no head is tested on a site it was fitted on; "
        "site_stratified: subject folds balanced by site and class. Either replaces "
        "tasks.evaluation for this task.",
        enum=("leave_site_out", "site_stratified"),
    )
    site_baseline: bool = setting(
        True,
        "Also report a logistic head on one-hot site alone (encoder `site`, mode classical) on "
        "the same folds: the AUC the site effect gives, beside the encoders'.",
    )
    logistic_c: float = _logistic_c()


@dataclass(frozen=True, kw_only=True)
class StrokeTimeSettings(FrozenTaskSettings):
    """``tasks.stroke_time``."""

    datasets: tuple[str, ...] = _any_datasets(
        ("atlas",),
        "Datasets with days_since_event per subject (the ATLAS-style demo's sessions table); "
        "each is evaluated on its own.",
    )
    contrasts: tuple[str, ...] = _contrasts(("T1w",))
    ridge_alpha: float = setting(
        100.0,
        "L2 penalty of the ridge head (on standardised features); a few dozen subjects against "
        "hundreds of features need a strong one.",
        exclusive_minimum=0,
        maximum=1000000,
    )
