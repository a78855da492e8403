"""Subject-level split: deterministic, stable under additions, honours fixed splits."""

import pytest

from brainssl.splits import split_fractions, subject_split

FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def _subjects(n: int) -> list[str]:
    return [f"sub-{i:012x}" for i in range(n)]


def test_split_is_deterministic_and_depends_on_the_seed():
    subjects = _subjects(200)
    first = [subject_split(s, 1, FRACTIONS) for s in subjects]
    assert first == [subject_split(s, 1, FRACTIONS) for s in subjects]
    assert first != [subject_split(s, 2, FRACTIONS) for s in subjects]


def test_fractions_are_met_on_many_subjects():
    splits = [subject_split(s, 5, FRACTIONS) for s in _subjects(4000)]
    for name, share in FRACTIONS.items():
        assert abs(splits.count(name) / len(splits) - share) < 0.03, name


def test_adding_subjects_moves_no_existing_subject():
    # the answer for one subject never depends on the others: compute for 100, then for 150
    before = {s: subject_split(s, 3, FRACTIONS) for s in _subjects(100)}
    after = {s: subject_split(s, 3, FRACTIONS) for s in _subjects(150)}
    assert all(after[s] == split for s, split in before.items())


def test_fixed_split_is_honoured():
    subjects = _subjects(500)
    assert {subject_split(s, 0, FRACTIONS, fixed="test") for s in subjects} == {"test"}
    fixed_train = [subject_split(s, 0, FRACTIONS, fixed="train") for s in subjects]
    assert set(fixed_train) == {"train", "val"}
    assert abs(fixed_train.count("val") / len(subjects) - 0.15 / 0.85) < 0.05


def test_edge_fractions():
    assert {subject_split(s, 0, {"train": 1.0, "val": 0.0, "test": 0.0}) for s in _subjects(50)} == {"train"}
    assert {subject_split(s, 0, {"train": 0.0, "val": 0.0, "test": 1.0}) for s in _subjects(50)} == {"test"}


@pytest.mark.parametrize(
    ("fractions", "words"),
    [
        ({"train": 0.7, "val": 0.2}, "exactly the keys"),
        ({"train": 0.7, "val": 0.2, "test": 0.2}, "sum to 1"),
        ({"train": 1.2, "val": -0.1, "test": -0.1}, ">= 0"),
    ],
)
def test_bad_fractions_are_named(fractions, words):
    with pytest.raises(ValueError, match=words):
        split_fractions(fractions)


def test_bad_fixed_and_empty_subject():
    with pytest.raises(ValueError, match="fixed split"):
        subject_split("sub-1", 0, FRACTIONS, fixed="holdout")
    with pytest.raises(ValueError, match="empty"):
        subject_split("", 0, FRACTIONS)
