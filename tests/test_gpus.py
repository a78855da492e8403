"""Local GPU assignment (brainssl.gpus) on the CPU, with fake device ids, and job_processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO

from brainssl import gpus
from brainssl.pretrain.distributed import job_processes


@pytest.fixture(autouse=True)
def _release_claims():
    yield
    for claim in gpus._HELD:
        claim.release()
    gpus._HELD.clear()


def test_two_jobs_get_different_devices_and_a_third_waits(tmp_path):
    first = gpus.claim_gpus(1, ["3", "5"], folder=tmp_path)
    second = gpus.claim_gpus(1, ["3", "5"], folder=tmp_path)
    assert first.devices == ["3"] and second.devices == ["5"]
    with pytest.raises(RuntimeError, match="no 1 free GPU"):
        gpus.claim_gpus(1, ["3", "5"], folder=tmp_path, timeout=0.2, poll=0.05)
    second.release()
    assert gpus.claim_gpus(1, ["3", "5"], folder=tmp_path).devices == ["5"]


def test_a_job_gets_distinct_devices_and_no_more_than_the_machine_has(tmp_path):
    held = gpus.claim_gpus(2, ["a", "b", "c"], folder=tmp_path)
    assert held.devices == ["a", "b"]
    with pytest.raises(RuntimeError, match="asks for 3 GPU"):
        gpus.claim_gpus(3, ["x", "y"], folder=tmp_path)
    # a partial claim is let go: with c alone free, a 2-GPU job waits and holds nothing
    with pytest.raises(RuntimeError):
        gpus.claim_gpus(2, ["a", "b", "c"], folder=tmp_path, timeout=0.1, poll=0.05)
    assert gpus.claim_gpus(1, ["a", "b", "c"], folder=tmp_path).devices == ["c"]


def test_jobs_per_gpu_lets_two_jobs_share_one_device(tmp_path):
    one = gpus.claim_gpus(1, ["0"], folder=tmp_path, jobs_per_gpu=2)
    two = gpus.claim_gpus(1, ["0"], folder=tmp_path, jobs_per_gpu=2)
    assert one.devices == two.devices == ["0"]
    with pytest.raises(RuntimeError):
        gpus.claim_gpus(1, ["0"], folder=tmp_path, jobs_per_gpu=2, timeout=0.1, poll=0.05)


def test_a_killed_job_frees_its_device(tmp_path):
    holder = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(REPO / "src")!r})
        from pathlib import Path
        from brainssl import gpus
        claim = gpus.claim_gpus(1, ["0"], folder=Path({str(tmp_path)!r}))
        print("held", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError):
            gpus.claim_gpus(1, ["0"], folder=tmp_path, timeout=0.1, poll=0.05)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    start = time.monotonic()
    assert gpus.claim_gpus(1, ["0"], folder=tmp_path, timeout=5, poll=0.05).devices == ["0"]
    assert time.monotonic() - start < 5


def test_job_gpus_exports_only_the_claimed_devices(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "6,7", "BRAINSSL_GPU_LOCKS": str(tmp_path)}
    assert gpus.job_gpus(1, env) == ["6"]
    assert env["CUDA_VISIBLE_DEVICES"] == "6" and "CUDA_DEVICE_ORDER" not in env  # the user's order kept
    other = {"CUDA_VISIBLE_DEVICES": "6,7", "BRAINSSL_GPU_LOCKS": str(tmp_path)}
    assert gpus.job_gpus(1, other) == ["7"] and other["CUDA_VISIBLE_DEVICES"] == "7"
    # nothing to claim: no GPU asked for, a SLURM job (its allocation isolates it), switched off
    for count, extra in ((0, {}), (1, {"SLURM_JOB_ID": "12"}), (1, {"BRAINSSL_GPU_ASSIGN": "0"})):
        quiet = {"CUDA_VISIBLE_DEVICES": "6,7", "BRAINSSL_GPU_LOCKS": str(tmp_path), **extra}
        assert gpus.job_gpus(count, quiet) is None and quiet["CUDA_VISIBLE_DEVICES"] == "6,7"


def test_the_pool_comes_from_the_environment_or_nvidia_smi():
    assert gpus.device_pool({"CUDA_VISIBLE_DEVICES": "GPU-aa, GPU-bb"}) == ["GPU-aa", "GPU-bb"]
    assert gpus.device_pool({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert gpus.device_pool({}, lister=lambda: ["0", "1", "2"]) == ["0", "1", "2"]


def test_job_context_claims_the_jobs_gpu_resource(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from brainssl.jobs import job_context

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,9")
    monkeypatch.setenv("BRAINSSL_GPU_LOCKS", str(tmp_path))
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    smk = SimpleNamespace(
        log=[str(tmp_path / "job.log")],
        params={},
        rule="pretrain_moco",
        threads=1,
        resources={"gpu": 1},
        output={},
        input=[],
    )
    with job_context(smk):
        import os

        assert os.environ["CUDA_VISIBLE_DEVICES"] == "4"


def test_processes_come_from_resources_at_job_time():
    assert job_processes({}) == 1
    assert job_processes({"gpu": 4}) == 4
    assert job_processes({"gpu": 4, "processes": 2}) == 2
    assert job_processes({"gpu": 0, "processes": 0}) == 1
    with pytest.raises(ValueError, match="positive"):
        job_processes({"processes": -1})
