"""Random-access slice reads: the memory-mapped slice store against decoding NIfTI per access.

Run as ``.venv/bin/python benchmarks/slice_store.py``. The data are preprocessed-looking 1 mm
volumes made from the ICBM152 2009c T1w and T2w heads (cropped to the brain box + 8 mm, z-scored
within the brain, background 0; a little noise per copy), written as ``.nii.gz`` and cut into a
store at 224x224 with the default settings. Both paths run on one torch thread in this process
and read the same randomly ordered slices:

- store: ``SliceDataset[i]`` (memory map -> float tensor (1, 224, 224) in [0, 1]), warm;
- nifti: ``nibabel.load`` + take the axial slice + map intensities + pad and resize to 224.

Also reports the condensation of the default filter on these 1 mm volumes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch

from brainssl.io import save_nifti, write_json, write_table
from brainssl.preprocess import load_template
from brainssl.slices import (
    SliceDataset,
    SliceSettings,
    build_slice_shard,
    load_shard_rows,
    map_intensity,
    plan_shards,
    radiological,
    square_resize,
)
from brainssl.splits import DEFAULT_FRACTIONS as FRACTIONS

STORE_GOAL = 20_000.0
RATIO_GOAL = 20.0


def make_volumes(root: Path, n_subjects: int, seed: int = 0) -> Path:
    """Write ``n_subjects`` x (T1w, T2w) preprocessed-looking 1 mm volumes and their table."""
    rng = np.random.default_rng(seed)
    mask_img = load_template("mask")
    brain = np.asarray(mask_img.dataobj) > 0.5
    box = [np.flatnonzero(brain.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    crop = tuple(slice(max(0, b[0] - 8), b[-1] + 9) for b in box)
    affine = mask_img.affine.copy()
    affine[:3, 3] = nib.affines.apply_affine(mask_img.affine, [c.start for c in crop])
    mask = brain[crop]
    rows = []
    for i in range(n_subjects):
        folder = root / f"sub-{i:012x}" / "ses-none"
        save_nifti(folder / "mask.nii.gz", nib.Nifti1Image(mask.astype(np.uint8), affine))
        for contrast in ("T1w", "T2w"):
            data = np.asarray(load_template(contrast).dataobj, dtype=np.float32)[crop]
            data = data * rng.uniform(0.9, 1.1) + rng.normal(0, 0.02 * data[mask].std(), data.shape)
            z = (data - data[mask].mean()) / data[mask].std()
            path = folder / f"{contrast}.nii.gz"
            save_nifti(path, nib.Nifti1Image(np.where(mask, z, 0).astype(np.float32), affine))
            rows.append(
                {
                    "dataset": "ixi",
                    "subject": f"sub-{i:012x}",
                    "session": "ses-none",
                    "contrast": contrast,
                    "path": str(path),
                    "mask_path": str(folder / "mask.nii.gz"),
                    "seg_path": "",
                    "spacing_mm": 1.0,
                }
            )
    write_table(root / "table.tsv", pd.DataFrame(rows))
    return root / "table.tsv"


def nifti_read(path: str, k: int, size: int) -> torch.Tensor:
    """Decode one axial slice from its NIfTI file the way a per-file loader would."""
    img = nib.load(path)
    plane = np.asarray(img.dataobj[:, :, k], dtype=np.float32)
    mapped = map_intensity(plane, None, (0.5, 99.5))
    view = radiological(mapped[:, :, None])
    return torch.from_numpy(square_resize(view, size))


def rate(func, items: list[int], repeats: int) -> float:
    """Median items per second over ``repeats`` passes (after one warm-up pass)."""
    func(items[: max(1, len(items) // 10)])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func(items)
        times.append(time.perf_counter() - start)
    return len(items) / statistics.median(times)


def main() -> None:
    """Build the store, time both paths, print the comparison lines, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--reads", type=int, default=20000)
    parser.add_argument("--nifti-reads", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="results/benchmarks/slice_store.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = SliceSettings(size=224)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"cores {cores}  torch threads {torch.get_num_threads()}  device cpu  "
        f"slice {settings.size}x{settings.size}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        table = make_volumes(root, args.subjects)
        write_table(root / "plan.tsv", plan_shards(pd.read_csv(table, sep="\t"), 100, FRACTIONS, 0))
        files = [root / f"shard-0.{k}" for k in ("npy", "labels.npy", "index.parquet", "stats.parquet")]
        start = time.perf_counter()
        index = build_slice_shard(load_shard_rows(table, root / "plan.tsv", 0), settings, 0, *files)
        build_s = (time.perf_counter() - start) / (2 * args.subjects)
        stats = pd.read_parquet(files[3])
        ds = SliceDataset(index)
        rng = np.random.default_rng(1)
        store_items = rng.integers(0, len(ds), args.reads).tolist()
        nifti_items = store_items[: args.nifti_reads]
        sources = stats.loc[stats["kept"]].reset_index(drop=True)

        def read_store(items: list[int]) -> None:
            for i in items:
                ds[i]

        def read_nifti(items: list[int]) -> None:
            for i in items:
                nifti_read(sources.at[i, "source"], int(sources.at[i, "slice_index"]), settings.size)

        store_rate = rate(read_store, store_items, args.repeats)
        nifti_rate = rate(read_nifti, nifti_items, max(1, args.repeats // 2))
    ratio = store_rate / nifti_rate
    kept, total = int(stats["kept"].sum()), len(stats)
    print(
        f"slice read: nifti {nifti_rate:,.0f}/s  store {store_rate:,.0f}/s  ratio {ratio:.1f}x  "
        f"(goal >= {RATIO_GOAL:.0f}x)"
    )
    print(f"store per core: {store_rate / torch.get_num_threads():,.0f}/s  (goal >= {STORE_GOAL:,.0f}/s)")
    print(
        f"default filter at 1 mm: kept {kept} of {total} slices ({total / kept:.1f}:1, goal ~8:1); "
        f"build {build_s:.2f} s per volume"
    )
    write_json(
        args.out,
        {
            "cores": cores,
            "torch_threads": torch.get_num_threads(),
            "size": settings.size,
            "store_per_s": store_rate,
            "nifti_per_s": nifti_rate,
            "ratio": ratio,
            "kept": kept,
            "cut": total,
            "build_s_per_volume": build_s,
        },
    )


if __name__ == "__main__":
    main()
