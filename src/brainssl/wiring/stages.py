"""Parse-time decisions of the data and model stages: datasets, preprocess, slices, pretrain, embed.

Pure functions of the validated config (see :mod:`brainssl.wiring`), and the default target.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from brainssl.architectures import ARCHS
from brainssl.config import n_shards, pretrain_run_settings, shard_indices, stage_params
from brainssl.datasets import DATASETS
from brainssl.preprocess.shards import PREPROCESS_DATASETS
from brainssl.wiring.ablation import ablation_encoders, ablation_outputs

Config = Mapping[str, Any]

#: Keys of the `preprocess` section one dataset's preprocessing jobs depend on.
PREPROCESS_SETTINGS = (
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
)
#: 2D image sets: their slices come straight from their manifest, not from preprocessing.
SLICE_IMAGE_DATASETS = ("tumor4",)
#: Architectures a pretraining run can have (the `arch` wildcard).
PRETRAIN_ARCHS = tuple(ARCHS)


# ---- datasets


def bids_datasets(config: Config) -> list[str]:
    """The user-named datasets (entries of ``kind: bids``), in config order."""
    return [
        name
        for name, entry in config["datasets"].items()
        if isinstance(entry, Mapping) and entry.get("kind") == "bids"
    ]


def all_datasets(config: Config) -> list[str]:
    """Every dataset the config names: the registered ones, then the user's BIDS entries."""
    return [*DATASETS, *bids_datasets(config)]


def enabled_datasets(config: Config) -> list[str]:
    """The datasets the config enables: registry order, then the user's BIDS entries."""
    return [d for d in all_datasets(config) if config["datasets"][d]["enabled"]]


def bids_demo(config: Config, dataset: str) -> str | None:
    """The demo writer of a synthetic BIDS entry (``abide``, ``atlas``); None for any other."""
    entry = config["datasets"][dataset]
    if entry.get("kind") != "bids" or entry.get("source") != "synthetic":
        return None
    return str(entry["demo"])


#: The keys of a BIDS entry its manifest depends on (how files and labels are read).
BIDS_READ_KEYS = ("kind", "contrasts", "mask", "participants", "sessions", "values")


def bids_entry(config: Config, dataset: str) -> dict[str, Any] | None:
    """What the manifest job of a BIDS entry reads it with (keys sorted); None for a registered one."""
    entry = config["datasets"][dataset]
    if entry.get("kind") != "bids":
        return None
    return stage_params({"entry": {k: entry[k] for k in BIDS_READ_KEYS if k in entry}}, "entry")


def dataset_shards(config: Config, dataset: str) -> range:
    """The generation shards of a dataset (`datasets.shard_size` subjects each)."""
    size = config["datasets"]["shard_size"]
    return range(n_shards(config["datasets"][dataset]["subjects"], size))


def shard_subjects(config: Config, dataset: str, shard: int) -> list[int]:
    """The subject indices one generation shard of a dataset makes."""
    size = config["datasets"]["shard_size"]
    return shard_indices(config["datasets"][dataset]["subjects"], size, shard)


def raw_root(config: Config, dataset: str) -> str:
    """Where a dataset's native tree lives: generated under results/, else its `path`."""
    if config["datasets"][dataset]["source"] == "synthetic":
        return f"results/datasets/{dataset}/raw"
    return str(config["datasets"][dataset]["path"])


def raw_ready(config: Config, dataset: str) -> str | None:
    """The file that says a dataset's native tree is complete (None for local data)."""
    source = config["datasets"][dataset]["source"]
    if source == "synthetic":
        return f"results/datasets/{dataset}/raw.done.json"
    if source == "download":
        return f"results/datasets/{dataset}/download.done.json"
    return None


# ---- preprocess and slices


def preprocess_enabled(config: Config) -> list[str]:
    """The enabled datasets that are preprocessed (3D volumes; every BIDS entry)."""
    bids = set(bids_datasets(config))
    return [d for d in enabled_datasets(config) if d in PREPROCESS_DATASETS or d in bids]


def preprocess_settings(config: Config, dataset: str) -> dict[str, Any]:
    """The config slice one dataset's preprocessing jobs depend on."""
    return stage_params(config, "preprocess", dataset, list(PREPROCESS_SETTINGS))


def nyul_landmarks(config: Config, dataset: str) -> str | None:
    """The Nyúl landmarks file a dataset's shard jobs read (None unless normalised with nyul)."""
    if preprocess_settings(config, dataset)["normalisation"]["method"] != "nyul":
        return None
    return f"results/preprocess/{dataset}/nyul_landmarks.json"


def slice_datasets(config: Config) -> list[str]:
    """The datasets of the slice store: preprocessed ones and the 2D image sets.

    The Decathlon hippocampus crops are not whole-brain axial slices: they feed the dense
    segmentation task, not pretraining.
    """
    preprocessed = preprocess_enabled(config)
    return [
        d
        for d in enabled_datasets(config)
        if (d in preprocessed and d != "hippocampus") or d in SLICE_IMAGE_DATASETS
    ]


def slices_table(dataset: str) -> str:
    """The table a dataset's slices are cut from: its manifest (2D sets) or preprocessed table."""
    if dataset in SLICE_IMAGE_DATASETS:
        return f"results/datasets/{dataset}/manifest.tsv"
    return f"results/preprocess/{dataset}/table.tsv"


# ---- pretrain and embed


def pretrain_runs(config: Config) -> list[str]:
    """One run per (method, arch), and the random-initialised baseline per arch."""
    section = config["pretrain"]
    return [f"{method}-{arch}" for method in [*section["methods"], "random"] for arch in section["archs"]]


def natural_names(config: Config) -> list[str]:
    """The natural-image baselines (``pretrain.natural`` names), in config order.

    Raises:
        ValueError: for a name given twice or also used by an ``embed.extra`` encoder.
    """
    names = [entry["name"] for entry in config["pretrain"].get("natural", [])]
    extra = {entry["name"] for entry in config.get("embed", {}).get("extra", [])}
    clash = sorted({n for n in names if names.count(n) > 1} | (set(names) & extra))
    if clash:
        raise ValueError(f"pretrain.natural names must be unique and not embed.extra names: {clash}")
    return names


def natural_params(config: Config, name: str) -> dict[str, Any]:
    """One baseline's job params: its entry and the random baseline's run settings (size, depth, kNN)."""
    entry = next(e for e in config["pretrain"]["natural"] if e["name"] == name)
    return {
        "baseline": _sorted_entry(entry),
        "settings": pretrain_run_settings(config, "random", entry["arch"]),
    }


def natural_weights(config: Config, name: str) -> list[str]:
    """The checkpoint a baseline's job reads ([] for ``weights: synthetic``, which the job writes)."""
    weights = natural_params(config, name)["baseline"]["weights"]
    return [] if weights == "synthetic" else [weights]


def _sorted_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {key: entry[key] for key in sorted(entry)}


def encoders(config: Config) -> dict[str, str]:
    """Every exported encoder downstream stages read: run name -> weights file (natural baselines last)."""
    names = [*pretrain_runs(config), *natural_names(config)]
    return {name: f"results/pretrain/{name}/encoder.safetensors" for name in names}


def pretrain_probe(config: Config) -> dict[str, Any]:
    """The kNN probe settings every run's export is scored with."""
    probe: dict[str, Any] = stage_params(config, "pretrain", keys=["probe"])["probe"]
    return probe


def pretrain_gpu_resources(config: Config) -> dict[str, Any]:
    """GPU requests for the SLURM plugin (`gpu`, optional `gpu_model`); none for CPU runs."""
    resources = config["pretrain"]["resources"]
    if not resources["gpus"]:
        return {}
    model = resources["gpu_model"]
    return {"gpu": resources["gpus"], **({"gpu_model": model} if model else {})}


def embed_encoders(config: Config) -> dict[str, dict[str, str] | None]:
    """Encoder name -> what embeds with it: a brainssl export (``embed.extra`` too), or None (classical)."""
    specs: dict[str, dict[str, str] | None] = {
        name: {"weights": path} for name, path in encoders(config).items()
    }
    # the slice-filter ablation's runs: embedded and evaluated on the frozen-feature tasks only
    specs.update({name: {"weights": path} for name, path in ablation_encoders(config).items()})
    for spec in config.get("embed", {}).get("extra", []):
        specs[spec["name"]] = {"weights": spec["weights"]}
    specs["classical"] = None
    return specs


# ---- the default target


def final_outputs(config: Config) -> list[str]:
    """The files rule `all` asks for."""
    outputs = ["results/datasets/manifest.tsv"]
    outputs += [f"results/datasets/{d}/montage.png" for d in enabled_datasets(config)]
    outputs += [
        f"results/preprocess/{d}/{name}"
        for d in preprocess_enabled(config)
        for name in ("table.tsv", "qc.tsv", "qc_summary.png")
    ]
    outputs += ["results/slices/index.parquet", "results/slices/retained.png"]
    outputs += [
        f"results/slices/{d}/{figure}.png"
        for d in slice_datasets(config)
        for figure in ("entropy", "retained", "montage")
    ]
    outputs += list(encoders(config).values())
    outputs += [
        f"results/pretrain/{run}/export/{name}"
        for run in pretrain_runs(config)
        for name in ("README.md", "config.json")
    ]
    outputs += ["results/pretrain/probe.tsv"]
    outputs += ablation_outputs(config)
    outputs += ["results/tasks/results.tsv", "results/tasks/comparisons.tsv"]
    return outputs


def final_output_message(config: Config) -> str:
    """What the workflow prints when it succeeds."""
    return "\n".join(["brainssl finished. Results:", *(f"  {path}" for path in final_outputs(config))])


def nyul_candidates(config: Config) -> int:
    """Training subjects a landmark fit may read: three times `nyul_fit_subjects`, at least 4 more.

    Landmarks are fitted on the first `nyul_fit_subjects` training subjects per contrast whose
    sessions pass QC (:func:`brainssl.preprocess.cohort.fit_cohort_landmarks`); the spares replace
    skipped ones, while subjects that sort later never move the landmarks.
    """
    fit = int(config["preprocess"]["nyul_fit_subjects"])
    return max(3 * fit, fit + 4)


def planned_shards(plan: str) -> list[int]:
    """The shard numbers a dataset's slice plan (``plan.tsv``) holds, sorted."""
    import pandas as pd

    return sorted({int(shard) for shard in pd.read_csv(plan, sep="\t", usecols=["shard"])["shard"]})
