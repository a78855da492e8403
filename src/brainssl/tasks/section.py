"""The ``tasks:`` config section: the keys every task shares, the scratch baseline, one per task.

The per-task subsections come from the task registry (:mod:`brainssl.tasks.registry`): each
entry names its settings class, so :func:`tasks_section` builds the section's class from the
registry as it stands, and a registered task gets its ``tasks.<name>`` schema section with no
other edit. Only the config schema (:mod:`brainssl.schema`) is built from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from brainssl.settings import setting

from .registry import TASKS, task_settings
from .scratch import ScratchSettings

__all__ = ["DEVICES", "EVALUATION_SCHEMES", "TaskSharedSettings", "tasks_section"]

#: How frozen-feature tasks split subjects: stratified k-fold, or the slice store's split.
EVALUATION_SCHEMES = ("kfold", "fixed")
#: Where task networks train (:func:`brainssl.tasks.dense_training.resolve_device`).
DEVICES = ("auto", "cpu", "cuda")
_SCRATCH = (
    "Supervised-from-scratch baseline of the classification tasks ({tasks}): per architecture of "
    "the random-initialised encoders, a freshly initialised copy plus a linear head trained end to "
    "end on the labelled slices of each fit's training subjects (the frozen heads' subject-level "
    "folds); slice probabilities are averaged per unit like the frozen features. Rows: encoder "
    "scratch-<arch>, mode scratch."
)


@dataclass(frozen=True, kw_only=True)
class TaskSharedSettings:
    """The ``tasks:`` keys every task shares (dense tasks' null keys fall back to them)."""

    label_fractions: tuple[float, ...] = setting(
        (0.01, 0.1, 1.0),
        "Shares of training subjects (stratified; at least one per class and two in all) that "
        "heads are fitted on: the label-scarcity curves.",
        min_items=1,
        unique_items=True,
        items={"exclusive_minimum": 0, "maximum": 1},
    )
    seeds: int = setting(3, "Label-fraction draws (and head seeds) per fraction.", minimum=1, maximum=100)
    bootstrap: int = setting(
        1000,
        "Resamples of test subjects for the 95% confidence intervals and paired comparisons.",
        minimum=0,
        maximum=100000,
    )
    evaluation: str = setting(
        "kfold",
        "Frozen-feature tasks: subject-level stratified k-fold with out-of-fold predictions for "
        "every subject (kfold), or the slice store's train+val against test subjects (fixed).",
        enum=EVALUATION_SCHEMES,
    )
    folds: int = setting(
        5,
        "Folds of the kfold evaluation (fewer when a class has fewer subjects).",
        minimum=2,
        maximum=50,
    )
    shots: tuple[int, ...] = setting(
        (2, 5, 10),
        "Few-shot label budgets of the frozen-feature heads, beside the label fractions: labelled "
        "training subjects per class (per event status for survival; in total for regression), "
        "drawn by subject from each fold's training subjects, tasks.seeds draws each; [] for none. "
        "A cell (fraction or shots) whose fit has fewer than two training subjects in a class, "
        "fewer than five for a regression, fewer than two events for survival, or fewer "
        "training subjects in a class than its shots is a skipped row with the reason.",
        unique_items=True,
        items={"minimum": 1, "maximum": 10000},
    )
    device: str = setting(
        "auto",
        "Where every task network trains (dense decoders, fine-tuning, from-scratch networks and "
        "baselines): auto = CUDA when the job sees a GPU, else the CPU; cuda requests one GPU per "
        "training job and refuses to start without one; cpu results are deterministic. On CUDA "
        "forward passes run in bf16 autocast. The frozen-feature heads are scikit-learn (CPU).",
        enum=DEVICES,
    )
    dense_threads: int = setting(
        2,
        "Cores per dense-task job (its torch threads); not a rerun trigger. On the CPU a given "
        "count gives the same results run after run; another count can move them at float "
        "rounding (FFT and convolution sums are split across threads).",
        minimum=1,
        maximum=256,
    )


def tasks_section() -> type:
    """The ``tasks:`` section's class: the shared keys, ``scratch`` and one subsection per task.

    The subsections follow the registry as it stands; a task whose entry names no settings class
    has none.
    """
    scratch = ", ".join(name for name, task in TASKS.items() if task.scratch)
    fields = [
        (
            "scratch",
            ScratchSettings,
            setting(factory=ScratchSettings, description=_SCRATCH.format(tasks=scratch)),
        )
    ]
    for name, task in TASKS.items():
        cls = task_settings(name)
        if cls is not None:
            fields.append((name, cls, setting(factory=cls, description=task.description)))
    section = dataclasses.make_dataclass(
        "TasksSection", fields, bases=(TaskSharedSettings,), frozen=True, kw_only=True
    )
    section.__doc__ = "The ``tasks:`` config section."
    section.__module__ = __name__
    return section
