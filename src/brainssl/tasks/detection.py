"""Tumour detection: boxes from tumour masks, a CenterNet-style head on encoder maps, COCO mAP.

Ground truth: every 8-connected component of the whole-tumour mask of a slice (at least
``min_box_pixels`` pixels) becomes one box of the single class ``tumor``. The head is
anchor-free in the manner of CenterNet (Zhou et al. 2019, "Objects as Points"): the
:class:`~brainssl.tasks.dense_networks.DenseDecoder` predicts, at full slice resolution, a centre
heatmap (Gaussian peaks at box centres, trained with the penalty-reduced focal loss of the
paper), the box width and height (fractions of the slice side) and the sub-pixel centre offset
at the centres (L1).
Decoding keeps 3x3 local maxima of the heatmap, the top ``max_detections`` above
``score_threshold``, and removes overlaps with greedy non-maximum suppression written in
plain torch (:func:`nms`).

Slices without tumour stay in the test set: their detections are false positives.
COCO mAP@[.5:.95] and mAP@.5 come from pycocotools' ``COCOeval`` (bbox). Confidence
intervals resample test subjects (all slices of a drawn subject together).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .dense_memory import Rows, RowSource, SliceSpace
from .dense_metrics import brats_regions
from .dense_settings import TumorDetectionSettings
from .dense_slices import VolumeSlices, dense_split
from .dense_sweep import SweepResult, TrainingSet, sweep
from .detection_boxes import CenterNetTargets, boxes_from_mask, centernet_loss, centernet_targets
from .detection_metrics import CocoScorer, coco_map
from .results import bootstrap_ci, result_row, skipped_rows

__all__ = [
    "DETECTION_METRICS",
    "box_iou",
    "boxes_from_mask",
    "centernet_loss",
    "centernet_targets",
    "coco_map",
    "decode_detections",
    "nms",
    "plot_detections",
    "run_detection",
]

logger = logging.getLogger(__name__)

DETECTION_METRICS = ("map", "map50")
"""COCO mAP@[.5:.95] and mAP@.5."""
HEATMAP_PRIOR_LOGIT = -2.19
"""Initial heatmap logit (probability 0.1), CenterNet's choice for a stable start of the focal loss."""


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU ``(n, m)`` of ``x0, y0, x1, y1`` boxes."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of kept boxes, highest score first.

    A box is dropped when its IoU with an already kept, higher-scoring box exceeds
    ``iou_threshold``.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    keep: list[int] = []
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    ious = box_iou(boxes[order], boxes[order])
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(int(order[i]))
        suppressed |= ious[i] > iou_threshold
    return torch.as_tensor(keep, dtype=torch.long)


def decode_detections(
    output: torch.Tensor, max_detections: int, score_threshold: float, iou_threshold: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Turn head outputs ``(N, 5, S, S)`` into per-slice ``(boxes (k, 4), scores (k,))`` after NMS."""
    size = output.shape[-1]
    heat = torch.sigmoid(output[:, 0])
    peaks = heat * (F.max_pool2d(heat[:, None], 3, stride=1, padding=1)[:, 0] == heat)
    detections = []
    for index in range(len(output)):
        scores, flat = peaks[index].flatten().topk(min(max_detections, peaks[index].numel()))
        chosen = scores >= score_threshold
        scores, flat = scores[chosen], flat[chosen]
        cx = (flat % size).float() + output[index, 3].flatten()[flat]
        cy = (flat // size).float() + output[index, 4].flatten()[flat]
        w = output[index, 1].flatten()[flat].clamp(min=0) * size
        h = output[index, 2].flatten()[flat].clamp(min=0) * size
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1).clamp(0, size)
        kept = nms(boxes, scores, iou_threshold)
        detections.append((boxes[kept].numpy(), scores[kept].numpy()))
    return detections


def _slices_with_brain(case: VolumeSlices) -> np.ndarray:
    return case.images.reshape(len(case.images), -1).max(axis=1) > 0


def run_detection(
    cases: Sequence[VolumeSlices],
    dataset: str,
    encoders: Mapping[str, str],
    table_split: Mapping[str, str],
    settings: TumorDetectionSettings,
    seed: int,
    device: str = "cpu",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train and score every variant of tumour detection (BraTS whole-tumour boxes).

    Training and test slices are rows of the cases' own arrays, the training targets drawn per
    batch from the boxes (:class:`~.detection_boxes.CenterNetTargets`); each network's test
    outputs are decoded batch by batch, and only the boxes are kept.

    Args:
        cases: BraTS volumes with labels.
        dataset: dataset name.
        encoders: ``{name: weights path}``.
        table_split: preprocessing split per subject.
        settings: the task's settings (see :func:`~brainssl.tasks.segmentation.run_segmentation`),
            with the box and decoding settings.
        seed: workflow seed.
        device: ``tasks.device`` (:func:`~brainssl.tasks.dense_training.resolve_device`).

    Returns:
        Results rows and an overlay example.
    """
    labelled = [c for c in cases if c.labels is not None]
    if len(labelled) < 2:
        reason = f"{len(labelled)} labelled subject(s); a subject-level train/test split needs two"
        return skipped_rows("tumor_detection", dataset, reason, DETECTION_METRICS), {}
    split = dense_split([c.subject for c in labelled], table_split, seed, settings.test_fraction)
    size = labelled[0].images.shape[-1]

    def slice_boxes(case: VolumeSlices, keep: np.ndarray) -> list[np.ndarray]:
        whole = brats_regions(case.labels[keep])[0]  # type: ignore[index]
        return [boxes_from_mask(m, settings.min_box_pixels) for m in whole]

    subjects, train_parts, train_keep, train_boxes = [], [], [], []
    test_parts, test_keep, test_truth, owners = [], [], [], []  # boxes and test subject of each test slice
    for case in labelled:  # one subject's labels in memory at a time
        keep = _slices_with_brain(case)
        boxes = slice_boxes(case, keep)
        if split[case.subject] == "test":
            owners.append(np.full(len(boxes), len(owners)))
            test_parts.append(case.images)
            test_keep.append(keep)
            test_truth += boxes
        else:
            subjects.append(np.full(len(boxes), case.subject))
            train_parts.append(case.images)
            train_keep.append(keep)
            train_boxes += boxes
    n_test = len(owners)
    images = Rows(train_parts, train_keep)
    train = TrainingSet(np.concatenate(subjects), images, CenterNetTargets(train_boxes, size))
    test_array = Rows(test_parts, test_keep)
    owner = np.concatenate(owners)
    if not any(len(b) for b in test_truth):
        reason = "no tumour box in any test slice"
        return skipped_rows("tumor_detection", dataset, reason, DETECTION_METRICS), {}
    areas = [float(((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).sum()) if len(b) else 0.0 for b in test_truth]
    shown = int(np.argmax(areas))  # the test slice with the largest true boxes, for the figure
    results = sweep(
        encoders,
        settings,
        train,
        test_array,
        5,
        centernet_loss,
        lambda batches: _decode(batches, settings, shown),
        first_bias=HEATMAP_PRIOR_LOGIT,
        device=device,
    )
    rows = []
    for result in results:
        scorer = CocoScorer(test_truth, result.evaluation[0])  # matches each slice once
        memo: dict[tuple[int, ...], tuple[float, float]] = {}

        def score(subjects: np.ndarray, scorer: CocoScorer = scorer, memo: dict = memo) -> tuple:
            key = tuple(int(s) for s in subjects)
            if key not in memo:  # both metrics come from one accumulation per resample
                memo[key] = scorer(np.concatenate([np.flatnonzero(owner == s) for s in subjects]))
            return memo[key]

        values = score(np.arange(n_test))
        for k, metric in enumerate(DETECTION_METRICS):
            low, high = bootstrap_ci(
                lambda s, k=k: score(s)[k],
                np.arange(n_test),
                n_boot=settings.n_boot,
                seed=result.seed,
            )
            rows.append(
                result_row(
                    task="tumor_detection",
                    dataset=dataset,
                    encoder=result.variant.encoder,
                    mode=result.variant.mode,
                    label_fraction=result.fraction,
                    seed=result.seed,
                    metric=metric,
                    value=values[k],
                    ci_low=low,
                    ci_high=high,
                    n_train=result.n_train,
                    n_test=n_test,
                )
            )
    return rows, _overlay_example(results, test_array, test_truth, shown)


def _decode(
    batches: Iterator[torch.Tensor], settings: TumorDetectionSettings, shown: int
) -> tuple[list[tuple[np.ndarray, np.ndarray]], tuple[np.ndarray, np.ndarray]]:
    """Every test slice's detections, decoded batch by batch, and those of the ``shown`` slice alone."""
    decode = (settings.max_detections, settings.score_threshold, settings.nms_iou)
    detections: list[tuple[np.ndarray, np.ndarray]] = []
    example = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    for batch in batches:
        at = shown - len(detections)
        if 0 <= at < len(batch):
            example = decode_detections(batch[at : at + 1], *decode)[0]
        detections += decode_detections(batch, *decode)
    return detections, example


def _overlay_example(
    results: Sequence[SweepResult], images: RowSource, truth: Sequence[np.ndarray], index: int
) -> dict[str, Any]:
    """The test slice ``index`` and each variant's boxes there (largest fraction, first seed)."""
    top, first_seed = max(r.fraction for r in results), min(r.seed for r in results)
    predictions = {
        f"{r.variant.encoder} ({r.variant.mode})": r.evaluation[1]
        for r in results
        if r.fraction == top and r.seed == first_seed
    }
    return {"image": images[np.array([index])][0, 0], "truth": truth[index], "predictions": predictions}


def plot_detections(example: Mapping[str, Any], path: Any, min_score: float = 0.3, top_k: int = 3) -> Any:
    """Draw the example slice: true boxes green, each variant's ``top_k`` best boxes red with scores.

    Boxes scoring at least ``min_score`` are drawn solid, weaker ones dashed, so that a weak
    model's best guesses are still seen (a panel with no box at all says so); a legend under
    the panels names the three kinds of box.

    Returns:
        The (closed) matplotlib figure, for inspection: truth boxes have gid ``truth``,
        predictions ``prediction`` (solid) or ``weak prediction`` (dashed).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    from .figures import save_figure

    panels = list(example.get("predictions", {}).items())
    n = max(len(panels), 1)
    fig, axes = plt.subplots(1, n, figsize=(max(2.4 * n, 4.8), 3.2), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    if not panels:
        axes[0, 0].text(0.5, 0.5, "no detection example", ha="center", va="center")
    for ax, (name, (boxes, scores)) in zip(axes.ravel(), panels, strict=False):
        ax.imshow(example["image"], cmap="gray", vmin=0, vmax=1)
        for x0, y0, x1, y1 in example["truth"]:
            ax.add_patch(
                Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="lime", lw=1.0, gid="truth")
            )
        order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")[:top_k]
        for k in order:
            (x0, y0, x1, y1), score = boxes[k], float(scores[k])
            strong = score >= min_score
            ax.add_patch(
                Rectangle(
                    (x0 - 0.5, y0 - 0.5),
                    x1 - x0,
                    y1 - y0,
                    fill=False,
                    ec="red",
                    lw=1.0,
                    ls="-" if strong else "--",
                    gid="prediction" if strong else "weak prediction",
                )
            )
            ax.text(x0 - 0.5, y0 - 1.0, f"{score:.2f}", color="red", fontsize=6, va="bottom", gid="score")
        if not len(order):
            ax.text(
                0.5,
                0.03,
                "no box predicted",
                color="red",
                fontsize=6,
                ha="center",
                va="bottom",
                transform=ax.transAxes,
            )
        ax.set_title(name, fontsize=7)
    handles = [
        Line2D([], [], color="lime", lw=1.5, label="truth"),
        Line2D([], [], color="red", lw=1.5, label=f"prediction, score >= {min_score:.2f}"),
        Line2D([], [], color="red", lw=1.5, ls="--", label=f"prediction, score < {min_score:.2f}"),
    ]
    if panels:
        fig.legend(
            handles=handles,
            loc="lower center",
            ncol=3,
            fontsize=7,
            frameon=False,
            title=f"each variant's {top_k} best boxes, with scores",
            title_fontsize=7,
        )
    save_figure(fig, path, rect=(0, 0.14, 1, 1))
    return fig


def tumor_detection_task(
    table_path: Any,
    encoders: Mapping[str, str],
    settings: TumorDetectionSettings,
    seed: int,
    outputs: Mapping[str, Any],
    *,
    percentiles: tuple[float, float],
    device: str = "cpu",
) -> Any:
    """Tumour detection on BraTS slices: results table and example boxes.

    Args:
        table_path: ``results/preprocess/brats21/table.tsv``.
        encoders: ``{name: weights path}``.
        settings: the ``tasks.tumor_detection`` settings (merged with the shared keys).
        seed: workflow seed.
        outputs: paths ``results`` and ``overlays``.
        percentiles: the slice store's intensity percentiles of ``brats21``
            (:func:`~brainssl.tasks.dense_slices.slice_recipes`).
        device: where the networks train (``tasks.device``: auto, cpu or cuda).

    Returns:
        The results table as written.
    """
    import pandas as pd

    from .dense_slices import load_brats_cases
    from .dense_sweep import encoder_side
    from .results import write_results

    table = pd.read_csv(table_path, sep="\t", keep_default_na=False)
    side = encoder_side(encoders)
    with SliceSpace(settings.slice_memory_gb) as space:
        cases, problems = load_brats_cases(
            table, settings.contrasts, side, settings.max_subjects, percentiles=percentiles, keep=space.keep
        )
        for problem in problems:
            logger.warning("left out: %s", problem)
        split = dict(zip(table["subject"].astype(str), table["split"].astype(str), strict=True))
        rows, example = run_detection(cases, "brats21", encoders, split, settings, seed, device)
    frame = write_results(rows, outputs["results"])
    plot_detections(example, outputs["overlays"])
    return frame
