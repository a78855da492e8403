"""The one place where pretraining settings become objects; ``train`` is what rules call.

:class:`~brainssl.pretrain.settings.PretrainSettings` is the validated config slice of one run.
:func:`train` builds the encoder, method, schedules and loop from it, trains (resuming from
``out_dir/checkpoints/last.pt`` when present), and exports the student encoder with its
model card. :func:`export_random` exports a random-initialised encoder the same way (the
baseline every downstream comparison needs).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from brainssl.io import write_text

from .augment import multi_crop, two_views
from .backbones import build_encoder, is_vit
from .distributed import DistEnv, init_distributed
from .export import CARD_FILE, ENCODER_FILE, export_encoder
from .loop import Trainer
from .meta import DINO, MoCoV3
from .options import LoopOptions
from .probe import ProbeSet, run_probes
from .schedules import build_schedules
from .settings import PretrainSettings, settings_hash

__all__ = ["build_method", "build_trainer", "train", "export_random"]

logger = logging.getLogger(__name__)


def _encoder(settings: PretrainSettings) -> nn.Module:
    overrides = {"depth": settings.vit_depth} if settings.vit_depth and is_vit(settings.arch) else {}
    return build_encoder(settings.arch, settings.img_size, **overrides)


def build_method(settings: PretrainSettings) -> nn.Module:
    """Build the encoder and the MoCo v3 or DINO method with seeded initial weights.

    The weights are drawn inside ``torch.random.fork_rng`` seeded with ``settings.seed``,
    so the caller's global RNG state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        encoder = _encoder(settings)
        aug = settings.augment
        if settings.method == "moco":
            if settings.random_patch_proj and is_vit(settings.arch):
                encoder.freeze_patch_embed()
            views = functools.partial(
                two_views, size=settings.img_size, scale=settings.crop_scale, settings=aug
            )
            return MoCoV3(
                encoder, _as_view_fn(views), settings.moco_dim, settings.moco_mlp_dim, settings.temperature
            )
        views = functools.partial(
            multi_crop,
            global_size=settings.img_size,
            local_size=settings.local_size,
            n_local=settings.n_local_crops,
            global_scale=settings.global_crop_scale,
            local_scale=settings.local_crop_scale,
            settings=aug,
        )
        return DINO(
            encoder,
            _as_view_fn(views),
            settings.out_dim,
            settings.head_hidden_dim,
            settings.head_bottleneck_dim,
            settings.norm_last_layer,
            settings.student_temp,
            settings.center_momentum,
            settings.head_use_bn,
        )


def _as_view_fn(partial: Any) -> Any:
    return lambda x, generator: partial(x, generator=generator)


def _loop_options(settings: PretrainSettings, device: torch.device) -> LoopOptions:
    return LoopOptions(
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        accumulation=settings.accumulation,
        precision=settings.resolved_precision(device),
        compile=settings.compile,
        channels_last=settings.channels_last and not is_vit(settings.arch),
        optimizer=settings.optimizer,
        clip_grad=settings.clip_grad,
        freeze_last_layer_epochs=settings.freeze_last_layer_epochs if settings.method == "dino" else 0,
        checkpoint_every=settings.checkpoint_every,
        log_every=settings.log_every,
        seed=settings.seed,
        workers=settings.workers,
        img_size=settings.img_size,
        knn_k=settings.knn_k,
        knn_temperature=settings.knn_temperature,
        max_steps=settings.max_steps,
        epoch_images=settings.epoch_images,
    )


def _schedule_factory(settings: PretrainSettings) -> Any:
    def factory(steps_per_epoch: int) -> Any:
        return build_schedules(
            lr=settings.lr * settings.batch_size / 256,
            min_lr=settings.min_lr,
            warmup_epochs=settings.warmup_epochs,
            weight_decay=settings.weight_decay,
            weight_decay_end=settings.weight_decay_end,
            momentum=settings.momentum,
            teacher_temp=settings.teacher_temp,
            warmup_teacher_temp=settings.warmup_teacher_temp,
            warmup_teacher_temp_epochs=settings.warmup_teacher_temp_epochs,
            epochs=settings.epochs,
            steps_per_epoch=steps_per_epoch,
            method=settings.method,
            momentum_cosine=settings.moco_m_cos,
        )

    return factory


def build_trainer(
    settings: PretrainSettings,
    dataset: Dataset,
    probe_sets: Mapping[str, ProbeSet] | None,
    out_dir: str | Path,
    env: DistEnv,
) -> Trainer:
    """Build the method on ``env.device`` and its :class:`~brainssl.pretrain.loop.Trainer`.

    :func:`train` uses it; so does ``benchmarks/pretrain.py``, which times ``train_step``.
    """
    method = build_method(settings).to(env.device)
    return Trainer(
        method,
        dataset,
        _schedule_factory(settings),
        _loop_options(settings, env.device),
        out_dir,
        probe_sets,
        env,
        fingerprint=settings_hash(settings),
    )


def train(
    settings: PretrainSettings,
    dataset: Dataset,
    probe_sets: Mapping[str, ProbeSet] | None,
    out_dir: str | Path,
    resume: bool = True,
    *,
    intensity: dict[str, Any] | str = "slice store uint8 / 255",
    manifest_sha256: str | None = None,
) -> dict[str, Any]:
    """Pretrain an encoder and export it; the entry point of rules ``pretrain_moco``/``pretrain_dino``.

    Runs as one process or as one rank of a torchrun/SLURM job (see
    :func:`~brainssl.pretrain.distributed.init_distributed`); rank 0 writes every file.

    Args:
        settings: the run's settings.
        dataset: items are ``(1, H, W)`` float tensors in ``[0, 1]`` (or tuples starting with one).
        probe_sets: labelled held-out slices for the per-epoch kNN probe.
        out_dir: receives ``encoder.safetensors``, ``model_card.json``, ``metrics.jsonl``,
            ``metrics.csv``, ``curves.png``, ``tensorboard/`` and ``checkpoints/last.pt``.
        resume: continue from ``checkpoints/last.pt`` when it exists.
        intensity: the intensity mapping recorded in the model card.
        manifest_sha256: hash of the training index recorded in the model card.

    Returns:
        The loop summary (``status``, ``step``, losses, ``knn``, ``images_per_s``); the encoder
        is exported only when ``status == "completed"``.

    Raises:
        NonFiniteLossError: when the loss becomes NaN or infinite.
    """
    env = init_distributed(settings.device)
    try:
        if resume and env.is_main:
            _discard_foreign_checkpoint(Path(out_dir), f"{settings_hash(settings)} {manifest_sha256}")
        if env.world_size > 1:
            dist.barrier()
        trainer = build_trainer(settings, dataset, probe_sets, out_dir, env)
        method = trainer.method
        summary = trainer.fit(resume=resume)
        if summary["status"] == "completed" and env.is_main:
            out = Path(out_dir)
            export_encoder(
                method.eval_encoder,
                out / ENCODER_FILE,
                out / CARD_FILE,
                intensity=intensity,
                manifest_sha256=manifest_sha256,
                config_sha256=settings_hash(settings),
                method=settings.method,
                metrics={k: v for k, v in summary.items() if k not in ("knn", "checkpoint")},
                knn=summary["knn"],
                extra={"settings": settings.to_dict(), "world_size": env.world_size},
            )
        return summary
    finally:
        if env.owns_group:
            dist.destroy_process_group()


def _discard_foreign_checkpoint(out_dir: Path, fingerprint: str) -> None:
    """Delete a checkpoint left by a run with other settings or data, so it is never resumed.

    Resuming is for preemption; a changed config re-runs the job in the same folder, and
    continuing its old optimizer state would silently mix two runs.
    """
    folder = out_dir / "checkpoints"
    stamp = folder / "fingerprint.txt"
    last = folder / "last.pt"
    if last.is_file() and (not stamp.is_file() or stamp.read_text().strip() != fingerprint):
        logger.warning("%s was written with other settings or data: starting afresh", last)
        last.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    write_text(stamp, fingerprint + "\n")


def export_random(
    settings: PretrainSettings,
    probe_sets: Mapping[str, ProbeSet] | None,
    out_dir: str | Path,
    *,
    intensity: dict[str, Any] | str = "slice store uint8 / 255",
    manifest_sha256: str | None = None,
) -> dict[str, Any]:
    """Export a random-initialised encoder (seeded by ``settings.seed``) with its kNN probe results."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        encoder = _encoder(settings)
    device = torch.device("cuda" if settings.device != "cpu" and torch.cuda.is_available() else "cpu")
    encoder.to(device)
    knn = run_probes(
        encoder, probe_sets or {}, settings.img_size, device, settings.knn_k, settings.knn_temperature
    )
    out = Path(out_dir)
    return export_encoder(
        encoder.cpu(),
        out / ENCODER_FILE,
        out / CARD_FILE,
        intensity=intensity,
        manifest_sha256=manifest_sha256,
        config_sha256=settings_hash(settings),
        method="random",
        knn=knn,
        extra={"settings": {"arch": settings.arch, "img_size": settings.img_size, "seed": settings.seed}},
    )
