"""Optimizers and parameter groups: AdamW (fused on CUDA) and LARS.

LARS follows You et al. 2017, "Large Batch Training of Convolutional Networks", in the form
MoCo v3 uses for ResNets (facebookresearch/moco-v3 ``moco/optimizer.py``): weight decay
and the trust ratio apply to parameters with more than one dimension only.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["LARS", "param_groups", "build_optimizer"]


class LARS(torch.optim.Optimizer):
    """SGD with momentum and a layer-wise trust ratio ``eta * ||w|| / ||g + wd w||``.

    Args:
        params: parameters or groups.
        lr: learning rate (set per step by the loop).
        weight_decay: L2 added to the gradient of >1-D parameters.
        momentum: heavy-ball momentum.
        trust_coefficient: eta.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 0.0,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        trust_coefficient: float = 0.001,
    ) -> None:
        defaults = {
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "trust_coefficient": trust_coefficient,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        """Apply one update to every parameter that has a gradient."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                dp = p.grad
                if p.ndim > 1:
                    dp = dp.add(p, alpha=group["weight_decay"])
                    p_norm, u_norm = torch.norm(p), torch.norm(dp)
                    one = torch.ones_like(p_norm)
                    q = torch.where(
                        p_norm > 0,
                        torch.where(u_norm > 0, group["trust_coefficient"] * p_norm / u_norm, one),
                        one,
                    )
                    dp = dp.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(group["momentum"]).add_(dp)
                p.add_(mu, alpha=-group["lr"])


def param_groups(model: nn.Module) -> list[dict]:
    """Split trainable parameters into decayed (>1-D) and non-decayed (biases, norms) groups."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False, "weight_decay": 0.0}]


def build_optimizer(name: str, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """Build ``adamw`` (fused on CUDA) or ``lars`` over :func:`param_groups`; lr/wd are set per step.

    Raises:
        ValueError: on an unknown name.
    """
    groups = param_groups(model)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=0.0, weight_decay=0.0, fused=device.type == "cuda")
    if name == "lars":
        return LARS(groups)
    raise ValueError(f"unknown optimizer {name!r}; choose 'adamw' or 'lars'")
