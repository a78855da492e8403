"""Pretraining throughput: training images/s per method and backbone (CPU; GPU with MFU and busy time).

Run as ``python benchmarks/pretrain.py [--quick] [--compile]``. One header line, then one
line per (device, size, method, arch). Each configuration builds the real method and
:class:`~brainssl.pretrain.loop.Trainer` and times ``Trainer.train_step`` (augmentation on
the device, forward, backward, optimizer, EMA update): warm-up steps first, then the median
of repeats. CPU: 64 px, batch 16, all backbones; 224 px only for the small ones. GPU (when
``torch.cuda.is_available()``): 224 px, bf16, batches read from a memory-mapped uint8 slice
array, pinned and copied without blocking, as the loader does. There the script also counts
FLOPs per step (``torch.utils.flop_counter.FlopCounterMode``: forward, backward and the
teacher, not the optimizer), reports model FLOPs utilisation against 989 TFLOP/s (H100 /
H200 dense bf16) and the GPU-busy fraction: the time between CUDA events around each step
divided by the wall time of the whole loop, data loading included. Results also go to
``results/benchmarks/pretrain.json``. Tests never assert on timings.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from brainssl.pretrain import PretrainSettings, build_trainer
from brainssl.pretrain.distributed import DistEnv

PEAK_BF16 = 989e12  # H100 / H200 SXM dense bf16 FLOP/s
ARCHS = ("vit_tiny", "vit_small", "resnet18", "resnet50")
METHODS = ("moco", "dino")
CPU_224 = ("vit_tiny", "resnet18")  # the larger backbones take minutes per step at 224 px on a CPU
STORE_SLICES = 4096


class _Sized(torch.utils.data.Dataset):
    """Only a length: the benchmark feeds ``train_step`` itself."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        raise IndexError(i)


def settings_for(
    method: str, arch: str, size: int, batch: int, device: str, compile_: bool
) -> PretrainSettings:
    common = dict(
        method=method,
        arch=arch,
        img_size=size,
        batch_size=batch,
        epochs=1,
        warmup_epochs=0,
        device=device,
        workers=0,
        checkpoint_every=0,
        compile=compile_,
        precision="bf16" if device == "cuda" else "fp32",
    )
    if method == "moco":
        return PretrainSettings(
            **common, weight_decay=0.1, weight_decay_end=0.1, momentum=0.99, clip_grad=0.0
        )
    # DINO: paper heads; 2 global + 6 local crops (96 px on the GPU, 32 px at 64 px on the CPU)
    local = 96 if size >= 224 else 32
    return PretrainSettings(**common, n_local_crops=6, local_size=local)


def memmap_store(path: Path, n: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, size, size))
    for start in range(0, n, 512):
        arr[start : start + 512] = rng.integers(0, 256, size=arr[start : start + 512].shape, dtype=np.uint8)
    arr.flush()
    return np.load(path, mmap_mode="r")


def load_batch(store: np.ndarray, batch: int, rng: np.random.Generator, device: torch.device) -> torch.Tensor:
    idx = np.sort(rng.choice(store.shape[0], size=batch, replace=False))
    x = torch.from_numpy(np.ascontiguousarray(store[idx]))[:, None]
    if device.type == "cuda":
        x = x.pin_memory().to(device, non_blocking=True)
    return x.float().div_(255.0)


def count_flops(trainer: Any, x: torch.Tensor) -> float:
    with FlopCounterMode(display=False) as counter:
        trainer.train_step([x])
    return float(counter.get_total_flops())


def run_config(
    method: str,
    arch: str,
    size: int,
    batch: int,
    device: torch.device,
    store: np.ndarray | None,
    warmup: int,
    steps: int,
    repeats: int,
    compile_: bool,
    tmp: Path,
) -> dict[str, Any]:
    s = settings_for(method, arch, size, batch, device.type, compile_)
    env = DistEnv(0, 1, 0, device)
    trainer = build_trainer(
        s, _Sized(batch * (warmup + steps * repeats + 4)), None, tmp / f"{method}-{arch}", env
    )
    rng = np.random.default_rng(1)
    x = torch.rand(batch, 1, size, size, device=device)
    for _ in range(warmup):
        trainer.train_step([x])
    flops = count_flops(trainer, x) if device.type == "cuda" else float("nan")
    rates, busy = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
            events = []
            t0 = time.perf_counter()
            for _ in range(steps):
                xb = load_batch(store, batch, rng, device)
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                trainer.train_step([xb])
                end.record()
                events.append((start, end))
            torch.cuda.synchronize()
            wall = time.perf_counter() - t0
            busy.append(sum(a.elapsed_time(b) for a, b in events) / 1000.0 / wall)
        else:
            t0 = time.perf_counter()
            for _ in range(steps):
                trainer.train_step([x])
            wall = time.perf_counter() - t0
        rates.append(steps * batch / wall)
    ips = statistics.median(rates)
    row = {
        "device": device.type,
        "size": size,
        "batch": batch,
        "method": method,
        "arch": arch,
        "images_per_s": ips,
    }
    if device.type == "cuda":
        achieved = flops * ips / batch
        row.update(
            flops_per_step=flops,
            tflops=achieved / 1e12,
            mfu=achieved / PEAK_BF16,
            gpu_busy=statistics.median(busy),
        )
    return row


def line(row: dict[str, Any]) -> str:
    text = (
        f"{row['device']} {row['size']}px b{row['batch']} {row['method']:<4} {row['arch']:<9} "
        f"{row['images_per_s']:9,.1f} img/s"
    )
    if "mfu" in row:
        text += (
            f"  {row['flops_per_step'] / 1e12:7.2f} TFLOP/step  {row['tflops']:6.1f} TFLOP/s  "
            f"MFU {100 * row['mfu']:5.1f}% (goal >= 40% for vit_small)  "
            f"GPU busy {100 * row['gpu_busy']:5.1f}% (goal >= 90%)"
        )
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, CPU 64 px only")
    parser.add_argument("--compile", action="store_true", help="torch.compile the student (GPU)")
    parser.add_argument("--gpu-batch", type=int, default=128, help="images per step on the GPU")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    device_name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(
        f"cores {cores}  torch threads {torch.get_num_threads()}  torch {torch.__version__}  "
        f"cuda {device_name}",
        flush=True,
    )
    rows = []
    repeats = 2 if args.quick else 3
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cpu = torch.device("cpu")
        sizes = [64] if args.quick else [64, 224]
        for size in sizes:
            for method in METHODS:
                for arch in ARCHS if size == 64 else CPU_224:
                    steps = 2 if size == 64 else 1
                    rows.append(run_config(method, arch, size, 16, cpu, None, 1, steps, repeats, False, tmp))
                    print(line(rows[-1]), flush=True)
        if torch.cuda.is_available():
            gpu = torch.device("cuda")
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
            store = memmap_store(tmp / "store.npy", STORE_SLICES, 224)
            for method in METHODS:
                for arch in ARCHS:
                    rows.append(
                        run_config(method, arch, 224, args.gpu_batch, gpu, store, 3, 10, 3, args.compile, tmp)
                    )
                    print(line(rows[-1]), flush=True)
    out = Path("results/benchmarks/pretrain.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"cores": cores, "threads": torch.get_num_threads(), "cuda": device_name, "rows": rows}, indent=1
        )
    )


if __name__ == "__main__":
    main()
