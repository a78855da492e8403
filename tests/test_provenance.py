import datetime as dt
import json

from brainssl.config import stage_params
from brainssl.provenance import canonical_hash, code_version, flatten_record, record_provenance

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T1 = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)


def test_record_has_every_field_and_is_written_as_json(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("abc")
    target = tmp_path / "out.provenance.json"
    record = record_provenance(
        target, stage="slices", config={"bins": 64}, inputs=[source], seed=3, started=T0
    )
    on_disk = json.loads(target.read_text())
    assert on_disk == json.loads(json.dumps(record))
    for field in (
        "stage",
        "config",
        "config_hash",
        "inputs",
        "code",
        "seed",
        "libraries",
        "host",
        "started",
        "ended",
        "provenance_hash",
    ):
        assert field in record, field
    assert record["inputs"][str(source)] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert set(record["code"]) == {"package", "git_commit", "git_dirty"}
    assert {"python", "torch", "monai"} <= set(record["libraries"])


def test_equal_inputs_and_config_give_equal_hashes_whatever_the_time(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("abc")
    a = record_provenance(None, stage="s", config={"x": 1, "y": [1, 2]}, inputs=[source], seed=1, started=T0)
    b = record_provenance(
        None, stage="s", config={"y": [1, 2], "x": 1}, inputs=[source], seed=1, started=T1, ended=T1
    )
    assert a["provenance_hash"] == b["provenance_hash"]
    source.write_text("abd")
    c = record_provenance(None, stage="s", config={"x": 1, "y": [1, 2]}, inputs=[source], seed=1, started=T0)
    assert c["provenance_hash"] != a["provenance_hash"]
    d = record_provenance(None, stage="s", config={"x": 1, "y": [1, 2]}, inputs=[source], seed=2, started=T0)
    assert d["provenance_hash"] != c["provenance_hash"]


def test_changing_one_parameter_changes_exactly_the_dependent_hashes(tmp_path):
    """A chain of three stages: only the changed stage and what reads its output change."""
    config = {
        "preprocess": {"spacing": 2.0},
        "slices": {"entropy_bins": 64, "per_dataset": {"ixi": {"entropy_bins": 32}}},
        "tasks": {"folds": 5},
    }

    def run(cfg: dict) -> dict[str, str]:
        hashes = {}
        pre = tmp_path / "pre.txt"
        pre.write_text(json.dumps(stage_params(cfg, "preprocess")))
        hashes["preprocess"] = record_provenance(
            None, stage="preprocess", config=stage_params(cfg, "preprocess"), started=T0
        )["provenance_hash"]
        for dataset in ("ixi", "brats21"):
            params = stage_params(cfg, "slices", dataset)
            out = tmp_path / f"slices-{dataset}.txt"
            out.write_text(pre.read_text() + json.dumps(params))
            hashes[f"slices-{dataset}"] = record_provenance(
                None, stage="slices", config=params, inputs=[pre], started=T0
            )["provenance_hash"]
            hashes[f"tasks-{dataset}"] = record_provenance(
                None, stage="tasks", config=stage_params(cfg, "tasks"), inputs=[out], started=T0
            )["provenance_hash"]
        return hashes

    base = run(config)
    assert base == run(config)
    changed = json.loads(json.dumps(config))
    changed["slices"]["entropy_bins"] = 128  # ixi keeps its own override
    after = run(changed)
    differing = {key for key in base if base[key] != after[key]}
    assert differing == {"slices-brats21", "tasks-brats21"}


def test_code_version_reports_the_git_commit():
    version = code_version()
    assert version["package"]
    if version["git_commit"] is not None:
        assert len(version["git_commit"]) == 40
        assert isinstance(version["git_dirty"], bool)


def test_flatten_record_keeps_nested_parts_as_json():
    row = flatten_record({"stage": "s", "config": {"b": 1, "a": 2}})
    assert row == {"stage": "s", "config": '{"a": 2, "b": 1}'}
    assert canonical_hash({"a": 1}) == canonical_hash({"a": 1}) != canonical_hash({"a": 2})
