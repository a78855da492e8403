"""The complete model card of an exported encoder; its Hugging Face-style files are in :mod:`.modelcard_hub`.

An encoder is usable by someone else only with the recipe its training slices went through,
written as numbers: the preprocessing (RAS orientation, voxel spacing, N4 bias correction, skull
stripping, intensity normalisation, crop), the slicing (axial, radiological view, square side,
per-volume intensity percentiles mapped to [0, 1], slice filters) and the pooling window of the
per-scan embedding. The card also says what the encoder was trained on (datasets, subjects,
slices, synthetic or real), under which licence the weights are released, what it is for and
what it is not for.

Three steps, at three times:

- parse time (rule ``pretrain_export``): :func:`release_params` takes the recipe settings out of
  the validated config. It imports nothing heavy, and holds only keys that shape the recipe, so
  the export (a copy and three small files) re-runs when they change and the training never does.
- job time: :func:`release_card` turns the training card, the slice index and those settings
  into the complete card, with every setting filled in from the package defaults;
  :func:`~brainssl.modelcard_hub.render_readme` and :func:`~brainssl.modelcard_hub.hub_config`
  write it as ``README.md`` (YAML front matter for model hubs) and ``config.json`` (the
  architecture, for plain ``safetensors`` loading).
- use: :func:`recipe` gives the recipe ``brainssl embed`` applies to new images.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "CARD_FORMAT",
    "DATASET_INFO",
    "RECIPE_SLICE_KEYS",
    "DEFAULT_RECIPE",
    "dumps",
    "landmark_files",
    "release_card",
    "release_params",
    "recipe",
    "recipe_names",
    "training_data_summary",
]

CARD_FORMAT = "brainssl-encoder-card/2"
#: The recipe a new image gets unless another one is named: the stage settings before the
#: per-dataset overrides.
DEFAULT_RECIPE = "default"
#: The slice settings that shape a stored slice (``brainssl.slices.settings.SHARD_KEYS``; a test
#: holds the two equal: importing that module here would import torch while Snakemake parses).
RECIPE_SLICE_KEYS = (
    "size",
    "dtype",
    "intensity_percentiles",
    "entropy_bins",
    "entropy_region",
    "entropy_mode",
    "entropy_threshold",
    "entropy_percentile",
    "position_window",
    "step_mm",
    "min_area",
)
#: Keys of a recorded preprocessing recipe that are facts, not :class:`PreprocessSettings` fields.
_RECIPE_FACTS = ("orientation", "nyul_landmarks")
_VIEW = (
    "axial slices of the RAS volume in radiological view: image = volume[::-1, ::-1, k].T "
    "(anterior up, patient right on the image's left), zero-padded to a centred square and resized "
    "to size x size (bilinear, antialiased; masks nearest neighbour)"
)
_POOL_UNIT = ["subject", "session", "contrast"]
#: Name and source of each dataset, as its layout's ``INFO`` says (a test holds them equal): the
#: export job runs in the training env, which lacks the layouts' readers (nibabel, h5py).
DATASET_INFO = {
    "ixi": ("IXI", "https://brain-development.org/ixi-dataset/"),
    "brats21": (
        "BraTS 2021",
        "Synapse, RSNA-ASNR-MICCAI BraTS 2021 challenge (https://www.synapse.org/brats2021)",
    ),
    "fastmri_brain": ("fastMRI brain", "https://fastmri.med.nyu.edu/ (NYU fastMRI data sharing agreement)"),
    "oasis3": (
        "OASIS-3",
        "https://www.oasis-brains.org/ (OASIS-3, data use agreement via NITRC-IR/XNAT Central)",
    ),
    "tumor4": (
        "Brain Tumor MRI Dataset (4 classes)",
        'Kaggle, "Brain Tumor MRI Dataset" by Masoud Nickparvar '
        "(https://www.kaggle.com/datasets/masoudnickparvar/brain-tumor-mri-dataset)",
    ),
    "hippocampus": (
        "Medical Segmentation Decathlon Task04_Hippocampus",
        "http://medicaldecathlon.com/ (Task04_Hippocampus.tar)",
    ),
}


# ---------------------------------------------------------------------------------- parse time


def release_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config values an encoder's export records (params of rule ``pretrain_export``).

    Args:
        config: the validated workflow config (defaults filled).

    Returns:
        ``seed`` (the preprocessing registration seed), ``datasets`` (source of every dataset of
        the slice store), ``preprocess`` and ``slices`` (``default``: the stage settings; one
        entry per dataset with its overrides applied) and ``pool_window``.
    """
    from brainssl import wiring
    from brainssl.config import stage_params

    datasets = wiring.slice_datasets(config)
    preprocessed = set(wiring.preprocess_enabled(config))
    preprocess = {DEFAULT_RECIPE: stage_params(config, "preprocess", keys=list(wiring.PREPROCESS_SETTINGS))}
    preprocess.update({d: wiring.preprocess_settings(config, d) for d in datasets if d in preprocessed})
    slices = {DEFAULT_RECIPE: stage_params(config, "slices", keys=list(RECIPE_SLICE_KEYS))}
    slices.update({d: stage_params(config, "slices", d, keys=list(RECIPE_SLICE_KEYS)) for d in datasets})
    return {
        "seed": int(config["seed"]),
        "datasets": {d: {"source": str(config["datasets"][d]["source"])} for d in datasets},
        "preprocess": preprocess,
        "slices": slices,
        "pool_window": [float(v) for v in config["embed"]["pool_window"]],
    }


def landmark_files(config: Mapping[str, Any]) -> dict[str, str]:
    """Dataset -> Nyúl landmarks file, for every dataset of the slice store normalised with ``nyul``."""
    from brainssl import wiring

    files = {d: wiring.nyul_landmarks(config, d) for d in wiring.slice_datasets(config)}
    return {d: path for d, path in files.items() if path}


# ------------------------------------------------------------------------------------ job time


def _plain(value: Any) -> Any:
    """Dataclass values as JSON-able dicts and lists (tuples become lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _preprocess_recipe(
    values: Mapping[str, Any], seed: int, landmarks: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Every preprocessing number (package defaults filled in) of one recipe."""
    from brainssl.preprocess.settings import PreprocessSettings

    settings = PreprocessSettings.from_dict({**values, "seed": seed})
    out = {"orientation": "RAS", **_plain(settings)}
    out.pop("threads")  # how fast, not what: the result does not depend on it
    if settings.normalisation.method == "nyul":
        out["nyul_landmarks"] = {m: _plain(marks) for m, marks in (landmarks or {}).items()}
    return out


def _slice_recipe(values: Mapping[str, Any]) -> dict[str, Any]:
    """Every slicing number (package defaults filled in) of one recipe."""
    from brainssl.slices import INTENSITY_MAPPING, SliceSettings

    settings = SliceSettings.from_dict(dict(values))
    return {**settings.to_dict(RECIPE_SLICE_KEYS), "view": _VIEW, "intensity_mapping": INTENSITY_MAPPING}


def _recipes(release: Mapping[str, Any], landmarks: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    recipes: dict[str, Any] = {}
    for name, slice_values in release["slices"].items():
        pre = release["preprocess"].get(name)
        recipes[name] = {
            "preprocess": None
            if pre is None
            else _preprocess_recipe(pre, int(release["seed"]), landmarks.get(name)),
            "slices": _slice_recipe(slice_values),
        }
    return recipes


def training_data_summary(
    index: Any, datasets: Mapping[str, Mapping[str, Any]], split: str = "train"
) -> dict[str, Any]:
    """What the encoder was trained on, counted from the slice index it was trained on.

    Args:
        index: the merged slice index (a DataFrame: ``dataset, subject, session, contrast,
            split``).
        datasets: dataset -> ``{"source": "synthetic" | "local" | "download"}``.
        split: the split pretraining read.

    Returns:
        ``synthetic`` (every dataset synthetic), ``split``, totals and one entry per dataset
        (name, homepage, source, subjects, sessions, scans, slices, slices per contrast; and the
        subjects of the other splits, which the kNN probe and the downstream tasks use).
    """
    frame = index.astype({"dataset": str, "subject": str, "session": str, "contrast": str})
    train = frame[frame["split"].astype(str) == split]
    entries = []
    for key in sorted(set(frame["dataset"]) | set(datasets)):
        rows = train[train["dataset"] == key]
        others = frame[(frame["dataset"] == key) & (frame["split"].astype(str) != split)]
        name, homepage = DATASET_INFO.get(key, (key, ""))
        source = str(datasets.get(key, {}).get("source", "unknown"))
        entries.append(
            {
                "key": key,
                "name": name,
                "homepage": homepage,
                "source": source,
                "synthetic": source == "synthetic",
                "subjects": int(rows["subject"].nunique()),
                "sessions": int(rows.groupby(["subject", "session"]).ngroups) if len(rows) else 0,
                "scans": int(rows.groupby(["subject", "session", "contrast"]).ngroups) if len(rows) else 0,
                "slices": len(rows),
                "slices_per_contrast": {
                    (m or "unknown"): int(n) for m, n in rows["contrast"].value_counts().sort_index().items()
                },
                "held_out_subjects": {
                    str(s): int(g["subject"].nunique())
                    for s, g in others.groupby(others["split"].astype(str))
                },
            }
        )
    return {
        "synthetic": bool(entries) and all(e["synthetic"] for e in entries),
        "split": split,
        "subjects": sum(e["subjects"] for e in entries),
        "scans": sum(e["scans"] for e in entries),
        "slices": sum(e["slices"] for e in entries),
        "contrasts": sorted({m for e in entries for m in e["slices_per_contrast"]}),
        "datasets": entries,
    }


def _licence(data: Mapping[str, Any]) -> tuple[str, str]:
    if data["synthetic"]:
        return "mit", (
            "Trained on synthetic data only (brainssl.synth phantoms, no person's scan): the weights "
            "are released under the MIT licence of brainssl (LICENSE)."
        )
    real = [f"{e['name']} ({e['homepage']})" for e in data["datasets"] if not e["synthetic"]]
    return "other", (
        "Trained on real data: " + "; ".join(real) + ". The data-use terms of these datasets may "
        "restrict how the weights are used and shared; read them before redistributing. The code "
        "that made the weights is MIT-licensed (brainssl)."
    )


def _limitations(card: Mapping[str, Any], data: Mapping[str, Any]) -> list[str]:
    lines = []
    if data["synthetic"]:
        lines.append(
            "Trained on synthetic phantoms only: embeddings of real scans are out of distribution, and "
            "the probe numbers in this card say nothing about real data."
        )
    lines += [
        "Images must go through the recipe above (brainssl embed does so); another spacing, skull "
        "stripping, normalisation or slice intensity mapping changes the embeddings.",
        f"2D axial slices of {card['input']['size'][0]} px only: there is no 3D context, and a scan's "
        "embedding is the mean of its slice embeddings inside the pooling window.",
        "Contrasts seen in training: " + (", ".join(data["contrasts"]) or "none") + "; other contrasts, "
        "and other anatomy or field strengths than the training data hold, are out of distribution.",
        f"Trained on {data['subjects']} subjects ({data['slices']} slices); the kNN probe is scored on "
        "held-out subjects of the same datasets, so it measures within-distribution quality.",
        "Biases of the training data (sites, scanners, age range, pathologies) carry into the embeddings.",
    ]
    return lines


def _intended_use(data: Mapping[str, Any]) -> dict[str, list[str]]:
    return {
        "intended": [
            "Research: frozen features of brain MRI slices and scans (kNN or linear probes, retrieval, "
            "clustering, quality checks) and an initialisation for fine-tuning.",
            "Reproducing and extending the brainssl benchmark"
            + (" (these weights come from its synthetic demo)." if data["synthetic"] else "."),
        ],
        "out_of_scope": [
            "Diagnosis, triage, treatment or any other decision about a person: the encoder is not a "
            "medical device and has not been validated clinically.",
            "Identifying people: embeddings of a scan must be handled as the scan itself.",
        ],
    }


def release_card(
    card: Mapping[str, Any],
    index: Any,
    release: Mapping[str, Any],
    *,
    name: str,
    landmarks: Mapping[str, Mapping[str, Any]] | None = None,
    index_sha256: str | None = None,
) -> dict[str, Any]:
    """The complete model card: the training card plus recipe, training data, licence and use.

    Args:
        card: the card the training job wrote (architecture, metrics, probe, hashes).
        index: the slice index the encoder was trained on (a DataFrame).
        release: :func:`release_params` of the run's config.
        name: the encoder's name (``moco-vit_tiny``).
        landmarks: dataset -> ``{contrast: NyulLandmarks.to_dict()}`` for the nyul datasets.
        index_sha256: hash of the index file.

    Returns:
        The card, JSON-able.
    """
    from brainssl import __version__

    data = training_data_summary(index, release["datasets"])
    recipes = _recipes(release, landmarks or {})
    default = recipes[DEFAULT_RECIPE]
    licence, licence_note = _licence(data)
    out = copy.deepcopy(dict(card))
    out.update(
        format=CARD_FORMAT,
        name=name,
        brainssl_version=__version__,
        intensity_mapping={
            "percentiles": default["slices"]["intensity_percentiles"],
            "region": "brain mask of the preprocessed volume (non-zero voxels without one)",
            "to": [0.0, 1.0],
            "clip": True,
            "background": 0.0,
            "store_dtype": default["slices"]["dtype"],
            "encoder_input": "stored value / 255 (uint8) or as stored (float16), in [0, 1]",
            "text": default["slices"]["intensity_mapping"],
        },
        recipe={
            "format": "brainssl-recipe/1",
            "default": DEFAULT_RECIPE,
            "recipes": recipes,
            "pooling": {
                "window": list(release["pool_window"]),
                "statistic": "mean",
                "unit": _POOL_UNIT,
                "position": "0 at the lowest axial slice holding brain, 1 at the highest",
                "fallback": "all slices of a scan when none lies inside the window (2D images)",
            },
        },
        training_data=data,
        license=licence,
        license_note=licence_note,
        intended_use=_intended_use(data),
        limitations=_limitations(out, data),
    )
    if index_sha256 is not None:
        out["training_manifest_sha256"] = index_sha256
    return out


# ------------------------------------------------------------------------------------ reading


def recipe_names(card: Mapping[str, Any]) -> list[str]:
    """The recipes a card holds (``default`` and one per training dataset)."""
    return list(card.get("recipe", {}).get("recipes", {}))


def recipe(card: Mapping[str, Any], name: str | None = None) -> dict[str, Any]:
    """One recipe of a card as settings mappings: what ``brainssl embed`` applies.

    Args:
        card: a complete model card (:func:`release_card`).
        name: ``default`` or a training dataset's key; ``None`` for the card's default.

    Returns:
        ``preprocess`` (:class:`~brainssl.preprocess.PreprocessSettings` mapping, or ``None``
        for 2D image sets), ``landmarks`` (contrast -> Nyúl landmarks mapping, or ``{}``),
        ``slices`` (:class:`~brainssl.slices.SliceSettings` mapping) and ``pool_window``.

    Raises:
        KeyError: when the card has no recipe, or not this one (the message names those it has).
    """
    section = card.get("recipe")
    if not section:
        raise KeyError(
            f"the model card of {card.get('name', 'this encoder')} holds no recipe (format "
            f"{card.get('format', '?')}): use the export folder the pretrain_export rule writes "
            "(results/pretrain/<run>/export/)"
        )
    chosen = name or section["default"]
    if chosen not in section["recipes"]:
        raise KeyError(f"no recipe {chosen!r} in this model card; it has {recipe_names(card)}")
    entry = section["recipes"][chosen]
    pre = entry["preprocess"]
    return {
        "name": chosen,
        "preprocess": None if pre is None else {k: v for k, v in pre.items() if k not in _RECIPE_FACTS},
        "landmarks": {} if pre is None else dict(pre.get("nyul_landmarks") or {}),
        "slices": {k: entry["slices"][k] for k in RECIPE_SLICE_KEYS},
        "pool_window": list(section["pooling"]["window"]),
    }


def dumps(card: Mapping[str, Any]) -> str:
    """The card as indented JSON text."""
    return json.dumps(card, indent=2, sort_keys=False, default=str) + "\n"
