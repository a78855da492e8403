"""The test configuration run twice, in fresh folders and with another job order, gives equal tables.

Two ``make demo`` runs once trained different encoders because one stage (the atlas skull
strip) depended on the threads a job was granted; the test configuration alone did not show
it. This second run therefore differs in what could leak into the numbers: another folder
(no absolute path may enter a table), another job order (Snakemake's greedy scheduler
instead of its ILP one, so other jobs run side by side) and ``device: auto`` where the first
says ``cpu`` (pretrain, embed, tasks): on a machine without a GPU the setting must change
nothing. The grants stay the same (``--cores 2``): a torch job granted fewer threads than it
declares sums in another order and moves the last digits (measured: the reconstruction NMSE
in its 8th digit with ``--cores 1``), which README states. The slice arrays must be
byte-identical, every encoder hold the same tensors and metadata (safetensors writes its
metadata keys in a per-process order), and every results table be equal cell by cell
without its wall-clock columns (:data:`TIMED_COLUMNS`).
"""

import re
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import run_snakemake
from safetensors import safe_open

from brainssl.wiring.checks import DEVICE_KEYS

pytestmark = pytest.mark.slow

#: Table columns that hold a job's wall-clock time (the only cells allowed to differ).
TIMED_COLUMNS = re.compile(r"seconds")
#: The stages with a ``device`` setting (``pretrain.device``, ...: the workflow's own list).
DEVICE_STAGES = tuple(key.split(".")[0] for key in DEVICE_KEYS)
#: What is compared: every table, the slice arrays and the encoders' weights.
COMPARED = ("*.tsv", "*.parquet", "*.npy", "*.safetensors")


def _outputs(results: Path) -> set[str]:
    return {str(p.relative_to(results)) for pattern in COMPARED for p in results.rglob(pattern)}


def _table(path: Path) -> pd.DataFrame:
    """A table as text cells, without its wall-clock columns."""
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path).astype(str)
    else:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    return frame.drop(columns=[c for c in frame.columns if TIMED_COLUMNS.search(str(c))])


def _weights(path: Path) -> tuple[dict[str, str], dict[str, bytes]]:
    with safe_open(str(path), framework="numpy") as handle:
        return handle.metadata() or {}, {key: handle.get_tensor(key).tobytes() for key in handle.keys()}


def _same(one: Path, other: Path) -> bool:
    if one.read_bytes() == other.read_bytes():
        return True
    if one.suffix == ".safetensors":
        return _weights(one) == _weights(other)
    return one.suffix in (".tsv", ".parquet") and _table(one).equals(_table(other))


@pytest.mark.timeout(1200)
def test_a_second_run_in_another_folder_and_job_order_gives_the_same_outputs(finished_run, tmp_path):
    first, config, _ = finished_run
    second = tmp_path / "again"
    second.mkdir()
    cfg = yaml.safe_load(config.read_text())
    assert all(cfg[stage]["device"] == "cpu" for stage in DEVICE_STAGES)
    if not torch.cuda.is_available():  # with a GPU, auto would train there: other sums
        for stage in DEVICE_STAGES:
            cfg[stage]["device"] = "auto"
    (second / config.name).write_text(yaml.safe_dump(cfg))
    args = ("--cores", "2", "--scheduler", "greedy", "--configfile", str(second / config.name))
    result = run_snakemake(*args, workdir=second, timeout=1100)
    assert result.returncode == 0, result.stderr[-4000:]
    ours, theirs = _outputs(first / "results"), _outputs(second / "results")
    assert ours == theirs
    assert {"tasks/results.tsv", "pretrain/probe.tsv", "slices/index.parquet"} <= ours
    differ = sorted(name for name in ours if not _same(first / "results" / name, second / "results" / name))
    assert not differ, f"{len(differ)} outputs differ between the two runs: {differ[:20]}"
