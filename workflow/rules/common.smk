import os
import re
import sys
from functools import partial
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")

# The package lives in src/. Parsing imports only its light modules (Snakemake, numpy and
# pandas suffice: tests/test_envs.py), never nibabel, SimpleITK, scipy, h5py, matplotlib, torch.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
# Plain jobs find the package through PYTHONPATH; conda jobs (which drop it) through their env's
# post-deploy script (envs/<env>.post-deploy.sh), installing it from BRAINSSL_WORKFLOW_DIR.
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH", "")) if p),
    BRAINSSL_WORKFLOW_DIR=workflow.basedir,
)

from brainssl import wiring  # noqa: E402
from brainssl.config import pretrain_run_settings, stage_params  # noqa: E402
from brainssl.datasets import DATASETS, read_manifest  # noqa: E402
from brainssl.preprocess import shards  # noqa: E402
from brainssl.preprocess.shards import shard_files, shard_records  # noqa: E402

# Every mistake at once, in short lines (validate below stops at the first); then defaults.
wiring.check_config(
    config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml", Path.cwd()
)
validate(config, schema="../schemas/config.schema.yaml")
# Then: pretraining's input size is the store's slice size; `cuda` needs a GPU (local runs).
wiring.check_slice_sizes(config)


onstart:
    wiring.check_devices(config, local=workflow.local_exec)


# Jobs and params are pure functions of the config (brainssl.wiring); here: constraints, inputs.


ENABLED_DATASETS = wiring.enabled_datasets(config)
PREPROCESS_ENABLED = wiring.preprocess_enabled(config)
SLICE_DATASETS = wiring.slice_datasets(config)
PRETRAIN_ARCHS = wiring.PRETRAIN_ARCHS
PRETRAIN_RESOURCES = config["pretrain"]["resources"]
ENCODERS = wiring.encoders(config)
# encoder name -> what embeds with it: a brainssl export, user weights, or None (classical)
EMBED_ENCODERS = wiring.embed_encoders(config)
DENSE_TASKS = wiring.dense_tasks(config)
FROZEN_TASKS = wiring.frozen_tasks(config)
TASK_RESULTS = wiring.task_results(config)


wildcard_constraints:
    dataset="|".join(wiring.all_datasets(config)),
    shard=r"\d+",
    encoder="|".join(re.escape(name) for name in EMBED_ENCODERS),


def shard_subjects(wildcards):
    return wiring.shard_subjects(config, wildcards.dataset, int(wildcards.shard))


def raw_ready(wildcards):
    return wiring.raw_ready(config, wildcards.dataset) or []


# ---- preprocess: shards come from the dataset's manifest (a checkpoint)

_CACHE = {}


def manifest_version(dataset):
    """Path and mtime of a dataset's manifest, once its checkpoint has run (a cache key)."""
    path = checkpoints.datasets_manifest.get(dataset=dataset).output.manifest
    return path, os.stat(path).st_mtime_ns


def volume_manifest(dataset):
    """The dataset's 3D manifest rows (cached per manifest version)."""
    key = manifest_version(dataset)
    if key not in _CACHE:
        _CACHE[key] = shards.volume_rows(read_manifest(key[0]))
    return _CACHE[key]


def preprocess_shards(dataset):
    """The 3D rows cut once per manifest version (shard jobs ask often; see benchmarks/dag.py)."""
    key = ("shards", *manifest_version(dataset))
    if key not in _CACHE:
        size = config["preprocess"]["shard_size"]
        _CACHE[key] = shards.SubjectShards(volume_manifest(dataset), size)
    return _CACHE[key]


def preprocess_shard_rows(wildcards):
    return preprocess_shards(wildcards.dataset).rows(int(wildcards.shard))


def preprocess_shard_inputs(wildcards):
    """A shard's own raw files (never the whole manifest, whose mtime every new subject changes)."""
    files = {"images": shard_files(preprocess_shard_rows(wildcards))}
    landmarks = wiring.nyul_landmarks(config, wildcards.dataset)
    return {**files, "landmarks": landmarks} if landmarks else files


def preprocess_training_rows(wildcards):
    """The candidate subjects of a dataset's Nyúl landmark fit (wiring.nyul_candidates)."""
    rows = volume_manifest(wildcards.dataset)
    split, seed = config["datasets"]["split"], config["seed"]
    return shards.training_rows(rows, seed, split, wiring.nyul_candidates(config))


def preprocess_shard_tables(wildcards, kind):
    folder = f"results/preprocess/{wildcards.dataset}/shards"
    n = len(preprocess_shards(wildcards.dataset))
    return [f"{folder}/shard-{shard}.{kind}" for shard in range(n)]


def slices_shard_files(kind, root="results/slices", datasets=None):
    """Input function: a file of `kind` per planned shard of the dataset (or of `datasets`)."""

    def files(wildcards):
        paths = []
        for dataset in datasets or [wildcards.dataset]:
            plan = checkpoints.slices_plan.get(dataset=dataset).output.plan
            paths += [
                f"{root}/{dataset}/shard-{k}.{kind}"
                for k in wiring.planned_shards(plan)
            ]
        return paths

    return files


# ---- pretrain, embed and tasks


def pretrain_settings(method):
    """Params function: one run's settings (only what that run depends on)."""
    return lambda wildcards: pretrain_run_settings(config, method, wildcards.arch)


def pretrain_outputs(method, variant=False):
    """Outputs of a run, `<method>-{arch}`, or of an ablation run, `<method>-{arch}-{variant}`."""
    encoder = "{arch}-{variant}" if variant else "{arch}"
    folder = f"results/pretrain/{method}-{encoder}"
    return {
        "encoder": f"{folder}/encoder.safetensors",
        "card": f"{folder}/model_card.json",
        "metrics": f"{folder}/metrics.csv",
        "curves": report(
            f"{folder}/curves.png",
            caption="../report/pretrain_curves.rst",
            category="4. Pretraining",
            labels={"method": method, "encoder": encoder, "figure": "training curves"},
        ),
        "prov": f"{folder}/provenance.json",
    }


def embed_weights(wildcards):
    """The weights file an embed job reads (none for the classical baseline)."""
    spec = EMBED_ENCODERS[wildcards.encoder]
    return [] if spec is None else [spec["weights"]]


def embed_files(kind):
    return [f"results/embed/{name}/{kind}.parquet" for name in EMBED_ENCODERS]


def frozen_task_inputs(wildcards):
    """Input function of a frozen-feature task: scratch baseline files, pooled tables, manifests."""
    files = {**wiring.scratch_inputs(config, wildcards.task)}
    files["subjects"] = embed_files("subjects")
    manifests = wiring.task_manifests(config, wildcards.task)
    return files if manifests is None else {**files, "manifests": manifests}


def frozen_task_param(key):
    """Params function: one key of a frozen-feature task's params (what its job depends on)."""
    return lambda wildcards: wiring.task_params(config, wildcards.task)[key]


def frozen_task_outputs(figures=()):
    """Outputs of a frozen-feature task job: tables, label-fraction curves, extra figures."""
    folder = "results/tasks/{task}"
    outputs = {name: f"{folder}/{name}.tsv" for name in ("results", "comparisons")}
    for name, label in wiring.task_figure_labels(figures).items():
        outputs[name] = report(
            f"{folder}/{name}.png",
            caption=f"../report/tasks_{name}.rst",
            category="5. Tasks",
            subcategory="{task}",
            labels={"task": "{task}", "figure": label},
        )
    return {**outputs, "prov": f"{folder}/provenance.json"}
