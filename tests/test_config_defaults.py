"""The schema's defaults equal the settings classes' defaults, so the package and the workflow agree.

Calling the package with no argument and running the workflow with an empty config section must
give the same run; this test walks every schema section backed by a settings dataclass.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import yaml
from conftest import REPO

from brainssl.embed.embed import EmbedSettings
from brainssl.preprocess.settings import PreprocessSettings
from brainssl.pretrain.methods import PretrainSettings
from brainssl.slices.settings import SliceSettings
from brainssl.tasks.dense_settings import (
    HippocampusSegmentationSettings,
    ReconstructionSettings,
    TumorDetectionSettings,
    TumorSegmentationSettings,
)
from brainssl.tasks.representation import RepresentationSettings
from brainssl.tasks.scratch import ScratchSettings

SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())

# (path of a section in the config, the dataclass its rule builds from it)
SECTIONS = [
    (("preprocess",), PreprocessSettings),
    (("slices",), SliceSettings),
    (("pretrain",), PretrainSettings),
    (("pretrain", "moco"), PretrainSettings),
    (("pretrain", "dino"), PretrainSettings),
    (("embed",), EmbedSettings),
    (("tasks", "scratch"), ScratchSettings),
    (("tasks", "representation"), RepresentationSettings),
    (("tasks", "tumor_segmentation"), TumorSegmentationSettings),
    (("tasks", "hippocampus_segmentation"), HippocampusSegmentationSettings),
    (("tasks", "tumor_detection"), TumorDetectionSettings),
    (("tasks", "reconstruction"), ReconstructionSettings),
]


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    """A schema node with its local ``$ref`` merged in (the node's own keys win)."""
    if "$ref" not in node:
        return node
    target: Any = SCHEMA
    for part in node["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    return {**_resolve(target), **{k: v for k, v in node.items() if k != "$ref"}}


def _section(path: tuple[str, ...]) -> dict[str, Any]:
    node = _resolve(SCHEMA)
    for key in path:
        node = _resolve(node["properties"][key])
    return node


def _plain(value: Any) -> Any:
    """A dataclass default as the schema writes it (tuples as lists, nested settings as mappings)."""
    if dataclasses.is_dataclass(value):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _differences(node: dict[str, Any], cls: type, where: str) -> list[str]:
    found = []
    properties = node.get("properties", {})
    for field in dataclasses.fields(cls):
        if field.name not in properties:
            continue
        prop = _resolve(properties[field.name])
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()  # type: ignore[misc]
        if dataclasses.is_dataclass(default) and "properties" in prop:
            found += _differences(prop, type(default), f"{where}.{field.name}")
        elif "default" in prop and _plain(default) != prop["default"]:
            found.append(
                f"{where}.{field.name}: schema {prop['default']!r}, {cls.__name__} {_plain(default)!r}"
            )
    return found


@pytest.mark.parametrize(("path", "cls"), SECTIONS, ids=[".".join(p) for p, _ in SECTIONS])
def test_schema_defaults_equal_settings_defaults(path: tuple[str, ...], cls: type) -> None:
    assert _differences(_section(path), cls, ".".join(path)) == []


def test_schema_enums_are_the_registries() -> None:
    """Every list the schema enumerates is the package registry's, in the registry's order."""
    from brainssl.architectures import ARCHS, METHODS
    from brainssl.datasets import DATASETS
    from brainssl.preprocess.settings import NORMALISATION_METHODS, SKULL_STRIP_METHODS
    from brainssl.preprocess.shards import PREPROCESS_DATASETS
    from brainssl.tasks.registry import TASKS

    pretrain = _section(("pretrain",))["properties"]
    assert pretrain["archs"]["items"]["enum"] == list(ARCHS)
    assert pretrain["methods"]["items"]["enum"] == list(METHODS)
    assert SCHEMA["$defs"]["pp_skull_strip"]["enum"] == list(SKULL_STRIP_METHODS)
    assert SCHEMA["$defs"]["pp_norm_method"]["enum"] == list(NORMALISATION_METHODS)
    datasets = _section(("datasets",))["properties"]
    assert [name for name in datasets if name in DATASETS] == list(DATASETS)
    assert list(_section(("slices", "per_dataset"))["properties"]) == list(DATASETS)
    assert list(_section(("preprocess", "per_dataset"))["properties"]) == list(PREPROCESS_DATASETS)
    tasks = _section(("tasks",))["properties"]
    assert sorted(name for name in tasks if name in TASKS) == sorted(TASKS)
