"""Bad-input matrix of the dataset manifests: one damaged or odd input per case, six datasets.

Each dataset's demo cohort is generated once (module fixture) and copied per case. A case
damages the copy and says what it expects: the message (a failures-table row naming the file,
a dataset-level error, or a logged warning), which subjects are lost, and that every other
subject's manifest rows are identical to those of the clean read (reading goes on).

File surgery and the simulated permissions are in ``bad_inputs.py`` (shared with the mixed
workflow run). Permissions: the tests run as root here, where ``chmod 000`` does not deny
reads, so unreadable files and folders are simulated (:class:`bad_inputs.Deny`). The one
real-``chmod`` case is skipped when running as root.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import pandas as pd
import pytest
from bad_inputs import (
    Deny,
    add_latin1_column,
    drop_column,
    edit_csv,
    flipped,
    folder_in_place,
    read_spec,
    rewrite_nifti,
    set_cell,
    small_nifti,
    stretched,
    symlink_loop,
    truncate,
    write_spec,
)
from PIL import Image

from brainssl.attrition import lost_native_ids
from brainssl.datasets import DATASETS, build_manifest, finalize_demo, generate_demo_shard
from brainssl.datasets.catalog import LAYOUTS
from brainssl.datasets.layouts.errors import DatasetLayoutError, NoUsableSubjectsError
from brainssl.datasets.layouts.files import MIN_IMAGE_SIZE, MIN_VOLUME_SIZE
from brainssl.io import write_table

SEED = 7
GRID = 4.0
N_SUBJECTS = 4
PATH_COLUMNS = (
    "path",
    "seg_path",
    "truth_brain_mask",
    "truth_tissue",
    "truth_hippocampus",
    "truth_bias_field",
    "truth_meta",
)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, pd.DataFrame]]:
    root = tmp_path_factory.mktemp("clean")
    out = {}
    for dataset in DATASETS:
        table = generate_demo_shard(dataset, root / dataset, list(range(N_SUBJECTS)), SEED, GRID)
        write_table(root / f"{dataset}.tsv", table)
        finalize_demo(dataset, root / dataset, [root / f"{dataset}.tsv"])
        manifest, failures = build_manifest(dataset, root / dataset)
        assert failures.empty, failures
        out[dataset] = (root / dataset, manifest)
    return out


def nid(dataset: str, index: int) -> str:
    return LAYOUTS[dataset].native_id(index)


# --------------------------------------------------------------------------- what a case expects


@dataclass
class Expect:
    """What one bad input must give.

    Attributes:
        failures: ``(path relative to the root, words in the reason)``, one per failure row;
            exactly these rows.
        lost: native ids left out of the manifest.
        changed: native ids kept whose rows differ on purpose (the case checks them).
        extra: native ids that may gain rows (files added by the case).
        raises: ``(error type, words)`` of a dataset-level error instead of a manifest.
        log: words of a logged warning.
        check: a further check of the manifest.
    """

    failures: list[tuple[str, str]] = field(default_factory=list)
    lost: set[str] = field(default_factory=set)
    changed: set[str] = field(default_factory=set)
    extra: set[str] = field(default_factory=set)
    raises: tuple[type[Exception], str] | None = None
    log: str | None = None
    check: Callable[[pd.DataFrame], None] | None = None


# --------------------------------------------------------------------------- IXI


def ixi_image(root: Path, index: int, contrast: str) -> Path:
    return root / f"IXI-{contrast}" / f"{nid('ixi', index)}-{contrast}.nii.gz"


def ixi_latin1_byte(root: Path, deny: Deny) -> Expect:
    add_latin1_column(root / "IXI.csv", 1)
    return Expect(log="IXI.csv: not valid UTF-8 (byte 0xe9 on line 3); read as latin-1")


def ixi_age_malformed(root: Path, deny: Deny) -> Expect:
    edit_csv(root / "IXI.csv", set_cell("AGE", 1, "sixty"))
    return Expect(failures=[("IXI.csv", "row 3: AGE 'sixty' is not a number")], lost={nid("ixi", 1)})


def ixi_age_unknown(root: Path, deny: Deny) -> Expect:
    edit_csv(root / "IXI.csv", set_cell("AGE", 2, "unknown"))
    edit_csv(root / "IXI.csv", set_cell("DOB", 2, ""))

    def check(manifest: pd.DataFrame) -> None:
        rows = manifest[manifest["native_id"] == nid("ixi", 2)]
        assert len(rows) == 3 and rows["age"].isna().all() and (rows["sex"] == "M").all()

    return Expect(changed={nid("ixi", 2)}, check=check)


def ixi_id_malformed(root: Path, deny: Deny) -> Expect:
    def change(rows: list[list[str]]) -> None:
        rows.append(["12x", "1", "170", "70", "1", "1", "1", "1", "1950-01-01", "1", "2005-01-01", "55"])

    edit_csv(root / "IXI.csv", change)
    return Expect(failures=[("IXI.csv", "row 6: IXI_ID '12x' is not a number; row not used")])


def ixi_bad_row_without_images(root: Path, deny: Deny) -> Expect:
    def change(rows: list[list[str]]) -> None:
        rows.append(["99", *rows[1][1:]])
        rows[-1][rows[0].index("AGE")] = "sixty"

    edit_csv(root / "IXI.csv", change)
    # IXI.csv lists more subjects than have images: a bad row of one of them costs no subject
    return Expect(
        failures=[("IXI.csv", "row 6: AGE 'sixty' is not a number (IXI099 has no images; row not used)")]
    )


def ixi_missing_id_column(root: Path, deny: Deny) -> Expect:
    edit_csv(root / "IXI.csv", drop_column("IXI_ID"))
    return Expect(raises=(DatasetLayoutError, "IXI.csv: missing column(s) ['IXI_ID']"))


def ixi_nii_beside_niigz(root: Path, deny: Deny) -> Expect:
    gz = ixi_image(root, 0, "T1")
    plain = gz.with_name(gz.name.removesuffix(".gz"))
    plain.write_bytes(gzip.decompress(gz.read_bytes()))
    return Expect(failures=[(str(plain.relative_to(root)), "duplicate T1w image: " + gz.name + " is used")])


def ixi_file_unreadable(root: Path, deny: Deny) -> Expect:
    bad = ixi_image(root, 1, "T2")
    deny(bad)
    return Expect(failures=[(str(bad.relative_to(root)), "permission denied")], lost={nid("ixi", 1)})


def ixi_symlink_loop(root: Path, deny: Deny) -> Expect:
    bad = ixi_image(root, 2, "PD")
    symlink_loop(bad)
    return Expect(failures=[(str(bad.relative_to(root)), "PD image is a symlink loop")], lost={nid("ixi", 2)})


def ixi_singleton_4d(root: Path, deny: Deny) -> Expect:
    rewrite_nifti(ixi_image(root, 0, "T1"), lambda data, affine: (data[..., None], affine))
    return Expect()  # read as 3D: the manifest row is the clean one


def ixi_too_small(root: Path, deny: Deny) -> Expect:
    bad = ixi_image(root, 3, "T1")
    small_nifti(bad)
    return Expect(
        failures=[
            (
                str(bad.relative_to(root)),
                f"too small to process: shape 4x4x4, every axis needs at least {MIN_VOLUME_SIZE}",
            )
        ],
        lost={nid("ixi", 3)},
    )


# --------------------------------------------------------------------------- BraTS


def brats_file(root: Path, index: int, suffix: str) -> Path:
    name = nid("brats21", index)
    return root / name / f"{name}_{suffix}.nii.gz"


def brats_id_malformed(root: Path, deny: Deny) -> Expect:
    edit_csv(root / "train_labels.csv", lambda rows: rows.append(["abc", "1"]))
    return Expect(
        failures=[("train_labels.csv", "row 6: BraTS21ID 'abc' is not a case number; row not used")]
    )


def brats_mgmt_malformed(root: Path, deny: Deny) -> Expect:
    edit_csv(root / "train_labels.csv", set_cell("MGMT_value", 1, "yes"))
    return Expect(
        failures=[("train_labels.csv", "row 3: MGMT_value 'yes' is not one of ['0', '1']")],
        lost={nid("brats21", 1)},
    )


def brats_listed_twice(root: Path, deny: Deny) -> Expect:
    edit_csv(root / "train_labels.csv", lambda rows: rows.append(["0", "0"]))
    return Expect(
        failures=[("train_labels.csv", "row 6: mgmt 0.0 contradicts 1.0 from train_labels.csv row 2")],
        lost={nid("brats21", 0)},
    )


def brats_age_malformed(root: Path, deny: Deny) -> Expect:
    edit_csv(root / "survival_info.csv", set_cell("Age", 2, "sixty"))
    return Expect(
        failures=[("survival_info.csv", "row 4: Age 'sixty' is not a number")], lost={nid("brats21", 2)}
    )


def brats_age_unknown(root: Path, deny: Deny) -> Expect:
    edit_csv(root / "survival_info.csv", set_cell("Age", 3, "unknown"))

    def check(manifest: pd.DataFrame) -> None:
        rows = manifest[manifest["native_id"] == nid("brats21", 3)]
        assert len(rows) == 4 and rows["age"].isna().all() and (rows["survival_days"] == 21).all()

    return Expect(changed={nid("brats21", 3)}, check=check)


def brats_survival_malformed(root: Path, deny: Deny) -> Expect:
    edit_csv(root / "survival_info.csv", set_cell("Survival_days", 0, "ALIVE soon"))
    return Expect(
        failures=[("survival_info.csv", "row 2: Survival_days 'ALIVE soon' is not a number")],
        lost={nid("brats21", 0)},
    )


def brats_ragged_row(root: Path, deny: Deny) -> Expect:
    with (root / "survival_info.csv").open("a", encoding="utf-8") as handle:
        handle.write("BraTS20_Training_099,60,100,GTR,extra\n")
    return Expect(failures=[("survival_info.csv", "row 6: 5 cells but the header has 4; row not used")])


def brats_missing_column(root: Path, deny: Deny) -> Expect:
    edit_csv(root / "molecular_labels.csv", drop_column("IDH"))
    return Expect(
        raises=(
            DatasetLayoutError,
            "molecular_labels.csv: missing column(s) ['IDH'] (the header has ['BraTS21ID']); "
            "expected columns ['BraTS21ID', 'IDH']",
        )
    )


def brats_folder_unreadable(root: Path, deny: Deny) -> Expect:
    folder = root / nid("brats21", 2)
    deny(folder)
    return Expect(
        failures=[(folder.name, "permission denied: cannot list the subject folder")],
        lost={nid("brats21", 2)},
    )


def brats_other_orientation(root: Path, deny: Deny) -> Expect:
    bad = brats_file(root, 1, "t2")
    rewrite_nifti(bad, flipped)
    return Expect(
        failures=[(str(bad.relative_to(root)), "but orientation LAS differs from the segmentation's RAS")],
        lost={nid("brats21", 1)},
    )


def brats_other_spacing(root: Path, deny: Deny) -> Expect:
    bad = brats_file(root, 3, "flair")
    rewrite_nifti(bad, stretched)
    return Expect(
        failures=[(str(bad.relative_to(root)), "but voxel spacing")],
        lost={nid("brats21", 3)},
    )


def brats_folder_for_file(root: Path, deny: Deny) -> Expect:
    bad = brats_file(root, 0, "t1ce")
    folder_in_place(bad)
    return Expect(
        failures=[(str(bad.relative_to(root)), "T1ce image is a folder where a file is expected")],
        lost={nid("brats21", 0)},
    )


# --------------------------------------------------------------------------- fastMRI


def fastmri_file(root: Path, index: int) -> Path:
    return root / "multicoil_train" / f"{nid('fastmri_brain', index)}.h5"


def fastmri_same_patient_and_acquisition(root: Path, deny: Deny) -> Expect:
    first = fastmri_file(root, 0)
    second = root / "file_brain_AXT1_201_600099.h5"
    shutil.copyfile(first, second)  # same patient_id and acquisition attributes

    def check(manifest: pd.DataFrame) -> None:
        rows = manifest[manifest["native_id"] == first.stem]
        assert sorted(rows["session"]) == sorted([first.stem, second.stem])
        assert rows["subject"].nunique() == 1 and set(rows["contrast"]) == {"T1w"}
        assert not manifest.duplicated(["subject", "session", "contrast"]).any()

    return Expect(extra={first.stem}, check=check)


def fastmri_folder_unreadable(root: Path, deny: Deny) -> Expect:
    folder = root / "multicoil_val"
    folder.mkdir()
    moved = folder / fastmri_file(root, 1).name
    shutil.move(fastmri_file(root, 1), moved)
    deny(folder)
    return Expect(
        failures=[("multicoil_val", "permission denied: cannot list the folder")],
        lost={nid("fastmri_brain", 1)},
    )


def fastmri_too_small(root: Path, deny: Deny) -> Expect:
    bad = fastmri_file(root, 2)
    with h5py.File(bad, "r+") as handle:
        for name in ("kspace", "reconstruction_rss"):
            data = handle[name][:4]
            del handle[name]
            handle.create_dataset(name, data=data)
    return Expect(
        failures=[(str(bad.relative_to(root)), "reconstruction_rss too small to process: shape 4x")],
        lost={nid("fastmri_brain", 2)},
    )


def fastmri_folder_named_like_file(root: Path, deny: Deny) -> Expect:
    (root / "file_brain_AXT2_209_600123.h5").mkdir()
    return Expect(
        failures=[("file_brain_AXT2_209_600123.h5", "HDF5 file is a folder where a file is expected")],
        lost={"file_brain_AXT2_209_600123"},  # counted lost, as a broken link of that name would be
    )


def fastmri_name_twice(root: Path, deny: Deny) -> Expect:
    (root / "other").mkdir()
    copy = root / "other" / fastmri_file(root, 3).name
    shutil.copyfile(fastmri_file(root, 3), copy)
    return Expect(failures=[(f"other/{copy.name}", "a second file named " + copy.name)])


def fastmri_file_unreadable(root: Path, deny: Deny) -> Expect:
    bad = fastmri_file(root, 3)
    deny(bad)
    return Expect(
        failures=[(str(bad.relative_to(root)), "permission denied: cannot read the HDF5 file")],
        lost={nid("fastmri_brain", 3)},
    )


# --------------------------------------------------------------------------- OASIS-3


def oasis_anat(root: Path, index: int) -> Path:
    return next((root / f"sub-{nid('oasis3', index)}").glob("ses-*/anat"))


def oasis_second_run(root: Path, deny: Deny) -> Expect:
    anat = oasis_anat(root, 1)  # this demo subject's T1w is run-01
    first = next(anat.glob("*_run-01_T1w.nii.gz"))
    second = anat / first.name.replace("run-01", "run-02")
    shutil.copyfile(first, second)
    return Expect(
        failures=[(str(second.relative_to(root)), f"another T1w image of this session: {first.name} is used")]
    )


def oasis_run_beside_plain(root: Path, deny: Deny) -> Expect:
    anat = oasis_anat(root, 2)
    plain = next(anat.glob("*_T1w.nii.gz"))
    run = anat / plain.name.replace("_T1w", "_run-02_T1w")
    shutil.copyfile(plain, run)
    return Expect(failures=[(str(run.relative_to(root)), f"{plain.name} is used (lowest run first)")])


def oasis_lowest_run_broken(root: Path, deny: Deny) -> Expect:
    anat = oasis_anat(root, 1)
    first = next(anat.glob("*_run-01_T1w.nii.gz"))
    second = anat / first.name.replace("run-01", "run-02")
    shutil.copyfile(first, second)
    truncate(first)

    def check(manifest: pd.DataFrame) -> None:
        rows = manifest[manifest["native_id"] == nid("oasis3", 1)]
        assert sorted(rows["contrast"]) == ["FLAIR", "T1w", "T2w"]  # the session is kept
        assert rows.loc[rows["contrast"] == "T1w", "path"].item() == str(second)

    return Expect(
        failures=[(str(first.relative_to(root)), "truncated or corrupt?")],
        changed={nid("oasis3", 1)},
        check=check,
    )


def oasis_file_of_another_subject(root: Path, deny: Deny) -> Expect:
    source = next(oasis_anat(root, 1).glob("*_T2w.nii.gz"))
    stray = oasis_anat(root, 2) / source.name  # sub-OAS30002's T2w inside sub-OAS30003's session
    shutil.copyfile(source, stray)
    return Expect(
        failures=[(str(stray.relative_to(root)), "names sub-OAS30002 ses-d0053, not this folder's")]
    )


def oasis_latin1_byte(root: Path, deny: Deny) -> Expect:
    add_latin1_column(root / "OASIS3_clinical.csv", 2)
    return Expect(log="OASIS3_clinical.csv: not valid UTF-8 (byte 0xe9 on line 4); read as latin-1")


def oasis_cdr_malformed(root: Path, deny: Deny) -> Expect:
    edit_csv(root / "OASIS3_clinical.csv", set_cell("cdr", 3, "0.7"))
    return Expect(
        failures=[("OASIS3_clinical.csv", "row 5: cdr '0.7' is not one of")],
        lost={nid("oasis3", 2)},
    )


def oasis_days_malformed(root: Path, deny: Deny) -> Expect:
    edit_csv(root / "OASIS3_clinical.csv", set_cell("days_to_visit", 1, "d0730"))
    return Expect(
        failures=[("OASIS3_clinical.csv", "row 3: days_to_visit 'd0730' is not a number")],
        lost={nid("oasis3", 0)},  # both sessions of the subject
    )


def oasis_missing_column(root: Path, deny: Deny) -> Expect:
    edit_csv(root / "OASIS3_clinical.csv", drop_column("days_to_visit"))
    return Expect(raises=(DatasetLayoutError, "OASIS3_clinical.csv: missing column(s) ['days_to_visit']"))


def oasis_subject_unreadable(root: Path, deny: Deny) -> Expect:
    folder = root / f"sub-{nid('oasis3', 3)}"
    deny(folder)
    return Expect(
        failures=[(folder.name, "permission denied: cannot list the subject folder")], lost={nid("oasis3", 3)}
    )


def oasis_broken_symlink(root: Path, deny: Deny) -> Expect:
    bad = next(oasis_anat(root, 2).glob("*_FLAIR.nii.gz"))
    bad.unlink()
    os.symlink("nowhere.nii.gz", bad)
    return Expect(
        failures=[(str(bad.relative_to(root)), "FLAIR image is a broken symlink")], lost={nid("oasis3", 2)}
    )


# --------------------------------------------------------------------------- 4-class JPEGs


def tumor4_image(root: Path, index: int) -> Path:
    return next(root.glob(f"*/*/{nid('tumor4', index)}.jpg"))


def tumor4_name_in_two_classes(root: Path, deny: Deny) -> Expect:
    glioma = tumor4_image(root, 0)
    other = root / "Training" / "notumor" / glioma.name
    shutil.copyfile(tumor4_image(root, 3), other)  # a no-tumour image under a glioma image's name
    words = "is in several class or split folders (Training/glioma, Training/notumor); refused"
    return Expect(
        failures=[(str(glioma.relative_to(root)), words), (str(other.relative_to(root)), words)],
        lost={glioma.stem},
    )


def tumor4_name_in_train_and_test(root: Path, deny: Deny) -> Expect:
    train = tumor4_image(root, 1)
    test = root / "Testing" / "meningioma" / train.name
    test.parent.mkdir(parents=True)
    shutil.copyfile(train, test)
    words = "(Testing/meningioma, Training/meningioma); refused"
    return Expect(
        failures=[(str(train.relative_to(root)), words), (str(test.relative_to(root)), words)],
        lost={train.stem},
    )


def tumor4_tiny_image(root: Path, deny: Deny) -> Expect:
    bad = tumor4_image(root, 1)
    Image.new("L", (1, 1)).save(bad, format="JPEG")
    return Expect(
        failures=[
            (
                str(bad.relative_to(root)),
                f"too small to process: shape 1x1, every axis needs at least {MIN_IMAGE_SIZE}",
            )
        ],
        lost={bad.stem},
    )


def tumor4_class_folder_unreadable(root: Path, deny: Deny) -> Expect:
    folder = root / "Training" / "pituitary"
    deny(folder)
    return Expect(
        failures=[("Training/pituitary", "permission denied: cannot list the class folder")],
        lost={nid("tumor4", 2)},
    )


def tumor4_file_unreadable(root: Path, deny: Deny) -> Expect:
    bad = tumor4_image(root, 3)
    deny(bad)
    return Expect(
        failures=[(str(bad.relative_to(root)), "permission denied: cannot read the JPEG image file")],
        lost={bad.stem},
    )


# --------------------------------------------------------------------------- Decathlon hippocampus


def hippocampus_truncated_json(root: Path, deny: Deny) -> Expect:
    truncate(root / "dataset.json")
    return Expect(
        raises=(DatasetLayoutError, "dataset.json: not valid JSON (line "),
    )


def hippocampus_listed_twice(root: Path, deny: Deny) -> Expect:
    spec = read_spec(root)
    spec["training"].append(dict(spec["training"][0]))
    write_spec(root, spec)
    return Expect(log="lists hippocampus_001 2 times; read once")


def hippocampus_train_and_test(root: Path, deny: Deny) -> Expect:
    spec = read_spec(root)
    spec["test"].append(spec["training"][1]["image"])
    write_spec(root, spec)
    return Expect(
        failures=[
            (
                "dataset.json",
                "case listed differently more than once (imagesTr/hippocampus_002.nii.gz with label "
                "labelsTr/hippocampus_002.nii.gz; imagesTr/hippocampus_002.nii.gz with label none (test)); "
                "refused",
            )
        ],
        lost={"hippocampus_002"},
    )


def hippocampus_bad_entry(root: Path, deny: Deny) -> Expect:
    spec = read_spec(root)
    spec["training"].append({"image": 5, "label": "./labelsTr/x.nii.gz"})
    spec["training"].append({"image": "../elsewhere/hippocampus_099.nii.gz", "label": "./labelsTr/x.nii.gz"})
    write_spec(root, spec)
    return Expect(
        failures=[
            ("dataset.json", "training[3]: image is 5, not a path; entry not used"),
            (
                "dataset.json",
                "training[4]: image '../elsewhere/hippocampus_099.nii.gz' points outside the dataset root",
            ),
        ]
    )


def hippocampus_label_orientation(root: Path, deny: Deny) -> Expect:
    bad = root / "labelsTr" / "hippocampus_003.nii.gz"
    rewrite_nifti(bad, flipped)
    return Expect(
        failures=[
            (
                "labelsTr/hippocampus_003.nii.gz",
                "label map grid: same shape 40x48x48 but orientation RPS differs from the image's LPS",
            )
        ],
        lost={"hippocampus_003"},
    )


def hippocampus_latin1_json(root: Path, deny: Deny) -> Expect:
    path = root / "dataset.json"
    path.write_bytes(path.read_bytes().replace(b"Vanderbilt", b"V\xe9nderbilt"))
    return Expect(log="dataset.json: not valid UTF-8 (byte 0xe9 on line ")


def hippocampus_missing_label(root: Path, deny: Deny) -> Expect:
    bad = root / "labelsTr" / "hippocampus_002.nii.gz"
    bad.unlink()
    return Expect(
        failures=[("labelsTr/hippocampus_002.nii.gz", "missing label map file")], lost={"hippocampus_002"}
    )


def hippocampus_two_voxels(root: Path, deny: Deny) -> Expect:
    bad = root / "imagesTr" / "hippocampus_001.nii.gz"
    small_nifti(bad, size=2)  # a 2x2x2 volume: refused here, not by ITK in preprocessing
    return Expect(
        failures=[
            (
                "imagesTr/hippocampus_001.nii.gz",
                f"too small to process: shape 2x2x2, every axis needs at least {MIN_VOLUME_SIZE} voxels",
            )
        ],
        lost={"hippocampus_001"},
    )


CASES: dict[str, tuple[str, Callable[[Path, Deny], Expect]]] = {
    function.__name__: (dataset, function)
    for dataset, function in [
        ("ixi", ixi_latin1_byte),
        ("ixi", ixi_age_malformed),
        ("ixi", ixi_age_unknown),
        ("ixi", ixi_id_malformed),
        ("ixi", ixi_bad_row_without_images),
        ("ixi", ixi_missing_id_column),
        ("ixi", ixi_nii_beside_niigz),
        ("ixi", ixi_file_unreadable),
        ("ixi", ixi_symlink_loop),
        ("ixi", ixi_singleton_4d),
        ("ixi", ixi_too_small),
        ("brats21", brats_id_malformed),
        ("brats21", brats_mgmt_malformed),
        ("brats21", brats_listed_twice),
        ("brats21", brats_age_malformed),
        ("brats21", brats_age_unknown),
        ("brats21", brats_survival_malformed),
        ("brats21", brats_ragged_row),
        ("brats21", brats_missing_column),
        ("brats21", brats_folder_unreadable),
        ("brats21", brats_other_orientation),
        ("brats21", brats_other_spacing),
        ("brats21", brats_folder_for_file),
        ("fastmri_brain", fastmri_same_patient_and_acquisition),
        ("fastmri_brain", fastmri_folder_unreadable),
        ("fastmri_brain", fastmri_too_small),
        ("fastmri_brain", fastmri_folder_named_like_file),
        ("fastmri_brain", fastmri_name_twice),
        ("fastmri_brain", fastmri_file_unreadable),
        ("oasis3", oasis_second_run),
        ("oasis3", oasis_run_beside_plain),
        ("oasis3", oasis_lowest_run_broken),
        ("oasis3", oasis_file_of_another_subject),
        ("oasis3", oasis_latin1_byte),
        ("oasis3", oasis_cdr_malformed),
        ("oasis3", oasis_days_malformed),
        ("oasis3", oasis_missing_column),
        ("oasis3", oasis_subject_unreadable),
        ("oasis3", oasis_broken_symlink),
        ("tumor4", tumor4_name_in_two_classes),
        ("tumor4", tumor4_name_in_train_and_test),
        ("tumor4", tumor4_tiny_image),
        ("tumor4", tumor4_class_folder_unreadable),
        ("tumor4", tumor4_file_unreadable),
        ("hippocampus", hippocampus_truncated_json),
        ("hippocampus", hippocampus_listed_twice),
        ("hippocampus", hippocampus_train_and_test),
        ("hippocampus", hippocampus_bad_entry),
        ("hippocampus", hippocampus_label_orientation),
        ("hippocampus", hippocampus_latin1_json),
        ("hippocampus", hippocampus_missing_label),
        ("hippocampus", hippocampus_two_voxels),
    ]
}


def _portable(manifest: pd.DataFrame, root: Path) -> pd.DataFrame:
    out = manifest.copy()
    for column in PATH_COLUMNS:
        out[column] = out[column].str.replace(str(root), "<root>", regex=False)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(
    case: str,
    clean: dict[str, tuple[Path, pd.DataFrame]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dataset, damage = CASES[case]
    source, clean_manifest = clean[dataset]
    root = Path(shutil.copytree(source, tmp_path / dataset, symlinks=True))
    expect = damage(root, Deny(monkeypatch.setattr))

    with caplog.at_level(logging.WARNING, logger="brainssl.datasets"):
        if expect.raises is not None:
            kind, words = expect.raises
            with pytest.raises(kind) as err:
                build_manifest(dataset, root)
            assert words in str(err.value), str(err.value)
            return
        manifest, failures = build_manifest(dataset, root)

    got = sorted(zip(failures["path"], failures["reason"], strict=True))
    assert len(got) == len(expect.failures), got
    for relative, words in expect.failures:
        path = str(root / relative)
        assert any(p == path and words in reason for p, reason in got), (relative, words, got)
    if expect.log is not None:
        assert expect.log in caplog.text, caplog.text
    # the subjects counted lost (as attrition and `brainssl check` count) are lost ones: a row
    # naming no subject or a kept subject's unused file counts none (an unlistable folder's
    # subjects cannot be named, so they are not counted)
    assert lost_native_ids(failures["native_id"], manifest["native_id"]) <= expect.lost, failures

    # reading went on: every other subject is there, with exactly the rows of the clean read
    expected = _portable(clean_manifest, source)
    actual = _portable(manifest, root)
    assert set(actual["native_id"]) == set(expected["native_id"]) - expect.lost
    same = expected[~expected["native_id"].isin(expect.lost | expect.changed)]
    kept = actual[actual["native_id"].isin(same["native_id"]) & actual["path"].isin(expected["path"])]
    extra = actual[actual["native_id"].isin(same["native_id"]) & ~actual["path"].isin(expected["path"])]
    assert set(extra["native_id"]) <= expect.extra, extra
    pd.testing.assert_frame_equal(kept.reset_index(drop=True), same.reset_index(drop=True))
    if expect.check is not None:
        expect.check(manifest)


def test_matrix_covers_every_dataset_and_thirty_kinds() -> None:
    assert len(CASES) >= 30
    assert {dataset for dataset, _ in CASES.values()} == set(DATASETS)


def test_no_usable_subject_stops_at_the_manifest(
    clean: dict[str, tuple[Path, pd.DataFrame]], tmp_path: Path
) -> None:
    root = Path(shutil.copytree(clean["ixi"][0], tmp_path / "ixi"))
    for path in (root / "IXI-T1").glob("*.nii.gz"):
        truncate(path)
    kept = tmp_path / "logs" / "failures.tsv"
    kept.parent.mkdir()
    with pytest.raises(NoUsableSubjectsError) as err:
        build_manifest("ixi", root, require_usable=True, failures_path=kept)
    assert f"IXI (ixi): no usable subjects; see failures.tsv: {kept}" in str(err.value)
    assert "truncated or corrupt?" in str(err.value)  # the first reasons are in the message
    table = pd.read_csv(kept, sep="\t")
    assert len(table) == N_SUBJECTS and table["path"].str.contains("IXI-T1").all()
    manifest, failures = build_manifest("ixi", root)  # without require_usable: an empty manifest
    assert manifest.empty and len(failures) == N_SUBJECTS
    other, _ = build_manifest("hippocampus", clean["hippocampus"][0], require_usable=True)
    assert len(other) == N_SUBJECTS  # the other datasets go on


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads chmod 000 files; see the simulated cases")
def test_real_chmod_000(clean: dict[str, tuple[Path, pd.DataFrame]], tmp_path: Path) -> None:
    root = Path(shutil.copytree(clean["brats21"][0], tmp_path / "brats21"))
    folder = root / nid("brats21", 1)
    image = brats_file(root, 2, "t1")
    folder.chmod(0)
    image.chmod(0)
    try:
        manifest, failures = build_manifest("brats21", root)
    finally:
        folder.chmod(0o755)
        image.chmod(0o644)
    reasons = dict(zip(failures["path"], failures["reason"], strict=True))
    assert "permission denied" in reasons[str(folder)] and "permission denied" in reasons[str(image)]
    assert manifest["native_id"].nunique() == N_SUBJECTS - 2
