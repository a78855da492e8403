"""Nyúl landmarks are fitted only on sessions that pass QC, chosen per contrast (issue 17, item 3)."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainssl.preprocess import PreprocessSettings, preprocess_shard
from brainssl.preprocess.cohort import fit_cohort_landmarks, fit_landmarks

# small synthetic heads on a 2 mm grid: a QC brain-volume range they pass, and one they do not
FAST = {"spacing_mm": 2.0, "skull_strip": "none", "n4": {"enabled": False}}
SETTINGS = PreprocessSettings.from_dict({**FAST, "qc": {"brain_ml": [50.0, 5000.0]}})
PERMISSIVE = PreprocessSettings.from_dict({**FAST, "qc": {"brain_ml": [0.0, 10000.0]}})
SHAPE = (40, 44, 40)


def _head(seed: int, scale: float, radius: float = 0.8) -> nib.Nifti1Image:
    """A bright sphere (two tissues) in Rician-like noise; ``radius`` 0.3 is a ~7 ml non-brain."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij"))
    r = np.sqrt((grid**2).sum(axis=0))
    data = np.where(r < radius, 100.0 + 60.0 * (r < radius * 0.55) + 30.0 * grid[0], 0.0) * scale
    data += rng.normal(0, 1.0, SHAPE)
    return nib.Nifti1Image(np.abs(data).astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))


def _row(tmp_path: Path, subject: str, contrast: str, img: nib.Nifti1Image | None) -> dict[str, str]:
    path = tmp_path / f"{subject}_{contrast}.nii.gz"
    if img is not None:
        nib.save(img, path)
    return {"dataset": "oasis3", "subject": subject, "session": "", "contrast": contrast, "path": str(path)}


def test_a_qc_failed_scan_that_sorts_first_is_not_a_landmark_subject(tmp_path: Path) -> None:
    bad = _row(tmp_path, "sub-00", "T1w", _head(0, 6.0, radius=0.3))  # readable, not a brain
    good = [_row(tmp_path, f"sub-0{i}", "T1w", _head(i, 1.0 + 0.3 * i)) for i in (1, 2, 3)]
    mixed = pd.DataFrame([bad, *good])

    fit = fit_cohort_landmarks(mixed, SETTINGS, n_subjects=2)

    assert fit.subjects == {"T1w": ["sub-01", "sub-02"]}  # sub-03 replaces nothing: two were enough
    assert [(s["subject"], s["why"]) for s in fit.skipped] == [("sub-00", "qc")]
    assert "brain volume" in fit.skipped[0]["reason"] and fit.short == {}
    # the clean run's landmarks: fitted on the good subjects alone
    clean = fit_landmarks(pd.DataFrame(good), SETTINGS, n_subjects=2)
    assert fit.landmarks == clean
    # ... which the bad scan would have moved, had QC let it in
    assert fit_landmarks(pd.DataFrame([bad, good[0]]), PERMISSIVE) != clean
    # the flag is the shard job's own (same settings, same QC rules)
    table, failures = preprocess_shard(pd.DataFrame([bad]), tmp_path / "out", SETTINGS)
    assert failures.empty and table["qc_flags"].iloc[0] == fit.skipped[0]["reason"]
    record = json.loads(json.dumps(fit.record()))
    assert record["skipped"][0]["subject"] == "sub-00" and record["subjects"]["T1w"] == ["sub-01", "sub-02"]


def test_each_contrast_takes_its_first_usable_subjects(tmp_path: Path) -> None:
    truncated = tmp_path / "sub-00_T1w.nii.gz"
    truncated.write_bytes(b"\x1f\x8b\x08\x00broken")
    rows = [
        {**_row(tmp_path, "sub-00", "T1w", None), "path": str(truncated)},  # the shard job refuses it
        _row(tmp_path, "sub-00", "T2w", _head(10, 1.0)),
        _row(tmp_path, "sub-01", "T1w", _head(1, 1.0)),  # no T2w
        _row(tmp_path, "sub-02", "T1w", _head(2, 1.2)),
        _row(tmp_path, "sub-02", "T2w", _head(12, 0.8)),
        _row(tmp_path, "sub-03", "T1w", _head(3, 1.4)),
        _row(tmp_path, "sub-03", "T2w", _head(13, 0.7)),
        _row(tmp_path, "sub-04", "T1w", None),  # missing: never read, both contrasts are done
        _row(tmp_path, "sub-04", "T2w", None),
    ]
    fit = fit_cohort_landmarks(pd.DataFrame(rows), SETTINGS, n_subjects=2)

    assert fit.subjects == {"T1w": ["sub-01", "sub-02"], "T2w": ["sub-02", "sub-03"]}
    assert fit.sessions["T2w"] == ["sub-02/ses-none", "sub-03/ses-none"]
    assert {m: lm.n_train for m, lm in fit.landmarks.items()} == {"T1w": 2, "T2w": 2}
    assert [(s["subject"], s["why"]) for s in fit.skipped] == [("sub-00", "failed")]
    assert "unreadable file" in fit.skipped[0]["reason"]


def test_too_few_usable_subjects_are_recorded_and_none_is_one_message(tmp_path: Path) -> None:
    heads = [_head(0, 6.0, radius=0.3), _head(1, 1.0), _head(2, 1.3)]
    rows = [_row(tmp_path, f"sub-0{i}", "T1w", head) for i, head in enumerate(heads)]
    fit = fit_cohort_landmarks(pd.DataFrame(rows), SETTINGS, n_subjects=3)
    assert fit.short == {"T1w": 2} and fit.subjects == {"T1w": ["sub-01", "sub-02"]}
    with pytest.raises(ValueError, match=r"no training session is usable .*sub-00 ses-none: brain volume"):
        fit_cohort_landmarks(pd.DataFrame(rows[:1]), SETTINGS, n_subjects=3)
