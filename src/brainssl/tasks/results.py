"""The one results table every downstream task writes, with its statistics helpers.

Every task rule (frozen-feature heads, dense fine-tuning, baselines) reports one row per
(task, dataset, encoder, mode, label budget, seed, metric) in the columns of
:data:`RESULT_COLUMNS`, so that one merge rule and one report can read them all. A task
that cannot run (labels missing, one class only, everything censored) writes rows with
``status="skipped"`` and the reason, never an empty file or a crash: the run goes on and
the table says why a number is absent.

A label budget is a share of the training subjects (``label_fraction``, ``shots`` 0) or, for
the few-shot curves of the frozen-feature tasks, a number of labelled training subjects per
class (``shots`` > 0, ``label_fraction`` NaN; :func:`shot_subjects`).

Confidence intervals resample test *subjects* (the rows of the per-subject arrays given),
never slices, because slices of one subject are not independent observations.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainssl.io import write_table

__all__ = [
    "RESULT_COLUMNS",
    "SORT_COLUMNS",
    "STATUSES",
    "bootstrap_ci",
    "label_fraction_subjects",
    "paired_bootstrap",
    "result_row",
    "shot_subjects",
    "skipped_rows",
    "log_skipped",
    "merge_comparisons",
    "merge_results",
    "read_results",
    "write_results",
]

logger = logging.getLogger(__name__)

RESULT_COLUMNS = (
    "task",
    "dataset",
    "encoder",
    "mode",
    "label_fraction",
    "shots",
    "seed",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "n_train",
    "n_test",
    "status",
    "reason",
)
#: Row order of a written table: identical inputs give byte-identical files.
SORT_COLUMNS = ("task", "dataset", "encoder", "mode", "label_fraction", "shots", "seed", "metric")
STATUSES = ("ok", "skipped")
_FLOAT_COLUMNS = ("label_fraction", "value", "ci_low", "ci_high")

_DEFAULTS: dict[str, Any] = {
    "dataset": "",
    "encoder": "",
    "mode": "none",
    "label_fraction": math.nan,
    "shots": 0,
    "seed": -1,
    "metric": "",
    "value": math.nan,
    "ci_low": math.nan,
    "ci_high": math.nan,
    "n_train": 0,
    "n_test": 0,
    "status": "ok",
    "reason": "",
}


def result_row(**fields: Any) -> dict[str, Any]:
    """Return one results row with every column of :data:`RESULT_COLUMNS`, missing ones filled.

    Defaults: confidence bounds and value NaN, ``status="ok"``, ``reason=""``, ``mode="none"``,
    ``seed=-1``, counts and ``shots`` 0.

    Raises:
        ValueError: for an unknown column, a missing ``task``, an unknown status, or a
            skipped row without a reason.
    """
    unknown = sorted(set(fields) - set(RESULT_COLUMNS))
    if unknown:
        raise ValueError(f"unknown result columns {unknown}; allowed: {list(RESULT_COLUMNS)}")
    if not fields.get("task"):
        raise ValueError("a result row needs a task name")
    row = {column: fields.get(column, _DEFAULTS.get(column)) for column in RESULT_COLUMNS}
    if row["status"] not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {row['status']!r}")
    if row["status"] == "skipped" and not row["reason"]:
        raise ValueError(f"skipped row of task {row['task']!r} needs a reason")
    return row


def skipped_rows(
    task: str, dataset: str, reason: str, metrics: Sequence[str] = ("",), log: bool = True, **fields: Any
) -> list[dict[str, Any]]:
    """Return rows that record a task (or one encoder/fraction of it) as skipped, with the reason.

    Args:
        task: task name.
        dataset: dataset name.
        reason: why nothing could be measured (shown in the report).
        metrics: one row per metric name, so the skip shows up wherever the metric is looked for.
        log: warn now; a job that skips many cells passes False and calls
            :func:`log_skipped` once at its end instead.
        **fields: other columns (encoder, mode, label_fraction, shots, seed, n_train, n_test).

    Returns:
        The rows, with ``status="skipped"`` and NaN values.
    """
    if log:
        logger.warning("task %s on %s skipped: %s", task, dataset, reason)
    fields = {k: v for k, v in fields.items() if k not in ("value", "ci_low", "ci_high", "status")}
    return [
        result_row(task=task, dataset=dataset, reason=reason, status="skipped", metric=metric, **fields)
        for metric in metrics
    ]


def log_skipped(rows: Sequence[Mapping[str, Any]]) -> None:
    """One warning per task, dataset and reason of the skipped rows, with the cells it costs.

    A frozen-feature job skips the same cell for every encoder, seed and metric; one line per
    reason, naming the encoders, budgets and seeds, replaces hundreds of identical ones.
    """
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        if row["status"] == "skipped":
            groups.setdefault((row["task"], row["dataset"], row["reason"]), []).append(row)
    for (task, dataset, reason), members in groups.items():
        cells = {(r["encoder"], _budget(r), r["seed"]) for r in members}
        encoders = sorted({r["encoder"] for r in members if r["encoder"]})
        budgets = sorted({_budget(r) for r in members} - {""})
        seeds = sorted({int(r["seed"]) for r in members if int(r["seed"]) >= 0})
        logger.warning(
            "task %s on %s: %d cell(s) skipped (encoders %s; budgets %s; seeds %s): %s",
            *(task, dataset, len(cells), ", ".join(encoders) or "-", ", ".join(budgets) or "-"),
            *(", ".join(map(str, seeds)) or "-", reason),
        )


def _budget(row: Mapping[str, Any]) -> str:
    if int(row["shots"] or 0) > 0:
        return f"{int(row['shots'])} shots"
    fraction = row["label_fraction"]
    return "" if fraction is None or math.isnan(float(fraction)) else f"fraction {float(fraction):g}"


def _metric_or_nan(metric: Callable[..., float], arrays: Sequence[np.ndarray]) -> float:
    """Score one resample; NaN where the metric is undefined on it.

    Undefined resamples are expected (a resample of a small test set may hold one class
    only), so the warnings libraries emit for them (sklearn's ``UndefinedMetricWarning``,
    numpy's empty-mean ``RuntimeWarning``) are silenced here and counted as NaN instead.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = float(metric(*arrays))
    except ValueError:  # undefined on this resample (one class, no comparable pairs, ...)
        return math.nan
    return value if math.isfinite(value) else math.nan


def _resample_indices(n: int, n_boot: int, seed: int, groups: Any = None) -> list[np.ndarray]:
    """Row indices of ``n_boot`` resamples: of rows, or of whole groups (subjects) when given."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return list(rng.integers(0, n, size=(n_boot, n)))
    codes, members = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    rows_of = [np.flatnonzero(members == g) for g in range(len(codes))]
    picks = rng.integers(0, len(codes), size=(n_boot, len(codes)))
    return [np.concatenate([rows_of[g] for g in pick]) for pick in picks]


def _check_lengths(arrays: Sequence[np.ndarray]) -> int:
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise ValueError(f"arrays must have one row per subject and equal lengths, got {sorted(lengths)}")
    return lengths.pop()


def bootstrap_ci(
    metric: Callable[..., float],
    *arrays: Any,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    groups: Any = None,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``metric(*arrays)`` over test subjects.

    Rows of every array are resampled together, with replacement. A resample on which the
    metric is undefined (it raises ``ValueError`` or returns NaN, e.g. an AUC of one class)
    is skipped; with no valid resample the interval is ``(nan, nan)``.

    Args:
        metric: function of the arrays, e.g. ``sklearn.metrics.roc_auc_score``.
        *arrays: per-subject arrays of equal length (numpy arrays, structured arrays included).
        n_boot: number of resamples.
        seed: seed of the resampling generator.
        alpha: 1 - confidence level.
        groups: the subject of each row, where a subject has several rows (e.g. one per
            contrast): whole subjects are then resampled, never single rows.

    Returns:
        ``(low, high)`` percentiles ``alpha/2`` and ``1 - alpha/2``.

    Raises:
        ValueError: for arrays of different lengths or no arrays.
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array")
    arrays_np = [np.asarray(a) for a in arrays]
    n = _check_lengths(arrays_np)
    if n == 0 or n_boot <= 0:
        return math.nan, math.nan
    resamples = _resample_indices(n, n_boot, seed, groups)
    values = np.array([_metric_or_nan(metric, [a[idx] for a in arrays_np]) for idx in resamples])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def paired_bootstrap(
    metric: Callable[[Any, Any], float],
    y_true: Any,
    pred_a: Any,
    pred_b: Any,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    groups: Any = None,
) -> dict[str, float]:
    """Paired bootstrap of ``metric(y, a) - metric(y, b)`` on the same test subjects.

    Both predictions are scored on the same resample each time, so subject-to-subject
    variation that affects both encoders alike cancels out of the difference.

    Args:
        metric: ``metric(y_true, prediction) -> float``.
        y_true: per-subject targets.
        pred_a: per-subject predictions of encoder A.
        pred_b: per-subject predictions of encoder B.
        n_boot: number of resamples.
        seed: seed of the resampling generator.
        alpha: 1 - confidence level.
        groups: the subject of each row; whole subjects are resampled when given.

    Returns:
        ``diff`` (observed A - B), ``ci_low``/``ci_high`` (percentile interval of the
        resampled difference) and ``p_value`` (two-sided: twice the smaller share of
        resampled differences on either side of zero, at most 1). NaN where undefined.

    Raises:
        ValueError: for arrays of different lengths.
    """
    arrays = [np.asarray(y_true), np.asarray(pred_a), np.asarray(pred_b)]
    n = _check_lengths(arrays)
    y, a, b = arrays
    observed = _metric_or_nan(metric, [y, a]) - _metric_or_nan(metric, [y, b])
    diffs = []
    for idx in _resample_indices(n, n_boot, seed, groups) if n else []:
        diffs.append(_metric_or_nan(metric, [y[idx], a[idx]]) - _metric_or_nan(metric, [y[idx], b[idx]]))
    diffs_np = np.asarray(diffs, dtype=float)
    diffs_np = diffs_np[np.isfinite(diffs_np)]
    if diffs_np.size == 0:
        return {"diff": observed, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan}
    low, high = np.percentile(diffs_np, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    p_value = min(1.0, 2 * min(np.mean(diffs_np <= 0), np.mean(diffs_np >= 0)))
    return {"diff": observed, "ci_low": float(low), "ci_high": float(high), "p_value": float(p_value)}


def _allocate(counts: Mapping[Any, int], total: int) -> dict[Any, int]:
    """Split ``total`` over classes in proportion to ``counts``: at least one each (largest remainder)."""
    n = sum(counts.values())
    quota = {label: total * count / n for label, count in counts.items()}
    take = {label: min(counts[label], max(1, math.floor(q))) for label, q in quota.items()}
    by_remainder = sorted(counts, key=lambda label: (-(quota[label] - math.floor(quota[label])), str(label)))
    while sum(take.values()) < total:
        grown = False
        for label in by_remainder:
            if sum(take.values()) >= total:
                break
            if take[label] < counts[label]:
                take[label] += 1
                grown = True
        if not grown:
            break
    return take


def label_fraction_subjects(
    subjects: Sequence[str] | np.ndarray,
    labels: Sequence[Any] | np.ndarray | None,
    fraction: float,
    seed: int,
) -> np.ndarray:
    """Choose a stratified fraction of the training subjects (the label-scarcity experiments).

    The number kept is ``round(fraction * n)``, raised to at least two subjects and at least
    one per class present, and shared across classes in proportion to their size. Without
    labels (``None``: regression, survival) the subjects are drawn uniformly. The draw
    depends only on the subjects, labels, fraction and seed.

    Args:
        subjects: unique training subject ids (one entry per subject, never per slice).
        labels: the class of each subject (same length) or ``None``.
        fraction: share of subjects to keep, in ``(0, 1]``.
        seed: seed of the draw.

    Returns:
        The chosen subject ids, sorted.

    Raises:
        ValueError: for a fraction outside ``(0, 1]``, repeated subjects or mismatched lengths.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    subjects_np = np.asarray(subjects).astype(str)
    if len(np.unique(subjects_np)) != len(subjects_np):
        raise ValueError("label_fraction_subjects takes one entry per subject; got repeated subject ids")
    n = len(subjects_np)
    order = np.argsort(subjects_np, kind="stable")  # input order must not change the draw
    subjects_np = subjects_np[order]
    rng = np.random.default_rng(seed)
    if labels is None:
        total = min(n, max(2, round(fraction * n)))
        return np.sort(rng.choice(subjects_np, size=total, replace=False))
    labels_np = np.asarray(labels).astype(str)
    if len(labels_np) != n:
        raise ValueError(f"{n} subjects but {len(labels_np)} labels")
    labels_np = labels_np[order]
    classes, counts = np.unique(labels_np, return_counts=True)
    total = min(n, max(2, len(classes), round(fraction * n)))
    take = _allocate(dict(zip(classes.tolist(), counts.tolist(), strict=True)), total)
    chosen = [rng.choice(subjects_np[labels_np == label], size=k, replace=False) for label, k in take.items()]
    return np.sort(np.concatenate(chosen)) if chosen else subjects_np[:0]


def shot_subjects(
    subjects: Sequence[str] | np.ndarray,
    labels: Sequence[Any] | np.ndarray | None,
    shots: int,
    seed: int,
) -> np.ndarray:
    """Choose ``shots`` training subjects per class (the few-shot budgets), or ``shots`` in all.

    Subjects are drawn, never units or slices: every unit of a chosen subject follows it. Each
    class's subjects are put in one random order per seed and the first ``shots`` are taken, so
    with one seed the budgets are nested (the 5-shot subjects include the 2-shot ones) and a
    curve changes by the labels added, not by a new draw. A class with fewer than ``shots``
    subjects gives all it has (the caller reports such a cell as skipped). The draw depends only
    on the subjects, labels, shots and seed, not on the input order.

    Args:
        subjects: unique training subject ids (one entry per subject).
        labels: the class (or event status) of each subject, or ``None`` for unstratified
            targets (regression): then ``shots`` subjects are drawn in all.
        shots: subjects per class, at least 1.
        seed: seed of the draw.

    Returns:
        The chosen subject ids, sorted.

    Raises:
        ValueError: for ``shots`` below 1, repeated subjects or mismatched lengths.
    """
    if shots < 1:
        raise ValueError(f"shots must be at least 1, got {shots}")
    subjects_np = np.asarray(subjects).astype(str)
    if len(np.unique(subjects_np)) != len(subjects_np):
        raise ValueError("shot_subjects takes one entry per subject; got repeated subject ids")
    order = np.argsort(subjects_np, kind="stable")  # input order must not change the draw
    subjects_np = subjects_np[order]
    rng = np.random.default_rng(seed)
    if labels is None:
        return np.sort(rng.permutation(subjects_np)[:shots])
    labels_np = np.asarray(labels).astype(str)
    if len(labels_np) != len(subjects_np):
        raise ValueError(f"{len(subjects_np)} subjects but {len(labels_np)} labels")
    labels_np = labels_np[order]
    chosen = [rng.permutation(subjects_np[labels_np == label])[:shots] for label in np.unique(labels_np)]
    return np.sort(np.concatenate(chosen)) if chosen else subjects_np[:0]


def write_results(rows: Iterable[Mapping[str, Any]], path: str | Path) -> pd.DataFrame:
    """Write results rows as a TSV atomically, columns in :data:`RESULT_COLUMNS` order, sorted.

    Args:
        rows: rows from :func:`result_row` / :func:`skipped_rows` (missing columns are filled).
        path: destination ``.tsv``.

    Returns:
        The table as written.
    """
    frame = pd.DataFrame([result_row(**dict(row)) for row in rows], columns=list(RESULT_COLUMNS))
    frame = frame.astype({"label_fraction": float, "value": float, "ci_low": float, "ci_high": float})
    frame = frame.astype({"shots": int, "seed": int, "n_train": int, "n_test": int})
    frame = frame.sort_values(list(SORT_COLUMNS), kind="stable").reset_index(drop=True)
    write_table(path, frame)
    return frame


def read_results(path: str | Path) -> pd.DataFrame:
    """Read a results TSV back with its column types (empty reasons stay empty strings).

    A table written before the ``shots`` column existed reads as label-fraction rows (``shots`` 0).
    """
    frame = pd.read_csv(path, sep="\t", keep_default_na=False, na_values={c: [""] for c in _FLOAT_COLUMNS})
    if "shots" not in frame.columns and "label_fraction" in frame.columns:
        frame.insert(int(frame.columns.get_loc("label_fraction")) + 1, "shots", 0)
    return frame.astype({c: float for c in _FLOAT_COLUMNS})


def merge_results(paths: Iterable[str | Path], out: str | Path) -> pd.DataFrame:
    """Concatenate every task's results table into one (the report's table), sorted.

    Raises:
        ValueError: if a table lacks one of :data:`RESULT_COLUMNS`.
    """
    frames = []
    for path in paths:
        frame = read_results(path)
        missing = sorted(set(RESULT_COLUMNS) - set(frame.columns))
        if missing:
            raise ValueError(f"{path} lacks result columns {missing}")
        frames.append(frame[list(RESULT_COLUMNS)])
    rows = pd.concat(frames, ignore_index=True).to_dict("records") if frames else []
    return write_results(rows, out)


def merge_comparisons(paths: Iterable[str | Path], out: str | Path) -> pd.DataFrame:
    """Concatenate the tasks' paired-comparison tables (same columns in each) into one TSV."""
    frames = [pd.read_csv(path, sep="\t") for path in paths]
    frames = [frame for frame in frames if len(frame.columns)]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    write_table(out, frame)
    return frame
