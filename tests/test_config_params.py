import pytest

from brainssl.config import chunk_indices, n_chunks, stage_params

CONFIG = {
    "slices": {
        "entropy_bins": 64,
        "window": {"low": 0.2, "high": 0.8},
        "per_dataset": {"brats21": {"window": {"low": 0.3}}, "ixi": {"entropy_bins": 32}},
    }
}


def test_stage_params_merges_one_dataset_override_deeply():
    assert stage_params(CONFIG, "slices", "brats21") == {
        "entropy_bins": 64,
        "window": {"low": 0.3, "high": 0.8},
    }
    assert stage_params(CONFIG, "slices", "ixi")["entropy_bins"] == 32
    assert stage_params(CONFIG, "slices", "oasis3") == {
        "entropy_bins": 64,
        "window": {"low": 0.2, "high": 0.8},
    }


def test_stage_params_keeps_only_requested_keys_and_does_not_alias():
    sliced = stage_params(CONFIG, "slices", "brats21", keys=["window"])
    assert sliced == {"window": {"low": 0.3, "high": 0.8}}
    sliced["window"]["low"] = 0.9
    assert CONFIG["slices"]["window"]["low"] == 0.2


def test_stage_params_names_missing_keys():
    with pytest.raises(KeyError, match="nope"):
        stage_params(CONFIG, "slices", keys=["nope"])
    with pytest.raises(KeyError, match="pretrain"):
        stage_params(CONFIG, "pretrain")


def test_chunks_cover_items_once_and_appending_changes_only_the_last():
    for n in (1, 15, 16, 17, 33):
        chunks = [chunk_indices(n, 16, c) for c in range(n_chunks(n, 16))]
        assert sorted(i for chunk in chunks for i in chunk) == list(range(n))
    before = [chunk_indices(33, 16, c) for c in range(n_chunks(33, 16))]
    after = [chunk_indices(34, 16, c) for c in range(n_chunks(34, 16))]
    assert before[:-1] == after[:-1] and before[-1] != after[-1]
    with pytest.raises(ValueError):
        chunk_indices(10, 16, 1)


def test_stage_params_do_not_depend_on_the_order_of_keys():
    """Snakemake's params trigger compares printed values: a re-ordered config must print the same."""
    reordered = {"slices": {"per_dataset": {}, "window": {"high": 0.8, "low": 0.2}, "entropy_bins": 64}}
    assert repr(stage_params(reordered, "slices")) == repr(stage_params(CONFIG, "slices", "oasis3"))
    assert list(stage_params(CONFIG, "slices", keys=["window", "entropy_bins"])) == ["entropy_bins", "window"]
