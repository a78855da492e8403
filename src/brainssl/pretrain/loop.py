"""Device-agnostic pretraining loop: DDP, autocast, accumulation, checkpoints, metrics, kNN probe.

The loop follows the structure of dinov2's ``train/train.py``: schedules are arrays read by
step; each step augments on the device, runs forward/backward (micro-batches under
``no_sync``), checks the loss is finite, clips, steps and logs. The EMA teacher is updated once
per step with that step's scheduled momentum, where the method's authors put it: MoCo v3 at the
start of the step, before the keys are computed (facebookresearch/moco-v3 c349e6e2,
``moco/builder.py`` ``MoCo.forward``: momentum update, keys, loss, then the optimizer step in
``main_moco.py`` ``train``); DINO after the optimizer step (facebookresearch/dino 7c446df5,
``main_dino.py`` ``train_one_epoch``). A method says which with ``update_teacher_first``.

The pieces around the step live in sibling modules: the data order and augmentation seeds
(:mod:`brainssl.pretrain.order`), preemption signals (:mod:`brainssl.pretrain.preemption`)
and the metric files, TensorBoard log and curves (:mod:`brainssl.pretrain.metrics`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .checkpoint import (
    CHECKPOINT_FORMAT,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from .distributed import DistEnv
from .metrics import TensorBoardLog, plot_curves, write_metric_tables
from .optim import build_optimizer
from .options import LoopOptions
from .order import collate_images, epoch_batches, step_seed
from .preemption import StopFlag, stop_signals
from .probe import ProbeSet, run_probes
from .schedules import Schedules

__all__ = ["NonFiniteLossError", "Trainer"]

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


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
        # an epoch is the dataset, or epoch_images of it (the order's permutation, cut short)
        n_epoch = len(dataset) if opts.epoch_images is None else opts.epoch_images  # type: ignore[arg-type]
        if n_epoch > len(dataset):  # type: ignore[arg-type]
            raise ValueError(f"epoch_images {n_epoch} exceeds the dataset's {len(dataset)} images")
        self.steps_per_epoch = n_epoch // opts.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(f"an epoch of {n_epoch} images is smaller than one batch ({opts.batch_size})")
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
        self._tensorboard = TensorBoardLog(self.out_dir / "tensorboard")
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

    def _loader(self, epoch: int, start: int) -> Iterator[list[torch.Tensor]]:
        loader = DataLoader(
            self.dataset,
            batch_sampler=epoch_batches(
                len(self.dataset),  # type: ignore[arg-type]
                seed=self.opts.seed,
                epoch=epoch,
                start=start,
                steps_per_epoch=self.steps_per_epoch,
                batch_size=self.opts.batch_size,
                rank=self.env.rank,
                micro_batch=self.micro_batch,
                accumulation=self.opts.accumulation,
            ),
            num_workers=self.opts.workers,
            collate_fn=collate_images,
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

        Order: hyperparameters of this step; the teacher's EMA update first when the method's
        authors do so (MoCo v3); forward/backward; finiteness check; clip; optimizer step; the
        teacher's EMA update otherwise (DINO).

        Raises:
            NonFiniteLossError: if the (all-rank mean) loss is NaN or infinite; the optimizer is
                not stepped (a MoCo momentum encoder has already taken this step's update).
        """
        epoch = self.step // self.steps_per_epoch
        sched = self.schedules.at(self.step)
        self._set_hyperparameters(sched)
        teacher_first = bool(getattr(self.method, "update_teacher_first", False))
        if teacher_first:
            self.method.update_teacher(sched["momentum"])
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
        if not teacher_first:
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
        write_metric_tables(self.records, self.out_dir)
        self._tensorboard.add(self.records)
        plot_curves(self.records, self.out_dir / "curves.png")

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
        self._tensorboard.close()
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
