"""Post-stroke temporal prediction: the lesion-age model and the regression task with its baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd

from brainssl.slices.plan import LABEL_COLUMNS, subject_labels
from brainssl.synth import SubjectParams, generate_subject
from brainssl.synth.stroke import appearance
from brainssl.tasks.frozen import TaskRun, run_task
from brainssl.tasks.registry import TASKS
from brainssl.tasks.units import task_specs

SETTINGS = {"datasets": ["atlas"], "contrasts": ["T1w"], "ridge_alpha": 1.0}
SHARED = {"evaluation": "kfold", "folds": 3, "label_fractions": [1.0], "seeds": 1, "bootstrap": 20}


def test_appearance_model_phases() -> None:
    days = np.array([0.0, 3.0, 14.0, 60.0, 180.0, 365.0])
    swelling, cavitation, atrophy = np.array([appearance(d) for d in days]).T
    assert swelling[0] == 1.0 and np.all(np.diff(swelling) < 0)  # acute swelling fades
    assert cavitation[0] == 0.0 and np.all(np.diff(cavitation) > 0)  # the core liquefies later
    assert atrophy[0] == 0.0 and np.all(np.diff(atrophy) > 0) and atrophy[-1] < cavitation[-1]


def test_lesions_swell_early_and_cavitate_late() -> None:
    def lesion(days: float):
        subject = generate_subject(
            11,
            "r001s001",
            SubjectParams(contrasts=("T1w",), grid_mm=4.0, stroke_days=days, age_range=(60, 60)),
        )
        return subject, subject.lesion.data > 0

    acute, acute_mask = lesion(2.0)
    chronic, chronic_mask = lesion(300.0)
    assert acute.meta.days_since_event == 2.0 and chronic.meta.days_since_event == 300.0
    assert acute_mask.sum() > chronic_mask.sum() > 0  # swollen, then retracted
    assert acute.meta.lesion_volume_ml > chronic.meta.lesion_volume_ml
    fluid = [(s.tissue.data[m] == 1).mean() for s, m in ((acute, acute_mask), (chronic, chronic_mask))]
    assert fluid[0] < 0.05 < fluid[1]  # oedema at day 2, a fluid cavity (CSF class 1) at day 300
    assert (acute.tissue.data[acute_mask] == 7).mean() > 0.9  # the acute lesion is oedema (class 7)


def _pooled(n: int = 24, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    days = np.linspace(1, 365, n)
    rows = []
    for i, day in enumerate(days):
        feats = rng.normal(0, 1, size=5)
        feats[0] += day / 60.0
        rows.append(
            {
                "dataset": "atlas",
                "subject": f"sub-r{i:03d}",
                "session": "ses-1",
                "contrast": "T1w",
                "split": "train",
                "days_since_event": day,
                **{f"f{j:03d}": v for j, v in enumerate(feats)},
            }
        )
    return pd.DataFrame(rows)


def test_regression_reports_mae_with_intervals_for_every_encoder(tmp_path) -> None:
    table = _pooled()
    paths = {}
    for name, noise in (("moco-vit_tiny", 0.0), ("random-vit_tiny", 5.0), ("classical", 5.0)):
        noisy = table.copy()
        noisy["f000"] = noisy["f000"] + np.random.default_rng(1).normal(0, noise, len(noisy))
        paths[name] = tmp_path / f"{name}.parquet"
        noisy.to_parquet(paths[name])
    run = TaskRun.from_params("stroke_time", SHARED, SETTINGS, seed=1)
    outcome = run_task(run, paths)
    rows = pd.DataFrame(outcome.rows)
    mae = rows[(rows["metric"] == "mae") & (rows["status"] == "ok")].set_index("encoder")
    assert set(mae.index) == set(paths) and (mae["n_test"] == 24).all()
    assert (mae["ci_low"] < mae["value"]).all() and (mae["value"] < mae["ci_high"]).all()
    assert mae.loc["moco-vit_tiny", "value"] < mae.loc["random-vit_tiny", "value"]
    assert set(rows["metric"]) == {"mae"}  # brain age's bias-corrected metrics are not reported
    pairs = {(c["encoder"], c["baseline"]) for c in outcome.comparisons}
    assert {("moco-vit_tiny", "random-vit_tiny"), ("moco-vit_tiny", "classical")} <= pairs


def test_registry_entry_and_label_column() -> None:
    assert TASKS["stroke_time"].kind == "frozen" and not TASKS["stroke_time"].scratch
    (spec,) = task_specs("stroke_time", SETTINGS)
    assert (spec.kind, spec.target, spec.dataset) == ("regression", "days_since_event", "atlas")
    assert "days_since_event" in LABEL_COLUMNS
    manifest = pd.DataFrame({"subject": ["sub-a", "sub-a"], "days_since_event": [np.nan, 12.0]})
    assert subject_labels(manifest)["days_since_event"].tolist() == [12.0]
