"""Dataset-level preprocessing: merged tables, the exclude switch, QC plot, landmarks, fastMRI."""

from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainssl.datasets.layouts.errors import SubjectError
from brainssl.datasets.layouts.fastmri import load_rss, rss_affine
from brainssl.io import write_table
from brainssl.preprocess import FAILURE_COLUMNS, TABLE_COLUMNS, PreprocessSettings, preprocess_shard
from brainssl.preprocess.cohort import (
    QC_COLUMNS,
    fit_landmarks,
    load_landmarks,
    merge_shards,
    plot_qc_summary,
    read_shard_table,
    save_landmarks,
)

FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}
PLAIN = {"spacing_mm": 2.0, "skull_strip": "none", "n4": {"enabled": False}}


def _shard_table(subjects: dict[str, str]) -> pd.DataFrame:
    rows = []
    for subject, flags in subjects.items():
        for contrast in ("T1w", "T2w"):
            row = dict.fromkeys(TABLE_COLUMNS, "")
            row.update(
                dataset="ixi",
                subject=subject,
                session="ses-none",
                contrast=contrast,
                path=f"/out/{subject}/{contrast}.nii.gz",
                brain_ml=1200.0,
                snr=20.0,
                bias_std=0.1,
                dice=0.97,
                qc_flags=flags,
                seconds_total=2.0,
            )
            rows.append(row)
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


MANIFEST = pd.DataFrame({"subject": ["sub-a", "sub-b", "sub-c"], "split_group": ["", "", "test"]})


@pytest.mark.parametrize("exclude", [True, False])
def test_flagged_session_is_excluded_only_when_the_switch_is_on(tmp_path: Path, exclude: bool) -> None:
    shards = [_shard_table({"sub-a": "", "sub-b": "brain volume 300 ml outside [800, 2400] ml"})]
    shards.append(_shard_table({"sub-c": ""}))
    # through files, as the workflow passes them (an empty flag must read back as "")
    paths = []
    for index, frame in enumerate(shards):
        write_table(tmp_path / f"shard-{index}.tsv", frame)
        paths.append(tmp_path / f"shard-{index}.tsv")
    failures = [pd.DataFrame(columns=list(FAILURE_COLUMNS))]
    table, merged_failures, qc = merge_shards(
        [read_shard_table(p) for p in paths],
        failures,
        MANIFEST,
        exclude_flagged=exclude,
        seed=1,
        fractions=FRACTIONS,
    )
    assert ("sub-b" in set(table["subject"])) is not exclude
    assert {"sub-a", "sub-c"} <= set(table["subject"])
    assert list(qc.columns) == list(QC_COLUMNS) and len(qc) == 3
    flagged = qc.set_index("subject")
    assert flagged.loc["sub-b", "flagged"] and "brain volume" in flagged.loc["sub-b", "qc_flags"]
    assert bool(flagged.loc["sub-b", "excluded"]) is exclude
    assert not flagged.loc["sub-a", "flagged"]
    assert flagged.loc["sub-c", "split"] == "test"  # the dataset's own split wins
    assert merged_failures.empty
    plot_qc_summary(qc, tmp_path / "qc_summary.png", title="ixi")
    assert (tmp_path / "qc_summary.png").stat().st_size > 10_000


def test_qc_plot_with_no_sessions(tmp_path: Path) -> None:
    plot_qc_summary(pd.DataFrame(columns=list(QC_COLUMNS)), tmp_path / "empty.png", title="none")
    assert (tmp_path / "empty.png").exists()


def _blob_head(seed: int, scale: float, shape=(40, 44, 40)) -> nib.Nifti1Image:
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    radius = np.sqrt((grid**2).sum(axis=0))
    data = np.where(radius < 0.8, 100.0 + 60.0 * (radius < 0.45), 0.0) * scale
    data += rng.normal(0, 1.0, shape)
    return nib.Nifti1Image(np.abs(data).astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))


def test_landmarks_are_fitted_per_contrast_and_round_trip(tmp_path: Path) -> None:
    rows = []
    for index in range(3):
        path = tmp_path / f"s{index}.nii.gz"
        nib.save(_blob_head(index, 1.0 + index), path)
        rows.append(
            {"dataset": "ixi", "subject": f"sub-{index}", "session": "", "contrast": "T1w", "path": str(path)}
        )
    # the blobs are small heads: a brain-volume range they pass (landmarks use QC-passing sessions only)
    settings = PreprocessSettings.from_dict({**PLAIN, "qc": {"brain_ml": [50.0, 5000.0]}})
    landmarks = fit_landmarks(pd.DataFrame(rows), settings)
    assert list(landmarks) == ["T1w"] and landmarks["T1w"].n_train == 3
    save_landmarks(tmp_path / "landmarks.json", landmarks)
    assert load_landmarks(tmp_path / "landmarks.json") == landmarks
    # and a shard normalises with them
    nyul = PreprocessSettings.from_dict({**PLAIN, "normalisation": {"method": "nyul"}})
    table, failures = preprocess_shard(pd.DataFrame(rows[:1]), tmp_path / "out", nyul, landmarks=landmarks)
    assert failures.empty and len(table) == 1


def _write_fastmri(path: Path, rss: np.ndarray, spacing=(2.0, 2.0, 8.0)) -> None:
    header = (
        '<?xml version="1.0"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding><reconSpace>'
        # ISMRMRD x is the readout = rows of fastMRI's arrays, y the columns
        f"<matrixSize><x>{rss.shape[1]}</x><y>{rss.shape[2]}</y><z>1</z></matrixSize>"
        f"<fieldOfView_mm><x>{rss.shape[1] * spacing[1]}</x><y>{rss.shape[2] * spacing[0]}</y>"
        f"<z>{spacing[2]}</z></fieldOfView_mm></reconSpace></encoding></ismrmrdHeader>"
    )
    with h5py.File(path, "w") as handle:
        handle.create_dataset("reconstruction_rss", data=rss.astype(np.float32))
        handle.create_dataset("ismrmrd_header", data=np.bytes_(header.encode()))


def test_fastmri_rss_loads_with_a_header_affine(tmp_path: Path) -> None:
    rss = np.zeros((6, 20, 16), dtype=np.float32)
    rss[2, 5, 3] = 1.0
    _write_fastmri(tmp_path / "file_brain_AXT1_201_600000.h5", rss, spacing=(1.5, 2.0, 7.0))
    img = load_rss(tmp_path / "file_brain_AXT1_201_600000.h5")
    assert img.shape == (6, 20, 16)
    assert nib.aff2axcodes(img.affine) == ("S", "P", "L")
    assert np.allclose(img.header.get_zooms(), (7.0, 2.0, 1.5))
    # centred on the origin
    centre = img.affine @ np.r_[(np.array(img.shape) - 1) / 2.0, 1.0]
    assert np.allclose(centre[:3], 0.0)
    assert np.allclose(rss_affine((1.5, 2.0, 7.0), rss.shape), img.affine)
    with h5py.File(tmp_path / "bad.h5", "w") as handle:
        handle.create_dataset("kspace", data=np.zeros((1, 1, 2, 2), dtype=np.complex64))
    with pytest.raises(SubjectError, match="reconstruction_rss"):
        load_rss(tmp_path / "bad.h5")


def test_fastmri_rows_run_through_a_shard(tmp_path: Path) -> None:
    head = np.asarray(_blob_head(0, 1.0, shape=(12, 40, 36)).dataobj)
    path = tmp_path / "file_brain_AXT2_201_600001.h5"
    _write_fastmri(path, head, spacing=(2.0, 2.0, 6.0))
    rows = pd.DataFrame(
        [{"dataset": "fastmri_brain", "subject": "sub-f", "session": "", "contrast": "T2w",
          "path": str(path), "format": "fastmri_h5"}]
    )  # fmt: skip
    settings = PreprocessSettings.from_dict(PLAIN)
    table, failures = preprocess_shard(rows, tmp_path / "out", settings)
    assert failures.empty, failures["reason"].tolist()
    out = nib.load(table["path"].iloc[0])
    assert nib.aff2axcodes(out.affine) == ("R", "A", "S") and np.allclose(out.header.get_zooms(), 2.0)
