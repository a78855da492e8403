"""Projection, prediction and DINO heads put on top of an encoder's pooled embedding.

References:
    Chen, Xie and He 2021, "An Empirical Study of Training Self-Supervised Vision
    Transformers", ICCV (MoCo v3); authors' code facebookresearch/moco-v3 (``moco/builder.py``,
    ``_build_mlp``).
    Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers", ICCV
    (DINO); authors' code facebookresearch/dino (``vision_transformer.py``, ``DINOHead``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MLPHead", "DINOHead", "WeightNormLinear"]


class MLPHead(nn.Module):
    """MoCo v3 MLP: ``num_layers`` bias-free linears, BN + ReLU between, optional affine-free BN last.

    MoCo v3 uses a 3-layer projector (hidden 4096, out 256, ``last_bn=True``) and a 2-layer
    predictor (hidden 4096, out 256, ``last_bn=False``).

    Args:
        in_dim: input width (the encoder's ``embed_dim`` or the projector's output).
        hidden_dim: width of the hidden layers.
        out_dim: output width.
        num_layers: number of linear layers (>= 1).
        last_bn: end with ``BatchNorm1d(out_dim, affine=False)``.

    Shapes:
        ``(B, in_dim) -> (B, out_dim)``.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, last_bn: bool) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        for i in range(num_layers):
            d_in = in_dim if i == 0 else hidden_dim
            d_out = out_dim if i == num_layers - 1 else hidden_dim
            layers.append(nn.Linear(d_in, d_out, bias=False))
            if i < num_layers - 1:
                layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
            elif last_bn:
                layers.append(nn.BatchNorm1d(d_out, affine=False))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project ``(B, in_dim)`` to ``(B, out_dim)``."""
        return self.mlp(x)


class WeightNormLinear(nn.Module):
    """Bias-free linear layer whose rows are unit-normalised: ``W = g * v / ||v||``.

    Equivalent to ``weight_norm(nn.Linear(...))`` with the gain ``g`` filled with 1; with
    ``learn_gain=False`` (DINO's ``norm_last_layer=True``) the gain stays 1, which the DINO
    authors found stabilises training.

    Args:
        in_dim: input width.
        out_dim: output width (the number of prototypes K).
        learn_gain: learn a per-row gain ``g`` (initialised to 1).
    """

    def __init__(self, in_dim: int, out_dim: int, learn_gain: bool = False) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.trunc_normal_(self.weight_v, std=0.02)
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1)) if learn_gain else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the row-normalised weight: ``(B, in_dim) -> (B, out_dim)``."""
        weight = F.normalize(self.weight_v, dim=1)
        if self.weight_g is not None:
            weight = weight * self.weight_g
        return F.linear(x, weight)


class DINOHead(nn.Module):
    """DINO projection head: MLP (GELU) to a bottleneck, l2-normalise, weight-normed last layer.

    Args:
        in_dim: encoder embedding width.
        out_dim: number of prototypes K (65536 in the paper).
        hidden_dim: MLP hidden width (2048).
        bottleneck_dim: width before the last layer (256).
        num_layers: MLP layers before the last layer (3).
        norm_last_layer: keep the last layer's gain fixed at 1.
        use_bn: batch-normalise the hidden layers (the authors' ``use_bn_in_head``; their
            default for ResNets). Batch statistics keep the outputs of a batch apart, which
            keeps short, small-batch runs from collapsing to one output.

    Shapes:
        ``(B, in_dim) -> (B, out_dim)``.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        norm_last_layer: bool = True,
        use_bn: bool = False,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < num_layers - 1:
                layers += [nn.BatchNorm1d(dims[i + 1]), nn.GELU()] if use_bn else [nn.GELU()]
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, learn_gain=not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_dim)`` embeddings to ``(B, out_dim)`` prototype logits."""
        x = F.normalize(self.mlp(x), dim=-1)
        return self.last_layer(x)
