"""Natural-image baselines as brainssl exports, and synthetic checkpoints in the released layouts.

:func:`natural_from_index` is what rule ``pretrain_natural`` calls: it loads one
``pretrain.natural`` entry through :func:`~brainssl.pretrain.natural.load_baseline`, runs the kNN
probe the random baseline gets, and exports the encoder with a model card that records where the
weights came from (layout, file, sha256, where to obtain them). :func:`synthetic_checkpoint`
stands in for a download: a random-init RGB checkpoint written as that layout's releases are, so
that tests and the test config read it back through the same adapter as real weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from brainssl.architectures import ARCHS

from .backbones import build_encoder
from .natural import OBTAIN, TORCHVISION_VIT, NaturalBaseline, load_baseline, rename

__all__ = ["SYNTHETIC_FILES", "natural_from_index", "synthetic_checkpoint"]

#: The file name a synthetic checkpoint of each layout gets (in the format its releases use).
SYNTHETIC_FILES = {
    "timm_vit": "model.safetensors",
    "timm_resnet": "model.safetensors",
    "torchvision_vit": "vit_synthetic.pth",
    "torchvision_resnet": "resnet_synthetic.pth",
    "dino": "dino_synthetic_full_checkpoint.pth",
    "dinov2": "dinov2_synthetic_pretrain.pth",
}
#: Native (input side, patch) of the releases: 224 px with patch 16, DINOv2 518 px with patch 14.
_NATIVE = {"dinov2": (518, 14)}
_CLASSES = 1000


def synthetic_checkpoint(
    layout: str, arch: str, path: str | Path, *, depth: int | None = None, seed: int = 0
) -> Path:
    """Write a random-init RGB checkpoint of ``arch`` in ``layout``'s key names and file format.

    As a release would be: three input channels, the native position grid, the classifier head
    (``head``, ``heads.head`` or ``fc``; 1000 classes), DINOv2's ``mask_token`` and LayerScale,
    DINO's full checkpoint (``teacher``/``student`` with their SSL heads, ``epoch``, ``args``);
    safetensors for timm, torch files for the others.

    Args:
        layout: one of :data:`~brainssl.pretrain.natural.LAYOUTS`.
        arch: the architecture (``dinov2`` and the ``*_vit`` layouts need a ViT, ``*_resnet`` a ResNet).
        path: the file to write (its folder is created).
        depth: ViT depth (None: the architecture's).
        seed: initialisation seed.

    Returns:
        ``path``.

    Raises:
        ValueError: if ``arch`` is not of the layout's family.
    """
    vit = ARCHS[arch]["family"] == "vit"
    if layout != "dino" and vit != (not layout.endswith("resnet")):
        raise ValueError(f"layout {layout} holds a {'ResNet' if vit else 'ViT'}, not {arch}")
    size, patch = _NATIVE.get(layout, (224, 16))
    overrides = {"patch_size": patch, **({"depth": depth} if depth else {})} if vit else {}
    head = "head." if vit else "fc."
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = build_encoder(arch, img_size=size, in_chans=3, **overrides)
        state = {k: _trained_looking(k, v.detach().clone()) for k, v in encoder.state_dict().items()}
        width = int(encoder.embed_dim)  # type: ignore[arg-type]
        state[f"{head}weight"] = torch.randn(_CLASSES, width) * 0.02
        state[f"{head}bias"] = torch.zeros(_CLASSES)
        if layout == "dinov2":
            state["mask_token"] = torch.zeros(1, width)
            for i in range(len(encoder.blocks)):  # type: ignore[arg-type]
                state.update({f"blocks.{i}.ls{j}.gamma": torch.rand(width) + 0.5 for j in (1, 2)})
    if layout == "torchvision_vit":
        state = {rename(k, TORCHVISION_VIT, to_ours=False): v for k, v in state.items()}
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if layout.startswith("timm"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(out), metadata={"format": "pt"})
        return out
    if layout == "dino":  # the full checkpoint: both networks inside their SSL wrappers
        backbone = {k: v for k, v in state.items() if not k.startswith(head)}
        ssl_head = {
            "head.mlp.0.weight": torch.randn(64, width),
            "head.last_layer.weight_g": torch.ones(256, 1),
        }
        state = {
            "teacher": {**{f"backbone.{k}": v for k, v in backbone.items()}, **ssl_head},
            "student": {**{f"module.backbone.{k}": _nudged(v) for k, v in backbone.items()}, **ssl_head},
            "epoch": 100,
            "args": argparse.Namespace(arch=arch, patch_size=patch, out_dim=256),
        }
    torch.save(state, out)
    return out


def _trained_looking(key: str, tensor: torch.Tensor) -> torch.Tensor:
    """Biases, norm gains and batch-norm statistics off their initial 0 and 1, as trained ones are."""
    if not tensor.is_floating_point() or tensor.ndim != 1:
        return tensor
    if key.endswith("running_var"):
        return torch.rand_like(tensor) + 0.5
    scale = 0.1 * torch.randn_like(tensor)
    return tensor + scale if key.endswith(("bias", "running_mean")) else tensor * (1 + scale)


def _nudged(tensor: torch.Tensor) -> torch.Tensor:
    """The synthetic student: the teacher plus 0.01 (counters such as ``num_batches_tracked`` kept)."""
    return tensor + 0.01 if tensor.is_floating_point() else tensor


def natural_from_index(
    index: str | Path,
    out_dir: str | Path,
    baseline: Mapping[str, Any],
    settings: Mapping[str, Any],
    probe: Mapping[str, Any],
    *,
    root: str | Path | None = None,
    intensity: str | None = None,
) -> dict[str, Any]:
    """Export one natural-image baseline as a brainssl encoder with its kNN probe (what the rule calls).

    Args:
        index: the merged slice index (the probe slices come from it).
        out_dir: ``results/pretrain/<name>``: ``encoder.safetensors`` and ``model_card.json``
            (synthetic weights are written to ``source/``, read back and removed: the card keeps
            their sha256, the seed rebuilds them).
        baseline: a ``pretrain.natural`` entry (:class:`~brainssl.pretrain.natural.NaturalBaseline`).
        settings: the random baseline's run settings (``img_size``, ``vit_depth``, kNN, ``seed``).
        probe: keyword arguments of :func:`~brainssl.pretrain.data.slice_probe_sets`.
        root: folder that relative array paths are relative to.
        intensity: the slice stage's intensity mapping, for the model card.

    Returns:
        The model card.
    """
    from brainssl.io import sha256_file
    from brainssl.slices import INTENSITY_MAPPING

    from .data import slice_probe_sets
    from .export import CARD_FILE, ENCODER_FILE, export_encoder
    from .probe import run_probes
    from .settings import PretrainSettings

    entry, run = NaturalBaseline.from_dict(baseline), PretrainSettings.from_dict(settings)
    out = Path(out_dir)
    path = Path(entry.weights)
    if entry.synthetic:
        target = out / "source" / SYNTHETIC_FILES[entry.layout]
        path = synthetic_checkpoint(entry.layout, entry.arch, target, depth=run.vit_depth, seed=run.seed)
    encoder, info = load_baseline(path, entry.arch, run.img_size, entry.layout, entry.checkpoint_key)
    probes = slice_probe_sets(index, root=root, seed=run.seed, **probe)
    knn = run_probes(encoder, probes, run.img_size, torch.device("cpu"), run.knn_k, run.knn_temperature)
    source = {
        **asdict(entry),
        "synthetic": entry.synthetic,
        **info,
        "file": str(path),
        "file_sha256": sha256_file(path),
    }
    if entry.synthetic:  # a stand-in for a download, as large as the encoder: not kept twice
        path.unlink()
        path.parent.rmdir()
    recipe = {
        "baseline": asdict(entry),
        "img_size": run.img_size,
        "seed": run.seed,
        "file": source["file_sha256"],
    }
    return export_encoder(
        encoder,
        out / ENCODER_FILE,
        out / CARD_FILE,
        intensity=intensity or INTENSITY_MAPPING,
        manifest_sha256=None,
        config_sha256=hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest(),
        method="natural",
        knn=knn,
        extra={
            "natural_source": {**source, "obtain": OBTAIN[info["layout"]]},
            "probe_index_sha256": sha256_file(index),
        },
    )
