"""The training loop's options (:class:`LoopOptions`), one frozen value.

Split from :mod:`brainssl.pretrain.loop` so that the knobs, which
:mod:`brainssl.pretrain.methods` maps from the pretraining settings, are readable apart from
the loop that uses them. They have no defaults of their own: every value comes from
:class:`~brainssl.pretrain.settings.PretrainSettings`, where the defaults are written once.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LoopOptions"]


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
        epoch_images: images per epoch, drawn afresh from the whole dataset each epoch; None: all.
    """

    epochs: int
    batch_size: int
    accumulation: int
    precision: str
    compile: bool
    channels_last: bool
    optimizer: str
    clip_grad: float
    freeze_last_layer_epochs: int
    checkpoint_every: int
    log_every: int
    seed: int
    workers: int
    img_size: int
    knn_k: int
    knn_temperature: float
    max_steps: int | None
    epoch_images: int | None = None
