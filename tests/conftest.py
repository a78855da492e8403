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
    """The test config run as README runs it: the workflow's config.yaml, test.yaml laid over it.

    The copy is not named config.yaml: a config.yaml in the working folder would replace the
    workflow's own as the base (Snakefile), and the run would use test.yaml's keys alone.
    """
    workdir = tmp_path_factory.mktemp("run")
    config = workdir / "test.yaml"
    shutil.copy(REPO / "config/test.yaml", config)
    result = run_snakemake("--cores", "2", "--configfile", str(config), workdir=workdir, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir, config, result


@pytest.fixture
def encoders(tmp_path) -> dict[str, str]:
    """Two tiny exported ViTs (``moco-vit_tiny``, ``random-vit_tiny``) for the dense-task tests."""
    import torch

    from brainssl.pretrain.backbones import build_encoder
    from brainssl.pretrain.export import export_encoder

    paths = {}
    for name in ("moco-vit_tiny", "random-vit_tiny"):
        torch.manual_seed(len(name))
        path = tmp_path / name / "encoder.safetensors"
        encoder = build_encoder("vit_tiny", img_size=32, depth=2, embed_dim=24, num_heads=2)
        card = path.with_name("model_card.json")
        method = name.split("-")[0]
        export_encoder(
            encoder, path, card, intensity="t", manifest_sha256=None, config_sha256=None, method=method
        )
        paths[name] = str(path)
    return paths


def validate_bids(root: Path) -> tuple[int, list[dict]]:
    """Run the BIDS validator (``bids-validator-deno``, a dev extra) on ``root``: (exit code, issues)."""
    import json

    tool = BIN / "bids-validator-deno"
    if not tool.exists():
        pytest.skip("bids-validator-deno is not installed (pip install -e '.[dev]')")
    done = subprocess.run(
        [str(tool), "--format", "json", str(root)], capture_output=True, text=True, timeout=300
    )
    assert done.stdout.strip(), done.stderr[-2000:]
    return done.returncode, json.loads(done.stdout)["issues"]["issues"]
