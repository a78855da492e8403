"""The HTML report of a finished test-config run, rendered in headless Chromium."""

import os
import shutil
import subprocess
import tempfile

import pytest
from conftest import REPO, run_snakemake

pytestmark = pytest.mark.slow
SCREENSHOT = REPO / "results/test-artifacts/report.png"


def _chromium() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("headless Chromium is missing and cannot be installed (needs root and apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]
    for cmd in (["apt-get", "update", "-qq"], install):
        subprocess.run(["timeout", "600", *cmd], check=True, env=env, capture_output=True)
    return shutil.which("chromium") or pytest.fail("chromium installed but not on PATH")


def test_report_renders_and_shows_the_stages(finished_run):
    workdir, config, _ = finished_run
    report = workdir / "results/report.html"
    result = run_snakemake("--configfile", str(config), "--report", str(report), workdir=workdir, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    html = report.read_text()
    assert "1. Datasets" in html and "montage.png" in html
    # the few-shot curves and the slice-filter ablation (on in test.yaml) with their captions
    assert "fewshot.png" in html and "ablation.tsv" in html and "Slice-filter ablation" in html
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        # flags that keep Chromium off the (closed) network and out of first-run dialogs
        quiet = ["--disable-quic", "--no-first-run", "--disable-background-networking"]
        quiet += ["--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"]
        shot = subprocess.run(
            [
                "timeout",
                "-k",
                "5",
                "120",
                _chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                *quiet,
                "--window-size=1400,1000",
                "--virtual-time-budget=15000",
                f"--screenshot={SCREENSHOT}",
                report.as_uri(),
            ],
            capture_output=True,
            text=True,
        )
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert SCREENSHOT.stat().st_size > 20_000, "the screenshot is (nearly) blank"
