"""Manifest: schema checks, pseudonymous ids, merging, demo ids and sharding, montage."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from brainssl.datasets import (
    DATASETS,
    MANIFEST_COLUMNS,
    build_manifest,
    check_manifest,
    demo_subject_ids,
    finalize_demo,
    generate_demo_shard,
    merge_manifests,
    pseudonymize,
    save_montage,
)
from brainssl.io import sha256_file, write_table

SEED = 3
GRID = 4.0


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    root = tmp_path_factory.mktemp("demo")
    out = {}
    for dataset in DATASETS:
        table = generate_demo_shard(dataset, root / dataset, [0, 1, 2], SEED, GRID)
        write_table(root / f"{dataset}.tsv", table)
        finalize_demo(dataset, root / dataset, [root / f"{dataset}.tsv"])
        out[dataset], failures = build_manifest(dataset, root / dataset)
        assert failures.empty
    return out


def test_pseudonymize_known_value_and_stable() -> None:
    expected = "sub-" + hashlib.sha256(b"ixi:IXI002-HH-1000").hexdigest()[:12]
    assert pseudonymize("ixi", "IXI002-HH-1000") == expected
    assert pseudonymize("ixi", "IXI002-HH-1000") == pseudonymize("ixi", "IXI002-HH-1000")
    assert pseudonymize("ixi", "X") != pseudonymize("oasis3", "X")


def test_one_subject_one_id_across_sessions_and_datasets(manifests: dict[str, pd.DataFrame]) -> None:
    merged = merge_manifests(list(manifests.values()))
    pairs = merged[["dataset", "native_id", "subject"]].drop_duplicates()
    assert not pairs.duplicated(["dataset", "native_id"]).any()  # one subject never under two ids
    assert not pairs["subject"].duplicated().any()  # two subjects never share one
    oasis = merged[merged["native_id"] == "OAS30001"]
    assert oasis["session"].nunique() == 2 and oasis["subject"].nunique() == 1
    assert set(merged["subject"]) == {
        pseudonymize(d, n) for d, n in zip(pairs["dataset"], pairs["native_id"], strict=True)
    }


def test_rebuilt_manifest_has_same_ids(manifests: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    root = Path(manifests["ixi"]["path"].iloc[0]).parents[1]
    again, _ = build_manifest("ixi", root)
    pd.testing.assert_frame_equal(again, manifests["ixi"])


def test_manifest_schema_columns_and_dtypes(manifests: dict[str, pd.DataFrame]) -> None:
    merged = merge_manifests(list(manifests.values()))
    assert tuple(merged.columns) == MANIFEST_COLUMNS
    assert set(merged["dataset"]) == set(DATASETS)
    assert merged["age"].dtype == np.float64 and merged["mgmt"].dtype == np.float64


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        ("contrast", "T3w", "'contrast', row 1: value 'T3w'"),
        ("dataset", "ADNI 2", "'dataset', row 1"),  # any lower-case name is a user's BIDS entry
        ("subject", "sub-XYZ", "'subject', row 1"),
        ("sex", "male", "'sex', row 1"),
        ("cdr", 0.7, "'cdr', row 1"),
        ("age", -3.0, "'age', row 1"),
        ("path", "", "'path', row 1: required"),
        ("shape", "90 by 100", "'shape', row 1"),
        ("voxel_x", "2mm", "'voxel_x': expected float"),
        ("split_group", "validation", "'split_group', row 1"),
    ],
)
def test_check_manifest_rejects_bad_row(
    manifests: dict[str, pd.DataFrame], column: str, value: object, words: str
) -> None:
    frame = manifests["brats21"].copy()
    check_manifest(frame)
    if column == "voxel_x":
        frame[column] = frame[column].astype(object)
    frame.loc[1, column] = value
    with pytest.raises(ValueError) as err:
        check_manifest(frame)
    assert words in str(err.value)


def test_check_manifest_rejects_identity_and_column_errors(manifests: dict[str, pd.DataFrame]) -> None:
    frame = manifests["ixi"].copy()
    frame.loc[0, "subject"] = pseudonymize("ixi", "someone else")
    with pytest.raises(ValueError, match="several subject ids"):
        check_manifest(frame)
    frame = manifests["ixi"].copy()
    other = frame["native_id"] != frame.loc[0, "native_id"]
    frame.loc[other, "subject"] = frame.loc[0, "subject"]
    with pytest.raises(ValueError, match="shared by two subjects"):
        check_manifest(frame)
    with pytest.raises(ValueError, match=r"missing \['tumor_class'\]"):
        check_manifest(manifests["ixi"].drop(columns="tumor_class"))
    jpg_without_contrast = manifests["tumor4"].copy()
    jpg_without_contrast["contrast"] = ""
    check_manifest(jpg_without_contrast)  # real 4-class images have no known contrast
    nifti = manifests["ixi"].copy()
    nifti.loc[2, "contrast"] = ""
    with pytest.raises(ValueError, match="'contrast', row 2: required for nifti"):
        check_manifest(nifti)


def test_merge_rejects_duplicate_files(manifests: dict[str, pd.DataFrame]) -> None:
    with pytest.raises(ValueError, match="duplicate path"):
        merge_manifests([manifests["ixi"], manifests["ixi"]])
    merged = merge_manifests([manifests["tumor4"], manifests["ixi"]])
    assert list(merged.index) == list(range(len(merged)))
    assert merged["dataset"].is_monotonic_increasing


def test_demo_subject_ids_stable_and_unique() -> None:
    for dataset in DATASETS:
        ids = demo_subject_ids(dataset, 40)
        assert ids[:5] == demo_subject_ids(dataset, 5)
        assert len(set(ids)) == 40
    assert demo_subject_ids("oasis3", 2) == ["OAS30001", "OAS30002"]
    with pytest.raises(ValueError, match="unknown dataset 'adni'"):
        demo_subject_ids("adni", 3)


def test_subject_files_do_not_depend_on_sharding(tmp_path: Path) -> None:
    alone = generate_demo_shard("tumor4", tmp_path / "a", [2], SEED, GRID)
    together = generate_demo_shard("tumor4", tmp_path / "b", [0, 1, 2], SEED, GRID)
    assert alone.iloc[0].drop("files").equals(together.iloc[2].drop("files"))
    name = alone.iloc[0]["files"]
    assert sha256_file(tmp_path / "a" / name) == sha256_file(tmp_path / "b" / name)


def test_finalize_rejects_overlapping_shards(tmp_path: Path) -> None:
    table = generate_demo_shard("tumor4", tmp_path / "t", [0], SEED, GRID)
    write_table(tmp_path / "c0.tsv", table)
    write_table(tmp_path / "c1.tsv", table)
    with pytest.raises(ValueError, match="appears in two shard tables"):
        finalize_demo("tumor4", tmp_path / "t", [tmp_path / "c0.tsv", tmp_path / "c1.tsv"])


@pytest.mark.parametrize("dataset", ["brats21", "tumor4"])
def test_montage_shows_subjects(manifests: dict[str, pd.DataFrame], tmp_path: Path, dataset: str) -> None:
    out = tmp_path / f"{dataset}.png"
    save_montage(dataset, manifests[dataset], out, n_subjects=2)
    pixels = np.asarray(Image.open(out).convert("L"), dtype=np.float32)
    assert pixels.std() > 10  # images, not a blank canvas
    if dataset == "brats21":  # contours in colour
        rgb = np.asarray(Image.open(out).convert("RGB"), dtype=np.int16)
        assert (np.abs(rgb[..., 0] - rgb[..., 1]) > 100).any()
    with pytest.raises(ValueError, match="no rows of dataset 'ixi'"):
        save_montage("ixi", manifests[dataset], out)


def test_read_manifest_restores_empty_strings_and_floats(tmp_path):
    from brainssl.datasets import read_manifest
    from brainssl.datasets.manifest import make_row, rows_to_frame
    from brainssl.io import write_table

    row = make_row("ixi", "IXI002-Guys-0828", contrast="T1w", path="a.nii.gz", format="nifti", shape="2x2x2")
    written = rows_to_frame([row])
    write_table(tmp_path / "m.tsv", written)
    back = read_manifest(tmp_path / "m.tsv")
    assert back.loc[0, "seg_path"] == "" and back.loc[0, "truth_meta"] == ""
    pd.testing.assert_frame_equal(back, written)
