"""Seconds per preprocessing step on a 1 mm T1w head, and the chosen pipeline against the naive one.

Run as ``.venv/bin/python benchmarks/preprocess.py``. The volume is the ICBM152 2009c whole-head T1
posed by a small affine on an LPS 1 mm grid, with a smooth multiplicative bias field and Rician
noise. Everything runs on one thread. Chosen: N4 fitted on a shrunk image, multi-resolution
registration with sparse random sampling. Naive: N4 at full resolution, one-level full-resolution
registration on every voxel. A naive step runs in a child process and is cut off after
``--naive-timeout`` seconds (its line then reads ``> T s``).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch

from brainssl.preprocess import (
    PreprocessSettings,
    RegistrationSettings,
    dice,
    head_mask,
    load_template,
    n4_correct,
    preprocess_session,
    reorient_resample,
    resample_to_grid,
    strip_atlas,
    strip_deepbet,
    whitestripe,
    zscore,
)

logger = logging.getLogger("benchmarks.preprocess")
GOAL_S = 20.0


def make_head(seed: int = 0) -> tuple[nib.Nifti1Image, np.ndarray]:
    """Return a posed, biased, noisy 1 mm LPS copy of the template head and its true brain mask."""
    rng = np.random.default_rng(seed)
    angles = np.deg2rad(rng.uniform(-6, 6, 3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rot = (
        np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    )
    pose = np.eye(4)
    pose[:3, :3] = rot * rng.uniform(0.96, 1.04)
    pose[:3, 3] = rng.uniform(-5, 5, 3)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[:3, 3] = (100.0, 130.0, -85.0)
    shape = (201, 237, 201)
    to_template = np.linalg.inv(pose) @ affine
    clean = np.asarray(resample_to_grid(load_template("T1w"), to_template, shape).dataobj)
    truth = np.asarray(resample_to_grid(load_template("mask"), to_template, shape).dataobj) > 0.5
    grid = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    field = np.exp(0.3 * (0.6 * grid[0] - 0.5 * grid[1] + 0.4 * grid[2] ** 2 - 0.3 * grid[0] * grid[2]))
    sigma = 0.02 * float(np.percentile(clean, 99))
    noisy = np.hypot(clean * field + rng.normal(0, sigma, shape), rng.normal(0, sigma, shape))
    return nib.Nifti1Image(noisy.astype(np.float32), affine), truth


def timed(func: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median seconds of ``repeats`` calls (after none: the first call is the warm-up when repeats > 1)."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _child(name: str, queue: Any) -> None:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    img, _ = make_head()
    ras = reorient_resample(img, 1.0)
    start = time.perf_counter()
    if name == "n4":
        n4_correct(ras, head_mask(np.asarray(ras.dataobj)), shrink=1)
    else:
        naive = RegistrationSettings(
            level_mm=(1.0,), smoothing_mm=(0.0,), sampling=1.0, template_spacing_mm=1.0
        )
        strip_atlas(ras, naive)
    queue.put(time.perf_counter() - start)


def naive_seconds(name: str, timeout: float) -> float | None:
    """Seconds of a naive step in a child process, or None when it ran past ``timeout``."""
    context = mp.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=_child, args=(name, queue))
    process.start()
    process.join(timeout + 60)  # + time to build the head in the child
    if process.is_alive():
        process.terminate()
        process.join()
        return None
    return float(queue.get()) if not queue.empty() else None


def line(name: str, naive: float | None, chosen: float, goal: str, timeout: float) -> str:
    if naive is None:
        ratio = timeout / chosen
        return f"{name}: naive > {timeout:.0f} s  chosen {chosen:.2f} s  ratio > {ratio:.1f}x  (goal {goal})"
    return f"{name}: naive {naive:.2f} s  chosen {chosen:.2f} s  ratio {naive / chosen:.1f}x  (goal {goal})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--naive-timeout", type=float, default=300.0)
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    torch.set_num_threads(1)
    print(
        f"cores {os.cpu_count()}  itk threads {sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}  "
        f"torch threads {torch.get_num_threads()}  device cpu"
    )
    img, truth = make_head()
    settings = PreprocessSettings(spacing_mm=1.0)
    load_template("T1w", settings.registration.template_spacing_mm)  # warm the template cache
    load_template("mask", settings.registration.template_spacing_mm)
    t_resample, ras = timed(lambda: reorient_resample(img, 1.0), args.repeats)
    truth_ras = (
        np.asarray(
            reorient_resample(nib.Nifti1Image(truth.astype(np.uint8), img.affine), 1.0, is_label=True).dataobj
        )
        > 0
    )
    head = head_mask(np.asarray(ras.dataobj))
    shrink = max(1, round(settings.n4.shrink_mm / settings.spacing_mm))
    t_n4, (corrected, _) = timed(lambda: n4_correct(ras, head, shrink=shrink), args.repeats)
    t_atlas, atlas = timed(lambda: strip_atlas(corrected, settings.registration), args.repeats)
    strip_deepbet(corrected)  # warm-up: loads the TorchScript models
    t_deepbet, deep = timed(lambda: strip_deepbet(corrected), args.repeats)
    data = np.asarray(corrected.dataobj)
    t_norm, _ = timed(lambda: (zscore(data, deep.mask), whitestripe(data, deep.mask)), args.repeats)
    print(f"reorient/resample to 1 mm RAS: {t_resample:.2f} s")
    print(f"N4 (shrink {shrink}): {t_n4:.2f} s")
    print(f"skull strip atlas: {t_atlas:.2f} s  Dice {dice(atlas.mask, truth_ras):.4f}")
    print(f"skull strip deepbet: {t_deepbet:.2f} s  Dice {dice(deep.mask, truth_ras):.4f}")
    print(f"normalisation (z-score + WhiteStripe): {t_norm:.2f} s")
    for method in ("atlas", "deepbet"):
        chain = PreprocessSettings(spacing_mm=1.0, skull_strip=method)
        t_chain, result = timed(lambda c=chain: preprocess_session({"T1w": img}, c), args.repeats)
        steps = "  ".join(f"{k} {v:.2f}" for k, v in result.qc["seconds"].items())
        core = sum(
            v for k, v in result.qc["seconds"].items() if k in ("n4", "normalise") or k.startswith("skull")
        )
        print(
            f"whole chain ({method}): {t_chain:.2f} s  [{steps}]  N4+strip+norm {core:.2f} s "
            f"(goal <= {GOAL_S:.0f} s)  {'OK' if core <= GOAL_S else 'OVER'}"
        )
    if args.skip_naive:
        return
    naive_n4 = naive_seconds("n4", args.naive_timeout)
    print(line("N4 shrunk vs full resolution", naive_n4, t_n4, ">= 5x", args.naive_timeout))
    naive_reg = naive_seconds("atlas", args.naive_timeout)
    print(
        line(
            "atlas registration multi-res sparse vs full-res dense",
            naive_reg,
            t_atlas,
            ">= 5x",
            args.naive_timeout,
        )
    )


if __name__ == "__main__":
    main()
