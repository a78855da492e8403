"""Export an encoder as safetensors + JSON model card, and load it back without unpickling.

``encoder.safetensors`` holds the weights and, in its string metadata, the architecture
(``brainssl.encoder``: the :func:`~brainssl.pretrain.backbones.build_encoder` arguments)
so that the file alone rebuilds the model. ``model_card.json`` beside it repeats the
architecture and adds what a user needs to trust and use the weights: input size and
channels, the intensity mapping the slices went through, hashes of the training manifest
and config, training metrics and kNN probe results.

:func:`write_export` turns a training run's folder into the standard export (rule
``pretrain_export``): the same weights beside the complete model card (the recipe as numbers,
training data, licence, intended use and limitations; :mod:`brainssl.modelcard`), a Hugging
Face-style ``README.md`` and a ``config.json`` that builds the architecture for plain
``safetensors`` loading (:mod:`brainssl.modelcard_hub`).
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save
from torch import nn

from brainssl.io import sha256_file, write_bytes, write_json, write_table, write_text

from .backbones import build_encoder

__all__ = [
    "export_encoder",
    "load_encoder",
    "encoder_spec",
    "probe_table",
    "write_export",
    "ENCODER_FILE",
    "CARD_FILE",
]

logger = logging.getLogger(__name__)

ENCODER_FILE = "encoder.safetensors"
CARD_FILE = "model_card.json"
_META_KEY = "brainssl.encoder"


def encoder_spec(encoder: nn.Module) -> dict[str, Any]:
    """Return ``{"arch": ..., **config}``: everything :func:`build_encoder` needs."""
    return {"arch": encoder.arch, **encoder.config}  # type: ignore[dict-item]


def export_encoder(
    encoder: nn.Module,
    weights_path: str | Path,
    card_path: str | Path,
    *,
    intensity: dict[str, Any] | str,
    manifest_sha256: str | None,
    config_sha256: str | None,
    method: str,
    metrics: dict[str, Any] | None = None,
    knn: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the encoder's weights (safetensors) and its model card (JSON), both atomically.

    Args:
        encoder: a :func:`build_encoder` result (trained or random).
        weights_path: destination ``.safetensors``.
        card_path: destination ``.json``.
        intensity: how slices were mapped to the ``[0, 1]`` input (from the slice stage).
        manifest_sha256: hash of the training slice index / manifest.
        config_sha256: hash of the pretraining config slice.
        method: ``moco``, ``dino`` or ``random``.
        metrics: final training metrics (loss, steps, images/s...).
        knn: kNN probe accuracies by probe name.
        extra: anything else to record.

    Returns:
        The model card as written.
    """
    spec = encoder_spec(encoder)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in encoder.state_dict().items()}
    # One metadata key: safetensors writes the metadata map in hash order, so two keys come out in
    # either order and two runs would write different bytes for the same weights.
    blob = save(tensors, metadata={_META_KEY: json.dumps(spec, sort_keys=True)})
    write_bytes(weights_path, blob)
    card = {
        "format": "brainssl-encoder-card/1",
        "method": method,
        "architecture": spec,
        "input": {
            "size": [spec["img_size"], spec["img_size"]],
            "in_chans": spec["in_chans"],
            "range": [0.0, 1.0],
            "layout": "(B, in_chans, H, W) float",
        },
        "embedding_dim": int(encoder.embed_dim),  # type: ignore[arg-type]
        "intensity_mapping": intensity,
        "training_manifest_sha256": manifest_sha256,
        "config_sha256": config_sha256,
        "weights_file": Path(weights_path).name,
        "weights_sha256": sha256_file(weights_path),
        "n_parameters": int(sum(t.numel() for t in tensors.values())),
        "training_metrics": metrics or {},
        "knn_probe": knn or {},
        **(extra or {}),
    }
    write_json(card_path, card)
    logger.info("exported %s encoder %s to %s", method, spec["arch"], weights_path)
    return card


def _check_safetensors(path: Path) -> None:
    """Refuse anything that is not a safetensors file (a pickle must never reach a loader)."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        raise ValueError(f"{path} is too short to be a safetensors file")
    (n,) = struct.unpack("<Q", head[:8])
    if head[8:9] != b"{" or n > path.stat().st_size:
        raise ValueError(f"{path} is not a safetensors file (refusing to unpickle or guess its format)")


def load_encoder(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild an exported encoder from its safetensors file (or the folder holding it).

    Args:
        path: ``encoder.safetensors`` or its folder.
        device: where to put the model.

    Returns:
        The encoder in eval mode; ``forward(x)`` gives ``(B, D)`` embeddings of ``(B, 1, H, W)``
        inputs in ``[0, 1]``.

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: if the file is not safetensors or lacks the architecture metadata.
    """
    path = Path(path)
    if path.is_dir():
        path = path / ENCODER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no encoder weights at {path}")
    _check_safetensors(path)
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    if _META_KEY not in meta:
        raise ValueError(f"{path} has no {_META_KEY!r} metadata; was it written by export_encoder?")
    spec = json.loads(meta[_META_KEY])
    arch = spec.pop("arch")
    encoder = build_encoder(arch, **spec)
    encoder.load_state_dict(load_file(str(path)), strict=True)
    return encoder.to(device).eval()


def write_export(
    run_dir: str | Path,
    out_dir: str | Path,
    index: str | Path,
    release: Mapping[str, Any],
    *,
    name: str | None = None,
    landmarks: Mapping[str, str | Path] | None = None,
) -> dict[str, Any]:
    """Write the standard export of a trained encoder (what rule ``pretrain_export`` calls).

    ``out_dir`` receives ``encoder.safetensors`` (the run's weights, byte for byte),
    ``model_card.json`` (the complete card), ``README.md`` (YAML front matter for model hubs, then
    the card as text) and ``config.json`` (:func:`~brainssl.modelcard_hub.hub_config`).

    Args:
        run_dir: the training run's folder (``encoder.safetensors`` and ``model_card.json``).
        out_dir: the export folder.
        index: the slice index the encoder was trained on (Parquet).
        release: :func:`brainssl.modelcard.release_params` of the run's config.
        name: the encoder's name (default: ``run_dir``'s name).
        landmarks: dataset -> Nyúl landmarks file, for datasets normalised with ``nyul``.

    Returns:
        The complete model card.

    Raises:
        ValueError: when the weights are not safetensors, or differ from the card's hash, or the
            card names another training index than ``index``.
    """
    from brainssl import modelcard, modelcard_hub

    run, out = Path(run_dir), Path(out_dir)
    weights = run / ENCODER_FILE
    _check_safetensors(weights)
    card = json.loads((run / CARD_FILE).read_text())
    if sha256_file(weights) != card["weights_sha256"]:
        raise ValueError(f"{weights} differs from the sha256 its model card records")
    index_sha = sha256_file(index)
    trained_on = card.get("training_manifest_sha256")
    if trained_on and trained_on != index_sha:
        raise ValueError(f"{run} was trained on another slice index than {index} (sha256 differs)")
    frame = pd.read_parquet(index, columns=["dataset", "subject", "session", "contrast", "split"])
    # {contrast: NyulLandmarks.to_dict()}, as brainssl.preprocess.save_landmarks writes them
    marks = {dataset: json.loads(Path(path).read_text()) for dataset, path in (landmarks or {}).items()}
    full = modelcard.release_card(
        card, frame, release, name=name or run.name, landmarks=marks, index_sha256=index_sha
    )
    write_bytes(out / ENCODER_FILE, weights.read_bytes())
    write_json(out / CARD_FILE, full)
    write_text(out / modelcard_hub.README_FILE, modelcard_hub.render_readme(full))
    write_json(out / modelcard_hub.CONFIG_FILE, modelcard_hub.hub_config(full))
    logger.info("exported %s to %s (%d recipes)", full["name"], out, len(modelcard.recipe_names(full)))
    return full


def probe_table(card_paths: Sequence[str | Path], out: str | Path | None = None) -> pd.DataFrame:
    """Tabulate the kNN probe of several exported encoders, pretrained beside random.

    Args:
        card_paths: ``model_card.json`` files (their folder names are the encoder names).
        out: when given, the table is also written there (TSV, atomically).

    Returns:
        One row per (encoder, probe): ``encoder``, ``method``, ``arch``, ``probe``,
        ``accuracy``, ``random_accuracy`` (the random-initialised encoder of the same arch) and
        ``final_loss`` (empty for the baseline).
    """
    rows = []
    for path in card_paths:
        card = json.loads(Path(path).read_text())
        for probe, accuracy in sorted(card.get("knn_probe", {}).items()):
            rows.append(
                {
                    "encoder": Path(path).parent.name,
                    "method": card["method"],
                    "arch": card["architecture"]["arch"],
                    "probe": probe,
                    "accuracy": float(accuracy),
                    "final_loss": card.get("training_metrics", {}).get("final_loss"),
                }
            )
    table = pd.DataFrame(rows, columns=["encoder", "method", "arch", "probe", "accuracy", "final_loss"])
    baseline = table[table["method"] == "random"].set_index(["arch", "probe"])["accuracy"]
    keys = pd.MultiIndex.from_frame(table[["arch", "probe"]])
    table.insert(5, "random_accuracy", baseline.reindex(keys).to_numpy())
    table = table.sort_values(["arch", "probe", "method"], ignore_index=True)
    if out is not None:
        write_table(out, table)
    return table
