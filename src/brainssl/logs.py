"""Logging set-up for jobs and progress bars that read well in a log file.

Package modules only call ``logging.getLogger(__name__)``; handlers are
attached here, by :func:`configure_logging`, which the job adapter calls.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

__all__ = ["configure_logging", "progress"]

T = TypeVar("T")
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(log_file: str | os.PathLike[str] | None = None, level: int = logging.INFO) -> None:
    """Send brainssl's log records to stderr and, when given, to ``log_file``."""
    root = logging.getLogger()
    root.setLevel(level)
    formatter = logging.Formatter(LOG_FORMAT)
    for handler in list(root.handlers):
        if getattr(handler, "_brainssl", False):
            root.removeHandler(handler)
            handler.close()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        os.makedirs(os.path.dirname(os.fspath(log_file)) or ".", exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w", encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler._brainssl = True  # type: ignore[attr-defined]
        root.addHandler(handler)


class _LogLines:
    """A file-like target for tqdm that turns carriage-return redraws into log lines."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self._logger.info(line)

    def flush(self) -> None:
        """Nothing is buffered."""


def progress(
    iterable: Iterable[T],
    desc: str,
    total: int | None = None,
    logger: logging.Logger | None = None,
) -> Iterator[T]:
    """Wrap a long loop in a progress bar.

    On a terminal this is an ordinary tqdm bar; otherwise (a Snakemake job, a
    SLURM log) each update becomes one log line, at most every 30 seconds, so
    log files stay short and readable.
    """
    interactive = sys.stderr.isatty()
    bar = tqdm(
        iterable,
        desc=desc,
        total=total,
        file=None if interactive else _LogLines(logger or logging.getLogger("brainssl.progress")),
        mininterval=0.2 if interactive else 30.0,
        ascii=not interactive,
        dynamic_ncols=interactive,
    )
    yield from bar
