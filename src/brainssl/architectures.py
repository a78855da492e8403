"""The registry of encoder architectures and self-supervised methods.

The workflow reads it while Snakemake parses (wildcard constraints, runs), the backbones module
builds encoders from it, and a test holds the config schema's enums to it; so it imports nothing
heavy.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ARCHS", "METHODS"]

#: Architecture name -> constructor arguments. ViT sizes follow Touvron et al. 2021 (DeiT).
ARCHS: dict[str, dict[str, Any]] = {
    "vit_tiny": {"family": "vit", "embed_dim": 192, "depth": 12, "num_heads": 3},
    "vit_small": {"family": "vit", "embed_dim": 384, "depth": 12, "num_heads": 6},
    "vit_base": {"family": "vit", "embed_dim": 768, "depth": 12, "num_heads": 12},
    "resnet18": {"family": "resnet", "block": "basic", "layers": (2, 2, 2, 2)},
    "resnet50": {"family": "resnet", "block": "bottleneck", "layers": (3, 4, 6, 3)},
}

#: Self-supervised methods (MoCo v3, DINO); the random-initialised baseline is not one of them.
METHODS = ("moco", "dino")
