"""benchmarks/plan.py on a tiny stand-in: dry-runs of config/paper.yaml, slice model, storage, GPU-hours."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import yaml
from conftest import REPO


@pytest.fixture(scope="module")
def plan():
    spec = importlib.util.spec_from_file_location("plan_benchmark", REPO / "benchmarks/plan.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def fake_networks(plan, config) -> dict:
    """What measure_networks returns, with round numbers (the FLOP counts need minutes at 224 px)."""
    archs = config["pretrain"]["archs"]
    runs = {
        f"{m}-{a}": {
            "flops_per_image": 40e9,
            "student_params": 30e6,
            "trained_params": 29e6,
            "teacher_params": 30e6,
            "encoder_params": 22e6,
        }
        for m in config["pretrain"]["methods"]
        for a in archs
    }
    encoders = {
        a: {"params": 22e6, "dim": 384, "forward": 8e9, "maps": [384] * 4, "map_elements": 4 * 384 * 196}
        for a in archs
    }
    decoders = {f"{a}/{c}/{o}": 2e9 for a in archs for c, o in plan._dense_shapes(config)}
    names = [f"{m}-{a}" for m in ("moco", "dino", "random") for a in archs]
    return {
        "runs": runs,
        "encoders": encoders,
        "decoders": decoders,
        "cpu_flops_per_s": 1e10,
        "encoder_names": names,
    }


def test_paper_config_on_a_stand_in_cohort(plan, tmp_path):
    subjects = {dataset: 3 for dataset in plan.COHORT}
    jobs = plan.plan_jobs(tmp_path, subjects)
    assert jobs["jobs"]["all"] == 1 and jobs["jobs"]["preprocess_shard"] == 5  # one shard of 32 per dataset
    for rule in plan.TRAINING_RULES:
        assert jobs["gpus"][rule] >= 1, f"{rule} requests no GPU under config/paper.yaml"
    assert jobs["gpus"]["pretrain_moco"] == 4 and jobs["gpus"]["preprocess_shard"] == 0
    config = plan.merged_config(tmp_path)
    assert set(plan.input_sizes(config).values()) == {224}

    counts = plan.slice_counts(config)
    study = [counts[d] for d in plan.STUDY_DATASETS]
    assert 13_000 <= sum(c["volumes"] for c in study) <= 13_500
    assert 1.7e6 <= sum(c["native"] for c in study) <= 2.1e6  # "about 2 million slices"
    assert 200_000 <= sum(c["kept"] for c in study) <= 260_000  # "condensed to about 250,000"
    assert counts["tumor4"]["kept"] == 7023

    nets = fake_networks(plan, config)
    stored = sum(c["kept"] for c in counts.values())
    gb = plan.storage(config, counts, nets)
    labelled = counts["brats21"]["kept"]
    assert gb["slices"] == pytest.approx((stored + labelled) * 224 * 224 / 1e9)  # uint8 slices + labels
    assert gb["embed"] == pytest.approx(6 * stored * 384 * 4 / 1e9)
    hours = plan.gpu_hours(config, counts, nets)
    images = config["pretrain"]["epochs"] * stored * config["datasets"]["split"]["train"]
    rate = plan.PEAK_BF16 * plan.ASSUMED_MFU
    assert hours["pretrain_moco"]["gpu_h"] == pytest.approx(2 * images * 40e9 / rate / 3600)
    assert hours["pretrain_moco"]["source"] == plan.ASSUMPTION
    assert set(hours) == set(plan.TRAINING_RULES)
    assert all(row["gpu_h"] > 0 and row["cpu_h"] > row["gpu_h"] for row in hours.values())

    measured = plan.gpu_hours(config, counts, nets, {"moco-vit_small": 2000.0})
    assert (
        measured["pretrain_moco"]["source"].startswith("assumed")
        and "measured" in measured["pretrain_moco"]["source"]
    )
    memory = plan.dense_memory(config, nets)
    brats = 1251 * 145  # subjects x slices holding brain
    assert memory["tumor_segmentation"]["slices_gb"] == pytest.approx(brats * 4 * 224 * 224 * 4 / 1e9)
    for task, mem in memory.items():  # the budgets hold: a few GB, whatever the cohort; the rest on disk
        assert not mem["maps_cached"] and mem["frozen_maps_gb"] > mem["ram_gb"] and mem["ram_gb"] < 4, task
    brats_job = memory["tumor_segmentation"]
    assert brats_job["frozen_maps_gb"] > 100 * brats_job["ram_gb"]
    # the scratch holds the cut slices (4 contrasts, float32) and uint8 labels once; no copies, no targets
    assert brats_job["scratch_gb"] == pytest.approx(brats_job["slices_gb"] * 17 / 16 - 1)
    assert memory["tumor_detection"]["scratch_gb"] == pytest.approx(brats_job["scratch_gb"])
    kspace = plan.KSPACE_COPIES * plan.KSPACE_BYTES / 1e9  # one volume's, as it is prepared
    assert kspace < memory["reconstruction"]["ram_gb"] < kspace + 2
    text = plan.tables({**jobs, "slices": counts, "storage": gb, "gpu_hours": hours, "dense_memory": memory})
    assert "| pretrain_moco | 2 | 4 |" in text and "| slices |" in text  # resnet50 and vit_small


@pytest.mark.slow
def test_networks_are_measured_from_the_real_modules(plan, tmp_path):
    tiny = {
        "slices": {"size": 32},
        "pretrain": {
            "archs": ["vit_tiny"],
            "img_size": 32,
            "vit_depth": 1,
            "moco": {"moco_dim": 16, "moco_mlp_dim": 32},
            "dino": {
                "out_dim": 32,
                "head_hidden_dim": 32,
                "head_bottleneck_dim": 16,
                "n_local_crops": 2,
                "local_size": 16,
            },
        },
    }
    extra = tmp_path / "tiny.yaml"
    extra.write_text(yaml.safe_dump(tiny))
    result = plan.make_plan(tmp_path / "work", {d: 2 for d in plan.COHORT}, extra=(extra,), cpu_repeats=1)
    runs = result["networks"]["runs"]
    assert set(runs) == {"moco-vit_tiny", "dino-vit_tiny"}
    assert runs["dino-vit_tiny"]["flops_per_image"] > result["networks"]["encoders"]["vit_tiny"]["forward"]
    assert result["gpu_hours"]["tasks_tumor_segmentation"]["flops"] > 0
