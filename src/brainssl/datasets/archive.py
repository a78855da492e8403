"""Safe, atomic extraction of a tar archive (:func:`safe_extract_tar`).

Split from :mod:`brainssl.datasets.download`, which keeps only the IXI specifics. Archives
are unpacked member by member into a hidden folder beside the destination, with our own
checks on every member (no absolute paths, no ``..``, only regular files and folders), and
the folder is renamed into place only once it is complete (marked by :data:`COMPLETE_MARKER`).
"""

from __future__ import annotations

import gzip
import json
import logging
import lzma
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from brainssl.io import PathLike, write_json

from .transfer import DEFAULT_CHUNK_SIZE

__all__ = ["COMPLETE_MARKER", "CorruptArchiveError", "UnsafeArchiveError", "safe_extract_tar"]

logger = logging.getLogger(__name__)

#: Marker written last inside an extracted folder; lists the extracted files.
COMPLETE_MARKER = ".complete.json"


class UnsafeArchiveError(ValueError):
    """A tar member would escape the destination or is not a plain file or folder."""


class CorruptArchiveError(ValueError):
    """An archive cannot be read as a tar file (truncated, not a tar, bad compression)."""


_CORRUPT = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)


def _member_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.ischr():
        return "character device"
    if member.isblk():
        return "block device"
    if member.isfifo():
        return "fifo"
    return f"tar type {member.type!r}"


def _safe_member_path(member: tarfile.TarInfo) -> PurePosixPath | None:
    """Return the member's relative path, ``None`` for the archive root, or raise."""
    name = member.name
    if not (member.isreg() or member.isdir()):
        raise UnsafeArchiveError(
            f"refusing tar member {name!r}: {_member_kind(member)} entries are not allowed "
            "(only regular files and folders)"
        )
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        raise UnsafeArchiveError(f"refusing tar member {name!r}: absolute path")
    parts = [p for p in PurePosixPath(name).parts if p != "."]
    if ".." in parts:
        raise UnsafeArchiveError(f"refusing tar member {name!r}: '..' component")
    return PurePosixPath(*parts) if parts else None


def _plan_members(
    members: Iterable[tarfile.TarInfo], strip_prefix: str | None
) -> list[tuple[tarfile.TarInfo, PurePosixPath]]:
    """Check every member before anything is written; optionally drop a common top folder."""
    plan = [(m, p) for m in members if (p := _safe_member_path(m)) is not None]
    if strip_prefix and plan and all(p.parts[0] == strip_prefix for _, p in plan):
        plan = [(m, PurePosixPath(*p.parts[1:])) for m, p in plan if len(p.parts) > 1]
    return plan


def _extract_members(
    tar: tarfile.TarFile, plan: Sequence[tuple[tarfile.TarInfo, PurePosixPath]], root: Path, chunk_size: int
) -> list[str]:
    root_resolved = root.resolve()
    files: list[str] = []
    for member, rel in plan:
        target = root.joinpath(*rel.parts)
        if not target.resolve().is_relative_to(root_resolved):  # belt and braces
            raise UnsafeArchiveError(f"refusing tar member {member.name!r}: resolves outside {root}")
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        source = tar.extractfile(member)
        if source is None:  # pragma: no cover - isreg() members always have data
            raise UnsafeArchiveError(f"tar member {member.name!r} has no data")
        with source, open(target, "wb") as handle:
            shutil.copyfileobj(source, handle, chunk_size)
            handle.flush()
            os.fsync(handle.fileno())
        files.append(rel.as_posix())
    return sorted(set(files))


def safe_extract_tar(
    archive: PathLike,
    dest_dir: PathLike,
    *,
    strip_prefix: str | None = None,
    archive_sha256: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    archive_name: str | None = None,
) -> list[str]:
    """Extract a tar archive into ``dest_dir``, refusing anything but plain files and folders.

    Every member is checked before anything is written: absolute paths, ``..`` components,
    symlinks, hardlinks, devices and fifos are refused. Files are written into a hidden
    temporary folder beside ``dest_dir`` (permissions and owners from the archive are not
    applied), the marker :data:`COMPLETE_MARKER` listing the files is written last, and the
    folder is then renamed onto ``dest_dir``, replacing any previous one. An interrupted
    extraction therefore never leaves a ``dest_dir`` that looks complete. Does not rely on
    :mod:`tarfile`'s extraction filters (absent or partial before Python 3.12).

    Args:
        archive: the tar file (any compression :func:`tarfile.open` detects).
        dest_dir: the folder to create.
        strip_prefix: if every member lies under this top folder (``IXI-T1/...``), drop it.
        archive_sha256: recorded in the marker so that a later run can tell which archive
            produced the folder.
        chunk_size: bytes copied per step.
        archive_name: the archive's name for the marker and messages (default: its file name;
            set it when extracting a download still named ``<name>.part``).

    Returns:
        The extracted files, as sorted POSIX paths relative to ``dest_dir``.

    Raises:
        UnsafeArchiveError: naming the first offending member; nothing is extracted.
        CorruptArchiveError: if the archive is unreadable (truncated, not a tar); nothing is
            extracted.
    """
    archive = Path(archive)
    name = archive_name or archive.name
    dest_dir = Path(dest_dir)
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _extract(archive, name, dest_dir, strip_prefix, archive_sha256, chunk_size)
    except _CORRUPT as err:
        raise CorruptArchiveError(
            f"{name}: not a readable tar archive (truncated or corrupt?): {type(err).__name__}: {err}; "
            f"nothing was extracted into {dest_dir}"
        ) from err


def _extract(
    archive: Path,
    name: str,
    dest_dir: Path,
    strip_prefix: str | None,
    archive_sha256: str | None,
    chunk_size: int,
) -> list[str]:
    with tarfile.open(archive, "r:*") as tar:
        plan = _plan_members(tar.getmembers(), strip_prefix)
        _check_end_marker(tar, name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".extracting", dir=dest_dir.parent))
        try:
            files = _extract_members(tar, plan, tmp, chunk_size)
            marker = {
                "archive": name,
                "archive_sha256": archive_sha256,
                "n_files": len(files),
                "files": files,
            }
            write_json(tmp / COMPLETE_MARKER, marker)
            _replace_dir(tmp, dest_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    logger.info("%s: extracted %d files into %s", name, len(files), dest_dir)
    return files


def _check_end_marker(tar: tarfile.TarFile, name: str) -> None:
    """Refuse an archive cut at a member boundary: :mod:`tarfile` reads it without complaint.

    A complete tar ends with zero blocks after the last member; an archive truncated between
    members (or inside a header) lacks them, and would silently lose its remaining files.
    """
    fileobj = tar.fileobj
    assert fileobj is not None
    fileobj.seek(tar.offset)
    tail = fileobj.read(2 * tarfile.BLOCKSIZE)
    if len(tail) < tarfile.BLOCKSIZE or tail.strip(b"\0"):
        raise CorruptArchiveError(
            f"{name}: no end-of-archive marker after the last complete member "
            f"({len(tar.getmembers())} read): the archive is truncated or corrupt; nothing was extracted"
        )


def _replace_dir(src: Path, dest: Path) -> None:
    """Rename ``src`` onto ``dest``; an existing ``dest`` is moved aside first, then deleted."""
    old: Path | None = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
        os.replace(dest, old / dest.name)
    os.replace(src, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _extraction_complete(out_dir: Path, archive_sha256: str | None) -> bool:
    """Whether ``out_dir`` holds a finished extraction of the archive with this sha256."""
    if archive_sha256 is None:
        return False
    marker = out_dir / COMPLETE_MARKER
    try:
        info = json.loads(marker.read_text("utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if not isinstance(info, dict) or info.get("archive_sha256") != archive_sha256:
        return False
    files = info.get("files")
    return isinstance(files, list) and all((out_dir / f).is_file() for f in files)
