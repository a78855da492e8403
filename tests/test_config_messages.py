"""Config mistakes are reported all at once, one short line each, before any job runs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_snakemake

from brainssl.config import stage_params
from brainssl.wiring.checks import ConfigError, check_config, config_errors

SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
TEST_CONFIG = yaml.safe_load((REPO / "config/test.yaml").read_text())


def _three_mistakes() -> dict:
    config = copy.deepcopy(TEST_CONFIG)
    config["pretrain"]["epoch"] = 3  # unknown key (a typo of epochs)
    config["slices"]["size"] = 3  # below the minimum
    config["pretrain"]["archs"] = ["vit_huge"]  # not a registered architecture
    return config


def test_the_shipped_test_config_has_no_problem() -> None:
    assert config_errors(TEST_CONFIG, SCHEMA) == []
    check_config(TEST_CONFIG, SCHEMA, REPO)


def test_three_mistakes_give_three_short_lines_naming_key_value_and_what_is_allowed() -> None:
    lines = config_errors(_three_mistakes(), SCHEMA)
    assert len(lines) == 3, lines
    archs, size, unknown = lines
    assert archs.startswith("pretrain.archs.0 = 'vit_huge': not one of 'vit_tiny'")
    assert size == "slices.size = 3: must be >= 8"
    assert unknown.startswith("unknown key pretrain.epoch (did you mean epochs?); allowed here:")
    assert all(len(line) < 400 for line in lines)


def test_a_missing_local_dataset_folder_is_caught_at_start(tmp_path: Path) -> None:
    config = copy.deepcopy(TEST_CONFIG)
    config["datasets"]["ixi"] = {"source": "local", "path": "not-there"}
    with pytest.raises(ConfigError, match=r"datasets\.ixi\.path = 'not-there': no such folder"):
        check_config(config, SCHEMA, tmp_path)
    (tmp_path / "not-there").mkdir()
    check_config(config, SCHEMA, tmp_path)


def test_snakemake_prints_every_mistake_and_no_schema_dump(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(_three_mistakes()))
    result = run_snakemake("-n", "--configfile", str(config), workdir=tmp_path, timeout=120)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "config has 3 problem(s)" in output
    assert "slices.size = 3: must be >= 8" in output
    assert "additionalProperties" not in output  # the schema is not printed
    assert len(output.splitlines()) < 30, output


def test_per_dataset_overrides_name_user_datasets_and_a_misspelt_one_is_caught() -> None:
    config = copy.deepcopy(yaml.safe_load((REPO / "config.yaml").read_text()))  # has abide and atlas
    config["preprocess"]["per_dataset"]["abide"] = {"skull_strip": "none"}
    config["slices"].setdefault("per_dataset", {})["atlas"] = {"entropy_threshold": 0.0}
    assert config_errors(config, SCHEMA) == []
    assert stage_params(config, "preprocess", "abide")["skull_strip"] == "none"
    config["slices"]["per_dataset"]["atlsa"] = {"entropy_threshold": 0.0}
    with pytest.raises(ConfigError) as err:
        check_config(config, SCHEMA, REPO)
    assert "slices.per_dataset.atlsa: no such dataset in datasets (did you mean atlas?)" in str(err.value)
