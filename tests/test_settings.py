"""The one conversion from a config mapping to a settings dataclass, and its callers."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from brainssl.embed.embed import EmbedSettings
from brainssl.preprocess.settings import PreprocessSettings
from brainssl.pretrain.settings import PretrainSettings
from brainssl.settings import UnknownSettingError, from_mapping
from brainssl.slices.settings import SliceSettings
from brainssl.tasks.representation import RepresentationSettings
from brainssl.tasks.scratch import ScratchSettings


@dataclass(frozen=True)
class Inner:
    window: tuple[float, float] = (0.0, 1.0)
    names: tuple[str, ...] = ("a",)


@dataclass(frozen=True)
class Outer:
    inner: Inner = Inner()
    optional: Inner | None = None
    clip: tuple[float, float] | None = None
    steps: tuple[int, ...] = (1,)
    label: str = "x"


def test_nested_sections_tuples_and_defaults() -> None:
    built = from_mapping(
        Outer, {"inner": {"window": [0, 2]}, "optional": {}, "clip": [1, 99], "steps": [3, 4]}
    )
    assert built.inner == Inner(window=(0.0, 2.0))
    assert isinstance(built.inner.window[0], float)
    assert built.optional == Inner()
    assert built.clip == (1.0, 99.0)
    assert built.steps == (3, 4) and isinstance(built.steps[0], int)
    assert built.label == "x"
    assert from_mapping(Outer, {"clip": None}).clip is None


def test_unknown_key_names_its_path_and_the_allowed_keys() -> None:
    with pytest.raises(UnknownSettingError, match=r"setting\(s\) cfg\.labl; allowed: \['clip'"):
        from_mapping(Outer, {"labl": "y"}, section="cfg")
    with pytest.raises(UnknownSettingError, match=r"cfg\.inner\.windw; allowed: \['names', 'window'\]"):
        from_mapping(Outer, {"inner": {"windw": [0, 1]}}, section="cfg")


@pytest.mark.parametrize(
    "cls",
    [
        SliceSettings,
        PreprocessSettings,
        PretrainSettings,
        EmbedSettings,
        ScratchSettings,
        RepresentationSettings,
    ],
)
def test_every_stage_rejects_an_unknown_key_the_same_way(cls: type) -> None:
    with pytest.raises(UnknownSettingError, match="not_a_setting; allowed"):
        cls.from_dict({"not_a_setting": 1})


def test_stage_settings_build_their_nested_sections() -> None:
    pre = PreprocessSettings.from_dict({"registration": {"level_mm": [8, 4]}, "qc": {"brain_ml": [1, 2]}})
    assert pre.registration.level_mm == (8.0, 4.0)
    assert pre.qc.brain_ml == (1.0, 2.0)
    pretrain = PretrainSettings.from_dict({"augment": {"gamma": [0.5, 2]}})
    assert pretrain.augment.gamma == (0.5, 2.0)
