"""COCO bbox mAP (pycocotools' ``COCOeval``) of one class, for a test set and its bootstrap resamples.

``COCOeval`` matches detections to true boxes image by image and only then accumulates the
matches into precision and recall. A bootstrap resample (test images drawn with repeats) changes
which per-image matches are accumulated, not the matches: :class:`CocoScorer` runs the per-image
evaluation once and, per resample, only the accumulation, with the same numbers as evaluating the
resampled images afresh (the repeats as distinct images).
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Sequence

import numpy as np

__all__ = ["CocoScorer", "coco_map"]

Detections = tuple[np.ndarray, np.ndarray]
"""One image's ``(n, 4)`` ``x0, y0, x1, y1`` boxes and their ``(n,)`` scores."""


class CocoScorer:
    """COCO mAP@[.5:.95] and mAP@.5 of any resample of a fixed set of images.

    Args:
        truth: per image, ``(n, 4)`` ``x0, y0, x1, y1`` true boxes (possibly none).
        detections: per image, boxes and scores.
    """

    def __init__(self, truth: Sequence[np.ndarray], detections: Sequence[Detections]) -> None:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        if len(truth) != len(detections):
            raise ValueError(f"{len(truth)} images of truth but {len(detections)} of detections")
        self._boxes = np.array([len(t) for t in truth])
        self._detected = np.array([len(d[0]) for d in detections])
        images, annotations, results = [], [], []
        for image_id, (boxes, (det_boxes, scores)) in enumerate(zip(truth, detections, strict=True), start=1):
            images.append({"id": image_id, "width": 1, "height": 1})
            for x0, y0, x1, y1 in np.asarray(boxes, dtype=float):
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": 1,
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "area": (x1 - x0) * (y1 - y0),
                        "iscrowd": 0,
                    }
                )
            for (x0, y0, x1, y1), score in zip(np.asarray(det_boxes, dtype=float), scores, strict=True):
                bbox = [x0, y0, x1 - x0, y1 - y0]
                results.append({"image_id": image_id, "category_id": 1, "bbox": bbox, "score": float(score)})
        self._evaluation = None
        if not results:
            return
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO()
            gt.dataset = {
                "images": images,
                "annotations": annotations,
                "categories": [{"id": 1, "name": "tumor"}],
            }
            gt.createIndex()
            self._evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
            self._evaluation.evaluate()
        self._per_image = self._evaluation.evalImgs
        self._evaluated = self._evaluation._paramsEval

    def __call__(self, picked: np.ndarray | None = None) -> tuple[float, float]:
        """``(map, map50)`` of the images at positions ``picked`` (repeats allowed; all if None).

        NaN when no picked image holds a true box (AP undefined); 0 when they hold no detection.
        """
        picked = np.arange(len(self._boxes)) if picked is None else np.asarray(picked, dtype=int)
        if not self._boxes[picked].any():
            return math.nan, math.nan
        if self._evaluation is None or not self._detected[picked].any():
            return 0.0, 0.0
        evaluation, n = self._evaluation, len(self._boxes)
        blocks = len(self._per_image) // n  # one block of n images per category and area range
        evaluation.evalImgs = [self._per_image[b * n + i] for b in range(blocks) for i in picked]
        evaluation._paramsEval = copy.copy(self._evaluated)
        evaluation._paramsEval.imgIds = list(range(1, len(picked) + 1))
        evaluation.params.imgIds = evaluation._paramsEval.imgIds
        with contextlib.redirect_stdout(io.StringIO()):
            evaluation.accumulate()
            evaluation.summarize()
        return float(evaluation.stats[0]), float(evaluation.stats[1])


def coco_map(truth: Sequence[np.ndarray], detections: Sequence[Detections]) -> tuple[float, float]:
    """COCO bbox mAP@[.5:.95] and mAP@.5 of one class over a set of images (see :class:`CocoScorer`).

    Returns:
        ``(map, map50)``; NaN when no image holds a true box (AP undefined).
    """
    return CocoScorer(truth, detections)()
