"""Preemption: turn SIGTERM/SIGUSR1 into a flag the training loop polls between steps.

Split from :mod:`brainssl.pretrain.loop` so that signal handling lives apart from the
training step. SLURM sends one of these signals before it kills a job; the loop then writes
its checkpoint and returns at the next step boundary, and a rerun resumes from there.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["StopFlag", "stop_signals"]


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
