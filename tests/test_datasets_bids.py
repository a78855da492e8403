"""Any BIDS dataset by config: the generic reader, its messages, the schema and the wiring of user names."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO

from brainssl import wiring
from brainssl.datasets import DatasetLayoutError, build_manifest, finalize_demo, generate_demo_shard
from brainssl.datasets.catalog import subject_seed
from brainssl.datasets.layouts import abide, atlas, bids, bids_entry
from brainssl.datasets.manifest import subject_ids
from brainssl.io import write_table
from brainssl.preprocess.shard_job import derivative_names

SEED, GRID = 3, 4.0
ABIDE = {
    "kind": "bids",
    "contrasts": {"T1w": "T1w"},
    "participants": {"diagnosis": "DX_GROUP", "age": "AGE_AT_SCAN", "sex": "SEX", "site": "SITE_ID"},
    "values": {"diagnosis": {"1": "autism", "2": "control"}, "sex": {"1": "M", "2": "F"}},
}
ATLAS = {
    "kind": "bids",
    "contrasts": {"T1w": "T1w"},
    "mask": atlas.MASK,
    "participants": {"age": "age", "sex": "sex", "site": "site"},
    "sessions": {"days_since_event": "days_since_stroke"},
}


def _demo(root: Path, name: str, n: int) -> Path:
    table = generate_demo_shard(name, root / name, list(range(n)), SEED, GRID, demo=name)
    write_table(root / f"{name}.tsv", table)
    finalize_demo(name, root / name, [root / f"{name}.tsv"], demo=name)
    return root / name


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bids")
    return {"abide": _demo(root, "abide", 4), "atlas": _demo(root, "atlas", 3)}


def test_abide_demo_read_through_generic_bids(demo: dict[str, Path]) -> None:
    manifest, failures = build_manifest("abide", demo["abide"], entry=ABIDE)
    assert failures.empty
    assert list(manifest["native_id"]) == [abide.native_id(i) for i in range(4)]  # 0050002: zeros kept
    assert list(manifest["diagnosis"]) == [abide.diagnosis(i) for i in range(4)]
    assert list(manifest["site"]) == list(abide.SITES)
    assert manifest["session"].eq("ses-1").all() and manifest["contrast"].eq("T1w").all()
    assert manifest["path"].str.endswith("_ses-1_run-1_T1w.nii.gz").all()
    assert manifest["age"].between(7, 35).all() and manifest["sex"].isin(["M", "F"]).all()
    table = pd.read_csv(demo["abide"] / "participants.tsv", sep="\t", dtype=str)
    assert list(table.columns) == ["participant_id", "SITE_ID", "DX_GROUP", "DSM_IV_TR", "AGE_AT_SCAN", "SEX"]
    assert (demo["abide"] / ".bidsignore").read_text() == "_truth\n"
    assert json.loads((demo["abide"] / "dataset_description.json").read_text())["BIDSVersion"]


def test_atlas_demo_masks_and_days_since_stroke(demo: dict[str, Path]) -> None:
    manifest, failures = build_manifest("atlas", demo["atlas"], entry=ATLAS)
    assert failures.empty
    assert list(manifest["days_since_event"]) == [atlas.days_since_stroke(i) for i in (0, 1, 2)]
    assert list(manifest["site"]) == list(atlas.COHORTS)
    assert manifest["seg_path"].str.endswith("_label-L_desc-T1lesion_mask.nii.gz").all()
    lesions = [np.asarray(nib.load(p).dataobj).sum() for p in manifest["seg_path"]]
    assert all(n > 0 for n in lesions)


def _atlas_release(flat: Path, release: Path) -> Path:
    """The flat ATLAS demo laid out as the v2.0 release: Training/<cohort>/ BIDS roots, MNI names."""
    table = pd.read_csv(flat / "participants.tsv", sep="\t", dtype=str)
    for cohort, rows in table.groupby("site"):
        root = release / "Training" / str(cohort)
        root.mkdir(parents=True)
        shutil.copy(flat / "dataset_description.json", root)
        rows.drop(columns="site").to_csv(root / "participants.tsv", sep="\t", index=False)
        for participant in rows["participant_id"]:
            shutil.copytree(flat / participant, root / participant)
            for image in (root / participant).glob("ses-*/anat/*.nii.gz"):
                stem, rest = image.name.split("_ses-1_")
                image.rename(image.with_name(f"{stem}_ses-1_space-MNI152NLin2009aSym_{rest}"))
    return release


def test_atlas_release_of_nested_bids_roots(demo: dict[str, Path], tmp_path: Path) -> None:
    release = _atlas_release(demo["atlas"], tmp_path / "ATLAS_2")
    entry = {**ATLAS, "participants": {"age": "age", "sex": "sex"}, "roots": "Training/R*"}
    nested, failures = build_manifest("atlas", release, entry=entry)
    flat, _ = build_manifest("atlas", demo["atlas"], entry=ATLAS)
    assert failures.empty
    columns = ["native_id", "session", "site", "age", "sex", "days_since_event"]
    pd.testing.assert_frame_equal(nested[columns], flat[columns])  # site: the root's folder name
    assert nested["path"].str.contains("/Training/R00[123]/sub-r00").all()
    assert (
        nested["seg_path"].str.endswith("_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz").all()
    )

    first = nested["native_id"].iloc[0]
    shutil.copytree(
        release / "Training" / "R001" / f"sub-{first}", release / "Training" / "R002" / f"sub-{first}"
    )
    again, failures = build_manifest("atlas", release, entry=entry)
    assert list(again["native_id"]) == list(nested["native_id"])
    (reason,) = failures["reason"]
    assert f"also in {release / 'Training' / 'R001'}" in reason

    with pytest.raises(DatasetLayoutError, match=r"holds nothing matching \['Testing/R\*/sub-\*'\]"):
        build_manifest("atlas", release, entry={**entry, "roots": "Testing/R*"})
    with pytest.raises(DatasetLayoutError, match=r"datasets.atlas.roots: '../R\*' is not a glob"):
        build_manifest("atlas", release, entry={**entry, "roots": "../R*"})


def test_user_names_seed_apart_from_registered_ones() -> None:
    assert subject_seed("abide", 0, SEED) != subject_seed("mycohort", 0, SEED)
    assert subject_seed("ixi", 0, SEED) == subject_seed("ixi", 0, SEED)


def _nifti(path: Path, value: float = 1.0, shape: tuple[int, int, int] = (12, 12, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.full(shape, value, np.float32)
    data[3:9, 3:9, 3:9] += 5.0
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), path)


def _cohort(root: Path) -> Path:
    """Two subjects without sessions: runs, a ce- variant, an acq- file, a coded table."""
    anat = root / "sub-01" / "anat"
    _nifti(anat / "sub-01_run-2_T1w.nii.gz", 2.0)
    _nifti(anat / "sub-01_run-1_T1w.nii.gz", 1.0)
    _nifti(anat / "sub-01_ce-gd_T1w.nii.gz", 3.0)
    _nifti(anat / "sub-01_FLAIR.nii.gz", 4.0)
    _nifti(root / "sub-02" / "anat" / "sub-02_acq-fast_T1w.nii.gz", 1.0)
    (root / "dataset_description.json").write_text('{"Name": "mine", "BIDSVersion": "1.9.0"}')
    (root / "participants.tsv").write_text("participant_id\tdx\tage\nsub-01\tADHD\t9\nsub-02\tTD\tn/a\n")
    return root


def test_runs_entities_and_values_maps(tmp_path: Path) -> None:
    root = _cohort(tmp_path / "mine")
    entry = {
        "kind": "bids",
        "contrasts": {"T1w": "T1w", "T1ce": "ce-gd_T1w", "FLAIR": "FLAIR"},
        "participants": {"diagnosis": "dx", "age": "age"},
        "values": {"diagnosis": {"ADHD": "adhd", "TD": "control"}},
    }
    manifest, failures = build_manifest("mine", root, entry=entry)
    used = {(r.native_id, r.contrast): Path(r.path).name for r in manifest.itertuples()}
    assert used == {
        ("01", "T1w"): "sub-01_run-1_T1w.nii.gz",  # the lowest run, not the ce- variant
        ("01", "T1ce"): "sub-01_ce-gd_T1w.nii.gz",
        ("01", "FLAIR"): "sub-01_FLAIR.nii.gz",
        ("02", "T1w"): "sub-02_acq-fast_T1w.nii.gz",
    }
    assert set(manifest["session"]) == {""}
    labels = manifest.drop_duplicates("native_id").set_index("native_id")
    assert labels.loc["01", "diagnosis"] == "adhd" and labels.loc["01", "age"] == 9.0
    assert labels.loc["02", "diagnosis"] == "control" and np.isnan(labels.loc["02", "age"])
    (note,) = failures["reason"]
    assert "run-1_T1w.nii.gz is used" in note and failures["path"].iloc[0].endswith("run-2_T1w.nii.gz")


def test_a_code_the_map_lacks_costs_only_its_subject(tmp_path: Path) -> None:
    root = _cohort(tmp_path / "mine")
    entry = {"kind": "bids", "participants": {"diagnosis": "dx"}, "values": {"diagnosis": {"TD": "control"}}}
    manifest, failures = build_manifest("mine", root, entry=entry)
    assert set(manifest["native_id"]) == {"02"}
    refused = failures[failures["native_id"] == "01"]["reason"].iloc[0]
    assert "row 2" in refused and "'ADHD'" in refused and "values.diagnosis" in refused


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"participants": {"site": "SITE"}}, ["participants.tsv", "'SITE'", "datasets.mine.participants"]),
        ({"contrasts": {"T2w": "T2w"}}, ["T2w: *_T2w.nii[.gz]", "datasets.mine.contrasts", "FLAIR, T1w"]),
        ({"sessions": {"days_since_event": "days"}}, ["sessions.tsv", "datasets.mine.sessions", "'days'"]),
        ({"mask": "label-L_desc-lesion_mask"}, ["label-L_desc-lesion_mask", "datasets.mine.mask"]),
        ({"participants": {"weight": "w"}}, ["unknown label", "weight"]),
    ],
)
def test_dataset_level_messages_name_what_is_missing(tmp_path: Path, change: dict, words: list[str]) -> None:
    root = _cohort(tmp_path / "mine")
    with pytest.raises(DatasetLayoutError) as err:
        build_manifest("mine", root, entry={"kind": "bids", "contrasts": {"T1w": "T1w"}, **change})
    assert all(word in str(err.value) for word in words), str(err.value)
    assert "mine (BIDS)" in str(err.value)


def test_missing_participants_table_is_named(tmp_path: Path) -> None:
    root = _cohort(tmp_path / "mine")
    (root / "participants.tsv").unlink()
    with pytest.raises(DatasetLayoutError, match=r"participants.tsv is missing.*datasets.mine.participants"):
        build_manifest("mine", root, entry={"kind": "bids", "participants": {"age": "age"}})
    shutil.rmtree(root / "sub-01"), shutil.rmtree(root / "sub-02")
    with pytest.raises(DatasetLayoutError, match=r"holds nothing matching \['sub-\*'\]"):
        build_manifest("mine", root, entry={"kind": "bids"})


def test_spec_and_name_parsing() -> None:
    assert bids_entry.parse_spec("ce-gd_T1w") == bids_entry.FileSpec("ce-gd_T1w", "T1w", (("ce", "gd"),))
    assert bids.parse_name("sub-r001s001_ses-1_space-MNI_label-L_desc-T1lesion_mask.nii.gz") == (
        "mask",
        {"sub": "r001s001", "ses": "1", "space": "MNI", "label": "L", "desc": "T1lesion"},
    )
    assert bids_entry.parse_spec("T1w").matches("T1w", {"sub": "1", "run": "2", "space": "MNI"})
    assert not bids_entry.parse_spec("T1w").matches("T1w", {"sub": "1", "rec": "norm"})
    with pytest.raises(ValueError, match="BIDS suffix"):
        bids_entry.parse_spec("T1w_")


def test_ids_table_maps_pseudonyms_back(demo: dict[str, Path]) -> None:
    manifest, _ = build_manifest("atlas", demo["atlas"], entry=ATLAS)
    ids = subject_ids(manifest)
    assert list(ids.columns) == ["subject", "dataset", "native_id", "sessions"]
    assert list(ids["native_id"]) == sorted(atlas.native_id(i) for i in range(3))
    assert set(ids["subject"]) == set(manifest["subject"]) and ids["sessions"].eq("ses-1").all()


def test_derivative_names_follow_bids() -> None:
    names = derivative_names("sub-0123456789ab", "file_brain_AXT1_201", ["T1w", "T1ce", "PD"], ["T1ce"])
    stem = "sub-0123456789ab/ses-filebrainAXT1201/anat/sub-0123456789ab_ses-filebrainAXT1201"
    assert names["T1w"] == f"{stem}_desc-preproc_T1w.nii.gz"
    assert names["T1ce"] == f"{stem}_ce-gadolinium_desc-preproc_T1w.nii.gz"
    assert names["PD"] == f"{stem}_desc-preproc_PDw.nii.gz"
    assert (
        names["mask"] == f"{stem}_desc-brain_mask.nii.gz"
        and names["seg"] == f"{stem}_desc-preproc_dseg.nii.gz"
    )
    assert derivative_names("sub-x", "", ["T1w"])["T1w"].startswith("sub-x/ses-none/anat/sub-x_ses-none_")


# ---- the config: user-named entries in the schema and the wiring


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def _errors(config: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return sorted(
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(config)
    )


def test_schema_takes_user_named_bids_entries(config: dict[str, Any], schema: dict[str, Any]) -> None:
    assert not _errors(config, schema)
    cfg = copy.deepcopy(config)
    cfg["datasets"]["mycohort"] = {"kind": "bids", "source": "local", "path": "/data/mine"}
    assert not _errors(cfg, schema)
    cfg["datasets"]["mycohort"] = {"source": "local", "path": "/data/mine"}
    assert any("'kind' is a required property" in e for e in _errors(cfg, schema))
    cfg["datasets"]["mycohort"] = {"kind": "bids", "source": "synthetic"}
    assert any("'demo' is a required property" in e for e in _errors(cfg, schema))
    cfg["datasets"]["mycohort"] = {"kind": "bids", "source": "local"}
    assert any("'path' is a required property" in e for e in _errors(cfg, schema))
    cfg["datasets"]["mycohort"] = {"kind": "bids", "source": "local", "path": "/d", "contrasts": {"T3": "x"}}
    assert _errors(cfg, schema)
    del cfg["datasets"]["mycohort"]
    cfg["datasets"]["ixi"]["kind"] = "bids"  # a registered name keeps its own entry
    assert _errors(cfg, schema)


def test_wiring_lists_user_datasets(config: dict[str, Any], schema: dict[str, Any]) -> None:
    from snakemake.utils import validate

    cfg = copy.deepcopy(config)
    cfg["datasets"]["mycohort"] = {"kind": "bids", "source": "local", "path": "/data/mine"}
    validate(cfg, str(REPO / "workflow/schemas/config.schema.yaml"))
    assert cfg["datasets"]["mycohort"]["enabled"] is True  # defaults filled in the user's entry too
    assert cfg["datasets"]["mycohort"]["contrasts"] == {"T1w": "T1w"}
    names = ["abide", "atlas", "mycohort"]
    assert wiring.enabled_datasets(cfg)[-3:] == names and wiring.all_datasets(cfg)[-3:] == names
    assert wiring.preprocess_enabled(cfg)[-3:] == names and wiring.slice_datasets(cfg)[-3:] == names
    assert wiring.bids_demo(cfg, "abide") == "abide" and wiring.bids_demo(cfg, "mycohort") is None
    assert wiring.raw_root(cfg, "mycohort") == "/data/mine" and wiring.raw_ready(cfg, "mycohort") is None
    assert wiring.bids_entry(cfg, "ixi") is None
    assert set(wiring.bids_entry(cfg, "atlas")) == {
        "kind",
        "contrasts",
        "mask",
        "participants",
        "sessions",
        "values",
    }
    assert "neurodevelopmental" in wiring.frozen_tasks(cfg) and "stroke_time" in wiring.frozen_tasks(cfg)
    assert {"classical", "random-vit_tiny"} <= set(
        wiring.embed_encoders(cfg)
    )  # baselines of every frozen task
