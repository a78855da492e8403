"""The test config through a real one-node SLURM cluster on 127.0.0.1, every job via sbatch."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import BIN, REPO

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
START = REPO / "tools/local-slurm/start.sh"
STOP = REPO / "tools/local-slurm/stop.sh"


@pytest.fixture(scope="module")
def slurm_cluster():
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("starting a local SLURM cluster needs root and apt-get (Debian)")
    # The daemons run as user slurm: their state folder must not sit in pytest's private tmp.
    state = Path(tempfile.mkdtemp(prefix="brainssl-slurm-", dir="/tmp"))
    state.chmod(0o755)
    env = dict(os.environ, BRAINSSL_SLURM_DIR=str(state))
    started = subprocess.run(
        ["timeout", "-k", "10", "400", str(START)], env=env, capture_output=True, text=True
    )
    try:
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        yield env
    finally:
        subprocess.run(["timeout", "-k", "5", "120", str(STOP)], env=env, capture_output=True, text=True)
        shutil.rmtree(state, ignore_errors=True)


def _snakemake_slurm(workdir, config, env, seconds):
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
    ]
    env = dict(env, PATH=f"{BIN}{os.pathsep}{env['PATH']}")
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)


def test_test_config_runs_through_sbatch(slurm_cluster, tmp_path):
    config = tmp_path / "config.yaml"
    shutil.copy(REPO / "config/test.yaml", config)
    result = _snakemake_slurm(tmp_path, config, slurm_cluster, 1500)
    assert result.returncode == 0, result.stderr[-5000:]
    assert (tmp_path / "results/datasets/manifest.tsv").is_file()
    assert len(pd.read_csv(tmp_path / "results/datasets/manifest.tsv", sep="\t")) > 0
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
    for name in ("brats21", "fastmri_brain", "oasis3", "tumor4", "hippocampus"):
        cfg["datasets"][name]["enabled"] = False
    cfg["datasets"]["ixi"] = {"source": "local", "path": str(empty)}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    result = _snakemake_slurm(tmp_path, config, slurm_cluster, 600)
    assert result.returncode != 0
    assert "failed" in result.stderr and "SLURM" in result.stderr, result.stderr[-3000:]
    assert not (tmp_path / "results/datasets/ixi/manifest.tsv").exists()
