"""Atomic file output: every file brainssl writes goes through here.

A job killed mid-write must never leave a file that looks complete, because
Snakemake (and a person) would take it for a finished output. Each helper
writes to a hidden temporary file in the destination folder and renames it
into place only after the content is flushed to disk; a rename within one
filesystem is atomic on POSIX.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "atomic_path",
    "atomic_write",
    "write_bytes",
    "write_json",
    "write_text",
    "write_table",
    "save_npy",
    "save_nifti",
    "sha256_file",
]

PathLike = str | os.PathLike[str]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    Use this for libraries that insist on writing to a file name themselves
    (nibabel, matplotlib, h5py, pandas.to_parquet). The temporary name keeps
    the destination's suffixes so that format detection by extension works.
    On any exception the temporary file is removed and ``path`` is untouched.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(dest.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".tmp{suffix}", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync_path(tmp)
        # mkstemp creates 0600; give the file the mode an ordinary open() would.
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file for writing and rename it onto ``path`` on success.

    Args:
        path: the final destination.
        mode: ``"w"`` for text or ``"wb"`` for bytes.
        encoding: text encoding (ignored in binary mode).

    Raises:
        ValueError: if ``mode`` is not a write mode.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write supports modes 'w' and 'wb', not {mode!r}")
    with atomic_path(path) as tmp:
        kwargs = {} if "b" in mode else {"encoding": encoding, "newline": ""}
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def _fsync_path(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def write_text(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_write(path) as handle:
        handle.write(text)


def write_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_table(path: PathLike, frame: Any) -> None:
    """Write a pandas DataFrame as TSV or Parquet (chosen by suffix), atomically."""
    dest = Path(path)
    with atomic_path(dest) as tmp:
        if dest.suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        elif dest.suffix in (".tsv", ".txt"):
            frame.to_csv(tmp, sep="\t", index=False, lineterminator="\n")
        elif dest.suffix == ".csv":
            frame.to_csv(tmp, index=False, lineterminator="\n")
        else:
            raise ValueError(f"unsupported table suffix {dest.suffix!r} in {dest}")


def save_npy(path: PathLike, array: np.ndarray) -> None:
    """Save one array in ``.npy`` format atomically (memory-mappable)."""
    with atomic_write(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def save_nifti(path: PathLike, image: Any) -> None:
    """Save a nibabel image atomically; the suffix (``.nii``/``.nii.gz``) picks compression."""
    import nibabel as nib

    with atomic_path(path) as tmp:
        nib.save(image, tmp)


def sha256_file(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Return the hex sha256 of a file's bytes, read in chunks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
