import pytest

from brainssl.config import n_shards, pretrain_run_settings, shard_indices, stage_params

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


def test_shards_cover_items_once_and_appending_changes_only_the_last():
    for n in (1, 15, 16, 17, 33):
        shards = [shard_indices(n, 16, c) for c in range(n_shards(n, 16))]
        assert sorted(i for shard in shards for i in shard) == list(range(n))
    before = [shard_indices(33, 16, c) for c in range(n_shards(33, 16))]
    after = [shard_indices(34, 16, c) for c in range(n_shards(34, 16))]
    assert before[:-1] == after[:-1] and before[-1] != after[-1]
    with pytest.raises(ValueError):
        shard_indices(10, 16, 1)


def test_stage_params_do_not_depend_on_the_order_of_keys():
    """Snakemake's params trigger compares printed values: a re-ordered config must print the same."""
    reordered = {"slices": {"per_dataset": {}, "window": {"high": 0.8, "low": 0.2}, "entropy_bins": 64}}
    assert repr(stage_params(reordered, "slices")) == repr(stage_params(CONFIG, "slices", "oasis3"))
    assert list(stage_params(CONFIG, "slices", keys=["window", "entropy_bins"])) == ["entropy_bins", "window"]


PRETRAIN = {
    "pretrain": {
        "archs": ["vit_tiny", "resnet50"],
        "methods": ["moco", "dino"],
        "img_size": 64,
        "lr": 0.001,
        "knn_k": 5,
        "augment": {"hflip": 0.5, "gamma": [0.7, 1.5]},
        "moco": {"temperature": 0.2},
        "dino": {"out_dim": 1024},
        "per_method": {"moco": {"lr": 0.0002}, "dino": {"augment": {"hflip": 0.0}}},
        "per_arch": {"resnet50": {"moco": {"optimizer": "lars", "lr": 0.6}}},
        "probe": {"split": "val"},
        "resources": {"gpus": 0},
    }
}


def test_pretrain_run_settings_layer_shared_method_and_arch_values():
    vit = pretrain_run_settings(PRETRAIN, "moco", "vit_tiny")
    assert vit["lr"] == 0.0002 and vit["temperature"] == 0.2 and "out_dim" not in vit
    assert vit["method"] == "moco" and vit["arch"] == "vit_tiny" and "probe" not in vit
    assert pretrain_run_settings(PRETRAIN, "moco", "resnet50")["lr"] == 0.6
    dino = pretrain_run_settings(PRETRAIN, "dino", "vit_tiny")
    assert dino["augment"] == {"gamma": [0.7, 1.5], "hflip": 0.0}, "nested overrides merge key by key"
    assert dino["lr"] == 0.001


def test_editing_one_method_leaves_the_other_runs_settings_alone():
    edited = {"pretrain": {**PRETRAIN["pretrain"], "dino": {"out_dim": 4096}}}
    assert pretrain_run_settings(edited, "dino", "vit_tiny")["out_dim"] == 4096
    assert pretrain_run_settings(edited, "moco", "vit_tiny") == pretrain_run_settings(
        PRETRAIN, "moco", "vit_tiny"
    )
    assert pretrain_run_settings(edited, "dino", "vit_tiny") != pretrain_run_settings(
        PRETRAIN, "dino", "vit_tiny"
    )
    assert pretrain_run_settings(edited, "random", "vit_tiny") == {
        "arch": "vit_tiny",
        "device": "cpu",
        "img_size": 64,
        "knn_k": 5,
    }
