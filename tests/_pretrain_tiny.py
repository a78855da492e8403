"""Tiny synthetic data and settings shared by the pretraining tests (and the worker script)."""

from __future__ import annotations

import torch

from brainssl.pretrain import PretrainSettings, ProbeSet


def blobs(n: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of one bright disc (label 0) or a horizontal bar (label 1) at a random place."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    labels = torch.randint(0, 2, (n,), generator=g)
    images = torch.zeros(n, 1, size, size)
    for i in range(n):
        cy, cx = (torch.rand(2, generator=g) * size * 0.5 + size * 0.25).tolist()
        if labels[i] == 0:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < (size / 5) ** 2
        else:
            mask = ((yy - cy).abs() < size / 12) & ((xx - cx).abs() < size / 2.5)
        images[i, 0][mask] = 0.9
    return (images + 0.05 * torch.rand(images.shape, generator=g)).clamp(0, 1), labels


def scattered_blobs(n: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """A small disc (label 0) or a small horizontal bar (label 1) anywhere in the frame.

    Harder than :func:`blobs` for a random encoder: nearest neighbours in pixel space are
    mostly images with the object in the same place, so shape needs translation invariance.
    """
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    labels = torch.randint(0, 2, (n,), generator=g)
    images = torch.empty(n, 1, size, size)
    for i in range(n):
        cy, cx = (torch.rand(2, generator=g) - 0.5).tolist()
        if labels[i] == 0:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < 0.3**2
        else:
            mask = ((yy - cy).abs() < 0.12) & ((xx - cx).abs() < 0.5)
        images[i, 0] = 0.8 * mask + 0.05 * torch.rand(size, size, generator=g)
    return images.clamp(0, 1), labels


def dataset(n: int = 16, seed: int = 0) -> list[torch.Tensor]:
    return list(blobs(n, seed)[0])


def probe(n: int = 48) -> dict[str, ProbeSet]:
    tr_x, tr_y = blobs(n, 101)
    te_x, te_y = blobs(n, 202)
    return {"shape": ProbeSet(tr_x, tr_y, te_x, te_y)}


def settings(method: str, arch: str = "vit_tiny", **kw) -> PretrainSettings:
    base = dict(
        method=method,
        arch=arch,
        img_size=32,
        local_size=16,
        n_local_crops=2,
        batch_size=8,
        epochs=2,
        vit_depth=2,
        moco_mlp_dim=64,
        moco_dim=32,
        out_dim=64,
        head_hidden_dim=64,
        head_bottleneck_dim=32,
        workers=0,
        checkpoint_every=0,
        log_every=1,
        warmup_epochs=1,
        warmup_teacher_temp_epochs=1,
        device="cpu",
        seed=3,
    )
    base.update(kw)
    return PretrainSettings(**base)
