"""MoCo v3 contrastive loss and DINO self-distillation loss.

References:
    Chen, Xie and He 2021, "An Empirical Study of Training Self-Supervised Vision
    Transformers", ICCV. Authors' code: facebookresearch/moco-v3 (``moco/builder.py``,
    ``contrastive_loss`` and ``concat_all_gather``).
    Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers", ICCV.
    Authors' code: facebookresearch/dino (``main_dino.py``, ``DINOLoss``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["infonce", "MoCoV3Loss", "DINOLoss", "dino_cross_entropy", "gather_without_grad"]


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.no_grad()
def gather_without_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0 (no gradient flows back), rank order."""
    rank, world = _world()
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def infonce(q: torch.Tensor, k: torch.Tensor, temperature: float, rank: int = 0) -> torch.Tensor:
    """MoCo v3 InfoNCE of queries against keys, scaled by ``2 * temperature`` as in the authors' code.

    ``logits = q_hat k_hat^T / tau``; query ``i`` of this rank has its positive at key
    ``rank * B + i``; the loss is ``2 tau * CE(logits, labels)`` (mean over queries).

    Args:
        q: ``(B, D)`` queries of this rank (any norm; l2-normalised here).
        k: ``(N, D)`` keys from all ranks (``N = B * world``), rank-major.
        temperature: ``tau > 0``.
        rank: this process's rank.

    Returns:
        Scalar loss (float32).

    Raises:
        ValueError: on mismatched widths, too few keys, or a non-positive temperature.
    """
    if q.ndim != 2 or k.ndim != 2 or q.shape[1] != k.shape[1]:
        raise ValueError(f"q (B, D) and k (N, D) must share D; got {tuple(q.shape)} and {tuple(k.shape)}")
    if k.shape[0] < (rank + 1) * q.shape[0]:
        raise ValueError(
            f"{k.shape[0]} keys cannot hold the positives of rank {rank} with batch {q.shape[0]}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.float(), dim=1)
    logits = q @ k.T / temperature
    labels = torch.arange(q.shape[0], device=q.device) + rank * q.shape[0]
    return F.cross_entropy(logits, labels) * (2.0 * temperature)


class MoCoV3Loss(nn.Module):
    """Symmetrised MoCo v3 loss ``infonce(q1, k2) + infonce(q2, k1)``, keys gathered across ranks.

    Args:
        temperature: softmax temperature tau (0.2 for ViT, 1.0 for ResNet in the paper).

    Shapes:
        ``q1, q2, k1, k2``: ``(B, D)`` per rank; output scalar.

    Example:
        >>> loss = MoCoV3Loss(0.2)
        >>> q = torch.eye(2); float(loss(q, q, q, q)) > 0
        True
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, q1: torch.Tensor, q2: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor) -> torch.Tensor:
        """Return ``infonce(q1, k2) + infonce(q2, k1)`` with keys gathered from every rank."""
        if not q1.shape == q2.shape == k1.shape == k2.shape:
            raise ValueError(
                f"q1, q2, k1, k2 must share a shape; got {[tuple(t.shape) for t in (q1, q2, k1, k2)]}"
            )
        rank, _ = _world()
        k1_all = gather_without_grad(k1.detach())
        k2_all = gather_without_grad(k2.detach())
        return infonce(q1, k2_all, self.temperature, rank) + infonce(q2, k1_all, self.temperature, rank)


def dino_cross_entropy(
    student: torch.Tensor,
    teacher: torch.Tensor,
    center: torch.Tensor,
    student_temp: float,
    teacher_temp: float,
) -> torch.Tensor:
    """DINO loss for fixed centre and temperatures (pure function).

    ``P_t = softmax((t - c) / tau_t)``, ``log P_s = log_softmax(s / tau_s)``; the loss is the
    mean over the pairs (teacher view g, student view v) with ``v != g`` of
    ``mean_b sum_k -P_t[g, b, k] log P_s[v, b, k]``. The first G student views are the
    global crops the teacher saw, in the same order.

    Args:
        student: ``(V, B, K)`` student outputs (V >= G).
        teacher: ``(G, B, K)`` teacher outputs (no gradient is taken through them).
        center: ``(1, K)`` or ``(K,)`` centre.
        student_temp: tau_s.
        teacher_temp: tau_t.

    Returns:
        Scalar loss (float32).

    Raises:
        ValueError: on bad shapes or when no (g, v) pair with ``v != g`` exists.
    """
    if student.ndim != 3 or teacher.ndim != 3 or student.shape[1:] != teacher.shape[1:]:
        raise ValueError(
            f"student (V, B, K) and teacher (G, B, K) disagree: {tuple(student.shape)}, "
            f"{tuple(teacher.shape)}"
        )
    n_views, n_global = student.shape[0], teacher.shape[0]
    if n_views < n_global or n_views * n_global - n_global == 0:
        raise ValueError(f"need V >= G and at least one pair v != g; got V={n_views}, G={n_global}")
    log_p_s = F.log_softmax(student.float() / student_temp, dim=-1)
    p_t = F.softmax((teacher.float() - center.reshape(1, 1, -1)) / teacher_temp, dim=-1).detach()
    # cross[g, v] = mean over batch of sum_k -p_t[g] * log_p_s[v]
    cross = -torch.einsum("gbk,vbk->gv", p_t, log_p_s) / student.shape[1]
    mask = torch.ones_like(cross, dtype=torch.bool)
    mask[torch.arange(n_global), torch.arange(n_global)] = False
    return cross[mask].mean()


class DINOLoss(nn.Module):
    """DINO self-distillation loss with a centred, sharpened teacher.

    The centre is a ``(1, K)`` buffer (checkpointed with the model) updated after each step
    by :meth:`update_center`: ``c <- m c + (1 - m) mean(teacher outputs over views, batch
    and ranks)`` (all-reduced in DDP). The teacher temperature follows a schedule and is
    passed per call.

    Args:
        out_dim: K.
        student_temp: tau_s (0.1).
        center_momentum: m (0.9).

    Shapes:
        ``student``: ``(V, B, K)``; ``teacher``: ``(G, B, K)``; output scalar.
    """

    center: torch.Tensor

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """Return the DINO loss of ``student`` ``(V, B, K)`` against ``teacher`` ``(G, B, K)``."""
        if student.shape[-1] != self.center.shape[-1]:
            raise ValueError(f"outputs have K={student.shape[-1]}, the centre K={self.center.shape[-1]}")
        return dino_cross_entropy(student, teacher, self.center, self.student_temp, teacher_temp)

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        """EMA-update the centre with the mean teacher output ``(G, B, K)`` over all ranks."""
        flat = teacher.detach().float().reshape(-1, teacher.shape[-1])
        total = flat.sum(dim=0, keepdim=True)
        count = torch.tensor([float(flat.shape[0])], device=flat.device)
        _, world = _world()
        if world > 1:
            dist.all_reduce(total)
            dist.all_reduce(count)
        self.center.mul_(self.center_momentum).add_(total / count, alpha=1.0 - self.center_momentum)
