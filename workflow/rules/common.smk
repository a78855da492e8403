import os
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

from brainssl.config import chunk_indices, n_chunks, stage_params  # noqa: E402
from brainssl.datasets import DATASETS, read_manifest  # noqa: E402
from brainssl.preprocess.chunks import (  # noqa: E402
    PREPROCESS_DATASETS,
    chunk_count,
    chunk_files,
    chunk_records,
    chunk_rows,
    training_rows,
    volume_rows,
)

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


def preprocess_settings(dataset):
    """The config slice one dataset's preprocessing jobs depend on."""
    return stage_params(config, "preprocess", dataset, PREPROCESS_SETTINGS)


def volume_manifest(dataset):
    """The dataset's 3D manifest rows, once the manifest checkpoint has run (cached by mtime)."""
    path = checkpoints.datasets_manifest.get(dataset=dataset).output.manifest
    key = (path, os.stat(path).st_mtime_ns)
    if key not in _MANIFEST_CACHE:
        _MANIFEST_CACHE[key] = volume_rows(read_manifest(path))
    return _MANIFEST_CACHE[key]


def preprocess_chunk_ids(dataset):
    return range(
        chunk_count(volume_manifest(dataset), config["preprocess"]["shard_size"])
    )


def preprocess_chunk_rows(wildcards):
    rows = volume_manifest(wildcards.dataset)
    size = config["preprocess"]["shard_size"]
    return chunk_rows(rows, size, int(wildcards.chunk))


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
    return outputs


def final_output_message():
    lines = ["brainssl finished. Results:"]
    lines += [f"  {path}" for path in final_outputs()]
    return "\n".join(lines)
