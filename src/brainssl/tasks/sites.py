"""Site-aware evaluation: folds that keep sites apart (or balanced), and the site-only baseline.

Multi-site cohorts (ABIDE has 17 sites for ABIDE I) differ by site in scanner and in who was
recruited, so a head can score by recognising the site. A spec with ``site_folds``
(:data:`~brainssl.tasks.registry.SITE_FOLDS`) is evaluated on folds from :func:`site_folds`:

* ``leave_site_out``: sites, not subjects, are dealt into ``min(folds, n_sites)`` folds (one
  site per fold when there are no more sites than folds; otherwise stratified-group k-fold by
  class); a head is never tested on a site it was fitted on.
* ``site_stratified``: subject-level k-fold stratified by site and class together (by class
  alone where a site-class cell is too small), so every fold sees every site in proportion.

:func:`site_baseline_rows` adds, per such spec, a logistic head on one-hot site alone (encoder
``site``, mode ``classical``) fitted and scored on the same plan as the encoders: the AUC the
site effect gives (near 0.5 or below under leave-site-out, above 0.5 under site-stratified
folds when sites differ in their share of cases). It is reported in the results table only,
not in the paired comparisons (it is no encoder).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .frozen import TaskOutcome, TaskRun

__all__ = ["SITE_BASELINE", "site_baseline_rows", "site_features", "site_folds"]

logger = logging.getLogger(__name__)

#: Encoder name of the site-only baseline in the results table.
SITE_BASELINE = "site"


def _per_subject(subjects: np.ndarray, values: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    unique, first = np.unique(subjects, return_index=True)
    return unique, None if values is None else np.asarray(values)[first]


def site_folds(
    subjects: Sequence[str] | np.ndarray,
    sites: Sequence[str] | np.ndarray,
    strata: np.ndarray | None,
    scheme: str,
    n_folds: int,
    seed: int,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Site-aware subject-level folds over units (see the module docstring).

    Args:
        subjects: subject of each unit.
        sites: site of each unit (one per subject).
        strata: per-unit class codes, or ``None`` (regression).
        scheme: ``leave_site_out`` or ``site_stratified``.
        n_folds: wanted number of folds (``tasks.folds``).
        seed: seed of the assignment.

    Returns:
        ``(train_rows, test_rows)`` unit index arrays per fold.

    Raises:
        ValueError: for an unknown scheme, units without a site, fewer than two sites
            (leave-site-out) or fewer than two subjects.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    subjects = np.asarray(subjects).astype(str)
    site_text = np.asarray(["" if s is None else str(s) for s in np.asarray(sites, dtype=object)])
    missing = sorted(set(subjects[site_text == ""]) | set(subjects[np.isin(site_text, ("nan", "None"))]))
    if missing:
        raise ValueError(
            f"{len(missing)} subject(s) without a site (first {missing[0]}); site folds need one"
        )
    unique, subject_sites = _per_subject(subjects, site_text)
    _, subject_strata = _per_subject(subjects, strata)
    assert subject_sites is not None
    if len(unique) < 2:
        raise ValueError(f"{len(unique)} subject(s); a split needs at least two")
    names = sorted(set(subject_sites))
    if scheme == "leave_site_out":
        if len(names) < 2:
            raise ValueError(f"one site only ({names[0]}); leave-site-out needs two")
        k = min(n_folds, len(names))
        if k == len(names):
            test_sets = [unique[subject_sites == name] for name in names]
        else:
            labels = subject_strata if subject_strata is not None else np.zeros(len(unique), int)
            splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
            test_sets = [unique[test] for _, test in splitter.split(unique, labels, groups=subject_sites)]
    elif scheme == "site_stratified":
        cells = (
            subject_sites
            if subject_strata is None
            else np.char.add(np.char.add(subject_sites.astype(str), "|"), subject_strata.astype(str))
        )
        smallest = int(np.unique(cells, return_counts=True)[1].min())
        if smallest < 2 and subject_strata is not None:
            logger.warning("a site-class cell has one subject; folds are stratified by class only")
            cells = subject_strata.astype(str)
            smallest = int(np.unique(cells, return_counts=True)[1].min())
        k = min(n_folds, len(unique), max(smallest, 2))
        if smallest < 2:
            from sklearn.model_selection import KFold

            test_sets = [unique[t] for _, t in KFold(k, shuffle=True, random_state=seed).split(unique)]
        else:
            splitter = StratifiedKFold(k, shuffle=True, random_state=seed)
            test_sets = [unique[test] for _, test in splitter.split(unique, cells)]
    else:
        raise ValueError(f"unknown site scheme {scheme!r}; expected leave_site_out or site_stratified")
    folds = []
    for test_subjects in test_sets:
        in_test = np.isin(subjects, test_subjects)
        folds.append((np.flatnonzero(~in_test), np.flatnonzero(in_test)))
    return folds


def site_features(sites: Sequence[str] | np.ndarray) -> np.ndarray:
    """One-hot site codes ``(n, n_sites)`` (sites sorted by name)."""
    text = np.asarray(sites).astype(str)
    names = sorted(set(text))
    return (text[:, None] == np.asarray(names)[None, :]).astype(np.float64)


def site_baseline_rows(run: TaskRun, outcome: TaskOutcome) -> list[dict[str, Any]]:
    """Result rows of the site-only head for every site-aware spec of ``outcome`` (see above).

    The head is the task's own (logistic, ``logistic_c``) on one-hot site features, fitted on
    each fit of the encoders' plan; its rows carry encoder ``site`` and mode ``classical``.
    Nothing for specs without site folds, without units, or with ``site_baseline`` off.
    """
    from .frozen import Prediction, _score, short_cells
    from .heads import fit_classifier
    from .results import log_skipped
    from .units import evaluation_plan, task_specs

    if not run.settings.get("site_baseline", True):
        return []
    rows: list[dict[str, Any]] = []
    for spec in task_specs(run.task, run.settings):
        units = outcome.units.get((spec.name, spec.dataset))
        if not spec.site_folds or units is None or spec.kind not in ("binary", "multiclass"):
            continue
        x = site_features(units.keys["site"].to_numpy())
        plan = list(evaluation_plan(units, run.evaluation))
        short = short_cells(plan)
        preds: dict[tuple[float, int], Prediction] = {}
        for fit in plan:
            key = (fit.budget, fit.seed)
            pred = preds.setdefault(key, Prediction(np.full((len(x), len(units.classes)), np.nan)))
            pred.n_train.append(fit.n_train_subjects)
            if key in short:
                pred.short = short[key]
                continue
            pred.values[fit.test] = fit_classifier(
                x[fit.train],
                units.target[fit.train],
                x[fit.test],
                len(units.classes),
                float(run.settings["logistic_c"]),
                fit.seed,
            )
        for row in _score(spec, units, SITE_BASELINE, preds, run):
            rows.append({**row, "mode": "classical"})
        logger.info("%s on %s: site-only baseline over %d sites", spec.name, spec.dataset, x.shape[1])
    log_skipped(rows)
    return rows
