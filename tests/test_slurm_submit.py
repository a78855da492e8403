"""The sbatch command snakemake-executor-plugin-slurm builds for a GPU pretraining job, no cluster.

Snakemake runs the workflow through profiles/slurm with a stand-in `sbatch` (and silent
`sacct`/`squeue`/`scontrol`) first on PATH; `--allowed-rules pretrain_moco` with the run's
inputs present makes the pretraining job the only one. The recorded call shows the GPU request
and the task layout: one task with all the rule's threads, so the job step starts the script
once and the script starts one process per GPU.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time

import pytest
import yaml
from conftest import BIN, REPO

SBATCH = """#!/bin/sh
printf '%s\\n' "$*" >> "$CALLS"
echo 4242
"""
SILENT = "#!/bin/sh\nexit 0\n"


@pytest.fixture
def sbatch_call(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text(SBATCH)
    for tool in ("sacct", "squeue", "scontrol", "sinfo", "sacctmgr", "sshare", "scancel"):
        (fake / tool).write_text(SILENT)
    for tool in fake.iterdir():
        tool.chmod(0o755)
    cfg = yaml.safe_load((REPO / "config/test.yaml").read_text())
    cfg["pretrain"]["resources"].update(gpus=2, gpu_model="a100", threads=8, mem_mb=16000, runtime=120)
    work = tmp_path / "run"
    (work / "results/slices").mkdir(parents=True)
    (work / "results/slices/index.parquet").write_bytes(b"")
    (work / "results/pretrain/random-vit_tiny").mkdir(parents=True)
    (work / "results/pretrain/random-vit_tiny/model_card.json").write_text("{}")
    config = work / "test.yaml"
    config.write_text(yaml.safe_dump(cfg))
    calls = tmp_path / "sbatch.calls"
    env = dict(os.environ, PATH=f"{fake}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}", CALLS=str(calls))
    env.pop("SLURM_JOB_ID", None)
    cmd = [
        str(BIN / "snakemake"),
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(work),
        "--profile",
        str(REPO / "profiles/slurm"),
        "--configfile",
        str(config),
        "--allowed-rules",
        "pretrain_moco",
        "--slurm-init-seconds-before-status-checks",
        "1",
        "results/pretrain/moco-vit_tiny/encoder.safetensors",
    ]
    log = subprocess.PIPE
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (calls.is_file() and calls.read_text().strip()) and proc.poll() is None:
            assert time.monotonic() < deadline, "no sbatch call within 120 s"
            time.sleep(0.2)
    finally:
        proc.kill()  # it would poll the stand-in sacct for ever; the call is all we need
        out, _ = proc.communicate()
    assert calls.is_file(), out[-3000:]
    return calls.read_text().splitlines()[0]


def test_a_gpu_rule_asks_for_its_gpus_and_one_task_with_its_threads(sbatch_call):
    args = shlex.split(sbatch_call.split(" --wrap=")[0])
    assert "--gpus=a100:2" in args, sbatch_call
    assert "--cpus-per-task=8" in args and "--mem" in args and "16000" in args, sbatch_call
    assert "rule_pretrain_moco_wildcards_vit_tiny" in args  # --comment: what sacct shows per job
    # one task: no --ntasks* at all, so SLURM's default of one task holds every CPU and GPU and the
    # plugin's job step (srun -n1) starts the script once; it spawns one process per GPU
    assert not [a for a in args if a.startswith(("--ntasks", "--gpus-per-task", "--cpus-per-gpu"))], args
    assert "--executor slurm-jobstep" in sbatch_call
