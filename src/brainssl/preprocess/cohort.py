"""Dataset-level steps around the shard jobs: Nyúl landmarks, merged tables, cohort QC.

* :func:`fit_cohort_landmarks` fits Nyúl landmarks on the training subjects' preprocessed
  (bias-corrected, stripped, clipped) intensities; the workflow gives it the rows of
  training subjects only (:func:`brainssl.preprocess.shards.training_rows`), so an
  evaluation subject can never move them. Only sessions that the shard job would write
  without a QC flag are used (same reading, same settings, same QC rules), and per contrast
  the first ``n_subjects`` usable subjects in subject order; what was skipped, and why, is
  logged and returned (:class:`LandmarkFit`). It is the only thing fitted on a cohort here:
  z-score and WhiteStripe normalise each volume on its own.
* :func:`merge_shards` joins the shard tables into the dataset's ``table.tsv``,
  ``failures.tsv`` and the cohort QC table ``qc.tsv`` (one row per session, flags and
  whether the session was excluded).
* :func:`plot_qc_summary` draws the cohort QC distributions.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainssl.io import atomic_path, write_json
from brainssl.splits import subject_split

from .inputs import _session_inputs, _text
from .intensity import NyulLandmarks, fit_nyul
from .session import PreprocessError, PreprocessResult, preprocess_session
from .settings import PreprocessSettings
from .shard_job import FAILURE_COLUMNS, NO_SESSION, TABLE_COLUMNS

__all__ = [
    "QC_COLUMNS",
    "LandmarkFit",
    "fit_cohort_landmarks",
    "fit_landmarks",
    "save_landmarks",
    "load_landmarks",
    "merge_shards",
    "plot_qc_summary",
    "read_shard_table",
]

logger = logging.getLogger(__name__)

QC_COLUMNS = (
    "dataset",
    "subject",
    "native_id",
    "session",
    "split",
    "contrasts",
    "brain_ml",
    "snr",
    "bias_std",
    "dice",
    "seconds_total",
    "qc_flags",
    "flagged",
    "excluded",
    "qc_png",
)


@dataclasses.dataclass(frozen=True)
class LandmarkFit:
    """Nyúl landmarks and the sessions they were (and were not) fitted on.

    Attributes:
        landmarks: ``{contrast: NyulLandmarks}``, sorted by contrast.
        subjects: ``{contrast: [subject, ...]}`` the landmarks of each contrast were fitted
            on, in subject order.
        sessions: ``{contrast: ["subject/session", ...]}`` the volumes came from.
        skipped: one record per session left out: ``subject``, ``session``, ``why``
            (``failed``: the shard job would refuse it; ``qc``: it breaks a QC rule) and
            ``reason``.
        short: ``{contrast: usable subjects}`` for contrasts with fewer than asked for.
        n_subjects: usable subjects asked for per contrast (``None``: all given).
    """

    landmarks: dict[str, NyulLandmarks]
    subjects: dict[str, list[str]]
    sessions: dict[str, list[str]]
    skipped: list[dict[str, str]]
    short: dict[str, int]
    n_subjects: int | None

    def record(self) -> dict[str, Any]:
        """What the landmarks' provenance records (JSON-able)."""
        return {
            "contrasts": sorted(self.landmarks),
            "n_train": {m: lm.n_train for m, lm in self.landmarks.items()},
            "fit_subjects_per_contrast": self.n_subjects,
            "subjects": self.subjects,
            "sessions": self.sessions,
            "skipped": self.skipped,
            "short": self.short,
        }


def fit_cohort_landmarks(
    rows: pd.DataFrame, settings: PreprocessSettings, n_subjects: int | None = None
) -> LandmarkFit:
    """Fit Nyúl landmarks per contrast on the first usable training subjects.

    Sessions are read and preprocessed as the shard job does (:func:`_session_inputs`, then
    :func:`preprocess_session` with the same settings, truth mask and labels) but with
    normalisation ``none`` (clipping kept), so the landmarks see the intensities
    :func:`apply_nyul` will. A session is usable when that succeeds and gives no QC flag
    (``settings.qc``, computed before normalisation, so exactly the shard job's flags);
    the others are skipped and logged with the reason. Subjects are taken in the order of
    ``rows``; a contrast takes every usable session of its first ``n_subjects`` subjects
    that have one with it, so a subject that is unusable, or lacks the contrast, makes room
    for the next. Sessions no contrast still needs are not read.

    Args:
        rows: manifest rows of training subjects only, in subject order (candidates: give
            more subjects than ``n_subjects`` so that skipped ones can be replaced).
        settings: the stage settings of the dataset.
        n_subjects: usable subjects per contrast; ``None`` uses every usable session.

    Returns:
        The :class:`LandmarkFit`.

    Raises:
        ValueError: if no session is usable (naming why the first ones were skipped).
    """
    fit_settings = dataclasses.replace(
        settings, normalisation=dataclasses.replace(settings.normalisation, method="none")
    )
    wanted = n_subjects if n_subjects is not None else len(rows) + 1
    frame = rows.assign(session=rows["session"].map(_text))
    contrasts = sorted(set(frame["contrast"].map(str)))
    samples: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    subjects: dict[str, list[str]] = {m: [] for m in contrasts}
    sessions: dict[str, list[str]] = {m: [] for m in contrasts}
    skipped: list[dict[str, str]] = []
    for subject, visits in frame.groupby("subject", sort=False):
        needed = {m for m in contrasts if len(subjects[m]) < wanted}
        if not needed:
            break
        taken: set[str] = set()
        for session, group in visits.groupby("session", sort=False):
            use = needed & set(group["contrast"].map(str))
            if not use:
                continue
            name = str(session) or NO_SESSION
            result, why, reason = _usable_session(group, fit_settings)
            if result is None:
                logger.warning("landmarks: skipping %s %s (%s): %s", subject, name, why, reason)
                skipped.append({"subject": str(subject), "session": name, "why": why, "reason": reason})
                continue
            mask = np.asarray(result.mask.dataobj) > 0
            for contrast in sorted(use & set(result.volumes)):
                samples.setdefault(contrast, []).append((np.asarray(result.volumes[contrast].dataobj), mask))
                sessions[contrast].append(f"{subject}/{name}")
                taken.add(contrast)
        for contrast in sorted(taken):
            subjects[contrast].append(str(subject))
    if not samples:
        first = "; ".join(f"{s['subject']} {s['session']}: {s['reason']}" for s in skipped[:3])
        raise ValueError(
            f"no training session is usable to fit Nyúl landmarks ({len(skipped)} skipped"
            + (f", first: {first})" if first else ")")
        )
    short = {
        m: len(subjects[m]) for m in contrasts if n_subjects is not None and len(subjects[m]) < n_subjects
    }
    for contrast, count in short.items():
        logger.warning(
            "landmarks: %s fitted on %d usable training subject(s), not %d%s",
            contrast,
            count,
            n_subjects,
            "" if count else f"; sessions with {contrast} will fail normalisation",
        )
    for contrast in sorted(samples):
        logger.info("landmarks: %s fitted on %s", contrast, ", ".join(sessions[contrast]))
    return LandmarkFit(
        landmarks={m: fit_nyul(pairs, contrast=m) for m, pairs in sorted(samples.items())},
        subjects={m: s for m, s in subjects.items() if s},
        sessions={m: s for m, s in sessions.items() if s},
        skipped=skipped,
        short=short,
        n_subjects=n_subjects,
    )


def _usable_session(
    group: pd.DataFrame, settings: PreprocessSettings
) -> tuple[PreprocessResult | None, str, str]:
    """Preprocess one session as the shard job does; say whether it is usable.

    Returns ``(result, "", "")`` when it is, else ``(None, why, reason)`` with ``why``
    ``failed`` (and the shard job's failure reason) or ``qc`` (and its flags).
    """
    try:
        images, truth, labels = _session_inputs(group)
        result = preprocess_session(images, settings, truth, labels)
    except Exception as err:  # the shard job records this session as a failure
        return (
            None,
            "failed",
            str(err) if isinstance(err, PreprocessError) else f"{type(err).__name__}: {err}",
        )
    flags = list(result.qc["flags"])
    return (None, "qc", "; ".join(flags)) if flags else (result, "", "")


def fit_landmarks(
    rows: pd.DataFrame, settings: PreprocessSettings, n_subjects: int | None = None
) -> dict[str, NyulLandmarks]:
    """The landmarks of :func:`fit_cohort_landmarks` alone: ``{contrast: NyulLandmarks}``."""
    return fit_cohort_landmarks(rows, settings, n_subjects).landmarks


def save_landmarks(path: str | os.PathLike[str], landmarks: Mapping[str, NyulLandmarks]) -> None:
    """Write ``{contrast: landmarks}`` as one JSON file (atomically)."""
    write_json(path, {contrast: marks.to_dict() for contrast, marks in landmarks.items()})


def load_landmarks(path: str | os.PathLike[str]) -> dict[str, NyulLandmarks]:
    """Read a file written by :func:`save_landmarks`."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {contrast: NyulLandmarks.from_dict(marks) for contrast, marks in data.items()}


def merge_shards(
    tables: Sequence[pd.DataFrame],
    failures: Sequence[pd.DataFrame],
    manifest: pd.DataFrame,
    *,
    exclude_flagged: bool,
    seed: int,
    fractions: Mapping[str, float],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Merge the shard outputs of one dataset into its stage tables.

    Args:
        tables: shard tables (:data:`TABLE_COLUMNS`).
        failures: shard failure tables (:data:`FAILURE_COLUMNS`).
        manifest: the dataset's manifest (for each subject's ``split_group``).
        exclude_flagged: drop the volumes of sessions with QC flags from the table.
        seed: master seed of the subject split.
        fractions: split fractions.

    Returns:
        ``(table, failures, qc)``: the volumes kept downstream (with a ``split`` column),
        all failures, and one QC row per written session (:data:`QC_COLUMNS`) saying why it
        was flagged and whether it was excluded.
    """
    frames = [t for t in tables if len(t)]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(TABLE_COLUMNS))
    table["qc_flags"] = table["qc_flags"].map(_text)
    fixed = manifest.groupby("subject")["split_group"].first() if "split_group" in manifest else pd.Series()
    native = manifest.groupby("subject")["native_id"].first() if "native_id" in manifest else pd.Series()
    table["split"] = [
        subject_split(str(s), seed, fractions, _text(fixed.get(s, ""))) for s in table["subject"]
    ]
    table = table.sort_values(["subject", "session", "contrast"], kind="stable").reset_index(drop=True)
    qc_rows: list[dict[str, Any]] = []
    for (dataset, subject, session), group in table.groupby(["dataset", "subject", "session"], sort=True):
        first = group.iloc[0]
        flags = first["qc_flags"]
        qc_rows.append(
            {
                "dataset": dataset,
                "subject": subject,
                "native_id": _text(native.get(subject, "")),  # to find the session's subject
                "session": session,
                "split": first["split"],
                "contrasts": ",".join(group["contrast"].map(str)),
                "brain_ml": first["brain_ml"],
                "snr": first["snr"],
                "bias_std": pd.to_numeric(group["bias_std"], errors="coerce").max(),
                "dice": first["dice"],
                "seconds_total": first["seconds_total"],
                "qc_flags": flags,
                "flagged": bool(flags),
                "excluded": bool(flags) and exclude_flagged,
                "qc_png": first["qc_png"],
            }
        )
    qc = pd.DataFrame(qc_rows, columns=list(QC_COLUMNS))
    if exclude_flagged:
        table = table[table["qc_flags"] == ""].reset_index(drop=True)
    fail_frames = [f for f in failures if len(f)]
    merged_failures = pd.DataFrame(columns=list(FAILURE_COLUMNS))
    if fail_frames:
        merged_failures = pd.concat(fail_frames, ignore_index=True)
    return table, merged_failures, qc


def plot_qc_summary(qc: pd.DataFrame, path: str | os.PathLike[str], title: str = "") -> None:
    """Save the cohort QC figure: brain volume, SNR, bias, Dice and flagged sessions.

    Args:
        qc: the cohort QC table (:data:`QC_COLUMNS`).
        path: destination ``.png`` (written atomically).
        title: figure title (the dataset).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 6.5), dpi=100)
    FigureCanvasAgg(figure)
    panels = [
        ("brain_ml", "brain volume (ml)"),
        ("snr", "SNR estimate"),
        ("bias_std", "bias field std (log)"),
        ("dice", "mask Dice vs truth"),
        ("seconds_total", "seconds per session"),
    ]
    flagged = qc["flagged"].astype(bool) if len(qc) else pd.Series(dtype=bool)
    for index, (column, label) in enumerate(panels):
        axes = figure.add_subplot(2, 3, index + 1)
        values = pd.to_numeric(qc[column], errors="coerce") if column in qc else pd.Series(dtype=float)
        ok, bad = values[~flagged].dropna(), values[flagged].dropna()
        if len(ok) + len(bad):
            bins = np.histogram_bin_edges(pd.concat([ok, bad]).to_numpy(), bins=15)
            axes.hist([ok.to_numpy(), bad.to_numpy()], bins=bins, stacked=True, color=["tab:blue", "tab:red"])
            axes.set_title(f"{label}  (median {pd.concat([ok, bad]).median():.3g})", fontsize=9)
        else:
            axes.text(0.5, 0.5, "not available", ha="center", va="center", transform=axes.transAxes)
            axes.set_title(label, fontsize=9)
        axes.tick_params(labelsize=8)
    axes = figure.add_subplot(2, 3, 6)
    words = [r.split(" ")[:2] for flags in qc.get("qc_flags", []) for r in _reasons(flags)]
    reasons = pd.Series([" ".join(w) for w in words], dtype=str)
    counts = reasons.value_counts()
    if len(counts):
        axes.barh(counts.index.tolist(), counts.to_numpy(), color="tab:red")
        axes.tick_params(labelsize=8)
    else:
        axes.text(0.5, 0.5, "no session flagged", ha="center", va="center", transform=axes.transAxes)
    axes.set_title(f"flagged sessions: {int(flagged.sum())} of {len(qc)}", fontsize=9)
    figure.suptitle(f"{title} preprocessing QC (blue: passed, red: flagged)", fontsize=10)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def _reasons(flags: Any) -> list[str]:
    text = _text(flags)
    return [r.strip() for r in text.split(";") if len(r.strip().split(" ")) >= 2]


def read_shard_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a stage table written by :func:`brainssl.io.write_table` (strings stay strings)."""
    frame = pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""], dtype={"session": str})
    for column in ("qc_flags", "session", "seg_path", "native_id", "split"):
        if column in frame.columns:
            frame[column] = frame[column].map(_text)
    return frame
