"""Parse-time decisions of the task stages: which tasks run, on what, with which params.

Pure functions of the validated config and the task registry (:mod:`brainssl.tasks.registry`);
see :mod:`brainssl.wiring`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from brainssl.config import stage_params
from brainssl.tasks.registry import TASKS, task_datasets, tasks_of_kind
from brainssl.wiring.stages import Config, embed_encoders, encoders, preprocess_enabled, slice_datasets

#: Keys of the `tasks` section every frozen-feature task's job depends on.
TASK_SHARED_KEYS = ("label_fractions", "shots", "seeds", "bootstrap", "evaluation", "folds")
#: Shared `tasks` keys a dense task takes where its own subsection leaves them null.
DENSE_SHARED_KEYS = ("label_fractions", "seeds", "bootstrap")
#: Report label of each extra figure a registry entry can declare.
TASK_FIGURE_LABELS = {"risk_groups": "Kaplan-Meier risk groups"}


# ---- tasks (every list comes from the task registry, brainssl.tasks.registry)


def task_section(config: Config, task: str) -> Mapping[str, Any]:
    """A task's `tasks.<task>` config section, or its registry defaults when the schema has none."""
    section: Mapping[str, Any] = config["tasks"].get(task, TASKS[task].defaults)
    return section


def task_enabled(config: Config, task: str) -> bool:
    """Whether a task's section enables it (sections without `enabled` do)."""
    return bool(task_section(config, task).get("enabled", True))


def task_pattern(tasks: Iterable[str]) -> str:
    """A wildcard constraint matching exactly these task names (nothing when there are none)."""
    return "|".join(re.escape(task) for task in tasks) or "(?!)"


def task_figure_labels(figures: Iterable[str] = ()) -> dict[str, str]:
    """Report label of each figure a frozen-feature task job writes: its curves, then `figures`."""
    return {"curves": "label-fraction curves", **{figure: TASK_FIGURE_LABELS[figure] for figure in figures}}


def risk_group_tasks() -> list[str]:
    """Frozen-feature tasks whose jobs write the Kaplan-Meier figure (rule tasks_survival)."""
    return [t for t in tasks_of_kind("frozen") if "risk_groups" in TASKS[t].figures]


def plain_frozen_tasks() -> list[str]:
    """Frozen-feature tasks of rule tasks_frozen (no extra figure)."""
    return [t for t in tasks_of_kind("frozen") if t not in risk_group_tasks()]


def frozen_tasks(config: Config) -> list[str]:
    """The enabled frozen-feature tasks."""
    return [t for t in tasks_of_kind("frozen") if task_enabled(config, t)]


def analysis_tasks(config: Config) -> list[str]:
    """The enabled analysis tasks (representation)."""
    return [t for t in tasks_of_kind("analysis") if task_enabled(config, t)]


def task_params(config: Config, task: str) -> dict[str, Any]:
    """Shared `tasks` keys plus one task's subsection: what its job depends on."""
    if task in config["tasks"]:
        settings = stage_params(config, "tasks", keys=[task])[task]
    else:
        settings = stage_params({"task": task_section(config, task)}, "task")
    return {"shared": stage_params(config, "tasks", keys=list(TASK_SHARED_KEYS)), "settings": settings}


def task_manifests(config: Config, task: str) -> list[str] | None:
    """The manifests a frozen-feature task reads (the survival table); None when it reads none."""
    if not TASKS[task].manifests:
        return None
    datasets = task_datasets(task, task_section(config, task))
    return [f"results/datasets/{dataset}/manifest.tsv" for dataset in datasets]


# ---- dense tasks: feature-map heads (segmentation, detection, reconstruction) on every encoder


def dense_task_datasets(config: Config, task: str) -> list[str]:
    """The datasets a dense task reads: fixed ones, or the preprocessed ones its config lists."""
    datasets = task_datasets(task, task_section(config, task))
    if TASKS[task].datasets_key:
        preprocessed = preprocess_enabled(config)
        return [d for d in datasets if d in preprocessed]
    return datasets


def dense_task_params(config: Config, task: str) -> dict[str, Any]:
    """A dense task's subsection, its unset (null) keys taken from the shared `tasks` keys."""
    shared = {key: config["tasks"][key] for key in DENSE_SHARED_KEYS}
    own = {key: value for key, value in task_section(config, task).items() if value is not None}
    merged = {**shared, **own}
    return {key: merged[key] for key in sorted(merged)}


def dense_tasks(config: Config) -> list[str]:
    """Enabled dense tasks whose datasets are all preprocessed (and that read any)."""
    preprocessed = set(preprocess_enabled(config))
    tasks = []
    for task in tasks_of_kind("dense"):
        needed = dense_task_datasets(config, task)
        if task_enabled(config, task) and needed and set(needed) <= preprocessed:
            tasks.append(task)
    return tasks


def dense_slice_stores(config: Config, datasets: Sequence[str]) -> list[str]:
    """The datasets among `datasets` that the slice store holds (their index records the recipe)."""
    held = slice_datasets(config)
    return [dataset for dataset in datasets if dataset in held]


def dense_slice_indexes(config: Config, datasets: Sequence[str]) -> list[str]:
    """The slice-store index of each of those datasets (same order as dense_slice_stores)."""
    return [f"results/slices/{dataset}/index.parquet" for dataset in dense_slice_stores(config, datasets)]


def dense_slice_settings(config: Config, datasets: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Effective `slices` settings (as slices_shard's) of the datasets the store does not hold."""
    held = slice_datasets(config)
    return {
        dataset: stage_params(config, "slices", dataset, keys=["intensity_percentiles"])
        for dataset in datasets
        if dataset not in held
    }


def task_results(config: Config) -> list[str]:
    """Task names whose results/tasks/<task>/results.tsv the merge rule reads."""
    return dense_tasks(config) + frozen_tasks(config) + analysis_tasks(config)


# ---- supervised-from-scratch baseline of the classification tasks


def scratch_tasks() -> list[str]:
    """Tasks whose jobs also train scratch-<arch> networks (architectures of the random-* exports)."""
    return [task for task in tasks_of_kind("frozen") if TASKS[task].scratch]


def scratch_encoders(config: Config) -> dict[str, str]:
    """The random-initialised exports (name -> weights) whose architectures scratch networks take."""
    return {name: path for name, path in encoders(config).items() if name.startswith("random-")}


def scratch_enabled(config: Config, task: str) -> bool:
    """Whether a task's job trains the scratch baseline (a scratch task, enabled, a random export)."""
    return (
        task in scratch_tasks()
        and bool(config["tasks"]["scratch"]["enabled"])
        and bool(scratch_encoders(config))
    )


def scratch_inputs(config: Config, task: str) -> dict[str, Any]:
    """The slice store and random-initialised exports a task's scratch baseline reads ({} when off)."""
    if not scratch_enabled(config, task):
        return {}
    return {
        "index": "results/slices/index.parquet",
        "scratch_encoders": list(scratch_encoders(config).values()),
    }


def scratch_params(config: Config, task: str) -> dict[str, Any]:
    """`tasks.scratch`, the encoder names, the pooling window and `tasks.device` ({} when off)."""
    if not scratch_enabled(config, task):
        return {}
    return {
        "settings": stage_params(config, "tasks", keys=["scratch"])["scratch"],
        "encoders": list(scratch_encoders(config)),
        "pool_window": config["embed"]["pool_window"],
        "device": task_device(config),
    }


# ---- devices: where the training rules run, and the GPU each one requests


def task_device(config: Config) -> str:
    """`tasks.device`: where every task network trains (auto, cpu or cuda); a param of those jobs."""
    return str(config["tasks"]["device"])


def dense_task_threads(config: Config) -> int:
    """`tasks.dense_threads`: the threads of every dense-task job (a resource, not a param)."""
    return int(config["tasks"]["dense_threads"])


def gpu_request(device: str) -> dict[str, int]:
    """The resources of a job that runs on ``device``: one GPU for `cuda`, none for `auto` and `cpu`.

    `gpu` is the resource name snakemake-executor-plugin-slurm turns into ``--gpus=1`` and that
    profiles/local limits to the machine's GPUs. `auto` requests nothing: such a job uses a GPU only
    where it happens to see one.
    """
    return {"gpu": 1} if device == "cuda" else {}


def task_gpu_resources(config: Config) -> dict[str, int]:
    """Resources of a dense-task job (frozen decoders, fine-tuning, scratch): one GPU on `cuda`."""
    return gpu_request(task_device(config))


def frozen_task_gpu_resources(config: Config) -> dict[str, Callable[..., int]]:
    """Resources of a frozen-feature task job: one GPU on `cuda` for the jobs that train scratch networks.

    The other jobs fit scikit-learn heads on the CPU and request no GPU (`gpu` 0).
    """
    if not gpu_request(task_device(config)):
        return {}
    return {"gpu": lambda wildcards: int(scratch_enabled(config, wildcards.task))}


def embed_gpu_resources(config: Config) -> dict[str, Callable[..., int]]:
    """Resources of an embed job: one GPU on `embed.device: cuda`, none for the classical baseline."""
    if not gpu_request(str(config["embed"]["device"])):
        return {}
    specs = embed_encoders(config)
    return {"gpu": lambda wildcards: int(specs.get(wildcards.encoder) is not None)}
