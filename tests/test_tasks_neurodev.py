"""Neurodevelopmental classification: site-aware folds, the site-only baseline, AUC with intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainssl.synth import SubjectParams, generate_subject
from brainssl.synth.neurodev import frontal_wm_depth
from brainssl.synth.template import GM, load_template
from brainssl.tasks.frozen import TaskRun, run_task
from brainssl.tasks.registry import TASKS, TaskSpec
from brainssl.tasks.sites import site_baseline_rows, site_features, site_folds
from brainssl.tasks.units import build_units, evaluation_plan, task_specs

SITES = ("NYU", "UM_1", "USM", "PITT")
SHARE = (0.75, 0.25, 0.5, 0.5)
SETTINGS = {"datasets": ["abide"], "contrasts": ["T1w"], "logistic_c": 1.0, "site_baseline": True}
SHARED = {"evaluation": "kfold", "folds": 5, "label_fractions": [1.0], "seeds": 1, "bootstrap": 20}


def _pooled(n_per_site: int = 10, signal: float = 2.0, seed: int = 0) -> pd.DataFrame:
    """A subjects.parquet-like table: the diagnosis in one feature, the site in another, noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for s, site in enumerate(SITES):
        for k in range(n_per_site):
            autism = (0.618 * k + 0.5) % 1.0 < SHARE[s]
            feats = rng.normal(0, 1, size=6)
            feats[0] += signal * autism
            feats[1] += 3.0 * s  # a scanner effect
            rows.append(
                {
                    "dataset": "abide",
                    "subject": f"sub-{s}{k:03d}",
                    "session": "ses-1",
                    "contrast": "T1w",
                    "split": "train",
                    "diagnosis": "autism" if autism else "control",
                    "site": site,
                    **{f"f{j:03d}": v for j, v in enumerate(feats)},
                }
            )
    return pd.DataFrame(rows)


def _run(settings: dict, tmp_path, table: pd.DataFrame) -> tuple[pd.DataFrame, TaskRun]:
    path = tmp_path / "enc.parquet"
    table.to_parquet(path)
    run = TaskRun.from_params("neurodevelopmental", SHARED, settings, seed=1)
    outcome = run_task(run, {"moco-vit_tiny": path})
    outcome.rows += site_baseline_rows(run, outcome)
    return pd.DataFrame(outcome.rows), run


def test_leave_site_out_keeps_each_site_in_one_test_fold() -> None:
    table = _pooled()
    spec = task_specs("neurodevelopmental", SETTINGS)[0]
    assert spec.site_folds == "leave_site_out" and spec.classes == ("control", "autism")
    units = build_units(table, spec)
    run = TaskRun.from_params("neurodevelopmental", SHARED, SETTINGS, seed=1)
    plan = list(evaluation_plan(units, run.evaluation))
    sites = units.keys["site"].to_numpy()
    assert len(plan) == 4  # min(folds 5, 4 sites): one site per fold
    for fit in plan:
        assert len(set(sites[fit.test])) == 1 and not set(sites[fit.test]) & set(sites[fit.train])
    three = site_folds(units.subjects, sites, units.strata, "leave_site_out", 3, 0)
    assert len(three) == 3
    for train, test in three:  # more sites than folds: sites still never split
        assert not set(sites[test]) & set(sites[train])


def test_site_stratified_folds_see_every_site() -> None:
    units = build_units(_pooled(16), task_specs("neurodevelopmental", SETTINGS)[0])  # cells of >= 3
    sites = units.keys["site"].to_numpy()
    folds = site_folds(units.subjects, sites, units.strata, "site_stratified", 3, 0)
    assert len(folds) == 3
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested) == list(range(len(units.subjects)))
    assert all(set(sites[test]) == set(SITES) for _, test in folds)
    with pytest.raises(ValueError, match="without a site"):
        site_folds(units.subjects, np.where(sites == "NYU", "", sites), units.strata, "site_stratified", 3, 0)


def test_auc_with_intervals_beside_the_site_only_baseline(tmp_path) -> None:
    rows, _ = _run(SETTINGS, tmp_path, _pooled())
    ok = rows[(rows["status"] == "ok") & (rows["metric"] == "auc")].set_index("encoder")
    encoder, site = ok.loc["moco-vit_tiny"], ok.loc["site"]
    assert encoder["value"] > 0.8 and encoder["ci_low"] < encoder["value"] < encoder["ci_high"]
    assert site["mode"] == "classical" and site["n_test"] == encoder["n_test"] == 40
    # unseen sites: one-hot site carries nothing to the held-out site
    assert site["value"] < 0.65 < encoder["value"]
    stratified, _ = _run({**SETTINGS, "site_evaluation": "site_stratified"}, tmp_path, _pooled(signal=0.0))
    auc = stratified[(stratified["status"] == "ok") & (stratified["metric"] == "auc")].set_index("encoder")
    assert auc.loc["site", "value"] > 0.6  # seen sites: the share of autism per site is learnt
    none, _ = _run({**SETTINGS, "site_baseline": False}, tmp_path, _pooled())
    assert "site" not in set(none["encoder"])


def test_no_site_and_other_labels(tmp_path) -> None:
    table = _pooled()
    table.loc[table["subject"].str.startswith("sub-1"), "diagnosis"] = "adhd"  # left out: not a class
    units = build_units(table, task_specs("neurodevelopmental", SETTINGS)[0])
    assert set(units.classes) == {"autism", "control"} and units.dropped == 10
    rows, _ = _run(SETTINGS, tmp_path, table.drop(columns="site"))
    skipped = rows[rows["status"] == "skipped"]
    assert len(skipped) and skipped["reason"].str.contains("without a site").all()
    assert "site" not in set(rows["encoder"])


def test_registry_entry_and_spec_checks() -> None:
    task = TASKS["neurodevelopmental"]
    assert task.kind == "frozen" and task.scratch and task.datasets_key == "datasets"
    with pytest.raises(ValueError, match="site_folds"):
        TaskSpec("x", "binary", "abide", "diagnosis", ("auc",), site_folds="by_site")
    assert site_features(["b", "a", "b"]).tolist() == [[0, 1], [1, 0], [0, 1]]


def test_autism_effect_thickens_frontal_cortex_only() -> None:
    params = {"contrasts": ("T1w",), "grid_mm": 4.0, "sites": SITES, "site_index": 1}
    autism = generate_subject(5, "0050002", SubjectParams(diagnosis="autism", **params))
    control = generate_subject(5, "0050002", SubjectParams(diagnosis="control", **params))
    assert autism.meta.thickening_mm > 0 and control.meta.thickening_mm == 0
    assert autism.meta.site == control.meta.site == "UM_1"
    assert (autism.tissue.data == 2).sum() > (control.tissue.data == 2).sum()  # more grey matter
    template = load_template(4.0)
    idx, depth = frontal_wm_depth(template)
    assert len(idx) and depth.min() > 0 and (template.labels.reshape(-1)[idx] != GM).all()
