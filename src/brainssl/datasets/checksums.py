"""Expected sizes and sha256 values of downloads: the packaged table and the TOFU lock file.

Split from :mod:`brainssl.datasets.download` so that the trust rules (which value a
download must match, and when a first download pins one) live apart from the HTTP
transfer (:mod:`brainssl.datasets.transfer`) and the IXI specifics.

The IXI site publishes no checksums, so the packaged table (``ixi_checksums.tsv``) says
``unknown`` for every file. A file whose sha256 is unknown is pinned on its first complete
download into a JSON lock file (trust on first use); every later download or re-check must
then match the pinned value.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from brainssl.io import PathLike, sha256_file, write_json

__all__ = ["ChecksumEntry", "ChecksumError", "load_checksum_table"]

logger = logging.getLogger(__name__)

_UNKNOWN = "unknown"
_TABLE_COLUMNS = ("file", "size_bytes", "sha256", "note")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


class ChecksumError(RuntimeError):
    """A file's size or sha256 differs from the expected value; the bad file has been removed.

    The message names where the expected value comes from: the checksum table, or the lock
    file (with how to re-pin when the server's file changed on purpose).

    Attributes:
        file: the file name (as in the checksum table and lock file).
        kind: ``"sha256"`` or ``"size"``.
        expected: the expected value.
        actual: the value found.
        source: where the expected value comes from.
    """

    def __init__(
        self,
        file: str,
        kind: str,
        expected: str | int,
        actual: str | int,
        source: str,
        found_in: str = "the downloaded file",
        from_lock: bool = False,
    ) -> None:
        self.file = file
        self.kind = kind
        self.expected = expected
        self.actual = actual
        self.source = source
        hint = ""
        if from_lock:
            hint = (
                f"; the expected value was pinned in the lock file {source} on an earlier download: if "
                f"the server's {file} changed on purpose, delete its entry there to pin the new one"
            )
        super().__init__(
            f"{file}: {kind} mismatch: expected {expected} (from {source}), got {actual} "
            f"(from {found_in}); the file was removed, nothing with this name is kept{hint}"
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


def _unpin(lock_path: Path, name: str, sha256: str) -> bool:
    """Drop the pin of ``name`` if it holds ``sha256`` (a refused file); return whether it did."""
    with _exclusive(lock_path):
        lock = _read_lock(lock_path)
        if lock.get(name, {}).get("sha256") != sha256:
            return False
        del lock[name]
        write_json(lock_path, lock)
    logger.warning("%s: removed its pin %s from %s (the file was refused)", name, sha256, lock_path)
    return True


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
    source: str  # where sha256 comes from
    size_source: str = "the checksum table"

    @property
    def pinned(self) -> bool:
        """Whether the sha256 comes from the lock file (trust on first use), not the table."""
        return self.sha256 is not None and self.source != "the checksum table"

    @property
    def size_from_lock(self) -> bool:
        """Whether the size comes from the lock file."""
        return self.size is not None and self.size_source != "the checksum table"


def _expected_for(name: str, sha256: str | None, size: int | None, lock_path: Path | None) -> _Expected:
    if sha256 is not None:
        return _Expected(sha256.lower(), size, "the checksum table")
    if lock_path is not None:
        pinned = _read_lock(lock_path).get(name)
        if pinned is not None:
            lock_size = pinned.get("size")
            if size is not None:
                return _Expected(pinned["sha256"], size, str(lock_path), "the checksum table")
            return _Expected(pinned["sha256"], lock_size, str(lock_path), str(lock_path))
    return _Expected(None, size, "the checksum table")


def _verify(path: Path, name: str, expected: _Expected, lock_path: Path | None, *, pin: bool = True) -> str:
    """Check ``path`` against ``expected``; remove it and raise on a mismatch; pin if unknown.

    With ``pin=False`` an unknown sha256 is only computed; the caller pins it (:func:`_pin`)
    once it has accepted the file.
    """
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:
        path.unlink()
        raise ChecksumError(
            name, "size", expected.size, size, expected.size_source, from_lock=expected.size_from_lock
        )
    actual = sha256_file(path)
    if expected.sha256 is None:
        if lock_path is not None:
            if pin:
                _pin(lock_path, name, actual, size)
        else:
            logger.warning("%s: no sha256 known and no lock file given; not verified", name)
        return actual
    if actual != expected.sha256:
        path.unlink()
        raise ChecksumError(
            name, "sha256", expected.sha256, actual, expected.source, from_lock=expected.pinned
        )
    return actual
