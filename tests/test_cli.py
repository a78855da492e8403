"""The brainssl command line on demo files: embed equals the workflow's stage functions, card, check."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from brainssl.cli import main
from brainssl.datasets import build_manifest, finalize_demo, generate_demo_shard, read_manifest
from brainssl.embed import EmbedSettings, embed_index, feature_columns
from brainssl.io import write_table
from brainssl.preprocess import PreprocessSettings, preprocess_shard
from brainssl.preprocess.cohort import merge_shards, read_shard_table
from brainssl.pretrain import build_encoder, export_encoder
from brainssl.pretrain.export import write_export
from brainssl.slices import (
    SliceSettings,
    build_slice_shard,
    load_shard_rows,
    merge_slice_index,
    plan_shards,
    read_input_table,
)

SEED = 7
GRID = 4.0
SPLIT = {"train": 1.0, "val": 0.0, "test": 0.0}
# the test config's fast preprocessing (4 mm, short N4); IXI demo heads, no skull strip for speed
PREPROCESS = {
    "spacing_mm": 4.0,
    "skull_strip": "none",
    "max_spacing_mm": 12.0,
    "n4": {"enabled": True, "shrink_mm": 12.0, "iterations": [10, 10]},
    "qc": {"brain_ml": [0.0, 10000.0], "min_snr": 0.0, "allow_fov_contact": True},
}
SLICES = {"size": 32}
POOL = [0.3, 0.7]
RELEASE = {
    "seed": SEED,
    "datasets": {"ixi": {"source": "synthetic"}},
    "preprocess": {"default": PREPROCESS, "ixi": PREPROCESS},
    "slices": {"default": SLICES, "ixi": SLICES},
    "pool_window": POOL,
}


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    """One IXI demo subject through the stage functions the rules call, and an exported encoder."""
    root = tmp_path_factory.mktemp("cli")
    raw = root / "raw/ixi"
    write_table(root / "shard.tsv", generate_demo_shard("ixi", raw, [0], SEED, GRID))
    finalize_demo("ixi", raw, [root / "shard.tsv"])
    manifest, failures = build_manifest("ixi", raw)  # datasets_manifest
    assert failures.empty
    write_table(root / "manifest.tsv", manifest)
    settings = PreprocessSettings.from_dict({**PREPROCESS, "threads": 1, "seed": SEED})
    table, failed = preprocess_shard(manifest, root / "preprocess/sessions", settings)  # preprocess_shard
    write_table(root / "preprocess/shard-0.tsv", table)
    write_table(root / "preprocess/shard-0.failures.tsv", failed)
    table, failed, _ = merge_shards(  # preprocess_merge
        [read_shard_table(root / "preprocess/shard-0.tsv")],
        [read_shard_table(root / "preprocess/shard-0.failures.tsv")],
        read_manifest(root / "manifest.tsv"),
        exclude_flagged=False,
        seed=SEED,
        fractions=SPLIT,
    )
    assert failed.empty and len(table) == 3
    write_table(root / "preprocess/table.tsv", table)
    plan = plan_shards(read_input_table(root / "preprocess/table.tsv"), 1, SPLIT, SEED)  # slices_plan
    write_table(root / "slices/plan.tsv", plan)
    rows = load_shard_rows(root / "preprocess/table.tsv", root / "slices/plan.tsv", 0, root / "manifest.tsv")
    store = root / "slices/ixi/shard-0"
    build_slice_shard(  # slices_shard
        rows,
        SliceSettings.from_dict(SLICES),
        0,
        f"{store}.npy",
        f"{store}.labels.npy",
        f"{store}.index.parquet",
        f"{store}.stats.parquet",
    )
    merge_slice_index([f"{store}.index.parquet"], root / "slices/index.parquet")  # slices_merge
    from brainssl.io import sha256_file

    encoder = build_encoder("vit_tiny", 32, depth=1).eval()
    export_encoder(  # pretrain_random
        encoder,
        root / "run/encoder.safetensors",
        root / "run/model_card.json",
        intensity="x",
        manifest_sha256=sha256_file(root / "slices/index.parquet"),
        config_sha256=None,
        method="random",
    )
    write_export(root / "run", root / "run/export", root / "slices/index.parquet", RELEASE)  # pretrain_export
    embed_index(  # embed_encoder
        root / "slices/index.parquet",
        {"weights": str(root / "run/export/encoder.safetensors")},
        root / "embed/slices.parquet",
        root / "embed/subjects.parquet",
        EmbedSettings(device="cpu", pool_window=tuple(POOL)),
    )
    return root, manifest


def _by_key(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.sort_values(keys).reset_index(drop=True)


def test_embed_of_a_session_equals_the_workflow(workflow, tmp_path, capsys):
    root, manifest = workflow
    out = tmp_path / "emb.parquet"
    files = sorted(manifest["path"])
    code = main(["embed", "--encoder", str(root / "run/export"), *files, "--one-session", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    assert "3 scans" in capsys.readouterr().out
    slices, pooled = pd.read_parquet(tmp_path / "emb.slices.parquet"), pd.read_parquet(out)
    ours = _by_key(slices, ["contrast", "slice_index"])
    theirs = _by_key(pd.read_parquet(root / "embed/slices.parquet"), ["contrast", "slice_index"])
    features = feature_columns(theirs)
    assert len(ours) == len(theirs) > 0 and feature_columns(ours) == features
    np.testing.assert_array_equal(ours[["contrast", "slice_index"]], theirs[["contrast", "slice_index"]])
    np.testing.assert_allclose(ours["position"], theirs["position"])
    np.testing.assert_allclose(ours[features], theirs[features], atol=1e-5)
    units = _by_key(pd.read_parquet(root / "embed/subjects.parquet"), ["contrast"])
    pooled = _by_key(pooled, ["contrast"])
    assert pooled["n_slices"].tolist() == units["n_slices"].tolist()
    np.testing.assert_allclose(pooled[features], units[features], atol=1e-5)
    assert sorted(pooled["image"]) == sorted(str(Path(p).resolve()) for p in files)


def test_embed_of_one_scan_alone_and_its_errors(workflow, tmp_path, capsys):
    root, manifest = workflow
    t1 = manifest.loc[manifest["contrast"] == "T1w", "path"].iloc[0]
    out = tmp_path / "t1.parquet"
    assert main(["embed", "--encoder", str(root / "run/export"), t1, "-o", str(out), "--all-slices"]) == 0
    slices = pd.read_parquet(tmp_path / "t1.slices.parquet")
    theirs = pd.read_parquet(root / "embed/slices.parquet").query("contrast == 'T1w'")
    # every cut slice, and the kept ones are the workflow's (the reference contrast alone is the same)
    assert len(slices) > len(theirs) and set(theirs["slice_index"]) <= set(slices["slice_index"])
    mine = slices.set_index("slice_index").loc[theirs["slice_index"]]
    features = feature_columns(theirs)
    np.testing.assert_allclose(mine[features], theirs[features], atol=1e-5)
    capsys.readouterr()
    assert main(["embed", "--encoder", str(root / "run"), t1, "-o", str(out)]) == 2
    assert "holds no recipe" in capsys.readouterr().err
    assert (
        main(["embed", "--encoder", str(root / "run/export"), t1, "--recipe", "oasis3", "-o", str(out)]) == 2
    )
    assert "no recipe 'oasis3'" in capsys.readouterr().err
    odd = tmp_path / "scan.nii.gz"
    odd.write_bytes(Path(t1).read_bytes())
    assert main(["embed", "--encoder", str(root / "run/export"), str(odd), "-o", str(out)]) == 2
    assert "--contrast" in capsys.readouterr().err


def test_card_prints_the_recipe(workflow, capsys):
    root, _ = workflow
    assert main(["card", str(root / "run/export")]) == 0
    text = capsys.readouterr().out
    assert "orientation RAS, isotropic spacing 4 mm" in text and "pooling: mean" in text
    assert "brain percentiles [0.5, 99.5]" in text and "all synthetic" in text
    assert main(["card", str(root / "run/export"), "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["recipe"]["recipes"]["ixi"]["preprocess"]["spacing_mm"] == 4.0
    assert main(["card", str(root / "run")]) == 0  # the training card: no recipe yet
    printed = capsys.readouterr()
    assert "brain MRI slice encoder" in printed.out and "holds no recipe" in printed.err


def test_check_counts_and_names_what_would_fail(workflow, tmp_path, capsys):
    root, _ = workflow
    assert main(["check", "ixi", str(root / "raw/ixi")]) == 0
    text = capsys.readouterr().out
    assert (
        "read: 3 images of 1 subjects" in text and "PD 1, T1w 1, T2w 1" in text and "failures: none" in text
    )
    broken = tmp_path / "ixi"
    import shutil

    shutil.copytree(root / "raw/ixi", broken)
    t2 = next((broken / "IXI-T2").glob("*.nii.gz"))
    t2.write_bytes(gzip.compress(b"not a nifti"))
    assert main(["check", "ixi", str(broken), "--failures", str(tmp_path / "f.tsv")]) == 1
    text = capsys.readouterr().out
    assert "1 subjects would be left out" in text and t2.name in text
    assert len(pd.read_csv(tmp_path / "f.tsv", sep="\t")) == 1
    assert main(["check", "ixi", str(tmp_path / "nowhere")]) == 2
    assert "Expected layout" in capsys.readouterr().err
    assert main(["check", "mnist", str(broken)]) == 2


def test_check_counts_only_the_subjects_the_failures_cost(tmp_path, capsys):
    """It once counted every native id of failures.tsv: kept subjects' duplicates and stray rows too."""
    from bad_inputs import edit_csv, truncate

    root = tmp_path / "ixi"
    write_table(tmp_path / "shard.tsv", generate_demo_shard("ixi", root, [0, 1], SEED, GRID))
    finalize_demo("ixi", root, [tmp_path / "shard.tsv"])
    kept = next((root / "IXI-T1").glob("IXI002-*.nii.gz"))
    kept.with_suffix("").write_bytes(gzip.decompress(kept.read_bytes()))  # a duplicate; kept
    edit_csv(root / "IXI.csv", lambda rows: rows.append(["12x", *rows[1][1:]]))  # names no subject
    assert main(["check", "ixi", str(root)]) == 0  # nothing lost: the files are only unused
    assert "0 subjects would be left out (2 problems; 2 of them only leave a file or row unused)" in (
        capsys.readouterr().out
    )
    truncate(next((root / "IXI-T2").glob("IXI003-*.nii.gz")))  # loses IXI003
    assert main(["check", "ixi", str(root), "--failures", str(tmp_path / "f.tsv")]) == 1
    text = capsys.readouterr().out
    assert "1 subjects would be left out (3 problems; 2 of them only leave a file or row unused)" in text
    assert "(no subject): " in text
    # the count a manifest run gives: failures.tsv's native ids that the manifest lacks
    manifest, failures = build_manifest("ixi", root)
    assert set(failures["native_id"]) - set(manifest["native_id"]) - {""} == {"IXI003-Guys-8919"}
    assert len(pd.read_csv(tmp_path / "f.tsv", sep="\t")) == len(failures) == 3


def test_check_reads_a_bids_folder_as_the_config_entry_says(tmp_path, capsys):
    root = tmp_path / "abide"
    table = generate_demo_shard("abide", root, [0, 1, 2, 3], SEED, GRID, demo="abide")
    write_table(tmp_path / "shard.tsv", table)
    finalize_demo("abide", root, [tmp_path / "shard.tsv"], demo="abide")
    config = tmp_path / "config.yaml"
    config.write_text((REPO / "config.yaml").read_text())  # its abide entry: DX_GROUP coded 1/2
    assert main(["check", "bids", str(root), "--config", str(config), "--dataset", "abide"]) == 0
    text = capsys.readouterr().out
    assert "BIDS dataset 'abide'" in text and "read: 4 images of 4 subjects" in text
    assert "diagnosis 4" in text and "site 4" in text
    assert main(["check", "bids", str(root)]) == 0  # without a config: T1w, no labels
    assert "labels:" not in capsys.readouterr().out
    (root / "participants.tsv").write_text("participant_id\tDX_GROUP\n")  # no SITE_ID, no rows
    assert main(["check", "bids", str(root), "--config", str(config), "--dataset", "abide"]) == 2
    assert "SITE_ID" in capsys.readouterr().err
    assert main(["check", "bids", str(root), "--config", str(config), "--dataset", "ixi"]) == 2
    assert "entries: abide, atlas" in capsys.readouterr().err


def test_the_console_script_resolves_and_imports_nothing_heavy():
    (script,) = entry_points(group="console_scripts", name="brainssl")
    assert script.value == "brainssl.cli:main" and script.load() is main
    heavy = "{'torch', 'pandas', 'numpy'}"
    code = f"import sys, brainssl.cli as c; c.build_parser(); print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_runtime_dependencies_are_ranges_and_extras_hold_the_workflow():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"brainssl": "brainssl.cli:main"}
    pinned = [spec for spec in project["dependencies"] if "==" in spec]
    assert not pinned, f"exact pins belong in constraints.txt: {pinned}"
    torch = next(spec for spec in project["dependencies"] if spec.startswith("torch"))
    from packaging.specifiers import SpecifierSet

    assert "2.13.0" in SpecifierSet(torch[len("torch") :]), torch
    extras = project["optional-dependencies"]
    assert any(spec.startswith("snakemake") for spec in extras["workflow"])
    assert not any(spec.startswith("snakemake") for spec in project["dependencies"])
    assert "brainssl[workflow]" in extras["dev"]
