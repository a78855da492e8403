"""Checks that a dataset's file or folder can be read, each failure named by its real cause.

A reader asks here before it opens anything, so that a subject is refused with ``permission
denied``, ``a broken symlink``, ``a symlink loop``, ``a folder where a file is expected`` or
``too small to process`` instead of an opaque error from nibabel or h5py later.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from brainssl.datasets.layouts.errors import DatasetInfo, DatasetLayoutError, SubjectError

__all__ = [
    "MIN_IMAGE_SIZE",
    "MIN_VOLUME_SIZE",
    "check_size",
    "file_problem",
    "folder_problem",
    "list_dir",
    "require_file",
    "require_root",
]

#: Smallest accepted size, in voxels along every axis, of a NIfTI or fastMRI volume. Smaller
#: volumes (a 2x2x2 test file, a handful of slices) cannot be skull-stripped, bias-corrected,
#: registered or sliced; they are refused at the manifest instead of failing later in ITK.
MIN_VOLUME_SIZE = 8
#: Smallest accepted width and height, in pixels, of a 2D image (the 4-class JPEGs).
MIN_IMAGE_SIZE = 32


def require_root(info: DatasetInfo, root: Path, must_contain: tuple[str, ...] = ()) -> None:
    """Raise :class:`DatasetLayoutError` unless ``root`` exists and holds ``must_contain``.

    Args:
        info: the dataset's description (used in the message).
        root: the dataset root.
        must_contain: glob patterns of which each must match at least one path.

    Raises:
        DatasetLayoutError: naming the dataset, the expected layout and the source.
    """
    problem = ""
    if not root.is_dir():
        problem = f"{root} does not exist or is not a folder"
    elif not os.access(root, os.R_OK | os.X_OK):
        problem = f"permission denied: cannot list {root}"
    else:
        absent = [pattern for pattern in must_contain if next(root.glob(pattern), None) is None]
        if absent:
            problem = f"{root} holds nothing matching {absent}"
    if problem:
        raise DatasetLayoutError(
            f"{info.name} ({info.key}): {problem}. Expected layout: {info.layout}. "
            f"Obtain it from {info.source}."
        )


def file_problem(path: Path, what: str = "file") -> str | None:
    """Say why ``path`` cannot be read as a regular file, or return ``None`` when it can.

    The reasons name the real cause: ``missing``, a broken symlink, a symlink loop, a folder
    where a file is expected, not a regular file, or permission denied (the file itself, or a
    folder above it that cannot be entered).
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            return f"{what} is a broken symlink (to {os.readlink(path)})"
        return f"missing {what} file"
    except PermissionError:
        return f"permission denied: cannot reach the {what} file (a folder above it is not readable)"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return f"{what} is a symlink loop"
        return f"cannot open {what}: {type(err).__name__}: {err.strerror or err}"
    if stat.S_ISDIR(info.st_mode):
        return f"{what} is a folder where a file is expected"
    if not stat.S_ISREG(info.st_mode):
        return f"{what} is not a regular file"
    if not os.access(path, os.R_OK):
        return f"permission denied: cannot read the {what} file"
    return None


def require_file(path: Path, what: str = "file") -> None:
    """Raise :class:`SubjectError` naming ``path`` unless it is a readable regular file."""
    problem = file_problem(path, what)
    if problem is not None:
        raise SubjectError(path, problem)


def list_dir(path: Path, what: str = "folder") -> list[Path]:
    """List a folder (sorted), raising :class:`SubjectError` with the real cause when it cannot.

    Unlike :meth:`pathlib.Path.glob`, which yields nothing for a folder it may not read, an
    unreadable folder is reported as ``permission denied``.
    """
    try:
        with os.scandir(path) as entries:
            return sorted(Path(entry.path) for entry in entries)
    except PermissionError as err:
        raise SubjectError(path, f"permission denied: cannot list the {what}") from err
    except FileNotFoundError as err:
        raise SubjectError(path, f"missing {what}") from err
    except NotADirectoryError as err:
        raise SubjectError(path, f"{what} is a file, not a folder") from err
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise SubjectError(path, f"{what} is a symlink loop") from err
        raise SubjectError(path, f"cannot list the {what}: {type(err).__name__}: {err}") from err


def folder_problem(path: Path, what: str = "folder") -> str | None:
    """Say why ``path`` cannot be used as a folder (see :func:`file_problem`), or ``None``."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return f"{what} is a broken symlink" if path.is_symlink() else f"missing {what}"
    except PermissionError:
        return f"permission denied: cannot reach the {what}"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return f"{what} is a symlink loop"
        return f"cannot open the {what}: {type(err).__name__}: {err.strerror or err}"
    if not stat.S_ISDIR(info.st_mode):
        return f"{what} is a file where a folder is expected"
    if not os.access(path, os.R_OK | os.X_OK):
        return f"permission denied: cannot list the {what}"
    return None


def check_size(path: Path, shape: Sequence[int], what: str, minimum: int = MIN_VOLUME_SIZE) -> None:
    """Raise :class:`SubjectError` when an axis of ``shape`` is shorter than ``minimum``."""
    if min(shape) < minimum:
        shown = "x".join(str(int(n)) for n in shape)
        unit = "voxels" if len(shape) == 3 else "pixels"
        raise SubjectError(
            path, f"{what} too small to process: shape {shown}, every axis needs at least {minimum} {unit}"
        )
