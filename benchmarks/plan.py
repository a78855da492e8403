"""A plan before the spend: jobs, storage and GPU-hours of config/paper.yaml at the first study's scale.

Run as ``.venv/bin/python benchmarks/plan.py`` (2 CPU-minutes: the dry-runs and one counted step of
each pretraining run at 224 px; ``--gpu-json`` takes measured throughput from ``benchmarks/gpu.sh``).
It prints four tables and writes ``results/benchmarks/plan.json``:

1. **Jobs per rule** from real ``snakemake --dry-run`` s of ``config/paper.yaml`` on a stand-in
   cohort (:data:`COHORT`: 13,204 volumes of IXI, BraTS 2021, fastMRI brain and OASIS-3, plus the
   tumour image set and the Decathlon hippocampus crops) built with ``benchmarks/dag.py``'s stand-in
   ingest: the ``ingested`` state (manifests written) and the ``preprocessed`` state (shard tables
   and slice plans written), each rule's count being the larger of the two, as in ``dag.py``. The
   GPUs each job requests come from the same dry-runs (their ``resources:`` lines).
2. **Storage per stage** (GB = 1e9 bytes), computed, not measured (formulas in :func:`storage`):
   preprocessed volumes ``voxels x 4 B`` (float32, uncompressed: the .nii.gz files are smaller) plus
   masks and labels ``voxels x 1 B``; the slice store ``kept slices x size^2 x bytes(dtype)`` plus
   label slices of the labelled datasets; checkpoints ``(student + teacher + 2 AdamW moments) x 4 B``
   per parameter; embeddings ``slices x dim x 4 B`` per encoder.
3. **GPU-hours per rule**: work counted in FLOPs (``torch.utils.flop_counter.FlopCounterMode`` on
   the real networks: one pretraining ``train_step`` per run, encoder and decoder forwards for the
   tasks; backward = 2 x forward) divided by a throughput. The throughput of each row is named in its
   ``source`` column: ``gpu.json`` (measured by benchmarks/gpu.sh on a GPU), or the assumption
   ``H100 bf16 989 TFLOP/s x MFU 0.30`` (dense bf16 peak of an H100 SXM; MFU assumed, not
   measured). ``CPU-hours here`` divides the same FLOPs by this machine's measured float32 rate
   (the best of timed encoder forwards at 224 px), which is why the training rules run on GPUs.
4. **Host memory and scratch disk of the dense-task jobs** (:func:`dense_memory`): what the task's
   slices and the frozen encoders' maps of them would take, and what the job holds under its
   budgets (``slice_memory_gb``, ``feature_cache_gb``; the rest on its $TMPDIR, or encoded per batch).

The slices come from a model of the store (:func:`slice_counts`): each volume's axial extent
inside the brain crop, one slice every ``slices.step_mm``, the ``position_window`` share of
those and the share above ``entropy_percentile``; the 2D tumour images are kept whole. The
result (about 230,000 slices from 1.8 million native axial slices) is the study's "about 2 million
condensed to about 250,000".
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from snakemake.utils import update_config, validate

from brainssl.config import pretrain_run_settings, stage_params
from brainssl.datasets import DATASETS
from brainssl.datasets.manifest import failures_frame
from brainssl.io import write_json, write_table


def _sibling(name: str) -> Any:
    """A script of benchmarks/ as a module (the folder is not a package)."""
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"brainssl_benchmarks_{name}", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


dag = _sibling("dag")  # the stand-in ingest and preprocessing of benchmarks/dag.py

REPO = dag.REPO
SNAKEMAKE = dag.SNAKEMAKE
PAPER = REPO / "config/paper.yaml"
SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
GB = 1e9
#: Dense bf16 FLOP/s of an H100 SXM (also H200), and the MFU assumed where nothing is measured.
PEAK_BF16 = 989e12
ASSUMED_MFU = 0.30
ASSUMPTION = f"assumed: H100 bf16 {PEAK_BF16 / 1e12:.0f} TFLOP/s x MFU {ASSUMED_MFU:.2f}"


@dataclass(frozen=True)
class Cohort:
    """One dataset of the stand-in cohort.

    Attributes:
        subjects: subjects (sessions) in the study.
        native_slices: axial slices of one native volume (the count before the store condenses them).
        extent_mm: axial extent of one preprocessed volume's crop (brain plus margins), at 1 mm.
        crop_voxels: voxels of one preprocessed volume (the crop at ``preprocess.spacing_mm``).
        labelled: the volumes come with a label map (stored as label slices too).
        note: where the figures come from.
    """

    subjects: int
    native_slices: int
    extent_mm: float
    crop_voxels: int
    labelled: bool = False
    note: str = ""


#: The first study's cohort. Volumes per subject are the contrasts of benchmarks/dag.py's native
#: layouts (IXI 3, BraTS 4, fastMRI 1, OASIS-3 2). Crops: an adult brain box at 1 mm (150 x 180 x
#: 150 voxels), a head for fastMRI (220 x 220 x 80 mm), the Decathlon crops (35 x 51 x 35).
COHORT = {
    "ixi": Cohort(577, 256, 145, 150 * 180 * 150, note="IXI T1/T2/PD; 256 x 256 x 150 sagittal"),
    "brats21": Cohort(1251, 155, 145, 150 * 180 * 150, True, "BraTS 2021 training; 240 x 240 x 155"),
    "fastmri_brain": Cohort(4469, 16, 80, 220 * 220 * 80, note="fastMRI brain multicoil train; ~16 x 5 mm"),
    "oasis3": Cohort(1000, 256, 145, 150 * 180 * 150, note="OASIS-3 sessions, T1w + T2w; 176 x 256 x 256"),
    "tumor4": Cohort(7023, 1, 0, 0, note="4-class tumour images (2D JPEG; skips preprocessing)"),
    "hippocampus": Cohort(260, 35, 35, 35 * 51 * 35, True, "Decathlon Task04 training crops"),
}
#: The four pretraining datasets the study counts.
STUDY_DATASETS = ("ixi", "brats21", "fastmri_brain", "oasis3")
#: The rules whose jobs train networks (each should request a GPU in config/paper.yaml).
TRAINING_RULES = (
    "pretrain_moco",
    "pretrain_dino",
    "embed_encoder",
    "tasks_frozen",
    "tasks_tumor_segmentation",
    "tasks_hippocampus_segmentation",
    "tasks_tumor_detection",
    "tasks_reconstruction",
)


def volumes(dataset: str, cohort: Mapping[str, Cohort] = COHORT) -> int:
    """Volumes of a dataset: subjects x the contrasts of its native layout."""
    return cohort[dataset].subjects * len(dag.LAYOUT_FILES[dataset][3])


# ---- the stand-in cohort and its dry-runs


def write_cohort(workdir: Path, subjects: Mapping[str, int]) -> dict[str, pd.DataFrame]:
    """benchmarks/dag.py's finished ingest with ``subjects[dataset]`` subjects each; returns the manifests."""
    manifests = {d: dag.stand_in_manifest(d, subjects[d], workdir / "raw" / d) for d in DATASETS}
    datasets = {d: {"source": "local", "path": str(workdir / "raw" / d)} for d in DATASETS}
    (workdir / "datasets.yaml").write_text(yaml.safe_dump({"datasets": datasets}))
    shutil.copy(REPO / "config.yaml", workdir / "config.yaml")
    tier: list[Path] = []
    for dataset, manifest in manifests.items():
        folder = workdir / "results/datasets" / dataset
        write_table(folder / "manifest.tsv", manifest)
        write_table(folder / "failures.tsv", failures_frame([]))
        write_json(folder / "manifest.provenance.json", {"stage": "datasets", "stand_in": True})
        dag._touch([folder / "montage.png"])
        tier += [
            folder / n for n in ("manifest.tsv", "failures.tsv", "manifest.provenance.json", "montage.png")
        ]
    write_table(workdir / "results/datasets/manifest.tsv", pd.concat(manifests.values(), ignore_index=True))
    write_json(workdir / "results/datasets/manifest.provenance.json", {"stage": "datasets", "stand_in": True})
    tier += [workdir / "results/datasets/manifest.tsv", workdir / "results/datasets/manifest.provenance.json"]
    dag._age(tier, 1)
    return manifests


def config_files(workdir: Path, extra: tuple[Path, ...] = ()) -> list[Path]:
    """The --configfile list: paper.yaml, then the stand-in datasets (their paths win), then extras."""
    return [PAPER, workdir / "datasets.yaml", *extra]


def merged_config(workdir: Path, extra: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The config the dry-runs see (config.yaml, then each --configfile), validated: defaults filled."""
    config: dict[str, Any] = yaml.safe_load((workdir / "config.yaml").read_text())
    for path in config_files(workdir, extra):
        update_config(config, yaml.safe_load(path.read_text()))
    validate(config, str(SCHEMA))
    return config


def dry_run(workdir: Path, extra: tuple[Path, ...] = ()) -> tuple[dict[str, int], dict[str, int], str]:
    """``snakemake --dry-run`` of the stand-in: jobs per rule, most GPUs a job of each rule asks, stdout."""
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--dry-run"]
    cmd += ["--configfile", *map(str, config_files(workdir, extra))]
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"dry-run failed:\n{(result.stdout + result.stderr)[-4000:]}")
    return dag.job_counts(result.stdout), job_gpus(result.stdout), result.stdout


def job_gpus(stdout: str) -> dict[str, int]:
    """The largest ``gpu`` resource of any job of each rule in a dry-run's job list (0: none)."""
    gpus: dict[str, int] = {}
    rule = None
    for line in stdout.splitlines():
        head = re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):", line)
        if head:
            rule = head.group(1)
            gpus.setdefault(rule, 0)
        elif rule and line.strip().startswith("resources:"):
            found = re.search(r"\bgpu=(\d+)", line)
            gpus[rule] = max(gpus[rule], int(found.group(1)) if found else 0)
    return gpus


def plan_jobs(workdir: Path, subjects: Mapping[str, int], extra: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Both dry-runs of the stand-in: jobs per rule (each rule's larger count) and GPUs per job."""
    manifests = write_cohort(workdir, subjects)
    start = time.perf_counter()
    ingested, gpus_a, _ = dry_run(workdir, extra)
    dag.write_preprocessed(workdir, manifests, merged_config(workdir, extra))
    preprocessed, gpus_b, _ = dry_run(workdir, extra)
    seconds = time.perf_counter() - start
    jobs = dag.pipeline_jobs([{"jobs": ingested}, {"jobs": preprocessed}])
    gpus = {rule: max(gpus_a.get(rule, 0), gpus_b.get(rule, 0)) for rule in jobs}
    return {"jobs": jobs, "gpus": gpus, "dry_run_s": seconds, "states": [ingested, preprocessed]}


# ---- the slice store: counts and storage


def slice_counts(
    config: Mapping[str, Any], cohort: Mapping[str, Cohort] = COHORT
) -> dict[str, dict[str, float]]:
    """Native and kept slices per dataset of the store (the model in the module docstring).

    kept per volume = floor(extent_mm / max(step_mm, spacing_mm)) x window width x share kept by
    the entropy filter (``1 - entropy_percentile / 100`` in percentile mode, 1 in absolute mode);
    a 2D dataset keeps every image.
    """
    from brainssl.wiring import slice_datasets

    spacing = float(config["preprocess"]["spacing_mm"])
    counts = {}
    missing = sorted(set(slice_datasets(config)) - set(cohort))
    if missing:
        raise ValueError(f"the config's slice store holds {missing}, which the stand-in cohort lacks")
    for dataset in slice_datasets(config):
        entry = cohort[dataset]
        s = stage_params(config, "slices", dataset)
        n_volumes = volumes(dataset, cohort)
        if entry.extent_mm == 0:  # 2D images: one slice each
            kept = float(n_volumes)
        else:
            candidates = math.floor(entry.extent_mm / max(float(s["step_mm"]), spacing))
            window = s["position_window"][1] - s["position_window"][0]
            share = 1 - s["entropy_percentile"] / 100 if s["entropy_mode"] == "percentile" else 1.0
            kept = n_volumes * candidates * window * share
        counts[dataset] = {"volumes": n_volumes, "native": n_volumes * entry.native_slices, "kept": kept}
    return counts


def storage(
    config: Mapping[str, Any],
    counts: Mapping[str, Mapping[str, float]],
    params: Mapping[str, Any],
    cohort: Mapping[str, Cohort] = COHORT,
) -> dict[str, float]:
    """GB written per stage.

    - preprocess: per volume ``crop_voxels x 4 B`` (float32 image), per session ``crop_voxels x 1 B``
      (mask) and for labelled datasets another ``crop_voxels x 1 B`` (label map); uncompressed.
    - slices: ``kept x size^2 x bytes(dtype)``, plus ``kept x size^2 x 1 B`` label slices of labelled
      datasets; the Parquet index and stats (about 200 B a row) are left out.
    - pretrain: per run ``(student + teacher + 2 x trained) params x 4 B`` (weights, and AdamW's two
      moments of the trained ones: checkpoints/last.pt) plus the exported encoder ``encoder params x
      4 B`` twice (the run folder and export/); random-* exports: encoder params x 4 B.
    - embed: per encoder ``kept slices x embedding dim x 4 B`` (float32 Parquet, uncompressed).
    """
    from brainssl.preprocess.shards import PREPROCESS_DATASETS

    out: dict[str, float] = {}
    total = 0.0
    for dataset in PREPROCESS_DATASETS:
        if dataset not in config["datasets"] or not config["datasets"][dataset].get("enabled", True):
            continue
        entry = cohort[dataset]
        per_session = entry.crop_voxels * (4 * len(dag.LAYOUT_FILES[dataset][3]) + 1 + int(entry.labelled))
        total += entry.subjects * per_session
    out["preprocess"] = total / GB
    size, dtype = int(config["slices"]["size"]), config["slices"]["dtype"]
    depth = {"uint8": 1, "float16": 2}[dtype]
    labelled = sum(c["kept"] for d, c in counts.items() if cohort[d].labelled)
    out["slices"] = (sum(c["kept"] for c in counts.values()) * depth + labelled) * size * size / GB
    pretrain = 0.0
    for run in params["runs"].values():
        weights = run["student_params"] + run["teacher_params"] + 2 * run["trained_params"]
        pretrain += 4 * (weights + 2 * run["encoder_params"])
    for arch in config["pretrain"]["archs"]:
        pretrain += 4 * params["encoders"][arch]["params"]
    out["pretrain"] = pretrain / GB
    slices = sum(c["kept"] for c in counts.values())
    dims = [params["encoders"][name.split("-", 1)[1]]["dim"] for name in params["encoder_names"]]
    out["embed"] = sum(slices * dim * 4 for dim in dims) / GB
    return out


# ---- work in FLOPs and the networks' sizes


def _flops(fn: Any) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return float(counter.get_total_flops())


def measure_networks(config: Mapping[str, Any], cpu_repeats: int = 3) -> dict[str, Any]:
    """Parameters and FLOPs of every network the config trains, counted on the CPU.

    For each pretraining run: one real ``Trainer.train_step`` at batch 2 (views, student and teacher
    forward, backward; optimizer excluded) under ``FlopCounterMode`` gives FLOPs per image. For each
    architecture: the encoder's forward at ``img_size`` (and at DINO's local size), its embedding
    dim and feature maps. The CPU rate is the best of ``cpu_repeats`` timed encoder forwards.
    """
    import torch

    from brainssl.pretrain import PretrainSettings, build_trainer
    from brainssl.pretrain.backbones import build_encoder
    from brainssl.pretrain.distributed import DistEnv
    from brainssl.tasks.dense_networks import DenseDecoder
    from brainssl.wiring import encoders

    side = int(config["pretrain"]["img_size"])
    depth = config["pretrain"]["vit_depth"]
    cpu = torch.device("cpu")
    result: dict[str, Any] = {"runs": {}, "encoders": {}, "decoders": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for method in config["pretrain"]["methods"]:
            for arch in config["pretrain"]["archs"]:
                values = pretrain_run_settings(config, method, arch)
                values.update(
                    batch_size=2,
                    epochs=1,
                    compile=False,
                    device="cpu",
                    precision="fp32",
                    workers=0,
                    checkpoint_every=0,
                    seed=int(config["seed"]),
                )
                settings = PretrainSettings.from_dict(values)
                trainer = build_trainer(
                    settings, _Sized(8), None, Path(tmp) / f"{method}-{arch}", DistEnv(0, 1, 0, cpu)
                )
                x = torch.rand(2, 1, side, side)
                from torch.utils.flop_counter import FlopCounterMode

                with FlopCounterMode(display=False) as counter:
                    trainer.train_step([x])
                student = trainer.method.student
                result["runs"][f"{method}-{arch}"] = {
                    "flops_per_image": counter.get_total_flops() / 2,
                    "student_params": sum(p.numel() for p in student.parameters()),
                    "trained_params": sum(p.numel() for p in student.parameters() if p.requires_grad),
                    "teacher_params": sum(p.numel() for p in trainer.method.teacher.parameters()),
                    "encoder_params": sum(p.numel() for p in student.encoder.parameters()),
                }
        times = []
        for arch in config["pretrain"]["archs"]:
            overrides = {"depth": depth} if depth and arch.startswith("vit") else {}
            enc = build_encoder(arch, side, **overrides).eval()
            image = torch.zeros(1, 1, side, side)
            features = enc.forward_features(image)
            maps = [m.shape[1] for m in features]
            forward = _flops(lambda enc=enc, image=image: enc(image))
            result["encoders"][arch] = {
                "params": sum(p.numel() for p in enc.parameters()),
                "dim": int(enc.embed_dim),
                "forward": forward,
                "maps": maps,
                "map_elements": sum(m.numel() for m in features),
            }
            batch = torch.zeros(4, 1, side, side)
            with torch.no_grad():
                enc(batch)
                for _ in range(cpu_repeats):
                    start = time.perf_counter()
                    enc(batch)
                    times.append(4 * forward / (time.perf_counter() - start))
            for contrasts, out_channels in {(c, o) for c, o in _dense_shapes(config)}:
                width = 32
                decoder = DenseDecoder([d * contrasts for d in maps], contrasts, out_channels, width).eval()
                feats = [
                    torch.zeros(1, d * contrasts, *m.shape[-2:])
                    for d, m in zip(maps, enc.forward_features(image), strict=True)
                ]
                key = f"{arch}/{contrasts}/{out_channels}"
                result["decoders"][key] = _flops(
                    lambda decoder=decoder, feats=feats, c=contrasts: decoder(
                        feats, torch.zeros(1, c, side, side)
                    )
                )
    result["cpu_flops_per_s"] = max(times)  # the least disturbed timing on a shared machine
    result["encoder_names"] = [n for n in encoders(config) if not n.startswith("classical")]
    return result


class _Sized:
    """A dataset of only a length (the plan feeds ``train_step`` itself)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        raise IndexError(i)


def _dense_shapes(config: Mapping[str, Any]) -> list[tuple[int, int]]:
    """(input contrasts, output channels) of each enabled dense task's decoder."""
    from brainssl.wiring import dense_tasks

    tasks = config["tasks"]
    shapes = {
        "tumor_segmentation": (len(tasks["tumor_segmentation"]["contrasts"]), 3),
        "hippocampus_segmentation": (1, 3),
        "tumor_detection": (len(tasks["tumor_detection"]["contrasts"]), 5),
        "reconstruction": (1, 1),
    }
    return [shapes[t] for t in dense_tasks(config)]


# ---- GPU-hours


#: The dataset each dense task reads, and its decoder's outputs.
DENSE_DATASETS = {
    "tumor_segmentation": ("brats21", 3),
    "hippocampus_segmentation": ("hippocampus", 3),
    "tumor_detection": ("brats21", 5),
    "reconstruction": ("fastmri_brain", 1),
}


def dense_shape(
    config: Mapping[str, Any], task: str, cohort: Mapping[str, Cohort] = COHORT
) -> dict[str, Any]:
    """A dense task's slices, channels and sweeps.

    Slices: each subject's slices holding brain (the crop's extent; fastMRI's own slices), the
    preprocessing split's 15% test subjects (Decathlon: re-split at test_fraction 0.25); sweeps:
    one, or one per mask kind and acceleration (reconstruction).
    """
    from brainssl.wiring import dense_task_params

    s = dense_task_params(config, task)
    dataset, out_channels = DENSE_DATASETS[task]
    entry = cohort[dataset]
    per_subject = entry.native_slices if dataset == "fastmri_brain" else entry.extent_mm
    test_share = 0.25 if dataset == "hippocampus" else 0.15
    return {
        "settings": s,
        "train_slices": entry.subjects * (1 - test_share) * per_subject,
        "test_slices": entry.subjects * test_share * per_subject,
        "contrasts": len(s.get("contrasts", [])) or 1,
        "out_channels": out_channels,
        "repeats": len(s["masks"]) * len(s["accelerations"]) if task == "reconstruction" else 1,
        "per_subject": per_subject,
    }


#: Bytes per pixel of a dense task's training targets in a batch (brainssl.tasks: float32 BraTS
#: regions, int64 hippocampus classes, float32 CenterNet maps, float32 image and, for SSIM, its peak).
#: Only reconstruction stores its targets (the image, 4 B); the others are made per batch.
TARGET_BYTES = {
    "tumor_segmentation": 12,
    "hippocampus_segmentation": 8,
    "tumor_detection": 24,
    "reconstruction": 8,
}
PREDICT_BATCH = 64
#: Bytes of one fastMRI brain volume's k-space at paper settings: 16 slices x 20 coils (the most of
#: the brain files) x a 640 x 320 oversampled readout, complex64.
KSPACE_BYTES = 16 * 20 * 640 * 320 * 8
#: Copies of it while it is prepared: as read, masked, and the inverse FFT's input and output.
KSPACE_COPIES = 4
#: Bytes of a detection training slice's boxes (its CenterNet maps are drawn per batch), at one box.
BOX_BYTES = 16


def dense_memory(
    config: Mapping[str, Any], nets: Mapping[str, Any], cohort: Mapping[str, Cohort] = COHORT
) -> dict:
    """Host memory and scratch disk (GB) of a dense task's job under its memory budgets.

    ``slices_gb``: the task's training and test slices as float32 ``(N, contrasts, side, side)``;
    ``frozen_maps_gb``: a frozen encoder's four maps of all of them (``map_elements`` floats per
    slice and contrast, the largest architecture), what a cache would take.
    The job's arrays (brainssl.tasks.dense_memory.SliceSpace) are the cut slices with uint8
    labels, which training and prediction read in place (segmentation's targets made from the
    labels per batch, detection's from each slice's boxes); reconstruction stores the prepared
    inputs and float32 target images of every slice. Up to ``slice_memory_gb`` of them stay in
    memory, the rest is ``scratch_gb`` on the job's $TMPDIR. The maps are cached only within
    ``feature_cache_gb`` (``maps_cached``), else encoded per batch. ``ram_gb``: the arrays and
    cache in memory, one training batch (slices, targets, maps: on the CPU; a GPU holds the maps
    there), one prediction batch of 64 with its maps and outputs, one subject's outputs, two
    encoders' float32 weights (the frozen and a trained one), detection's boxes
    (:data:`BOX_BYTES`) and reconstruction's one volume of k-space in :data:`KSPACE_COPIES`
    (the job reads one file at a time).
    """
    from brainssl.wiring import dense_tasks

    side = int(config["pretrain"]["img_size"])
    pixels = side * side
    largest = max(e["map_elements"] for e in nets["encoders"].values())
    params = max(e["params"] for e in nets["encoders"].values())
    out = {}
    for task in dense_tasks(config):
        shape = dense_shape(config, task, cohort)
        s, contrasts = shape["settings"], shape["contrasts"]
        train, test = shape["train_slices"], shape["test_slices"]
        image, target = contrasts * pixels * 4, TARGET_BYTES[task] * pixels
        maps, outputs = contrasts * largest * 4, shape["out_channels"] * pixels * 4
        if task == "reconstruction":  # prepared inputs and target images (4 B a pixel)
            arrays = (train + test) * (image + 4 * pixels)
        else:  # the cut slices and their uint8 labels
            arrays = (train + test) * (image + pixels)
        held = {"reconstruction": KSPACE_COPIES * KSPACE_BYTES, "tumor_detection": train * BOX_BYTES}
        in_memory = min(arrays, s["slice_memory_gb"] * GB)
        needed = (train + test) * maps if "frozen" in s["modes"] else 0.0
        cached = needed <= s["feature_cache_gb"] * GB
        batches = s["batch_size"] * (image + target + maps) + PREDICT_BATCH * (image + maps + outputs)
        ram = (
            in_memory
            + (needed if cached else 0.0)
            + batches
            + shape["per_subject"] * outputs
            + 2 * params * 4
            + held.get(task, 0)
        )
        out[task] = {
            "slices_gb": (train + test) * image / GB,
            "frozen_maps_gb": needed / GB,
            "maps_cached": cached,
            "ram_gb": ram / GB,
            "scratch_gb": (arrays - in_memory) / GB,
        }
    return out


def dense_work(
    config: Mapping[str, Any], task: str, nets: Mapping[str, Any], cohort: Mapping[str, Cohort] = COHORT
) -> float:
    """FLOPs of one dense task's job: every variant, fraction and seed (see brainssl.tasks.dense_sweep).

    Frozen encoders: their maps of every training and test slice once per encoder, then the decoder
    trained (3 x forward per slice and epoch) at every fraction and seed; fine-tuned and scratch
    networks (4 pretrained encoders, 2 scratch architectures): encoder and decoder trained at the
    largest fraction, every seed. Slices: each subject's slices holding brain (the crop's extent),
    the training ones capped at max_train_slices per run; reconstruction repeats the sweep for every
    mask kind and acceleration.
    """
    from brainssl.wiring import encoders

    shape = dense_shape(config, task, cohort)
    s, contrasts, out_channels = shape["settings"], shape["contrasts"], shape["out_channels"]
    train_slices, test_slices, repeats = shape["train_slices"], shape["test_slices"], shape["repeats"]
    names = list(encoders(config))
    total = 0.0
    for name in names:
        arch = name.split("-", 1)[1]
        enc = nets["encoders"][arch]["forward"] * contrasts
        dec = nets["decoders"][f"{arch}/{contrasts}/{out_channels}"]
        if "frozen" in s["modes"]:
            total += (train_slices + test_slices) * enc  # the cached maps
            for fraction in s["label_fractions"]:
                n = min(s["max_train_slices"], fraction * train_slices)
                total += s["seeds"] * (s["epochs"] * n * 3 * dec + test_slices * dec)
        trains = ("finetune" in s["modes"] and not name.startswith("random-")) or (
            "scratch" in s["modes"] and name.startswith("random-")
        )
        if trains:
            n = min(s["max_train_slices"], max(s["label_fractions"]) * train_slices)
            total += s["seeds"] * (s["epochs"] * n * 3 * (enc + dec) + test_slices * (enc + dec))
    return total * repeats


def scratch_work(
    config: Mapping[str, Any], counts: Mapping[str, Mapping[str, float]], nets: Mapping[str, Any]
) -> float:
    """FLOPs of the scratch baselines of the frozen-feature tasks (rule tasks_frozen).

    Targets: tumor4, sequence, neurodegeneration, IDH and MGMT; per target folds x seeds x scratch
    fractions fits, each training one network per architecture for ``epochs`` over at most
    ``max_train_slices`` of the (folds - 1) / folds training share of the target's stored slices and
    predicting the rest.
    """
    from brainssl.wiring import scratch_enabled

    tasks, scratch = config["tasks"], config["tasks"]["scratch"]
    seeds = tasks["seeds"] if scratch["seeds"] is None else min(scratch["seeds"], tasks["seeds"])
    fits = tasks["folds"] * seeds * len(scratch["label_fractions"])
    kept = {d: c["kept"] for d, c in counts.items()}
    oasis_t1 = kept.get("oasis3", 0) / len(dag.LAYOUT_FILES["oasis3"][3])
    targets = {
        "tumor4": [kept.get("tumor4", 0)],
        "sequence": [kept.get("brats21", 0)],
        "neurodegeneration": [oasis_t1],
        "molecular": [kept.get("brats21", 0)] * 2,
    }
    total = 0.0
    for task, slices in targets.items():
        if not scratch_enabled(config, task):
            continue
        for n in slices:
            train = min(scratch["max_train_slices"], n * (tasks["folds"] - 1) / tasks["folds"])
            test = n / tasks["folds"]
            for arch in config["pretrain"]["archs"]:
                f = nets["encoders"][arch]["forward"]
                total += fits * (scratch["epochs"] * train * 3 * f + test * f)
    return total


def gpu_hours(
    config: Mapping[str, Any],
    counts: Mapping[str, Mapping[str, float]],
    nets: Mapping[str, Any],
    measured: Mapping[str, float] | None = None,
) -> dict[str, dict[str, Any]]:
    """GPU-hours, CPU-hours here and the throughput's source per training rule.

    Args:
        config: the merged, validated config.
        counts: :func:`slice_counts`.
        nets: :func:`measure_networks`.
        measured: images/s per GPU by run (``moco-vit_small``...), from benchmarks/gpu.sh's JSON;
            rows without a measured figure use :data:`ASSUMPTION`.
    """
    from brainssl.wiring import dense_tasks

    measured = measured or {}
    rate = PEAK_BF16 * ASSUMED_MFU
    cpu = nets["cpu_flops_per_s"]
    train_share = config["datasets"]["split"]["train"]
    stored = sum(c["kept"] for c in counts.values())
    rows: dict[str, dict[str, Any]] = {}

    def add(rule: str, flops: float, seconds: float | None = None, source: str = ASSUMPTION) -> None:
        row = rows.setdefault(rule, {"flops": 0.0, "gpu_s": 0.0, "source": set()})
        row["flops"] += flops
        row["gpu_s"] += flops / rate if seconds is None else seconds
        row["source"].add(source)

    for run, info in nets["runs"].items():
        method = run.split("-", 1)[0]
        images = config["pretrain"]["epochs"] * stored * train_share
        if run in measured:
            add(
                f"pretrain_{method}",
                images * info["flops_per_image"],
                images / measured[run],
                f"measured: gpu.json {measured[run]:,.0f} img/s per GPU",
            )
        else:
            add(f"pretrain_{method}", images * info["flops_per_image"])
    for name in nets["encoder_names"]:
        arch = name.split("-", 1)[1]
        add("embed_encoder", stored * nets["encoders"][arch]["forward"])
    add("tasks_frozen", scratch_work(config, counts, nets))
    for task in dense_tasks(config):
        add(f"tasks_{task}", dense_work(config, task, nets))
    for row in rows.values():
        row["gpu_h"] = row.pop("gpu_s") / 3600
        row["cpu_h"] = row["flops"] / cpu / 3600
        row["source"] = "; ".join(sorted(row["source"]))
    return rows


def measured_rates(path: Path | None) -> dict[str, float]:
    """Images/s per GPU of each run measured by benchmarks/gpu.py (its compiled brainssl rows)."""
    if path is None or not path.is_file():
        return {}
    data = json.loads(path.read_text())
    rates = {}
    for row in data.get("throughput", []):
        if row.get("loop") == "brainssl" and row.get("compiled") and row.get("images_per_s"):
            rates[f"{row['method']}-{row['arch']}"] = float(row["images_per_s"])
    return rates


# ---- the report


def tables(plan: Mapping[str, Any]) -> str:
    """The three tables as Markdown."""
    jobs, gpus, hours = plan["jobs"], plan["gpus"], plan["gpu_hours"]
    lines = [
        "| rule | jobs | GPUs per job | GPU-hours | CPU-hours here | throughput |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for rule in sorted(jobs, key=lambda r: (r not in hours, r)):
        h = hours.get(rule)
        cells = [rule, f"{jobs[rule]:,}", str(gpus.get(rule, 0))]
        cells += [f"{h['gpu_h']:,.2f}", f"{h['cpu_h']:,.0f}", h["source"]] if h else ["", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    total_gpu = sum(h["gpu_h"] for h in hours.values())
    lines.append(
        f"| **total** | {sum(jobs.values()):,} | | {total_gpu:,.1f} | "
        f"{sum(h['cpu_h'] for h in hours.values()):,.0f} | |"
    )
    counts = plan["slices"]
    lines += ["", "| dataset | volumes | native axial slices | stored slices |", "|---|---:|---:|---:|"]
    for dataset, c in counts.items():
        lines.append(f"| {dataset} | {c['volumes']:,} | {c['native']:,} | {c['kept']:,.0f} |")
    study = [counts[d] for d in STUDY_DATASETS if d in counts]
    lines.append(
        f"| **{' + '.join(d for d in STUDY_DATASETS if d in counts)}** | "
        f"{sum(c['volumes'] for c in study):,} | {sum(c['native'] for c in study):,} | "
        f"{sum(c['kept'] for c in study):,.0f} |"
    )
    lines += ["", "| stage | GB |", "|---|---:|"]
    for stage, gb in plan["storage"].items():
        lines.append(f"| {stage} | {gb:,.1f} |")
    if plan.get("dense_memory"):
        lines += [
            "",
            "| dense task job | slices (GB) | frozen maps (GB) | maps cached | host memory (GB) "
            "| scratch disk (GB) |",
            "|---|---:|---:|---|---:|---:|",
        ]
        for task, mem in plan["dense_memory"].items():
            cells = [f"{mem[k]:,.1f}" for k in ("slices_gb", "frozen_maps_gb")]
            cells += ["yes" if mem["maps_cached"] else "no, per batch"]
            cells += [f"{mem[k]:,.1f}" for k in ("ram_gb", "scratch_gb")]
            lines.append(f"| tasks_{task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def make_plan(
    workdir: Path,
    subjects: Mapping[str, int],
    cohort: Mapping[str, Cohort] = COHORT,
    extra: tuple[Path, ...] = (),
    gpu_json: Path | None = None,
    cpu_repeats: int = 3,
) -> dict[str, Any]:
    """Dry-run the stand-in of ``subjects`` in ``workdir``, then compute the slices, storage and GPU-hours."""
    jobs = plan_jobs(workdir, subjects, extra)
    config = merged_config(workdir, extra)
    counts = slice_counts(config, cohort)
    nets = measure_networks(config, cpu_repeats)
    return {
        **jobs,
        "slices": counts,
        "storage": storage(config, counts, nets, cohort),
        "gpu_hours": gpu_hours(config, counts, nets, measured_rates(gpu_json)),
        "dense_memory": dense_memory(config, nets, cohort),
        "networks": {k: v for k, v in nets.items() if k != "decoders"},
        "sizes": input_sizes(config),
    }


def input_sizes(config: Mapping[str, Any]) -> dict[str, int]:
    """The slice side of every stored dataset and the input side of every pretraining run (px)."""
    from brainssl.wiring import slice_datasets

    sizes = {
        f"slices.{d}": stage_params(config, "slices", d, ["size"])["size"] for d in slice_datasets(config)
    }
    for method in config["pretrain"]["methods"]:
        for arch in config["pretrain"]["archs"]:
            sizes[f"pretrain.{method}-{arch}"] = pretrain_run_settings(config, method, arch)["img_size"]
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--gpu-json",
        type=Path,
        default=REPO / "results/benchmarks/gpu.json",
        help="throughput measured by benchmarks/gpu.sh (used where present)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "results/benchmarks/plan.json")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    subjects = {d: c.subjects for d, c in COHORT.items()}
    print(
        f"cores {cores}  config/paper.yaml on a stand-in cohort of {sum(subjects.values()):,} subjects",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="brainssl-plan-") as tmp:
        plan = make_plan(Path(tmp), subjects, gpu_json=args.gpu_json)
    print(f"dry-runs {plan['dry_run_s']:.0f} s; input sizes (px): {sorted(set(plan['sizes'].values()))}")
    missing = [r for r in TRAINING_RULES if r in plan["jobs"] and not plan["gpus"].get(r)]
    print("training rules without a GPU request: " + (", ".join(missing) or "none"))
    print(tables(plan))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(plan, indent=1, default=str))


if __name__ == "__main__":
    main()
