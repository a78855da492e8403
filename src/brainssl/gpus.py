"""GPUs for local jobs: each job claims the devices it was given, so that two never share one.

Snakemake counts a ``gpu`` resource (``profiles/local`` declares the machine's total) but does
not say *which* GPUs a job may use, and every CUDA process sees them all. A job that declares
``gpu: n`` therefore claims ``n`` devices from a pool of lock files before CUDA starts
(:func:`brainssl.jobs.job_context` does it) and exports them as ``CUDA_VISIBLE_DEVICES``; its
DDP processes see only those, as ``cuda:0`` to ``cuda:n-1``. The locks are ``flock`` locks on
open files, held until the job's process exits (a killed job frees its GPUs with it).

The pool is the devices of ``CUDA_VISIBLE_DEVICES`` when it is set for the run (a user's
restriction), else every GPU ``nvidia-smi`` lists. Under SLURM nothing is claimed: the
allocation already limits the job to its GPUs. Environment variables:

- ``BRAINSSL_GPU_LOCKS``: the lock folder (default ``<tmp>/brainssl-gpus``, one per machine).
- ``BRAINSSL_JOBS_PER_GPU``: jobs that may share one GPU (default 1; with 2, declare twice the
  GPUs in the profile).
- ``BRAINSSL_GPU_ASSIGN=0``: claim nothing (every job sees every GPU).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

__all__ = ["GpuClaim", "claim_gpus", "device_pool", "job_gpus"]

logger = logging.getLogger(__name__)

#: Claims this process holds (their files must stay open until it exits).
_HELD: list[GpuClaim] = []


class GpuClaim:
    """Devices one job holds: their ids and the open, locked files that hold them."""

    def __init__(self, devices: Sequence[str], handles: Sequence[IO[str]]) -> None:
        self.devices = list(devices)
        self._handles = list(handles)

    def release(self) -> None:
        """Unlock and close (also done by the process's exit)."""
        for handle in self._handles:
            with contextlib.suppress(OSError):
                fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        self._handles.clear()

    def __del__(self) -> None:  # a claim nobody holds any more frees its devices
        self.release()


def device_pool(
    environ: Mapping[str, str] | None = None, lister: Callable[[], list[str]] | None = None
) -> list[str]:
    """The device ids jobs share: ``CUDA_VISIBLE_DEVICES`` when set, else what ``nvidia-smi`` lists."""
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    return (lister or _nvidia_smi_indices)()


def _nvidia_smi_indices() -> list[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def _lock_folder(environ: Mapping[str, str]) -> Path:
    folder = Path(environ.get("BRAINSSL_GPU_LOCKS") or Path(tempfile.gettempdir()) / "brainssl-gpus")
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # other users' jobs share the machine's GPUs too
        folder.chmod(0o1777)
    return folder


def _try_lock(path: Path) -> IO[str] | None:
    handle = open(path, "a+")  # held open (locked) for the life of the job
    with contextlib.suppress(OSError):
        os.chmod(path, 0o666)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        handle.close()
        if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        raise
    return handle


def claim_gpus(
    count: int,
    pool: Sequence[str],
    *,
    folder: Path,
    jobs_per_gpu: int = 1,
    timeout: float = 24 * 3600.0,
    poll: float = 2.0,
) -> GpuClaim:
    """Lock ``count`` distinct devices of ``pool`` (waiting while others hold them).

    Args:
        count: devices the job declared.
        pool: device ids (indices or UUIDs), in order of preference.
        folder: where the lock files live (shared by every job on the machine).
        jobs_per_gpu: slots per device.
        timeout: seconds to wait for free devices before failing.
        poll: seconds between attempts.

    Raises:
        RuntimeError: ``count`` exceeds the pool, or no devices freed up within ``timeout``.
    """
    if count > len(pool):
        raise RuntimeError(
            f"the job asks for {count} GPU(s) but this machine offers {len(pool)} "
            f"({','.join(pool) or 'none'}); lower the job's gpu setting or the profile's `gpu` resource"
        )
    deadline = time.monotonic() + timeout
    waited = False
    while True:
        devices: list[str] = []
        handles: list[IO[str]] = []
        for device in pool:
            for slot in range(max(1, jobs_per_gpu)):
                name = device.replace("/", "_")
                handle = _try_lock(folder / f"gpu-{name}.{slot}.lock")
                if handle is not None:
                    devices.append(device)
                    handles.append(handle)
                    break
            if len(devices) == count:
                return GpuClaim(devices, handles)
        for handle in handles:  # not enough now: let go of the partial claim and wait
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {count} free GPU(s) of {','.join(pool)} within {timeout:.0f} s")
        if not waited:
            logger.info("waiting for %d free GPU(s) of %s (held by other jobs)", count, ",".join(pool))
            waited = True
        time.sleep(poll * random.uniform(0.5, 1.5))  # jitter: two waiting jobs do not retry in step


def job_gpus(count: int, environ: dict[str, str] | None = None) -> list[str] | None:
    """Claim a local job's GPUs and export them as ``CUDA_VISIBLE_DEVICES`` (call before CUDA starts).

    Returns:
        The devices claimed, or None when nothing was claimed (no GPU asked for, a SLURM job,
        assignment switched off, or a machine without GPUs).
    """
    environ = os.environ if environ is None else environ
    if count <= 0 or "SLURM_JOB_ID" in environ or environ.get("BRAINSSL_GPU_ASSIGN", "1") == "0":
        return None
    from_smi = "CUDA_VISIBLE_DEVICES" not in environ
    pool = device_pool(environ)
    if not pool:
        logger.warning("the job asks for %d GPU(s) but none is visible; it runs on what it finds", count)
        return None
    claim = claim_gpus(
        count,
        pool,
        folder=_lock_folder(environ),
        jobs_per_gpu=int(environ.get("BRAINSSL_JOBS_PER_GPU", "1")),
    )
    _HELD.append(claim)
    environ["CUDA_VISIBLE_DEVICES"] = ",".join(claim.devices)
    if from_smi:
        environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # the order nvidia-smi numbers them in
    logger.info("GPUs %s claimed (CUDA_VISIBLE_DEVICES)", ",".join(claim.devices))
    return claim.devices
