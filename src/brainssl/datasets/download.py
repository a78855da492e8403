"""Download and unpack the public IXI archives, resumably, verifiably and safely.

The generic pieces live in sibling modules: expected checksums and the trust-on-first-use
lock (:mod:`brainssl.datasets.checksums`), the resumable HTTP transfer
(:mod:`brainssl.datasets.transfer`) and the safe tar extraction
(:mod:`brainssl.datasets.archive`). This module holds what is specific to IXI: its URLs,
archive names and the lock file ``ixi.lock.json`` in the download folder.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from brainssl.io import PathLike

from .archive import _extraction_complete, safe_extract_tar
from .checksums import ChecksumEntry, _expected_for, load_checksum_table
from .transfer import DEFAULT_CHUNK_SIZE, DEFAULT_RETRIES, DEFAULT_TIMEOUT_S, DownloadResult, download_file

__all__ = [
    "DEFAULT_IXI_BASE_URL",
    "IXI_CONTRASTS",
    "IXI_DEMOGRAPHICS",
    "LOCK_FILE_NAME",
    "fetch_ixi",
]

logger = logging.getLogger(__name__)

#: Where the IXI archives live (plain HTTP, no login).
DEFAULT_IXI_BASE_URL = "http://biomedic.doc.ic.ac.uk/brain-development/downloads/IXI/"
#: Contrasts with an archive ``IXI-<contrast>.tar`` on the IXI site.
IXI_CONTRASTS: tuple[str, ...] = ("T1", "T2", "PD", "MRA", "DTI")
#: The demographics spreadsheet downloaded alongside the archives.
IXI_DEMOGRAPHICS = "IXI.xls"
#: Lock file (in the download folder) holding sha256 values pinned on first use.
LOCK_FILE_NAME = "ixi.lock.json"


def _check_contrasts(contrasts: Iterable[str]) -> list[str]:
    chosen = list(dict.fromkeys(contrasts))
    unknown = [m for m in chosen if m not in IXI_CONTRASTS]
    if unknown:
        raise ValueError(f"unknown IXI contrast {unknown}; choose from {list(IXI_CONTRASTS)}")
    if not chosen:
        raise ValueError("contrasts is empty; choose from " + str(list(IXI_CONTRASTS)))
    return chosen


def _url(base_url: str, name: str) -> str:
    return urllib.parse.urljoin(base_url if base_url.endswith("/") else base_url + "/", name)


def fetch_ixi(
    dest_dir: PathLike,
    contrasts: Sequence[str] = ("T1", "T2", "PD"),
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

    Idempotent: a contrast whose folder carries a complete-marker for the expected archive
    sha256 (from the table or the lock file) is skipped without any request, and files that
    are already present are re-checked locally instead of fetched again.

    An archive is unpacked before its sha256 is pinned in the lock file and before it gets its
    final name. One that is refused (an unsafe member, or not a readable tar) is removed and
    not pinned (a pin of it from an earlier run is dropped), so the next run downloads it
    again and succeeds once the server serves a good archive. A mismatch with a pinned value
    names the lock file.

    Args:
        dest_dir: download folder; receives ``IXI-<mod>.tar``, ``IXI-<mod>/``, ``IXI.xls`` and
            the lock file :data:`LOCK_FILE_NAME`.
        contrasts: any of :data:`IXI_CONTRASTS`.
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
        ValueError: on an unknown contrast.
        DownloadError: when a transfer fails for good.
        ChecksumError: when a file does not match its table or lock entry.
        UnsafeArchiveError: when an archive holds an unsafe member.
        CorruptArchiveError: when an archive is not a readable tar.
    """
    chosen = _check_contrasts(contrasts)
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

    def fetch(name: str, accept: Callable[[Path, str], None] | None = None) -> DownloadResult:
        entry = table.get(name)
        return download_file(
            _url(base_url, name),
            dest / name,
            expected_sha256=entry.sha256 if entry else None,
            expected_size=entry.size_bytes if entry else None,
            accept=accept,
            **options,
        )

    if demographics:
        fetch(IXI_DEMOGRAPHICS)
    for contrast in chosen:
        archive_name = f"IXI-{contrast}.tar"
        out_dir = dest / f"IXI-{contrast}"
        entry = table.get(archive_name)
        known = _expected_for(archive_name, entry.sha256 if entry else None, None, lock_path).sha256
        if _extraction_complete(out_dir, known):
            logger.info("%s: already extracted from %s; skipping", out_dir, archive_name)
            continue

        def unpack(
            path: Path, sha256: str, out_dir: Path = out_dir, archive_name: str = archive_name
        ) -> None:
            if not _extraction_complete(out_dir, sha256):
                safe_extract_tar(
                    path,
                    out_dir,
                    strip_prefix=out_dir.name,
                    archive_sha256=sha256,
                    chunk_size=chunk_size,
                    archive_name=archive_name,
                )

        result = fetch(archive_name, accept=unpack)
        if not keep_archives:
            result.path.unlink()
    return dest
