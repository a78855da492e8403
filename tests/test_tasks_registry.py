"""The task registry is the workflow's one list of tasks: a task registered there alone runs."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest
from conftest import BIN, REPO

from brainssl.tasks import registry
from brainssl.tasks.registry import TASKS, Task, register, task_datasets, tasks_of_kind
from brainssl.tasks.units import task_specs

# Registers a throwaway frozen-feature task, then runs the snakemake CLI in the same process:
# common.smk imports the registry module already loaded here, with the extra entry. No file
# of the repository is touched; the task's settings are its registry defaults (the schema
# allows only the config sections it documents).
REGISTER_AND_RUN = textwrap.dedent(
    """
    import sys

    sys.path.insert(0, sys.argv.pop(1))
    from brainssl.tasks.registry import Task, register, tumor4_specs

    if sys.argv.pop(1) == "register":
        defaults = {"enabled": True, "datasets": ["tumor4"], "contrasts": [], "logistic_c": 0.5}
        register(Task("throwaway", "frozen", datasets_key="datasets", specs=tumor4_specs, defaults=defaults))

    from snakemake.cli import main

    main(sys.argv[1:])
    """
)


def _dry_run(tmp_path, mode: str) -> str:
    cmd = [sys.executable, "-c", REGISTER_AND_RUN, str(REPO / "src"), mode]
    cmd += ["-s", str(REPO / "Snakefile"), "-n", "--cores", "1", "--configfile", "config/test.yaml"]
    cmd += ["-d", str(tmp_path / mode)]
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _jobs(stdout: str) -> dict[str, list[str]]:
    """Rule name -> the text of each of its jobs in a dry run's listing."""
    jobs: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) \w+:\n)", stdout):
        head = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):\n", block)
        if head:
            jobs.setdefault(head.group(1), []).append(block)
    return jobs


def test_a_task_registered_alone_gets_a_job_and_joins_the_merge(tmp_path):
    jobs = _jobs(_dry_run(tmp_path, "register"))
    throwaway = [job for job in jobs["tasks_frozen"] if "wildcards: task=throwaway" in job]
    assert len(throwaway) == 1, jobs["tasks_frozen"]
    for name in ("results.tsv", "comparisons.tsv", "curves.png", "provenance.json"):
        assert f"results/tasks/throwaway/{name}" in throwaway[0]
    # no scratch baseline: the registry entry did not ask for one
    assert "results/slices/index.parquet" not in throwaway[0]
    (merge,) = jobs["tasks_merge"]
    assert "results/tasks/throwaway/results.tsv" in merge
    assert "results/tasks/throwaway/comparisons.tsv" in merge


def test_without_the_entry_the_workflow_has_no_such_task(tmp_path):
    stdout = _dry_run(tmp_path, "plain")
    assert "throwaway" not in stdout
    assert "results/tasks/tumor4/results.tsv" in stdout


def test_the_registry_lists_every_task_once_by_kind():
    assert tasks_of_kind("frozen") == [
        "tumor4",
        "sequence",
        "neurodegeneration",
        "molecular",
        "brain_age",
        "survival",
        "neurodevelopmental",
        "stroke_time",
    ]
    assert tasks_of_kind("dense") == [
        "tumor_segmentation",
        "hippocampus_segmentation",
        "tumor_detection",
        "reconstruction",
    ]
    assert tasks_of_kind("analysis") == ["representation"]
    scratch = ["tumor4", "sequence", "neurodegeneration", "molecular", "neurodevelopmental"]
    assert [t for t in TASKS if TASKS[t].scratch] == scratch
    with pytest.raises(ValueError, match="registered already"):
        register(Task("tumor4", "frozen", specs=registry.tumor4_specs))


def test_datasets_come_from_the_entry_or_its_config_key():
    assert task_datasets("tumor_segmentation", {"datasets": ["ixi"]}) == ["brats21"]
    assert task_datasets("hippocampus_segmentation", {"datasets": ["hippocampus"]}) == ["hippocampus"]
    assert task_datasets("brain_age", {"datasets": ["ixi", "oasis3"]}) == ["ixi", "oasis3"]


def test_task_specs_look_the_builder_up_in_the_registry(monkeypatch):
    entry = Task("throwaway", "frozen", datasets_key="datasets", specs=registry.brain_age_specs)
    monkeypatch.setitem(TASKS, "throwaway", entry)
    (spec,) = task_specs("throwaway", {"datasets": ["ixi"], "contrasts": ["T1w"]})
    assert (spec.kind, spec.dataset, spec.contrasts, spec.controls_only) == (
        "regression",
        "ixi",
        ("T1w",),
        True,
    )
    with pytest.raises(ValueError, match="unknown task"):
        task_specs("tumor_segmentation", {})
    with pytest.raises(ValueError, match="spec builder"):
        Task("broken", "frozen")


def test_the_registry_imports_nothing_heavy():
    code = (
        "import sys; import brainssl.tasks.registry; "
        "print(sorted(m for m in ('torch', 'scipy', 'nibabel', 'sklearn') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
