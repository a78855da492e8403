"""Shared fixtures: paths of the repository and a runner for the workflow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def run_snakemake(
    *args: str, workdir: Path | None = None, timeout: int = 600, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the workflow's Snakefile with the test environment's snakemake (``env``: extra variables)."""
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), *args]
    if workdir is not None:
        cmd += ["-d", str(workdir)]
    variables = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {}))
    return subprocess.run(
        cmd, cwd=workdir or REPO, capture_output=True, text=True, timeout=timeout, env=variables
    )


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    config = workdir / "config.yaml"
    shutil.copy(REPO / "config/test.yaml", config)
    result = run_snakemake("--cores", "2", "--configfile", str(config), workdir=workdir, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir, config, result
