"""The rules' config slices name exactly the settings the package uses."""

from __future__ import annotations

import re
from pathlib import Path

from brainssl.slices import FIGURE_KEYS, PLAN_KEYS, SHARD_KEYS, SliceSettings

RULES = Path(__file__).resolve().parents[1] / "workflow" / "rules" / "slices.smk"


def test_rule_key_lists_match_the_package() -> None:
    slices_call = r'stage_params\(\s*config,\s*"slices",.*?keys=\[(.*?)\]'
    slices_calls = re.findall(slices_call, RULES.read_text(), re.S)
    lists = [re.findall(r'"(\w+)"', block) for block in slices_calls]
    assert lists == [list(PLAN_KEYS), list(SHARD_KEYS), list(FIGURE_KEYS)]


def test_every_setting_is_used_by_some_rule() -> None:
    names = set(SliceSettings.__dataclass_fields__)
    assert names == set(PLAN_KEYS) | set(FIGURE_KEYS)
