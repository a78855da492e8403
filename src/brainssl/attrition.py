"""Subjects lost per dataset and stage, and where the failure tables are.

Every stage that drops a subject says why in a table of its own:

* ``manifest``: ``results/datasets/<dataset>/failures.tsv`` (a subject, file or table row left
  out with the reason; when no subject is usable the manifest job fails and the table is kept
  beside its log, ``logs/datasets/<dataset>/failures.tsv``);
* ``preprocess``: ``results/preprocess/<dataset>/failures.tsv`` (sessions that could not be
  preprocessed; a subject is lost when none of its sessions was written);
* ``qc``: ``results/preprocess/<dataset>/qc.tsv`` (every written session with its QC flags; a
  subject is lost when all its sessions were excluded, ``preprocess.exclude_flagged``);
* ``slices``: ``results/slices/<dataset>/stats.parquet`` (every cut slice, kept or not, with the
  reason; a subject is lost when none of its slices was kept).

:func:`count_attrition` reads whatever of these exists (a run that failed half-way has only
some) into a summary (:data:`SUMMARY_COLUMNS`, one row per dataset and stage) and one row per
lost subject or dropped session (:data:`LOSS_COLUMNS`). :func:`attrition_message` is what the
workflow prints at the end of every run, successful or not; rule ``attrition`` writes both
tables for the report. Only pandas is needed (pyarrow for the slice stage), so the Snakefile's
``onsuccess``/``onerror`` handlers can call it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "STAGES",
    "SUMMARY_COLUMNS",
    "LOSS_COLUMNS",
    "Attrition",
    "lost_native_ids",
    "stage_tables",
    "count_attrition",
    "attrition_message",
]

STAGES = ("manifest", "preprocess", "qc", "slices")
SUMMARY_COLUMNS = ("dataset", "stage", "status", "subjects_in", "lost", "kept", "detail", "table")
LOSS_COLUMNS = ("dataset", "stage", "subject", "native_id", "session", "path", "reason", "lost", "table")

# status of a stage row: counted from its tables, or why it could not be
DONE, NOT_APPLICABLE, NOT_REACHED, FAILED, PARTIAL = "done", "n/a", "not reached", "failed", "partial"
UNREADABLE = "unreadable"


@dataclass(frozen=True)
class Attrition:
    """The subjects lost by every dataset at every stage.

    Attributes:
        summary: one row per dataset and stage (:data:`SUMMARY_COLUMNS`); ``subjects_in``,
            ``lost`` and ``kept`` are ``None`` where the stage was not counted (``status``
            says why).
        losses: one row per lost subject, dropped session or unused file (:data:`LOSS_COLUMNS`);
            ``lost`` is false for a row that did not cost its subject (a duplicate file, a
            flagged session kept, another session of the subject written).
    """

    summary: pd.DataFrame
    losses: pd.DataFrame


def lost_native_ids(failure_ids: Iterable[str], kept_ids: Iterable[str]) -> set[str]:
    """The subjects a manifest's failures cost: named by a failure row and absent from the manifest.

    A failure row of a kept subject (a duplicate file, an unused run) or one that names no
    subject (a stray table row, empty native id) costs none. ``brainssl check`` counts with
    this too, so that it says what the workflow's attrition table will.

    Args:
        failure_ids: the ``native_id`` column of the failures table.
        kept_ids: the ``native_id`` column of the manifest.
    """
    return {str(i) for i in failure_ids} - {str(i) for i in kept_ids} - {""}


def stage_tables(dataset: str, preprocessed: bool = True) -> dict[str, str]:
    """Where a dataset's stage tables are (relative to the working directory)."""
    ds, pre = f"results/datasets/{dataset}", f"results/preprocess/{dataset}"
    return {
        "manifest": f"{ds}/manifest.tsv",
        "manifest_failures": f"{ds}/failures.tsv",
        "manifest_failures_kept": f"logs/datasets/{dataset}/failures.tsv",
        "manifest_log": f"logs/datasets/{dataset}/manifest.log",
        "preprocess_failures": f"{pre}/failures.tsv",
        "preprocess_shards": f"{pre}/shards",
        "qc": f"{pre}/qc.tsv",
        "slices_input": f"{pre}/table.tsv" if preprocessed else f"{ds}/manifest.tsv",
        "slices_stats": f"results/slices/{dataset}/stats.parquet",
    }


class _Unreadable(Exception):
    """A stage table that exists but cannot be read."""

    def __init__(self, path: Path, err: Exception) -> None:
        first = str(err).splitlines()[0] if str(err) else ""
        super().__init__(f"{type(err).__name__}: {first}")
        self.path = path


def _read(path: Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path, columns=list(columns) if columns else None)
        return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except Exception as err:  # a half-written or damaged table: say which, count the rest
        raise _Unreadable(path, err) from err


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name].astype(str) if name in frame.columns else pd.Series([""] * len(frame), dtype=str)


def _stage(
    dataset: str, stage: str, status: str, counts: tuple[int, int] | None, detail: str, table: str
) -> dict[str, Any]:
    """A summary row; ``counts`` is ``(subjects_in, kept)``."""
    subjects_in, kept = counts if counts is not None else (None, None)
    lost = None if counts is None else subjects_in - kept
    return dict(
        zip(SUMMARY_COLUMNS, (dataset, stage, status, subjects_in, lost, kept, detail, table), strict=True)
    )


def _losses(
    dataset: str, stage: str, frame: pd.DataFrame, lost: pd.Series, reason: pd.Series, table: str
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "dataset": dataset,
            "stage": stage,
            "subject": _column(frame, "subject").to_numpy(),
            "native_id": _column(frame, "native_id").to_numpy(),
            "session": _column(frame, "session").to_numpy(),
            "path": _column(frame, "path").to_numpy(),
            "reason": reason.astype(str).to_numpy(),
            "lost": lost.astype(bool).to_numpy(),
            "table": table,
        },
        columns=list(LOSS_COLUMNS),
    )


class _Dataset:
    """Counts one dataset's stages in order; a stage not reached stops the ones after it."""

    def __init__(self, root: Path, dataset: str, preprocessed: bool, sliced: bool) -> None:
        self.root, self.dataset = root, dataset
        self.preprocessed, self.sliced = preprocessed, sliced
        self.paths = stage_tables(dataset, preprocessed)
        self.summary: list[dict[str, Any]] = []
        self.losses: list[pd.DataFrame] = []

    def path(self, key: str) -> Path:
        return self.root / self.paths[key]

    def count(self) -> None:
        steps: list[tuple[str, bool, Callable[[], bool]]] = [
            ("manifest", True, self.manifest),
            ("preprocess", self.preprocessed, self.preprocess),
            ("qc", self.preprocessed, self.qc),
            ("slices", self.sliced, self.slices),
        ]
        reached = True
        for stage, applies, step in steps:
            if not applies:
                self.summary.append(_stage(self.dataset, stage, NOT_APPLICABLE, None, "", ""))
            elif not reached:
                self.summary.append(_stage(self.dataset, stage, NOT_REACHED, None, "", ""))
            else:
                try:
                    reached = step()
                except _Unreadable as err:  # one damaged table must not hide the other counts
                    table = os.path.relpath(err.path, self.root)
                    self.summary.append(_stage(self.dataset, stage, UNREADABLE, None, str(err), table))
                    reached = False

    def manifest(self) -> bool:
        manifest, failures = self.path("manifest"), self.path("manifest_failures")
        kept_table = self.path("manifest_failures_kept")
        if manifest.is_file() and failures.is_file():
            frame, table, rows = _read(failures), self.paths["manifest_failures"], _read(manifest)
            kept_ids, kept = set(_column(rows, "native_id")) - {""}, int(_column(rows, "subject").nunique())
        elif kept_table.is_file():
            frame, table, kept_ids, kept = _read(kept_table), self.paths["manifest_failures_kept"], set(), 0
        else:
            failed = self.path("manifest_log").is_file()  # the job ran and wrote neither table
            status, log = (FAILED, self.paths["manifest_log"]) if failed else (NOT_REACHED, "")
            detail = "the manifest job failed; its log says why" if failed else ""
            self.summary.append(_stage(self.dataset, "manifest", status, None, detail, log))
            return False
        ids = _column(frame, "native_id")
        lost_ids = lost_native_ids(ids, kept_ids)
        lost = ids.isin(lost_ids)
        self.losses.append(_losses(self.dataset, "manifest", frame, lost, _column(frame, "reason"), table))
        others = int((~lost).sum())
        detail = "no usable subjects" if not kept else ""
        if others:
            detail = "; ".join(filter(None, [detail, f"{others} file(s) or row(s) not used"]))
        status = DONE if kept else FAILED
        self.summary.append(
            _stage(self.dataset, "manifest", status, (kept + len(lost_ids), kept), detail, table)
        )
        return bool(kept)

    def preprocess(self) -> bool:
        failures, qc = self.path("preprocess_failures"), self.path("qc")
        if failures.is_file() and qc.is_file():
            fail, written, table, status = _read(failures), _read(qc), self.paths["preprocess_failures"], DONE
        else:
            shards = self.path("preprocess_shards")
            fail_files = sorted(shards.glob("shard-*.failures.tsv")) if shards.is_dir() else []
            done = [p for p in sorted(shards.glob("shard-*.tsv")) if not p.name.endswith(".failures.tsv")]
            if not fail_files:
                self.summary.append(_stage(self.dataset, "preprocess", NOT_REACHED, None, "", ""))
                return False
            fail = pd.concat([_read(p) for p in fail_files], ignore_index=True)
            written = pd.concat([_read(p) for p in done], ignore_index=True) if done else pd.DataFrame()
            table, status = f"{self.paths['preprocess_shards']}/shard-*.failures.tsv", PARTIAL
        written_subjects = set(_column(written, "subject"))
        failed = set(_column(fail, "subject")) - written_subjects
        lost = _column(fail, "subject").isin(failed)
        self.losses.append(_losses(self.dataset, "preprocess", fail, lost, _column(fail, "reason"), table))
        n_in = len(written_subjects | failed)
        detail = f"{len(fail)} session(s) failed" if len(fail) else ""
        if status == PARTIAL:
            detail = "; ".join(filter(None, [f"{len(fail_files)} shard(s) finished, not merged", detail]))
        self.summary.append(
            _stage(self.dataset, "preprocess", status, (n_in, len(written_subjects)), detail, table)
        )
        return status == DONE and bool(written_subjects)

    def qc(self) -> bool:
        table = self.paths["qc"]
        qc = _read(self.path("qc"))
        excluded = _column(qc, "excluded").str.lower() == "true"
        flagged = _column(qc, "flagged").str.lower() == "true"
        subjects = _column(qc, "subject")
        kept = set(subjects[~excluded])
        lost = ~subjects.isin(kept)
        sessions = qc[flagged].assign(path=_column(qc, "qc_png")[flagged].to_numpy())
        self.losses.append(
            _losses(self.dataset, "qc", sessions, lost[flagged], _column(qc, "qc_flags")[flagged], table)
        )
        parts = [f"{int(flagged.sum())} session(s) flagged", f"{int(excluded.sum())} excluded"]
        detail = ", ".join(parts) if flagged.any() else ""
        self.summary.append(_stage(self.dataset, "qc", DONE, (len(set(subjects)), len(kept)), detail, table))
        return bool(kept)

    def slices(self) -> bool:
        source, stats_path = self.path("slices_input"), self.path("slices_stats")
        if not (source.is_file() and stats_path.is_file()):
            self.summary.append(_stage(self.dataset, "slices", NOT_REACHED, None, "", ""))
            return False
        table = self.paths["slices_stats"]
        subjects = set(_column(_read(source), "subject")) - {""}
        stats = _read(stats_path, ["subject", "kept", "reason"])
        kept = set(stats.loc[stats["kept"].astype(bool), "subject"].astype(str))
        lost = sorted(subjects - kept)
        dropped = stats[stats["subject"].astype(str).isin(lost)]
        reasons = dropped.groupby("subject")["reason"].agg(
            lambda r: ", ".join(f"{k} {v}" for k, v in r.value_counts().items())
        )
        frame = pd.DataFrame({"subject": lost})
        why = pd.Series(
            [f"no slice kept (dropped: {reasons.get(s, 'no slice cut')})" for s in lost], dtype=str
        )
        self.losses.append(_losses(self.dataset, "slices", frame, pd.Series([True] * len(lost)), why, table))
        self.summary.append(
            _stage(self.dataset, "slices", DONE, (len(subjects), len(subjects & kept)), "", table)
        )
        return bool(kept)


def count_attrition(
    datasets: Sequence[str],
    preprocessed: Sequence[str] = (),
    sliced: Sequence[str] = (),
    root: str | os.PathLike[str] = ".",
) -> Attrition:
    """Count the subjects every dataset lost at every stage from the stage tables on disk.

    Args:
        datasets: the enabled datasets, in the order to report them.
        preprocessed: those that are preprocessed (3D volumes).
        sliced: those in the slice store.
        root: the working directory the ``results/`` and ``logs/`` paths are relative to.

    Returns:
        The :class:`Attrition`.
    """
    summary: list[dict[str, Any]] = []
    losses: list[pd.DataFrame] = []
    for dataset in datasets:
        counter = _Dataset(Path(root), dataset, dataset in preprocessed, dataset in sliced)
        counter.count()
        summary += counter.summary
        losses += [frame for frame in counter.losses if len(frame)]
    loss_table = pd.concat(losses, ignore_index=True) if losses else pd.DataFrame(columns=list(LOSS_COLUMNS))
    frame = pd.DataFrame(summary, columns=list(SUMMARY_COLUMNS))
    for column in ("subjects_in", "lost", "kept"):
        frame[column] = frame[column].astype("Int64")
    return Attrition(summary=frame, losses=loss_table)


def _cell(row: pd.Series) -> str:
    if row["status"] in (DONE, PARTIAL) or (row["status"] == FAILED and not pd.isna(row["lost"])):
        text = f"{row['lost']} of {row['subjects_in']}"
        return text + (" (partial)" if row["status"] == PARTIAL else "")
    return {NOT_APPLICABLE: "-", NOT_REACHED: "not reached", FAILED: "failed"}.get(
        row["status"], row["status"]
    )


def attrition_message(
    datasets: Sequence[str],
    preprocessed: Sequence[str] = (),
    sliced: Sequence[str] = (),
    root: str | os.PathLike[str] = ".",
) -> str:
    """What the workflow prints at the end of a run: subjects lost per dataset and stage.

    One line per dataset (``lost of in`` per stage, and the subjects kept at the last stage
    reached), then the failure tables that hold rows. Never raises: a table that cannot be
    read makes the message say so (the end of a failed run must still show its own error).
    """
    try:
        return _message(count_attrition(datasets, preprocessed, sliced, root).summary)
    except Exception as err:  # a summary must never hide the run's own outcome
        return f"brainssl: could not count the subjects lost ({type(err).__name__}: {err})"


def _message(summary: pd.DataFrame) -> str:
    if summary.empty:
        return "brainssl: no dataset enabled, no subject lost."
    width = max(len(str(d)) for d in summary["dataset"])
    header = f"  {'dataset':<{width}}  " + "  ".join(f"{s:<16}" for s in STAGES) + "  kept"
    lines = ["brainssl: subjects lost per dataset and stage (lost of subjects in):", header]
    for dataset, rows in summary.groupby("dataset", sort=False):
        cells = "  ".join(f"{_cell(row):<16}" for _, row in rows.iterrows())
        counted = rows.dropna(subset=["kept"])
        kept = str(counted["kept"].iloc[-1]) if len(counted) else "-"
        lines.append(f"  {dataset:<{width}}  {cells}  {kept}")
    lines.append("Failure tables (file, row or session and reason):")
    tables = summary[(summary["table"] != "") & ((summary["lost"].fillna(0) > 0) | (summary["detail"] != ""))]
    for row in tables.itertuples(index=False):
        what = [f"{row.lost} subject(s) lost"] if not pd.isna(row.lost) else []
        what += [row.detail] if row.detail else []
        lines.append(f"  {row.dataset} {row.stage}: {row.table} ({'; '.join(what)})")
    if tables.empty:
        lines.append("  none has a row: no subject, session or file was dropped.")
    lines.append(
        "  (all of them: results/datasets/<dataset>/failures.tsv, results/preprocess/<dataset>/"
        "{failures,qc}.tsv, results/slices/<dataset>/stats.parquet; in one table: results/attrition.tsv"
        " and results/attrition_losses.tsv after rule attrition)"
    )
    return "\n".join(lines)
