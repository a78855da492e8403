"""The one registry of downstream tasks: what each task is, reads, and predicts.

Every task has one :class:`Task` entry in :data:`TASKS`. The workflow derives its task lists
from it at parse time (:mod:`brainssl.wiring`, bound in ``workflow/rules/common.smk``:
frozen-feature tasks, dense tasks, which tasks train the supervised-from-scratch baseline,
which datasets a task reads), and
:func:`brainssl.tasks.units.task_specs` looks a frozen-feature task's prediction targets up
here. Adding a frozen-feature task is one :func:`register` call with a spec builder.

This module is imported while Snakemake parses the workflow: it imports nothing heavy
(no numpy, torch, scipy or nibabel).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FIGURES",
    "KINDS",
    "TASKS",
    "TASK_KINDS",
    "Task",
    "TaskSpec",
    "register",
    "task_datasets",
    "tasks_of_kind",
]

#: Kinds of prediction target a :class:`TaskSpec` can have.
KINDS = ("multiclass", "binary", "regression", "survival")
#: Kinds of task: heads on frozen pooled embeddings, dense heads on feature maps, analyses.
TASK_KINDS = ("frozen", "dense", "analysis")
#: Extra figures a frozen task can declare (each has its rule in ``workflow/rules/tasks.smk``).
FIGURES = ("risk_groups",)


@dataclass(frozen=True)
class TaskSpec:
    """One prediction target on one dataset.

    Attributes:
        name: task name as written in the results table.
        kind: ``multiclass``, ``binary``, ``regression`` or ``survival``.
        dataset: dataset of the slice store.
        target: label column (``modality`` for sequence classification; ``survival`` for the
            survival table joined from the manifest).
        metrics: metric names reported.
        unit: ``subject`` or ``modality`` (one unit per subject and contrast).
        modalities: contrasts whose pooled embeddings are averaged; empty for all.
        positive: the positive class of a binary task.
        controls_only: keep only units whose diagnosis is control or unknown (brain age).
    """

    name: str
    kind: str
    dataset: str
    target: str
    metrics: tuple[str, ...]
    unit: str = "subject"
    modalities: tuple[str, ...] = ()
    positive: str = ""
    controls_only: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task kind must be one of {KINDS}, got {self.kind!r}")
        if self.unit not in ("subject", "modality"):
            raise ValueError(f"unit must be 'subject' or 'modality', got {self.unit!r}")


SpecBuilder = Callable[[Mapping[str, Any]], list[TaskSpec]]


@dataclass(frozen=True)
class Task:
    """One downstream task of the workflow.

    Attributes:
        name: the task's name: its ``tasks.<name>`` config section and its
            ``results/tasks/<name>/`` folder.
        kind: ``frozen`` (one ``tasks_frozen`` job over pooled embeddings of every encoder),
            ``dense`` (its own rule in ``tasks_dense.smk``) or ``analysis`` (representation).
        datasets: the datasets a dense task always reads (it runs only when all are preprocessed).
        datasets_key: key of the task's config section that lists its datasets instead (frozen
            tasks, hippocampus segmentation); empty when ``datasets`` is fixed.
        scratch: the task's job also trains the supervised-from-scratch baseline (``tasks.scratch``).
        manifests: the job reads its datasets' manifests (the survival table).
        figures: extra report figures of the job besides the label-fraction curves (file stems
            under ``results/tasks/<name>/``; ``risk_groups``: Kaplan-Meier curves of risk halves).
        specs: frozen tasks: builds the prediction targets from the task's settings.
        defaults: the task's settings where the config has no ``tasks.<name>`` section (a task
            registered without a schema section; the schema rejects unknown config keys).
    """

    name: str
    kind: str
    datasets: tuple[str, ...] = ()
    datasets_key: str = ""
    scratch: bool = False
    manifests: bool = False
    figures: tuple[str, ...] = ()
    specs: SpecBuilder | None = field(default=None, compare=False)
    defaults: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task kind must be one of {TASK_KINDS}, got {self.kind!r}")
        if (self.kind == "frozen") != (self.specs is not None):
            raise ValueError(f"{self.name}: frozen tasks (and only they) need a spec builder")
        if self.datasets and self.datasets_key:
            raise ValueError(f"{self.name}: fixed datasets or a datasets key, not both")
        if not set(self.figures) <= set(FIGURES):
            raise ValueError(f"{self.name}: extra figures must be among {FIGURES}, got {self.figures}")
        if self.figures and self.scratch:
            raise ValueError(f"{self.name}: the survival rule (risk_groups) trains no scratch baseline")


#: Every task, by name, in the order of the results table's inputs.
TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add a task to :data:`TASKS` (before the workflow parses, for it to see the task).

    Raises:
        ValueError: when a task of that name is registered already.
    """
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is registered already")
    TASKS[task.name] = task
    return task


def tasks_of_kind(kind: str) -> list[str]:
    """Names of the registered tasks of one kind, in registration order."""
    return [name for name, task in TASKS.items() if task.kind == kind]


def task_datasets(name: str, settings: Mapping[str, Any]) -> list[str]:
    """The datasets a task reads: its fixed ones, or those listed under its ``datasets_key``."""
    task = TASKS[name]
    if task.datasets_key:
        return list(settings.get(task.datasets_key, ()))
    return list(task.datasets)


# ---- spec builders of the frozen-feature tasks: settings -> one TaskSpec per dataset (and target)


def _modalities(settings: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(settings.get("modalities", ()))


def _datasets(settings: Mapping[str, Any]) -> list[str]:
    return list(settings.get("datasets", ()))


def tumor4_specs(settings: Mapping[str, Any]) -> list[TaskSpec]:
    metrics = ("accuracy", "balanced_accuracy", "macro_f1")
    mods = _modalities(settings)
    return [
        TaskSpec("tumor4", "multiclass", d, "tumor_class", metrics, modalities=mods)
        for d in _datasets(settings)
    ]


def sequence_specs(settings: Mapping[str, Any]) -> list[TaskSpec]:
    metrics = ("macro_auc", "accuracy")
    return [
        TaskSpec("sequence", "multiclass", d, "modality", metrics, unit="modality")
        for d in _datasets(settings)
    ]


def neurodegeneration_specs(settings: Mapping[str, Any]) -> list[TaskSpec]:
    mods = _modalities(settings)
    return [
        TaskSpec(
            "neurodegeneration", "binary", d, "diagnosis", ("auc",), modalities=mods, positive="alzheimer"
        )
        for d in _datasets(settings)
    ]


def molecular_specs(settings: Mapping[str, Any]) -> list[TaskSpec]:
    mods = _modalities(settings)
    return [
        TaskSpec(f"molecular_{target}", "binary", d, target, ("auc",), modalities=mods, positive=positive)
        for d in _datasets(settings)
        for target, positive in (("idh", "mutant"), ("mgmt", "1"))
    ]


def brain_age_specs(settings: Mapping[str, Any]) -> list[TaskSpec]:
    metrics = ("mae", "mae_corrected", "gap_slope", "gap_slope_corrected")
    mods, controls = _modalities(settings), bool(settings.get("controls_only", True))
    return [
        TaskSpec("brain_age", "regression", d, "age", metrics, modalities=mods, controls_only=controls)
        for d in _datasets(settings)
    ]


def survival_specs(settings: Mapping[str, Any]) -> list[TaskSpec]:
    metrics = ("c_harrell", "c_uno", "ibs", "logrank_p")
    mods = _modalities(settings)
    return [
        TaskSpec("survival", "survival", d, "survival", metrics, modalities=mods) for d in _datasets(settings)
    ]


for _task in (
    Task("tumor4", "frozen", datasets_key="datasets", scratch=True, specs=tumor4_specs),
    Task("sequence", "frozen", datasets_key="datasets", scratch=True, specs=sequence_specs),
    Task("neurodegeneration", "frozen", datasets_key="datasets", scratch=True, specs=neurodegeneration_specs),
    Task("molecular", "frozen", datasets_key="datasets", scratch=True, specs=molecular_specs),
    Task("brain_age", "frozen", datasets_key="datasets", specs=brain_age_specs),
    Task(
        "survival",
        "frozen",
        datasets_key="datasets",
        manifests=True,
        figures=("risk_groups",),
        specs=survival_specs,
    ),
    Task("representation", "analysis"),
    Task("tumor_segmentation", "dense", datasets=("brats21",)),
    Task("hippocampus_segmentation", "dense", datasets_key="datasets"),
    Task("tumor_detection", "dense", datasets=("brats21",)),
    Task("reconstruction", "dense", datasets=("fastmri_brain",)),
):
    register(_task)
del _task
