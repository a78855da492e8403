"""Frozen-feature tasks: subject-level splits for every task, label fractions, skipped-with-reason."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainssl.tasks import units as units_module
from brainssl.tasks.frozen import TaskRun, run_task
from brainssl.tasks.units import EvaluationSettings, build_units, evaluation_plan, task_specs

TASK_SETTINGS = {
    "tumor4": {"datasets": ["tumor4"], "logistic_c": 1.0},
    "sequence": {"datasets": ["brats21"], "logistic_c": 1.0},
    "neurodegeneration": {"datasets": ["oasis3"], "contrasts": ["T1w"], "logistic_c": 1.0},
    "molecular": {"datasets": ["brats21"], "logistic_c": 1.0},
    "brain_age": {"datasets": ["ixi"], "contrasts": ["T1w"], "ridge_alpha": 1.0, "controls_only": True},
    "survival": {
        "datasets": ["brats21"],
        "models": ["cox"],
        "cox_alpha": 1.0,
        "rsf_trees": 5,
        "rsf_min_leaf": 2,
    },
}
SHARED = {"evaluation": "kfold", "folds": 3, "label_fractions": [0.5, 1.0], "seeds": 2, "bootstrap": 20}


def _pooled_table(n_subjects: int = 24, seed: int = 0) -> pd.DataFrame:
    """A subjects.parquet-like table: sessions and contrasts per subject; features carry the labels."""
    rng = np.random.default_rng(seed)
    rows = []
    tumours = ["glioma", "meningioma", "pituitary", "notumor"]
    for dataset in ("tumor4", "brats21", "oasis3", "ixi"):
        for i in range(n_subjects):
            subject = f"sub-{dataset}{i:03d}"
            label = {
                "tumor_class": tumours[i % 4],
                "diagnosis": "alzheimer" if i % 3 == 0 else "control",
                "idh": "mutant" if i % 2 else "wildtype",
                "mgmt": float(i % 2),
                "age": 20.0 + 2.5 * i,
            }
            for session in ("ses-1", "ses-2"):
                for m, contrast in enumerate(("T1w", "T1ce", "T2w", "FLAIR")):
                    signal = np.array([*np.eye(4)[i % 4], i % 3 == 0, i % 2, label["age"] / 50, m], float)
                    feats = np.concatenate([signal, rng.normal(0, 0.3, size=3)])
                    rows.append(
                        {
                            "dataset": dataset,
                            "subject": subject,
                            "session": session,
                            "contrast": contrast,
                            "split": "test" if i % 4 == 0 else "train",
                            **label,
                            **{f"f{k:03d}": v for k, v in enumerate(feats)},
                        }
                    )
    return pd.DataFrame(rows)


def _survival(table: pd.DataFrame) -> pd.DataFrame:
    subjects = sorted(table.loc[table["dataset"] == "brats21", "subject"].unique())
    days = np.linspace(100, 1500, len(subjects))
    return pd.DataFrame(
        {"subject": subjects, "survival_days": days, "event": [1.0, 1.0, 0.0] * (len(subjects) // 3)}
    )


@pytest.mark.parametrize("task", sorted(TASK_SETTINGS))
@pytest.mark.parametrize("scheme", ["kfold", "fixed"])
def test_no_subject_on_both_sides_of_any_split(task, scheme):
    table = _pooled_table()
    settings = EvaluationSettings(scheme=scheme, folds=3, label_fractions=(0.3, 1.0), seeds=2, seed=5)
    for spec in task_specs(task, TASK_SETTINGS[task]):
        units = build_units(table, spec, _survival(table))
        assert len(units.features) > 0
        fits = list(evaluation_plan(units, settings))
        assert fits
        tested = set()
        for fit in fits:
            train_subjects = set(units.subjects[fit.train])
            test_subjects = set(units.subjects[fit.test])
            assert train_subjects and test_subjects
            assert not train_subjects & test_subjects, f"{task}: subject on both sides"
            tested |= set(fit.test.tolist())
        if scheme == "kfold":
            assert tested == set(range(len(units.features)))  # every unit predicted once per (fraction, seed)


def test_unit_level_split_would_leak_and_is_caught(monkeypatch):
    """The leakage test fails when folds are drawn over units (contrasts) instead of subjects."""
    from sklearn.model_selection import KFold

    def by_unit(subjects, strata, n_folds, seed):
        return list(KFold(n_folds, shuffle=True, random_state=seed).split(np.asarray(subjects)))

    monkeypatch.setattr(units_module, "subject_folds", by_unit)
    with pytest.raises(AssertionError, match="both sides"):
        test_no_subject_on_both_sides_of_any_split("sequence", "kfold")


def test_label_fractions_use_fewer_training_subjects_with_every_class():
    table = _pooled_table()
    spec = task_specs("tumor4", TASK_SETTINGS["tumor4"])[0]
    units = build_units(table, spec)
    settings = EvaluationSettings(scheme="kfold", folds=3, label_fractions=(0.1, 1.0), seeds=1, seed=0)
    fits = list(evaluation_plan(units, settings))
    small = [f for f in fits if f.fraction == 0.1]
    full = [f for f in fits if f.fraction == 1.0]
    for a, b in zip(small, full, strict=True):
        assert set(a.train) < set(b.train)
        assert set(units.target[a.train]) == set(units.target[b.train])  # every class kept


def test_run_task_scores_every_encoder_and_fraction():
    table = _pooled_table()
    run = TaskRun.from_params("tumor4", SHARED, TASK_SETTINGS["tumor4"], seed=3)
    outcome = _run(run, table)
    frame = pd.DataFrame(outcome.rows)
    assert set(frame["status"]) == {"ok"}
    assert set(frame["label_fraction"]) == {0.5, 1.0} and set(frame["seed"]) == {0, 1}
    assert set(frame["encoder"]) == {"moco-vit_tiny", "random-vit_tiny"}
    full = frame[(frame["label_fraction"] == 1.0) & (frame["metric"] == "accuracy")]
    assert (full["value"] > 0.9).all()  # the features carry the class
    assert (full["ci_low"] <= full["value"]).all() and (full["value"] <= full["ci_high"]).all()
    assert {c["baseline"] for c in outcome.comparisons} == {"random-vit_tiny"}


def _run(run, table, survival=None):
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp())
    paths = {}
    for name, shift in (("moco-vit_tiny", 0.0), ("random-vit_tiny", 0.5)):
        part = table.copy()
        part["f010"] = part["f010"] + shift
        paths[name] = folder / f"{name}.parquet"
        part.to_parquet(paths[name])
    return run_task(run, paths, survival)


@pytest.mark.parametrize(
    ("task", "mutate", "reason"),
    [
        ("tumor4", lambda t: t.assign(tumor_class="glioma"), "one class only"),
        ("neurodegeneration", lambda t: t.assign(diagnosis=None), "no labelled units"),
        ("brain_age", lambda t: t.assign(age=50.0), "constant age"),
        ("survival", None, "every subject censored"),
    ],
)
def test_degenerate_labels_are_skipped_with_reason(task, mutate, reason):
    table = _pooled_table()
    survival = _survival(table)
    if mutate is None:
        survival["event"] = 0.0
    else:
        table = mutate(table)
    run = TaskRun.from_params(task, SHARED, TASK_SETTINGS[task], seed=0)
    frame = pd.DataFrame(_run(run, table, survival=survival).rows)
    assert set(frame["status"]) == {"skipped"}
    assert frame["reason"].str.contains(reason).all()
    assert frame["value"].isna().all()
