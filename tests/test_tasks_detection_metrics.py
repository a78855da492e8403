"""The bootstrap's COCO mAP: one per-image evaluation, re-accumulated per resample, equals a fresh one."""

import math

import numpy as np
import pytest

from brainssl.tasks.detection_metrics import CocoScorer, coco_map


def _images(rng: np.random.Generator, n: int) -> tuple[list, list]:
    """Random true boxes (some images none) and noisy detections (some images none) on a 64 px slice."""
    truth, detections = [], []
    for _ in range(n):
        corners = rng.uniform(0, 40, (rng.integers(0, 3), 2))
        boxes = np.concatenate([corners, corners + rng.uniform(4, 20, corners.shape)], axis=1)
        truth.append(boxes)
        found = boxes + rng.normal(0, 2, boxes.shape)
        stray = rng.uniform(0, 60, (rng.integers(0, 3), 2))
        stray = np.concatenate([stray, stray + 5], axis=1)
        found = np.concatenate([found, stray])[: rng.integers(0, 5)]
        detections.append((found, rng.uniform(0, 1, len(found))))
    return truth, detections


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_resample_scores_as_the_resampled_images_evaluated_afresh(seed):
    rng = np.random.default_rng(seed)
    truth, detections = _images(rng, 15)
    scorer = CocoScorer(truth, detections)
    assert scorer() == coco_map(truth, detections)
    for _ in range(10):
        picked = rng.integers(0, len(truth), len(truth))  # with repeats, in draw order
        fresh = coco_map([truth[i] for i in picked], [detections[i] for i in picked])
        assert scorer(picked) == pytest.approx(fresh, abs=0, nan_ok=True), picked


def test_resamples_without_boxes_or_detections():
    truth = [np.zeros((0, 4)), np.array([[0.0, 0.0, 10.0, 10.0]])]
    detections = [(np.array([[0.0, 0.0, 5.0, 5.0]]), np.array([0.5])), (np.zeros((0, 4)), np.zeros(0))]
    scorer = CocoScorer(truth, detections)
    assert all(math.isnan(v) for v in scorer(np.array([0, 0])))  # no true box: AP undefined
    assert scorer(np.array([1, 1])) == (0.0, 0.0)  # boxes, nothing detected
    assert all(math.isnan(v) for v in CocoScorer([np.zeros((0, 4))], [(np.zeros((0, 4)), np.zeros(0))])())
