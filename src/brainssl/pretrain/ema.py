"""Exponential moving average of weights (MoCo's momentum encoder, DINO's teacher).

Where in the step it runs is each method's authors' choice (``update_teacher_first`` in
:mod:`brainssl.pretrain.meta`; the loop calls it once per step with that step's momentum).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["update_momentum", "copy_for_ema"]


@torch.no_grad()
def update_momentum(model: nn.Module, ema_model: nn.Module, momentum: float) -> None:
    """Set ``ema = momentum * ema + (1 - momentum) * param`` for every parameter pair.

    Buffers (BN running statistics) are left alone: the momentum encoder keeps its own, as
    in facebookresearch/moco-v3 and facebookresearch/dino.

    Args:
        model: the trained network.
        ema_model: a copy with the same parameter order.
        momentum: in ``[0, 1]``; 1 keeps the EMA weights unchanged.

    Raises:
        ValueError: if ``momentum`` is outside ``[0, 1]`` or the parameter counts differ.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    params = [p.detach() for p in model.parameters()]
    ema_params = list(ema_model.parameters())
    if len(params) != len(ema_params):
        raise ValueError(f"model has {len(params)} parameters, EMA model {len(ema_params)}")
    torch._foreach_lerp_(ema_params, params, 1.0 - momentum)


def copy_for_ema(model: nn.Module, source: nn.Module) -> None:
    """Copy ``source``'s weights into ``model`` and freeze it (no gradients)."""
    model.load_state_dict(source.state_dict())
    for param in model.parameters():
        param.requires_grad_(False)
