"""Data order of the pretraining loop: each rank's micro-batches and per-step augmentation seeds.

Split from :mod:`brainssl.pretrain.loop` so that the order, which resumption depends on,
is a pure function with no trainer state. Data order is a pure function of
``(seed, epoch)``: the global batch of step ``s`` is slice ``s`` of a seeded permutation,
split between ranks and micro-batches. The augmentation generator is re-seeded from
``(seed, rank, step)`` every step. So a resumed run sees the same images and the same
augmentations as an uninterrupted one, on any number of ranks.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["step_seed", "epoch_batches", "collate_images"]


def step_seed(seed: int, rank: int, step: int) -> int:
    """A 63-bit seed for the augmentation generator of ``(seed, rank, step)`` (splitmix64 mix)."""
    z = (seed * 0x9E3779B97F4A7C15 + rank * 0xBF58476D1CE4E5B9 + step * 0x94D049BB133111EB) & (2**64 - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return (z ^ (z >> 31)) & (2**63 - 1)


def epoch_batches(
    n_images: int,
    *,
    seed: int,
    epoch: int,
    start: int,
    steps_per_epoch: int,
    batch_size: int,
    rank: int,
    micro_batch: int,
    accumulation: int,
) -> list[list[int]]:
    """One rank's micro-batch index lists from optimizer step ``start`` of ``epoch`` on."""
    g = torch.Generator().manual_seed(step_seed(seed, 1_000_003, epoch))
    perm = torch.randperm(n_images, generator=g).tolist()
    bs, mb = batch_size, micro_batch
    out = []
    for s in range(start, steps_per_epoch):
        mine = perm[s * bs : (s + 1) * bs][rank * mb * accumulation :][: mb * accumulation]
        out += [mine[i * mb : (i + 1) * mb] for i in range(accumulation)]
    return out


def collate_images(items: list[Any]) -> torch.Tensor:
    """Stack dataset items (tensors, or tuples starting with one) into one batch tensor."""
    images = [it[0] if isinstance(it, tuple | list) else it for it in items]
    return torch.stack([torch.as_tensor(im) for im in images])
