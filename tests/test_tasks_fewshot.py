"""Few-shot budgets: subject-level draws per class, skipped cells with their reasons, the few-shot figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import ErrorbarContainer

from brainssl.tasks.figures import save_fewshot_curves, save_fraction_curves
from brainssl.tasks.frozen import TaskRun, run_task
from brainssl.tasks.pairs import comparison_pairs
from brainssl.tasks.results import result_row, shot_subjects
from brainssl.tasks.units import EvaluationSettings, build_units, evaluation_plan, task_specs

TUMOURS = ("glioma", "meningioma", "notumor", "pituitary")
SETTINGS = {
    "tumor4": {"datasets": ["tumor4"], "logistic_c": 1.0},
    "sequence": {"datasets": ["brats21"], "logistic_c": 1.0},
    "brain_age": {"datasets": ["ixi"], "contrasts": ["T1w"], "ridge_alpha": 1.0, "controls_only": True},
    "survival": {
        "datasets": ["brats21"],
        "models": ["cox"],
        "cox_alpha": 1.0,
        "rsf_trees": 5,
        "rsf_min_leaf": 2,
    },
}


def _table(n_subjects: int = 24, seed: int = 0) -> pd.DataFrame:
    """A subjects.parquet-like table: two sessions and four contrasts per subject, labels in the features."""
    rng = np.random.default_rng(seed)
    rows = []
    for dataset in ("tumor4", "brats21", "ixi"):
        for i in range(n_subjects):
            age = 20.0 + 2.5 * i
            for session in ("ses-1", "ses-2"):
                for m, contrast in enumerate(("T1w", "T1ce", "T2w", "FLAIR")):
                    signal = np.array([*np.eye(4)[i % 4], age / 50, m], float)
                    feats = np.concatenate([signal, rng.normal(0, 0.3, size=3)])
                    rows.append(
                        {
                            "dataset": dataset,
                            "subject": f"sub-{dataset}{i:03d}",
                            "session": session,
                            "contrast": contrast,
                            "split": "train",
                            "tumor_class": TUMOURS[i % 4],
                            "diagnosis": "control",
                            "age": age,
                            **{f"f{k:03d}": v for k, v in enumerate(feats)},
                        }
                    )
    return pd.DataFrame(rows)


def _paths(tmp_path, table):
    paths = {}
    for name, shift in (("dino-vit_tiny", 0.0), ("moco-vit_tiny", 0.2), ("random-vit_tiny", 0.5)):
        part = table.copy()
        part["f008"] = part["f008"] + shift
        paths[name] = tmp_path / f"{name}.parquet"
        part.to_parquet(paths[name])
    return paths


def _shared(**fields):
    base = {"evaluation": "kfold", "folds": 3, "label_fractions": [1.0], "seeds": 2, "bootstrap": 10}
    return base | fields


# ---- the draws


def test_shot_subjects_are_per_class_nested_and_order_free():
    subjects = np.array([f"sub-{i:02d}" for i in range(30)])
    labels = np.array(["a"] * 20 + ["b"] * 7 + ["c"] * 3)
    of = dict(zip(subjects, labels, strict=True))
    five = shot_subjects(subjects, labels, 5, seed=1)
    counts = pd.Series([of[s] for s in five]).value_counts().to_dict()
    assert counts == {"a": 5, "b": 5, "c": 3}  # a class with fewer gives all it has
    assert set(shot_subjects(subjects, labels, 2, seed=1)) < set(five)  # nested within a seed
    shuffled = np.random.default_rng(0).permutation(30)
    assert np.array_equal(shot_subjects(subjects[shuffled], labels[shuffled], 5, seed=1), five)
    assert not np.array_equal(shot_subjects(subjects, labels, 5, seed=2), five)
    assert len(shot_subjects(subjects, None, 4, seed=0)) == 4  # regression: in all
    with pytest.raises(ValueError, match="one entry per subject"):
        shot_subjects(["a", "a", "b"], [0, 0, 1], 1, seed=0)
    with pytest.raises(ValueError, match="at least 1"):
        shot_subjects(["a", "b"], None, 0, seed=0)


@pytest.mark.parametrize("task", ["tumor4", "sequence"])
def test_shot_fits_train_on_every_unit_of_k_subjects_per_class(task):
    units = build_units(_table(), task_specs(task, SETTINGS[task])[0])
    settings = EvaluationSettings(
        scheme="kfold", folds=3, label_fractions=(1.0,), seeds=2, seed=0, shots=(2, 3)
    )
    fits = [f for f in evaluation_plan(units, settings) if f.shots]
    assert {(f.shots, f.seed) for f in fits} == {(2, 0), (2, 1), (3, 0), (3, 1)}
    full = {f.fold: set(f.train) for f in evaluation_plan(units, settings) if not f.shots and f.seed == 0}
    subjects = units.subjects
    for fit in fits:
        assert np.isnan(fit.fraction) and fit.budget == -fit.shots and fit.short == ""
        train = subjects[fit.train]
        assert not set(train) & set(subjects[fit.test])
        for code in range(len(units.classes)):
            assert len(set(train[units.target[fit.train] == code])) == fit.shots  # k subjects per class
        # subject-level: every unit of a chosen subject (all its contrasts) is in the training set
        chosen = np.isin(subjects, train)
        assert set(np.flatnonzero(chosen)) == set(fit.train) <= full[fit.fold]
        assert fit.n_train_subjects == len(set(train))
    draws = {f.seed: set(subjects[f.train]) for f in fits if f.shots == 2 and f.fold == 0}
    assert draws[0] != draws[1]  # several draws


# ---- skipped cells


def test_cells_below_two_subjects_per_class_or_short_of_shots_are_skipped(tmp_path):
    shared = _shared(label_fractions=[0.1, 1.0], shots=[1, 2, 50])
    run = TaskRun.from_params("tumor4", shared, SETTINGS["tumor4"], seed=3)
    outcome = run_task(run, _paths(tmp_path, _table()))
    frame = pd.DataFrame(outcome.rows)

    def status(shots, fraction=None):
        cell = frame[
            (frame["shots"] == shots)
            & (frame["label_fraction"].isna() if fraction is None else frame["label_fraction"] == fraction)
        ]
        assert len(cell), (shots, fraction)
        return set(cell["status"])

    assert status(1) == status(50) == status(0, 0.1) == {"skipped"}
    assert status(2) == status(0, 1.0) == {"ok"}
    one = frame[frame["shots"] == 1]
    assert one["reason"].str.contains("1 training subject\\(s\\) of class .*at least 2 per class").all()
    assert frame.loc[frame["shots"] == 50, "reason"].str.contains("for 50 shots").all()
    assert frame.loc[frame["status"] == "skipped", "value"].isna().all()
    two = frame[(frame["shots"] == 2) & (frame["status"] == "ok")]
    assert (two["n_train"] == 2 * len(TUMOURS)).all() and two["label_fraction"].isna().all()
    assert (two["ci_low"] <= two["ci_high"]).all()
    # only reported cells are compared, the pretrained encoders with each other as well
    compared = {(c["shots"], c["label_fraction"]) for c in outcome.comparisons}
    assert {s for s, _ in compared} == {0, 2} and 0.1 not in {f for _, f in compared}
    pairs = {(c["encoder"], c["baseline"]) for c in outcome.comparisons}
    assert pairs == {("dino-vit_tiny", "random-vit_tiny"), ("moco-vit_tiny", "random-vit_tiny")} | {
        ("dino-vit_tiny", "moco-vit_tiny")
    }


def test_ablation_runs_are_fitted_at_the_largest_fraction_only(tmp_path):
    """The ablation table reads one cell per task; its runs are not fitted at the other budgets."""
    run = TaskRun.from_params(
        "tumor4", _shared(label_fractions=[0.5, 1.0], shots=[2]), SETTINGS["tumor4"], seed=3
    )
    paths = _paths(tmp_path, _table())
    paths["moco-vit_tiny-subset"] = paths["moco-vit_tiny"]
    outcome = run_task(run, paths)
    frame = pd.DataFrame(outcome.rows)
    budgets = frame.groupby("encoder")[["shots", "label_fraction"]].apply(
        lambda part: set(zip(part["shots"], part["label_fraction"].fillna(0), strict=True))
    )
    assert budgets["moco-vit_tiny"] == {(2, 0), (0, 0.5), (0, 1.0)}
    assert budgets["moco-vit_tiny-subset"] == {(0, 1.0)}
    subset = "moco-vit_tiny-subset"
    ablation = [c for c in outcome.comparisons if subset in (c["encoder"], c["baseline"])]
    assert {(c["encoder"], c["baseline"]) for c in ablation} == {
        ("moco-vit_tiny", subset),  # the filter's gain
        (subset, "random-vit_tiny"),
    }
    assert {(c["shots"], c["label_fraction"]) for c in ablation} == {(0, 1.0)}


def test_comparison_pairs_skip_baseline_pairs():
    names = ["random-vit_tiny", "moco-vit_tiny", "classical", "dino-vit_tiny", "imagenet"]
    pairs = comparison_pairs(names)
    assert ("dino-vit_tiny", "moco-vit_tiny") in pairs and ("imagenet", "moco-vit_tiny") in pairs
    assert not [p for p in pairs if p[0] in ("classical", "random-vit_tiny")]
    assert len(pairs) == len(set(pairs)) == 3 * 2 + 3


def test_regression_and_survival_cells_too_small_to_fit_are_skipped(tmp_path):
    table = _table()
    run = TaskRun.from_params("brain_age", _shared(shots=[2, 6]), SETTINGS["brain_age"], seed=0)
    frame = pd.DataFrame(run_task(run, _paths(tmp_path, table)).rows)
    two, six = frame[frame["shots"] == 2], frame[frame["shots"] == 6]
    assert set(two["status"]) == {"skipped"} and two["reason"].str.contains("needs at least 5").all()
    assert set(six.loc[six["metric"] == "mae", "status"]) == {"ok"} and (six["n_train"] == 6).all()
    subjects = sorted(table.loc[table["dataset"] == "brats21", "subject"].unique())
    survival = pd.DataFrame(
        {"subject": subjects, "survival_days": np.linspace(100, 1500, 24), "event": [1.0, 0.0] * 12}
    )
    run = TaskRun.from_params("survival", _shared(shots=[1]), SETTINGS["survival"], seed=0)
    rows = pd.DataFrame(run_task(run, _paths(tmp_path, table), survival).rows)
    one = rows[rows["shots"] == 1]
    assert set(one["status"]) == {"skipped"} and one["reason"].str.contains("1 event\\(s\\)").all()
    assert "ok" in set(rows.loc[rows["shots"] == 0, "status"])


# ---- figures


def _rows(encoders, shots, seeds, value, **fields):
    base = dict(task="tumor4", dataset="tumor4", mode="frozen", metric="balanced_accuracy") | fields
    return [
        result_row(
            encoder=e,
            shots=k,
            seed=s,
            value=value(e, k, s),
            ci_low=value(e, k, s) - 0.1,
            ci_high=value(e, k, s) + 0.05,
            n_train=4 * k,
            **base,
        )
        for e in encoders
        for k in shots
        for s in seeds
    ]


def _errorbars(ax):
    return {c.get_label(): c for c in ax.containers if isinstance(c, ErrorbarContainer)}


def test_fewshot_figure_one_line_per_encoder_with_intervals_on_a_log_axis(tmp_path):
    score = {"dino-vit_tiny": 0.7, "moco-vit_tiny": 0.6, "random-vit_tiny": 0.4}
    rows = _rows(score, (2, 5, 10), range(2), lambda e, k, s: score[e] + 0.01 * k + 0.02 * s)
    rows += [
        result_row(**{**r, "shots": 0, "label_fraction": 1.0, "value": 0.9})
        for r in _rows(score, (4,), [0], lambda *_: 0)
    ]
    rows.append(  # a cell resting on one subject is not drawn
        result_row(
            task="tumor4",
            dataset="tumor4",
            encoder="classical",
            shots=2,
            metric="balanced_accuracy",
            value=9.0,
            n_train=1,
        )
    )
    rows.append(
        result_row(
            task="tumor4",
            dataset="tumor4",
            encoder="classical",
            shots=20,
            seed=0,
            metric="balanced_accuracy",
            status="skipped",
            reason="6 training subject(s) of 'glioma' for 20 shots",
        )
    )
    fig = save_fewshot_curves(pd.DataFrame(rows), tmp_path / "fewshot.png")
    assert (tmp_path / "fewshot.png").stat().st_size > 5000
    (ax,) = [a for a in fig.axes if a.axison]
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "balanced_accuracy"
    assert ax.get_xlabel() == "labelled training subjects per class (log)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "5", "10", "20"]
    (legend,) = fig.legends  # one legend for every panel, under them: none covers the data
    assert [t.get_text() for t in legend.get_texts()] == [*sorted(score), "dotted: all training subjects"]
    renderer = FigureCanvasAgg(fig).get_renderer()  # the figure comes back closed
    assert (
        ax.get_legend() is None and legend.get_window_extent(renderer).y1 < ax.get_window_extent(renderer).y0
    )
    drawn = _errorbars(ax)
    assert set(drawn) == set(score)  # classical: its only reported cell rests on one subject
    x, y = drawn["dino-vit_tiny"].lines[0].get_data()
    assert np.allclose(np.sort(x) / np.array([2, 5, 10]), x[0] / 2) and np.allclose(y, [0.73, 0.76, 0.81])
    (bars,) = drawn["dino-vit_tiny"].lines[2]
    segments = bars.get_segments()
    assert np.allclose([s[0][1] for s in segments], np.array([0.73, 0.76, 0.81]) - 0.1)  # mean CI bounds
    assert np.allclose([s[1][1] for s in segments], np.array([0.73, 0.76, 0.81]) + 0.05)
    ceilings = [line for line in ax.get_lines() if line.get_gid() == "all training subjects"]
    assert len(ceilings) == 3 and {line.get_ydata()[0] for line in ceilings} == {0.9}
    low, high = ax.get_ylim()
    assert np.isfinite([low, high, *ax.get_xlim()]).all() and high < 2  # the 9.0 cell is left out
    notes = " ".join(t.get_text() for t in ax.texts)
    assert "skipped (reasons in results.tsv): 20 shots x1" in notes and "< 2 training subjects" in notes


def test_fewshot_figure_says_so_without_shots_and_fraction_curves_leave_shots_out(tmp_path):
    fractions = [
        result_row(
            task="sequence",
            dataset="brats21",
            encoder="moco-vit_tiny",
            label_fraction=f,
            metric="auc",
            value=0.8,
            n_train=8,
        )
        for f in (0.5, 1.0)
    ]
    fig = save_fewshot_curves(pd.DataFrame(fractions), tmp_path / "none.png")
    assert "no few-shot budget" in fig.axes[0].texts[0].get_text()
    shot = _rows(
        ["moco-vit_tiny"], (2,), [0], lambda *_: 0.5, task="sequence", dataset="brats21", metric="auc"
    )
    shot += _rows(
        ["moco-vit_tiny"], (2,), [0], lambda *_: 0.5, task="sequence", dataset="brats21", metric="f1"
    )
    fig = save_fraction_curves(pd.DataFrame(fractions + shot), tmp_path / "curves.png")
    (ax,) = [a for a in fig.axes if a.axison]  # no panel for a metric with few-shot rows only
    (line,) = _errorbars(ax).values()
    assert list(line.lines[0].get_xdata()) == [0.5, 1.0]  # the shot row is not a fraction point
