"""Shard plan: sorted subject shards, one split per subject, the image set's own test group."""

from __future__ import annotations

import pandas as pd
import pytest

from brainssl.slices import plan_shards, subject_labels
from brainssl.splits import DEFAULT_FRACTIONS, subject_split


def test_plan_shards_sorted_shards_and_existing_split() -> None:
    table = pd.DataFrame(
        {"subject": ["c", "a", "b", "a", "d", "e"], "split": ["val", "train", "test", "train", "val", "val"]}
    )
    plan = plan_shards(table, 2, DEFAULT_FRACTIONS, seed=0)
    assert plan["subject"].tolist() == ["a", "b", "c", "d", "e"]
    assert plan["shard"].tolist() == [0, 0, 1, 1, 2]
    assert plan["split"].tolist() == ["train", "test", "val", "val", "val"]
    with pytest.raises(ValueError, match="more than one split"):
        plan_shards(
            table.assign(split=["val", "train", "test", "val", "val", "val"]), 2, DEFAULT_FRACTIONS, 0
        )


def test_without_split_column_uses_subject_split_and_keeps_test_group() -> None:
    subjects = [f"sub-{i:012x}" for i in range(40)]
    table = pd.DataFrame({"subject": subjects, "split_group": ["test"] * 10 + ["train"] * 30})
    plan = plan_shards(table, 8, DEFAULT_FRACTIONS, seed=3).set_index("subject")
    assert (plan.loc[subjects[:10], "split"] == "test").all()
    assert set(plan.loc[subjects[10:], "split"]) == {"train", "val"}
    assert plan.loc[subjects[20], "split"] == subject_split(subjects[20], 3, DEFAULT_FRACTIONS, "train")
    plain = plan_shards(table.drop(columns="split_group"), 8, DEFAULT_FRACTIONS, seed=3)
    assert plain["split"].tolist() == [subject_split(s, 3, DEFAULT_FRACTIONS) for s in subjects]


def test_subject_labels_first_non_empty() -> None:
    manifest = pd.DataFrame(
        {"subject": ["a", "a", "b"], "age": [None, 40.0, 30.0], "pathology": ["", "glioma", "none"]}
    )
    labels = subject_labels(manifest).set_index("subject")
    assert labels.loc["a", "age"] == 40.0 and labels.loc["a", "pathology"] == "glioma"
