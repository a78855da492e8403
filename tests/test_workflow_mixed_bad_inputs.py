"""A mixed run loses nothing good: the test cohort plus one of every bad kind, to the slice store.

Issue 17's acceptance: good subjects plus one of every bad kind keep every good subject through
the slice store, with the clean run's bytes for every dataset without a fitted normaliser and
the clean run's landmarks where one is fitted (oasis3 uses Nyúl in the test config). With the
landmarks equal, oasis3's voxels and slices equal the clean run's too, and are checked as well;
every good session's preprocessed volumes are compared voxel by voxel (the hippocampus crops feed
no slice store).

The clean run is the session's finished test-config run; its six datasets count. The mixed
cohort is their native trees, copied and read as ``source: local``, with extra demo subjects
generated beside them and damaged (:data:`DAMAGE`), plus bad table rows and duplicate or stray files beside
good subjects. Extra subjects sort after the good ones, except a readable non-brain OASIS-3
scan that sorts first on purpose: it is a training subject that QC flags, the one the Nyúl fit
read before issue 17. Unreadable files and folders are simulated in every job process
(``deny_site``; the tests run as root, who reads ``chmod 000`` files). Each bad input must be a
row naming its file in its stage's table (``failures.tsv`` of the manifest or preprocessing, or
flagged and excluded in ``qc.tsv``) or a logged warning, and the attrition tables must count
exactly the subjects it costs.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from bad_inputs import (
    DENY_ENV,
    add_latin1_column,
    all_negative,
    edit_csv,
    flipped,
    not_a_brain,
    read_spec,
    rewrite_nifti,
    set_cell_where,
    small_nifti,
    truncate,
    write_spec,
)
from conftest import REPO, run_snakemake
from PIL import Image

from brainssl.datasets import finalize_demo, generate_demo_shard
from brainssl.datasets.catalog import LAYOUTS
from brainssl.datasets.manifest import pseudonymize
from brainssl.io import write_table

pytestmark = pytest.mark.slow

SIX = ("ixi", "brats21", "fastmri_brain", "oasis3", "tumor4", "hippocampus")
#: Extra demo subjects are written on the synthesiser's coarsest grid: they are refused or flagged.
EXTRA_GRID = 4.0
#: The non-brain OASIS-3 scan's native id: it sorts before every demo subject (and is a training one).
FIRST = "OAS30000"


@dataclass(frozen=True)
class Bad:
    """One bad input and what it must give.

    Attributes:
        dataset: the dataset key.
        stage: the table that reports it: ``manifest``, ``preprocess`` or ``qc`` (a row naming
            ``path``), or ``log`` (a warning in the manifest job's log).
        path: the file the row names, relative to the dataset root (a table for a bad row).
        words: words of the reason (or of the warning).
        lost: the native id this input costs (``""``: none).
    """

    dataset: str
    stage: str
    path: str
    words: str
    lost: str = ""


def nid(dataset: str, index: int) -> str:
    return LAYOUTS[dataset].native_id(index)


def _generate(dataset: str, root: Path, clean: Path, indices: list[int], seed: int, work: Path) -> None:
    """Write extra demo subjects beside the clean ones and the dataset tables of them all."""
    extra = work / f"{dataset}-extra.tsv"
    write_table(extra, generate_demo_shard(dataset, root, indices, seed, EXTRA_GRID))
    tables = sorted((clean / "results/datasets" / dataset / "shards").glob("shard-*.tsv"))
    if dataset == "oasis3":  # the last extra subject becomes FIRST, before the tables are written
        _rename(root, extra, nid(dataset, indices[-1]), FIRST)
    finalize_demo(dataset, root, [*tables, extra])


def _rename(root: Path, table: Path, old: str, new: str) -> None:
    for path in sorted(root.rglob(f"*{old}*"), key=lambda p: -len(p.parts)):  # deepest first
        path.rename(path.with_name(path.name.replace(old, new)))
    frame = pd.read_csv(table, sep="\t")
    write_table(table, frame.replace(old, new, regex=True))


def _rel(root: Path, path: Path) -> str:
    return str(path.relative_to(root))


def _number(value: int) -> Callable[[str], bool]:
    """Whether a table cell holds this number (``3``, ``00003``)."""
    return lambda cell: cell.strip().isdigit() and int(cell) == value


def _ixi(root: Path, deny: Callable[[Path], None]) -> list[Bad]:
    def image(index: int, contrast: str) -> Path:
        return root / f"IXI-{contrast}" / f"{nid('ixi', index)}-{contrast}.nii.gz"

    edit_csv(root / "IXI.csv", set_cell_where("IXI_ID", _number(6), "AGE", "sixty"))  # IXI006
    edit_csv(root / "IXI.csv", lambda rows: rows.append(["12x", *rows[1][1:]]))
    add_latin1_column(root / "IXI.csv", 0)  # last: the CSV edits read UTF-8
    plain = image(0, "T1").with_suffix("")  # .nii beside the good subject's .nii.gz
    plain.write_bytes(gzip.decompress(image(0, "T1").read_bytes()))
    truncate(image(3, "T2"))
    rewrite_nifti(image(5, "T1"), all_negative)
    deny(image(6, "PD"))
    rel = partial(_rel, root)
    return [
        Bad("ixi", "log", "", "IXI.csv: not valid UTF-8 (byte 0xe9 on line 2); read as latin-1"),
        Bad("ixi", "manifest", "IXI.csv", "IXI_ID '12x' is not a number; row not used"),
        Bad("ixi", "manifest", rel(plain), f"duplicate T1w image: {image(0, 'T1').name} is used"),
        Bad("ixi", "manifest", rel(image(3, "T2")), "truncated or corrupt?", nid("ixi", 3)),
        Bad("ixi", "manifest", "IXI.csv", "AGE 'sixty' is not a number", nid("ixi", 4)),
        Bad(
            "ixi",
            "preprocess",
            rel(image(5, "T1")),
            f"T1w ({image(5, 'T1').name}): no positive",
            nid("ixi", 5),
        ),
        Bad("ixi", "manifest", rel(image(6, "PD")), "permission denied", nid("ixi", 6)),
    ]


def _brats(root: Path, deny: Callable[[Path], None]) -> list[Bad]:
    edit_csv(root / "train_labels.csv", set_cell_where("BraTS21ID", _number(3), "MGMT_value", "yes"))
    edit_csv(root / "train_labels.csv", lambda rows: rows.append(["abc", "1"]))
    with (root / "survival_info.csv").open("a", encoding="utf-8") as handle:
        handle.write("BraTS20_Training_099,60,100,GTR,extra\n")
    t2 = root / nid("brats21", 4) / f"{nid('brats21', 4)}_t2.nii.gz"
    rewrite_nifti(t2, flipped)
    deny(root / nid("brats21", 5))
    return [
        Bad("brats21", "manifest", "train_labels.csv", "MGMT_value 'yes' is not one of", nid("brats21", 3)),
        Bad("brats21", "manifest", "train_labels.csv", "BraTS21ID 'abc' is not a case number"),
        Bad("brats21", "manifest", "survival_info.csv", "5 cells but the header has 4; row not used"),
        Bad("brats21", "manifest", str(t2.relative_to(root)), "orientation LAS differs", nid("brats21", 4)),
        Bad("brats21", "manifest", nid("brats21", 5), "permission denied: cannot list", nid("brats21", 5)),
    ]


def _fastmri(root: Path, deny: Callable[[Path], None]) -> list[Bad]:
    def h5(index: int) -> Path:
        return root / "multicoil_train" / f"{nid('fastmri_brain', index)}.h5"

    with h5py.File(h5(2), "r+") as handle:  # four slices
        for name in ("kspace", "reconstruction_rss"):
            data = handle[name][:4]
            del handle[name]
            handle.create_dataset(name, data=data)
    truncate(h5(3))
    (root / "file_brain_AXT2_209_600123.h5").mkdir()
    (root / "other").mkdir()
    shutil.copyfile(h5(0), root / "other" / h5(0).name)  # a good file's name twice
    return [
        Bad("fastmri_brain", "manifest", str(h5(2).relative_to(root)), "too small", nid("fastmri_brain", 2)),
        Bad("fastmri_brain", "manifest", str(h5(3).relative_to(root)), "HDF5", nid("fastmri_brain", 3)),
        Bad(
            "fastmri_brain",
            "manifest",
            "file_brain_AXT2_209_600123.h5",
            "a folder where a file is expected",
            "file_brain_AXT2_209_600123",
        ),
        Bad("fastmri_brain", "manifest", f"other/{h5(0).name}", f"a second file named {h5(0).name}"),
    ]


def _oasis(root: Path, deny: Callable[[Path], None]) -> list[Bad]:
    def anat(native: str) -> Path:
        return next((root / f"sub-{native}").glob("ses-*/anat"))

    for image in anat(FIRST).glob("*.nii.gz"):  # readable, but not a brain
        rewrite_nifti(image, not_a_brain)
    first = next(anat(nid("oasis3", 1)).glob("*_run-01_T1w.nii.gz"))
    second = first.with_name(first.name.replace("run-01", "run-02"))
    shutil.copyfile(first, second)
    stray_source = next(anat(nid("oasis3", 1)).glob("*_T2w.nii.gz"))
    stray = anat(nid("oasis3", 2)) / stray_source.name  # one subject's file in another's folder
    shutil.copyfile(stray_source, stray)
    edit_csv(root / "OASIS3_clinical.csv", set_cell_where("OASISID", nid("oasis3", 3).__eq__, "cdr", "0.7"))
    add_latin1_column(root / "OASIS3_clinical.csv", 0)
    flair = next(anat(nid("oasis3", 4)).glob("*_FLAIR.nii.gz"))
    flair.unlink()
    os.symlink("nowhere.nii.gz", flair)
    rel = partial(_rel, root)
    return [
        Bad("oasis3", "qc", rel(next(anat(FIRST).glob("*_T1w.nii.gz"))), "mask Dice", FIRST),
        Bad("oasis3", "manifest", rel(second), f"another T1w image of this session: {first.name} is used"),
        Bad("oasis3", "manifest", rel(stray), "not this folder's"),
        Bad("oasis3", "manifest", "OASIS3_clinical.csv", "cdr '0.7' is not one of", nid("oasis3", 3)),
        Bad(
            "oasis3", "log", "", "OASIS3_clinical.csv: not valid UTF-8 (byte 0xe9 on line 2); read as latin-1"
        ),
        Bad("oasis3", "manifest", rel(flair), "FLAIR image is a broken symlink", nid("oasis3", 4)),
    ]


def _tumor4(root: Path, deny: Callable[[Path], None]) -> list[Bad]:
    def jpeg(index: int) -> Path:
        return next(root.glob(f"*/*/{nid('tumor4', index)}.jpg"))

    tiny, twice, unreadable = jpeg(8), jpeg(9), jpeg(10)
    Image.new("L", (1, 1)).save(tiny, format="JPEG")
    other = twice.parents[1] / ("notumor" if twice.parent.name != "notumor" else "glioma") / twice.name
    other.parent.mkdir(exist_ok=True)
    shutil.copyfile(jpeg(0), other)  # another image under the same name in another class
    deny(unreadable)
    rel = partial(_rel, root)
    return [
        Bad("tumor4", "manifest", rel(tiny), "too small to process: shape 1x1", tiny.stem),
        Bad("tumor4", "manifest", rel(twice), "is in several class or split folders", twice.stem),
        Bad("tumor4", "manifest", rel(other), "is in several class or split folders", twice.stem),
        Bad("tumor4", "manifest", rel(unreadable), "permission denied: cannot read", unreadable.stem),
    ]


def _hippocampus(root: Path, deny: Callable[[Path], None]) -> list[Bad]:
    spec = read_spec(root)
    spec["training"].append(dict(spec["training"][0]))
    spec["training"].append({"image": 5, "label": "./labelsTr/x.nii.gz"})
    spec["training"].append({"image": "../elsewhere/hippocampus_099.nii.gz", "label": "./labelsTr/x.nii.gz"})
    write_spec(root, spec)
    rewrite_nifti(root / "labelsTr" / "hippocampus_005.nii.gz", flipped)
    (root / "labelsTr" / "hippocampus_006.nii.gz").unlink()
    small_nifti(root / "imagesTr" / "hippocampus_007.nii.gz", size=2)
    return [
        Bad("hippocampus", "log", "", "lists hippocampus_001 2 times; read once"),
        Bad("hippocampus", "manifest", "dataset.json", "image is 5, not a path; entry not used"),
        Bad("hippocampus", "manifest", "dataset.json", "points outside the dataset root"),
        Bad("hippocampus", "manifest", "labelsTr/hippocampus_005.nii.gz", "orientation", "hippocampus_005"),
        Bad(
            "hippocampus",
            "manifest",
            "labelsTr/hippocampus_006.nii.gz",
            "missing label map",
            "hippocampus_006",
        ),
        Bad(
            "hippocampus",
            "manifest",
            "imagesTr/hippocampus_007.nii.gz",
            "too small to process: shape 2x2x2",
            "hippocampus_007",
        ),
    ]


#: dataset -> (the extra demo subjects, by index; what is damaged). The clean run has the
#: test config's first subjects; hippocampus index 3 is a test image (no label map), so 4-6.
DAMAGE: dict[str, tuple[list[int], Callable[[Path, Callable[[Path], None]], list[Bad]]]] = {
    "ixi": ([3, 4, 5, 6], _ixi),
    "brats21": ([3, 4, 5], _brats),
    "fastmri_brain": ([2, 3], _fastmri),
    "oasis3": ([3, 4, 5], _oasis),
    "tumor4": ([8, 9, 10], _tumor4),
    "hippocampus": ([4, 5, 6], _hippocampus),
}


#: What the mixed run builds: the slice store, and the attrition tables (which read every stage's).
TARGETS = ("results/slices/index.parquet", "results/attrition.tsv")


def _run(work: Path, config: dict, env: dict[str, str] | None = None):
    work.mkdir(parents=True)
    for name in ("abide", "atlas"):  # the BIDS demos are not part of this test
        config["datasets"][name]["enabled"] = False
    (work / "test.yaml").write_text(yaml.safe_dump(config))  # laid over config.yaml, as the clean run's
    args = (*TARGETS, "--cores", "2", "--configfile", str(work / "test.yaml"))  # it takes several
    return run_snakemake(*args, workdir=work, timeout=1200, env=env)


@pytest.fixture(scope="module")
def mixed_run(finished_run, tmp_path_factory):
    """The mixed cohort (the clean run's native trees, extra subjects, damage) to the slice store.

    The clean run is the session's finished test-config run: its six datasets' stages equal a run
    of those six alone, byte for byte, and the BIDS demos beside them are left out of every check.
    """
    clean = finished_run[0]
    config = yaml.safe_load(finished_run[1].read_text())
    work = tmp_path_factory.mktemp("mixed")
    denied: list[Path] = []
    bad: list[Bad] = []
    for dataset in SIX:
        root = work / "raw" / dataset
        shutil.copytree(clean / "results/datasets" / dataset / "raw", root, symlinks=True)
        extra, damage = DAMAGE[dataset]
        assert min(extra) >= config["datasets"][dataset]["subjects"], dataset  # beyond the clean ones
        _generate(dataset, root, clean, extra, config["seed"], work)
        bad += damage(root, denied.append)
        config["datasets"][dataset].update(source="local", path=str(root))
    env = {
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests/deny_site"), os.environ.get("PYTHONPATH", "")]),
        DENY_ENV: os.pathsep.join(map(str, denied)),
    }
    return clean, work, bad, _run(work / "run", config, env)


def _preprocessed(run: Path, dataset: str) -> dict[tuple[str, str, str], dict[str, str]]:
    table = pd.read_csv(
        run / f"results/preprocess/{dataset}/table.tsv", sep="\t", dtype=str, keep_default_na=False
    )
    return {(r["subject"], r["session"], r["contrast"]): r for r in table.to_dict("records")}


@pytest.mark.timeout(2700)
def test_mixed_run_keeps_every_good_subject_with_the_clean_bytes(mixed_run):
    clean, work, _, result = mixed_run
    assert result.returncode == 0, result.stderr[-4000:]
    run = work / "run"
    for dataset in (d for d in SIX if d != "tumor4"):  # every good session, the clean run's voxels
        theirs, ours = _preprocessed(clean, dataset), _preprocessed(run, dataset)
        assert set(ours) == set(theirs), dataset
        for key, row in theirs.items():
            for column in ("path", "mask_path", "seg_path"):
                if row[column]:
                    a, b = nib.load(clean / row[column]), nib.load(run / ours[key][column])
                    assert np.array_equal(a.affine, b.affine), (dataset, key, column)
                    assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj)), (
                        dataset,
                        key,
                        column,
                    )
    stored = sorted(p.name for p in (clean / "results/slices").iterdir() if p.is_dir() and p.name in SIX)
    assert stored == sorted(p.name for p in (run / "results/slices").iterdir() if p.is_dir())
    for dataset in stored:  # the slice store (the hippocampus crops feed no slice store)
        theirs, ours = clean / "results/slices" / dataset, run / "results/slices" / dataset
        index, reference = pd.read_parquet(ours / "index.parquet"), pd.read_parquet(theirs / "index.parquet")
        assert set(index["subject"]) == set(reference["subject"]), dataset  # every good subject
        pd.testing.assert_frame_equal(index, reference, obj=f"{dataset} slice index")
        arrays = sorted(p.name for p in theirs.glob("shard-*.npy"))
        assert arrays == sorted(p.name for p in ours.glob("shard-*.npy")), dataset
        for name in arrays:  # the clean run's bytes, slices and label maps
            assert (ours / name).read_bytes() == (theirs / name).read_bytes(), f"{dataset}/{name}"
    landmarks = "results/preprocess/oasis3/nyul_landmarks.json"
    assert json.loads((run / landmarks).read_text()) == json.loads((clean / landmarks).read_text())
    fit = (run / "results/preprocess/oasis3/nyul_landmarks.provenance.json").read_text()
    assert pseudonymize("oasis3", FIRST) in fit  # read first, and skipped for its QC flag


@pytest.mark.timeout(2700)
def test_each_bad_input_is_a_row_naming_its_file(mixed_run):
    _, work, bad, result = mixed_run
    assert result.returncode == 0, result.stderr[-4000:]
    run, raw = work / "run", work / "raw"
    for dataset in SIX:
        mine = [b for b in bad if b.dataset == dataset]
        failures = pd.read_csv(run / f"results/datasets/{dataset}/failures.tsv", sep="\t", dtype=str)
        manifest = [b for b in mine if b.stage == "manifest"]
        assert len(failures) == len(manifest), failures.to_string()
        rows = list(zip(failures["path"], failures["reason"], strict=True))
        for item in manifest:
            path = str(raw / dataset / item.path)
            assert any(p == path and item.words in r for p, r in rows), (item, rows)
        log = (run / f"logs/datasets/{dataset}/manifest.log").read_text()
        for item in (b for b in mine if b.stage == "log"):
            assert item.words in log, (item, log[-2000:])
        if dataset == "tumor4":
            continue
        failed = pd.read_csv(run / f"results/preprocess/{dataset}/failures.tsv", sep="\t", dtype=str)
        for item in (b for b in mine if b.stage == "preprocess"):
            hits = failed[failed["native_id"] == item.lost]
            assert len(hits) == 1 and str(raw / dataset / item.path) in hits["path"].item().split(";"), hits
            assert item.words in hits["reason"].item() and "ITK" not in hits["reason"].item(), hits
        qc = pd.read_csv(run / f"results/preprocess/{dataset}/qc.tsv", sep="\t", dtype=str)
        for item in (b for b in mine if b.stage == "qc"):
            hits = qc[qc["subject"] == pseudonymize(dataset, item.lost)]
            assert len(hits) and (hits["excluded"] == "True").all(), hits
            assert hits["qc_flags"].str.contains(item.words).all(), hits


def _attrition(results: Path) -> tuple[set[tuple[str, str, str]], pd.DataFrame]:
    losses = pd.read_csv(results / "attrition_losses.tsv", sep="\t", dtype=str, keep_default_na=False)
    lost = losses[(losses["lost"] == "True") & losses["dataset"].isin(SIX)]
    summary = pd.read_csv(results / "attrition.tsv", sep="\t")
    summary = summary[summary["dataset"].isin(SIX)].set_index(["dataset", "stage"])
    return set(zip(lost["dataset"], lost["stage"], lost["native_id"], strict=True)), summary


@pytest.mark.timeout(2700)
def test_attrition_counts_exactly_the_subjects_the_bad_inputs_cost(mixed_run):
    clean, work, bad, result = mixed_run
    assert result.returncode == 0, result.stderr[-4000:]
    ours, our_summary = _attrition(work / "run/results")
    theirs, their_summary = _attrition(clean / "results")  # what the clean cohort itself loses
    expected = {(b.dataset, b.stage, b.lost) for b in bad if b.lost}
    assert ours - theirs == expected and theirs <= ours
    for (dataset, stage), row in our_summary.iterrows():
        n = len({b.lost for b in bad if b.lost and (b.dataset, b.stage) == (dataset, stage)})
        if row["status"] == "done" and stage != "slices":
            assert row["lost"] - their_summary.loc[(dataset, stage), "lost"] == n, (dataset, stage)
    assert "subjects lost per dataset and stage" in result.stdout + result.stderr
