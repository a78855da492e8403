"""brainssl.wiring: the workflow's parse-time decisions on the test config (what `snakemake -n` sees)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from conftest import REPO
from snakemake.utils import update_config, validate

from brainssl import wiring

RUNS = ["moco-vit_tiny", "dino-vit_tiny", "random-vit_tiny"]
# the test config's natural-image baselines, one per checkpoint layout (pretrain.natural)
NATURAL = [
    *("timm_vit_tiny", "tv_vit_tiny", "timm_resnet18", "tv_resnet18", "dino_in_vit_tiny", "dinov2_vit_tiny"),
]


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """config.yaml extended by config/test.yaml (as `--configfile` does), validated: defaults filled."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(cfg, yaml.safe_load((REPO / "config/test.yaml").read_text()))
    validate(cfg, str(REPO / "workflow/schemas/config.schema.yaml"))
    return cfg


def edited(config: dict[str, Any], *path: str, value: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(config)
    section = cfg
    for key in path[:-1]:
        section = section[key]
    section[path[-1]] = value
    return cfg


def test_datasets_preprocess_and_slice_store(config):
    every = ["ixi", "brats21", "fastmri_brain", "oasis3", "tumor4", "hippocampus", "abide", "atlas"]
    assert wiring.enabled_datasets(config) == every  # the user-named BIDS entries last
    # the 2D tumour image set is not preprocessed; the hippocampus crops are, but not sliced
    preprocessed = ["ixi", "brats21", "fastmri_brain", "oasis3", "hippocampus", "abide", "atlas"]
    assert wiring.preprocess_enabled(config) == preprocessed
    sliced = ["ixi", "brats21", "fastmri_brain", "oasis3", "tumor4", "abide", "atlas"]
    assert wiring.slice_datasets(config) == sliced
    assert wiring.slices_table("tumor4") == "results/datasets/tumor4/manifest.tsv"
    assert wiring.slices_table("ixi") == "results/preprocess/ixi/table.tsv"
    off = edited(config, "datasets", "brats21", "enabled", value=False)
    assert "brats21" not in wiring.enabled_datasets(off) + wiring.slice_datasets(off)


def test_generation_shards_and_raw_trees(config):
    assert list(wiring.dataset_shards(config, "tumor4")) == [0, 1]  # 8 subjects, shards of 4
    assert wiring.shard_subjects(config, "tumor4", 1) == [4, 5, 6, 7]
    assert wiring.shard_subjects(config, "ixi", 0) == [0, 1, 2]
    assert wiring.raw_root(config, "ixi") == "results/datasets/ixi/raw"
    assert wiring.raw_ready(config, "ixi") == "results/datasets/ixi/raw.done.json"
    local = edited(config, "datasets", "ixi", "source", value="local")
    local["datasets"]["ixi"]["path"] = "/data/ixi"
    assert wiring.raw_ready(local, "ixi") is None
    assert wiring.raw_root(local, "ixi") == "/data/ixi"


def test_preprocess_settings_apply_per_dataset_overrides(config):
    assert set(wiring.preprocess_settings(config, "ixi")) == set(wiring.PREPROCESS_SETTINGS)
    assert wiring.preprocess_settings(config, "brats21")["skull_strip"] == "none"
    assert wiring.preprocess_settings(config, "ixi")["skull_strip"] == "atlas"
    # only oasis3 is normalised with nyul (test.yaml), so only its shards read landmarks
    assert wiring.nyul_landmarks(config, "oasis3") == "results/preprocess/oasis3/nyul_landmarks.json"
    assert wiring.nyul_landmarks(config, "ixi") is None


def test_pretrain_runs_encoders_and_resources(config):
    assert wiring.pretrain_runs(config) == RUNS
    assert wiring.encoders(config) == {
        name: f"results/pretrain/{name}/encoder.safetensors" for name in [*RUNS, *NATURAL]
    }
    assert wiring.natural_weights(config, "dinov2_vit_tiny") == []  # synthetic: the job writes it
    assert wiring.pretrain_gpu_resources(config) == {}  # gpus: 0 in test.yaml
    gpu = edited(config, "pretrain", "resources", "gpus", value=2)
    gpu["pretrain"]["resources"]["gpu_model"] = "h100"
    assert wiring.pretrain_gpu_resources(gpu) == {"gpu": 2, "gpu_model": "h100"}
    assert wiring.pretrain_probe(config)["n_per_class"] == 20
    embed = wiring.embed_encoders(config)
    assert list(embed)[: len(RUNS) + len(NATURAL)] == [*RUNS, *NATURAL] and list(embed)[-1] == "classical"
    assert embed["classical"] is None
    assert embed["moco-vit_tiny"] == {"weights": "results/pretrain/moco-vit_tiny/encoder.safetensors"}


def test_task_lists_come_from_the_registry(config):
    assert wiring.dense_tasks(config) == [
        "tumor_segmentation",
        "hippocampus_segmentation",
        "tumor_detection",
        "reconstruction",
    ]
    frozen = wiring.frozen_tasks(config)
    assert frozen[:2] == ["tumor4", "sequence"] and "survival" in frozen
    assert wiring.risk_group_tasks() == ["survival"]
    assert "survival" not in wiring.plain_frozen_tasks()
    assert wiring.analysis_tasks(config) == ["representation"]
    assert wiring.task_results(config) == wiring.dense_tasks(config) + frozen + ["representation"]
    assert wiring.task_pattern(["a.b", "c"]) == r"a\.b|c"
    assert wiring.task_pattern([]) == "(?!)"  # matches nothing
    assert wiring.task_figure_labels(["risk_groups"]) == {
        "curves": "label-fraction curves",
        "risk_groups": "Kaplan-Meier risk groups",
    }


def test_a_disabled_or_unpreprocessed_dense_task_does_not_run(config):
    off = edited(config, "tasks", "tumor_detection", "enabled", value=False)
    assert "tumor_detection" not in wiring.dense_tasks(off)
    no_fastmri = edited(config, "datasets", "fastmri_brain", "enabled", value=False)
    assert "reconstruction" not in wiring.dense_tasks(no_fastmri)
    assert wiring.dense_task_datasets(config, "hippocampus_segmentation") == ["hippocampus"]


def test_dense_task_params_take_shared_keys_where_the_task_leaves_them_null(config):
    params = wiring.dense_task_params(config, "tumor_detection")
    assert list(params) == sorted(params)
    assert params["bootstrap"] == 5 and params["label_fractions"] == [1.0]  # the task's own
    unset = edited(config, "tasks", "tumor_detection", "bootstrap", value=None)
    unset["tasks"]["tumor_detection"]["label_fractions"] = None
    params = wiring.dense_task_params(unset, "tumor_detection")
    assert params["bootstrap"] == 20 and params["label_fractions"] == [0.5, 1.0]  # shared `tasks` keys


def test_dense_slices_follow_the_store(config):
    datasets = ["brats21", "hippocampus"]
    assert wiring.dense_slice_stores(config, datasets) == ["brats21"]
    assert wiring.dense_slice_indexes(config, datasets) == ["results/slices/brats21/index.parquet"]
    settings = wiring.dense_slice_settings(config, datasets)
    assert list(settings) == ["hippocampus"]
    assert list(settings["hippocampus"]) == ["intensity_percentiles"]


def test_frozen_task_params_and_manifests(config):
    params = wiring.task_params(config, "brain_age")
    assert params["shared"]["folds"] == 2 and params["shared"]["seeds"] == 1
    assert params["settings"]["datasets"] == ["ixi", "oasis3"]
    assert wiring.task_manifests(config, "survival") == ["results/datasets/brats21/manifest.tsv"]
    assert wiring.task_manifests(config, "tumor4") is None


def test_scratch_baseline_inputs_and_params_are_empty_when_off(config):
    task = wiring.scratch_tasks()[0]
    assert wiring.scratch_encoders(config) == {
        "random-vit_tiny": "results/pretrain/random-vit_tiny/encoder.safetensors"
    }
    params = wiring.scratch_params(config, task)
    assert params["encoders"] == ["random-vit_tiny"] and params["pool_window"] == [0.3, 0.7]
    assert params["settings"]["epochs"] == 1
    assert wiring.scratch_inputs(config, task)["index"] == "results/slices/index.parquet"
    off = edited(config, "tasks", "scratch", "enabled", value=False)
    assert wiring.scratch_params(off, task) == {} and wiring.scratch_inputs(off, task) == {}
    assert wiring.scratch_params(config, "survival") == {}  # not a scratch task


def test_final_outputs_list_every_stage(config):
    outputs = wiring.final_outputs(config)
    assert outputs[0] == "results/datasets/manifest.tsv"
    assert "results/preprocess/hippocampus/qc_summary.png" in outputs
    assert "results/slices/tumor4/montage.png" in outputs
    assert "results/slices/hippocampus/montage.png" not in outputs
    assert outputs[-2:] == ["results/tasks/results.tsv", "results/tasks/comparisons.tsv"]
    assert "results/pretrain/moco-vit_tiny/export/README.md" in outputs
    encoders = 3 + len(NATURAL)  # the runs and the natural-image baselines
    assert len(outputs) == len(set(outputs)) == 1 + 8 + 7 * 3 + 2 + 7 * 3 + encoders + 3 * 2 + 1 + 2 + 2
    # the slice-filter ablation (on in test.yaml): its table and figure, before the merged tables
    assert outputs[-4:-2] == ["results/tasks/ablation.tsv", "results/tasks/ablation.png"]
    assert wiring.final_output_message(config).splitlines()[1] == "  results/datasets/manifest.tsv"
