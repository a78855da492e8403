"""Resumable, verified HTTP download of one file (:func:`download_file`).

Split from :mod:`brainssl.datasets.download`, which keeps only the IXI specifics. Transfers
stream into ``<name>.part`` and resume with an HTTP ``Range`` request after a broken
connection. A file gets its final name only after its size and sha256 have been checked
(:mod:`brainssl.datasets.checksums`), so a file with the final name is always a verified one.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from brainssl import __version__
from brainssl.io import PathLike

from .checksums import _SHA256_RE, ChecksumError, _Expected, _expected_for, _pin, _unpin, _verify

__all__ = [
    "PART_SUFFIX",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_RETRIES",
    "DownloadError",
    "DownloadResult",
    "download_file",
]

logger = logging.getLogger(__name__)

#: Suffix of a transfer in progress.
PART_SUFFIX = ".part"
DEFAULT_CHUNK_SIZE = 1 << 20
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_RETRIES = 3

_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE_RE = re.compile(r"bytes \*/(\d+)")


class DownloadError(RuntimeError):
    """A transfer failed for good: an HTTP error, a bad reply, or all retries used up."""


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
    accept: Callable[[Path, str], None] | None = None,
) -> DownloadResult:
    """Download ``url`` to ``dest`` with resume, then check its size and sha256.

    The transfer streams into ``<dest>.part``. An existing ``.part`` is resumed with
    ``Range: bytes=N-`` (appended on HTTP 206, restarted on HTTP 200). Connection errors,
    short reads and HTTP 5xx are retried up to ``retries`` times, each time resuming from the
    partial file. The expected sha256 is ``expected_sha256`` if given, else the entry for
    ``dest.name`` in ``lock_path``; when neither exists, the sha256 of the complete download is
    pinned into ``lock_path`` (with a warning). ``.part`` is renamed to ``dest`` only after
    these checks. If ``dest`` already exists it is checked the same way and nothing is fetched.

    ``accept(path, sha256)`` is a further check of the verified file (e.g. unpacking an
    archive). It runs before the sha256 is pinned and before the file gets its final name; if
    it raises a ``ValueError`` (a refusal, such as an unsafe or corrupt archive), the file is
    removed, nothing is pinned (a pin of that very file is dropped), and the error propagates:
    a refused file leaves neither a final-named file nor a pin, so a later run downloads it
    again. Other errors (disk full, an interrupt) keep the verified ``.part`` for the next run.

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
        accept: optional check of the verified file, see above.

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
        sha = _verify(dest, dest.name, expected, lock, pin=False)
        _accept_or_remove(dest, dest.name, sha, expected, lock, accept)
        logger.info("%s: already present and verified (sha256 %s)", dest, sha)
        return DownloadResult(dest, sha, dest.stat().st_size, downloaded=False)

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + PART_SUFFIX)
    logger.info("%s: downloading %s", dest, url)
    _transfer_with_retries(
        url,
        part,
        expected=expected,
        chunk_size=chunk_size,
        timeout=timeout,
        retries=retries,
        retry_wait=retry_wait,
    )
    sha = _verify(part, dest.name, expected, lock, pin=False)
    _accept_or_remove(part, dest.name, sha, expected, lock, accept)
    os.replace(part, dest)
    size = dest.stat().st_size
    logger.info("%s: downloaded and verified (%d bytes, sha256 %s)", dest, size, sha)
    return DownloadResult(dest, sha, size, downloaded=True)


def _accept_or_remove(
    path: Path,
    name: str,
    sha: str,
    expected: _Expected,
    lock: Path | None,
    accept: Callable[[Path, str], None] | None,
) -> None:
    """Run ``accept``; on success pin an unknown sha256, on failure remove the file and its pin."""
    if accept is not None:
        try:
            accept(path, sha)
        except ValueError:  # refused: neither the file nor its pin may survive
            path.unlink(missing_ok=True)
            if lock is not None and expected.pinned:
                _unpin(lock, name, sha)
            logger.error(
                "%s: refused; removed %s and kept no pin, a later run downloads it again", name, path
            )
            raise
    if expected.sha256 is None and lock is not None:
        _pin(lock, name, sha, path.stat().st_size)


def _transfer_with_retries(
    url: str,
    part: Path,
    *,
    expected: _Expected,
    chunk_size: int,
    timeout: float,
    retries: int,
    retry_wait: float,
) -> None:
    for attempt in range(retries + 1):
        try:
            _transfer_once(url, part, expected=expected, chunk_size=chunk_size, timeout=timeout)
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


def _transfer_once(url: str, part: Path, *, expected: _Expected, chunk_size: int, timeout: float) -> None:
    expected_size = expected.size
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
        total, mode = _plan_write(response, url, part, offset, expected)
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
    response: http.client.HTTPResponse, url: str, part: Path, offset: int, expected: _Expected
) -> tuple[int | None, str]:
    """Return the announced total size and the file mode (append on 206, truncate on 200)."""
    expected_size = expected.size
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
            expected.size_source,
            found_in="the size the server announced",
            from_lock=expected.size_from_lock,
        )
    return total, mode
