"""The standard export: complete model card, Hugging Face README and config.json beside the weights."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO
from huggingface_hub import ModelCard
from safetensors.torch import load_file

import brainssl
from brainssl import modelcard
from brainssl.io import sha256_file
from brainssl.preprocess import NyulLandmarks, PreprocessSettings
from brainssl.preprocess.cohort import save_landmarks
from brainssl.pretrain import build_encoder, export_encoder
from brainssl.pretrain.export import write_export
from brainssl.slices import SHARD_KEYS, SliceSettings

FAST = {"spacing_mm": 4.0, "skull_strip": "none", "n4": {"enabled": False}}
MARKS = NyulLandmarks((1.0, 50.0, 99.0), (0.0, 40.0, 100.0), n_train=2, contrast="T1w")


def _release(source: str = "synthetic") -> dict:
    return {
        "seed": 7,
        "datasets": {d: {"source": source} for d in ("ixi", "oasis3", "tumor4")},
        "preprocess": {
            "default": FAST,
            "ixi": FAST,
            "oasis3": {**FAST, "normalisation": {"method": "nyul"}},
        },
        "slices": {
            "default": {"size": 32},
            "ixi": {"size": 32},
            "oasis3": {"size": 32},
            "tumor4": {"size": 32},
        },
        "pool_window": [0.3, 0.7],
    }


@pytest.fixture
def run(tmp_path):
    """A training run's folder (weights + training card) and the slice index it was trained on."""
    rows = [
        {"dataset": d, "subject": f"sub-{d}{i}", "session": "ses-none", "contrast": m, "split": split}
        for d, contrasts in (("ixi", ["T1w", "T2w"]), ("oasis3", ["T1w"]), ("tumor4", [""]))
        for i, split in enumerate(["train", "train", "train", "val"])
        for m in contrasts
        for _ in range(2)  # two slices per scan
    ]
    index = tmp_path / "index.parquet"
    pd.DataFrame(rows).to_parquet(index)
    save_landmarks(tmp_path / "nyul_landmarks.json", {"T1w": MARKS})
    encoder = build_encoder("vit_tiny", 32, depth=1).eval()
    export_encoder(
        encoder,
        tmp_path / "moco-vit_tiny/encoder.safetensors",
        tmp_path / "moco-vit_tiny/model_card.json",
        intensity="x",
        manifest_sha256=sha256_file(index),
        config_sha256="c",
        method="moco",
        metrics={"final_loss": 1.5, "step": 10},
        knn={"contrast": 0.9},
    )
    return tmp_path / "moco-vit_tiny", index, encoder


def test_the_export_loads_with_plain_safetensors_and_with_brainssl(run, tmp_path):
    folder, index, encoder = run
    card = write_export(
        folder, folder / "export", index, _release(), landmarks={"oasis3": tmp_path / "nyul_landmarks.json"}
    )
    export = folder / "export"
    assert (export / "encoder.safetensors").read_bytes() == (folder / "encoder.safetensors").read_bytes()
    assert json.loads((export / "model_card.json").read_text()) == card
    config = json.loads((export / "config.json").read_text())
    plain = build_encoder(**config["build_encoder"]).eval()
    plain.load_state_dict(load_file(str(export / "encoder.safetensors")), strict=True)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        want = encoder(x)
        assert torch.equal(plain(x), want) and torch.equal(brainssl.load_encoder(export)(x), want)
    assert config["embedding_dim"] == 192 and config["input"]["range"] == [0.0, 1.0]
    text = (export / "README.md").read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["license"] == "mit" and front["library_name"] == "brainssl"
    assert {"moco", "vit_tiny", "synthetic-data"} <= set(front["tags"])
    assert "datasets" not in front  # Hub dataset ids only; the training-data table names them
    assert "| IXI | synthetic |" in text
    assert "## Preprocessing recipe" in text and "## Limitations" in text and "## Intended use" in text
    # the Hub's own parser reads the front matter as model-card metadata, and the same body
    hub = ModelCard.load(export / "README.md")
    assert (hub.data.license, hub.data.library_name) == ("mit", "brainssl")
    assert hub.data.pipeline_tag == "image-feature-extraction" and hub.data.tags == front["tags"]
    assert hub.text.strip() == text.split("---\n", 2)[2].strip()


def test_the_card_holds_the_recipe_as_numbers_and_the_training_data(run, tmp_path):
    folder, index, _ = run
    card = write_export(
        folder, folder / "export", index, _release(), landmarks={"oasis3": tmp_path / "nyul_landmarks.json"}
    )
    recipes = card["recipe"]["recipes"]
    pre = recipes["ixi"]["preprocess"]
    assert pre["orientation"] == "RAS" and pre["spacing_mm"] == 4.0 and pre["skull_strip"] == "none"
    assert pre["n4"]["enabled"] is False and pre["n4"]["shrink_mm"] == 6.0  # package default filled in
    assert pre["normalisation"] == {
        "method": "zscore",
        "clip_percentiles": [0.5, 99.5],
        "whitestripe_width": 0.05,
        "zero_background": True,
    }
    assert pre["seed"] == 7 and "threads" not in pre
    assert recipes["ixi"]["slices"]["intensity_percentiles"] == [0.5, 99.5]
    assert recipes["ixi"]["slices"]["size"] == 32 and recipes["tumor4"]["preprocess"] is None
    assert card["recipe"]["pooling"]["window"] == [0.3, 0.7]
    assert card["intensity_mapping"]["percentiles"] == [0.5, 99.5]
    # what brainssl embed rebuilds from it, landmarks included
    chosen = modelcard.recipe(card, "oasis3")
    settings = PreprocessSettings.from_dict(chosen["preprocess"])
    assert settings.normalisation.method == "nyul" and settings.spacing_mm == 4.0
    assert NyulLandmarks.from_dict(chosen["landmarks"]["T1w"]) == MARKS
    assert SliceSettings.from_dict(chosen["slices"]).size == 32
    assert modelcard.recipe(card)["name"] == "default"
    data = card["training_data"]
    assert data["synthetic"] and data["subjects"] == 9 and data["slices"] == 2 * 3 * 4
    ixi = next(e for e in data["datasets"] if e["key"] == "ixi")
    assert (ixi["name"], ixi["subjects"], ixi["scans"], ixi["slices"]) == ("IXI", 3, 6, 12)
    assert ixi["slices_per_contrast"] == {"T1w": 6, "T2w": 6} and ixi["held_out_subjects"] == {"val": 1}
    assert card["license"] == "mit" and card["intended_use"]["out_of_scope"] and card["limitations"]
    assert card["knn_probe"] == {"contrast": 0.9} and card["name"] == "moco-vit_tiny"


def test_real_data_and_refusals(run):
    folder, index, _ = run
    card = write_export(folder, folder / "export", index, _release(source="local"))
    assert (
        card["license"] == "other"
        and "IXI (https://brain-development.org/ixi-dataset/)" in card["license_note"]
    )
    assert not card["training_data"]["synthetic"]
    assert "synthetic-data" not in (folder / "export/README.md").read_text().split("---")[1]
    other = index.with_name("other.parquet")
    pd.read_parquet(index).head(3).to_parquet(other)
    with pytest.raises(ValueError, match="another slice index"):
        write_export(folder, folder / "export2", other, _release())
    blob = bytearray((folder / "encoder.safetensors").read_bytes())
    blob[-1] ^= 1
    (folder / "encoder.safetensors").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="differs from the sha256"):
        write_export(folder, folder / "export2", index, _release())


def test_release_params_of_the_test_config():
    from snakemake.utils import update_config, validate

    from brainssl.config import stage_params

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(config, yaml.safe_load((REPO / "config/test.yaml").read_text()))
    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
    release = modelcard.release_params(config)
    assert modelcard.RECIPE_SLICE_KEYS == SHARD_KEYS
    assert sorted(release["slices"]) == sorted(
        ["default", "ixi", "brats21", "fastmri_brain", "oasis3", "tumor4", "abide", "atlas"]
    )
    assert "tumor4" not in release["preprocess"] and release["preprocess"]["brats21"]["skull_strip"] == "none"
    assert release["preprocess"]["oasis3"]["normalisation"]["method"] == "nyul"
    assert release["slices"]["tumor4"]["entropy_mode"] == "absolute"
    assert release["slices"]["default"] == stage_params(config, "slices", keys=list(SHARD_KEYS))
    assert release["pool_window"] == config["embed"]["pool_window"] and release["seed"] == config["seed"]
    assert modelcard.landmark_files(config) == {"oasis3": "results/preprocess/oasis3/nyul_landmarks.json"}
    # the export rule records them; the training rules do not (a new pool window re-runs no training)
    rules = (REPO / "workflow/rules/pretrain.smk").read_text()
    export_rule = rules.split("rule pretrain_export:")[1].split("\nrule ")[0]
    assert "modelcard.release_params(config)" in export_rule
    assert rules.count("release_params") == 1
    assert Path(REPO / "workflow/scripts/pretrain_export.py").is_file()


def test_dataset_names_are_the_layouts():
    from brainssl.datasets.catalog import LAYOUTS

    assert modelcard.DATASET_INFO == {key: (m.INFO.name, m.INFO.source) for key, m in LAYOUTS.items()}
