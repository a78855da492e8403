"""``brainssl.jobs``: the adapter between Snakemake's ``snakemake`` object and the package.

The fake ``snakemake`` objects hold Snakemake's own containers (``Namedlist`` subclasses),
so names, ``items()`` and the hidden ``_names`` attribute behave as in a real job.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import types
from pathlib import Path

import pytest
from snakemake.iocontainers import InputFiles, Log, OutputFiles, Params, ResourceList, Snakemake, Wildcards

from brainssl.io import sha256_file
from brainssl.jobs import Job, job_context


def fake_snakemake(
    tmp_path: Path,
    *,
    rule: str = "slices_filter",
    inputs: dict[str, str] | None = None,
    outputs: dict[str, str] | None = None,
    params: dict | None = None,
    log: bool = True,
    threads: int = 3,
) -> types.SimpleNamespace:
    """A ``snakemake`` object as a script sees it: named lists of plain strings, an int, a rule name."""
    return types.SimpleNamespace(
        input=InputFiles(fromdict=inputs or {}),
        output=OutputFiles(fromdict=outputs or {}),
        params=Params(fromdict=params or {}),
        log=Log(fromdict={"log": str(tmp_path / "logs" / f"{rule}.log")} if log else {}),
        threads=threads,
        wildcards=Wildcards(fromdict={"dataset": "ixi"}),
        rule=rule,
    )


@pytest.fixture(autouse=True)
def _restore_logging_and_threads(monkeypatch):
    """job_context reconfigures the root logger and OMP_NUM_THREADS; undo both after each test."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    root = logging.getLogger()
    level = root.level
    yield
    for handler in [h for h in root.handlers if getattr(h, "_brainssl", False)]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


def test_job_describes_the_rule(tmp_path):
    smk = fake_snakemake(tmp_path, params={"seed": 7, "size": 32}, threads=4)
    before = dt.datetime.now(dt.UTC)
    with job_context(smk) as job:
        assert isinstance(job, Job)
        assert job.rule == "slices_filter"
        assert job.stage == "slices", "the stage defaults to the rule name's prefix"
        assert job.params == {"seed": 7, "size": 32}, "Namedlist internals (_names) must not leak in"
        assert job.seed == 7
        assert job.threads == 4 and isinstance(job.threads, int)
        assert job.started.tzinfo is not None and before <= job.started <= dt.datetime.now(dt.UTC)
        assert job.extra == {}


def test_explicit_stage_wins_and_a_rule_without_underscore_is_its_own_stage(tmp_path):
    with job_context(fake_snakemake(tmp_path), stage="datasets") as job:
        assert job.stage == "datasets"
    with job_context(fake_snakemake(tmp_path, rule="report")) as job:
        assert job.stage == "report"
    with job_context(fake_snakemake(tmp_path, rule="tasks_dense_tumor_detection")) as job:
        assert job.stage == "tasks", "only the first underscore splits"


def test_no_seed_param_means_seed_none(tmp_path):
    with job_context(fake_snakemake(tmp_path, params={"size": 32})) as job:
        assert job.seed is None


def test_threads_limit_omp_and_an_imported_torch(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(set_num_threads=calls.append))
    with job_context(fake_snakemake(tmp_path, threads=5)):
        assert os.environ["OMP_NUM_THREADS"] == "5"
    assert calls == [5]


def test_zero_threads_still_allow_one(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    with job_context(fake_snakemake(tmp_path, threads=0)) as job:
        assert job.threads == 0
        assert os.environ["OMP_NUM_THREADS"] == "1"
    assert "torch" not in sys.modules, "job_context must not import torch itself"


def test_log_file_records_start_and_finish(tmp_path):
    smk = fake_snakemake(tmp_path, threads=2)
    with job_context(smk):
        logging.getLogger("brainssl.something").info("inside the body")
    text = Path(smk.log[0]).read_text()
    lines = text.splitlines()
    assert "rule slices_filter started (threads=2)" in lines[0]
    assert "inside the body" in lines[1]
    assert "rule slices_filter finished in" in lines[-1]


def test_a_failure_is_logged_with_its_traceback_reraised_and_writes_no_provenance(tmp_path):
    prov = tmp_path / "out.json"
    smk = fake_snakemake(tmp_path, outputs={"table": str(tmp_path / "t.tsv"), "prov": str(prov)})
    with pytest.raises(RuntimeError, match="boom"), job_context(smk):
        raise RuntimeError("boom")
    text = Path(smk.log[0]).read_text()
    assert "rule slices_filter failed" in text
    assert "Traceback (most recent call last)" in text and "RuntimeError: boom" in text
    assert "finished" not in text
    assert not prov.exists(), "a failed job must not leave a provenance record"


def test_provenance_sidecar_on_success(tmp_path):
    source = tmp_path / "in.tsv"
    source.write_text("a\n1\n")
    table, prov = tmp_path / "t.tsv", tmp_path / "t.json"
    smk = fake_snakemake(
        tmp_path,
        inputs={"table": str(source)},
        outputs={"table": str(table), "prov": str(prov)},
        params={"seed": 11, "settings": {"size": 32}},
    )
    with job_context(smk, stage="preprocess") as job:
        table.write_text("b\n2\n")
        job.extra["rows"] = 1
    record = json.loads(prov.read_text())
    assert record["stage"] == "preprocess"
    assert record["config"] == {"seed": 11, "settings": {"size": 32}}
    assert record["seed"] == 11
    assert record["inputs"] == {str(source): sha256_file(source)}
    assert record["outputs"] == [str(table)], "the sidecar lists the other outputs, not itself"
    assert record["extra"] == {"rows": 1}
    assert dt.datetime.fromisoformat(record["started"]) == job.started


def test_provenance_hash_follows_params_not_timing(tmp_path):
    def run(seed: int, name: str) -> str:
        prov = tmp_path / f"{name}.json"
        with job_context(fake_snakemake(tmp_path, outputs={"prov": str(prov)}, params={"seed": seed})):
            pass
        return json.loads(prov.read_text())["provenance_hash"]

    assert run(1, "a") == run(1, "b")
    assert run(1, "c") != run(2, "d")


def test_without_prov_output_or_log_nothing_extra_is_written(tmp_path):
    out = tmp_path / "only.tsv"
    smk = fake_snakemake(tmp_path, outputs={"table": str(out)}, log=False)
    with job_context(smk):
        out.write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["only.tsv"]
    file_handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    assert not [h for h in file_handlers if getattr(h, "_brainssl", False)]


def test_a_second_job_in_the_same_process_logs_to_its_own_file(tmp_path):
    first = fake_snakemake(tmp_path, rule="slices_a")
    second = fake_snakemake(tmp_path, rule="slices_b")
    with job_context(first):
        pass
    with job_context(second):
        logging.getLogger("brainssl").info("second body")
    assert "second body" not in Path(first.log[0]).read_text()
    assert "second body" in Path(second.log[0]).read_text()


def test_the_real_snakemake_object_works_too(tmp_path):
    prov = tmp_path / "p.json"
    smk = Snakemake(
        InputFiles(),
        OutputFiles(fromdict={"prov": str(prov)}),
        Params(fromdict={"seed": 2}),
        Wildcards(),
        1,
        ResourceList(),
        Log(fromdict={"log": str(tmp_path / "x.log")}),
        {},
        "datasets_manifest",
        None,
    )
    with job_context(smk) as job:
        assert (job.stage, job.seed, job.threads) == ("datasets", 2, 1)
    assert json.loads(prov.read_text())["stage"] == "datasets"
