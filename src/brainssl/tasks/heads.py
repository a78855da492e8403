"""Light heads on standardised frozen features: logistic, ridge, penalised Cox, random survival forest.

Heads are deliberately small and convex where possible, so that differences between
encoders come from the features, not from head tuning. Every head standardises features
on its training units only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["HeadSettings", "fit_classifier", "fit_regressor", "fit_survival", "step_values"]

logger = logging.getLogger(__name__)

HeadSettings = Mapping[str, Any]


def fit_classifier(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, n_classes: int, c: float, seed: int
) -> np.ndarray:
    """L2 logistic regression; returns ``(n_test, n_classes)`` class probabilities.

    A training set holding one class only (possible in a fold of a tiny cohort) cannot fit a
    classifier; it predicts that class with probability 1, which the metrics score honestly.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    proba = np.zeros((len(x_test), n_classes))
    present = np.unique(y_train)
    if present.size == 1:
        logger.warning("training units hold one class only; predicting it for every test unit")
        proba[:, present[0]] = 1.0
        return proba
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
    model.fit(x_train, y_train)
    proba[:, model.classes_] = model.predict_proba(x_test)
    return proba


def fit_regressor(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """Ridge regression; also returns cross-validated training predictions (for bias correction).

    Returns:
        ``(test_predictions, train_predictions_out_of_fold)``; the second is ``None`` with fewer
        than three training units (no inner cross-validation is possible).
    """
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), Ridge(alpha=alpha))
    inner = None
    if len(x_train) >= 3:
        cv = KFold(min(5, len(x_train)), shuffle=True, random_state=0)
        inner = cross_val_predict(model, x_train, y_train, cv=cv)
    return model.fit(x_train, y_train).predict(x_test), inner


def step_values(times: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Evaluate right-continuous step functions (value 1 before the first time) at ``at``.

    Args:
        times: ``(m,)`` increasing jump times.
        values: ``(n, m)`` function values from each jump on.
        at: ``(t,)`` evaluation times (beyond the last jump the last value holds).
    """
    idx = np.searchsorted(times, at, side="right") - 1
    padded = np.concatenate([np.ones((values.shape[0], 1)), values], axis=1)
    return padded[:, idx + 1]


def fit_survival(
    model_name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    grid: np.ndarray,
    settings: HeadSettings,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit a penalised Cox model (``cox``) or a random survival forest (``rsf``).

    Args:
        model_name: ``cox`` or ``rsf``.
        x_train: training features.
        y_train: structured ``(event, time)`` array.
        x_test: test features.
        grid: times at which survival probabilities are returned.
        settings: ``cox_alpha`` (ridge penalty), ``rsf_trees``, ``rsf_min_leaf``.
        seed: forest seed.

    Returns:
        ``(risk, survival)``: ``(n_test,)`` risk scores and ``(n_test, len(grid))`` probabilities.
    """
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sksurv.ensemble import RandomSurvivalForest
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    if model_name == "cox":
        head: Any = CoxPHSurvivalAnalysis(alpha=float(settings["cox_alpha"]), ties="efron")
    elif model_name == "rsf":
        head = RandomSurvivalForest(
            n_estimators=int(settings["rsf_trees"]),
            min_samples_leaf=int(settings["rsf_min_leaf"]),
            random_state=seed,
            n_jobs=1,
        )
    else:
        raise ValueError(f"survival model must be 'cox' or 'rsf', got {model_name!r}")
    model = make_pipeline(StandardScaler(), head).fit(x_train, y_train)
    risk = model.predict(x_test)
    curves = model.predict_survival_function(x_test, return_array=True)
    return risk, step_values(head.unique_times_, curves, grid)
