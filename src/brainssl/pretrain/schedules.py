"""Per-step schedules (lr, weight decay, EMA momentum, teacher temperature), built once per method.

Every schedule is an array indexed by the optimizer step, so the loop reads values and a resumed
run reads the same ones. Each method follows its own authors' code, which differ:

- DINO (facebookresearch/dino at 7c446df5b9f45747937fb0d72314eb9f7b66930a, ``utils.py``
  ``cosine_scheduler`` as ``main_dino.py`` calls it): :func:`cosine_schedule`. The warm-up is
  ``np.linspace(start, base, W)``, so its last step already holds the peak, and the cosine
  then starts at the peak again; the teacher momentum is a cosine to 1; the teacher
  temperature is per epoch (:func:`teacher_temperature_schedule`).
- MoCo v3 (facebookresearch/moco-v3 at c349e6e24f40d3fedb22d973f92defa4cedf37a7,
  ``main_moco.py`` ``adjust_learning_rate`` and ``adjust_moco_momentum``, called every
  iteration with the fractional epoch ``epoch + i / iters_per_epoch``):
  :func:`moco_lr_schedule` and :func:`moco_momentum_schedule`. The warm-up is linear from 0
  in fractional epochs and never reaches the peak; the first step after it does; the cosine
  decays to 0 (``min_lr`` is an extension: 0 gives the authors' schedule). The momentum is
  constant unless ``--moco-m-cos`` (``momentum_cosine``), then a cosine to 1. MoCo v3 keeps
  the weight decay constant: ``weight_decay_end == weight_decay`` gives that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "SCHEDULE_METHODS",
    "Schedules",
    "build_schedules",
    "cosine_schedule",
    "moco_lr_schedule",
    "moco_momentum_schedule",
    "teacher_temperature_schedule",
]

#: Methods whose authors' schedule conventions :func:`build_schedules` knows.
SCHEDULE_METHODS = ("moco", "dino")


def cosine_schedule(
    base: float, final: float, total_steps: int, warmup_steps: int = 0, warmup_start: float = 0.0
) -> np.ndarray:
    """DINO's schedule: linear warm-up from ``warmup_start`` to ``base``, then half-cosine to ``final``.

    The rule of facebookresearch/dino ``utils.cosine_scheduler`` (commit 7c446df5), used for
    DINO's learning rate, weight decay and teacher momentum. Step ``i < W``:
    ``warmup_start + (base - warmup_start) * i / (W - 1)`` (``np.linspace``: the last warm-up
    step holds ``base``). Step ``i >= W``, with ``j = i - W`` and ``N = total_steps - W``:
    ``final + (base - final) * (1 + cos(pi * j / N)) / 2`` (``base`` again at ``j = 0``).

    Args:
        base: value at the end of warm-up.
        final: value the cosine tends to (reached one step after the end).
        total_steps: length of the schedule (> 0).
        warmup_steps: warm-up length, ``0 <= warmup_steps <= total_steps``.
        warmup_start: value at step 0 when warming up.

    Returns:
        ``(total_steps,)`` float64 array.

    Raises:
        ValueError: on a non-positive length or a warm-up longer than the schedule.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps {warmup_steps} must lie in [0, total_steps={total_steps}]")
    warm = np.linspace(warmup_start, base, warmup_steps) if warmup_steps else np.zeros(0)
    n = total_steps - warmup_steps
    j = np.arange(n)
    cos = final + 0.5 * (base - final) * (1.0 + np.cos(np.pi * j / max(n, 1)))
    return np.concatenate([warm, cos]).astype(np.float64)


def teacher_temperature_schedule(
    warmup_temp: float, temp: float, warmup_epochs: int, epochs: int, steps_per_epoch: int
) -> np.ndarray:
    """DINO's teacher temperature: linear per epoch from ``warmup_temp`` to ``temp``, then constant.

    Epoch ``e < E_w`` uses ``np.linspace(warmup_temp, temp, E_w)[e]``; every step of an epoch
    shares its epoch's value.

    Returns:
        ``(epochs * steps_per_epoch,)`` float64 array.
    """
    if warmup_epochs > epochs:
        raise ValueError(f"warmup_epochs {warmup_epochs} exceeds epochs {epochs}")
    per_epoch = np.concatenate(
        [np.linspace(warmup_temp, temp, warmup_epochs), np.full(epochs - warmup_epochs, temp)]
    )
    return np.repeat(per_epoch, steps_per_epoch).astype(np.float64)


def _fractional_epochs(epochs: int, steps_per_epoch: int) -> np.ndarray:
    """``epoch + i / steps_per_epoch`` of every step, computed as MoCo v3's loop does."""
    if epochs <= 0 or steps_per_epoch <= 0:
        raise ValueError(f"epochs and steps_per_epoch must be positive, got {epochs}, {steps_per_epoch}")
    i = np.arange(steps_per_epoch) / steps_per_epoch
    return (np.arange(epochs)[:, None] + i[None, :]).ravel()


def moco_lr_schedule(
    base: float, final: float, epochs: int, steps_per_epoch: int, warmup_epochs: int
) -> np.ndarray:
    """MoCo v3's learning rate: linear warm-up in fractional epochs, then half-cosine to ``final``.

    The rule of facebookresearch/moco-v3 ``main_moco.py`` ``adjust_learning_rate`` (commit
    c349e6e2), evaluated at ``e = epoch + i / steps_per_epoch`` before every step: for
    ``e < W``, ``base * e / W`` (0 at step 0; the peak is not reached inside the warm-up); else
    ``final + (base - final) * (1 + cos(pi * (e - W) / (E - W))) / 2``, the peak at the first
    step after the warm-up. The authors' ``final`` is 0.

    Args:
        base: peak learning rate (already scaled by batch size).
        final: value the cosine tends to (the authors': 0).
        epochs: ``E`` (> 0).
        steps_per_epoch: optimizer steps per epoch (> 0).
        warmup_epochs: ``W >= 0``; ``W >= E`` warms up throughout.

    Returns:
        ``(epochs * steps_per_epoch,)`` float64 array.
    """
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
    e = _fractional_epochs(epochs, steps_per_epoch)
    warm = e < warmup_epochs
    out = np.empty_like(e)
    out[warm] = base * e[warm] / warmup_epochs if warmup_epochs else 0.0
    if (~warm).any():
        angle = np.pi * (e[~warm] - warmup_epochs) / (epochs - warmup_epochs)
        out[~warm] = final + (base - final) * 0.5 * (1.0 + np.cos(angle))
    return out


def moco_momentum_schedule(momentum: float, epochs: int, steps_per_epoch: int, cosine: bool) -> np.ndarray:
    """MoCo v3's momentum-encoder coefficient of every step.

    With ``cosine`` (the authors' ``--moco-m-cos``), facebookresearch/moco-v3 ``main_moco.py``
    ``adjust_moco_momentum`` (commit c349e6e2) at ``e = epoch + i / steps_per_epoch``:
    ``1 - (1 - m) * (1 + cos(pi * e / E)) / 2``; without it, ``m`` at every step (their default).

    Returns:
        ``(epochs * steps_per_epoch,)`` float64 array.
    """
    e = _fractional_epochs(epochs, steps_per_epoch)
    if not cosine:
        return np.full_like(e, momentum)
    return 1.0 - 0.5 * (1.0 + np.cos(np.pi * e / epochs)) * (1.0 - momentum)


@dataclass(frozen=True)
class Schedules:
    """All scheduled values, each ``(total_steps,)``; read with :meth:`at`."""

    lr: np.ndarray
    weight_decay: np.ndarray
    momentum: np.ndarray
    teacher_temp: np.ndarray

    def at(self, step: int) -> dict[str, float]:
        """Return the values for optimizer step ``step`` (0-based)."""
        if not 0 <= step < len(self.lr):
            raise IndexError(f"step {step} outside the schedule of {len(self.lr)} steps")
        return {
            "lr": float(self.lr[step]),
            "weight_decay": float(self.weight_decay[step]),
            "momentum": float(self.momentum[step]),
            "teacher_temp": float(self.teacher_temp[step]),
        }


def build_schedules(
    *,
    lr: float,
    min_lr: float,
    warmup_epochs: int,
    weight_decay: float,
    weight_decay_end: float,
    momentum: float,
    teacher_temp: float,
    warmup_teacher_temp: float,
    warmup_teacher_temp_epochs: int,
    epochs: int,
    steps_per_epoch: int,
    method: str = "dino",
    momentum_cosine: bool = True,
) -> Schedules:
    """Build every schedule for ``epochs * steps_per_epoch`` optimizer steps, as ``method``'s authors do.

    ``dino``: lr, weight decay and momentum by :func:`cosine_schedule` (DINO's
    ``cosine_scheduler``; lr warm-up from 0, clipped to ``epochs``). ``moco``: lr by
    :func:`moco_lr_schedule`, momentum by :func:`moco_momentum_schedule`. The weight-decay
    cosine has no warm-up, where both conventions give the same values (``j / N = t / T``).

    Args:
        lr: peak learning rate (already scaled by batch size).
        min_lr: final learning rate of the cosine (MoCo v3's authors: 0; DINO's: 1e-6).
        warmup_epochs: linear lr warm-up from 0.
        weight_decay: weight decay at step 0.
        weight_decay_end: weight decay at the end (cosine; equal values keep it constant).
        momentum: EMA momentum at step 0.
        teacher_temp: DINO teacher temperature after warm-up.
        warmup_teacher_temp: DINO teacher temperature at epoch 0.
        warmup_teacher_temp_epochs: DINO teacher-temperature warm-up length (clipped to ``epochs``).
        epochs: training epochs.
        steps_per_epoch: optimizer steps per epoch.
        method: ``moco`` or ``dino``: whose authors' conventions to follow.
        momentum_cosine: MoCo only: raise the momentum to 1 on a cosine (``--moco-m-cos``);
            DINO's teacher momentum always follows its cosine.

    Raises:
        ValueError: for an unknown method.
    """
    if method not in SCHEDULE_METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {list(SCHEDULE_METHODS)}")
    total = epochs * steps_per_epoch
    if method == "moco":
        lr_schedule = moco_lr_schedule(lr, min_lr, epochs, steps_per_epoch, warmup_epochs)
        momentum_schedule = moco_momentum_schedule(momentum, epochs, steps_per_epoch, momentum_cosine)
    else:
        lr_schedule = cosine_schedule(lr, min_lr, total, min(warmup_epochs, epochs) * steps_per_epoch)
        momentum_schedule = cosine_schedule(momentum, 1.0, total)
    return Schedules(
        lr=lr_schedule,
        weight_decay=cosine_schedule(weight_decay, weight_decay_end, total),
        momentum=momentum_schedule,
        teacher_temp=teacher_temperature_schedule(
            warmup_teacher_temp,
            teacher_temp,
            min(warmup_teacher_temp_epochs, epochs),
            epochs,
            steps_per_epoch,
        ),
    )
