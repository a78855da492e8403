"""Per-step schedules (lr, weight decay, EMA momentum, teacher temperature), built once.

As in facebookresearch/dino (``utils.cosine_scheduler``, used in ``main_dino.py``) every
schedule is an array indexed by the optimizer step, so the loop reads values and a resumed
run reads the same ones. MoCo v3's per-iteration rules (facebookresearch/moco-v3,
``main_moco.py``: ``adjust_learning_rate``, ``adjust_moco_momentum``) are the same
formulas: linear warm-up then half-cosine lr, and ``m_t = 1 - (1 - m_0)(cos(pi t / T) + 1) / 2``,
which is :func:`cosine_schedule` from ``m_0`` to 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Schedules", "cosine_schedule", "teacher_temperature_schedule", "build_schedules"]


def cosine_schedule(
    base: float, final: float, total_steps: int, warmup_steps: int = 0, warmup_start: float = 0.0
) -> np.ndarray:
    """Linear warm-up from ``warmup_start`` to ``base``, then half-cosine from ``base`` to ``final``.

    Step ``i < W``: ``warmup_start + (base - warmup_start) * i / (W - 1)`` (``np.linspace``, as
    in DINO). Step ``i >= W``, with ``j = i - W`` and ``N = total_steps - W``:
    ``final + (base - final) * (1 + cos(pi * j / N)) / 2``.

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
) -> Schedules:
    """Build every schedule for ``epochs * steps_per_epoch`` optimizer steps.

    Args:
        lr: peak learning rate (already scaled by batch size).
        min_lr: final learning rate of the cosine.
        warmup_epochs: linear lr warm-up from 0.
        weight_decay: weight decay at step 0.
        weight_decay_end: weight decay at the end (cosine; equal values keep it constant).
        momentum: EMA momentum at step 0 (cosine to 1).
        teacher_temp: DINO teacher temperature after warm-up.
        warmup_teacher_temp: DINO teacher temperature at epoch 0.
        warmup_teacher_temp_epochs: DINO teacher-temperature warm-up length (clipped to ``epochs``).
        epochs: training epochs.
        steps_per_epoch: optimizer steps per epoch.
    """
    total = epochs * steps_per_epoch
    return Schedules(
        lr=cosine_schedule(lr, min_lr, total, min(warmup_epochs, epochs) * steps_per_epoch),
        weight_decay=cosine_schedule(weight_decay, weight_decay_end, total),
        momentum=cosine_schedule(momentum, 1.0, total),
        teacher_temp=teacher_temperature_schedule(
            warmup_teacher_temp,
            teacher_temp,
            min(warmup_teacher_temp_epochs, epochs),
            epochs,
            steps_per_epoch,
        ),
    )
