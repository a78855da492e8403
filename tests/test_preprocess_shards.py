"""Shard assignment of the preprocess stage: stable under appends, complete, file lists."""

import pandas as pd
import pytest

from brainssl.preprocess.shards import (
    assign_shards,
    shard_count,
    shard_files,
    shard_records,
    shard_rows,
    training_rows,
    volume_rows,
)
from brainssl.splits import subject_split


def _manifest(n: int, start: int = 0) -> pd.DataFrame:
    rows = []
    for i in range(start, start + n):
        # pseudonymous ids are hashes: their order differs from the native order on purpose
        subject = f"sub-{(i * 7919) % 1000:012d}"
        for contrast in ("T1w", "T2w"):
            rows.append(
                {
                    "dataset": "ixi",
                    "subject": subject,
                    "native_id": f"IXI{i:03d}",
                    "session": "",
                    "contrast": contrast,
                    "path": f"/raw/IXI{i:03d}-{contrast}.nii.gz",
                    "format": "nifti",
                    "seg_path": "",
                    "truth_brain_mask": f"/raw/_truth/IXI{i:03d}/brain_mask.nii.gz",
                    "split_group": "",
                }
            )
    return pd.DataFrame(rows)


def _shards(manifest: pd.DataFrame, size: int) -> list[list[str]]:
    return [
        sorted(shard_rows(manifest, size, c)["subject"].unique()) for c in range(shard_count(manifest, size))
    ]


def test_appending_a_subject_keeps_every_earlier_shard():
    before = _manifest(33)
    after = pd.concat([before, _manifest(1, start=33)], ignore_index=True)
    shards_before, shards_after = _shards(before, 16), _shards(after, 16)
    assert len(shards_before) == len(shards_after) == 3
    assert shards_before[:-1] == shards_after[:-1]
    assert shards_before[-1] != shards_after[-1]
    # the rows (the shard jobs' params) and files (their inputs) of earlier shards are identical
    for c in range(2):
        assert shard_records(shard_rows(before, 16, c)) == shard_records(shard_rows(after, 16, c))
        assert shard_files(shard_rows(before, 16, c)) == shard_files(shard_rows(after, 16, c))


def test_row_order_in_the_manifest_does_not_matter():
    manifest = _manifest(20)
    shuffled = manifest.sample(frac=1.0, random_state=0)
    assert _shards(manifest, 6) == _shards(shuffled, 6)
    assert shard_records(shard_rows(manifest, 6, 1)) == shard_records(shard_rows(shuffled, 6, 1))


def test_shards_cover_every_subject_once_and_keep_sessions_together():
    manifest = _manifest(17)
    assignment = assign_shards(manifest, 5)
    assert sorted(assignment) == sorted(manifest["subject"].unique())
    assert sorted(set(assignment.values())) == [0, 1, 2, 3]
    for c in range(4):
        rows = shard_rows(manifest, 5, c)
        assert set(rows["subject"]) == {s for s, k in assignment.items() if k == c}
        assert len(rows) == 2 * rows["subject"].nunique()  # both contrasts of each subject
    assert shard_count(manifest.iloc[:0], 5) == 0


def test_shard_files_and_bad_shard():
    rows = shard_rows(_manifest(3), 2, 1)
    assert shard_files(rows) == [
        "/raw/IXI002-T1w.nii.gz",
        "/raw/IXI002-T2w.nii.gz",
        "/raw/_truth/IXI002/brain_mask.nii.gz",
    ]
    with pytest.raises(ValueError, match="out of range"):
        shard_rows(_manifest(3), 2, 2)
    with pytest.raises(ValueError, match="shard_size"):
        assign_shards(_manifest(3), 0)


def test_volume_rows_drop_2d_images():
    jpg = _manifest(1).assign(format="jpg", dataset="tumor4")
    manifest = pd.concat([_manifest(2), jpg], ignore_index=True)
    assert set(volume_rows(manifest)["format"]) == {"nifti"}


def test_training_rows_hold_training_subjects_only_and_ignore_evaluation_subjects():
    fractions = {"train": 0.5, "val": 0.25, "test": 0.25}
    manifest = _manifest(40)
    train = training_rows(manifest, 9, fractions)
    assert len(train) and {subject_split(s, 9, fractions) for s in train["subject"]} == {"train"}
    # changing an evaluation subject's image (path) leaves the landmark rule's rows and files alone
    evaluation = next(s for s in manifest["subject"] if subject_split(s, 9, fractions) != "train")
    changed = manifest.copy()
    changed.loc[changed["subject"] == evaluation, "path"] = "/raw/replaced.nii.gz"
    assert shard_records(training_rows(changed, 9, fractions)) == shard_records(train)
    # a dataset-prescribed test subject never trains
    fixed = manifest.assign(split_group="test")
    assert training_rows(fixed, 9, fractions).empty
    capped = training_rows(manifest, 9, fractions, max_subjects=3)
    assert capped["subject"].nunique() == 3
