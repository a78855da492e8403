"""Run one task rule: every encoder x label budget x seed x fold, scored with subject bootstrap CIs.

:func:`run_task` is what the ``tasks_frozen`` rule calls for one task of
:mod:`brainssl.tasks.registry`. It reads each encoder's pooled table, builds the task's
units, walks :func:`~brainssl.tasks.units.evaluation_plan` (out-of-fold predictions for
every unit, per label fraction and per few-shot budget), scores them and compares, by a
paired subject bootstrap, every encoder with the baselines (random initialisation,
classical features, supervised from scratch) and the pretrained encoders with each other.
A task (or one encoder of it) whose labels are missing or degenerate yields ``skipped``
rows with the reason, and the other tasks and encoders go on; so does a cell (budget and
seed) one of whose fits is too small (:func:`~brainssl.tasks.units.fit_shortfall`) or
fails: a cell is a number only when every fold of it was fitted. The slice-filter ablation's
runs (:mod:`brainssl.ablation`) are fitted at the largest label fraction only, the one cell
its table reads. :mod:`brainssl.tasks.outputs` writes the rule's files.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from brainssl.ablation import ablation_variant
from brainssl.logs import progress

from .heads import fit_classifier, fit_regressor, fit_survival
from .metrics import (
    brier_contributions,
    concordance,
    correct_age_bias,
    fit_age_bias,
    gap_slope,
    logrank_groups,
    mean_absolute_error,
    uno_weights,
)
from .pairs import classification_metrics, paired_comparisons
from .results import bootstrap_ci, log_skipped, result_row, skipped_rows
from .units import (
    MIN_TRAIN_EVENTS,
    EvaluationSettings,
    Fit,
    TaskSpec,
    TaskUnits,
    budget_columns,
    build_units,
    evaluation_plan,
    task_specs,
)

__all__ = [
    "MIN_TRAIN_EVENTS",
    "ExtraBaselines",
    "Prediction",
    "TaskOutcome",
    "TaskRun",
    "encoder_mode",
    "run_task",
]

logger = logging.getLogger(__name__)


def encoder_mode(name: str) -> str:
    """Results-table mode of an encoder name (``classical``, ``scratch-*`` or a frozen encoder)."""
    if name == "classical":
        return "classical"
    return "scratch" if name.startswith("scratch-") else "frozen"


@dataclass
class Prediction:
    """Out-of-fold predictions of one encoder at one label budget and seed (NaN = not tested)."""

    values: np.ndarray
    """Class probabilities ``(n, K)``, ages ``(n,)`` or risks ``(n,)``."""
    corrected: np.ndarray | None = None
    """Bias-corrected ages (regression) or survival probabilities on the grid (survival)."""
    n_train: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Why some units stayed unpredicted (becomes the reason of a skipped row)."""
    short: str = ""
    """Why the cell is not reported: a fit too small or one that failed (its rows are skipped)."""

    @property
    def tested(self) -> np.ndarray:
        """Units that received a prediction."""
        v = self.values
        return ~np.isnan(v).any(axis=1) if v.ndim == 2 else ~np.isnan(v)


@dataclass(frozen=True)
class TaskRun:
    """Settings of one task rule (its config subsection plus the shared ``tasks:`` keys)."""

    task: str
    settings: Mapping[str, Any]
    evaluation: EvaluationSettings
    n_boot: int

    @classmethod
    def from_params(
        cls, task: str, shared: Mapping[str, Any], settings: Mapping[str, Any], seed: int
    ) -> TaskRun:
        """Build from the rule's params: shared ``tasks:`` keys and the task's subsection."""
        evaluation = EvaluationSettings(
            scheme=str(shared["evaluation"]),
            folds=int(shared["folds"]),
            label_fractions=tuple(float(f) for f in shared["label_fractions"]),
            seeds=int(shared["seeds"]),
            seed=int(seed),
            shots=tuple(int(k) for k in shared.get("shots", ())),
        )
        return cls(task, dict(settings), evaluation, int(shared["bootstrap"]))


class ExtraBaselines(Protocol):
    """Baselines that need the fits themselves (supervised from scratch), for :func:`run_task`."""

    def names(self, spec: TaskSpec) -> tuple[str, ...]:
        """The baseline names added to ``spec`` (skipped with the task's reason when it is degenerate)."""

    def __call__(
        self, spec: TaskSpec, units: TaskUnits, plan: list[Fit]
    ) -> Mapping[str, Mapping[tuple[float, int], Prediction]]:
        """Out-of-fold predictions per baseline on ``plan``'s fits: name -> (budget, seed) -> prediction.

        A label fraction's budget key is the fraction itself (:func:`~brainssl.tasks.units.budget_key`).
        """


@dataclass
class TaskOutcome:
    """Rows for the results table, paired comparisons, and predictions kept for figures."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    predictions: dict[tuple[str, str, str], dict[tuple[float, int], Prediction]] = field(default_factory=dict)
    """(task, dataset, encoder) -> (budget key, seed) -> prediction (see :func:`.units.budget_key`)."""
    units: dict[tuple[str, str], TaskUnits] = field(default_factory=dict)


def degenerate_reason(spec: TaskSpec, units: TaskUnits) -> str:
    """Why a task cannot be evaluated on these units, or ``""`` when it can."""
    where = f"{spec.target} on {spec.dataset}"
    if len(units.features) == 0:
        return f"no labelled units for {where}" + (
            f" ({units.dropped} without a label)" if units.dropped else ""
        )
    if len(set(units.subjects)) < 2:
        return f"only one subject with {where}"
    if spec.kind in ("multiclass", "binary"):
        if len(units.classes) < 2:
            return f"one class only ({', '.join(units.classes)}) in {where}"
        if spec.kind == "binary" and units.classes[-1] != spec.positive:
            return f"no {spec.positive!r} units in {where}"
    if spec.kind == "regression" and np.unique(units.target).size < 2:
        return f"constant {where}"
    if spec.kind == "survival":
        events = int(units.target[units.target.dtype.names[0]].sum())
        if events == 0:
            return f"every subject censored in {where}"
        if events < 2:
            return f"only {events} event in {where}"
    return ""


def short_cells(plan: Sequence[Fit]) -> dict[tuple[float, int], str]:
    """(budget, seed) cells of ``plan`` with a fit too small to report, and the first such fit's reason."""
    short: dict[tuple[float, int], str] = {}
    for fit in plan:
        if fit.short and (fit.budget, fit.seed) not in short:
            budget = f"{fit.shots} shots" if fit.shots else f"label fraction {fit.fraction:g}"
            short[(fit.budget, fit.seed)] = f"{budget}, fold {fit.fold}: {fit.short}"
    return short


def _predict(
    spec: TaskSpec, units: TaskUnits, plan: Sequence[Fit], run: TaskRun
) -> dict[tuple[float, int], Any]:
    """Out-of-fold predictions of every fit, grouped by (budget, seed); short cells are not fitted."""
    n = len(units.features)
    out: dict[tuple[float, int], Any] = {}
    x, y = units.features, units.target
    short = short_cells(plan)
    for fit in plan:
        key = (fit.budget, fit.seed)
        if spec.kind in ("multiclass", "binary"):
            pred = out.setdefault(key, Prediction(np.full((n, len(units.classes)), np.nan)))
        else:
            pred = out.setdefault(key, Prediction(np.full(n, np.nan), np.full(n, np.nan)))
        pred.n_train.append(fit.n_train_subjects)
        if key in short:
            pred.short = short[key]
            continue
        if spec.kind in ("multiclass", "binary"):
            c = float(run.settings["logistic_c"])
            pred.values[fit.test] = fit_classifier(
                x[fit.train], y[fit.train], x[fit.test], len(units.classes), c, fit.seed
            )
        elif spec.kind == "regression":
            test_pred, inner = fit_regressor(
                x[fit.train], y[fit.train], x[fit.test], float(run.settings["ridge_alpha"])
            )
            pred.values[fit.test] = test_pred
            if inner is not None:
                try:
                    pred.corrected[fit.test] = correct_age_bias(test_pred, *fit_age_bias(y[fit.train], inner))
                except ValueError as err:
                    logger.warning("no age-bias correction for fold %d: %s", fit.fold, err)
    return out


def _survival_grid(target: np.ndarray) -> np.ndarray:
    """Evaluation times: 10th to 80th percentile of event times (inside every fold's follow-up)."""
    event, time = (target[name] for name in target.dtype.names)
    grid = np.unique(np.quantile(time[event], np.linspace(0.1, 0.8, 15)))
    return grid if grid.size >= 2 else np.array([time.min(), np.median(time)])


def _predict_survival(
    units: TaskUnits, plan: Sequence[Fit], run: TaskRun, model: str, grid: np.ndarray
) -> dict[tuple[float, int], Prediction]:
    n = len(units.features)
    out: dict[tuple[float, int], Prediction] = {}
    x, y = units.features, units.target
    short = short_cells(plan)
    for fit in plan:
        empty = Prediction(np.full(n, np.nan), np.full((n, grid.size), np.nan))
        key = (fit.budget, fit.seed)
        pred = out.setdefault(key, empty)
        pred.n_train.append(fit.n_train_subjects)
        if key in short:
            pred.short = short[key]
            continue
        if pred.short:  # an earlier fold of this cell failed
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", RuntimeWarning)
                risk, surv = fit_survival(
                    model, x[fit.train], y[fit.train], x[fit.test], grid, run.settings, fit.seed
                )
        except (ArithmeticError, ValueError, RuntimeWarning, np.linalg.LinAlgError) as err:
            pred.short = f"{model} did not fit in fold {fit.fold}: {err}"
            logger.warning("fold %d, budget %s: %s did not fit: %s", fit.fold, fit.budget, model, err)
            continue
        pred.values[fit.test], pred.corrected[fit.test] = risk, surv
    return out


def _score_rows(
    base: dict[str, Any],
    metrics: Mapping[str, Callable[..., float]],
    arrays: Mapping[str, tuple[np.ndarray, ...]],
    groups: np.ndarray,
    run: TaskRun,
    seed: int,
    no_ci: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> list[dict[str, Any]]:
    rows = []
    for name, metric in metrics.items():
        args = arrays[name]
        if len(args[0]) == 0:
            why = "; ".join(sorted(set(notes))) or "no test unit received a prediction"
            rows += skipped_rows(log=False, reason=f"{name}: {why}", metrics=(name,), **base)
            continue
        try:
            value = float(metric(*args))
        except ValueError as err:
            rows += skipped_rows(log=False, reason=f"{name} undefined: {err}", metrics=(name,), **base)
            continue
        low, high = (math.nan, math.nan)
        if name not in no_ci:
            low, high = bootstrap_ci(metric, *args, n_boot=run.n_boot, seed=seed, groups=groups)
        rows.append(result_row(metric=name, value=value, ci_low=low, ci_high=high, **base))
    return rows


def _row_base(
    spec: TaskSpec, encoder: str, budget: float, seed: int, pred: Prediction, groups: np.ndarray
) -> dict[str, Any]:
    """The identifying columns of one (encoder, budget, seed) evaluation's result rows."""
    return {
        "task": spec.name,
        "dataset": spec.dataset,
        "encoder": encoder,
        "mode": encoder_mode(encoder),
        **budget_columns(budget),
        "seed": seed,
        "n_train": int(np.median(pred.n_train)) if pred.n_train else 0,
        "n_test": int(len(set(groups))),
    }


def _score(
    spec: TaskSpec,
    units: TaskUnits,
    encoder: str,
    preds: Mapping[tuple[float, int], Prediction],
    run: TaskRun,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for (budget, seed), pred in sorted(preds.items()):
        tested = pred.tested
        groups = units.subjects[tested]
        base = _row_base(spec, encoder, budget, seed, pred, groups)
        if pred.short:
            rows += skipped_rows(log=False, reason=pred.short, metrics=spec.metrics, **base)
            continue
        y = units.target[tested]
        if spec.kind in ("multiclass", "binary"):
            metrics = classification_metrics(spec)
            arrays = {name: (y, pred.values[tested]) for name in metrics}
            rows += _score_rows(base, metrics, arrays, groups, run, seed)
        elif spec.kind == "regression":
            scored = _score_regression(
                base, y, pred.values[tested], pred.corrected[tested], groups, run, seed
            )
            rows += [row for row in scored if row["metric"] in spec.metrics]  # a spec may report fewer
    return rows


def _score_regression(
    base: dict[str, Any],
    age: np.ndarray,
    predicted: np.ndarray,
    corrected: np.ndarray,
    groups: np.ndarray,
    run: TaskRun,
    seed: int,
) -> list[dict[str, Any]]:
    metrics = {"mae": mean_absolute_error, "gap_slope": gap_slope}
    rows = _score_rows(
        base, metrics, {"mae": (age, predicted), "gap_slope": (age, predicted)}, groups, run, seed
    )
    if np.isnan(corrected).any():
        reason = "age-bias correction needs >= 3 training subjects with distinct ages in every fold"
        return rows + skipped_rows(
            log=False, reason=reason, metrics=("mae_corrected", "gap_slope_corrected"), **base
        )
    corrected_metrics = {"mae_corrected": mean_absolute_error, "gap_slope_corrected": gap_slope}
    arrays = {name: (age, corrected) for name in corrected_metrics}
    return rows + _score_rows(base, corrected_metrics, arrays, groups, run, seed)


def _survival_rows(
    spec: TaskSpec,
    units: TaskUnits,
    encoder: str,
    model: str,
    preds: Mapping[tuple[float, int], Prediction],
    grid: np.ndarray,
    run: TaskRun,
) -> list[dict[str, Any]]:
    everyone = units.target
    event_all, time_all = (everyone[name] for name in everyone.dtype.names)
    weights_all = uno_weights(everyone, everyone, tau=float(grid[-1]))

    rows: list[dict[str, Any]] = []
    for (budget, seed), pred in sorted(preds.items()):
        tested = pred.tested
        y, risk, groups = everyone[tested], pred.values[tested], units.subjects[tested]
        event, time, weights = event_all[tested], time_all[tested], weights_all[tested]
        base = _row_base(spec, encoder, budget, seed, pred, groups)
        if pred.short:
            names = tuple(f"{model}_{m}" for m in spec.metrics)
            rows += skipped_rows(log=False, reason=pred.short, metrics=names, **base)
            continue
        contributions = (
            brier_contributions(everyone, y, pred.corrected[tested], grid) if tested.any() else np.zeros(0)
        )
        metrics: dict[str, Callable[..., float]] = {
            f"{model}_c_harrell": concordance,
            f"{model}_c_uno": concordance,
        }
        arrays: dict[str, tuple[np.ndarray, ...]] = {
            f"{model}_c_harrell": (event, time, risk),
            f"{model}_c_uno": (event, time, risk, weights),
        }
        metrics[f"{model}_ibs"] = np.mean
        arrays[f"{model}_ibs"] = (contributions,)
        metrics[f"{model}_logrank_p"] = lambda y_, r_: logrank_groups(y_, r_)[1]
        arrays[f"{model}_logrank_p"] = (y, risk)
        rows += _score_rows(base, metrics, arrays, groups, run, seed, (f"{model}_logrank_p",), pred.notes)
    return rows


def run_task(
    run: TaskRun,
    encoders: Mapping[str, str | Path],
    survival: pd.DataFrame | None = None,
    extra_predictions: ExtraBaselines | None = None,
) -> TaskOutcome:
    """Evaluate every encoder on every spec of one task.

    Args:
        run: the task's settings.
        encoders: encoder name -> its ``subjects.parquet`` (``classical`` included).
        survival: per-subject ``survival_days``/``event`` for the survival task.
        extra_predictions: adds baselines that need the fits themselves (supervised from
            scratch); called with the units of an encoder table (units are the same for
            every table) and returns name -> predictions. Where every encoder is skipped,
            its baselines get the same skipped rows.

    Returns:
        Rows (ok and skipped), comparisons and the predictions.
    """
    outcome = TaskOutcome()
    tables = {name: pd.read_parquet(path) for name, path in encoders.items()}
    for spec in task_specs(run.task, run.settings):
        spec_preds: dict[str, Mapping[tuple[float, int], Prediction]] = {}
        spec_units = None
        for encoder, table in progress(tables.items(), f"{spec.name} encoders", total=len(tables)):
            units = build_units(table, spec, survival)
            rows, preds = _run_encoder(spec, units, encoder, run)
            outcome.rows += rows
            if preds:
                spec_preds.update(preds)
                spec_units = units
        if spec_units is not None and extra_predictions is not None:
            plan = list(evaluation_plan(spec_units, run.evaluation))
            short = short_cells(plan)
            for name, preds in extra_predictions(spec, spec_units, plan).items():
                for key, pred in preds.items():  # the heads' skipped cells are the baseline's too
                    pred.short = pred.short or short.get(key, "")
                outcome.rows += _score(spec, spec_units, name, preds, run)
                spec_preds[name] = preds
        elif tables and extra_predictions is not None:
            for name in extra_predictions.names(spec):
                outcome.rows += _run_encoder(spec, units, name, run)[0]
        if spec_units is not None:
            outcome.units[(spec.name, spec.dataset)] = spec_units
            outcome.comparisons += paired_comparisons(spec, spec_units, spec_preds, run.n_boot)
            for name, preds in spec_preds.items():
                outcome.predictions[(spec.name, spec.dataset, name)] = dict(preds)
    log_skipped(outcome.rows)
    return outcome


def _metric_names(spec: TaskSpec, run: TaskRun) -> tuple[str, ...]:
    if spec.kind != "survival":
        return spec.metrics
    return tuple(f"{model}_{m}" for model in run.settings["models"] for m in spec.metrics)


def _run_encoder(
    spec: TaskSpec, units: TaskUnits, encoder: str, run: TaskRun
) -> tuple[list[dict[str, Any]], dict[str, Mapping[tuple[float, int], Prediction]]]:
    """Rows and predictions of one encoder on one spec (skipped rows when it cannot run)."""
    skip = {"task": spec.name, "dataset": spec.dataset, "encoder": encoder, "mode": encoder_mode(encoder)}
    reason = degenerate_reason(spec, units)
    if not reason:
        try:
            plan = list(evaluation_plan(units, run.evaluation))
        except ValueError as err:
            reason = f"no subject-level split possible: {err}"
    if reason:
        return skipped_rows(log=False, reason=reason, metrics=_metric_names(spec, run), **skip), {}
    if ablation_variant(encoder):  # the ablation table reads the largest fraction alone: fit only that
        largest = max((fit.fraction for fit in plan if not fit.shots), default=math.nan)
        plan = [fit for fit in plan if not fit.shots and fit.fraction == largest]
    if spec.kind != "survival":
        preds = _predict(spec, units, plan, run)
        return _score(spec, units, encoder, preds, run), {encoder: preds}
    grid = _survival_grid(units.target)
    rows: list[dict[str, Any]] = []
    keep: dict[str, Mapping[tuple[float, int], Prediction]] = {}
    for model in run.settings["models"]:
        preds = _predict_survival(units, plan, run, model, grid)
        rows += _survival_rows(spec, units, encoder, model, preds, grid, run)
        keep[encoder if model == run.settings["models"][0] else f"{encoder}:{model}"] = preds
    return rows, keep
