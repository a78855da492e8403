"""The one bridge between Snakemake's ``snakemake`` script object and the package.

Workflow scripts are adapters of a few lines::

    with job_context(snakemake, stage="datasets") as job:
        build_manifest(..., seed=job.seed)

Only this module knows the ``snakemake`` object. It points logging at the
rule's ``log:`` file, logs the traceback of a failure there, and on success
writes the provenance sidecar declared as the output named ``prov``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from brainssl.gpus import job_gpus
from brainssl.logs import configure_logging
from brainssl.provenance import record_provenance

__all__ = ["Job", "job_context"]

logger = logging.getLogger(__name__)


@dataclass
class Job:
    """What a running rule needs to know, independent of Snakemake."""

    rule: str
    stage: str
    params: dict[str, Any]
    seed: int | None
    threads: int
    started: dt.datetime
    extra: dict[str, Any] = field(default_factory=dict)
    """Facts the job adds for its provenance record (counts, metrics)."""


def _named_items(namedlist: Any) -> dict[str, Any]:
    return dict(namedlist.items()) if hasattr(namedlist, "items") else {}


def _flat_paths(namedlist: Any) -> list[str]:
    return [str(p) for p in namedlist]


@contextlib.contextmanager
def job_context(smk: Any, stage: str | None = None) -> Iterator[Job]:
    """Run the body of a workflow script with logging and provenance in place.

    Args:
        smk: the ``snakemake`` object Snakemake injects into scripts.
        stage: the stage name; defaults to the rule name's prefix (``slices_filter`` -> ``slices``).

    Yields:
        A :class:`Job` describing the rule.
    """
    configure_logging(smk.log[0] if len(smk.log) else None)
    params = {key: value for key, value in _named_items(smk.params).items() if key != "_names"}
    job = Job(
        rule=smk.rule,
        stage=stage or smk.rule.split("_", 1)[0],
        params=params,
        seed=params.get("seed"),
        threads=int(smk.threads),
        started=dt.datetime.now(dt.UTC),
    )
    _limit_threads(job.threads)
    logger.info("rule %s started (threads=%d)", job.rule, job.threads)
    # a local job's `gpu` resource becomes its own devices (CUDA_VISIBLE_DEVICES; see brainssl.gpus)
    job_gpus(int(_named_items(getattr(smk, "resources", None)).get("gpu", 0) or 0))
    try:
        yield job
    except BaseException:
        logger.exception("rule %s failed", job.rule)
        raise
    outputs = _named_items(smk.output)
    prov = outputs.get("prov")
    if prov is not None:
        record_provenance(
            prov,
            stage=job.stage,
            config=job.params,
            inputs=_flat_paths(smk.input),
            seed=job.seed,
            started=job.started,
            outputs=[p for p in _flat_paths(smk.output) if p != str(prov)],
            extra=job.extra,
        )
    elapsed = (dt.datetime.now(dt.UTC) - job.started).total_seconds()
    logger.info("rule %s finished in %.1f s", job.rule, elapsed)


def _limit_threads(threads: int) -> None:
    """Keep numerical libraries within the cores Snakemake granted the job.

    torch is configured only when the job has already imported it; otherwise the
    OpenMP variable is set, which torch reads when it is imported later. Importing
    torch here would cost every job that never uses it a second or two.
    """
    count = max(1, threads)
    os.environ["OMP_NUM_THREADS"] = str(count)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(count)
