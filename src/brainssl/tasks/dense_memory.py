"""Where a dense job keeps its slices: in memory up to a budget, the rest in files of a scratch folder.

A dense task holds every slice of its cohort (inputs, labels, training targets). At the demo's
scale they fit the budget (``slice_memory_gb``) and stay ordinary in-memory arrays, so nothing
changes; at paper scale (about 146 GB of BraTS slices at 224 px) whatever is over the budget is
written to files in a temporary folder of the job (under ``$TMPDIR``, removed when the task ends)
and read back as read-only memory maps, one batch at a time (:func:`batch_tensor`). The operating
system's page cache, not the job, then holds what is hot.

Each slice is stored once: the training and test sets are :class:`Rows` of the cut slices where
they lie, and targets that are cheap to derive (segmentation's regions or classes) are made from
the stored labels batch by batch, so the scratch disk holds the cut slices and labels alone.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
import torch

__all__ = ["GB", "Collector", "RowSource", "Rows", "SliceSpace", "batch_tensor"]

#: Budgets are in GB of 1e9 bytes, as benchmarks/plan.py counts them.
GB = 1e9


class RowSource(Protocol):
    """What training and prediction read batches from: an array, or :class:`Rows` standing for one."""

    @property
    def shape(self) -> tuple[int, ...]:
        """``(N, ...)``: the rows and the shape of one."""
        ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice | np.ndarray, /) -> np.ndarray: ...


class Rows:
    """Chosen rows of several arrays, read as one ``(N, ...)`` array without copying them.

    Row ``i`` is row ``local[i]`` of the ``part[i]``-th array; indexing with a slice or an index
    array gathers only those rows into a new array (then applies ``transform``, e.g. the targets
    of label slices), so a training or test set stands on the slices where they are stored
    (in memory or memory-mapped) instead of on a copy.

    Args:
        parts: arrays of equal trailing shape and dtype (one per subject).
        picks: per part, its rows to use (indices or a boolean mask; default: all).
        transform: applied to every gathered batch (must work row by row).
    """

    def __init__(
        self,
        parts: Sequence[np.ndarray],
        picks: Sequence[np.ndarray] | None = None,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        if not parts:
            raise ValueError("Rows needs at least one array")
        self.parts = list(parts)
        chosen = [np.arange(len(p)) for p in parts] if picks is None else [_indices(k) for k in picks]
        self.part = np.concatenate([np.full(len(k), i, np.int64) for i, k in enumerate(chosen)])
        self.local = np.concatenate(chosen).astype(np.int64)
        self.transform = transform
        first = self.parts[0][:1] if transform is None else transform(self.parts[0][:1])
        self.shape: tuple[int, ...] = (len(self.local), *first.shape[1:])

    def __len__(self) -> int:
        return len(self.local)

    def __getitem__(self, index: slice | np.ndarray) -> np.ndarray:
        rows = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index)
        part, local = self.part[rows], self.local[rows]
        head = self.parts[0]
        out = np.empty((len(rows), *head.shape[1:]), head.dtype)
        for owner in np.unique(part):
            at = np.flatnonzero(part == owner)
            out[at] = self.parts[owner][local[at]]  # reads only these rows of a memory map
        return out if self.transform is None else np.ascontiguousarray(self.transform(out))


def _indices(pick: np.ndarray) -> np.ndarray:
    pick = np.asarray(pick)
    return np.flatnonzero(pick) if pick.dtype == bool else pick


def batch_tensor(array: RowSource, index: slice | np.ndarray) -> torch.Tensor:
    """``array[index]`` as a CPU tensor: a view of an in-memory array, a copy of a memory map's rows.

    Only the indexed rows are read, so a batch of a disk-backed array costs one batch of memory.
    """
    part = array[index]
    if isinstance(part, np.memmap) or not part.flags.writeable:
        part = np.array(part)  # read-only map -> a writable copy in memory (torch needs one)
    return torch.from_numpy(part)


class SliceSpace:
    """Arrays of one dense job, kept in memory while the bytes held stay within ``budget_gb``.

    Arrays over the budget are written to ``.npy`` (:meth:`keep`) or raw ``.bin`` files
    (:meth:`collect`) in a temporary folder made on first use and removed by :meth:`close`
    (or leaving the ``with`` block); ``spilled`` counts their bytes.

    Args:
        budget_gb: GB of arrays to hold in memory (0: every array goes to disk).
        folder: parent of the scratch folder (default: ``$TMPDIR``, the job's own on a cluster).
    """

    def __init__(self, budget_gb: float, folder: str | os.PathLike[str] | None = None) -> None:
        self.budget = float(budget_gb) * GB
        self.held = 0
        self.spilled = 0
        self._parent = folder
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self._files = 0

    def __enter__(self) -> SliceSpace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the scratch folder (memory maps already open stay readable on POSIX)."""
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def fits(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more stay within the budget."""
        return self.held + nbytes <= self.budget

    def path(self, suffix: str) -> Path:
        """A new file name in the scratch folder (made on first use)."""
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="brainssl-dense-", dir=self._parent)
        self._files += 1
        return Path(self._scratch.name) / f"{self._files}{suffix}"

    def keep(self, array: np.ndarray) -> np.ndarray:
        """``array`` itself while the budget allows it; else a read-only memory map of its copy on disk."""
        if self.fits(array.nbytes):
            self.held += array.nbytes
            return array
        path = self.path(".npy")
        np.save(path, array)
        self.spilled += array.nbytes
        return np.load(path, mmap_mode="r")

    def collect(self) -> Collector:
        """A :class:`Collector` of parts to concatenate along their first axis."""
        return Collector(self)

    def concatenate(self, parts: Iterable[np.ndarray]) -> np.ndarray:
        """``np.concatenate(parts)``, in memory while the budget allows it, else on disk part by part."""
        collector = self.collect()
        for part in parts:
            collector.add(part)
        return collector.result()


class Collector:
    """Parts of one array, held in memory until the space's budget would be crossed, then on disk.

    The parts held so far are then written to one raw file and every later part appended to it,
    so no more than one part is in memory at a time; :meth:`result` maps the file.
    """

    def __init__(self, space: SliceSpace) -> None:
        self.space = space
        self.parts: list[np.ndarray] = []
        self.rows = 0
        self.nbytes = 0
        self._file: BinaryIO | None = None
        self._path: Path | None = None
        self._layout: tuple[np.dtype, tuple[int, ...]] | None = None

    def add(self, part: np.ndarray) -> None:
        """Append ``part`` (same dtype and trailing shape as the parts before)."""
        layout = (part.dtype, part.shape[1:])
        if self._layout is not None and layout != self._layout:
            raise ValueError(f"part of {layout} does not extend an array of {self._layout}")
        self._layout = layout
        self.rows += len(part)
        if self._file is None and self.space.fits(part.nbytes):
            self.space.held += part.nbytes
            self.nbytes += part.nbytes
            self.parts.append(part)
            return
        if self._file is None:
            self._path = self.space.path(".bin")
            self._file = open(self._path, "wb")  # closed in result()
            for held in self.parts:
                self._write(held)
            self.space.held -= self.nbytes
            self.parts = []
        self._write(part)

    def _write(self, part: np.ndarray) -> None:
        assert self._file is not None
        self._file.write(np.ascontiguousarray(part).tobytes())
        self.space.spilled += part.nbytes

    def result(self) -> np.ndarray:
        """The concatenated array: in memory (``np.concatenate``) or a read-only memory map of the file."""
        if self._file is None:
            return np.concatenate(self.parts)
        self._file.close()
        assert self._layout is not None and self._path is not None
        dtype, tail = self._layout
        return np.memmap(self._path, dtype=dtype, mode="r", shape=(self.rows, *tail))
