"""Native layouts: demo files read back through their readers; bad input ends in failures."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainssl.datasets import DATASETS, DatasetLayoutError, build_manifest, finalize_demo, generate_demo_shard
from brainssl.datasets.catalog import LAYOUTS, subject_seed
from brainssl.datasets.layouts import brats, ixi
from brainssl.io import write_table
from brainssl.synth import SubjectParams, generate_subject

SEED = 7
GRID = 4.0
N_SUBJECTS = 4


def _build(root: Path, dataset: str, n: int = N_SUBJECTS) -> Path:
    shards = []
    for part, indices in enumerate((range(0, n, 2), range(1, n, 2))):
        table = generate_demo_shard(dataset, root / dataset, list(indices), SEED, GRID)
        shards.append(root / f"{dataset}.shard{part}.tsv")
        write_table(shards[-1], table)
    finalize_demo(dataset, root / dataset, shards)
    return root / dataset


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("demo")
    return {dataset: _build(root, dataset) for dataset in DATASETS}


@pytest.fixture
def copy_of(demo: dict[str, Path], tmp_path: Path):
    def copy(dataset: str) -> Path:
        return Path(shutil.copytree(demo[dataset], tmp_path / dataset))

    return copy


def _regenerate(dataset: str, index: int):
    layout = LAYOUTS[dataset]
    params = SubjectParams(**layout.subject_params(index, GRID))
    return generate_subject(subject_seed(dataset, index, SEED), layout.native_id(index), params)


def _assert_volume(path: str, volume, label: bool = False) -> None:
    img = nib.load(path)
    np.testing.assert_allclose(img.affine, volume.affine, atol=1e-4)
    assert img.shape == volume.data.shape
    data = np.asarray(img.dataobj, dtype=np.float32)
    if label:
        np.testing.assert_array_equal(data, volume.data)
    else:  # int16 with slope: error below one quantisation step
        step = float(np.ptp(volume.data)) / 30000
        np.testing.assert_allclose(data, volume.data, atol=step + 1e-6)


@pytest.mark.parametrize("dataset", ["ixi", "brats21", "oasis3"])
def test_nifti_layouts_round_trip_geometry_and_labels(demo: dict[str, Path], dataset: str) -> None:
    manifest, failures = build_manifest(dataset, demo[dataset])
    assert failures.empty
    assert manifest["native_id"].nunique() == N_SUBJECTS
    for index in range(N_SUBJECTS):
        truth = _regenerate(dataset, index)
        rows = manifest[manifest["native_id"] == LAYOUTS[dataset].native_id(index)]
        rows = rows[rows["session"] == rows["session"].min()]
        assert sorted(rows["contrast"]) == sorted(truth.images)
        for row in rows.itertuples():
            volume = truth.images[row.contrast]
            if dataset == "brats21":  # skull-stripped on write
                volume = type(volume)(np.where(truth.brain_mask.data > 0, volume.data, 0), volume.affine)
            _assert_volume(row.path, volume)
            assert (row.voxel_x, row.voxel_y, row.voxel_z) == pytest.approx(truth.meta.voxel_size)
            assert row.shape == "x".join(map(str, volume.data.shape))
            assert row.orientation == "".join(nib.aff2axcodes(volume.affine))
            assert row.age == pytest.approx(truth.meta.age, abs=0.01)
            _assert_volume(row.truth_hippocampus, truth.hippocampus, label=True)
            if dataset == "brats21":
                _assert_volume(row.seg_path, truth.tumor, label=True)
                assert row.mgmt == truth.meta.mgmt and row.idh == truth.meta.idh
                assert row.survival_days == pytest.approx(round(truth.meta.survival_days))
                assert row.event == float(truth.meta.event)
            else:
                assert row.sex == truth.meta.sex
            if dataset == "ixi":
                assert row.site == truth.meta.site
            if dataset == "oasis3":
                assert row.cdr == truth.meta.cdr and row.diagnosis == truth.meta.diagnosis


def test_oasis_second_session_is_same_subject_older(demo: dict[str, Path]) -> None:
    manifest, _ = build_manifest("oasis3", demo["oasis3"])
    first = manifest[manifest["native_id"] == "OAS30001"]
    assert first["session"].nunique() == 2
    assert first["subject"].nunique() == 1
    ages = first.groupby("session")["age"].first()
    assert ages.iloc[1] - ages.iloc[0] == pytest.approx(2.0, abs=0.05)  # days 0 and 730


def test_fastmri_round_trip(demo: dict[str, Path]) -> None:
    from brainssl.datasets.layouts.fastmri import (
        ACQUISITION_CONTRAST,
        ACQUISITIONS,
        MAX_SLICES,
        brain_slices,
        to_slice_stack,
    )
    from brainssl.synth.acquisition import ifft2c

    manifest, failures = build_manifest("fastmri_brain", demo["fastmri_brain"])
    assert failures.empty and len(manifest) == N_SUBJECTS
    for index in range(N_SUBJECTS):
        truth = _regenerate("fastmri_brain", index)
        contrast = ACQUISITION_CONTRAST[ACQUISITIONS[index]]
        stack, affine = to_slice_stack(truth.images[contrast].data, truth.images[contrast].affine)
        mask_stack, _ = to_slice_stack(truth.brain_mask.data, truth.brain_mask.affine)
        picked, affine = brain_slices(mask_stack, affine)
        assert (
            mask_stack[picked].any(axis=(1, 2)).all()
            and len(range(*picked.indices(len(stack)))) <= MAX_SLICES
        )
        stack = stack[picked]
        row = manifest[manifest["native_id"] == LAYOUTS["fastmri_brain"].native_id(index)].iloc[0]
        assert row.contrast == contrast
        with h5py.File(row.path) as handle:
            kspace, rss = handle["kspace"][()], handle["reconstruction_rss"][()]
            assert handle.attrs["acquisition"] == ACQUISITIONS[index]
            assert handle.attrs["max"] == pytest.approx(rss.max())
        assert kspace.shape[0] == stack.shape[0] and kspace.ndim == 4 and kspace.dtype == np.complex64
        np.testing.assert_allclose(rss, stack, rtol=1e-3, atol=1e-3 * stack.max())
        # readout oversampled twice, as in the real files; the target is the centre crop
        assert kspace.shape[2:] == (2 * rss.shape[1], rss.shape[2])
        top = (kspace.shape[2] - rss.shape[1]) // 2
        coil_rss = np.sqrt((np.abs(ifft2c(kspace)) ** 2).sum(1))[:, top : top + rss.shape[1]]
        np.testing.assert_allclose(coil_rss, rss, rtol=1e-3, atol=1e-4 * rss.max())
        zooms = np.linalg.norm(affine[:3, :3], axis=0)
        assert (row.voxel_x, row.voxel_y, row.voxel_z) == pytest.approx(
            (zooms[2], zooms[1], zooms[0]), rel=1e-3
        )
        assert row["shape"] == "x".join(map(str, stack.shape))
        truth_mask = nib.load(row.truth_brain_mask)
        assert truth_mask.shape == stack.shape
        np.testing.assert_allclose(truth_mask.affine, affine, atol=1e-4)


def test_tumor4_round_trip(demo: dict[str, Path]) -> None:
    manifest, failures = build_manifest("tumor4", demo["tumor4"])
    assert failures.empty and len(manifest) == N_SUBJECTS
    for index in range(N_SUBJECTS):
        nid = LAYOUTS["tumor4"].native_id(index)
        row = manifest[manifest["native_id"] == nid].iloc[0]
        truth = _regenerate("tumor4", index)
        expected = truth.meta.pathology if truth.meta.pathology != "none" else "notumor"
        assert row.tumor_class == expected == Path(row.path).parent.name
        assert row.split_group == ("test" if nid.startswith("Te-") else "train")
        assert row.contrast == next(iter(truth.images))
        assert row["shape"] == "256x256" and row.format == "jpg"


def test_hippocampus_round_trip(demo: dict[str, Path]) -> None:
    root = demo["hippocampus"]
    manifest, failures = build_manifest("hippocampus", root)
    assert failures.empty and len(manifest) == N_SUBJECTS
    spec = pd.read_json(root / "dataset.json", typ="series")
    assert spec["labels"] == {"0": "background", "1": "Anterior", "2": "Posterior"}
    assert spec["numTraining"] == 3 and spec["test"] == ["./imagesTs/hippocampus_004.nii.gz"]
    train = manifest[manifest["split_group"] == "train"]
    for row in train.itertuples():
        image, label = nib.load(row.path), nib.load(row.seg_path)
        assert image.shape == label.shape and (row.voxel_x, row.voxel_y, row.voxel_z) == (1.0, 1.0, 1.0)
        np.testing.assert_allclose(image.affine, label.affine)
        data = np.asarray(label.dataobj)
        assert set(np.unique(data)) == {0, 1, 2}
        world = nib.affines.apply_affine(label.affine, np.argwhere(data > 0))[:, 1]
        anterior, posterior = world[data[data > 0] == 1], world[data[data > 0] == 2]
        assert anterior.min() >= posterior.max() - 1e-6  # split along anterior-posterior
    assert (manifest["split_group"] == "test").sum() == 1


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _only_failure(failures: pd.DataFrame, path: Path, words: str) -> None:
    assert len(failures) == 1, failures
    row = failures.iloc[0]
    assert row["path"] == str(path)
    assert words in row["reason"], row["reason"]


def test_truncated_nifti_is_a_failure(copy_of) -> None:
    root = copy_of("ixi")
    bad = root / "IXI-T2" / f"{ixi.native_id(1)}-T2.nii.gz"
    _truncate(bad)
    manifest, failures = build_manifest("ixi", root)
    _only_failure(failures, bad, "truncated")
    assert failures.iloc[0]["native_id"] == ixi.native_id(1)
    assert ixi.native_id(1) not in set(manifest["native_id"]) and manifest["native_id"].nunique() == 3


def test_truncated_hdf5_is_a_failure(copy_of) -> None:
    root = copy_of("fastmri_brain")
    bad = sorted(root.glob("multicoil_train/*.h5"))[0]
    _truncate(bad)
    manifest, failures = build_manifest("fastmri_brain", root)
    _only_failure(failures, bad, "HDF5")
    assert len(manifest) == N_SUBJECTS - 1


def test_missing_contrast_is_a_failure(copy_of) -> None:
    root = copy_of("brats21")
    nid = brats.native_id(2)
    missing = root / nid / f"{nid}_t2.nii.gz"
    missing.unlink()
    manifest, failures = build_manifest("brats21", root)
    _only_failure(failures, missing, "missing")
    assert nid not in set(manifest["native_id"]) and manifest["native_id"].nunique() == 3


def test_nan_volume_is_a_failure(copy_of) -> None:
    root = copy_of("oasis3")
    bad = next(root.glob("sub-OAS30002/ses-*/anat/*_T2w.nii.gz"))
    img = nib.load(bad)
    data = img.get_fdata(dtype=np.float32)
    data[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), bad)
    manifest, failures = build_manifest("oasis3", root)
    _only_failure(failures, bad, "NaN")
    assert "OAS30002" not in set(manifest["native_id"]) and "OAS30001" in set(manifest["native_id"])


def test_4d_volume_is_a_failure(copy_of) -> None:
    root = copy_of("hippocampus")
    bad = root / "imagesTr" / "hippocampus_002.nii.gz"
    img = nib.load(bad)
    data = np.asarray(img.dataobj)
    nib.save(nib.Nifti1Image(np.stack([data, data], axis=-1), img.affine), bad)
    manifest, failures = build_manifest("hippocampus", root)
    _only_failure(failures, bad, "4D")
    assert len(manifest) == N_SUBJECTS - 1


def test_empty_subject_folder_is_a_failure(copy_of) -> None:
    root = copy_of("brats21")
    folder = root / brats.native_id(0)
    shutil.rmtree(folder)
    folder.mkdir()
    manifest, failures = build_manifest("brats21", root)
    _only_failure(failures, folder, "empty")
    assert manifest["native_id"].nunique() == 3


def test_empty_class_folder_and_truncated_jpeg(copy_of) -> None:
    root = copy_of("tumor4")
    bad = root / "Training" / "glioma" / f"{LAYOUTS['tumor4'].native_id(0)}.jpg"
    _truncate(bad)
    (root / "Testing" / "pituitary").mkdir(parents=True)
    manifest, failures = build_manifest("tumor4", root)
    reasons = dict(zip(failures["path"], failures["reason"], strict=True))
    assert set(reasons) == {str(bad), str(root / "Testing" / "pituitary")}
    assert "truncated" in reasons[str(bad)] and "empty folder" in reasons[str(root / "Testing" / "pituitary")]
    assert len(manifest) == N_SUBJECTS - 1


@pytest.mark.parametrize(
    ("dataset", "source"),
    [
        ("ixi", "brain-development.org"),
        ("brats21", "Synapse"),
        ("fastmri_brain", "fastmri.med.nyu.edu"),
        ("oasis3", "oasis-brains.org"),
        ("tumor4", "Masoud Nickparvar"),
        ("hippocampus", "medicaldecathlon.com"),
    ],
)
def test_missing_or_malformed_root_names_dataset_layout_and_source(
    tmp_path: Path, dataset: str, source: str
) -> None:
    info = LAYOUTS[dataset].INFO
    for root in (tmp_path / "absent", tmp_path):  # missing, then present but malformed
        (tmp_path / "stray.txt").write_text("not a dataset")
        with pytest.raises(DatasetLayoutError) as err:
            build_manifest(dataset, root)
        message = str(err.value)
        assert info.name in message and info.layout in message and source in message


def test_ixi_demographics_csv_and_xls_dispatch(
    demo: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    csv = demo["ixi"] / "IXI.csv"
    table = ixi.read_demographics(csv)
    raw = pd.read_csv(csv)
    assert list(table.index) == list(raw["IXI_ID"])
    assert list(table["sex"]) == ["M" if s == 1 else "F" for s in raw["SEX_ID (1=m, 2=f)"]]
    calls = []

    def fake_read_excel(path, engine=None, **kwargs):
        calls.append((Path(path).name, engine))
        return raw.astype(object)  # the reader asks for dtype=object: cells as the sheet has them

    monkeypatch.setattr(pd, "read_excel", fake_read_excel)
    from_xls = ixi.read_demographics(demo["ixi"] / "IXI.xls")
    assert calls == [("IXI.xls", "xlrd")]
    pd.testing.assert_frame_equal(from_xls, table)
    with pytest.raises(ValueError, match="xls or .csv"):
        ixi.read_demographics(demo["ixi"] / "IXI.txt")


def test_ixi_demographics_age_from_dates_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "IXI.csv"
    pd.DataFrame(
        {
            "IXI_ID": [12, 12, 13],
            "SEX_ID (1=m, 2=f)": [1, 1, 2],
            "DOB": ["", "1950-01-01", "1980-06-30"],
            "STUDY_DATE": ["2000-01-01", "2000-01-01", "2005-06-30"],
            "AGE": [np.nan, 50.0, np.nan],
        }
    ).to_csv(path, index=False)
    table = ixi.read_demographics(path)
    assert table.loc[12, "age"] == 50.0
    assert table.loc[13, "age"] == pytest.approx(25.0, abs=0.01) and table.loc[13, "sex"] == "F"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("437", (437.0, 1.0)), ("ALIVE (361 days later)", (361.0, 0.0)), (np.nan, (np.nan, np.nan))],
)
def test_parse_survival(value: object, expected: tuple[float, float]) -> None:
    np.testing.assert_equal(brats.parse_survival(value), expected)


def test_brats_tables_as_in_real_release(demo: dict[str, Path]) -> None:
    root = demo["brats21"]
    labels = pd.read_csv(root / "train_labels.csv")
    assert list(labels.columns) == ["BraTS21ID", "MGMT_value"] and labels["BraTS21ID"].dtype.kind == "i"
    survival = pd.read_csv(root / "survival_info.csv", dtype=str)
    assert list(survival.columns) == ["Brats20ID", "Age", "Survival_days", "Extent_of_Resection"]
    assert survival["Survival_days"].str.fullmatch(r"\d+|ALIVE \(\d+ days later\)").all()


def test_truth_stays_outside_native_tree(demo: dict[str, Path]) -> None:
    for dataset, root in demo.items():
        manifest, _ = build_manifest(dataset, root)
        assert not manifest["path"].str.contains("/_truth/").any()
        assert manifest["truth_meta"].str.contains(f"{root}/_truth/").all(), dataset
    gz = next((demo["ixi"] / "IXI-T1").glob("*.nii.gz"))
    assert gzip.open(gz).read(348)  # a real gzip NIfTI
    img = nib.load(gz)
    assert img.get_data_dtype() == np.int16 and img.dataobj.slope not in (0.0, 1.0)


def test_hippocampus_without_dataset_json_skips_macos_junk(copy_of) -> None:
    root = copy_of("hippocampus")
    (root / "dataset.json").unlink()
    (root / "imagesTr" / "._hippocampus_001.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    manifest, failures = build_manifest("hippocampus", root)
    assert failures.empty
    assert sorted(manifest["split_group"]) == ["test", "train", "train", "train"]
    assert (manifest["seg_path"] != "").sum() == 3
