"""Which subjects go to which shard, their split, and the subject labels kept for probes.

Subjects are sorted by id and cut into shards of ``shard_size``; the split is per subject,
so every slice of a subject shares it. When the input table carries a ``split`` column (the
preprocess table does) it is used as is, after checking one value per subject; otherwise
(the 2D tumour image set, read from its manifest) :func:`brainssl.splits.subject_split`
assigns it, honouring the manifest's ``split_group``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from brainssl.splits import SPLITS, subject_split

__all__ = [
    "LABEL_COLUMNS",
    "NO_SESSION",
    "PLAN_COLUMNS",
    "load_shard_rows",
    "plan_shards",
    "read_input_table",
    "subject_labels",
]

PLAN_COLUMNS = ("subject", "shard", "split")
LABEL_COLUMNS = (
    "age",
    "sex",
    "site",
    "diagnosis",
    "cdr",
    "pathology",
    "idh",
    "mgmt",
    "tumor_class",
    "days_since_event",
)
NO_SESSION = "ses-none"


def _existing_split(table: pd.DataFrame) -> dict[str, str]:
    per = table.groupby("subject")["split"].agg(lambda s: sorted(set(s.astype(str))))
    mixed = per[per.map(len) != 1]
    if len(mixed):
        raise ValueError(f"subjects with more than one split: {mixed.to_dict()}")
    out = {str(k): v[0] for k, v in per.items()}
    bad = {k: v for k, v in out.items() if v not in SPLITS}
    if bad:
        raise ValueError(f"unknown split value(s) {bad} (allowed {SPLITS})")
    return out


def plan_shards(
    table: pd.DataFrame, shard_size: int, fractions: Mapping[str, float], seed: int
) -> pd.DataFrame:
    """Give every subject of a dataset's table its shard and split.

    Args:
        table: preprocess table or image manifest (column ``subject``; optional ``split`` or
            ``split_group``).
        shard_size: subjects per shard.
        fractions: ``{"train", "val", "test"}`` fractions (config ``datasets.split``), used only
            when the table has no ``split`` column.
        seed: the workflow seed.

    Returns:
        :data:`PLAN_COLUMNS` rows, sorted by subject.
    """
    if "subject" not in table.columns:
        raise KeyError("table has no 'subject' column")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    subjects = sorted(set(table["subject"].astype(str)))
    if "split" in table.columns:
        split = _existing_split(table)
    else:
        fixed = {}
        if "split_group" in table.columns:
            groups = table.astype({"subject": str}).groupby("subject")["split_group"].first()
            fixed = {k: "" if pd.isna(v) else str(v) for k, v in groups.items()}
        split = {s: subject_split(s, seed, fractions, fixed.get(s, "")) for s in subjects}
    return pd.DataFrame(
        {
            "subject": subjects,
            "shard": [i // shard_size for i in range(len(subjects))],
            "split": [split[s] for s in subjects],
        },
        columns=list(PLAN_COLUMNS),
    )


def subject_labels(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per subject with the labels probes use (first non-empty value per subject).

    Args:
        manifest: a dataset manifest (:mod:`brainssl.datasets.manifest`).

    Returns:
        Columns ``subject`` and those of :data:`LABEL_COLUMNS` present in ``manifest``.
    """
    columns = [c for c in LABEL_COLUMNS if c in manifest.columns]
    frame = manifest[["subject", *columns]].copy()
    frame["subject"] = frame["subject"].astype(str)
    for column in columns:
        if frame[column].dtype == object or pd.api.types.is_string_dtype(frame[column]):
            frame[column] = frame[column].replace("", pd.NA)
    return frame.groupby("subject", sort=True).first().reset_index()


def read_input_table(path: str | Path) -> pd.DataFrame:
    """Read a preprocess table, image manifest or plan (TSV) with empty cells kept as ``""``."""
    return pd.read_csv(path, sep="\t", dtype={"subject": str, "session": str}, keep_default_na=False)


def load_shard_rows(
    table_path: str | Path,
    plan_path: str | Path,
    shard: int,
    manifest_path: str | Path | None = None,
) -> pd.DataFrame:
    """Read the rows (volumes or images) of one shard, with split and subject labels attached.

    Args:
        table_path: ``results/preprocess/{dataset}/table.tsv`` (or a 2D image manifest).
        plan_path: the plan from :func:`plan_shards`.
        shard: shard number.
        manifest_path: the dataset manifest, for subject labels (age, pathology, ...).

    Returns:
        The shard's rows sorted by subject, session, contrast.
    """
    table = read_input_table(table_path).drop(columns=["split"], errors="ignore")
    plan = read_input_table(plan_path)
    members = plan[plan["shard"].astype(int) == int(shard)][["subject", "split"]]
    if members.empty:
        raise ValueError(f"shard {shard} has no subjects in {plan_path}")
    rows = table.merge(members, on="subject", how="inner")
    if manifest_path is not None:
        from brainssl.datasets import read_manifest

        labels = subject_labels(read_manifest(manifest_path))
        rows = rows.drop(columns=[c for c in labels.columns if c != "subject" and c in rows.columns])
        rows = rows.merge(labels, on="subject", how="left")
    rows["session"] = rows["session"].fillna("").astype(str).replace("", NO_SESSION)
    return rows.sort_values(["subject", "session", "contrast", "path"]).reset_index(drop=True)
