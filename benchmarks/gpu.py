"""The GPU check, in at most 8 minutes: the test config end to end on CUDA, pretraining throughput and MFU.

Run as ``benchmarks/gpu.sh`` (this script under ``timeout``) on a machine with a CUDA GPU and an
environment holding brainssl's dependencies with a CUDA build of torch; ``--dry`` runs every part
on the CPU at a tiny size (the test suite does; nothing is timed there that matters). Parts, in
order, each within what is left of ``--budget-s`` (a part that no longer fits is skipped and named
as such), the JSON (``--out``, default ``results/benchmarks/gpu.json``) rewritten after each:

1. ``throughput`` eager: one ``Trainer.train_step`` after another (augmentation on the device,
   forward, backward, optimizer, EMA) of MoCo v3 and DINO on ViT-S/16 at 224 px in bf16 with the
   recipes of ``config/paper.yaml`` (DINO's 2 x 224 + 8 x 96 px crops, 65536 prototypes) at the
   per-GPU batch of that config, and a *reference*: a plain PyTorch loop of the same ViT-S/16 (one
   input channel) with a linear head, cross-entropy, AdamW and bf16 autocast, no brainssl code in
   the step. Images/s are the median of repeats after warm-up steps; FLOPs per image are counted
   with ``torch.utils.flop_counter.FlopCounterMode`` over one eager step (forward and backward; the
   optimizer is not counted); MFU = FLOPs per image x images/s / the GPU's dense bf16 peak
   (:data:`PEAK_BF16_TFLOPS` by device name, or ``--peak-tflops``). The reference's MFU is what
   plain code reaches with this model on this GPU; ``vs reference`` is a method's MFU over it.
2. ``data_path``: the store to an augmented GPU batch, without training: a memory-mapped uint8
   slice store read through :class:`brainssl.slices.SliceDataset` by the trainer's own DataLoader
   (``pretrain.workers`` processes, pinned memory), copied without blocking and turned into MoCo's
   two views and DINO's ten crops on the GPU. Compare its images/s with the step's: the loader
   keeps up where it is higher.
3. ``end_to_end``: ``snakemake`` of ``config/test.yaml`` with ``pretrain.device``, ``embed.device``
   and ``tasks.device`` set to ``cuda`` (and ``pretrain.resources.gpus`` 1, so every training job
   declares its GPU), in a temporary folder, ``--resources gpu=<GPUs>`` as
   ``profiles/local`` has it (``--dry``: its dry-run).
4. ``throughput`` compiled: the same steps under ``torch.compile`` (``pretrain.compile``), compile
   time reported apart (``--dry``: the ``eager`` backend, which traces without generating code).

``--parts`` runs a subset (``eager,data,e2e,compiled``). ``benchmarks/plan.py --gpu-json`` takes
the compiled brainssl rows as measured throughput.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from snakemake.utils import update_config, validate
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from brainssl.config import pretrain_run_settings
from brainssl.pretrain import PretrainSettings, build_trainer
from brainssl.pretrain.backbones import build_encoder
from brainssl.pretrain.distributed import DistEnv

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
#: Dense bf16 peak (TFLOP/s) by a substring of ``torch.cuda.get_device_name`` (first match wins).
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("A10", 125.0),
    ("L4", 121.0),
)
#: The parts, in the order they run.
PARTS = ("eager", "data", "e2e", "compiled")
DEVICES_CUDA = {
    "pretrain": {"device": "cuda", "resources": {"gpus": 1}},
    "embed": {"device": "cuda"},
    "tasks": {"device": "cuda"},
}
#: --dry: the paper recipe shrunk to seconds on a CPU (same code paths).
DRY = {
    "archs": ["vit_tiny"],
    "img_size": 32,
    "batch_size": 4,
    "vit_depth": 1,
    "workers": 0,
    "moco": {"moco_dim": 16, "moco_mlp_dim": 32},
    "dino": {
        "out_dim": 64,
        "head_hidden_dim": 32,
        "head_bottleneck_dim": 16,
        "n_local_crops": 2,
        "local_size": 16,
    },
}


class Budget:
    """The seconds left of the run; a part that needs more than is left is skipped."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left."""
        return self.end - time.monotonic()

    def allows(self, seconds: float) -> bool:
        """Whether ``seconds`` are left."""
        return self.left() >= seconds


def paper_config(dry: bool) -> dict[str, Any]:
    """config.yaml with config/paper.yaml laid over it (and the --dry shrink), validated."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(config, yaml.safe_load((REPO / "config/paper.yaml").read_text()))
    if dry:
        update_config(config, {"pretrain": copy_of(DRY), "slices": {"size": DRY["img_size"]}})
    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
    return config


def copy_of(value: Any) -> Any:
    return json.loads(json.dumps(value))


def run_settings(
    config: dict[str, Any], method: str, device: torch.device, compiled: bool
) -> PretrainSettings:
    """One run's settings as the workflow builds them, at the per-GPU batch of the config."""
    arch = config["pretrain"]["archs"][-1]
    values = pretrain_run_settings(config, method, arch)
    gpus = max(1, int(config["pretrain"]["resources"]["gpus"]))
    values.update(
        batch_size=max(2, values["batch_size"] // gpus),
        epochs=1,
        warmup_epochs=0,
        compile=compiled,
        device=device.type,
        precision="bf16" if device.type == "cuda" else "fp32",
        checkpoint_every=0,
        seed=int(config["seed"]),
    )
    return PretrainSettings.from_dict(values)


class _Sized(torch.utils.data.Dataset):
    """Only a length: the throughput parts feed ``train_step`` themselves."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        raise IndexError(i)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(step: Any, device: torch.device, steps: int, repeats: int) -> float:
    """Median seconds per call of ``step`` over ``repeats`` timings of ``steps`` calls."""
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def _flops(step: Any) -> float:
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def brainssl_step(
    config: dict[str, Any], method: str, device: torch.device, compiled: bool, tmp: Path
) -> tuple[Any, int, dict[str, Any]]:
    """The trainer's step of one method and its batch (``step()`` trains on a fixed batch)."""
    settings = run_settings(config, method, device, compiled)
    trainer = build_trainer(
        settings, _Sized(settings.batch_size * 4), None, tmp / method, DistEnv(0, 1, 0, device)
    )
    x = torch.rand(settings.batch_size, 1, settings.img_size, settings.img_size, device=device)
    return (lambda: trainer.train_step([x])), settings.batch_size, {"arch": settings.arch, "method": method}


def reference_step(
    config: dict[str, Any], device: torch.device, compiled: bool
) -> tuple[Any, int, dict[str, Any]]:
    """A plain loop of the same encoder: linear head, cross-entropy, AdamW, bf16 autocast on CUDA."""
    pretrain = config["pretrain"]
    arch, side = pretrain["archs"][-1], int(pretrain["img_size"])
    batch = max(2, pretrain["batch_size"] // max(1, int(pretrain["resources"]["gpus"])))
    depth = {"depth": pretrain["vit_depth"]} if pretrain["vit_depth"] and arch.startswith("vit") else {}
    torch.manual_seed(0)
    encoder = build_encoder(arch, side, **depth)
    model = nn.Sequential(encoder, nn.Linear(int(encoder.embed_dim), 1000)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    forward = torch.compile(model) if compiled else model
    x = torch.rand(batch, 1, side, side, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    autocast = (
        functools.partial(torch.autocast, device_type="cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else contextlib.nullcontext
    )

    def step() -> None:
        with autocast():
            loss = nn.functional.cross_entropy(forward(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, batch, {"arch": arch, "method": "supervised"}


def measure(
    make: Any,
    loop: str,
    device: torch.device,
    compiled: bool,
    peak: float | None,
    warmup: int,
    steps: int,
    repeats: int,
) -> dict[str, Any]:
    """Images/s, FLOPs per image and MFU of one step function (compile time apart)."""
    step, batch, names = make(compiled)
    start = time.perf_counter()
    step()  # the first call compiles
    _sync(device)
    first_s = time.perf_counter() - start
    for _ in range(max(0, warmup - 1)):
        step()
    seconds = _timed(step, device, steps, repeats)
    flops = _flops(make(False)[0]) / batch
    ips = batch / seconds
    row = {
        "loop": loop,
        **names,
        "compiled": compiled,
        "batch": batch,
        "images_per_s": ips,
        "flops_per_image": flops,
        "tflops": flops * ips / 1e12,
        "mfu": flops * ips / (peak * 1e12) if peak else None,
        "compile_s": first_s if compiled else None,
    }
    return row


# ---- the data path: store -> augmented batch on the device


def slice_store(folder: Path, n: int, side: int) -> pd.DataFrame:
    """A memory-mapped uint8 store of ``n`` smooth random slices and its index (SliceDataset's columns)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "shard-0.npy"
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, side, side))
    rng = np.random.default_rng(0)
    for start in range(0, n, 256):
        chunk = array[start : start + 256]
        coarse = rng.integers(0, 256, size=(len(chunk), side // 8 + 1, side // 8 + 1), dtype=np.uint8)
        chunk[:] = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)[:, :side, :side]
    array.flush()
    return pd.DataFrame(
        {"array": str(path), "labels": "", "offset": np.arange(n), "split": "train", "dataset": "stand_in"}
    )


def data_path(
    config: dict[str, Any], method: str, device: torch.device, index: pd.DataFrame, tmp: Path, batches: int
) -> dict[str, Any]:
    """Images/s from the store to the method's augmented views on the device (no training)."""
    from brainssl.slices import SliceDataset

    settings = run_settings(config, method, device, compiled=False)
    dataset = SliceDataset(index, check=False)
    trainer = build_trainer(settings, dataset, None, tmp / f"data-{method}", DistEnv(0, 1, 0, device))
    loader: Iterator[list[torch.Tensor]] = trainer._loader(0, 0)
    images = 0
    first = next(loader)  # workers start
    start = time.perf_counter()
    for i, group in enumerate([first, *loader]):
        if i >= batches:
            break
        x = group[0].to(device, non_blocking=True).float()
        views = trainer.method.make_views(x, trainer.aug_gen)
        images += x.shape[0]
    _sync(device)
    seconds = time.perf_counter() - start
    return {
        "method": method,
        "workers": settings.workers,
        "batch": settings.batch_size,
        "views": len(views),
        "images_per_s": images / seconds,
    }


# ---- the test config end to end


def end_to_end(dry: bool, timeout: float, cores: int) -> dict[str, Any]:
    """Snakemake of config/test.yaml on CUDA in a temporary folder (``dry``: its dry-run)."""
    with tempfile.TemporaryDirectory(prefix="brainssl-gpu-e2e-") as tmp:
        work = Path(tmp)
        shutil.copy(REPO / "config/test.yaml", work / "config.yaml")
        (work / "cuda.yaml").write_text(yaml.safe_dump(DEVICES_CUDA))
        cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "-d", str(work), "--cores", str(cores)]
        cmd += ["--configfile", str(work / "config.yaml"), str(work / "cuda.yaml")]
        # as profiles/local does: Snakemake runs at most this many GPU jobs at once, and each job
        # claims its own device (brainssl.gpus)
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 1
        cmd += ["--resources", f"gpu={gpus}"] + (["--dry-run"] if dry else [])
        start = time.perf_counter()
        try:
            result = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=timeout)
            rc, out = result.returncode, result.stdout + result.stderr
        except subprocess.TimeoutExpired as err:
            rc, out = None, f"timed out after {timeout:.0f} s\n" + str(err.stdout or "")[-2000:]
        seconds = time.perf_counter() - start
        gpu_jobs = out.count("gpu=1")
        table = work / "results/tasks/results.tsv"
        rows = len(pd.read_csv(table, sep="\t")) if table.is_file() else 0
    return {
        "dry_run": dry,
        "rc": rc,
        "seconds": seconds,
        "gpu_jobs_listed": gpu_jobs,
        "task_rows": rows,
        "ok": rc == 0 and (dry or rows > 0),
        "tail": "" if rc == 0 else out[-3000:],
    }


# ---- main


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def line(row: dict[str, Any], reference: dict[str, Any] | None) -> str:
    mode = "compiled" if row["compiled"] else "eager"
    text = (
        f"{row['loop']:<9} {row['method']:<10} {row['arch']:<9} {mode:<8} b{row['batch']:<4} "
        f"{row['images_per_s']:9,.1f} img/s  {row['flops_per_image'] / 1e9:7.1f} GFLOP/img  "
        f"{row['tflops']:7.2f} TFLOP/s"
    )
    if row["mfu"] is not None:
        text += f"  MFU {100 * row['mfu']:5.1f}%"
        if reference and reference.get("mfu") and row["loop"] != "reference":
            text += f"  vs reference {row['mfu'] / reference['mfu']:.2f}"
    if row["compile_s"] is not None:
        text += f"  (first step {row['compile_s']:.0f} s)"
    return text


class Run:
    """The parts of one run, each recorded in :attr:`report` and saved as it ends."""

    def __init__(self, args: argparse.Namespace, device: torch.device, tmp: Path) -> None:
        self.args, self.device, self.tmp = args, device, tmp
        self.budget = Budget(args.budget_s)
        self.config = paper_config(args.dry)
        self.peak = peak_tflops(device, args.peak_tflops)
        self.counts = (1, 1, 1) if args.dry else (3, 10, 3)  # warm-up steps, steps, repeats
        self.reference: dict[bool, dict[str, Any]] = {}
        self.report: dict[str, Any] = {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (--dry)",
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "peak_bf16_tflops": self.peak,
            "budget_s": args.budget_s,
            "throughput": [],
            "data_path": [],
            "skipped": [],
        }

    def save(self) -> None:
        """Write the report so far."""
        self.args.out.parent.mkdir(parents=True, exist_ok=True)
        self.args.out.write_text(json.dumps(self.report, indent=1))

    def throughput(self, compiled: bool, need_s: float) -> None:
        """The reference loop, MoCo v3 and DINO, eager or compiled."""
        makers = {
            "reference": lambda c: reference_step(self.config, self.device, c),
            "moco": lambda c: brainssl_step(self.config, "moco", self.device, c, self.tmp),
            "dino": lambda c: brainssl_step(self.config, "dino", self.device, c, self.tmp),
        }
        for name, make in makers.items():
            if not self.budget.allows(need_s):
                self.report["skipped"].append(f"throughput {name} {'compiled' if compiled else 'eager'}")
                continue
            loop = "reference" if name == "reference" else "brainssl"
            row = measure(make, loop, self.device, compiled, self.peak, *self.counts)
            if loop == "reference":
                self.reference[compiled] = row
            self.report["throughput"].append(row)
            print(line(row, self.reference.get(compiled)), flush=True)
            self.save()

    def data(self) -> None:
        """The store to augmented batches on the device, per method."""
        if not self.budget.allows(30):
            self.report["skipped"].append("data path")
            return
        side = int(self.config["pretrain"]["img_size"])
        index = slice_store(self.tmp / "store", 64 if self.args.dry else 8192, side)
        for method in ("moco", "dino"):
            row = data_path(self.config, method, self.device, index, self.tmp, 4 if self.args.dry else 24)
            self.report["data_path"].append(row)
            print(
                f"data path {method:<4} store -> {row['views']} views on {self.device.type}: "
                f"{row['images_per_s']:9,.1f} img/s ({row['workers']} workers, batch {row['batch']})",
                flush=True,
            )
            self.save()

    def end_to_end(self) -> None:
        """The test config through the whole workflow on CUDA (its dry-run with --dry)."""
        timeout = 120 if self.args.dry else min(300.0, self.budget.left() - 120)
        if timeout <= 30:
            self.report["skipped"].append("end to end")
            return
        e2e = self.report["end_to_end"] = end_to_end(self.args.dry, timeout, self.args.cores)
        print(
            f"end to end config/test.yaml on cuda{' (dry-run)' if self.args.dry else ''}: "
            f"{'ok' if e2e['ok'] else 'FAILED'} rc {e2e['rc']} in {e2e['seconds']:.0f} s, "
            f"{e2e['gpu_jobs_listed']} jobs listed with gpu=1, {e2e['task_rows']} task result rows",
            flush=True,
        )
        if not e2e["ok"]:
            print(e2e["tail"], flush=True)
        self.save()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every part that fits the budget; return (and write) the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="CPU, tiny sizes: every part in seconds")
    parser.add_argument("--out", type=Path, default=REPO / "results/benchmarks/gpu.json")
    parser.add_argument("--budget-s", type=float, default=460.0, help="stop starting parts after this")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak (default: by name)")
    parser.add_argument("--cores", type=int, default=min(16, os.cpu_count() or 1), help="snakemake --cores")
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"comma-separated subset of {', '.join(PARTS)} (default: all, in that order)",
    )
    args = parser.parse_args(argv)
    parts = [part for part in args.parts.split(",") if part]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    if not args.dry and not torch.cuda.is_available():
        raise SystemExit(
            f"no CUDA GPU visible to torch {torch.__version__} (CUDA build {torch.version.cuda or 'none'}); "
            "run with --dry on a CPU"
        )
    device = torch.device("cpu" if args.dry else "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    elif "compiled" in parts:
        # --dry: trace compiled steps without generating code (seconds, no C++ compiler needed)
        torch.compile = functools.partial(torch.compile, backend="eager")  # type: ignore[assignment]
    with tempfile.TemporaryDirectory(prefix="brainssl-gpu-") as tmp:
        run = Run(args, device, Path(tmp))
        r = run.report
        print(
            f"device {r['device']}  torch {r['torch']}  cuda {r['cuda']}  "
            f"peak bf16 {r['peak_bf16_tflops']} TFLOP/s"
        )
        if "eager" in parts:
            run.throughput(compiled=False, need_s=20)
        if "data" in parts:
            run.data()
        if "e2e" in parts:
            run.end_to_end()
        if "compiled" in parts:
            run.throughput(compiled=True, need_s=5 if args.dry else 75)
    for skipped in run.report["skipped"]:
        print(f"skipped (budget): {skipped}")
    run.save()
    return run.report


if __name__ == "__main__":
    main()
