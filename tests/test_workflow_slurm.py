"""The test config through a real one-node SLURM cluster on 127.0.0.1, every job via sbatch."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import BIN, REPO

from brainssl.pretrain import load_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
START = REPO / "tools/local-slurm/start.sh"
STOP = REPO / "tools/local-slurm/stop.sh"
#: What start.sh installs that holds SLURM's client tools or needs them (MariaDB and munge stay).
SLURM_PACKAGES = ("slurm-client", "slurmctld", "slurmd", "slurmdbd")


@pytest.fixture(scope="module")
def slurm_cluster():
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("starting a local SLURM cluster needs root and apt-get (Debian)")
    # The daemons run as user slurm: their state folder must not sit in pytest's private tmp.
    state = Path(tempfile.mkdtemp(prefix="brainssl-slurm-", dir="/tmp"))
    state.chmod(0o755)
    env = dict(os.environ, BRAINSSL_SLURM_DIR=str(state))
    had_client = shutil.which("scontrol") is not None
    started = subprocess.run(
        ["timeout", "-k", "10", "400", str(START)], env=env, capture_output=True, text=True
    )
    try:
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        yield env
    finally:
        subprocess.run(["timeout", "-k", "5", "120", str(STOP)], env=env, capture_output=True, text=True)
        shutil.rmtree(state, ignore_errors=True)
        if not had_client:  # client tools left without a controller delay every later snakemake ~9 s
            subprocess.run(["apt-get", "remove", "-y", "-qq", *SLURM_PACKAGES], capture_output=True)


def _snakemake_slurm(workdir, config, env, seconds, *extra):
    cmd = [
        "timeout",
        "-k",
        "10",
        str(seconds),
        str(BIN / "snakemake"),
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--profile",
        str(REPO / "profiles/slurm"),
        "--configfile",
        str(config),
        # a group's cpus add up; --cores caps them at what this 2-core node has
        "--cores",
        "2",
        # a one-node test cluster answers at once: poll it every 2 s, not after 40 s then every 10 s
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--seconds-between-status-checks",
        "2",
        *extra,
    ]
    env = dict(env, PATH=f"{BIN}{os.pathsep}{env['PATH']}")
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)


def _threads_by_slurm_job(log: str) -> dict[str, tuple[str, int]]:
    """SLURM job id -> (rule, threads) of every single-rule job Snakemake submitted (its log)."""
    declared = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", log):
        head = re.match(r"(?:local)?rule (\w+):\n", block)
        jobid = re.search(r"^    jobid: (\d+)$", block, re.M)
        if head and jobid:
            threads = re.search(r"^    threads: (\d+)$", block, re.M)
            declared[jobid.group(1)] = (head.group(1), int(threads.group(1)) if threads else 1)
    submitted = re.findall(r"Job (\S+) has been submitted with SLURM jobid (\d+)", log)
    return {slurm: declared[job] for job, slurm in submitted if job in declared}


#: What the SLURM run builds: MoCo v3 trained by two gloo processes, from IXI's raw files up,
#: every stage before it a job of its own through sbatch. More datasets, or the whole test config,
#: only add jobs of the same kinds (each a fresh Snakemake's start-up: 800 s for the whole config).
SLURM_DATASETS = ("ixi",)
SLURM_TARGET = "results/pretrain/moco-vit_tiny/encoder.safetensors"


def _datasets(cfg: dict) -> list[str]:
    """The datasets a config's section names (each a mapping with a source), not its settings."""
    return [name for name, entry in cfg["datasets"].items() if isinstance(entry, dict) and "source" in entry]


@pytest.mark.timeout(1200)  # above the run's own 900 s limit, so that limit reports the failure
def test_the_test_config_through_pretraining_runs_through_sbatch(slurm_cluster, tmp_path):
    config = tmp_path / "test.yaml"
    cfg = yaml.safe_load((REPO / "config/test.yaml").read_text())
    for name in _datasets(cfg):
        cfg["datasets"][name]["enabled"] = name in SLURM_DATASETS
    config.write_text(yaml.safe_dump(cfg))
    # MoCo trains with two gloo processes on two CPUs: our launcher inside one sbatch job
    two = ("--set-resources", "pretrain_moco:processes=2", "--set-threads", "pretrain_moco=2")
    result = _snakemake_slurm(tmp_path, config, slurm_cluster, 900, SLURM_TARGET, *two)
    assert result.returncode == 0, result.stderr[-5000:]
    state = load_checkpoint(tmp_path / "results/pretrain/moco-vit_tiny/checkpoints/last.pt")
    assert state["position"]["world_size"] == 2
    # every job got the CPUs its rule declares (threads), not a profile default
    jobs = _threads_by_slurm_job(result.stderr)
    cpus = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "JobID,ReqCPUS,AllocCPUS", "-j", ",".join(jobs)],
        capture_output=True,
        text=True,
    )
    rows = {line.split("|")[0]: line.split("|")[1:] for line in cpus.stdout.splitlines() if line}
    table = sorted((rule, threads, *rows[slurm]) for slurm, (rule, threads) in jobs.items())
    print("rule, threads, ReqCPUS, AllocCPUS:", *sorted(set(table)), sep="\n  ")
    stages = {"datasets_finalize", "preprocess_shard", "preprocess_merge", "slices_shard", "slices_merge"}
    assert {rule for rule, *_ in table} >= stages | {"pretrain_moco"}, table  # each stage a job of its own
    assert {threads for _, threads, _, _ in table} == {1, 2}, table
    assert all(str(threads) == req == alloc for _, threads, req, alloc in table), table
    for name in SLURM_DATASETS:  # the target needs each dataset's manifest, not the merged one
        assert len(pd.read_csv(tmp_path / f"results/datasets/{name}/manifest.tsv", sep="\t")) > 0
    submitted = result.stderr.count("has been submitted with SLURM jobid")
    assert submitted >= 5, result.stderr[-3000:]
    accounting = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "JobID,State"], capture_output=True, text=True
    )
    states = [line.split("|")[1] for line in accounting.stdout.splitlines() if line]
    assert states and states.count("COMPLETED") >= submitted, accounting.stdout


def test_a_failing_job_is_reported_as_failed(slurm_cluster, tmp_path):
    """A dataset pointed at an empty folder fails its manifest job; SLURM and Snakemake say so."""
    empty = tmp_path / "no-ixi-here"
    empty.mkdir()
    cfg = yaml.safe_load((REPO / "config/test.yaml").read_text())
    for name in _datasets(cfg):
        cfg["datasets"][name]["enabled"] = False
    cfg["datasets"]["ixi"] = {"source": "local", "path": str(empty)}
    config = tmp_path / "test.yaml"
    config.write_text(yaml.safe_dump(cfg))
    result = _snakemake_slurm(tmp_path, config, slurm_cluster, 600, "--retries", "0")  # fail once
    assert result.returncode != 0
    assert "failed" in result.stderr and "SLURM" in result.stderr, result.stderr[-3000:]
    assert not (tmp_path / "results/datasets/ixi/manifest.tsv").exists()


def test_srun_tasks_rendezvous_from_slurm_variables(slurm_cluster, tmp_path):
    """Two srun tasks form one gloo group from SLURM's variables alone (the multi-node path, one node)."""
    env = dict(slurm_cluster, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    worker = [
        sys.executable,
        str(REPO / "tests/pretrain_worker.py"),
        "moco",
        str(tmp_path),
        json.dumps({"epochs": 1}),
    ]
    srun = ["srun", "--ntasks=2", "--cpus-per-task=1", "--mem-per-cpu=1500", "--kill-on-bad-exit=1"]
    done = subprocess.run(
        ["timeout", "-k", "10", "300", *srun, *worker], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 2 and all(s["status"] == "completed" for s in summaries), done.stdout
    hashes = sorted(p.read_text() for p in tmp_path.glob("params-rank*.txt"))
    assert len(hashes) == 2 and hashes[0] == hashes[1]  # DDP kept the two ranks identical
    assert load_checkpoint(tmp_path / "checkpoints/last.pt")["position"]["world_size"] == 2
