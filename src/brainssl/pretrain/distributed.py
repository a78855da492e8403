"""Process-group set-up from torchrun's variables, or from SLURM's when torchrun's are absent.

How a pretraining job's processes start (one launcher per job, one process per GPU):

- A Snakemake job runs the rule's script once; :func:`brainssl.pretrain.pretrain_from_index`
  is the launcher. With ``nprocs = job_processes(resources)`` above one it spawns that many
  processes (``torch.multiprocessing``, start method spawn): rank = local rank, world size =
  ``nprocs``, rendezvous on 127.0.0.1 at a free port, each process on ``cuda:<local rank>``
  of the devices the job sees, or on the CPU with gloo. torchrun cannot be used: a ``script:``
  runs inside Snakemake's own job process, which it would have to wrap.
- The devices a job sees: under SLURM its allocation (``CUDA_VISIBLE_DEVICES`` set by SLURM);
  on a workstation the ones :mod:`brainssl.gpus` claims for its ``gpu`` resource.
- SLURM: snakemake-executor-plugin-slurm submits a job with ``gpu: N`` (``gpu_model``) as
  ``--gpus=[model:]N`` with one task and ``--cpus-per-task=<threads>``, and its job step
  starts the script once (``srun -n1``). Never give a GPU rule ``tasks`` or
  ``tasks_per_gpu``: the plugin turns them into ``--ntasks-per-gpu`` (threads CPUs for every
  task, and the script still started once per job).
- Several nodes: the plugin's job step is one task on one node, so a workflow job trains on
  one node's GPUs. Ranks started by ``srun`` (one task per GPU, any number of nodes) or by
  torchrun join one process group instead: :func:`init_distributed` reads RANK, WORLD_SIZE,
  LOCAL_RANK, MASTER_ADDR and MASTER_PORT, or derives them from SLURM_PROCID, SLURM_NTASKS,
  SLURM_LOCALID and the first host of SLURM_STEP_NODELIST (:func:`slurm_to_torchrun_env`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistEnv", "slurm_to_torchrun_env", "first_slurm_host", "init_distributed", "job_processes"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: rank, world size, local rank and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the one that writes files)."""
        return self.rank == 0


def first_slurm_host(nodelist: str) -> str:
    """Return the first host of a SLURM node list (``"gpu[03-05,9],cpu1"`` -> ``"gpu03"``)."""
    first = re.split(r",(?![^\[]*\])", nodelist.strip())[0]
    match = re.fullmatch(r"([^\[]*)\[([^\]]+)\](.*)", first)
    if not match:
        return first
    prefix, ranges, suffix = match.groups()
    return f"{prefix}{ranges.split(',')[0].split('-')[0]}{suffix}"


def job_processes(resources: Mapping[str, Any]) -> int:
    """How many training processes one job starts, from its Snakemake resources (read at job time).

    The ``processes`` resource when given (``--set-resources pretrain_moco:processes=2`` runs two
    gloo processes on the CPU), else one per GPU of the ``gpu`` resource (as Snakemake granted
    it: a local run scales a job's ``gpu`` down to the profile's total), else one. Resources
    are never rerun triggers, so changing the GPU count re-runs nothing.
    """
    for key in ("processes", "gpu"):
        value = resources.get(key)
        if value not in (None, "", 0, "0"):
            count = int(value)
            if count < 1:
                raise ValueError(f"resource {key}={value!r}: need a positive number of processes")
            return count
    return 1


def slurm_to_torchrun_env(env: Mapping[str, str]) -> dict[str, str]:
    """Derive RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT from SLURM's variables.

    Returns an empty dict when torchrun's variables are present or SLURM's are absent. The
    port is ``29500 + SLURM_JOB_ID % 1000`` unless ``MASTER_PORT`` is set.
    """
    if "RANK" in env and "WORLD_SIZE" in env:
        return {}
    if "SLURM_PROCID" not in env or "SLURM_NTASKS" not in env:
        return {}
    nodelist = (
        env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST", "")
    )
    return {
        "RANK": env["SLURM_PROCID"],
        "WORLD_SIZE": env["SLURM_NTASKS"],
        "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
        "MASTER_ADDR": env.get("MASTER_ADDR") or first_slurm_host(nodelist) or "127.0.0.1",
        "MASTER_PORT": env.get("MASTER_PORT") or str(29500 + int(env.get("SLURM_JOB_ID", "0")) % 1000),
    }


def init_distributed(device: str = "auto") -> DistEnv:
    """Join (or create) the default process group when the environment asks for several processes.

    Args:
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.

    Returns:
        The :class:`DistEnv`; ``owns_group`` is true when this call created the group.
    """
    want_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        return DistEnv(rank, world, local, _device(want_cuda, local))
    env = {**os.environ, **slurm_to_torchrun_env(os.environ)}
    world = int(env.get("WORLD_SIZE", "1"))
    rank, local = int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0"))
    dev = _device(want_cuda, local)
    if world == 1:
        return DistEnv(0, 1, 0, dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    init = f"tcp://{env.get('MASTER_ADDR', '127.0.0.1')}:{env.get('MASTER_PORT', '29500')}"
    dist.init_process_group(backend, init_method=init, rank=rank, world_size=world)
    logger.info("process group: rank %d/%d (%s) on %s", rank, world, backend, dev)
    return DistEnv(rank, world, local, dev, owns_group=True)


def _device(want_cuda: bool, local_rank: int) -> torch.device:
    if want_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but CUDA is not available")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")
