"""Which manifest rows each preprocessing job gets: subjects in fixed-size shards.

The workflow runs one job per shard of ``shard_size`` subjects, so 10,000 subjects at 32
make 313 jobs. Subjects are ordered by their native id (then pseudonymous id) and cut
into consecutive blocks. Native ids of real and demo datasets grow as subjects are added
(``IXI002…``, ``OAS30001``, ``hippocampus_025``), so appending a subject changes only
the last shard and Snakemake re-runs only that job. (The pseudonymous ids are hashes:
ordering by them would drop a new subject into a random shard and shift every shard
after it.)

A shard job's rerun triggers are the files of its own subjects (:func:`shard_files`)
and its rows (:func:`shard_records`, passed as ``params``), never the dataset manifest
as a whole.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from brainssl.splits import subject_split

__all__ = [
    "PREPROCESS_DATASETS",
    "VOLUME_FORMATS",
    "ROW_COLUMNS",
    "volume_rows",
    "subject_order",
    "shard_count",
    "assign_shards",
    "shard_rows",
    "SubjectShards",
    "shard_records",
    "shard_files",
    "training_rows",
]

PREPROCESS_DATASETS = ("ixi", "brats21", "fastmri_brain", "oasis3", "hippocampus")
"""Datasets the stage runs on; ``tumor4`` (2D JPEG) has no volumes and skips it."""
VOLUME_FORMATS = ("nifti", "fastmri_h5")
ROW_COLUMNS = (
    "dataset",
    "subject",
    "native_id",
    "session",
    "contrast",
    "path",
    "format",
    "seg_path",
    "truth_brain_mask",
    "split_group",
)
"""The manifest columns a shard job reads (and whose change re-runs it)."""
_FILE_COLUMNS = ("path", "seg_path", "truth_brain_mask")


def volume_rows(manifest: pd.DataFrame) -> pd.DataFrame:
    """Return the manifest rows the stage preprocesses (3D formats only), in manifest order."""
    if "format" not in manifest.columns:
        raise KeyError("manifest lacks the 'format' column")
    return manifest[manifest["format"].isin(VOLUME_FORMATS)]


def subject_order(rows: pd.DataFrame) -> list[str]:
    """Return the distinct subjects sorted by ``(native_id, subject)``.

    Raises:
        KeyError: if ``subject`` or ``native_id`` is missing.
    """
    missing = [c for c in ("subject", "native_id") if c not in rows.columns]
    if missing:
        raise KeyError(f"manifest rows lack column(s) {missing}")
    pairs = rows[["native_id", "subject"]].astype(str).drop_duplicates()
    return [subject for _, subject in sorted(pairs.itertuples(index=False, name=None))]


def shard_count(rows: pd.DataFrame, shard_size: int) -> int:
    """Number of shards (0 when the rows hold no subject)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return -(-len(subject_order(rows)) // shard_size)


def assign_shards(rows: pd.DataFrame, shard_size: int) -> dict[str, int]:
    """Map every subject to its shard index.

    Args:
        rows: manifest rows (columns ``subject``, ``native_id``).
        shard_size: subjects per shard (>= 1).

    Returns:
        ``{subject: shard}``; shard ``k`` holds the subjects at positions
        ``[k * shard_size, (k + 1) * shard_size)`` of :func:`subject_order`.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return {subject: index // shard_size for index, subject in enumerate(subject_order(rows))}


def shard_rows(rows: pd.DataFrame, shard_size: int, shard: int) -> pd.DataFrame:
    """Return the rows of one shard's subjects, sorted by subject order, session and contrast.

    Raises:
        ValueError: if ``shard`` is out of range.
    """
    return SubjectShards(rows, shard_size).rows(shard)


class SubjectShards:
    """A dataset's rows cut into all of its shards at once, for many per-shard look-ups.

    Each shard job asks for its rows several times while the DAG is built (inputs, params).
    Ordering the whole manifest for every question made a dry-run quadratic in the number of
    subjects (minutes at 100,000); cutting once makes each look-up a slice.

    Args:
        rows: manifest rows (columns ``subject``, ``native_id``, ``session``, ``contrast``).
        shard_size: subjects per shard (>= 1).

    Raises:
        ValueError: if ``shard_size`` < 1.
    """

    def __init__(self, rows: pd.DataFrame, shard_size: int) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        order = subject_order(rows)
        rank = {subject: i for i, subject in enumerate(order)}
        picked = rows[rows["subject"].isin(rank)]
        # one stable sort of all rows orders every shard's rows as sorting that shard alone would
        ranked = picked.assign(_rank=picked["subject"].map(rank)).sort_values(
            ["_rank", "session", "contrast"], kind="stable"
        )
        self.shard_size = shard_size
        self._count = -(-len(order) // shard_size)
        bounds = np.arange(self._count + 1) * shard_size
        self._starts = np.searchsorted(ranked["_rank"].to_numpy(), bounds)
        self._rows = ranked.drop(columns="_rank")

    def __len__(self) -> int:
        """Number of shards (0 when the rows hold no subject)."""
        return self._count

    def rows(self, shard: int) -> pd.DataFrame:
        """Return shard ``shard``'s rows, sorted by subject order, session and contrast.

        Raises:
            ValueError: if ``shard`` is out of range.
        """
        if not 0 <= shard < self._count:
            raise ValueError(
                f"shard {shard} out of range: {self._count} shard(s) of {self.shard_size} subjects"
            )
        start, stop = self._starts[shard], self._starts[shard + 1]
        return self._rows.iloc[start:stop].reset_index(drop=True)


def shard_records(rows: pd.DataFrame) -> list[dict[str, str]]:
    """Return rows as plain records of :data:`ROW_COLUMNS` (strings; empty for missing)."""
    # column-wise, not through row dicts: thousands of shard jobs ask for their rows while the DAG is built
    empty = [""] * len(rows)
    columns = [[_text(v) for v in _values(rows[c])] if c in rows.columns else empty for c in ROW_COLUMNS]
    return [dict(zip(ROW_COLUMNS, row, strict=True)) for row in zip(*columns, strict=True)]


def _values(column: pd.Series) -> list[Any]:
    """Python values of a column, missing values of text extension dtypes as ``None``."""
    if isinstance(column.dtype, np.dtype):
        return column.tolist()
    return column.to_numpy(dtype=object, na_value=None).tolist()


def shard_files(rows: pd.DataFrame) -> list[str]:
    """Return the distinct files the rows read (images, label maps, truth masks), sorted."""
    files = set()
    for column in _FILE_COLUMNS:
        if column in rows.columns:
            files.update(_text(v) for v in rows[column])
    files.discard("")
    return sorted(files)


def training_rows(
    rows: pd.DataFrame, seed: int, fractions: dict[str, float], max_subjects: int | None = None
) -> pd.DataFrame:
    """Return the rows of training subjects only (:func:`brainssl.splits.subject_split`).

    Args:
        rows: manifest rows (``subject``, ``native_id``, optional ``split_group``).
        seed: master seed.
        fractions: split fractions.
        max_subjects: keep at most this many training subjects, the first in subject order
            (so subjects appended later do not move what was fitted).

    Returns:
        The training subjects' rows, in subject order.
    """
    fixed = rows.groupby("subject")["split_group"].first() if "split_group" in rows.columns else {}
    train = [
        subject
        for subject in subject_order(rows)
        if subject_split(subject, seed, fractions, _text(fixed.get(subject, ""))) == "train"
    ]
    if max_subjects is not None:
        train = train[:max_subjects]
    rank = {subject: i for i, subject in enumerate(train)}
    picked = rows[rows["subject"].isin(rank)]
    return (
        picked.assign(_rank=picked["subject"].map(rank))
        .sort_values(["_rank", "session", "contrast"], kind="stable")
        .drop(columns="_rank")
        .reset_index(drop=True)
    )


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)
