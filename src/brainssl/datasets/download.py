"""Download and unpack the public IXI archives, resumably, verifiably and safely.

The IXI site publishes no checksums, so the packaged table
(``ixi_checksums.tsv``) says ``unknown`` for every file. A file whose sha256
is unknown is pinned on its first complete download into a lock file
(``ixi.lock.json`` in the download folder, trust on first use); every later
download or re-check must then match the pinned value.

Transfers stream into ``<name>.part`` and resume with an HTTP ``Range``
request after a broken connection. A file gets its final name only after its
size and sha256 have been checked, so a file with the final name is always a
verified one. Archives are unpacked member by member into a hidden folder
beside the destination, with our own checks on every member (no absolute
paths, no ``..``, only regular files and folders), and the folder is renamed
into place only once it is complete.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import http.client
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import IO, Any

from brainssl import __version__
from brainssl.io import PathLike, sha256_file, write_json

__all__ = [
    "DEFAULT_IXI_BASE_URL",
    "IXI_MODALITIES",
    "IXI_DEMOGRAPHICS",
    "LOCK_FILE_NAME",
    "COMPLETE_MARKER",
    "ChecksumEntry",
    "DownloadResult",
    "DownloadError",
    "ChecksumError",
    "UnsafeArchiveError",
    "load_checksum_table",
    "download_file",
    "safe_extract_tar",
    "fetch_ixi",
]

logger = logging.getLogger(__name__)

#: Where the IXI archives live (plain HTTP, no login).
DEFAULT_IXI_BASE_URL = "http://biomedic.doc.ic.ac.uk/brain-development/downloads/IXI/"
#: Modalities with an archive ``IXI-<modality>.tar`` on the IXI site.
IXI_MODALITIES: tuple[str, ...] = ("T1", "T2", "PD", "MRA", "DTI")
#: The demographics spreadsheet downloaded alongside the archives.
IXI_DEMOGRAPHICS = "IXI.xls"
#: Lock file (in the download folder) holding sha256 values pinned on first use.
LOCK_FILE_NAME = "ixi.lock.json"
#: Marker written last inside an extracted folder; lists the extracted files.
COMPLETE_MARKER = ".complete.json"
#: Suffix of a transfer in progress.
PART_SUFFIX = ".part"
DEFAULT_CHUNK_SIZE = 1 << 20
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_RETRIES = 3

_UNKNOWN = "unknown"
_TABLE_COLUMNS = ("file", "size_bytes", "sha256", "note")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE_RE = re.compile(r"bytes \*/(\d+)")


class DownloadError(RuntimeError):
    """A transfer failed for good: an HTTP error, a bad reply, or all retries used up."""


class ChecksumError(RuntimeError):
    """A file's size or sha256 differs from the expected value; the bad file has been removed.

    Attributes:
        file: the file name (as in the checksum table and lock file).
        kind: ``"sha256"`` or ``"size"``.
        expected: the expected value.
        actual: the value found.
    """

    def __init__(
        self,
        file: str,
        kind: str,
        expected: str | int,
        actual: str | int,
        source: str,
        found_in: str = "the downloaded file",
    ) -> None:
        self.file = file
        self.kind = kind
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{file}: {kind} mismatch: expected {expected} (from {source}), got {actual} "
            f"(from {found_in}); the file was removed, nothing with this name is kept"
        )


class UnsafeArchiveError(ValueError):
    """A tar member would escape the destination or is not a plain file or folder."""


class _TransientError(Exception):
    """A failure worth retrying (short read, dropped connection, HTTP 5xx)."""


_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    _TransientError,
    ConnectionError,
    TimeoutError,
    http.client.HTTPException,
    urllib.error.URLError,
)


@dataclass(frozen=True)
class ChecksumEntry:
    """One row of a checksum table.

    Args:
        file: file name on the server (``IXI-T1.tar``).
        size_bytes: expected size, or ``None`` when unknown.
        sha256: expected lower-case hex sha256, or ``None`` when unknown.
        note: where the values come from.
    """

    file: str
    size_bytes: int | None
    sha256: str | None
    note: str = ""


@dataclass(frozen=True)
class DownloadResult:
    """What :func:`download_file` produced.

    Args:
        path: the verified file.
        sha256: its sha256 (hex).
        size_bytes: its size.
        downloaded: ``False`` when a verified file was already there and nothing was fetched.
    """

    path: Path
    sha256: str
    size_bytes: int
    downloaded: bool


# --------------------------------------------------------------------------- checksum table / lock


def load_checksum_table(path: PathLike | None = None) -> dict[str, ChecksumEntry]:
    """Read a checksum table (TSV with columns ``file, size_bytes, sha256, note``).

    ``unknown`` (or an empty cell) in ``size_bytes`` or ``sha256`` means "not known".

    Args:
        path: the table; ``None`` reads the table shipped with brainssl (``ixi_checksums.tsv``).

    Returns:
        Entries keyed by file name.

    Raises:
        ValueError: if a column is missing, a file is listed twice, or a value is malformed
            (the message names the file and the column).
    """
    if path is None:
        text = resources.files("brainssl.datasets").joinpath("ixi_checksums.tsv").read_text("utf-8")
        source = "brainssl/datasets/ixi_checksums.tsv"
    else:
        text = Path(path).read_text("utf-8")
        source = str(path)
    reader = csv.DictReader(text.splitlines(), delimiter="\t")
    missing = [c for c in _TABLE_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; expected {list(_TABLE_COLUMNS)}")
    table: dict[str, ChecksumEntry] = {}
    for row in reader:
        entry = _parse_row(row, source)
        if entry.file in table:
            raise ValueError(f"{source}: file {entry.file!r} is listed twice")
        table[entry.file] = entry
    return table


def _parse_row(row: Mapping[str, str | None], source: str) -> ChecksumEntry:
    name = (row["file"] or "").strip()
    if not name:
        raise ValueError(f"{source}: a row has an empty 'file' column")
    size_text = (row["size_bytes"] or "").strip()
    sha_text = (row["sha256"] or "").strip().lower()
    size: int | None = None
    if size_text not in ("", _UNKNOWN):
        if not size_text.isdigit():
            raise ValueError(f"{source}: {name}: size_bytes {size_text!r} is not a whole number")
        size = int(size_text)
    sha: str | None = None
    if sha_text not in ("", _UNKNOWN):
        if not _SHA256_RE.fullmatch(sha_text):
            raise ValueError(f"{source}: {name}: sha256 {sha_text!r} is not 64 hex digits")
        sha = sha_text
    return ChecksumEntry(file=name, size_bytes=size, sha256=sha, note=(row["note"] or "").strip())


def _read_lock(lock_path: Path) -> dict[str, dict[str, Any]]:
    if not lock_path.exists():
        return {}
    try:
        data = json.loads(lock_path.read_text("utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{lock_path}: not valid JSON ({exc}); fix or delete it") from exc
    if not isinstance(data, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in data.values()
    ):
        raise ValueError(f"{lock_path}: expected a mapping file -> {{'sha256': ..., 'size': ...}}")
    return data


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an advisory lock so that concurrent jobs do not lose each other's pins."""
    guard = lock_path.with_name(lock_path.name + ".flock")
    guard.parent.mkdir(parents=True, exist_ok=True)
    with open(guard, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _pin(lock_path: Path, name: str, sha256: str, size: int) -> None:
    with _exclusive(lock_path):
        lock = _read_lock(lock_path)
        lock[name] = {"sha256": sha256, "size": size}
        write_json(lock_path, lock)
    logger.warning(
        "%s: no published sha256; pinned %s (%d bytes) into %s on first complete download "
        "(trust on first use)",
        name,
        sha256,
        size,
        lock_path,
    )


@dataclass(frozen=True)
class _Expected:
    sha256: str | None
    size: int | None
    source: str


def _expected_for(name: str, sha256: str | None, size: int | None, lock_path: Path | None) -> _Expected:
    if sha256 is not None:
        return _Expected(sha256.lower(), size, "the checksum table")
    if lock_path is not None:
        pinned = _read_lock(lock_path).get(name)
        if pinned is not None:
            lock_size = pinned.get("size")
            return _Expected(pinned["sha256"], size if size is not None else lock_size, str(lock_path))
    return _Expected(None, size, "the checksum table")


# --------------------------------------------------------------------------- download


def download_file(
    url: str,
    dest: PathLike,
    *,
    expected_sha256: str | None = None,
    expected_size: int | None = None,
    lock_path: PathLike | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    timeout: float = DEFAULT_TIMEOUT_S,
    retries: int = DEFAULT_RETRIES,
    retry_wait: float = 2.0,
) -> DownloadResult:
    """Download ``url`` to ``dest`` with resume, then check its size and sha256.

    The transfer streams into ``<dest>.part``. An existing ``.part`` is resumed with
    ``Range: bytes=N-`` (appended on HTTP 206, restarted on HTTP 200). Connection errors,
    short reads and HTTP 5xx are retried up to ``retries`` times, each time resuming from the
    partial file. The expected sha256 is ``expected_sha256`` if given, else the entry for
    ``dest.name`` in ``lock_path``; when neither exists, the sha256 of the complete download is
    pinned into ``lock_path`` (with a warning). ``.part`` is renamed to ``dest`` only after
    these checks. If ``dest`` already exists it is checked the same way and nothing is fetched.

    Args:
        url: the file's URL (``http``/``https``).
        dest: final path of the file.
        expected_sha256: known sha256 (hex), e.g. from the checksum table.
        expected_size: known size in bytes.
        lock_path: JSON lock file holding pinned sha256 values (``None``: no pinning).
        chunk_size: bytes read and written per step.
        timeout: socket timeout in seconds for connecting and for each read.
        retries: extra attempts after a transient failure.
        retry_wait: seconds to wait before retry ``k`` is ``retry_wait * k``.

    Returns:
        The verified file with its sha256 and size.

    Raises:
        ValueError: on a bad argument.
        DownloadError: on an HTTP error, a malformed reply, or when all retries fail.
        ChecksumError: when size or sha256 differ; the bad file is removed first.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if expected_sha256 is not None and not _SHA256_RE.fullmatch(expected_sha256.lower()):
        raise ValueError(f"expected_sha256 {expected_sha256!r} is not 64 hex digits")
    dest = Path(dest)
    lock = Path(lock_path) if lock_path is not None else None
    expected = _expected_for(dest.name, expected_sha256, expected_size, lock)

    if dest.exists():
        sha = _verify(dest, dest.name, expected, lock)
        logger.info("%s: already present and verified (sha256 %s)", dest, sha)
        return DownloadResult(dest, sha, dest.stat().st_size, downloaded=False)

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + PART_SUFFIX)
    logger.info("%s: downloading %s", dest, url)
    _transfer_with_retries(
        url,
        part,
        expected_size=expected.size,
        chunk_size=chunk_size,
        timeout=timeout,
        retries=retries,
        retry_wait=retry_wait,
    )
    sha = _verify(part, dest.name, expected, lock)
    os.replace(part, dest)
    size = dest.stat().st_size
    logger.info("%s: downloaded and verified (%d bytes, sha256 %s)", dest, size, sha)
    return DownloadResult(dest, sha, size, downloaded=True)


def _verify(path: Path, name: str, expected: _Expected, lock_path: Path | None) -> str:
    """Check ``path`` against ``expected``; remove it and raise on a mismatch; pin if unknown."""
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:
        path.unlink()
        raise ChecksumError(name, "size", expected.size, size, expected.source)
    actual = sha256_file(path)
    if expected.sha256 is None:
        if lock_path is not None:
            _pin(lock_path, name, actual, size)
        else:
            logger.warning("%s: no sha256 known and no lock file given; not verified", name)
        return actual
    if actual != expected.sha256:
        path.unlink()
        raise ChecksumError(name, "sha256", expected.sha256, actual, expected.source)
    return actual


def _transfer_with_retries(
    url: str,
    part: Path,
    *,
    expected_size: int | None,
    chunk_size: int,
    timeout: float,
    retries: int,
    retry_wait: float,
) -> None:
    for attempt in range(retries + 1):
        try:
            _transfer_once(url, part, expected_size=expected_size, chunk_size=chunk_size, timeout=timeout)
            return
        except _TRANSIENT_ERRORS as exc:
            have = part.stat().st_size if part.exists() else 0
            if attempt == retries:
                raise DownloadError(
                    f"{url}: gave up after {retries + 1} attempt(s): {exc}; "
                    f"{have} bytes kept in {part} for the next run to resume"
                ) from exc
            logger.warning(
                "%s: attempt %d/%d failed (%s); resuming from byte %d",
                url,
                attempt + 1,
                retries + 1,
                exc,
                have,
            )
            time.sleep(retry_wait * (attempt + 1))


def _transfer_once(
    url: str, part: Path, *, expected_size: int | None, chunk_size: int, timeout: float
) -> None:
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": f"brainssl/{__version__}"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        with exc:
            _handle_http_error(exc, url, part, offset, expected_size)
        return  # the partial file was already complete
    with response:
        total, mode = _plan_write(response, url, part, offset, expected_size)
        with open(part, mode) as handle:
            _copy(response, handle, chunk_size)
            handle.flush()
            os.fsync(handle.fileno())
    size = part.stat().st_size
    if total is None:
        return
    if size < total:
        raise _TransientError(f"connection closed after {size} of {total} bytes")
    if size > total:
        part.unlink()
        raise DownloadError(f"{url}: received {size} bytes but the server announced {total}")


def _copy(source: IO[bytes], handle: IO[bytes], chunk_size: int) -> None:
    while chunk := source.read(chunk_size):
        handle.write(chunk)


def _handle_http_error(
    exc: urllib.error.HTTPError, url: str, part: Path, offset: int, expected_size: int | None
) -> None:
    """Return normally only when a 416 shows that the partial file is already complete."""
    if exc.code == 416 and offset:
        match = _UNSATISFIED_RANGE_RE.fullmatch(exc.headers.get("Content-Range", "").strip())
        total = int(match.group(1)) if match else expected_size
        if total is not None and offset == total:
            return
        part.unlink()
        raise _TransientError(f"HTTP 416 for a resume from byte {offset}; restarting from scratch")
    if exc.code >= 500 or exc.code in (408, 429):
        raise _TransientError(f"HTTP {exc.code} {exc.reason}")
    raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc


def _plan_write(
    response: http.client.HTTPResponse, url: str, part: Path, offset: int, expected_size: int | None
) -> tuple[int | None, str]:
    """Return the announced total size and the file mode (append on 206, truncate on 200)."""
    if response.status == 206 and offset:
        match = _CONTENT_RANGE_RE.fullmatch((response.headers.get("Content-Range") or "").strip())
        if match is None or int(match.group(1)) != offset:
            part.unlink()
            raise _TransientError(
                f"unusable Content-Range {response.headers.get('Content-Range')!r} for a resume from "
                f"byte {offset}; restarting from scratch"
            )
        total = None if match.group(3) == "*" else int(match.group(3))
        mode = "ab"
    elif response.status == 200:
        if offset:
            logger.info("%s: server ignored the Range request; restarting from byte 0", url)
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        mode = "wb"
    else:
        raise DownloadError(f"{url}: unexpected HTTP status {response.status}")
    if total is not None and expected_size is not None and total != expected_size:
        part.unlink(missing_ok=True)
        raise ChecksumError(
            part.name.removesuffix(PART_SUFFIX),
            "size",
            expected_size,
            total,
            "the checksum table",
            found_in="the size the server announced",
        )
    return total, mode


# --------------------------------------------------------------------------- extraction


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

    Returns:
        The extracted files, as sorted POSIX paths relative to ``dest_dir``.

    Raises:
        UnsafeArchiveError: naming the first offending member; nothing is extracted.
        tarfile.TarError: if the archive is unreadable.
    """
    archive = Path(archive)
    dest_dir = Path(dest_dir)
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:*") as tar:
        plan = _plan_members(tar.getmembers(), strip_prefix)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".extracting", dir=dest_dir.parent))
        try:
            files = _extract_members(tar, plan, tmp, chunk_size)
            marker = {
                "archive": archive.name,
                "archive_sha256": archive_sha256,
                "n_files": len(files),
                "files": files,
            }
            write_json(tmp / COMPLETE_MARKER, marker)
            _replace_dir(tmp, dest_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    logger.info("%s: extracted %d files into %s", archive.name, len(files), dest_dir)
    return files


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


# --------------------------------------------------------------------------- IXI


def _check_modalities(modalities: Iterable[str]) -> list[str]:
    chosen = list(dict.fromkeys(modalities))
    unknown = [m for m in chosen if m not in IXI_MODALITIES]
    if unknown:
        raise ValueError(f"unknown IXI modality {unknown}; choose from {list(IXI_MODALITIES)}")
    if not chosen:
        raise ValueError("modalities is empty; choose from " + str(list(IXI_MODALITIES)))
    return chosen


def _url(base_url: str, name: str) -> str:
    return urllib.parse.urljoin(base_url if base_url.endswith("/") else base_url + "/", name)


def fetch_ixi(
    dest_dir: PathLike,
    modalities: Sequence[str] = ("T1", "T2", "PD"),
    base_url: str = DEFAULT_IXI_BASE_URL,
    *,
    checksums: Mapping[str, ChecksumEntry] | None = None,
    demographics: bool = True,
    keep_archives: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    timeout: float = DEFAULT_TIMEOUT_S,
    retries: int = DEFAULT_RETRIES,
    retry_wait: float = 2.0,
) -> Path:
    """Download, verify and unpack IXI into its native layout (``dest/IXI-T1/IXI002-...nii.gz``).

    Idempotent: a modality whose folder carries a complete-marker for the expected archive
    sha256 (from the table or the lock file) is skipped without any request, and files that
    are already present are re-checked locally instead of fetched again.

    Args:
        dest_dir: download folder; receives ``IXI-<mod>.tar``, ``IXI-<mod>/``, ``IXI.xls`` and
            the lock file :data:`LOCK_FILE_NAME`.
        modalities: any of :data:`IXI_MODALITIES`.
        base_url: folder URL holding the archives.
        checksums: expected sizes/sha256 by file name; ``None`` uses the packaged table.
        demographics: also fetch ``IXI.xls``.
        keep_archives: keep each ``.tar`` after extraction (else delete it; the lock file
            still records its sha256).
        chunk_size: bytes per read/write step.
        timeout: socket timeout in seconds.
        retries: extra attempts per file after a transient failure.
        retry_wait: base wait in seconds between attempts.

    Returns:
        ``dest_dir`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: on an unknown modality.
        DownloadError: when a transfer fails for good.
        ChecksumError: when a file does not match its table or lock entry.
        UnsafeArchiveError: when an archive holds an unsafe member.
    """
    chosen = _check_modalities(modalities)
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    table = load_checksum_table() if checksums is None else dict(checksums)
    lock_path = dest / LOCK_FILE_NAME
    options: dict[str, Any] = {
        "lock_path": lock_path,
        "chunk_size": chunk_size,
        "timeout": timeout,
        "retries": retries,
        "retry_wait": retry_wait,
    }

    def fetch(name: str) -> DownloadResult:
        entry = table.get(name)
        return download_file(
            _url(base_url, name),
            dest / name,
            expected_sha256=entry.sha256 if entry else None,
            expected_size=entry.size_bytes if entry else None,
            **options,
        )

    if demographics:
        fetch(IXI_DEMOGRAPHICS)
    for modality in chosen:
        archive_name = f"IXI-{modality}.tar"
        out_dir = dest / f"IXI-{modality}"
        entry = table.get(archive_name)
        known = _expected_for(archive_name, entry.sha256 if entry else None, None, lock_path).sha256
        if _extraction_complete(out_dir, known):
            logger.info("%s: already extracted from %s; skipping", out_dir, archive_name)
            continue
        result = fetch(archive_name)
        if not _extraction_complete(out_dir, result.sha256):
            safe_extract_tar(
                result.path,
                out_dir,
                strip_prefix=out_dir.name,
                archive_sha256=result.sha256,
                chunk_size=chunk_size,
            )
        if not keep_archives:
            result.path.unlink()
    return dest
