"""Task metrics against scikit-learn and scikit-survival on known inputs (brainssl.tasks.metrics)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm
from sksurv.metrics import concordance_index_censored, concordance_index_ipcw, integrated_brier_score

from brainssl.tasks.metrics import (
    accuracy,
    auc,
    balanced_accuracy,
    binary_auc,
    brier_contributions,
    concordance,
    correct_age_bias,
    fit_age_bias,
    gap_slope,
    macro_auc,
    macro_f1,
    survival_array,
    uno_weights,
)


@pytest.fixture
def multiclass():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=80)
    logits = rng.normal(size=(80, 4)) + 1.5 * np.eye(4)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba


def test_classification_metrics_match_sklearn(multiclass):
    y, proba = multiclass
    predicted = proba.argmax(axis=1)
    assert accuracy(y, proba) == pytest.approx(skm.accuracy_score(y, predicted))
    assert balanced_accuracy(y, proba) == pytest.approx(skm.balanced_accuracy_score(y, predicted))
    assert macro_f1(y, proba) == pytest.approx(skm.f1_score(y, predicted, average="macro", labels=range(4)))
    assert macro_auc(y, proba) == pytest.approx(
        skm.roc_auc_score(y, proba, multi_class="ovr", average="macro")
    )


def test_binary_auc_with_ties_matches_sklearn():
    y = np.array([0, 0, 1, 1, 0, 1, 1, 0])
    score = np.array([0.1, 0.4, 0.4, 0.8, 0.4, 0.9, 0.1, 0.2])  # ties across classes
    assert binary_auc(y, score) == pytest.approx(skm.roc_auc_score(y, score))
    proba = np.stack([1 - score, score], axis=1)
    assert auc(y, proba) == pytest.approx(skm.roc_auc_score(y, score))
    with pytest.raises(ValueError, match="one class"):
        binary_auc(np.ones(4), score[:4])


def test_macro_f1_counts_classes_never_predicted():
    y = np.array([0, 1, 2, 2])
    proba = np.eye(3)[[0, 0, 2, 2]]
    ref = skm.f1_score(y, proba.argmax(1), average="macro", labels=range(3), zero_division=0)
    assert macro_f1(y, proba) == pytest.approx(ref)


def test_age_bias_correction_removes_a_known_linear_bias():
    age = np.linspace(20, 80, 30)
    predicted = 0.5 * age + 25  # regression to the mean
    slope, intercept = fit_age_bias(age, predicted)
    assert (slope, intercept) == (pytest.approx(0.5), pytest.approx(25))
    assert gap_slope(age, predicted) == pytest.approx(-0.5)
    corrected = correct_age_bias(predicted, slope, intercept)
    assert np.allclose(corrected, age)
    assert gap_slope(age, corrected) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError):
        fit_age_bias(np.full(4, 50.0), predicted[:4])


@pytest.fixture
def survival_data():
    rng = np.random.default_rng(1)
    n = 60
    risk = rng.normal(size=n)
    time = np.round(rng.exponential(300 * np.exp(-risk)), 0) + 1  # rounding makes ties
    censor = rng.uniform(50, 900, size=n)
    event = time <= censor
    time = np.minimum(time, np.round(censor))
    return survival_array(event, time), risk + rng.normal(0, 0.5, size=n)


def test_harrell_and_uno_match_sksurv(survival_data):
    y, estimate = survival_data
    event, time = y["event"], y["time"]
    assert concordance(event, time, estimate) == pytest.approx(
        concordance_index_censored(event, time, estimate)[0]
    )
    estimate_tied = np.round(estimate, 1)
    ref = concordance_index_censored(event, time, estimate_tied)[0]
    assert concordance(event, time, estimate_tied) == pytest.approx(ref)
    tau = float(np.quantile(time[event], 0.8))
    weights = uno_weights(y, y, tau)
    ref_uno = concordance_index_ipcw(y, y, estimate, tau=tau)[0]
    assert concordance(event, time, estimate, weights) == pytest.approx(ref_uno)


def test_brier_contributions_average_to_sksurv_integrated_brier(survival_data):
    y, estimate = survival_data
    times = np.quantile(y["time"][y["event"]], np.linspace(0.1, 0.7, 8))
    probs = np.exp(-np.outer(np.exp(estimate), times) / 400)
    ibs = integrated_brier_score(y, y, probs, times)
    assert brier_contributions(y, y, probs, times).mean() == pytest.approx(ibs)
