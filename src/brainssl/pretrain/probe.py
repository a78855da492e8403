"""Weighted cosine kNN probe on frozen pooled embeddings (monitoring during pretraining).

The classifier follows Wu et al. 2018 and DINO's ``eval_knn.py`` (facebookresearch/dino):
cosine similarity to every labelled training embedding, the k nearest vote with weights
``exp(sim / T)``, and the class with the largest vote wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ProbeSet", "embed_images", "knn_accuracy", "run_probes"]


@dataclass(frozen=True)
class ProbeSet:
    """Labelled held-out slices for one probe (e.g. contrast or slice-position bin).

    Attributes:
        train_images: ``(N, 1, H, W)`` float in ``[0, 1]`` or uint8 (divided by 255).
        train_labels: ``(N,)`` int64 class indices.
        test_images: ``(M, 1, H, W)``.
        test_labels: ``(M,)`` int64.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor

    def __post_init__(self) -> None:
        for images, labels, name in (
            (self.train_images, self.train_labels, "train"),
            (self.test_images, self.test_labels, "test"),
        ):
            if images.ndim != 4 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
                raise ValueError(
                    f"{name} images (N, 1, H, W) and labels (N,) disagree: "
                    f"{tuple(images.shape)} vs {tuple(labels.shape)}"
                )


@torch.no_grad()
def embed_images(
    encoder: nn.Module, images: torch.Tensor, img_size: int, device: torch.device, batch_size: int = 256
) -> torch.Tensor:
    """Return l2-normalised pooled embeddings ``(N, D)`` (float32, CPU), encoder in eval mode."""
    was_training = encoder.training
    encoder.eval()
    out = []
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(device)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if x.shape[-2:] != (img_size, img_size):
            x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False)
        out.append(F.normalize(encoder(x).float(), dim=1).cpu())
    encoder.train(was_training)
    return torch.cat(out)


def knn_accuracy(
    train_emb: torch.Tensor,
    train_labels: torch.Tensor,
    test_emb: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Top-1 accuracy of the weighted cosine kNN classifier.

    Args:
        train_emb: ``(N, D)`` l2-normalised.
        train_labels: ``(N,)`` int64.
        test_emb: ``(M, D)`` l2-normalised.
        test_labels: ``(M,)`` int64.
        k: neighbours (clipped to N).
        temperature: vote weight ``exp(sim / T)``.

    Returns:
        Accuracy in ``[0, 1]``.
    """
    k = min(k, train_emb.shape[0])
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    sim = test_emb @ train_emb.T
    top_sim, top_idx = sim.topk(k, dim=1)
    votes = torch.zeros(test_emb.shape[0], n_classes)
    votes.scatter_add_(1, train_labels[top_idx], torch.exp(top_sim / temperature))
    return float((votes.argmax(dim=1) == test_labels).float().mean())


def run_probes(
    encoder: nn.Module,
    probe_sets: Mapping[str, ProbeSet],
    img_size: int,
    device: torch.device,
    k: int = 20,
    temperature: float = 0.07,
) -> dict[str, float]:
    """Run :func:`knn_accuracy` for every probe set; returns ``{name: accuracy}``."""
    results = {}
    for name, ps in probe_sets.items():
        tr = embed_images(encoder, ps.train_images, img_size, device)
        te = embed_images(encoder, ps.test_images, img_size, device)
        results[name] = knn_accuracy(tr, ps.train_labels.cpu(), te, ps.test_labels.cpu(), k, temperature)
    return results
