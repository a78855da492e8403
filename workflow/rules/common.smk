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

from brainssl.config import chunk_indices, n_chunks  # noqa: E402
from brainssl.datasets import DATASETS  # noqa: E402

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


def final_outputs():
    outputs = ["results/datasets/manifest.tsv"]
    outputs += expand(
        "results/datasets/{dataset}/montage.png", dataset=ENABLED_DATASETS
    )
    return outputs


def final_output_message():
    lines = ["brainssl finished. Results:"]
    lines += [f"  {path}" for path in final_outputs()]
    return "\n".join(lines)
