"""Seconds of the tumour-detection bootstrap: COCOeval afresh per resample against one evaluation.

Run as ``.venv/bin/python benchmarks/detection_bootstrap.py [--slices N] [--resamples B]``.
Both ways score the same random test set (true boxes and noisy detections, up to
``max_detections`` per slice) and give the same numbers; the baseline is the way
``run_detection`` scored up to 2026-12: a full ``COCOeval`` (per-image matching, then
accumulation) of each resample's slices; :class:`brainssl.tasks.detection_metrics.CocoScorer`
matches each slice once and re-runs only the accumulation. Prints both times and their ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from brainssl.tasks.detection_metrics import CocoScorer, coco_map


def _test_set(rng: np.random.Generator, n: int, per_slice: int) -> tuple[list, list]:
    truth, detections = [], []
    for _ in range(n):
        corners = rng.uniform(0, 100, (rng.integers(0, 3), 2))
        boxes = np.concatenate([corners, corners + rng.uniform(5, 25, corners.shape)], axis=1)
        stray = rng.uniform(0, 120, (per_slice, 2))
        found = np.concatenate([boxes + rng.normal(0, 2, boxes.shape), np.concatenate([stray, stray + 8], 1)])
        found = found[:per_slice]
        truth.append(boxes)
        detections.append((found, rng.uniform(0, 1, len(found))))
    return truth, detections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=400, help="test slices (the demo: a few hundred)")
    parser.add_argument("--resamples", type=int, default=20, help="bootstrap resamples")
    parser.add_argument("--detections", type=int, default=20, help="detections per slice")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    truth, detections = _test_set(rng, args.slices, args.detections)
    draws = [rng.integers(0, args.slices, args.slices) for _ in range(args.resamples)]

    start = time.perf_counter()
    afresh = [coco_map([truth[i] for i in d], [detections[i] for i in d]) for d in draws]
    baseline = time.perf_counter() - start
    start = time.perf_counter()
    scorer = CocoScorer(truth, detections)
    once = [scorer(d) for d in draws]
    ours = time.perf_counter() - start
    assert once == afresh, "the two ways disagree"
    print(f"{args.slices} slices, {args.resamples} resamples, {args.detections} detections per slice")
    print(f"COCOeval afresh per resample: {baseline:.2f} s; one evaluation, re-accumulated: {ours:.2f} s")
    print(f"speed-up: {baseline / ours:.1f}x")


if __name__ == "__main__":
    main()
