"""Task metrics, written for speed inside bootstrap loops and tested against scikit-learn/-survival.

Bootstrap confidence intervals call a metric a thousand times per result row, so the
classification metrics here are small numpy functions (rank-based AUC, confusion counts)
rather than scikit-learn calls; ``tests/test_tasks_metrics.py`` checks each against its
scikit-learn counterpart on known inputs. All classification metrics take integer class
codes ``0..K-1`` and a probability matrix ``(n, K)``; they raise ``ValueError`` where the
metric is undefined (one class present), which :func:`~brainssl.tasks.results.bootstrap_ci`
counts as a skipped resample.

Brain age: :func:`fit_age_bias` / :func:`correct_age_bias` implement the linear correction
of Cole et al. 2018 (Mol Psychiatry) as reviewed by de Lange & Cole 2020 (NeuroImage Clin):
fit ``predicted = a * age + b`` on training predictions, then report ``(predicted - b) / a``.

Survival: Harrell's and Uno's C come from scikit-survival; the integrated Brier score is
split into per-subject contributions (:func:`brier_contributions`, Graf et al. 1999) whose
mean equals scikit-survival's ``integrated_brier_score``, so its bootstrap is a resampled mean.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = [
    "CLASSIFICATION_METRICS",
    "accuracy",
    "auc",
    "balanced_accuracy",
    "binary_auc",
    "brier_contributions",
    "concordance",
    "correct_age_bias",
    "fit_age_bias",
    "gap_slope",
    "logrank_groups",
    "macro_auc",
    "macro_f1",
    "mean_absolute_error",
    "survival_array",
    "uno_weights",
]


def _codes(y_true: np.ndarray) -> np.ndarray:
    return np.asarray(y_true).astype(np.int64)


def accuracy(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Share of units whose most probable class is the true one."""
    return float(np.mean(np.argmax(proba, axis=1) == _codes(y_true)))


def _recalls(y_true: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    counts = np.bincount(y_true, minlength=n_classes)
    hits = np.bincount(y_true[predicted == y_true], minlength=n_classes)
    present = counts > 0
    return hits[present] / counts[present]


def balanced_accuracy(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true`` (scikit-learn's definition)."""
    y = _codes(y_true)
    return float(np.mean(_recalls(y, np.argmax(proba, axis=1), proba.shape[1])))


def macro_f1(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Unweighted mean F1 over all ``K`` classes (0 for a class never predicted nor present)."""
    y = _codes(y_true)
    predicted = np.argmax(proba, axis=1)
    k = proba.shape[1]
    tp = np.bincount(y[predicted == y], minlength=k).astype(float)
    support = np.bincount(y, minlength=k)
    called = np.bincount(predicted, minlength=k)
    denom = support + called
    f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    return float(f1.mean())


def _midranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their mean rank (``scipy.stats.rankdata``, without its overhead)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse]


def binary_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of a score for the positive class 1 (Mann-Whitney U with mid-ranks for ties).

    Raises:
        ValueError: if only one class is present.
    """
    y = np.asarray(y_true).astype(bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC is undefined with one class present")
    ranks = _midranks(np.asarray(score, float))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Binary AUC from a two-column probability matrix (positive class = column 1)."""
    return binary_auc(_codes(y_true) == 1, proba[:, 1])


def macro_auc(y_true: np.ndarray, proba: np.ndarray) -> float:
    """One-vs-rest ROC AUC averaged over all ``K`` classes (scikit-learn ``multi_class="ovr"``).

    Raises:
        ValueError: if a class is absent from ``y_true`` (its one-vs-rest AUC is undefined).
    """
    y = _codes(y_true)
    return float(np.mean([binary_auc(y == k, proba[:, k]) for k in range(proba.shape[1])]))


CLASSIFICATION_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy,
    "balanced_accuracy": balanced_accuracy,
    "macro_f1": macro_f1,
    "macro_auc": macro_auc,
    "auc": auc,
}


def mean_absolute_error(y_true: np.ndarray, predicted: np.ndarray) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(np.asarray(predicted, float) - np.asarray(y_true, float))))


def fit_age_bias(age: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """Fit ``predicted = slope * age + intercept`` (least squares) for the age-bias correction.

    Fit it on predictions the model did not train on (cross-validated training predictions):
    in-sample predictions understate the regression to the mean that the correction removes.

    Raises:
        ValueError: with fewer than two distinct ages, or a flat fit (slope 0).
    """
    age = np.asarray(age, float)
    if np.unique(age).size < 2:
        raise ValueError("age-bias correction needs at least two distinct ages")
    slope, intercept = np.polyfit(age, np.asarray(predicted, float), 1)
    if abs(slope) < 1e-6:
        raise ValueError("predicted age does not vary with age; the bias correction is undefined")
    return float(slope), float(intercept)


def correct_age_bias(predicted: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """Apply the correction ``(predicted - intercept) / slope`` (Cole et al. 2018)."""
    return (np.asarray(predicted, float) - intercept) / slope


def gap_slope(age: np.ndarray, predicted: np.ndarray) -> float:
    """Slope of the brain-age gap (predicted - age) against age: the bias being reported."""
    age = np.asarray(age, float)
    if np.unique(age).size < 2:
        raise ValueError("the gap slope needs at least two distinct ages")
    return float(np.polyfit(age, np.asarray(predicted, float) - age, 1)[0])


def concordance(
    event: np.ndarray, time: np.ndarray, risk: np.ndarray, weights: np.ndarray | None = None
) -> float:
    """Concordance index of risk scores: Harrell's C, or Uno's C with IPCW ``weights``.

    Pair ``(i, j)`` is comparable when subject ``i`` had the event and ``j`` was followed
    longer (or censored at the same time); it is concordant when ``risk_i > risk_j`` and counts
    one half when the risks tie (within 1e-8). Each comparable pair is weighted by
    ``weights_i`` (1 for Harrell; ``1 / G(T_i)^2`` for Uno). Matches scikit-survival's
    ``concordance_index_censored`` / ``concordance_index_ipcw`` (tested), vectorised.

    Raises:
        ValueError: if there is no comparable pair.
    """
    event = np.asarray(event).astype(bool)
    time = np.asarray(time, float)
    risk = np.asarray(risk, float)
    w = np.ones(time.size) if weights is None else np.asarray(weights, float)
    later = (time[None, :] > time[:, None]) | ((time[None, :] == time[:, None]) & ~event[None, :])
    comparable = later & event[:, None]
    if not comparable.any():
        raise ValueError("no comparable pairs; the concordance index is undefined")
    diff = risk[:, None] - risk[None, :]
    tie = np.abs(diff) <= 1e-8
    score = np.where(tie, 0.5, (diff > 0).astype(float))
    numerator = float((w[:, None] * score * comparable).sum())
    denominator = float((w[:, None] * comparable).sum())
    if denominator == 0:
        raise ValueError("every comparable pair has zero weight")
    return numerator / denominator


def uno_weights(survival_train: np.ndarray, survival_test: np.ndarray, tau: float) -> np.ndarray:
    """Per-subject weights of Uno's C: ``1 / G(T_i)^2`` for events before ``tau``, else 0."""
    from sksurv.nonparametric import CensoringDistributionEstimator

    time = survival_test[survival_test.dtype.names[1]]
    censoring = CensoringDistributionEstimator().fit(survival_train)
    weights = np.zeros(time.size)
    early = time < tau
    if early.any():
        weights[early] = censoring.predict_ipcw(survival_test[early]) ** 2
    return weights


def survival_array(event: np.ndarray, time: np.ndarray) -> np.ndarray:
    """The structured ``(event, time)`` array scikit-survival expects."""
    from sksurv.util import Surv

    return Surv.from_arrays(event=np.asarray(event).astype(bool), time=np.asarray(time, float))


def brier_contributions(
    survival_train: np.ndarray, survival_test: np.ndarray, surv_probs: np.ndarray, times: np.ndarray
) -> np.ndarray:
    """Each test subject's share of the integrated Brier score (IPCW, Graf et al. 1999).

    At time ``t`` a subject with an event by ``t`` contributes ``S(t)^2 / G(T)``, one still at
    risk ``(1 - S(t))^2 / G(t)``, one censored before ``t`` nothing; ``G`` is the Kaplan-Meier
    estimate of the censoring distribution on the training data. Integrating over ``times``
    (trapezoid, divided by the span) and averaging over subjects gives scikit-survival's
    ``integrated_brier_score``.

    Args:
        survival_train: structured ``(event, time)`` array the censoring estimate is fitted on.
        survival_test: structured array of the test subjects.
        surv_probs: ``(n_test, n_times)`` predicted survival probabilities at ``times``.
        times: increasing evaluation times inside the test follow-up.

    Returns:
        ``(n_test,)`` per-subject integrated Brier contributions.
    """
    from sksurv.nonparametric import CensoringDistributionEstimator

    censoring = CensoringDistributionEstimator().fit(survival_train)
    event_field, time_field = survival_test.dtype.names
    event = survival_test[event_field]
    time = survival_test[time_field]
    inverse_g_event = censoring.predict_ipcw(survival_test)  # 1/G(T_i) for events, 0 when censored
    g_times = censoring.predict_proba(times)
    died = (time[:, None] <= times[None, :]) & event[:, None]
    at_risk = time[:, None] > times[None, :]
    scores = np.where(died, surv_probs**2 * inverse_g_event[:, None], 0.0)
    scores = scores + np.where(at_risk, (1.0 - surv_probs) ** 2 / g_times[None, :], 0.0)
    return np.trapezoid(scores, times, axis=1) / (times[-1] - times[0])


def logrank_groups(survival: np.ndarray, risk: np.ndarray) -> tuple[np.ndarray, float]:
    """Split subjects at the median predicted risk and compare the two groups (log-rank test).

    Returns:
        ``(high_risk, p_value)``: a boolean group per subject and the log-rank p-value.

    Raises:
        ValueError: if the split leaves a group empty.
    """
    from sksurv.compare import compare_survival

    high = np.asarray(risk) > np.median(risk)
    if high.all() or not high.any():
        raise ValueError("predicted risks do not split into two groups")
    _, p_value = compare_survival(survival, high.astype(int))
    return high, float(p_value)
