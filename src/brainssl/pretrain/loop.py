"""Device-agnostic pretraining loop: DDP, autocast, accumulation, checkpoints, metrics, kNN probe.

The loop follows the structure of dinov2's ``train/train.py``: schedules are arrays read by
step; each step augments on the device, runs forward/backward (micro-batches under
``no_sync``), checks the loss is finite, clips, steps, updates the EMA teacher and logs.

Data order is a pure function of ``(seed, epoch)``: the global batch of step ``s`` is slice
``s`` of a seeded permutation, split between ranks and micro-batches. The augmentation
generator is re-seeded from ``(seed, rank, step)`` every step. So a resumed run sees the
same images and the same augmentations as an uninterrupted one, on any number of ranks.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from brainssl.io import atomic_path, write_text

from .checkpoint import (
    CHECKPOINT_FORMAT,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from .distributed import DistEnv
from .optim import build_optimizer
from .probe import ProbeSet, run_probes
from .schedules import Schedules

__all__ = ["LoopOptions", "NonFiniteLossError", "Trainer", "stop_signals", "StopFlag", "step_seed"]

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


@dataclass(frozen=True)
class LoopOptions:
    """Everything the loop needs besides the method, data and schedules.

    Attributes:
        epochs: training epochs.
        batch_size: global images per optimizer step (all ranks and micro-batches).
        accumulation: micro-batches per optimizer step.
        precision: ``fp32``, ``bf16`` or ``fp16`` (fp16 only on CUDA, with a grad scaler).
        compile: wrap the student in ``torch.compile``.
        channels_last: use channels-last memory format (CNNs).
        optimizer: ``adamw`` or ``lars``.
        clip_grad: per-parameter gradient-norm clip (DINO); 0 disables.
        freeze_last_layer_epochs: epochs during which the method's ``last_layer`` gets no update.
        checkpoint_every: write a checkpoint every this many optimizer steps (0: only at the end).
        log_every: record train metrics every this many steps.
        seed: data-order and augmentation seed.
        workers: DataLoader worker processes.
        img_size: probe input size.
        knn_k: neighbours of the kNN probe.
        knn_temperature: vote temperature of the kNN probe.
        max_steps: stop (with a checkpoint) after this many steps in total; None runs to the end.
    """

    epochs: int
    batch_size: int
    accumulation: int = 1
    precision: str = "fp32"
    compile: bool = False
    channels_last: bool = False
    optimizer: str = "adamw"
    clip_grad: float = 0.0
    freeze_last_layer_epochs: int = 0
    checkpoint_every: int = 0
    log_every: int = 10
    seed: int = 0
    workers: int = 0
    img_size: int = 224
    knn_k: int = 20
    knn_temperature: float = 0.07
    max_steps: int | None = None


@dataclass
class StopFlag:
    """Set by SIGTERM/SIGUSR1; the loop checkpoints and returns at the next step boundary."""

    requested: bool = False
    signum: int | None = None


@contextlib.contextmanager
def stop_signals(signums: tuple[int, ...] = (signal.SIGTERM, signal.SIGUSR1)) -> Iterator[StopFlag]:
    """Turn ``signums`` into a :class:`StopFlag` for the duration of the block (main thread only)."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def _handler(signum: int, _frame: Any) -> None:
        flag.requested, flag.signum = True, signum

    previous = {s: signal.signal(s, _handler) for s in signums}
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def step_seed(seed: int, rank: int, step: int) -> int:
    """A 63-bit seed for the augmentation generator of ``(seed, rank, step)`` (splitmix64 mix)."""
    z = (seed * 0x9E3779B97F4A7C15 + rank * 0xBF58476D1CE4E5B9 + step * 0x94D049BB133111EB) & (2**64 - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return (z ^ (z >> 31)) & (2**63 - 1)


def _collate(items: list[Any]) -> torch.Tensor:
    images = [it[0] if isinstance(it, tuple | list) else it for it in items]
    return torch.stack([torch.as_tensor(im) for im in images])


class Trainer:
    """Train one SSL method on a dataset of ``(1, H, W)`` tensors in ``[0, 1]``.

    Args:
        method: a :mod:`brainssl.pretrain.meta` method already on ``dist_env.device``.
        dataset: map-style dataset; items are ``(1, H, W)`` tensors (or tuples starting with one).
        schedule_factory: ``steps_per_epoch -> Schedules``.
        opts: loop options.
        out_dir: receives ``metrics.jsonl``, ``metrics.csv``, ``curves.png``, ``tensorboard/``
            and ``checkpoints/last.pt``.
        probe_sets: labelled held-out slices for the per-epoch kNN probe.
        dist_env: this process's rank and device.
        fingerprint: identifies the settings; a checkpoint with another fingerprint is refused.
    """

    def __init__(
        self,
        method: nn.Module,
        dataset: Dataset,
        schedule_factory: Callable[[int], Schedules],
        opts: LoopOptions,
        out_dir: str | Path,
        probe_sets: Mapping[str, ProbeSet] | None,
        dist_env: DistEnv,
        fingerprint: str = "",
    ) -> None:
        self.method, self.dataset, self.opts, self.env = method, dataset, opts, dist_env
        self.out_dir = Path(out_dir)
        self.ckpt_path = self.out_dir / "checkpoints" / "last.pt"
        self.probe_sets = dict(probe_sets or {})
        self.fingerprint = fingerprint
        per_rank = opts.batch_size // (dist_env.world_size * opts.accumulation)
        if per_rank * dist_env.world_size * opts.accumulation != opts.batch_size or per_rank < 1:
            raise ValueError(
                f"batch_size {opts.batch_size} is not divisible into {dist_env.world_size} ranks x "
                f"{opts.accumulation} micro-batches"
            )
        self.micro_batch = per_rank
        self.steps_per_epoch = len(dataset) // opts.batch_size  # type: ignore[arg-type]
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"dataset of {len(dataset)} images is smaller than one batch ({opts.batch_size})"
            )
        self.total_steps = opts.epochs * self.steps_per_epoch
        self.schedules = schedule_factory(self.steps_per_epoch)
        self.device = dist_env.device
        if opts.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision fp16 needs CUDA; use bf16 or fp32 on the CPU")
        if opts.channels_last:
            method.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(opts.optimizer, method.student, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if opts.precision == "fp16" else None
        self.model: Any = method.student
        if dist_env.world_size > 1:
            if self.device.type == "cuda":
                # batch statistics over every GPU's batch, as both papers' code does (the BN of heads
                # and ResNets); parameters are kept, so optimiser and EMA still see the same tensors
                nn.SyncBatchNorm.convert_sync_batchnorm(method.student)
                nn.SyncBatchNorm.convert_sync_batchnorm(method.teacher)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(method.student, device_ids=ids)
        if opts.compile:
            self.model = torch.compile(self.model)
        self.aug_gen = torch.Generator(device=self.device)
        self.step = 0
        self.records: list[dict[str, Any]] = []
        self._writer: Any = None
        self._tb_done = 0
        self._last_log = (time.perf_counter(), 0)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (tensors and plain values only)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint,
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else {},
            "position": {
                "step": self.step,
                "epoch": self.step // self.steps_per_epoch,
                "step_in_epoch": self.step % self.steps_per_epoch,
                "steps_per_epoch": self.steps_per_epoch,
                "sampler_seed": self.opts.seed,
                "world_size": self.env.world_size,
            },
            "rng": capture_rng_state({"augment": self.aug_gen}),
            "metrics": self.records,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; refuses a checkpoint of other settings or epoch length."""
        if state.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"checkpoint {self.ckpt_path} was written with other settings "
                f"({state.get('fingerprint')!r} != {self.fingerprint!r}); move it away to start afresh"
            )
        pos = state["position"]
        if pos["steps_per_epoch"] != self.steps_per_epoch:
            raise ValueError(
                f"checkpoint has {pos['steps_per_epoch']} steps per epoch, this run "
                f"{self.steps_per_epoch}: the dataset or batch size changed"
            )
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"], {"augment": self.aug_gen})
        self.step = int(pos["step"])
        self.records = [r for r in state["metrics"] if r["step"] <= self.step]
        logger.info(
            "resumed at step %d (epoch %d, step %d in epoch)", self.step, pos["epoch"], pos["step_in_epoch"]
        )

    def save(self) -> None:
        """Rank 0 writes ``checkpoints/last.pt`` atomically and flushes the metrics files."""
        if self.env.is_main:
            save_checkpoint(self.ckpt_path, self.state_dict())
            self.flush_metrics()
        self._barrier()

    def maybe_resume(self) -> bool:
        """Load ``checkpoints/last.pt`` if it exists; returns whether it did."""
        if not self.ckpt_path.is_file():
            return False
        self.load_state_dict(load_checkpoint(self.ckpt_path, map_location=self.device))
        return True

    # ------------------------------------------------------------------- data

    def _epoch_batches(self, epoch: int, start: int) -> list[list[int]]:
        """This rank's micro-batch index lists from optimizer step ``start`` of ``epoch`` on."""
        g = torch.Generator().manual_seed(step_seed(self.opts.seed, 1_000_003, epoch))
        perm = torch.randperm(len(self.dataset), generator=g).tolist()  # type: ignore[arg-type]
        bs, rank, mb = self.opts.batch_size, self.env.rank, self.micro_batch
        out = []
        for s in range(start, self.steps_per_epoch):
            mine = perm[s * bs : (s + 1) * bs][rank * mb * self.opts.accumulation :][
                : mb * self.opts.accumulation
            ]
            out += [mine[i * mb : (i + 1) * mb] for i in range(self.opts.accumulation)]
        return out

    def _loader(self, epoch: int, start: int) -> Iterator[list[torch.Tensor]]:
        loader = DataLoader(
            self.dataset,
            batch_sampler=self._epoch_batches(epoch, start),
            num_workers=self.opts.workers,
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.opts.seed),
            persistent_workers=False,
        )
        group: list[torch.Tensor] = []
        for batch in loader:
            group.append(batch)
            if len(group) == self.opts.accumulation:
                yield group
                group = []

    # ------------------------------------------------------------------- step

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.opts.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.opts.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _set_hyperparameters(self, sched: dict[str, float]) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = sched["lr"]
            if group.get("apply_wd"):
                group["weight_decay"] = sched["weight_decay"]

    def _forward_backward(
        self, micro: list[torch.Tensor], sched: dict[str, float]
    ) -> tuple[torch.Tensor, dict]:
        total = torch.zeros((), device=self.device)
        extra: dict[str, float] = {}
        for i, x in enumerate(micro):
            x = x.to(self.device, non_blocking=True).float()
            sync = self.env.world_size == 1 or i == len(micro) - 1 or not hasattr(self.model, "no_sync")
            with contextlib.nullcontext() if sync else self.model.no_sync():
                views = self.method.make_views(x, self.aug_gen)
                if self.opts.channels_last:
                    views = [v.contiguous(memory_format=torch.channels_last) for v in views]
                with self._autocast():
                    loss, extra = self.method.compute_loss(self.model, views, sched)
                scaled = loss / len(micro)
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            total += loss.detach().float()
        return total / len(micro), extra

    def _clip_and_freeze(self, epoch: int) -> None:
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if self.opts.clip_grad > 0:
            for p in self.method.student.parameters():
                if p.grad is not None:
                    norm = p.grad.norm()
                    p.grad.mul_(torch.clamp(self.opts.clip_grad / (norm + 1e-6), max=1.0))
        last = self.method.last_layer
        if last is not None and epoch < self.opts.freeze_last_layer_epochs:
            for p in last.parameters():
                p.grad = None

    def train_step(self, micro: list[torch.Tensor]) -> dict[str, Any]:
        """One optimizer step over ``accumulation`` micro-batches; returns its metrics.

        Raises:
            NonFiniteLossError: if the (all-rank mean) loss is NaN or infinite; nothing is updated.
        """
        epoch = self.step // self.steps_per_epoch
        sched = self.schedules.at(self.step)
        self._set_hyperparameters(sched)
        self.aug_gen.manual_seed(step_seed(self.opts.seed, self.env.rank, self.step))
        loss, extra = self._forward_backward(micro, sched)
        if self.env.world_size > 1:
            dist.all_reduce(loss)
            loss /= self.env.world_size
        value = float(loss)
        if not math.isfinite(value):
            self.optimizer.zero_grad(set_to_none=True)
            self._fail_non_finite(value, epoch)
        self._clip_and_freeze(epoch)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.method.update_teacher(sched["momentum"])
        self.step += 1
        return {
            "loss": value,
            "lr": sched["lr"],
            "weight_decay": sched["weight_decay"],
            "momentum": sched["momentum"],
            **extra,
        }

    def _fail_non_finite(self, value: float, epoch: int) -> None:
        if self.ckpt_path.is_file():
            kept = load_checkpoint(self.ckpt_path)["position"]["step"]
            where = f"the last good checkpoint {self.ckpt_path} (step {kept}) is kept"
        else:
            where = "no checkpoint had been written yet"
        message = (
            f"loss is {value} at step {self.step} (epoch {epoch}); training stopped before the "
            f"optimizer step; {where}. Lower the learning rate or check the data, then rerun to resume."
        )
        logger.error(message)
        if self.env.is_main:
            self.flush_metrics()
        raise NonFiniteLossError(message)

    # ---------------------------------------------------------------- metrics

    def _record_train(self, stats: dict[str, Any]) -> None:
        now = time.perf_counter()
        then, step0 = self._last_log
        images = (self.step - step0) * self.opts.batch_size
        self._last_log = (now, self.step)
        row = {
            "kind": "train",
            "step": self.step,
            "epoch": (self.step - 1) // self.steps_per_epoch,
            "images_per_s": images / max(now - then, 1e-9),
            **stats,
        }
        self.records.append(row)
        logger.info(
            "step %d/%d loss %.4f lr %.3g momentum %.5f %.1f img/s",
            self.step,
            self.total_steps,
            row["loss"],
            row["lr"],
            row["momentum"],
            row["images_per_s"],
        )

    def _probe(self, epoch: int) -> dict[str, float]:
        if not self.probe_sets:
            return {}
        results: dict[str, float] = {}
        if self.env.is_main:
            results = run_probes(
                self.method.eval_encoder,
                self.probe_sets,
                self.opts.img_size,
                self.device,
                self.opts.knn_k,
                self.opts.knn_temperature,
            )
            self.records.append(
                {
                    "kind": "probe",
                    "step": self.step,
                    "epoch": epoch,
                    **{f"knn/{k}": v for k, v in results.items()},
                }
            )
            logger.info("epoch %d kNN probe: %s", epoch, results)
        self._barrier()
        return results

    def flush_metrics(self) -> None:
        """Rewrite ``metrics.jsonl``/``metrics.csv`` atomically, add TensorBoard scalars, redraw curves."""
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.records)
        write_text(self.out_dir / "metrics.jsonl", lines)
        train = [r for r in self.records if r["kind"] == "train"]
        buf = io.StringIO()
        keys = sorted({k for r in train for k in r})
        writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(train)
        write_text(self.out_dir / "metrics.csv", buf.getvalue())
        self._tensorboard()
        plot_curves(self.records, self.out_dir / "curves.png")

    def _tensorboard(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if self._writer is None:
            first = self.records[self._tb_done]["step"] if self._tb_done < len(self.records) else 0
            self._writer = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=first)
        for row in self.records[self._tb_done :]:
            for key, value in row.items():
                if key not in ("kind", "step", "epoch") and isinstance(value, int | float):
                    self._writer.add_scalar(key if "/" in key else f"train/{key}", value, row["step"])
        self._tb_done = len(self.records)
        self._writer.flush()

    def _barrier(self) -> None:
        if self.env.world_size > 1:
            dist.barrier()

    # -------------------------------------------------------------------- fit

    def _stop_requested(self, flag: StopFlag) -> bool:
        wanted = torch.tensor([1.0 if flag.requested else 0.0], device=self.device)
        if self.env.world_size > 1:
            dist.all_reduce(wanted, op=dist.ReduceOp.MAX)
        return bool(wanted.item() > 0)

    def _run_epoch(self, epoch: int, flag: StopFlag) -> str | None:
        start = self.step - epoch * self.steps_per_epoch
        for micro in self._loader(epoch, start):
            stats = self.train_step(micro)
            if self.step % max(self.opts.log_every, 1) == 0 or self.step == 1:
                self._record_train(stats)
            if self.opts.checkpoint_every and self.step % self.opts.checkpoint_every == 0:
                self.save()
            if self._stop_requested(flag):
                logger.warning(
                    "signal %s received: checkpointing at step %d and stopping", flag.signum, self.step
                )
                return "preempted"
            if self.opts.max_steps is not None and self.step >= self.opts.max_steps:
                return "stopped"
        self._probe(epoch)
        return None

    def fit(self, resume: bool = True) -> dict[str, Any]:
        """Train to the end (or until a signal or ``max_steps``); returns a summary.

        The summary has ``status`` (``completed``, ``preempted`` or ``stopped``), ``step``,
        ``final_loss``, ``knn`` (last probe) and ``images_per_s`` (median of logged values).
        """
        if resume:
            self.maybe_resume()
        status = "completed"
        with stop_signals() as flag:
            while self.step < self.total_steps:
                outcome = self._run_epoch(self.step // self.steps_per_epoch, flag)
                if outcome:
                    status = outcome
                    break
        self.save()
        if self._writer is not None:
            self._writer.close()
        return self.summary(status)

    def summary(self, status: str) -> dict[str, Any]:
        """Final figures for the model card."""
        train = [r for r in self.records if r["kind"] == "train"]
        probes = [r for r in self.records if r["kind"] == "probe"]
        speeds = sorted(r["images_per_s"] for r in train[1:]) or [float("nan")]
        return {
            "status": status,
            "step": self.step,
            "total_steps": self.total_steps,
            "epochs_done": self.step / self.steps_per_epoch,
            "first_loss": train[0]["loss"] if train else None,
            "final_loss": train[-1]["loss"] if train else None,
            "images_per_s": speeds[len(speeds) // 2],
            "knn": {k.removeprefix("knn/"): v for k, v in probes[-1].items() if k.startswith("knn/")}
            if probes
            else {},
            "checkpoint": str(self.ckpt_path),
        }


def plot_curves(records: list[dict[str, Any]], path: str | Path) -> None:
    """Draw loss, learning rate, momentum and kNN accuracy against step into one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r["kind"] == "train"]
    probes = [r for r in records if r["kind"] == "probe"]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
    for ax, key in zip(axes[:3], ("loss", "lr", "momentum"), strict=True):
        ax.plot([r["step"] for r in train], [r.get(key, float("nan")) for r in train])
        ax.set_title(key)
        ax.set_xlabel("step")
    for key in sorted({k for r in probes for k in r if k.startswith("knn/")}):
        axes[3].plot(
            [r["step"] for r in probes], [r.get(key, float("nan")) for r in probes], marker="o", label=key
        )
    axes[3].set_title("kNN accuracy")
    axes[3].set_xlabel("step")
    if probes:
        axes[3].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
