"""A PyTorch ``Dataset`` over one or many slice stores, read through memory maps.

It never opens a NIfTI file: it reads only the shard arrays named in the index. Memory maps
are opened lazily on first access in each process, so the dataset pickles into DataLoader
workers without open files. Any sampler works, ``DistributedSampler`` included, since every
slice is one integer index.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .store import check_store, read_index

__all__ = ["SliceDataset"]

PathLike = str | os.PathLike[str]


class SliceDataset(Dataset):
    """Random access to stored slices as float tensors ``(1, S, S)`` in [0, 1].

    Args:
        index: an index table, a Parquet path, or a sequence of either (stores are concatenated).
        root: folder that relative array paths in the index are relative to (default: cwd).
        split: keep only rows of this split (``train``, ``val``, ``test``), or all.
        datasets: keep only these datasets, or all.
        labels: also return the segmentation slice ``(S, S)`` int64 (zeros where none).
        return_index: also return the row number into :attr:`index`.
        check: run :func:`brainssl.slices.check_store` on construction.

    Items are ``image``, or a tuple ``(image[, label][, row])``.
    """

    def __init__(
        self,
        index: pd.DataFrame | PathLike | Sequence[pd.DataFrame | PathLike],
        *,
        root: PathLike | None = None,
        split: str | None = None,
        datasets: Sequence[str] | None = None,
        labels: bool = False,
        return_index: bool = False,
        check: bool = True,
    ) -> None:
        parts = list(index) if isinstance(index, list | tuple) else [index]
        frames = [p if isinstance(p, pd.DataFrame) else read_index(p) for p in parts]
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        if check:
            check_store(frame, root=root)
        if split is not None:
            frame = frame[frame["split"] == split]
        if datasets is not None:
            frame = frame[frame["dataset"].isin(list(datasets))]
        self.index = frame.reset_index(drop=True)
        self.root = None if root is None else str(root)
        self.labels = labels
        self.return_index = return_index
        self._paths = sorted(set(self.index["array"].astype(str)))
        self._label_paths = sorted(set(self.index["labels"].astype(str)) - {""})
        file_of = {p: i for i, p in enumerate(self._paths)}
        label_of = {p: i for i, p in enumerate(self._label_paths)}
        self._file = self.index["array"].astype(str).map(file_of).to_numpy(np.int64)
        self._label_file = (
            self.index["labels"].astype(str).map(lambda p: label_of.get(p, -1)).to_numpy(np.int64)
        )
        self._offset = self.index["offset"].to_numpy(np.int64)
        self._arrays: list[np.ndarray | None] = []
        self._label_arrays: list[np.ndarray | None] = []

    def __len__(self) -> int:
        """Number of slices."""
        return len(self._offset)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without open memory maps (each worker opens its own)."""
        state = dict(self.__dict__)
        state["_arrays"], state["_label_arrays"] = [], []
        return state

    def _path(self, name: str) -> Path:
        p = Path(name)
        return p if p.is_absolute() or self.root is None else Path(self.root) / p

    def _array(self, i: int) -> np.ndarray:
        if not self._arrays:
            self._arrays = [None] * len(self._paths)
        arr = self._arrays[i]
        if arr is None:
            arr = self._arrays[i] = np.load(self._path(self._paths[i]), mmap_mode="r")
        return arr

    def _label_array(self, i: int) -> np.ndarray:
        if not self._label_arrays:
            self._label_arrays = [None] * len(self._label_paths)
        arr = self._label_arrays[i]
        if arr is None:
            arr = self._label_arrays[i] = np.load(self._path(self._label_paths[i]), mmap_mode="r")
        return arr

    def __getitem__(self, item: int) -> Any:
        """Return slice ``item`` (see the class docstring for the item's form)."""
        offset = self._offset[item]
        raw = self._array(self._file[item])[offset]
        image = torch.from_numpy(np.array(raw))
        image = image.float().div_(255.0) if raw.dtype == np.uint8 else image.float()
        image = image.unsqueeze(0)
        if not (self.labels or self.return_index):
            return image
        out: list[Any] = [image]
        if self.labels:
            lf = self._label_file[item]
            if lf < 0:
                out.append(torch.zeros(image.shape[1:], dtype=torch.int64))
            else:
                out.append(torch.from_numpy(np.array(self._label_array(lf)[offset])).long())
        if self.return_index:
            out.append(int(item))
        return tuple(out)
