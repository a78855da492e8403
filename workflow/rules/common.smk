import os
import re
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

# The package lives in src/; put it on the path of this process and of every job
# (jobs inherit the environment, also inside conda envs and SLURM jobs).
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
# Setting (not reading) a variable, so no `envvars:` assertion is needed.
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH", "")) if p)
)

from brainssl.config import (  # noqa: E402
    chunk_indices,
    n_chunks,
    pretrain_run_settings,
    stage_params,
)
from brainssl.datasets import DATASETS, read_manifest  # noqa: E402
from brainssl.preprocess.chunks import (  # noqa: E402
    PREPROCESS_DATASETS,
    SubjectChunks,
    chunk_files,
    chunk_records,
    training_rows,
    volume_rows,
)
from brainssl.tasks.registry import TASKS, task_datasets, tasks_of_kind  # noqa: E402

validate(config, schema="../schemas/config.schema.yaml")


wildcard_constraints:
    dataset="|".join(DATASETS),
    chunk=r"\d+",


ENABLED_DATASETS = [d for d in DATASETS if config["datasets"][d]["enabled"]]


def dataset_setting(dataset, key):
    return config["datasets"][dataset][key]


def is_synthetic(dataset):
    return dataset_setting(dataset, "source") == "synthetic"


def dataset_chunks(dataset):
    size = config["datasets"]["shard_size"]
    return range(n_chunks(dataset_setting(dataset, "subjects"), size))


def chunk_subjects(wildcards):
    size = config["datasets"]["shard_size"]
    n = dataset_setting(wildcards.dataset, "subjects")
    return chunk_indices(n, size, int(wildcards.chunk))


def raw_root(dataset):
    if is_synthetic(dataset):
        return f"results/datasets/{dataset}/raw"
    return dataset_setting(dataset, "path")


def raw_ready(wildcards):
    """The file that says a dataset's native tree is complete (none for local data)."""
    source = dataset_setting(wildcards.dataset, "source")
    if source == "synthetic":
        return f"results/datasets/{wildcards.dataset}/raw.done.json"
    if source == "download":
        return f"results/datasets/{wildcards.dataset}/download.done.json"
    return []


# ---- preprocess: chunks come from the dataset's manifest (a checkpoint)

PREPROCESS_ENABLED = [d for d in ENABLED_DATASETS if d in PREPROCESS_DATASETS]
PREPROCESS_SETTINGS = [
    "spacing_mm",
    "interpolation",
    "skull_strip",
    "register_contrasts",
    "crop_margin_mm",
    "max_spacing_mm",
    "n4",
    "registration",
    "normalisation",
    "qc",
]
_MANIFEST_CACHE = {}
_CHUNKS_CACHE = {}


def preprocess_settings(dataset):
    """The config slice one dataset's preprocessing jobs depend on."""
    return stage_params(config, "preprocess", dataset, PREPROCESS_SETTINGS)


def manifest_version(dataset):
    """Path and mtime of a dataset's manifest, once its checkpoint has run (a cache key)."""
    path = checkpoints.datasets_manifest.get(dataset=dataset).output.manifest
    return path, os.stat(path).st_mtime_ns


def volume_manifest(dataset):
    """The dataset's 3D manifest rows, once the manifest checkpoint has run (cached by mtime)."""
    key = manifest_version(dataset)
    if key not in _MANIFEST_CACHE:
        _MANIFEST_CACHE[key] = volume_rows(read_manifest(key[0]))
    return _MANIFEST_CACHE[key]


def preprocess_chunks(dataset):
    """The 3D rows cut once per manifest version (chunk jobs ask often; see benchmarks/dag.py)."""
    key = manifest_version(dataset)
    if key not in _CHUNKS_CACHE:
        size = config["preprocess"]["shard_size"]
        _CHUNKS_CACHE[key] = SubjectChunks(volume_manifest(dataset), size)
    return _CHUNKS_CACHE[key]


def preprocess_chunk_ids(dataset):
    return range(len(preprocess_chunks(dataset)))


def preprocess_chunk_rows(wildcards):
    return preprocess_chunks(wildcards.dataset).rows(int(wildcards.chunk))


def preprocess_chunk_inputs(wildcards):
    """A chunk's own raw files (never the whole manifest, whose mtime every new subject changes)."""
    files = {"images": chunk_files(preprocess_chunk_rows(wildcards))}
    settings = preprocess_settings(wildcards.dataset)
    if settings["normalisation"]["method"] == "nyul":
        files["landmarks"] = (
            f"results/preprocess/{wildcards.dataset}/nyul_landmarks.json"
        )
    return files


def preprocess_training_rows(wildcards):
    return training_rows(
        volume_manifest(wildcards.dataset),
        config["seed"],
        config["datasets"]["split"],
        config["preprocess"]["nyul_fit_subjects"],
    )


def preprocess_chunk_tables(wildcards, kind):
    return expand(
        "results/preprocess/{dataset}/chunks/chunk-{chunk}.{kind}",
        dataset=wildcards.dataset,
        chunk=preprocess_chunk_ids(wildcards.dataset),
        kind=kind,
    )


# ---- slices: 2D image sets come straight from their manifest; shards from a checkpoint plan

SLICE_IMAGE_DATASETS = ["tumor4"]
# Decathlon hippocampus crops are not whole-brain axial slices: they feed the dense
# segmentation task, not pretraining.
SLICE_DATASETS = [
    d
    for d in ENABLED_DATASETS
    if (d in PREPROCESS_ENABLED and d != "hippocampus") or d in SLICE_IMAGE_DATASETS
]


def slices_table(wildcards):
    if wildcards.dataset in SLICE_IMAGE_DATASETS:
        return f"results/datasets/{wildcards.dataset}/manifest.tsv"
    return f"results/preprocess/{wildcards.dataset}/table.tsv"


def slices_shard_files(kind):
    """Input function: one file of `kind` per planned shard of a dataset (read from the plan)."""

    def files(wildcards):
        plan = checkpoints.slices_plan.get(dataset=wildcards.dataset).output.plan
        with open(plan) as handle:
            header = handle.readline().rstrip("\n").split("\t")
            column = header.index("shard")
            shards = sorted(
                {int(line.split("\t")[column]) for line in handle if line.strip()}
            )
        return expand(
            "results/slices/{dataset}/shard-{chunk}.{kind}",
            dataset=wildcards.dataset,
            chunk=shards,
            kind=kind,
        )

    return files


# ---- pretrain: one run per (method, arch), and the random-initialised baseline per arch

PRETRAIN_ARCHS = ["vit_tiny", "vit_small", "vit_base", "resnet18", "resnet50"]
PRETRAIN_RUNS = [
    f"{method}-{arch}"
    for method in config["pretrain"]["methods"] + ["random"]
    for arch in config["pretrain"]["archs"]
]
# every exported encoder downstream stages read, by name
ENCODERS = {run: f"results/pretrain/{run}/encoder.safetensors" for run in PRETRAIN_RUNS}


def pretrain_settings(method):
    """Params function: one run's settings (only what that run depends on)."""

    def settings(wildcards):
        return pretrain_run_settings(config, method, wildcards.arch)

    return settings


def pretrain_probe():
    return stage_params(config, "pretrain", keys=["probe"])["probe"]


def pretrain_resource(key):
    return config["pretrain"]["resources"][key]


def pretrain_gpu_resources():
    """GPU requests for the SLURM plugin (`gpu`, optional `gpu_model`); none for CPU runs."""
    gpus = pretrain_resource("gpus")
    if not gpus:
        return {}
    model = pretrain_resource("gpu_model")
    return {"gpu": gpus, **({"gpu_model": model} if model else {})}


def pretrain_outputs(method):
    folder = f"results/pretrain/{method}-{{arch}}"
    return {
        "encoder": f"{folder}/encoder.safetensors",
        "card": f"{folder}/model_card.json",
        "metrics": f"{folder}/metrics.csv",
        "curves": report(
            f"{folder}/curves.png",
            caption="../report/pretrain_curves.rst",
            category="Pretraining",
            labels={"method": method, "encoder": "{arch}", "figure": "training curves"},
        ),
        "prov": f"{folder}/provenance.json",
    }


# ---- tasks: every list below comes from the task registry (brainssl.tasks.registry)

TASK_SHARED_KEYS = ["label_fractions", "seeds", "bootstrap", "evaluation", "folds"]


def task_section(task):
    """A task's `tasks.<task>` config section, or its registry defaults when the schema has none."""
    return config["tasks"].get(task, TASKS[task].defaults)


def task_enabled(task):
    return bool(task_section(task).get("enabled", True))


# ---- dense tasks: feature-map heads (segmentation, detection, reconstruction) on every encoder


def dense_task_datasets(task):
    """The datasets a dense task reads: fixed ones, or the preprocessed ones its config lists."""
    datasets = task_datasets(task, task_section(task))
    if TASKS[task].datasets_key:
        return [d for d in datasets if d in PREPROCESS_ENABLED]
    return datasets


# task -> the datasets it reads (it runs only when they are preprocessed)
DENSE_TASK_DATASETS = {
    task: dense_task_datasets(task) for task in tasks_of_kind("dense")
}


def dense_task_params(task):
    """A dense task's subsection, its unset (null) keys taken from the shared `tasks` keys."""
    section = config["tasks"]
    shared = {key: section[key] for key in ("label_fractions", "seeds", "bootstrap")}
    own = {key: value for key, value in task_section(task).items() if value is not None}
    merged = {**shared, **own}
    return {key: merged[key] for key in sorted(merged)}


def hippocampus_task_datasets():
    """The hippocampus task's datasets (the name tasks_dense.smk reads)."""
    return DENSE_TASK_DATASETS["hippocampus_segmentation"]


def dense_task_enabled(task):
    needed = DENSE_TASK_DATASETS[task]
    return (
        task_enabled(task) and bool(needed) and set(needed) <= set(PREPROCESS_ENABLED)
    )


DENSE_TASKS = [task for task in DENSE_TASK_DATASETS if dense_task_enabled(task)]


# ---- embed and frozen-feature tasks: one embed job per encoder, one job per task

# encoder name -> what embeds with it: a brainssl export, user weights, or None (classical baseline)
EMBED_ENCODERS = {name: {"weights": path} for name, path in ENCODERS.items()}
EMBED_ENCODERS.update(
    {
        spec["name"]: {"weights": spec["weights"], "arch": spec.get("arch", "")}
        for spec in config.get("embed", {}).get("extra", [])
    }
)
EMBED_ENCODERS["classical"] = None
# frozen-feature tasks whose jobs write the Kaplan-Meier figure (rule tasks_survival) or not (tasks_frozen)
RISK_GROUP_TASKS = [
    t for t in tasks_of_kind("frozen") if "risk_groups" in TASKS[t].figures
]
PLAIN_FROZEN_TASKS = [t for t in tasks_of_kind("frozen") if t not in RISK_GROUP_TASKS]
FROZEN_TASKS = [task for task in tasks_of_kind("frozen") if task_enabled(task)]
ANALYSIS_TASKS = [task for task in tasks_of_kind("analysis") if task_enabled(task)]
# task names whose results/tasks/<task>/results.tsv the merge rule reads
TASK_RESULTS = DENSE_TASKS + FROZEN_TASKS + ANALYSIS_TASKS


def task_pattern(tasks):
    """A wildcard constraint matching exactly these task names."""
    return "|".join(re.escape(task) for task in tasks) or "(?!)"


wildcard_constraints:
    encoder="|".join(re.escape(name) for name in EMBED_ENCODERS),


def embed_weights(wildcards):
    """The weights file an embed job reads (none for the classical baseline)."""
    spec = EMBED_ENCODERS[wildcards.encoder]
    return [] if spec is None else [spec["weights"]]


def embed_files(kind):
    return [f"results/embed/{name}/{kind}.parquet" for name in EMBED_ENCODERS]


def task_params(task):
    """Shared `tasks` keys plus one task's subsection: what its job depends on."""
    settings = (
        stage_params(config, "tasks", keys=[task])[task]
        if task in config["tasks"]
        else stage_params({"task": task_section(task)}, "task")
    )
    return {
        "shared": stage_params(config, "tasks", keys=TASK_SHARED_KEYS),
        "settings": settings,
    }


def frozen_task_inputs(wildcards):
    """Input function of a frozen-feature task: scratch baseline files, pooled tables, manifests."""
    task = wildcards.task
    files = {**scratch_inputs(task), "subjects": embed_files("subjects")}
    if TASKS[task].manifests:
        files["manifests"] = expand(
            "results/datasets/{dataset}/manifest.tsv",
            dataset=task_datasets(task, task_section(task)),
        )
    return files


def frozen_task_param(key):
    """Params function: one key of a frozen-feature task's params (what its job depends on)."""

    def param(wildcards):
        return task_params(wildcards.task)[key]

    return param


def frozen_task_outputs(figures=()):
    """Outputs of a frozen-feature task job: tables, label-fraction curves, extra figures."""
    folder = "results/tasks/{task}"
    outputs = {
        "results": f"{folder}/results.tsv",
        "comparisons": f"{folder}/comparisons.tsv",
        "curves": report(
            f"{folder}/curves.png",
            caption="../report/tasks_curves.rst",
            category="Tasks",
            labels={"task": "{task}", "figure": "label-fraction curves"},
        ),
    }
    for figure in figures:
        outputs[figure] = report(
            f"{folder}/{figure}.png",
            caption=f"../report/tasks_{figure}.rst",
            category="Tasks",
            labels={"task": "{task}", "figure": TASK_FIGURE_LABELS[figure]},
        )
    outputs["prov"] = f"{folder}/provenance.json"
    return outputs


# report label of each extra figure a registry entry can declare
TASK_FIGURE_LABELS = {"risk_groups": "Kaplan-Meier risk groups"}


# ---- frozen-feature tasks: supervised-from-scratch baseline of the classification tasks

# tasks whose rules also train scratch-<arch> networks (architectures of the random-* exports)
SCRATCH_TASKS = [task for task in tasks_of_kind("frozen") if TASKS[task].scratch]
SCRATCH_ENCODERS = {
    name: path for name, path in ENCODERS.items() if name.startswith("random-")
}


def scratch_enabled(task):
    return (
        task in SCRATCH_TASKS
        and config["tasks"]["scratch"]["enabled"]
        and bool(SCRATCH_ENCODERS)
    )


def scratch_inputs(task):
    """The slice store and random-initialised exports a task's scratch baseline reads (none when off)."""
    if not scratch_enabled(task):
        return {}
    return {
        "index": "results/slices/index.parquet",
        "scratch_encoders": list(SCRATCH_ENCODERS.values()),
    }


def scratch_params(task):
    """`tasks.scratch`, the encoder names and the embedding's pooling window ({} when off)."""
    if not scratch_enabled(task):
        return {}
    return {
        "settings": stage_params(config, "tasks", keys=["scratch"])["scratch"],
        "encoders": list(SCRATCH_ENCODERS),
        "pool_window": config["embed"]["pool_window"],
    }


def final_outputs():
    outputs = ["results/datasets/manifest.tsv"]
    outputs += expand(
        "results/datasets/{dataset}/montage.png", dataset=ENABLED_DATASETS
    )
    outputs += expand(
        "results/preprocess/{dataset}/{name}",
        dataset=PREPROCESS_ENABLED,
        name=["table.tsv", "qc.tsv", "qc_summary.png"],
    )
    outputs += ["results/slices/index.parquet", "results/slices/retained.png"]
    outputs += expand(
        "results/slices/{dataset}/{figure}.png",
        dataset=SLICE_DATASETS,
        figure=["entropy", "retained", "montage"],
    )
    outputs += list(ENCODERS.values())
    outputs += ["results/pretrain/probe.tsv"]
    outputs += ["results/tasks/results.tsv", "results/tasks/comparisons.tsv"]
    return outputs


def final_output_message():
    lines = ["brainssl finished. Results:"]
    lines += [f"  {path}" for path in final_outputs()]
    return "\n".join(lines)
