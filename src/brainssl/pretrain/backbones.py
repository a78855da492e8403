"""2D one-channel encoders: ViT-Tiny/Small/Base with patch 16 and ResNet-18/50, in plain torch.

MONAI's ViT needs ``einops`` and torchvision cannot load here (see FACTS.md), so both
families are written on plain torch. Parameter names follow the public reference
implementations (timm / facebookresearch/dino ``vision_transformer.py`` for the ViT,
torchvision ``resnet.py`` for the ResNet) so that :func:`load_natural_image_weights`
can take their state dicts directly.

Every encoder exposes:

* ``forward(x) -> (B, D)``: the pooled embedding (ViT: final-norm class token;
  ResNet: global average pool of the last stage);
* ``forward_features(x) -> list[(B, C_i, h_i, w_i)]``: four feature maps for dense heads
  (ViT: the patch tokens after blocks depth/4, depth/2, 3depth/4 and depth; ResNet: the
  outputs of the four stages, strides 4, 8, 16, 32);
* ``embed_dim`` (D) and ``config`` (the keyword arguments :func:`build_encoder` needs to
  rebuild the same architecture; stored in the exported model card).

References:
    Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words", ICLR (ViT).
    He et al. 2016, "Deep Residual Learning for Image Recognition", CVPR (ResNet).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from brainssl.architectures import ARCHS

__all__ = [
    "ARCHS",
    "VisionTransformer",
    "ResNet",
    "build_encoder",
    "is_vit",
    "load_natural_image_weights",
]

logger = logging.getLogger(__name__)


def is_vit(arch: str) -> bool:
    """Return whether ``arch`` names a Vision Transformer."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}")
    return ARCHS[arch]["family"] == "vit"


# ----------------------------------------------------------------------------- ViT


class _Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)  # (B, D, h, w)


class VisionTransformer(nn.Module):
    """ViT with a class token and learnable position embeddings, interpolated to any input size.

    Any input whose sides are multiples of ``patch_size`` is accepted (DINO's local crops are
    smaller than the global ones); the position embeddings are resized bicubically. Other sides
    are resized (bilinear) to the nearest multiple first, so that natural-image weights with
    another patch (DINOv2's 14) run on the slices every other encoder sees.

    Args:
        img_size: the training input side (pixels); sets the stored position-embedding grid
            (``round(img_size / patch_size)`` patches a side).
        patch_size: patch side (16 for ViT-*/16, 14 for DINOv2).
        in_chans: input channels (1 for MRI).
        embed_dim: token width D.
        depth: number of transformer blocks.
        num_heads: attention heads (``embed_dim % num_heads == 0``).
        mlp_ratio: MLP hidden width over D.

    Raises:
        ValueError: if ``embed_dim`` is not divisible by ``num_heads``.

    Example:
        >>> enc = VisionTransformer(img_size=32, embed_dim=24, depth=2, num_heads=2)
        >>> enc(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 24])
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 1,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.depth = depth
        grid = _patches(img_size, patch_size)
        self.patch_embed = _PatchEmbed(in_chans, embed_dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, embed_dim))
        self.blocks = nn.ModuleList(_Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.feature_blocks = sorted({max(0, depth * i // 4 - 1) for i in range(1, 5)})
        self.config: dict[str, Any] = {
            "img_size": img_size,
            "patch_size": patch_size,
            "in_chans": in_chans,
            "embed_dim": embed_dim,
            "depth": depth,
            "num_heads": num_heads,
            "mlp_ratio": mlp_ratio,
        }
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_vit_weights)

    def freeze_patch_embed(self) -> None:
        """Keep the patch projection at its random initialisation (MoCo v3, Sec. 5.3)."""
        for param in self.patch_embed.parameters():
            param.requires_grad_(False)

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        pos = self.pos_embed
        n_stored = pos.shape[1] - 1
        if n_stored == h * w:
            return pos
        side = int(math.isqrt(n_stored))
        grid = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid.float(), size=(h, w), mode="bicubic", align_corners=False)
        grid = grid.to(pos.dtype).permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([pos[:, :1], grid], dim=1)

    def _tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        if x.ndim != 4:
            raise ValueError(f"expected (B, C, H, W) input, got shape {tuple(x.shape)}")
        p = self.patch_size
        side = (_patches(x.shape[-2], p) * p, _patches(x.shape[-1], p) * p)
        if side != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=side, mode="bilinear", align_corners=False)
        x = self.patch_embed(x)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x + self._pos_embed(h, w), h, w

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return patch-token maps ``(B, D, H/p, W/p)`` after four evenly spaced blocks."""
        tokens, h, w = self._tokens(x)
        maps = []
        for i, block in enumerate(self.blocks):
            tokens = block(tokens)
            if i in self.feature_blocks:
                out = self.norm(tokens) if i == self.depth - 1 else tokens
                maps.append(out[:, 1:].transpose(1, 2).reshape(x.shape[0], self.embed_dim, h, w))
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the class-token embedding ``(B, D)`` after the final norm."""
        tokens, _, _ = self._tokens(x)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 0]


def _patches(side: int, patch_size: int) -> int:
    """Patches along a side of ``side`` pixels: the nearest whole number, at least one."""
    return max(1, int(side / patch_size + 0.5))


def _init_vit_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# -------------------------------------------------------------------------- ResNet


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + identity)


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    """ResNet with a stride-2 7x7 stem and max-pool (the ImageNet layout), one input channel.

    Args:
        block: ``"basic"`` (ResNet-18/34) or ``"bottleneck"`` (ResNet-50).
        layers: blocks per stage.
        in_chans: input channels.
        img_size: recorded in ``config`` only (any size works).
        zero_init_residual: start each residual branch's last BN at zero (Goyal et al. 2017).

    Example:
        >>> ResNet("basic", (1, 1, 1, 1))(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 512])
    """

    def __init__(
        self,
        block: str = "basic",
        layers: tuple[int, ...] | list[int] = (2, 2, 2, 2),
        in_chans: int = 1,
        img_size: int = 224,
        zero_init_residual: bool = True,
    ) -> None:
        super().__init__()
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', not {block!r}")
        if len(layers) != 4:
            raise ValueError(f"layers needs four stages, got {list(layers)}")
        cls = _BasicBlock if block == "basic" else _Bottleneck
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._stage(cls, 64, layers[0], 1)
        self.layer2 = self._stage(cls, 128, layers[1], 2)
        self.layer3 = self._stage(cls, 256, layers[2], 2)
        self.layer4 = self._stage(cls, 512, layers[3], 2)
        self.embed_dim = 512 * cls.expansion
        self.config: dict[str, Any] = {
            "block": block,
            "layers": list(layers),
            "in_chans": in_chans,
            "img_size": img_size,
        }
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:
            for m in self.modules():
                last = getattr(m, "bn3", None) if isinstance(m, _Bottleneck) else getattr(m, "bn2", None)
                if isinstance(m, _BasicBlock | _Bottleneck) and last is not None:
                    nn.init.zeros_(last.weight)

    def _stage(self, cls: type[nn.Module], planes: int, blocks: int, stride: int) -> nn.Sequential:
        expansion = cls.expansion  # type: ignore[attr-defined]
        downsample = None
        if stride != 1 or self.inplanes != planes * expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * expansion),
            )
        mods = [cls(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * expansion
        mods += [cls(self.inplanes, planes, 1, None) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the four stage outputs (strides 4, 8, 16, 32)."""
        if x.ndim != 4:
            raise ValueError(f"expected (B, C, H, W) input, got shape {tuple(x.shape)}")
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        maps = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            maps.append(x)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the globally average-pooled last stage ``(B, embed_dim)``."""
        return self.forward_features(x)[-1].mean(dim=(2, 3))


# ------------------------------------------------------------------------- factory


def build_encoder(arch: str, img_size: int = 224, in_chans: int = 1, **overrides: Any) -> nn.Module:
    """Build an encoder by name; ``overrides`` replace entries of :data:`ARCHS` (e.g. ``depth=2``).

    Args:
        arch: one of :data:`ARCHS`.
        img_size: training input side in pixels.
        in_chans: input channels.
        **overrides: architecture arguments to change (tests use tiny depths).

    Returns:
        The encoder, with an ``arch`` attribute and ``config`` holding everything needed to
        rebuild it (``build_encoder(**{"arch": enc.arch, **enc.config})``).

    Raises:
        ValueError: if ``arch`` is unknown.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}")
    spec = {k: v for k, v in ARCHS[arch].items() if k != "family"}
    spec.update(overrides)
    spec.update(img_size=img_size, in_chans=in_chans)
    encoder: nn.Module = VisionTransformer(**spec) if is_vit(arch) else ResNet(**spec)
    encoder.arch = arch  # type: ignore[assignment]
    return encoder


def load_natural_image_weights(
    encoder: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = False
) -> tuple[list[str], list[str]]:
    """Load natural-image (3-channel) weights a user supplies into a one-channel encoder.

    The first layer (``patch_embed.proj.weight`` for the ViT, ``conv1.weight`` for the
    ResNet) has shape ``(O, 3, k, k)`` in RGB checkpoints; it is folded to ``(O, 1, k, k)``
    by summing over the colour axis, so a grey image ``g`` replicated to RGB gives the same
    response as ``g`` through the folded filter. A position embedding for another grid is
    resized bicubically. Key names follow timm/DINO (ViT) and torchvision (ResNet), so those
    state dicts load directly; classifier heads (``head.*``, ``fc.*``) are dropped. The workflow
    reaches it through :func:`brainssl.pretrain.natural.load_baseline`, which reads the file,
    renames other layouts' keys and checks the architecture first.

    Args:
        encoder: a :func:`build_encoder` result with ``in_chans=1``.
        state_dict: tensors keyed by parameter name (a ``module.`` prefix is stripped).
        strict: raise if any encoder key is missing.

    Returns:
        ``(missing_keys, unexpected_keys)`` as reported by ``load_state_dict``.
    """
    own = encoder.state_dict()
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if key.startswith(("head.", "fc.")):
            continue
        if key in ("patch_embed.proj.weight", "conv1.weight") and value.ndim == 4 and value.shape[1] == 3:
            value = value.sum(dim=1, keepdim=True)
        if key == "pos_embed" and key in own and value.shape != own[key].shape:
            value = _resize_pos_embed(value, own[key].shape[1] - 1)
        cleaned[key] = value
    result = encoder.load_state_dict(cleaned, strict=strict)
    logger.info("natural-image weights: %d missing, %d unexpected keys", *map(len, result))
    return list(result.missing_keys), list(result.unexpected_keys)


def _resize_pos_embed(pos: torch.Tensor, n_tokens: int) -> torch.Tensor:
    side_old = int(math.isqrt(pos.shape[1] - 1))
    side_new = int(math.isqrt(n_tokens))
    grid = pos[:, 1:].reshape(1, side_old, side_old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(side_new, side_new), mode="bicubic", align_corners=False)
    return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, n_tokens, -1)], dim=1)
