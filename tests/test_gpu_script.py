"""benchmarks/gpu.sh --dry: every part of the GPU check on the CPU at a tiny size (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO


def run_dry(tmp_path, *parts: str) -> dict:
    out = tmp_path / "gpu.json"
    cmd = [str(REPO / "benchmarks/gpu.sh"), "--dry", "--out", str(out), "--cores", "1"]
    cmd += ["--parts", ",".join(parts)] if parts else []
    env = dict(os.environ, PYTHON=sys.executable)
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return json.loads(out.read_text())


def test_dry_eager_steps_and_data_path(tmp_path):
    report = run_dry(tmp_path, "eager", "data")
    rows = {(r["loop"], r["method"]): r for r in report["throughput"]}
    assert set(rows) == {("reference", "supervised"), ("brainssl", "moco"), ("brainssl", "dino")}
    assert all(
        r["images_per_s"] > 0 and r["flops_per_image"] > 0 and not r["compiled"] for r in rows.values()
    )
    assert all(r["mfu"] is None for r in rows.values())  # no bf16 peak on a CPU
    views = {r["method"]: r["views"] for r in report["data_path"]}
    assert views == {"moco": 2, "dino": 4}  # two views; 2 global + 2 local crops in --dry
    assert report["skipped"] == []


@pytest.mark.slow
def test_dry_run_of_every_part(tmp_path):
    report = run_dry(tmp_path)
    e2e = report["end_to_end"]
    assert e2e["ok"] and e2e["dry_run"] and e2e["gpu_jobs_listed"] > 0
    compiled = [r for r in report["throughput"] if r["compiled"]]
    assert len(compiled) == 3 and all(r["compile_s"] is not None for r in compiled)
    spec = importlib.util.spec_from_file_location("plan_benchmark", REPO / "benchmarks/plan.py")
    plan = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = plan  # its dataclasses look their module up
    spec.loader.exec_module(plan)
    assert set(plan.measured_rates(tmp_path / "gpu.json")) == {"moco-vit_tiny", "dino-vit_tiny"}
