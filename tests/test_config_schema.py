import copy
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_snakemake
from snakemake.utils import validate
from snakemake_interface_common.exceptions import WorkflowError

SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")


def load(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


@pytest.mark.parametrize("name", ["config.yaml", "config/test.yaml"])
def test_shipped_configs_are_valid(name):
    validate(load(name), SCHEMA)


def _set(config: dict, dotted: str, value) -> dict:
    bad = copy.deepcopy(config)
    *parents, leaf = dotted.split(".")
    node = bad
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return bad


DELETE = object()

MISTAKES = [
    # (kind, dotted key, bad value, words the message must contain)
    ("unknown top-level key", "sed", 1, ["'sed' was unexpected"]),
    ("unknown nested key (typo)", "datasets.ixi.sujbects", 3, ["'sujbects' was unexpected"]),
    (
        "wrong type",
        "datasets.shard_size",
        "ten",
        ["'ten' is not of type 'integer'", "['datasets']['shard_size']"],
    ),
    ("below minimum", "datasets.shard_size", 0, ["0 is less than the minimum of 1", "['shard_size']"]),
    ("above maximum", "datasets.grid_mm", 9.0, ["maximum of 4.0", "['grid_mm']"]),
    ("not in enum", "datasets.ixi.source", "ftp", ["'ftp' is not one of ['synthetic', 'local', 'download']"]),
    ("missing required section", "datasets.brats21", DELETE, ["'brats21' is a required property"]),
    ("local source without a path", "datasets.oasis3.source", "local", ["'path' is a required property"]),
    ("bad URL", "datasets.ixi.base_url", "ftp.example", ["does not match", "['base_url']"]),
    ("negative seed", "seed", -1, ["less than the minimum", "['seed']"]),
    (
        "unknown skull-strip method",
        "preprocess.per_dataset.oasis3.skull_strip",
        "bet",
        ["'bet' is not one of ['deepbet', 'atlas', 'none']"],
    ),
    ("unknown normalisation", "preprocess.normalisation.method", "minmax", ["'minmax' is not one of"]),
    ("override typo", "preprocess.per_dataset.ixi.spacing", 2.0, ["'spacing' was unexpected"]),
    ("shard size zero", "preprocess.shard_size", 0, ["less than the minimum of 1", "['shard_size']"]),
]


@pytest.mark.parametrize(("kind", "key", "value", "words"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_mistakes_are_rejected_naming_the_key(kind, key, value, words):
    bad = _set(load("config.yaml"), key, value)
    with pytest.raises(WorkflowError) as info:
        validate(bad, SCHEMA)
    message = str(info.value)
    for word in words:
        assert word in message, f"{kind}: {word!r} not in\n{message}"


def test_every_key_is_documented():
    """Every property in the schema has a description, and every optional leaf a type and a default."""
    schema = yaml.safe_load(Path(SCHEMA).read_text())
    defs = schema.get("$defs", {})

    def walk(node: dict, where: str) -> None:
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        for key, child in node.get("properties", {}).items():
            here = f"{where}.{key}".lstrip(".")
            resolved = child
            if "$ref" in child:
                resolved = {**defs[child["$ref"].rsplit("/", 1)[-1]], **child}
            assert "description" in resolved, f"{here} has no description"
            if resolved.get("type") == "object" or "properties" in resolved:
                assert resolved.get("additionalProperties") is False, f"{here} allows unknown keys"
                walk(resolved, here)
            else:
                assert "type" in resolved or "const" in resolved, f"{here} has no type"
                # overrides (per_dataset, per_method, per_arch) have no defaults: a default there
                # would replace the value it overrides
                override = any(part.startswith("per_") for part in here.split("."))
                # a key that a condition requires (a dataset's path) has no default to fill in
                conditional = node.get("then", {}).get("required", [])
                if key not in [*node.get("required", []), *conditional] and not override:
                    assert "default" in resolved, f"{here} is optional but has no default"
                elif override:
                    assert "default" not in resolved, f"{here}: an override must not have a default"

    assert schema["additionalProperties"] is False
    walk(schema, "")


def test_config_yaml_comments_every_section():
    """Each top-level key and each key of a stage section has a comment right above it."""
    lines = (REPO / "config.yaml").read_text().splitlines()
    for index, line in enumerate(lines):
        indent = len(line) - len(line.lstrip(" "))
        is_key = ":" in line and not line.lstrip().startswith("#")
        if is_key and indent <= 2:
            assert lines[index - 1].lstrip().startswith("#"), f"no comment above: {line!r}"


def test_bad_config_stops_the_workflow_before_any_job(tmp_path):
    result = run_snakemake(
        "--cores",
        "1",
        "--configfile",
        str(REPO / "config/test.yaml"),
        "--config",
        "seed=-5",
        workdir=tmp_path,
        timeout=120,
    )
    assert result.returncode != 0
    assert "seed = -5: must be >= 0" in result.stderr
    assert not (tmp_path / "results").exists(), "a job ran although the config was invalid"
