"""Detection's ground truth and training targets: boxes of tumour components, CenterNet maps.

A training slice's CenterNet target ``(6, S, S)`` is 24 bytes a pixel, twice its four-contrast
input; :class:`CenterNetTargets` keeps only each slice's boxes (16 bytes a box) and draws the maps of
a batch when training asks for it, so they never reach the scratch disk.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

__all__ = ["CenterNetTargets", "boxes_from_mask", "centernet_loss", "centernet_targets"]


def boxes_from_mask(mask: np.ndarray, min_pixels: int = 1) -> np.ndarray:
    """Boxes ``(n, 4)`` ``x0, y0, x1, y1`` (pixel edges, end exclusive) of a 2D mask's 8-connected parts."""
    components, count = ndimage.label(np.asarray(mask, bool), structure=np.ones((3, 3), dtype=bool))
    boxes = []
    for index, found in enumerate(ndimage.find_objects(components), start=1):
        if found is None or int((components[found] == index).sum()) < min_pixels:
            continue
        rows, cols = found
        boxes.append([cols.start, rows.start, cols.stop, rows.stop])
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


def centernet_targets(boxes: np.ndarray, size: int) -> np.ndarray:
    """Training target ``(6, S, S)`` of one slice: heatmap, width, height, x/y offset, centre indicator.

    The heatmap is the maximum over boxes of Gaussians at the centre pixels with
    ``sigma = max(w, h) / 6`` (at least 0.5 px); widths and heights are fractions of ``size``;
    the offsets are the sub-pixel position of the true centre within its pixel (CenterNet).
    """
    target = np.zeros((6, size, size), dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for x0, y0, x1, y1 in boxes:
        w, h = x1 - x0, y1 - y0
        fx, fy = (x0 + x1) / 2, (y0 + y1) / 2
        cx, cy = min(int(fx), size - 1), min(int(fy), size - 1)
        sigma = max(max(w, h) / 6.0, 0.5)
        peak = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
        target[0] = np.maximum(target[0], peak)
        target[1:, cy, cx] = (w / size, h / size, fx - cx, fy - cy, 1.0)
    return target


def centernet_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Penalty-reduced focal loss on the heatmap (alpha 2, beta 4) + L1 size loss at the centres.

    Args:
        output: ``(B, 5, S, S)`` heatmap logit, width, height, x/y offset.
        target: ``(B, 6, S, S)`` from :func:`centernet_targets`.
    """
    prob = torch.sigmoid(output[:, 0]).clamp(1e-4, 1 - 1e-4)
    heat, centre = target[:, 0], target[:, 5]
    positive = -((1 - prob) ** 2) * torch.log(prob) * centre
    negative = -((1 - heat) ** 4) * prob**2 * torch.log(1 - prob) * (1 - centre)
    n_centres = centre.sum().clamp(min=1.0)
    size = (F.l1_loss(output[:, 1:5], target[:, 1:5], reduction="none").sum(1) * centre).sum() / n_centres
    return (positive.sum() + negative.sum()) / n_centres + size


class CenterNetTargets:
    """The :func:`centernet_targets` of training slices, drawn per batch from their boxes.

    Args:
        boxes: per slice, its ``(n, 4)`` boxes (possibly none).
        size: slice side.
    """

    def __init__(self, boxes: Sequence[np.ndarray], size: int) -> None:
        self.size = size
        self.starts = np.cumsum([0, *(len(b) for b in boxes)])
        parts = [np.asarray(b, np.float32).reshape(-1, 4) for b in boxes]
        self.boxes = np.concatenate(parts) if parts else np.zeros((0, 4), np.float32)
        self.shape: tuple[int, ...] = (len(boxes), 6, size, size)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: slice | np.ndarray) -> np.ndarray:
        rows = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index)
        maps = [centernet_targets(self.boxes[self.starts[i] : self.starts[i + 1]], self.size) for i in rows]
        return np.array(maps, np.float32).reshape(-1, 6, self.size, self.size)
