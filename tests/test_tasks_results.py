"""The shared results table and its statistics (brainssl.tasks.results)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from brainssl.tasks.results import (
    RESULT_COLUMNS,
    bootstrap_ci,
    label_fraction_subjects,
    paired_bootstrap,
    result_row,
    skipped_rows,
    write_results,
)


def test_result_row_fills_defaults_and_rejects_unknown_columns():
    row = result_row(task="tumor4", dataset="tumor4", encoder="moco-vit_tiny", metric="accuracy", value=0.5)
    assert tuple(row) == RESULT_COLUMNS
    assert row["status"] == "ok" and row["reason"] == ""
    assert math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])
    with pytest.raises(ValueError, match="unknown result columns"):
        result_row(task="t", auc=0.9)
    with pytest.raises(ValueError, match="needs a reason"):
        result_row(task="t", status="skipped")
    with pytest.raises(ValueError, match="status"):
        result_row(task="t", status="failed")


def test_skipped_rows_carry_reason_and_nan_value():
    reason = "every subject censored"
    rows = skipped_rows("survival", "brats21", reason, metrics=("c_harrell", "ibs"), value=1.0)
    assert [r["metric"] for r in rows] == ["c_harrell", "ibs"]
    assert all(r["status"] == "skipped" and r["reason"] == "every subject censored" for r in rows)
    assert all(math.isnan(r["value"]) for r in rows)


def test_bootstrap_ci_matches_scipy_percentile_bootstrap():
    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 1.0, size=50)
    low, high = bootstrap_ci(np.mean, x, n_boot=8000, seed=1)
    ref = stats.bootstrap((x,), np.mean, n_resamples=8000, method="percentile", rng=np.random.default_rng(2))
    assert low == pytest.approx(ref.confidence_interval.low, abs=0.015)
    assert high == pytest.approx(ref.confidence_interval.high, abs=0.015)
    # the textbook normal interval of a mean agrees as well
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert low == pytest.approx(x.mean() - half, abs=0.03)
    assert high == pytest.approx(x.mean() + half, abs=0.03)


def test_bootstrap_ci_resamples_rows_jointly_and_skips_undefined_resamples():
    y = np.array([0, 0, 0, 1, 1, 1])
    score = y.astype(float)  # perfect ranking: every defined resample has AUC 1
    low, high = bootstrap_ci(roc_auc_score, y, score, n_boot=300, seed=0)
    assert (low, high) == (1.0, 1.0)
    assert bootstrap_ci(roc_auc_score, np.zeros(4), np.arange(4.0), n_boot=50) == (
        pytest.approx(math.nan, nan_ok=True),
        pytest.approx(math.nan, nan_ok=True),
    )
    with pytest.raises(ValueError, match="equal lengths"):
        bootstrap_ci(roc_auc_score, y, score[:-1])


def test_paired_bootstrap_identical_and_clearly_better_predictions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=120)
    good = y + rng.normal(0, 0.3, size=y.size)
    noise = rng.normal(0, 1, size=y.size)
    same = paired_bootstrap(roc_auc_score, y, good, good, n_boot=200, seed=0)
    assert same["diff"] == 0 and same["ci_low"] == 0 and same["ci_high"] == 0 and same["p_value"] == 1
    better = paired_bootstrap(roc_auc_score, y, good, noise, n_boot=500, seed=0)
    assert better["diff"] == pytest.approx(roc_auc_score(y, good) - roc_auc_score(y, noise))
    assert better["ci_low"] > 0 and better["p_value"] < 0.01


def test_label_fraction_subjects_stratified_minimum_and_deterministic():
    subjects = np.array([f"sub-{i:03d}" for i in range(100)])
    labels = np.array(["glioma"] * 70 + ["none"] * 30)
    chosen = label_fraction_subjects(subjects, labels, 0.1, seed=4)
    lab = dict(zip(subjects, labels, strict=True))
    assert len(chosen) == 10
    assert sorted(lab[s] for s in chosen).count("glioma") == 7
    tiny = label_fraction_subjects(subjects, labels, 0.01, seed=4)
    assert sorted(lab[s] for s in tiny) == ["glioma", "none"]  # one per class, at least two subjects
    assert set(label_fraction_subjects(subjects, labels, 1.0, seed=4)) == set(subjects)
    shuffled = np.random.default_rng(1).permutation(100)
    again = label_fraction_subjects(subjects[shuffled], labels[shuffled], 0.1, seed=4)
    assert np.array_equal(again, chosen)
    assert not np.array_equal(label_fraction_subjects(subjects, labels, 0.1, seed=5), chosen)
    assert len(label_fraction_subjects(subjects, None, 0.01, seed=0)) == 2


def test_label_fraction_subjects_rejects_slices_and_bad_fractions():
    with pytest.raises(ValueError, match="one entry per subject"):
        label_fraction_subjects(["a", "a", "b"], [0, 0, 1], 0.5, seed=0)
    with pytest.raises(ValueError, match="label fraction"):
        label_fraction_subjects(["a", "b"], None, 0.0, seed=0)


def test_write_results_sorted_typed_and_round_trips(tmp_path):
    rows = [
        result_row(task="b", dataset="d", encoder="x", metric="auc", value=0.7, seed=1, label_fraction=1.0),
        result_row(task="a", dataset="d", encoder="y", metric="mae", value=3.0, seed=0, label_fraction=0.1),
        *skipped_rows("a", "d", "one class", metrics=("mae",), encoder="x", label_fraction=0.1, seed=0),
    ]
    frame = write_results(rows, tmp_path / "results.tsv")
    back = pd.read_csv(tmp_path / "results.tsv", sep="\t", keep_default_na=False, na_values=[""])
    assert tuple(back.columns) == RESULT_COLUMNS
    assert list(back["task"]) == ["a", "a", "b"] and list(back["encoder"]) == ["x", "y", "x"]
    assert back.loc[0, "status"] == "skipped" and back.loc[0, "reason"] == "one class"
    assert math.isnan(back.loc[0, "value"]) and back.loc[1, "value"] == 3.0
    assert len(frame) == 3
    empty = write_results([], tmp_path / "empty.tsv")
    assert tuple(empty.columns) == RESULT_COLUMNS and empty.empty


def test_skipped_cells_are_logged_once_per_reason_with_their_encoders_budgets_and_seeds(caplog):
    from brainssl.tasks.results import log_skipped

    reason = "fold 0: 1 event(s) among the training subjects; a survival fit needs 2"
    rows = [
        row
        for encoder in ("moco-vit_tiny", "random-vit_tiny")
        for seed in (0, 1, 2)
        for row in skipped_rows(
            "survival",
            "brats21",
            reason,
            ("c_index", "ibs"),
            log=False,
            encoder=encoder,
            label_fraction=0.01,
            seed=seed,
        )
    ]
    rows += skipped_rows("survival", "brats21", "other", log=False, encoder="classical", shots=2, seed=0)
    with caplog.at_level("WARNING", logger="brainssl.tasks.results"):
        log_skipped(rows)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "task survival on brats21: 6 cell(s) skipped (encoders moco-vit_tiny, random-vit_tiny; "
        f"budgets fraction 0.01; seeds 0, 1, 2): {reason}",
        "task survival on brats21: 1 cell(s) skipped (encoders classical; budgets 2 shots; seeds 0): other",
    ]
