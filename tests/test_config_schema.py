import copy
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import BIN, REPO, run_snakemake
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


# ---- every file in config/, merged onto config.yaml as the workflow does


def merged(*names: str) -> dict:
    """config.yaml with each file laid over it by Snakemake's own merge (what --configfile does)."""
    from snakemake.utils import update_config

    config = load("config.yaml")
    for name in names:
        update_config(config, load(name))
    return config


CONFIG_FILES = sorted(str(path.relative_to(REPO)) for path in (REPO / "config").glob("*.yaml"))


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_config_file_is_valid_merged_onto_config_yaml(name):
    from brainssl import wiring

    config = merged(name)
    validate(config, SCHEMA)
    wiring.check_slice_sizes(config)  # what common.smk refuses at start


def test_paper_config_is_complete_for_the_study_scale():
    config = merged("config/paper.yaml")
    validate(config, SCHEMA)
    pretrain = config["pretrain"]
    assert config["slices"]["size"] == pretrain["img_size"] == 224
    assert pretrain["device"] == config["embed"]["device"] == config["tasks"]["device"] == "cuda"
    assert pretrain["resources"]["gpus"] >= 1 and pretrain["archs"] == ["resnet50", "vit_small"]
    assert pretrain["per_method"]["moco"]["min_lr"] == 0.0  # MoCo v3's cosine decays to 0
    # config.yaml's demo values that a merge would otherwise leak into the study's DINO runs
    assert pretrain["per_method"]["dino"] == {"momentum": 0.996, "lr": 0.0005}
    assert pretrain["dino"]["head_use_bn"] is False and pretrain["vit_depth"] is None
    assert config["preprocess"]["spacing_mm"] == 1.0
    for task in ("tumor_segmentation", "hippocampus_segmentation", "reconstruction"):
        assert config["tasks"][task]["max_train_slices"] == 20000 and config["tasks"][task]["seeds"] is None
    from brainssl import wiring

    enabled = wiring.enabled_datasets(config)
    assert {"ixi", "brats21", "fastmri_brain", "oasis3"} <= set(enabled)
    assert all(config["datasets"][d]["source"] != "synthetic" for d in enabled)  # no demo cohort


def test_paper_config_holds_only_what_differs_from_config_yaml():
    base = load("config.yaml")
    validate(base, SCHEMA)  # defaults filled: a key equal to the default is redundant too

    def redundant(override: dict, current: dict, where: str) -> list[str]:
        found = []
        for key, value in override.items():
            here = f"{where}.{key}".lstrip(".")
            if isinstance(value, dict) and isinstance(current.get(key), dict):
                found += redundant(value, current[key], here)
            elif key in current and current[key] == value:
                found.append(here)
        return found

    assert redundant(load("config/paper.yaml"), base, "") == []


def test_snakemake_merges_configfiles_key_by_key(tmp_path):
    """Snakemake 9: --configfile merges mappings over the Snakefile's configfile; lists and null replace."""
    (tmp_path / "base.yaml").write_text("a: {b: 1, c: [1, 2], d: {e: 1, f: 2}}\ng: 1\n")
    (tmp_path / "over.yaml").write_text("a: {c: [3], d: {e: null}}\n")
    (tmp_path / "Snakefile").write_text(
        'import json\nconfigfile: "base.yaml"\n'
        'print("CONFIG=" + json.dumps(config, sort_keys=True))\n'
        "rule all:\n    run:\n        pass\n"
    )
    cmd = [str(BIN / "snakemake"), "-n", "-s", "Snakefile", "--configfile", "over.yaml"]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    line = next(x for x in result.stdout.splitlines() if x.startswith("CONFIG="))
    assert json.loads(line[len("CONFIG=") :]) == {"a": {"b": 1, "c": [3], "d": {"e": None, "f": 2}}, "g": 1}
