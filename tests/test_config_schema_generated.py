"""The committed config schema is the one generated from the settings dataclasses.

Every config key is declared once, with :func:`brainssl.settings.setting`, on its stage's settings
class; ``make schema`` (``python -m brainssl.schema``) writes ``workflow/schemas/config.schema.yaml``
from them. So the schema's defaults are the package's by construction, and these tests fail when a
setting is edited without regenerating the file, and when its lists stop being the registries'.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import yaml
from conftest import REPO

from brainssl import schema as generator
from brainssl.preprocess.settings import N4Settings
from brainssl.settings import MissingSettingError, from_mapping, setting
from brainssl.tasks import registry

COMMITTED = REPO / generator.SCHEMA_PATH


def _committed() -> str:
    return COMMITTED.read_text(encoding="utf-8")


def _node(schema: dict[str, Any], *path: str) -> dict[str, Any]:
    node = schema
    for key in path:
        node = node["properties"][key]
        if "$ref" in node:
            node = {**_resolve(schema, node["$ref"]), **node}
    return node


def _resolve(schema: dict[str, Any], ref: str) -> dict[str, Any]:
    target: Any = schema
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return target


def test_committed_schema_is_the_generated_one():
    assert _committed() == generator.render(), (
        f"{generator.SCHEMA_PATH} is stale: run `make schema` (python -m brainssl.schema --write ...)"
    )
    assert _committed().startswith(generator.HEADER)


def test_check_command_fails_on_a_stale_file(tmp_path, capsys):
    assert generator.main(["--check", str(COMMITTED)]) == 0
    stale = tmp_path / "config.schema.yaml"
    stale.write_text(_committed().replace("default: 224", "default: 225", 1), encoding="utf-8")
    assert generator.main(["--check", str(stale)]) == 1
    assert "make schema" in capsys.readouterr().err
    fresh = tmp_path / "fresh.yaml"
    assert generator.main(["--write", str(fresh)]) == 0
    assert fresh.read_text(encoding="utf-8") == _committed()


def test_editing_a_default_without_regenerating_fails(monkeypatch):
    field = {f.name: f for f in dataclasses.fields(N4Settings)}["shrink_mm"]
    monkeypatch.setattr(field, "default", 5.0)
    edited = generator.render()
    assert edited != _committed()
    shrink = _node(yaml.safe_load(edited), "preprocess", "n4", "shrink_mm")
    assert shrink["default"] == 5.0


def test_editing_a_range_without_regenerating_fails(monkeypatch):
    field = {f.name: f for f in dataclasses.fields(N4Settings)}["control_points"]
    schema = {**field.metadata[generator.SCHEMA_KEY], "maximum": 32}
    monkeypatch.setattr(field, "metadata", {**field.metadata, generator.SCHEMA_KEY: schema})
    assert generator.render() != _committed()


def test_the_yaml_reads_back_as_the_generated_schema():
    assert yaml.safe_load(_committed()) == generator._plain(generator.config_schema())


def test_schema_defaults_are_the_settings_defaults():
    """Spot checks that a section's defaults come from its class (the rest follows by construction)."""
    from brainssl.preprocess.settings import PreprocessSettings
    from brainssl.pretrain.settings import PretrainSettings
    from brainssl.tasks.dense_settings import DenseTaskSettings

    schema = yaml.safe_load(_committed())
    assert _node(schema, "preprocess", "skull_strip")["default"] == PreprocessSettings().skull_strip
    assert _node(schema, "pretrain", "moco", "temperature")["default"] == PretrainSettings().temperature
    epochs = {f.name: f for f in dataclasses.fields(DenseTaskSettings)}["epochs"].default
    assert _node(schema, "tasks", "tumor_segmentation", "epochs")["default"] == epochs
    # a key the workflow fills from the shared section is nullable, its null the schema's default
    seeds = _node(schema, "tasks", "reconstruction", "seeds")
    assert seeds["type"] == ["integer", "null"] and seeds["default"] is None
    # overrides carry no defaults: an absent key keeps the value it overrides
    override = _node(schema, "preprocess", "per_dataset", "ixi", "n4", "shrink_mm")
    assert "default" not in override and override["maximum"] == 16


def test_schema_enums_are_the_registries():
    """Every list the schema enumerates is the package registry's, in the registry's order."""
    from brainssl.architectures import ARCHS, METHODS
    from brainssl.datasets.catalog import DATASETS, LAYOUTS
    from brainssl.preprocess.settings import NORMALISATION_METHODS, SKULL_STRIP_METHODS
    from brainssl.preprocess.shards import PREPROCESS_DATASETS
    from brainssl.pretrain.natural import LAYOUTS as NATURAL_LAYOUTS
    from brainssl.tasks.registry import TASKS

    schema = yaml.safe_load(_committed())
    pretrain = _node(schema, "pretrain")["properties"]
    assert pretrain["archs"]["items"]["enum"] == list(ARCHS)
    assert pretrain["methods"]["items"]["enum"] == list(METHODS)
    assert list(pretrain["per_method"]["properties"]) == list(METHODS)
    assert list(pretrain["per_arch"]["properties"]) == list(ARCHS)
    natural = pretrain["natural"]["items"]["properties"]
    assert natural["arch"]["enum"] == list(ARCHS) and natural["layout"]["enum"] == ["auto", *NATURAL_LAYOUTS]
    assert list(_node(schema, "embed", "extra")["items"]["properties"]) == ["name", "weights"]
    assert _node(schema, "preprocess", "skull_strip")["enum"] == list(SKULL_STRIP_METHODS)
    assert _node(schema, "preprocess", "normalisation", "method")["enum"] == list(NORMALISATION_METHODS)
    datasets = _node(schema, "datasets")
    assert [name for name in datasets["properties"] if name in LAYOUTS] == list(DATASETS)
    assert [name for name in datasets["required"]] == list(DATASETS)
    assert list(_node(schema, "slices", "per_dataset")["properties"]) == list(DATASETS)
    assert list(_node(schema, "preprocess", "per_dataset")["properties"]) == list(PREPROCESS_DATASETS)
    tasks = _node(schema, "tasks")["properties"]
    assert [name for name in tasks if name in TASKS] == list(TASKS)


def test_a_registered_task_gets_its_schema_section(monkeypatch):
    """A registry entry naming a settings class is all a task needs for its tasks.<name> section."""

    @dataclasses.dataclass(frozen=True)
    class ThrowawaySettings:
        enabled: bool = setting(True, "Run this task.")
        logistic_c: float = setting(0.5, "Inverse L2 penalty.", exclusive_minimum=0)

    monkeypatch.setitem(globals(), "ThrowawaySettings", ThrowawaySettings)
    task = registry.Task(
        "throwaway",
        "frozen",
        datasets_key="datasets",
        specs=registry.tumor4_specs,
        description="A throwaway task.",
        settings=f"{__name__}:ThrowawaySettings",
    )
    monkeypatch.setitem(registry.TASKS, "throwaway", task)
    section = _node(generator.config_schema(), "tasks", "throwaway")
    assert section["description"] == "A throwaway task." and section["default"] == {}
    assert section["properties"]["logistic_c"] == {
        "type": "number",
        "exclusiveMinimum": 0,
        "default": 0.5,
        "description": "Inverse L2 penalty.",
    }


def test_every_field_is_declared_with_setting():
    @dataclasses.dataclass(frozen=True)
    class Undeclared:
        size: int = 3

    with pytest.raises(ValueError, match=r"Undeclared\.size is not declared with"):
        generator.config_schema(Undeclared)


def test_a_setting_without_a_default_is_required():
    @dataclasses.dataclass(frozen=True)
    class Needs:
        size: int = setting(description="A size.", minimum=1)

    assert generator.config_schema(Needs)["required"] == ["size"]
    with pytest.raises(MissingSettingError, match=r"missing setting\(s\) Needs\.size"):
        from_mapping(Needs, {})
