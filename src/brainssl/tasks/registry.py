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

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FIGURES",
    "KINDS",
    "SITE_FOLDS",
    "TASKS",
    "TASK_KINDS",
    "Task",
    "TaskSpec",
    "register",
    "task_datasets",
    "task_settings",
    "tasks_of_kind",
]

#: Kinds of prediction target a :class:`TaskSpec` can have.
KINDS = ("multiclass", "binary", "regression", "survival")
#: Kinds of task: heads on frozen pooled embeddings, dense heads on feature maps, analyses.
TASK_KINDS = ("frozen", "dense", "analysis")
#: Extra figures a frozen task can declare (each has its rule in ``workflow/rules/tasks.smk``).
FIGURES = ("risk_groups",)
#: Site-aware folds a spec can ask for (:func:`brainssl.tasks.sites.site_folds`): each site's
#: subjects all in one test fold, or folds stratified by site and class.
SITE_FOLDS = ("leave_site_out", "site_stratified")


@dataclass(frozen=True)
class TaskSpec:
    """One prediction target on one dataset.

    Attributes:
        name: task name as written in the results table.
        kind: ``multiclass``, ``binary``, ``regression`` or ``survival``.
        dataset: dataset of the slice store.
        target: label column (``contrast`` for sequence classification; ``survival`` for the
            survival table joined from the manifest).
        metrics: metric names reported.
        unit: ``subject`` or ``contrast`` (one unit per subject and contrast).
        contrasts: the contrasts whose pooled embeddings are averaged; empty for all.
        positive: the positive class of a binary task.
        controls_only: keep only units whose diagnosis is control or unknown (brain age).
        classes: keep only units whose label is one of these (empty: every label).
        site_folds: ``leave_site_out`` or ``site_stratified`` (:data:`SITE_FOLDS`): folds keep
            sites apart or balanced, whatever ``tasks.evaluation`` says, and a site-only baseline
            is reported beside the encoders; empty for the shared evaluation.
    """

    name: str
    kind: str
    dataset: str
    target: str
    metrics: tuple[str, ...]
    unit: str = "subject"
    contrasts: tuple[str, ...] = ()
    positive: str = ""
    controls_only: bool = False
    classes: tuple[str, ...] = ()
    site_folds: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task kind must be one of {KINDS}, got {self.kind!r}")
        if self.unit not in ("subject", "contrast"):
            raise ValueError(f"unit must be 'subject' or 'contrast', got {self.unit!r}")
        if self.site_folds not in ("", *SITE_FOLDS):
            raise ValueError(f"site_folds must be empty or one of {SITE_FOLDS}, got {self.site_folds!r}")


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
        description: what the task is and reports (its schema section's description).
        settings: ``module:Class`` of the task's settings dataclass, from which its
            ``tasks.<name>`` schema section is generated (:mod:`brainssl.schema`); a path, so that
            this module imports none of the heavy task modules.
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
    description: str = ""
    settings: str = ""

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


def task_settings(name: str) -> type | None:
    """The settings dataclass of a task (None when its entry names none)."""
    path = TASKS[name].settings
    if not path:
        return None
    module, _, qualname = path.partition(":")
    cls: type = getattr(importlib.import_module(module), qualname)
    return cls


def task_datasets(name: str, settings: Mapping[str, Any]) -> list[str]:
    """The datasets a task reads: its fixed ones, or those listed under its ``datasets_key``."""
    task = TASKS[name]
    if task.datasets_key:
        return list(settings.get(task.datasets_key, ()))
    return list(task.datasets)


# ---- spec builders of the frozen-feature tasks: settings -> one TaskSpec per dataset (and target)


def _contrasts(settings: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(settings.get("contrasts", ()))


def _datasets(settings: Mapping[str, Any]) -> list[str]:
    return list(settings.get("datasets", ()))


def tumor4_specs(settings: Mapping[str, Any]) -> list[TaskSpec]:
    metrics = ("accuracy", "balanced_accuracy", "macro_f1")
    contrasts = _contrasts(settings)
    return [
        TaskSpec("tumor4", "multiclass", d, "tumor_class", metrics, contrasts=contrasts)
        for d in _datasets(settings)
    ]


def sequence_specs(settings: Mapping[str, Any]) -> list[TaskSpec]:
    metrics = ("macro_auc", "accuracy")
    return [
        TaskSpec("sequence", "multiclass", d, "contrast", metrics, unit="contrast")
        for d in _datasets(settings)
    ]


def neurodegeneration_specs(settings: Mapping[str, Any]) -> list[TaskSpec]:
    contrasts = _contrasts(settings)
    return [
        TaskSpec(
            "neurodegeneration", "binary", d, "diagnosis", ("auc",), contrasts=contrasts, positive="alzheimer"
        )
        for d in _datasets(settings)
    ]


def molecular_specs(settings: Mapping[str, Any]) -> list[TaskSpec]:
    contrasts = _contrasts(settings)
    return [
        TaskSpec(f"molecular_{target}", "binary", d, target, ("auc",), contrasts=contrasts, positive=positive)
        for d in _datasets(settings)
        for target, positive in (("idh", "mutant"), ("mgmt", "1"))
    ]


def brain_age_specs(settings: Mapping[str, Any]) -> list[TaskSpec]:
    metrics = ("mae", "mae_corrected", "gap_slope", "gap_slope_corrected")
    contrasts, controls = _contrasts(settings), bool(settings.get("controls_only", True))
    return [
        TaskSpec("brain_age", "regression", d, "age", metrics, contrasts=contrasts, controls_only=controls)
        for d in _datasets(settings)
    ]


def neurodevelopmental_specs(settings: Mapping[str, Any]) -> list[TaskSpec]:
    contrasts = _contrasts(settings)
    positive, control = str(settings.get("positive", "autism")), str(settings.get("control", "control"))
    return [
        TaskSpec(
            "neurodevelopmental",
            "binary",
            d,
            "diagnosis",
            ("auc",),
            contrasts=contrasts,
            positive=positive,
            classes=(control, positive),
            site_folds=str(settings.get("site_evaluation", "leave_site_out")),
        )
        for d in _datasets(settings)
    ]


def stroke_time_specs(settings: Mapping[str, Any]) -> list[TaskSpec]:
    metrics = ("mae",)  # brain age's bias correction is no estimate of time: it blows up at slope ~0
    contrasts = _contrasts(settings)
    return [
        TaskSpec("stroke_time", "regression", d, "days_since_event", metrics, contrasts=contrasts)
        for d in _datasets(settings)
    ]


def survival_specs(settings: Mapping[str, Any]) -> list[TaskSpec]:
    metrics = ("c_harrell", "c_uno", "ibs", "logrank_p")
    contrasts = _contrasts(settings)
    return [
        TaskSpec("survival", "survival", d, "survival", metrics, contrasts=contrasts)
        for d in _datasets(settings)
    ]


_FROZEN = "brainssl.tasks.frozen_settings"
_DENSE = "brainssl.tasks.dense_settings"

for _task in (
    Task(
        "tumor4",
        "frozen",
        datasets_key="datasets",
        scratch=True,
        specs=tumor4_specs,
        description="4-class tumour classification (glioma, meningioma, pituitary, no tumour) on "
        "the tumour image set; accuracy, balanced accuracy, macro-F1.",
        settings=f"{_FROZEN}:Tumor4Settings",
    ),
    Task(
        "sequence",
        "frozen",
        datasets_key="datasets",
        scratch=True,
        specs=sequence_specs,
        description="MRI sequence classification (T1w, T1ce, T2w, FLAIR), one unit per subject and "
        "contrast, split by subject; macro-AUC and accuracy.",
        settings=f"{_FROZEN}:SequenceSettings",
    ),
    Task(
        "neurodegeneration",
        "frozen",
        datasets_key="datasets",
        scratch=True,
        specs=neurodegeneration_specs,
        description="Alzheimer-like against control (OASIS-3 layout); AUC.",
        settings=f"{_FROZEN}:NeurodegenerationSettings",
    ),
    Task(
        "molecular",
        "frozen",
        datasets_key="datasets",
        scratch=True,
        specs=molecular_specs,
        description="IDH (mutant against wildtype) and MGMT (methylated against not) status from "
        "BraTS subjects; AUC.",
        settings=f"{_FROZEN}:MolecularSettings",
    ),
    Task(
        "brain_age",
        "frozen",
        datasets_key="datasets",
        specs=brain_age_specs,
        description="Brain age regression (ridge head); MAE and the slope of the brain-age gap "
        "against age, before and after the linear age-bias correction (Cole et al. 2018) fitted "
        "on cross-validated training predictions.",
        settings=f"{_FROZEN}:BrainAgeSettings",
    ),
    Task(
        "survival",
        "frozen",
        datasets_key="datasets",
        manifests=True,
        figures=("risk_groups",),
        specs=survival_specs,
        description="Overall survival of BraTS subjects (manifest survival table): penalised Cox "
        "and random survival forest; Harrell and Uno C-index, integrated Brier score, log-rank p "
        "of the median risk split with Kaplan-Meier curves.",
        settings=f"{_FROZEN}:SurvivalSettings",
    ),
    Task(
        "neurodevelopmental",
        "frozen",
        datasets_key="datasets",
        scratch=True,
        specs=neurodevelopmental_specs,
        description="Neurodevelopmental condition against controls (BrainDINO; the ABIDE-style "
        "demo: autism) under site-aware evaluation: leave-site-out (or site-stratified) folds; "
        "AUC with subject-bootstrap intervals, beside a site-only baseline (a logistic head on "
        "one-hot site, encoder `site`) that shows what the site effect alone gives.",
        settings=f"{_FROZEN}:NeurodevelopmentalSettings",
    ),
    Task(
        "stroke_time",
        "frozen",
        datasets_key="datasets",
        specs=stroke_time_specs,
        description="Post-stroke temporal prediction (BrainDINO; BrainIAC's time to stroke): days "
        "from stroke onset to the scan (manifest days_since_event, the ATLAS-style demo), ridge "
        "head; MAE in days with subject-bootstrap intervals (predicting the mean of days uniform "
        "on 1-365 scores about 91).",
        settings=f"{_FROZEN}:StrokeTimeSettings",
    ),
    Task(
        "representation",
        "analysis",
        description="Representation analysis of slice embeddings: PCA/t-SNE maps, kNN retrieval "
        "of contrast/dataset/pathology (test against training subjects), ridge probe of slice "
        "position.",
        settings="brainssl.tasks.representation:RepresentationSettings",
    ),
    Task(
        "tumor_segmentation",
        "dense",
        datasets=("brats21",),
        description="BraTS whole tumour, tumour core and enhancing tumour segmentation; Dice and "
        "HD95 per subject in 3D.",
        settings=f"{_DENSE}:TumorSegmentationSettings",
    ),
    Task(
        "hippocampus_segmentation",
        "dense",
        datasets_key="datasets",
        description="Hippocampus segmentation: Decathlon Task04 labels (anterior/posterior) and "
        "generator labels of OASIS-3/IXI (left/right); Dice and HD95 per subject in 3D.",
        settings=f"{_DENSE}:HippocampusSegmentationSettings",
    ),
    Task(
        "tumor_detection",
        "dense",
        datasets=("brats21",),
        description="Tumour detection: whole-tumour boxes per BraTS slice, CenterNet-style head, "
        "COCO mAP@[.5:.95] and mAP@.5.",
        settings=f"{_DENSE}:TumorDetectionSettings",
    ),
    Task(
        "reconstruction",
        "dense",
        datasets=("fastmri_brain",),
        description="Accelerated reconstruction from fastMRI-layout k-space: zero-filled baseline "
        "and a U-Net whose encoder starts pretrained or random; PSNR, SSIM and NMSE per volume as "
        "fastMRI defines them.",
        settings=f"{_DENSE}:ReconstructionSettings",
    ),
):
    register(_task)
del _task
