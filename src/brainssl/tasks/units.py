"""What each task predicts, on which units, and the subject-level evaluation plan.

A *unit* is what a head sees one feature vector of: a subject (features averaged over the
chosen contrasts and sessions) or, for sequence classification, one contrast of a subject.
Whatever the unit, folds are drawn over *subjects*: :func:`subject_folds` assigns every
subject to exactly one test fold, and all units of a subject follow it, so no subject is
ever on both sides of a split. :func:`evaluation_plan` is the only place train/test index
sets come from; the leakage test walks it for every task.

Label budgets are label fractions (:func:`~brainssl.tasks.results.label_fraction_subjects`)
and few-shot budgets of labelled subjects per class
(:func:`~brainssl.tasks.results.shot_subjects`). A fit too small to measure anything (fewer
than :data:`MIN_CLASS_SUBJECTS` training subjects in a class, :data:`MIN_REGRESSION_SUBJECTS`
for a regression, :data:`MIN_TRAIN_EVENTS` events for survival, or fewer subjects in a class
than its shots) carries the reason in :attr:`Fit.short`; the task reports its cell as skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from brainssl.embed import feature_columns

from .registry import TASKS, TaskSpec
from .results import label_fraction_subjects, shot_subjects

__all__ = [
    "MIN_CLASS_SUBJECTS",
    "MIN_REGRESSION_SUBJECTS",
    "MIN_TRAIN_EVENTS",
    "EvaluationSettings",
    "Fit",
    "budget_columns",
    "budget_key",
    "fit_shortfall",
    "TaskSpec",
    "TaskUnits",
    "build_units",
    "evaluation_plan",
    "subject_folds",
    "task_specs",
]

logger = logging.getLogger(__name__)

#: A classification cell needs at least this many training subjects in every class.
MIN_CLASS_SUBJECTS = 2
#: A regression head needs at least this many training subjects: a ridge on features
#: standardised over fewer extrapolates (the demo's brain age at 1 % -- two subjects -- had
#: MAEs of 45-210 years).
MIN_REGRESSION_SUBJECTS = 5
#: A survival head needs at least this many events among its training subjects.
MIN_TRAIN_EVENTS = 2


def task_specs(task: str, settings: Mapping[str, Any]) -> list[TaskSpec]:
    """The specs one frozen-feature task runs, from its config subsection (via the task registry).

    Raises:
        ValueError: for a task that is not a registered frozen-feature task.
    """
    entry = TASKS.get(task)
    if entry is None or entry.specs is None:
        raise ValueError(f"unknown task {task!r}")
    return entry.specs(settings)


@dataclass
class TaskUnits:
    """Feature matrix and targets of one task on one encoder's pooled table."""

    keys: pd.DataFrame
    """Unit identity: ``subject`` (and ``contrast``), plus ``split``."""
    features: np.ndarray
    target: np.ndarray
    """Class codes (classification), ages (regression) or a structured (event, time) array."""
    classes: tuple[str, ...] = ()
    dropped: int = 0
    """Units left out for a missing label."""
    site_folds: str = ""
    """The spec's site-aware folds (``keys`` then holds ``site``; :mod:`brainssl.tasks.sites`)."""

    @property
    def subjects(self) -> np.ndarray:
        """The subject of each unit."""
        return self.keys["subject"].to_numpy().astype(str)

    @property
    def strata(self) -> np.ndarray | None:
        """Per-unit stratification label (class, or event for survival); ``None`` for regression."""
        if self.target.dtype.names:
            return self.target[self.target.dtype.names[0]].astype(int)
        return None if not self.classes else self.target


def _label_text(value: Any) -> str:
    """Labels as text: 1.0 -> "1" so that MGMT status reads like its class name."""
    if isinstance(value, float | np.floating):
        return "" if np.isnan(value) else (str(int(value)) if float(value).is_integer() else str(value))
    return "" if value is None or pd.isna(value) else str(value)


def build_units(table: pd.DataFrame, spec: TaskSpec, survival: pd.DataFrame | None = None) -> TaskUnits:
    """Average an encoder's pooled rows into task units and attach the target.

    Args:
        table: ``subjects.parquet`` of one encoder.
        spec: the task.
        survival: per-subject ``survival_days`` and ``event`` (survival tasks only).

    Returns:
        The units; classes are the labels present (the positive class last for binary tasks).
    """
    rows = table[table["dataset"] == spec.dataset]
    if spec.contrasts:
        rows = rows[rows["contrast"].isin(spec.contrasts)]
    if spec.controls_only and "diagnosis" in rows:
        rows = rows[rows["diagnosis"].isna() | (rows["diagnosis"].astype(str) == "control")]
    keys = ["subject", "contrast"] if spec.unit == "contrast" else ["subject"]
    features = feature_columns(rows)
    if rows.empty:
        grouped_features = pd.DataFrame(columns=features)
        info = pd.DataFrame(columns=[*keys, "split", "label"])
    else:
        grouped = rows.groupby(keys, sort=True)
        grouped_features = grouped[features].mean()
        label_col = spec.target if spec.target in rows else None
        info = grouped[["split"]].first()
        if spec.site_folds:
            info["site"] = grouped["site"].first().map(_label_text) if "site" in rows else ""
        if spec.target == "contrast":
            info["label"] = grouped_features.index.get_level_values("contrast")
        elif label_col is not None:
            info["label"] = grouped[label_col].first().map(_label_text)
        else:
            info["label"] = ""
        info = info.reset_index()
    x = grouped_features.to_numpy(np.float64)
    if spec.kind == "survival":
        return _survival_units(info, x, survival)
    labelled = info["label"].astype(str) != ""
    if spec.classes:
        labelled &= info["label"].astype(str).isin(spec.classes)
    info, x = info[labelled.to_numpy()].reset_index(drop=True), x[labelled.to_numpy()]
    dropped = int((~labelled).sum())
    if spec.site_folds and "site" not in info:
        info["site"] = ""
    if spec.kind == "regression":
        target = info["label"].astype(float).to_numpy()
        return TaskUnits(info, x, target, dropped=dropped, site_folds=spec.site_folds)
    classes = sorted(set(info["label"]))
    if spec.kind == "binary" and spec.positive in classes:
        classes = [c for c in classes if c != spec.positive] + [spec.positive]
    codes = info["label"].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
    return TaskUnits(info, x, codes, tuple(classes), dropped, site_folds=spec.site_folds)


def _survival_units(info: pd.DataFrame, x: np.ndarray, survival: pd.DataFrame | None) -> TaskUnits:
    from .metrics import survival_array

    if survival is None or survival.empty:
        return TaskUnits(info.iloc[:0], x[:0], survival_array([], []), dropped=len(info))
    table = survival.dropna(subset=["survival_days", "event"]).drop_duplicates("subject").set_index("subject")
    known = info["subject"].isin(table.index).to_numpy()
    info, x = info[known].reset_index(drop=True), x[known]
    joined = table.loc[info["subject"]]
    target = survival_array(joined["event"].to_numpy(), joined["survival_days"].to_numpy())
    return TaskUnits(info, x, target, dropped=int((~known).sum()))


@dataclass(frozen=True)
class EvaluationSettings:
    """How units are split and subsampled (shared ``tasks:`` keys).

    Attributes:
        scheme: ``kfold`` (every subject tested once, out of fold) or ``fixed`` (train+val
            subjects of the store's split against its test subjects).
        folds: number of subject-level folds for ``kfold``.
        label_fractions: shares of training subjects used to fit heads.
        seeds: label draws (and model seeds) per label fraction and per shots budget.
        seed: master seed of the fold assignment (fixed across encoders: comparisons are paired).
        shots: few-shot budgets, labelled training subjects per class (``tasks.shots``);
            empty for none.
    """

    scheme: str
    folds: int
    label_fractions: tuple[float, ...]
    seeds: int
    seed: int
    shots: tuple[int, ...] = ()


def _subject_strata(subjects: np.ndarray, strata: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    unique, first = np.unique(subjects, return_index=True)
    return unique, None if strata is None else np.asarray(strata)[first]


def subject_folds(
    subjects: Sequence[str] | np.ndarray, strata: np.ndarray | None, n_folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Subject-level (stratified where possible) k-fold over units.

    Subjects, not units, are dealt into folds (stratified by each subject's first stratum
    when every stratum has at least two subjects), then every unit goes with its subject.
    The number of folds drops to the smallest stratum size when that is below ``n_folds``.

    Args:
        subjects: subject of each unit (repeats allowed: several units per subject).
        strata: per-unit class/event labels, or ``None``.
        n_folds: wanted number of folds.
        seed: seed of the assignment.

    Returns:
        ``(train_rows, test_rows)`` unit index arrays per fold.

    Raises:
        ValueError: with fewer than two subjects.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    subjects = np.asarray(subjects).astype(str)
    unique, subject_strata = _subject_strata(subjects, strata)
    if len(unique) < 2:
        raise ValueError(f"{len(unique)} subject(s); a split needs at least two")
    k = min(n_folds, len(unique))
    splitter: Any = KFold(k, shuffle=True, random_state=seed)
    if subject_strata is not None:
        smallest = int(np.unique(subject_strata, return_counts=True)[1].min())
        if smallest >= 2:
            splitter = StratifiedKFold(min(k, smallest), shuffle=True, random_state=seed)
    folds = []
    for _, test_subjects in splitter.split(unique, subject_strata if subject_strata is not None else None):
        in_test = np.isin(subjects, unique[test_subjects])
        folds.append((np.flatnonzero(~in_test), np.flatnonzero(in_test)))
    return folds


def fixed_split(splits: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The store's own subject-level split: train and val units against test units.

    Raises:
        ValueError: if either side is empty.
    """
    test = np.asarray(splits).astype(str) == "test"
    if test.all() or not test.any():
        raise ValueError("the fixed split needs both test and non-test subjects")
    return [(np.flatnonzero(~test), np.flatnonzero(test))]


def budget_key(fraction: float, shots: int = 0) -> float:
    """The number that keys one label budget's predictions: the fraction, or ``-shots``.

    Predictions are keyed ``(budget, seed)``; a label fraction keys as itself (so the
    supervised-from-scratch baseline's ``(fraction, seed)`` keys pair with the heads'), a
    shots budget as its negative, so the two never collide and sort shots first.
    """
    return -float(shots) if shots else float(fraction)


def budget_columns(key: float) -> dict[str, Any]:
    """The results-table columns of a budget key: ``label_fraction`` (NaN for shots) and ``shots``."""
    if key < 0:
        return {"label_fraction": float("nan"), "shots": int(round(-key))}
    return {"label_fraction": float(key), "shots": 0}


@dataclass(frozen=True)
class Fit:
    """One head fit: which units train it and which it predicts.

    ``fraction`` is NaN for a shots budget (``shots`` > 0); ``short`` says why the fit is too
    small to be reported (empty when it is not).
    """

    fraction: float
    seed: int
    fold: int
    train: np.ndarray
    test: np.ndarray
    n_train_subjects: int = field(default=0)
    shots: int = 0
    short: str = ""

    @property
    def budget(self) -> float:
        """The key of this fit's label budget (:func:`budget_key`)."""
        return budget_key(self.fraction, self.shots)


def _per_class_subjects(units: TaskUnits, rows: np.ndarray) -> dict[str, int]:
    """Distinct training subjects per class (classification) or event status (survival)."""
    subjects = units.subjects[rows]
    if units.target.dtype.names:
        event = units.target[units.target.dtype.names[0]].astype(bool)
        names = {"censored": ~event[rows], "event": event[rows]}
        present = {name for name, flag in (("censored", ~event), ("event", event)) if flag.any()}
        return {name: len(set(subjects[mask])) for name, mask in names.items() if name in present}
    codes = units.target[rows]
    return {name: len(set(subjects[codes == code])) for code, name in enumerate(units.classes)}


def fit_shortfall(units: TaskUnits, rows: np.ndarray, shots: int = 0) -> str:
    """Why a fit on these training units cannot be reported, or ``""`` when it can.

    Classification: fewer than :data:`MIN_CLASS_SUBJECTS` training subjects in a class.
    Regression: fewer than :data:`MIN_REGRESSION_SUBJECTS` subjects, or one target value.
    Survival: fewer than :data:`MIN_TRAIN_EVENTS` events. A shots budget also needs ``shots``
    subjects in every class (event status for survival; in all for regression).
    """
    subjects = units.subjects[rows]
    if units.target.dtype.names:
        per_class = _per_class_subjects(units, rows)
        events = int(units.target[rows][units.target.dtype.names[0]].sum())
        if events < MIN_TRAIN_EVENTS:
            return f"{events} event(s) among the training subjects; a survival fit needs {MIN_TRAIN_EVENTS}"
    elif units.classes:
        per_class = _per_class_subjects(units, rows)
        for name, n in per_class.items():
            if n < MIN_CLASS_SUBJECTS:
                return (
                    f"{n} training subject(s) of class {name!r}; a cell needs at least "
                    f"{MIN_CLASS_SUBJECTS} per class"
                )
    else:
        n = len(set(subjects))
        per_class = {"all": n}
        if n < MIN_REGRESSION_SUBJECTS:
            return f"{n} training subject(s); a regression fit needs at least {MIN_REGRESSION_SUBJECTS}"
        if np.unique(units.target[rows]).size < 2:
            return "one target value among the training subjects"
    if shots:
        for name, n in per_class.items():
            if n < shots:
                where = "in all" if name == "all" else f"of {name!r}"
                return f"{n} training subject(s) {where} for {shots} shots"
    return ""


def evaluation_plan(units: TaskUnits, settings: EvaluationSettings) -> Iterator[Fit]:
    """Every head fit of a task: label budget x seed x fold, with subject-level index sets.

    The label budgets are the label fractions, then the shots. The training units of a fit
    are all units of the subjects drawn from the fold's training subjects (stratified by
    class, or by event for survival) by
    :func:`~brainssl.tasks.results.label_fraction_subjects` or
    :func:`~brainssl.tasks.results.shot_subjects`; :func:`fit_shortfall` fills ``short``.

    Folds come from :func:`subject_folds` (``kfold``) or :func:`fixed_split` (``fixed``), or,
    for units of a spec with ``site_folds``, from :func:`brainssl.tasks.sites.site_folds`.

    Raises:
        ValueError: when no split is possible (too few subjects, an empty side, no site).
    """
    subjects = units.subjects
    if units.site_folds:  # the spec's site-aware folds replace tasks.evaluation
        from .sites import site_folds

        sites = units.keys["site"].to_numpy()
        folds = site_folds(subjects, sites, units.strata, units.site_folds, settings.folds, settings.seed)
    elif settings.scheme == "fixed":
        folds = fixed_split(units.keys["split"].to_numpy())
    else:
        folds = subject_folds(subjects, units.strata, settings.folds, settings.seed)
    strata = units.strata
    budgets = [(float(f), 0) for f in settings.label_fractions]
    budgets += [(float("nan"), int(k)) for k in settings.shots]
    for fraction, shots in budgets:
        for seed in range(settings.seeds):
            for fold, (train, test) in enumerate(folds):
                train_subjects, train_strata = _subject_strata(
                    subjects[train], None if strata is None else strata[train]
                )
                if shots:
                    chosen = shot_subjects(train_subjects, train_strata, shots, seed)
                else:
                    chosen = label_fraction_subjects(train_subjects, train_strata, fraction, seed)
                rows = train[np.isin(subjects[train], chosen)]
                short = fit_shortfall(units, rows, shots)
                yield Fit(fraction, seed, fold, rows, test, len(chosen), shots, short)
