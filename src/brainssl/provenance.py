"""Provenance records: what produced an output, so every number can be traced back.

One function, :func:`record_provenance`, is used by every stage. It writes a
JSON sidecar beside an output (or returns a flat row for a per-stage table when
outputs are many and small). The ``provenance_hash`` covers only what
determines the output's content — stage, config slice, input checksums, code
version and seed — so equal inputs and config give equal hashes, while host
and timing are recorded but do not enter the hash.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import os
import platform
import socket
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from brainssl import __version__
from brainssl.io import sha256_file, write_json

__all__ = [
    "canonical_hash",
    "code_version",
    "hash_inputs",
    "library_versions",
    "record_provenance",
    "flatten_record",
]

_PACKAGE_DIR = Path(__file__).resolve().parent


def canonical_hash(obj: Any) -> str:
    """Return the sha256 of ``obj`` serialised as canonical (sorted, compact) JSON."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """Return the package version, the git commit of the source tree and whether it is dirty.

    Outside a git checkout (an installed wheel) commit and dirty are ``None``.
    Generated and ignored files do not make the tree dirty.
    """
    record: dict[str, Any] = {"package": __version__, "git_commit": None, "git_dirty": None}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_PACKAGE_DIR, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return record
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_PACKAGE_DIR,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return record
    record["git_commit"] = commit.stdout.strip()
    record["git_dirty"] = bool(status.stdout.strip())
    return record


def library_versions() -> dict[str, str]:
    """Return the versions of the libraries whose behaviour shapes the outputs."""
    import sys
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": sys.version.split()[0]}
    for name in ("torch", "monai", "numpy", "nibabel", "SimpleITK", "snakemake"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "absent"
    return versions


def hash_inputs(paths: Iterable[str | os.PathLike[str]]) -> dict[str, str]:
    """Return ``{path: sha256}`` for each input file; folders hash their sorted file listing."""
    hashes: dict[str, str] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            listing = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
            hashes[str(raw)] = "dir:" + canonical_hash(listing)
        else:
            hashes[str(raw)] = sha256_file(path)
    return hashes


def record_provenance(
    target: str | os.PathLike[str] | None,
    *,
    stage: str,
    config: Mapping[str, Any],
    inputs: Iterable[str | os.PathLike[str]] = (),
    seed: int | None = None,
    started: _dt.datetime,
    ended: _dt.datetime | None = None,
    outputs: Iterable[str | os.PathLike[str]] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the provenance record of one output and write it to ``target`` as JSON.

    Args:
        target: the sidecar path (``*.json``); ``None`` only builds the record, for
            stages that keep one row per item in a table (see :func:`flatten_record`).
        stage: the workflow stage (``datasets``, ``preprocess``, ...).
        config: the config slice the output depends on (exactly what the rule's
            params hold, so Snakemake's params trigger and this record agree).
        inputs: input files (or folders); their sha256 enter the hash.
        seed: the random seed used, if any.
        started: when the work began (UTC).
        ended: when it ended; defaults to now.
        outputs: output paths to list in the record (not hashed).
        extra: stage-specific facts to keep (counts, metrics); not hashed.

    Returns:
        The record, including ``provenance_hash``.
    """
    ended = ended or _dt.datetime.now(_dt.UTC)
    input_hashes = hash_inputs(inputs)
    code = code_version()
    hashed = {
        "stage": stage,
        "config_hash": canonical_hash(dict(config)),
        "inputs": input_hashes,
        "code": {"package": code["package"], "git_commit": code["git_commit"]},
        "seed": seed,
    }
    record: dict[str, Any] = {
        "stage": stage,
        "config": dict(config),
        "config_hash": hashed["config_hash"],
        "inputs": input_hashes,
        "outputs": [str(p) for p in outputs],
        "code": code,
        "seed": seed,
        "libraries": library_versions(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "started": started.isoformat(),
        "ended": ended.isoformat(),
        "provenance_hash": canonical_hash(hashed),
    }
    if extra:
        record["extra"] = dict(extra)
    if target is not None:
        write_json(target, record)
    return record


def flatten_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten a record into one table row (nested parts as compact JSON strings)."""
    row: dict[str, Any] = {}
    for key, value in record.items():
        row[key] = json.dumps(value, sort_keys=True, default=str) if isinstance(value, dict | list) else value
    return row
