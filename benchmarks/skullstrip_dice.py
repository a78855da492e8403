"""Skull-strip Dice against the demo generator's truth brain masks, per method, on T1w.

Run as ``.venv/bin/python benchmarks/skullstrip_dice.py [--datasets ixi oasis3]``
after the datasets stage of the default demo (``snakemake --cores 2 manifest``). Each T1w
image (first session of each subject) goes through the demo's preprocessing settings from
``config.yaml`` (2 mm, N4) with only the skull-strip method changed; Dice is computed on the
2 mm grid by :func:`brainssl.preprocess.preprocess_session`. Prints one line per method and
dataset, and writes ``results/benchmarks/skullstrip_dice-<methods>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path

import nibabel as nib
import pandas as pd
import torch
import yaml

from brainssl.config import stage_params
from brainssl.datasets import read_manifest
from brainssl.io import write_json
from brainssl.preprocess import PreprocessSettings, preprocess_session

KEYS = ["spacing_mm", "interpolation", "crop_margin_mm", "max_spacing_mm", "n4", "registration"]


def main() -> None:
    """Measure and print the Dice figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["ixi", "oasis3"])
    parser.add_argument("--methods", nargs="+", default=["deepbet", "atlas"])
    parser.add_argument("--config", default="config.yaml")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    config = yaml.safe_load(Path(args.config).read_text())
    print(f"cores {os.cpu_count()}  torch threads {torch.get_num_threads()}  device cpu")
    results = {}
    for dataset in args.datasets:
        manifest = read_manifest(f"results/datasets/{dataset}/manifest.tsv")
        t1 = manifest[(manifest["contrast"] == "T1w") & (manifest["truth_brain_mask"] != "")]
        t1 = t1.sort_values(["subject", "session"]).groupby("subject").head(1)
        for method in args.methods:
            values = stage_params(config, "preprocess", dataset, KEYS)
            settings = PreprocessSettings.from_dict({**values, "skull_strip": method, "threads": 1})
            dice, seconds = [], []
            for row in t1.itertuples(index=False):
                start = time.perf_counter()
                truth = nib.load(row.truth_brain_mask)
                result = preprocess_session({"T1w": nib.load(row.path)}, settings, truth)
                seconds.append(time.perf_counter() - start)
                dice.append(result.qc["dice"])
            key = f"{dataset}/{method}"
            results[key] = {
                "n": len(dice),
                "median": statistics.median(dice),
                "min": min(dice),
                "seconds_median": statistics.median(seconds),
            }
            print(
                f"{key}: T1w n={len(dice)}  Dice median {results[key]['median']:.3f}  "
                f"min {results[key]['min']:.3f}  ({results[key]['seconds_median']:.1f} s per volume)",
                flush=True,
            )
    write_json(f"results/benchmarks/skullstrip_dice-{'-'.join(args.methods)}.json", results)
    print(json.dumps(pd.DataFrame(results).T.round(3).to_dict("index")))


if __name__ == "__main__":
    main()
