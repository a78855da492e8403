"""The workflow end to end on the tiny test config, and what a re-run touches."""

import json
import re
import shutil

import pandas as pd
import pytest
import yaml
from conftest import REPO, run_snakemake

pytestmark = pytest.mark.slow


def _jobs_in_dry_run(stdout: str) -> dict[str, int]:
    """Parse the job-count table that `snakemake -n` prints."""
    counts = {}
    table = stdout.split("Job stats:", 1)[1] if "Job stats:" in stdout else ""
    for line in table.splitlines():
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if match and match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
    return counts


def test_dry_run_plans_every_stage(tmp_path):
    result = run_snakemake(
        "-n", "--configfile", str(REPO / "config/test.yaml"), workdir=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stderr
    jobs = _jobs_in_dry_run(result.stdout)
    # shard_size 4: ixi, brats21, fastmri_brain, oasis3, tumor4, hippocampus, then abide and atlas
    assert jobs["datasets_generate"] == 1 + 1 + 1 + 1 + 2 + 1 + 2 + 3
    assert jobs["datasets_manifest"] == 8 and jobs["datasets_merge"] == 1 and jobs["datasets_montage"] == 8
    # preprocess: one merge per 3D dataset (tumor4 skips); the shard jobs come from the manifests
    # (checkpoints), so a fresh dry run cannot list them yet; the Nyul landmarks only for oasis3
    assert jobs["preprocess_merge"] == 7 and "preprocess_shard" not in jobs
    assert "checkpoint" in result.stdout
    # one natural-image baseline per checkpoint layout, each an encoder that embeds like the others
    assert jobs["pretrain_natural"] == 6 and jobs["embed_encoder"] >= 3 + 6 + 1


def test_dry_run_after_the_manifests_lists_one_job_per_shard(finished_run):
    workdir, config, _ = finished_run
    result = run_snakemake(
        "-n", "--configfile", str(config), "--forcerun", "preprocess_shard", workdir=workdir, timeout=120
    )
    jobs = _jobs_in_dry_run(result.stdout)
    # shard_size 2 over 3, 3, 2, 3, 3, 8, 10 subjects (ixi, brats21, fastmri_brain, oasis3, hippocampus,
    # and the user-named BIDS demos abide and atlas)
    assert jobs["preprocess_shard"] == 2 + 2 + 1 + 2 + 2 + 4 + 5, result.stdout


def test_full_run_writes_every_output_with_provenance(finished_run):
    workdir, _, result = finished_run
    merged = pd.read_csv(workdir / "results/datasets/manifest.tsv", sep="\t")
    registered = {"ixi", "brats21", "fastmri_brain", "oasis3", "tumor4", "hippocampus"}
    assert set(merged["dataset"]) == registered | {"abide", "atlas"}  # and the user-named BIDS entries
    ids = pd.read_csv(workdir / "results/datasets/ids.tsv", sep="\t", dtype=str)
    assert set(ids["subject"]) == set(merged["subject"]) and "0050002" in set(ids["native_id"])
    assert "results/datasets/manifest.tsv" in result.stdout + result.stderr
    prov = json.loads((workdir / "results/datasets/manifest.provenance.json").read_text())
    assert prov["stage"] == "datasets" and prov["config"]["datasets"]
    for log in ("logs/datasets/merge.log", "logs/datasets/ixi/manifest.log"):
        assert "finished" in (workdir / log).read_text()
    for dataset in ("ixi", "brats21", "fastmri_brain", "oasis3", "hippocampus"):
        folder = workdir / "results/preprocess" / dataset
        table = pd.read_csv(folder / "table.tsv", sep="\t")
        qc = pd.read_csv(folder / "qc.tsv", sep="\t")
        assert len(table) and set(table["split"]) <= {"train", "val", "test"}, dataset
        assert all((workdir / p).is_file() for p in table["path"]), dataset
        assert (folder / "qc_summary.png").stat().st_size > 10_000
        assert len(qc) >= table.groupby(["subject", "session"]).ngroups
        prov = json.loads((folder / "shards/shard-0.provenance.json").read_text())
        assert prov["stage"] == "preprocess" and "skull_strip" in prov["config"]["settings"]
    assert not (workdir / "results/preprocess/tumor4").exists()
    assert (workdir / "results/preprocess/oasis3/nyul_landmarks.json").is_file()


def test_a_natural_image_baseline_of_every_layout_is_an_encoder_of_the_run(finished_run):
    """Each synthetic checkpoint, read back through its layout's adapter, is probed, embedded, evaluated."""
    from brainssl.pretrain.natural import LAYOUTS

    workdir, config, _ = finished_run
    layouts = {e["name"]: e["layout"] for e in yaml.safe_load(config.read_text())["pretrain"]["natural"]}
    assert sorted(layouts.values()) == sorted(LAYOUTS)
    probe = pd.read_csv(workdir / "results/pretrain/probe.tsv", sep="\t")
    results = pd.read_csv(workdir / "results/tasks/results.tsv", sep="\t")
    for name, layout in layouts.items():
        card = json.loads((workdir / f"results/pretrain/{name}/model_card.json").read_text())
        assert card["method"] == "natural" and card["natural_source"]["layout"] == layout, name
        assert name in set(probe["encoder"]), name
        assert (workdir / f"results/embed/{name}/subjects.parquet").is_file(), name
        tasks = set(results.loc[results["encoder"] == name, "task"])
        assert {"tumor4", "tumor_segmentation", "reconstruction"} <= tasks, (name, tasks)
    # one seed, one network: the timm, torchvision and DINO files of a ViT (and both ResNets) differ
    # only in layout, so their adapters must give the very same encoder
    from safetensors.torch import load_file

    for same in (["timm_vit_tiny", "tv_vit_tiny", "dino_in_vit_tiny"], ["timm_resnet18", "tv_resnet18"]):
        first, *others = (load_file(workdir / f"results/pretrain/{n}/encoder.safetensors") for n in same)
        assert all(t.equal(first[k]) for other in others for k, t in other.items()), same


def test_nothing_changed_reruns_nothing(finished_run):
    workdir, config, _ = finished_run
    result = run_snakemake("-n", "--configfile", str(config), workdir=workdir, timeout=120)
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_one_more_subject_changes_exactly_the_dependent_provenance(finished_run, tmp_path):
    workdir, config = _copy_of_finished_run(finished_run, tmp_path)
    hashes_before = _provenance_hashes(workdir)
    cfg = yaml.safe_load(config.read_text())
    cfg["datasets"]["hippocampus"]["subjects"] += 1  # 3 -> 4: raw shard 0, preprocess shard 1
    config.write_text(yaml.safe_dump(cfg))
    dry = run_snakemake("-n", "--configfile", str(config), workdir=workdir, timeout=120)
    jobs = _jobs_in_dry_run(dry.stdout)
    # the hippocampus manifest (a checkpoint) runs again, so its shard list is known only then
    assert jobs == {
        "datasets_generate": 1,
        "datasets_finalize": 1,
        "datasets_manifest": 1,
        "datasets_merge": 1,
        "datasets_montage": 1,
        "preprocess_merge": 1,
        "tasks_hippocampus_segmentation": 1,
        "tasks_merge": 1,
        "tasks_ablation": 1,  # reads the merged results
        "attrition": 1,
        "all": 1,
    }, dry.stdout
    result = run_snakemake("--cores", "2", "--configfile", str(config), workdir=workdir, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    shard_jobs = re.findall(r"rule preprocess_shard:.*?wildcards: ([^\n]*)", log, flags=re.S)
    assert shard_jobs == ["dataset=hippocampus, shard=1"], shard_jobs
    hashes_after = _provenance_hashes(workdir)
    changed = {key for key in hashes_before if hashes_before[key] != hashes_after[key]}
    assert changed == {
        "datasets/hippocampus/shards/shard-0.provenance.json",
        "datasets/hippocampus/raw.done.json",
        "datasets/hippocampus/manifest.provenance.json",
        "datasets/manifest.provenance.json",
        "preprocess/hippocampus/shards/shard-1.provenance.json",
        "preprocess/hippocampus/table.provenance.json",
        "attrition.provenance.json",
        # the task re-runs; its hash changes only if the new subject's volume reached its table
    } | (
        {
            "tasks/hippocampus_segmentation/provenance.json",
            "tasks/results.provenance.json",
            "tasks/ablation.provenance.json",
        }
        & changed
    )


def _provenance_hashes(workdir):
    results = workdir / "results"
    files = list(results.rglob("*provenance.json")) + list(results.rglob("raw.done.json"))
    return {str(p.relative_to(results)): json.loads(p.read_text())["provenance_hash"] for p in files}


# Stages before the slice filter: none of their jobs may run again when only the filter changes.
UPSTREAM_OF_SLICE_FILTER = ("datasets_", "preprocess_", "slices_plan", "manifest")


def _planned_jobs(stdout: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job that a dry run lists (or a real run starts)."""
    jobs: list[tuple[str, dict[str, str]]] = []
    for line in stdout.splitlines():
        head = re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):$", line)
        wildcards = re.match(r"^\s+wildcards: (.+)$", line)
        if head:
            jobs.append((head.group(1), {}))
        elif wildcards and jobs:
            jobs[-1][1].update(item.split("=", 1) for item in wildcards.group(1).split(", "))
    return jobs


def _copy_of_finished_run(finished_run, tmp_path):
    """A private copy of the session's finished run (mtimes and Snakemake metadata kept)."""
    workdir = tmp_path / "run"
    shutil.copytree(finished_run[0], workdir, symlinks=True)
    config = workdir / finished_run[1].relative_to(finished_run[0])
    dry = run_snakemake("-n", "--configfile", str(config), workdir=workdir, timeout=120)
    assert "Nothing to be done" in dry.stdout + dry.stderr, "the copied run is not up to date:\n" + dry.stdout
    return workdir, config


def _slice_shards(workdir, datasets):
    """Every planned (dataset, shard) of the slice store."""
    shards = set()
    for dataset in datasets:
        plan = pd.read_csv(workdir / "results/slices" / dataset / "plan.tsv", sep="\t")
        shards |= {(dataset, int(shard)) for shard in plan["shard"].unique()}
    return shards


def _upstream(jobs):
    return sorted({rule for rule, _ in jobs if rule.startswith(UPSTREAM_OF_SLICE_FILTER)})


def test_entropy_percentile_reruns_the_slice_filter_and_nothing_upstream(finished_run, tmp_path):
    workdir, config = _copy_of_finished_run(finished_run, tmp_path)
    slice_datasets = sorted(p.parent.name for p in (workdir / "results/slices").glob("*/plan.tsv"))
    # the datasets that filter by percentile, as the finished run recorded its settings
    percentile = [
        d
        for d in slice_datasets
        if json.loads((workdir / f"results/slices/{d}/shard-0.provenance.json").read_text())["config"][
            "settings"
        ]["entropy_mode"]
        == "percentile"
    ]
    assert len(percentile) >= 3, percentile
    cfg = yaml.safe_load(config.read_text())
    cfg["slices"]["entropy_percentile"] = 35.0
    config.write_text(yaml.safe_dump(cfg))
    dry = run_snakemake("-n", "--configfile", str(config), workdir=workdir, timeout=120)
    assert dry.returncode == 0, dry.stderr[-3000:]
    jobs = _planned_jobs(dry.stdout)
    assert not _upstream(jobs), dry.stdout
    shards = {(wc["dataset"], int(wc["shard"])) for rule, wc in jobs if rule == "slices_shard"}
    assert _slice_shards(workdir, percentile) <= shards, shards
    for rule in ("slices_merge_dataset", "slices_figures"):
        assert set(percentile) <= {wc["dataset"] for r, wc in jobs if r == rule}, rule
    assert {"slices_merge", "slices_retained"} <= {rule for rule, _ in jobs}


def test_one_datasets_entropy_threshold_reruns_only_its_slice_shards(finished_run, tmp_path):
    workdir, config = _copy_of_finished_run(finished_run, tmp_path)
    slice_datasets = sorted(p.parent.name for p in (workdir / "results/slices").glob("*/plan.tsv"))
    stats_before = pd.read_parquet(workdir / "results/slices/tumor4/stats.parquet")
    threshold = float(stats_before["entropy"].median())  # drops about half of the tumour images
    hashes_before = _provenance_hashes(workdir)
    cfg = yaml.safe_load(config.read_text())
    cfg["slices"]["per_dataset"]["tumor4"]["entropy_threshold"] = threshold  # tumor4 filters by absolute
    config.write_text(yaml.safe_dump(cfg))

    dry = run_snakemake("-n", "--configfile", str(config), workdir=workdir, timeout=120)
    jobs = _planned_jobs(dry.stdout)
    assert not _upstream(jobs), dry.stdout
    assert {(wc["dataset"], int(wc["shard"])) for r, wc in jobs if r == "slices_shard"} == _slice_shards(
        workdir, ["tumor4"]
    )
    for rule in ("slices_merge_dataset", "slices_figures"):
        assert [wc["dataset"] for r, wc in jobs if r == rule] == ["tumor4"], rule

    # run the slice stage only (the later stages' cost is theirs to test); the same jobs run
    args = ("slices_all", "--cores", "2", "--configfile", str(config))
    result = run_snakemake(*args, workdir=workdir, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ran = _planned_jobs(result.stdout + result.stderr)
    assert not _upstream(ran)
    assert {(wc["dataset"], int(wc["shard"])) for r, wc in ran if r == "slices_shard"} == _slice_shards(
        workdir, ["tumor4"]
    )
    changed = {key for key, value in _provenance_hashes(workdir).items() if hashes_before.get(key) != value}
    assert changed and all(key.startswith(("slices/tumor4/", "slices/index.")) for key in changed), changed
    rebuilt = {d for d in slice_datasets if any(k.startswith(f"slices/{d}/shard-") for k in changed)}
    assert rebuilt == {"tumor4"}, changed
    stats = pd.read_parquet(workdir / "results/slices/tumor4/stats.parquet")
    assert (stats["kept"] == (stats["entropy"] >= threshold)).all()
    assert 0 < stats["kept"].sum() < stats_before["kept"].sum()
    index = pd.read_parquet(workdir / "results/slices/index.parquet")
    assert (index.loc[index["dataset"] == "tumor4", "entropy"] >= threshold).all()


def test_one_tasks_parameters_rerun_that_task_and_the_merge_only(finished_run, tmp_path):
    workdir, config = _copy_of_finished_run(finished_run, tmp_path)
    cfg = yaml.safe_load(config.read_text())
    cfg["tasks"].setdefault("neurodegeneration", {})["logistic_c"] = 0.25
    config.write_text(yaml.safe_dump(cfg))
    dry = run_snakemake("-n", "--configfile", str(config), workdir=workdir, timeout=120)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert sorted((rule, wc.get("task", "")) for rule, wc in _planned_jobs(dry.stdout)) == [
        ("all", ""),
        ("tasks_ablation", ""),  # reads the merged results
        ("tasks_frozen", "neurodegeneration"),
        ("tasks_merge", ""),
    ], dry.stdout

    hashes_before = _provenance_hashes(workdir)
    result = run_snakemake("--cores", "2", "--configfile", str(config), workdir=workdir, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(
        (rule, wc.get("task", "")) for rule, wc in _planned_jobs(result.stdout + result.stderr)
    ) == [
        ("all", ""),
        ("tasks_ablation", ""),  # reads the merged results
        ("tasks_frozen", "neurodegeneration"),
        ("tasks_merge", ""),
    ]
    changed = {key for key, value in _provenance_hashes(workdir).items() if hashes_before.get(key) != value}
    # the merge re-runs; its hash changes only if the task's numbers did
    assert "tasks/neurodegeneration/provenance.json" in changed, changed
    assert changed <= {
        "tasks/neurodegeneration/provenance.json",
        "tasks/results.provenance.json",
        "tasks/ablation.provenance.json",
    }, changed


def test_one_pretraining_methods_settings_rerun_its_encoder_and_what_reads_it(finished_run, tmp_path):
    workdir, config = _copy_of_finished_run(finished_run, tmp_path)
    cfg = yaml.safe_load(config.read_text())
    cfg["pretrain"]["dino"]["student_temp"] = 0.2
    config.write_text(yaml.safe_dump(cfg))
    dry = run_snakemake("-n", "--configfile", str(config), workdir=workdir, timeout=120)
    assert dry.returncode == 0, dry.stderr[-3000:]
    jobs = _planned_jobs(dry.stdout)
    rules = {rule for rule, _ in jobs}
    assert "pretrain_dino" in rules and not rules & {"pretrain_moco", "pretrain_random"}, rules
    assert not {rule for rule in rules if rule.startswith(("datasets_", "preprocess_", "slices_"))}, rules
    assert [wc["encoder"] for rule, wc in jobs if rule == "embed_encoder"] == ["dino-vit_tiny"]


def test_resources_rerun_nothing(finished_run, tmp_path):
    """GPU counts, threads, memory and wall time are resources, never params: no job re-runs."""
    workdir, config, _ = finished_run
    cfg = yaml.safe_load(config.read_text())
    cfg["pretrain"]["resources"].update(gpus=2, gpu_model="h100", threads=8, mem_mb=64000, runtime=600)
    cfg["preprocess"]["threads"] = 4
    changed = tmp_path / "config.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    dry = run_snakemake("-n", "--configfile", str(changed), workdir=workdir, timeout=120)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "Nothing to be done" in dry.stdout + dry.stderr, _planned_jobs(dry.stdout)


def test_the_slice_filter_ablation_trains_equal_steps_on_a_superset_store(finished_run):
    """pretrain.ablation (on in test.yaml): every brain slice, equal steps, one table and one figure."""
    workdir, _, _ = finished_run
    results = workdir / "results"
    keys = ["dataset", "subject", "session", "contrast", "slice_index"]
    filtered = pd.read_parquet(results / "slices/index.parquet")
    unfiltered = pd.read_parquet(results / "slices/unfiltered/index.parquet")
    assert set(map(tuple, filtered[keys].astype(str).to_numpy())) < set(
        map(tuple, unfiltered[keys].astype(str).to_numpy())
    )
    cards = {
        name: json.loads((results / f"pretrain/{name}/model_card.json").read_text())
        for name in ("moco-vit_tiny", "moco-vit_tiny-unfiltered", "moco-vit_tiny-subset")
    }
    assert len({card["training_metrics"]["step"] for card in cards.values()}) == 1
    n = int((filtered["split"] == "train").sum())
    assert cards["moco-vit_tiny-unfiltered"]["settings"]["epoch_images"] == n
    table = pd.read_csv(results / "tasks/ablation.tsv", sep="\t")
    assert list(dict.fromkeys(table["variant"])) == ["filtered", "unfiltered", "subset", "random"]
    pools = table.drop_duplicates("variant").set_index("variant")["pool_slices"]
    assert pools.to_dict() == {"filtered": n, "unfiltered": int((unfiltered["split"] == "train").sum())} | {
        "subset": n,
        "random": 0,
    }
    assert (results / "tasks/ablation.png").stat().st_size > 10_000
    # evaluated on the frozen-feature tasks, never on the dense ones
    rows = pd.read_csv(results / "tasks/results.tsv", sep="\t")
    tasks = set(rows.loc[rows["encoder"] == "moco-vit_tiny-subset", "task"])
    assert "sequence" in tasks and "hippocampus_segmentation" not in tasks
