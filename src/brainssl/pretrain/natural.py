"""Natural-image baselines: ImageNet-style checkpoints in their released layouts as one-channel encoders.

The seed claims compare the MRI encoders with natural-image ones, so those must enter the
workflow like any encoder: rule ``pretrain_natural`` turns each ``pretrain.natural`` entry into a
brainssl export (:func:`~brainssl.pretrain.natural_export.natural_from_index`) that embed, probes,
frozen and dense tasks read. One conversion point, :func:`load_baseline`:

1. read the file: safetensors, or ``.pth``/``.pt`` through ``torch.load(weights_only=True)``
   (tensors and containers only; ``argparse.Namespace`` too, which DINO full checkpoints hold);
2. unwrap a training checkpoint (DINO's ``teacher``/``student``, ``model``, ``state_dict``) and
   the ``module.`` / ``backbone.`` prefixes;
3. rename the layout's keys to ours (:mod:`~brainssl.pretrain.backbones` uses timm/DINO ViT and
   torchvision ResNet names), drop classifier and SSL heads and DINOv2's ``mask_token``, and
   fold LayerScale (``ls1.gamma``, ``ls2.gamma``) exactly into the linear layer before it;
4. read the architecture off the tensors (ViT width, depth, patch, MLP ratio; ResNet block and
   stage depths) and check it against ``arch``, naming what differs;
5. build the encoder and load strictly, the RGB first layer summed to one channel
   (:func:`~brainssl.pretrain.backbones.load_natural_image_weights`).

:func:`~brainssl.pretrain.natural_export.synthetic_checkpoint` writes a random-init RGB checkpoint
in a layout's real key names and file format (heads included), so the test config reads a file of
every layout back through the same adapters as real weights. Where to get real ones: :data:`OBTAIN`.
"""

from __future__ import annotations

import argparse
import logging
import math
import pickle
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from brainssl.architectures import ARCHS
from brainssl.settings import from_mapping, setting

from .backbones import build_encoder, load_natural_image_weights

__all__ = [
    "LAYOUTS",
    "OBTAIN",
    "SIGNATURES",
    "SYNTHETIC",
    "TORCHVISION_VIT",
    "NaturalBaseline",
    "detect_layout",
    "family",
    "load_baseline",
    "read_checkpoint",
    "rename",
    "to_brainssl_keys",
]

logger = logging.getLogger(__name__)

#: Checkpoint layouts that load (timm and torchvision ResNets share torchvision's key names).
LAYOUTS = ("timm_vit", "timm_resnet", "torchvision_vit", "torchvision_resnet", "dino", "dinov2")
#: The ``weights`` value that writes a random-init checkpoint in the entry's layout.
SYNTHETIC = "synthetic"
#: Where released weights of each layout are (the model card repeats it).
OBTAIN = {
    "timm_vit": "timm hub, model.safetensors of huggingface.co/timm/"
    "vit_tiny_patch16_224.augreg_in21k_ft_in1k (vit_tiny), "
    "vit_small_patch16_224.augreg_in21k_ft_in1k (vit_small), "
    "vit_base_patch16_224.augreg2_in21k_ft_in1k (vit_base)",
    "timm_resnet": "timm hub, model.safetensors of huggingface.co/timm/resnet18.a1_in1k or resnet50.a1_in1k",
    "torchvision_vit": "https://download.pytorch.org/models/vit_b_16-c867db91.pth "
    "(torchvision ViT_B_16_Weights.IMAGENET1K_V1; vit_base)",
    "torchvision_resnet": "https://download.pytorch.org/models/resnet18-f37072fd.pth, "
    "resnet50-0676ba61.pth (IMAGENET1K_V1) or resnet50-11ad3fa6.pth (IMAGENET1K_V2)",
    "dino": "github.com/facebookresearch/dino: https://dl.fbaipublicfiles.com/dino/dino_deitsmall16_pretrain/"
    "dino_deitsmall16_pretrain.pth (vit_small; or its _full_checkpoint.pth), dino_vitbase16_pretrain "
    "(vit_base), dino_resnet50_pretrain (resnet50)",
    "dinov2": "github.com/facebookresearch/dinov2: https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/"
    "dinov2_vits14_pretrain.pth (vit_small), dinov2_vitb14 (vit_base); not the _reg (register) variants",
}
_WRAPPERS = ("model", "state_dict", "module")
_STRIPPED = ("module.", "_orig_mod.")
#: (ours, theirs) key templates of torchvision's ViT; ``{i}`` is a block; a trailing dot, a prefix.
TORCHVISION_VIT = (
    ("cls_token", "class_token"),
    ("pos_embed", "encoder.pos_embedding"),
    ("patch_embed.proj.", "conv_proj."),
    ("blocks.{i}.norm1.", "encoder.layers.encoder_layer_{i}.ln_1."),
    ("blocks.{i}.attn.qkv.weight", "encoder.layers.encoder_layer_{i}.self_attention.in_proj_weight"),
    ("blocks.{i}.attn.qkv.bias", "encoder.layers.encoder_layer_{i}.self_attention.in_proj_bias"),
    ("blocks.{i}.attn.proj.", "encoder.layers.encoder_layer_{i}.self_attention.out_proj."),
    ("blocks.{i}.norm2.", "encoder.layers.encoder_layer_{i}.ln_2."),
    ("blocks.{i}.mlp.fc1.", "encoder.layers.encoder_layer_{i}.mlp.0."),
    ("blocks.{i}.mlp.fc2.", "encoder.layers.encoder_layer_{i}.mlp.3."),
    ("blocks.{i}.mlp.fc1.", "encoder.layers.encoder_layer_{i}.mlp.linear_1."),  # torchvision < 0.13
    ("blocks.{i}.mlp.fc2.", "encoder.layers.encoder_layer_{i}.mlp.linear_2."),
    ("norm.", "encoder.ln."),
    ("head.pre_logits.", "heads.pre_logits."),  # the classifier (dropped with head.*)
    ("head.", "heads.head."),
)
#: Keys that say which layout a state dict is in (all must be there).
SIGNATURES = {
    "torchvision_vit": ("conv_proj.weight", "class_token", "encoder.pos_embedding"),
    "dinov2": ("patch_embed.proj.weight", "cls_token", "pos_embed"),
    "timm_vit": ("patch_embed.proj.weight", "cls_token", "pos_embed"),
    "torchvision_resnet": ("conv1.weight", "layer1.0.conv1.weight", "layer4.0.conv1.weight"),
}
SIGNATURES["timm_resnet"] = SIGNATURES["torchvision_resnet"]


@dataclass(frozen=True)
class NaturalBaseline:
    """One natural-image baseline (a ``pretrain.natural`` entry)."""

    name: str = setting(
        description="Encoder name in the results: letters, digits and '_' (no '-', which names "
        "trained runs), not 'classical'.",
        pattern="^(?!classical$)[A-Za-z0-9_]+$",
    )
    arch: str = setting(
        description="Architecture the weights load into; its width must be theirs (ViT depth and "
        "patch come from the weights).",
        enum=tuple(ARCHS),
    )
    weights: str = setting(
        description="Checkpoint file (safetensors, or .pth/.pt read as tensors only), relative to "
        "the working folder; 'synthetic' writes a random-init one in `layout` (tests, no download).",
        min_length=1,
    )
    layout: str = setting(
        "auto",
        "Key layout of the checkpoint; auto detects it from the keys (synthetic weights need one).",
        enum=("auto", *LAYOUTS),
    )
    checkpoint_key: str = setting(
        "teacher",
        "Network of a DINO full checkpoint to load (DINO evaluates the teacher); plain state dicts "
        "ignore it.",
        enum=("teacher", "student"),
    )

    def __post_init__(self) -> None:
        if self.synthetic and self.layout == "auto":
            raise ValueError(f"natural baseline {self.name}: weights: {SYNTHETIC} needs a layout, not auto")

    @property
    def synthetic(self) -> bool:
        """Whether the job writes the checkpoint itself (random init in the real layout)."""
        return self.weights == SYNTHETIC

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> NaturalBaseline:
        """Build from a ``pretrain.natural`` entry (see :func:`brainssl.settings.from_mapping`)."""
        return from_mapping(cls, values, section="pretrain.natural")


# ---------------------------------------------------------------------------- reading


def read_checkpoint(path: str | Path) -> Any:
    """Read a safetensors file, or a torch file as tensors and containers only (never arbitrary objects).

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: if the file is neither format, or a pickle holds other objects.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no natural-image weights at {path}")
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < path.stat().st_size:
        from safetensors.torch import load_file

        return load_file(str(path))
    if not head.startswith((b"PK", b"\x80")):  # torch's zip format, or a legacy pickle
        raise ValueError(f"{path} is neither safetensors nor a torch checkpoint (first bytes {head[:4]!r})")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path}: refusing to unpickle anything but tensors and containers: {error}"
        ) from None


def _unwrap(checkpoint: Any, checkpoint_key: str) -> tuple[dict[str, torch.Tensor], str | None]:
    """The tensors of a (possibly wrapped) checkpoint, prefixes stripped, and the wrapper key used."""
    wrapper = None
    while isinstance(checkpoint, Mapping) and not any(
        isinstance(v, torch.Tensor) for v in checkpoint.values()
    ):
        key = next((k for k in (checkpoint_key, *_WRAPPERS) if isinstance(checkpoint.get(k), Mapping)), None)
        if key is None:
            break
        checkpoint, wrapper = checkpoint[key], key
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"checkpoint holds a {type(checkpoint).__name__}, not a state dict")
    tensors = {str(k): v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    for prefix in _STRIPPED:
        tensors = {k.removeprefix(prefix): v for k, v in tensors.items()}
    if any(k.startswith("backbone.") for k in tensors):  # an SSL wrapper: the backbone, not its heads
        tensors = {k.removeprefix("backbone."): v for k, v in tensors.items() if k.startswith("backbone.")}
    if not tensors:
        raise ValueError(f"checkpoint holds no tensors (top-level keys: {sorted(map(str, checkpoint))[:10]})")
    return tensors, wrapper


def detect_layout(keys: Any, wrapper: str | None = None) -> str | None:
    """The layout whose signature keys a state dict holds (None when none fits).

    DINOv2 has timm's ViT names plus ``mask_token`` (or chunked ``blocks.<chunk>.<block>.``). A ViT or
    ResNet inside a ``teacher``/``student`` wrapper is a DINO checkpoint; a plain DINO backbone has
    timm's names and loads as ``timm_vit`` (the same mapping).
    """
    keys = set(keys)
    for layout in ("torchvision_vit", "timm_vit", "torchvision_resnet"):
        if all(k in keys for k in SIGNATURES[layout]):
            chunked = any(re.match(r"blocks\.\d+\.\d+\.norm1\.weight$", k) for k in keys)
            if layout == "timm_vit" and ("mask_token" in keys or chunked):
                return "dinov2"
            return "dino" if wrapper in ("teacher", "student") else layout
    return None


def _template(pattern: str) -> re.Pattern[str]:
    body = re.escape(pattern).replace(re.escape("{i}"), r"(\d+)")
    return re.compile(f"^{body}(.*)$" if pattern.endswith(".") else f"^{body}()$")


def rename(key: str, pairs: tuple[tuple[str, str], ...], to_ours: bool) -> str:
    """Rename one key by the first matching ``(ours, theirs)`` template (unmatched keys stay)."""
    for ours, theirs in pairs:
        source, target = (theirs, ours) if to_ours else (ours, theirs)
        match = _template(source).match(key)
        if match:
            groups = match.groups()
            block, rest = (groups[0], groups[1]) if "{i}" in source else (None, groups[0])
            return (target.replace("{i}", block) if block is not None else target) + rest
    return key


def family(layout: str, tensors: Mapping[str, torch.Tensor]) -> str:
    """``vit`` or ``resnet``: what a state dict in ``layout`` holds (DINO released both)."""
    if layout == "dino":
        return "resnet" if "conv1.weight" in tensors else "vit"
    return "resnet" if layout.endswith("resnet") else "vit"


def to_brainssl_keys(layout: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a layout's state dict to :mod:`~brainssl.pretrain.backbones` keys; drop heads, fold LayerScale.

    Raises:
        ValueError: for register tokens (``*_reg`` checkpoints), which these encoders do not have.
    """
    if layout == "torchvision_vit":
        tensors = {rename(k, TORCHVISION_VIT, to_ours=True): v for k, v in tensors.items()}
    if layout == "dinov2":  # training checkpoints chunk the blocks: blocks.<chunk>.<block>.
        tensors = {re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k): v for k, v in tensors.items()}
    for key in ("register_tokens", "reg_token"):
        if key in tensors:
            raise ValueError(
                f"the checkpoint has {tensors[key].shape[1]} register tokens ({key}); encoders with "
                "registers are not supported: use the plain weights (dinov2_vits14, not dinov2_vits14_reg)"
            )
    head = "fc." if family(layout, tensors) == "resnet" else "head."
    out = {k: v for k, v in tensors.items() if not k.startswith(head) and k != "mask_token"}
    return _fold_layer_scale(out)


def _fold_layer_scale(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fold each ``ls*.gamma`` into its linear layer: ``gamma * (W y + b) = (gamma W) y + gamma b``."""
    out = dict(state)
    for key in [k for k in state if re.match(r"blocks\.\d+\.ls[12]\.gamma$", k)]:
        gamma = out.pop(key).float()
        prefix = key.rsplit(".", 2)[0] + (".attn.proj" if key.endswith("ls1.gamma") else ".mlp.fc2")
        weight, bias = out[f"{prefix}.weight"], out[f"{prefix}.bias"]
        out[f"{prefix}.weight"] = (weight.float() * gamma[:, None]).to(weight.dtype)
        out[f"{prefix}.bias"] = (bias.float() * gamma).to(bias.dtype)
    return out


# ----------------------------------------------------------------------- architecture


def _indices(state: Mapping[str, Any], pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in state if (m := re.match(pattern, k))})


def _weights_architecture(family: str, state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """What the tensors say the network is (ViT width/depth/patch/MLP ratio; ResNet block/stages)."""
    if family == "resnet":
        block = "bottleneck" if "layer1.0.conv3.weight" in state else "basic"
        layers = [len(_indices(state, rf"layer{stage}\.(\d+)\.conv1\.weight$")) for stage in range(1, 5)]
        return {
            "family": "resnet",
            "block": block,
            "layers": layers,
            "in_chans": int(state["conv1.weight"].shape[1]),
        }
    needed = ("patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight")
    missing = [k for k in needed if k not in state]
    if missing:
        raise ValueError(f"a ViT state dict needs {list(needed)}; missing {missing}")
    proj, pos = state["patch_embed.proj.weight"], state["pos_embed"]
    blocks = _indices(state, r"blocks\.(\d+)\.")
    if blocks != list(range(len(blocks))):
        raise ValueError(f"ViT blocks are not numbered 0..n-1: {blocks}")
    if math.isqrt(pos.shape[1] - 1) ** 2 != pos.shape[1] - 1:
        raise ValueError(
            f"pos_embed holds {pos.shape[1]} tokens, not a class token plus a square grid "
            "(ViTs without a class-token position are not supported)"
        )
    width = int(proj.shape[0])
    return {
        "family": "vit",
        "embed_dim": width,
        "depth": len(blocks),
        "patch_size": int(proj.shape[-1]),
        "mlp_ratio": state["blocks.0.mlp.fc1.weight"].shape[0] / width,
        "in_chans": int(proj.shape[1]),
        "grid": math.isqrt(pos.shape[1] - 1),
    }


def _arch_overrides(arch: str, found: Mapping[str, Any]) -> dict[str, Any]:
    """The :func:`build_encoder` overrides that give ``arch`` the weights' shape, or what differs."""
    spec = ARCHS[arch]
    if spec["family"] != found["family"]:
        raise ValueError(f"the weights are a {found['family']}, arch {arch} a {spec['family']}")
    if found["family"] == "resnet":
        theirs, ours = (found["block"], found["layers"]), (spec["block"], list(spec["layers"]))
        if theirs != ours:
            fits = [a for a, s in ARCHS.items() if (s.get("block"), list(s.get("layers", ()))) == theirs]
            raise ValueError(
                f"the weights are a ResNet of {theirs[0]} blocks {theirs[1]} "
                f"({', '.join(fits) or 'no brainssl arch'}); arch {arch} has {ours[0]} blocks {ours[1]}"
            )
        return {}
    if found["embed_dim"] != spec["embed_dim"]:
        fits = [a for a, s in ARCHS.items() if s.get("embed_dim") == found["embed_dim"]]
        raise ValueError(
            f"the weights are a ViT of width {found['embed_dim']} ({', '.join(fits) or 'no brainssl arch'}); "
            f"arch {arch} has width {spec['embed_dim']}"
        )
    return {"depth": found["depth"], "patch_size": found["patch_size"], "mlp_ratio": found["mlp_ratio"]}


def load_baseline(
    path: str | Path, arch: str, img_size: int, layout: str = "auto", checkpoint_key: str = "teacher"
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a natural-image checkpoint into a one-channel encoder of ``arch``.

    Args:
        path: the checkpoint (safetensors or a torch file of tensors).
        arch: a :data:`~brainssl.architectures.ARCHS` name of the same width (ViT) or blocks (ResNet).
        img_size: the input side (the slice size); the position grid is resized to it.
        layout: one of :data:`LAYOUTS`, or ``auto`` to detect it from the keys.
        checkpoint_key: the network of a DINO full checkpoint (``teacher`` or ``student``).

    Returns:
        The encoder in eval mode, and what the model card records of the conversion.

    Raises:
        ValueError: when the file is not in ``layout`` (naming the keys expected and found), or its
            architecture differs from ``arch`` (naming what differs), or keys are left over or missing.
    """
    tensors, wrapper = _unwrap(read_checkpoint(path), checkpoint_key)
    detected = detect_layout(tensors, wrapper)
    if layout == "auto" and detected is None:
        raise ValueError(f"{path}: no known layout ({', '.join(LAYOUTS)}) fits keys {_sample(tensors)}")
    layout = detected if layout == "auto" else layout
    signature = _signature(layout, tensors)
    if layout not in LAYOUTS or not all(k in tensors for k in signature):
        raise ValueError(
            f"{path}: layout {layout!r} expects keys {list(signature)}; the file has {_sample(tensors)} "
            f"(detected layout: {detected or 'none'})"
        )
    net = family(layout, tensors)
    state = to_brainssl_keys(layout, tensors)
    found = _weights_architecture(net, state)
    try:
        encoder = build_encoder(arch, img_size=img_size, **_arch_overrides(arch, found))
        missing, unexpected = load_natural_image_weights(encoder, state)
    except (ValueError, RuntimeError) as error:
        raise ValueError(f"{path} ({layout}) does not load into {arch}: {error}") from None
    if missing or unexpected:
        raise ValueError(
            f"{path} ({layout}) does not fit {arch}: encoder tensors missing from the file {missing[:8]}, "
            f"file tensors the encoder lacks {unexpected[:8]} ({len(missing)} and {len(unexpected)} in all)"
        )
    info = {
        "layout": layout,
        "detected_layout": detected,
        "checkpoint_key": wrapper,
        "weights_architecture": found,
        "first_layer": "RGB filters summed to one channel" if found["in_chans"] == 3 else "one channel",
        "layer_scale_folded": any(k.endswith((".ls1.gamma", ".ls2.gamma")) for k in tensors),
    }
    logger.info("natural-image weights %s (%s) loaded into %s: %s", path, layout, arch, found)
    return encoder.eval(), info


def _signature(layout: str, tensors: Mapping[str, Any]) -> tuple[str, ...]:
    """The keys a file in ``layout`` holds (DINO: its ViT's or its ResNet's)."""
    if layout in SIGNATURES:
        return SIGNATURES[layout]
    return SIGNATURES["torchvision_resnet" if "conv1.weight" in tensors else "timm_vit"]


def _sample(tensors: Mapping[str, Any], n: int = 6) -> str:
    keys = sorted(tensors)
    return f"{keys[:n]}{f' ... ({len(keys)} keys)' if len(keys) > n else ''}"
