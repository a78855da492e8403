"""benchmarks/dag.py's stand-in cohorts: the dry-runs they give list the jobs the sharding predicts."""

import importlib.util

import pytest
import yaml
from conftest import REPO

from brainssl.datasets import DATASETS
from brainssl.preprocess.shards import PREPROCESS_DATASETS

pytestmark = pytest.mark.slow

SHARD_SIZE = 4


@pytest.fixture(scope="module")
def dag_benchmark():
    spec = importlib.util.spec_from_file_location("dag_benchmark", REPO / "benchmarks/dag.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stand_in_cohort_dry_runs_list_every_shard_job(dag_benchmark, tmp_path):
    n_subjects = 50  # 9, 9, 8, 8, 8, 8 over the six datasets
    manifests = dag_benchmark.write_ingest(tmp_path, n_subjects)
    assert sum(m["subject"].nunique() for m in manifests.values()) == n_subjects
    # small shards (on top of config/scale.yaml) so that every dataset has several
    small = {"preprocess": {"shard_size": SHARD_SIZE}, "slices": {"shard_size": SHARD_SIZE}}
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(small))
    shards = {d: -(-manifests[d]["subject"].nunique() // SHARD_SIZE) for d in DATASETS}

    _, cpu_s, ingested = dag_benchmark.dry_run(tmp_path, tmp_path / "small.yaml")
    assert cpu_s > 0
    assert ingested["preprocess_shard"] == sum(shards[d] for d in PREPROCESS_DATASETS) == 3 + 3 + 2 + 2 + 2
    assert ingested["slices_plan"] == len(dag_benchmark.SLICE_DATASETS) == 5
    assert not any(rule.startswith("datasets_") for rule in ingested)  # the ingest is complete

    config = dag_benchmark.merged_config(tmp_path, tmp_path / "small.yaml")
    dag_benchmark.write_preprocessed(tmp_path, manifests, config)
    _, _, preprocessed = dag_benchmark.dry_run(tmp_path, tmp_path / "small.yaml")
    slice_datasets = dag_benchmark.SLICE_DATASETS
    assert preprocessed["slices_shard"] == sum(shards[d] for d in slice_datasets) == 3 + 3 + 2 + 2 + 2
    upstream = [r for r in preprocessed if r.startswith(("datasets_", "preprocess_")) or r == "slices_plan"]
    assert not upstream, upstream  # everything before the slice shards is up to date

    jobs = dag_benchmark.pipeline_jobs([{"jobs": ingested}, {"jobs": preprocessed}])
    assert jobs["all"] == 1 and jobs["preprocess_shard"] == 12 and jobs["slices_shard"] == 12
