"""The datasets' own tools read the demo cohort, and the demo names files and tables as the releases do.

- fastMRI: ``fastmri==0.3.0`` (``make install`` adds it with ``--no-deps``): ``SliceDataset`` opens
  every demo file of ``multicoil_train/`` (header with encodingLimits), its ``VarNetDataTransform``
  and ``UnetDataTransform`` (with a mask function) turn every slice into samples whose crop is the
  RSS target, and its ``VarNet`` runs on one; the files carry oversampled k-space and the coil
  count of their header, 16 coils in a paper-like file.
- BIDS: ``bids-validator-deno==3.0.2`` (dev extra; runs offline) reports no error on the OASIS-3
  demo folder.
- Decathlon: MONAI's ``load_decathlon_datalist`` reads the hippocampus ``dataset.json``.
- BraTS 2021, IXI, the 4-class set: folder, file and table names as in the real releases (written
  out here from the releases, not from the layout modules).

The cohort is the test config's grid (3 mm); the demo's (2 mm) differs only in size.
"""

from __future__ import annotations

import csv
import re
import shutil
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import validate_bids

from brainssl.datasets import build_manifest, finalize_demo, generate_demo_shard
from brainssl.datasets.layouts import fastmri as fastmri_layout
from brainssl.io import write_table

SEED = 7
GRID = 3.0  # config/test.yaml's grid
COUNTS = {"fastmri_brain": 5, "oasis3": 4, "hippocampus": 4, "brats21": 2, "ixi": 3, "tumor4": 8}
#: The user-named BIDS demos (``kind: bids``), written by their demo writers.
BIDS_DEMOS = {"abide": 4, "atlas": 3}
BIN = Path(sys.executable).parent


def _build(root: Path, dataset: str) -> Path:
    n = COUNTS.get(dataset) or BIDS_DEMOS[dataset]
    demo = {"demo": dataset} if dataset in BIDS_DEMOS else {}
    shards = []
    for part, indices in enumerate((range(0, n, 2), range(1, n, 2))):
        table = generate_demo_shard(dataset, root / dataset, list(indices), SEED, GRID, **demo)
        shards.append(root / f"{dataset}.shard{part}.tsv")
        write_table(shards[-1], table)
    finalize_demo(dataset, root / dataset, shards, **demo)
    return root / dataset


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One torch thread: fastMRI's transforms run many tiny ops, and threads only contend for them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("reference")
    built: dict[str, Path] = {}

    def get(dataset: str) -> Path:
        if dataset not in built:
            built[dataset] = _build(root, dataset)
        return built[dataset]

    return get


# ------------------------------------------------------------------------------------ fastMRI


def _fastmri():
    pytest.importorskip("fastmri")
    import fastmri
    from fastmri.data import SliceDataset, subsample, transforms

    return fastmri, SliceDataset, subsample, transforms


def _check_fastmri_folder(folder: Path) -> int:
    """Run fastMRI's dataset, transforms and VarNet on every file and slice of ``folder``."""
    fastmri, SliceDataset, subsample, transforms = _fastmri()
    from fastmri.models import VarNet

    dataset = SliceDataset(folder, challenge="multicoil")
    files = sorted(folder.glob("*.h5"))
    assert files and len({s.fname for s in dataset.raw_samples}) == len(files)
    mask = subsample.EquispacedMaskFractionFunc([0.08], [4])
    varnet = transforms.VarNetDataTransform(mask_func=mask)
    unet = transforms.UnetDataTransform("multicoil", mask_func=mask)
    full = transforms.UnetDataTransform("multicoil")
    coils = set()
    # every file: its first, middle and last slice (all slices cost seconds and show nothing new)
    picked: dict[Path, list[int]] = {}
    for index, raw in enumerate(dataset.raw_samples):
        picked.setdefault(raw.fname, []).append(index)
    indices = sorted({i for found in picked.values() for i in (found[0], found[len(found) // 2], found[-1])})
    for index in indices:
        kspace, _, target, attrs, fname, slice_num = dataset[index]
        rows, cols = kspace.shape[-2:]
        coils.add(kspace.shape[0])
        # oversampled readout: twice the target's rows, as 640 x 320 k-space for a 320 x 320 target
        assert (rows, cols) == (2 * target.shape[0], target.shape[1])
        assert attrs["encoding_size"] == (rows, cols, 1)
        assert attrs["recon_size"] == (*target.shape, 1)
        assert (attrs["padding_left"], attrs["padding_right"]) == (0, cols)  # every column acquired
        sample = varnet(kspace, None, target, attrs, fname, slice_num)
        assert tuple(sample.masked_kspace.shape) == (kspace.shape[0], rows, cols, 2)
        assert sample.crop_size == target.shape and sample.max_value == attrs["max"]
        assert 0 < int(sample.mask.sum()) < cols and sample.num_low_frequencies == round(0.08 * cols)
        # the RSS of the full k-space, cropped to the recon size, is the target (fastMRI's relation)
        image = fastmri.rss(fastmri.complex_abs(fastmri.ifft2c(transforms.to_tensor(kspace))))
        cropped = transforms.center_crop(image, sample.crop_size).numpy()
        np.testing.assert_allclose(cropped, target, rtol=1e-4, atol=1e-5 * float(target.max()))
        assert float(target.max()) <= attrs["max"] + 1e-6
        undersampled = unet(kspace, None, target, attrs, fname, slice_num)
        assert undersampled.image.shape == undersampled.target.shape == target.shape
        sampled = full(kspace, None, target, attrs, fname, slice_num)
        torch.testing.assert_close(sampled.image, sampled.target, rtol=1e-3, atol=1e-3)
    # fastMRI's VarNet reconstructs one sample; its output cropped as fastMRI's module crops is the target's
    net = VarNet(num_cascades=1, sens_chans=2, sens_pools=2, chans=2, pools=2).eval()
    with torch.no_grad():
        output = net(sample.masked_kspace[None], sample.mask[None], sample.num_low_frequencies)
    assert transforms.center_crop(output, sample.crop_size).shape[-2:] == target.shape
    for path in files:
        with h5py.File(path) as handle:
            header = handle["ismrmrd_header"][()].decode()
            assert f"<receiverChannels>{handle['kspace'].shape[1]}</receiverChannels>" in header
    return max(coils)


def test_fastmri_tools_read_every_demo_file(cohort) -> None:
    root = cohort("fastmri_brain")
    assert not (root / "multicoil_train" / "_truth").exists() and (root / "_truth").is_dir()
    assert _check_fastmri_folder(root / "multicoil_train") == fastmri_layout.N_COILS
    manifest, failures = build_manifest("fastmri_brain", root)
    assert failures.empty and len(manifest) == COUNTS["fastmri_brain"]


def test_fastmri_paper_like_coil_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastmri_layout, "N_COILS", 16)  # real brain files: 4 to 20, most 16 or 20
    generate_demo_shard("fastmri_brain", tmp_path, [3], SEED, GRID)
    assert _check_fastmri_folder(tmp_path / fastmri_layout.DATA_DIR) == 16


def _strip_header(path: Path, element: str) -> None:
    with h5py.File(path, "r+") as handle:
        header = handle["ismrmrd_header"][()].decode()
        header = re.sub(rf"<{element}>.*?</{element}>", "", header, flags=re.DOTALL)
        del handle["ismrmrd_header"]
        handle.create_dataset("ismrmrd_header", data=np.bytes_(header.encode()))


@pytest.mark.parametrize("element", ["encodingLimits", "reconSpace"])
def test_fastmri_tool_needs_the_header_fields_the_demo_writes(cohort, tmp_path: Path, element: str) -> None:
    _, SliceDataset, _, _ = _fastmri()
    source = sorted((cohort("fastmri_brain") / "multicoil_train").glob("*.h5"))[0]
    folder = tmp_path / "multicoil_train"
    folder.mkdir()
    shutil.copyfile(source, folder / source.name)
    SliceDataset(folder, challenge="multicoil")
    _strip_header(folder / source.name, element)
    with pytest.raises(RuntimeError, match="Element not found"):
        SliceDataset(folder, challenge="multicoil")


def test_fastmri_adapter_reconstructs_a_file_without_its_target_like_fastmri(cohort, tmp_path: Path) -> None:
    from brainssl.tasks.reconstruction import load_recon_volume

    fastmri, SliceDataset, _, transforms = _fastmri()
    root = Path(shutil.copytree(cohort("fastmri_brain"), tmp_path / "fastmri_brain"))
    path = sorted((root / "multicoil_train").glob("*.h5"))[1]
    with h5py.File(path, "r+") as handle:
        stored = handle["reconstruction_rss"][()]
        del handle["reconstruction_rss"]  # a fully sampled file without its target
    manifest, failures = build_manifest("fastmri_brain", root)
    assert failures.empty and manifest.set_index("session").at[path.stem, "shape"] == "x".join(
        map(str, stored.shape)
    )
    image = np.asarray(fastmri_layout.load_rss(path).dataobj)
    np.testing.assert_allclose(image, stored, rtol=1e-4, atol=1e-5 * stored.max())
    np.testing.assert_allclose(
        load_recon_volume(path, "s").target, stored, rtol=1e-4, atol=1e-5 * stored.max()
    )
    # fastMRI's own transform, with no target, crops its input to the header's recon size the same way
    sample = SliceDataset(root / "multicoil_train", challenge="multicoil")
    kspace, _, target, attrs, fname, slice_num = next(s for s in sample if s[4] == path.name)
    assert target is None
    unet = transforms.UnetDataTransform("multicoil")(kspace, None, None, attrs, fname, slice_num)
    restored = (unet.image * unet.std + unet.mean).numpy()
    kept = unet.image.abs().numpy() < 6  # the transform clamps the normalised image to +-6
    assert kept.mean() > 0.99 and restored.shape == image[slice_num].shape
    expected = image[slice_num][kept]
    np.testing.assert_allclose(restored[kept], expected, rtol=1e-3, atol=1e-3 * float(image.max()))
    # an under-sampled test-split file (a mask, no target) is reported, not read as an image
    with h5py.File(path, "r+") as handle:
        handle.create_dataset("mask", data=np.ones(handle["kspace"].shape[-1], dtype=bool))
    manifest, failures = build_manifest("fastmri_brain", root)
    assert path.stem not in set(manifest["session"])
    assert failures["reason"].str.contains("under-sampled k-space").any()


# --------------------------------------------------------------------------------------- BIDS

BIDS_DATASETS = ["oasis3", *BIDS_DEMOS]


@pytest.mark.parametrize("dataset", BIDS_DATASETS)
def test_bids_validator_finds_no_error_in_the_demo(cohort, dataset: str) -> None:
    root = cohort(dataset)
    code, issues = validate_bids(root)
    errors = [(i["code"], i.get("location", "")) for i in issues if i["severity"] == "error"]
    assert code == 0 and not errors, errors
    # the validator only warns without these; the demo has them as real BIDS datasets do
    for name in ("participants.tsv", "README"):
        assert (root / name).is_file(), name


def test_oasis_adapter_holds_on_real_bids_details(cohort, tmp_path: Path) -> None:
    """Runs, acquisitions, echoes, parts, other entity orders, sidecars and tables of real BIDS data."""
    root = Path(shutil.copytree(cohort("oasis3"), tmp_path / "oasis3"))
    clean, _ = build_manifest("oasis3", root)
    anat = root / "sub-OAS30003" / "ses-d0106" / "anat"
    stem = "sub-OAS30003_ses-d0106"
    t1, t2, flair = (anat / f"{stem}_{m}.nii.gz" for m in ("T1w", "T2w", "FLAIR"))
    extra = {
        f"{stem}_run-02_T1w.nii.gz": t1,  # a repeated run
        f"{stem}_acq-TSE_T2w.nii.gz": t2,  # another acquisition of the contrast
        f"{stem}_run-01_acq-SPACE_T2w.nii": t2,  # entities out of the specification's order, .nii
        f"{stem}_part-phase_T1w.nii.gz": t1,  # not a magnitude image
        f"{stem}_ce-gadolinium_T1w.nii.gz": t1,  # contrast-enhanced, not the plain T1w
        f"{stem}_echo-2_FLAIR.nii.gz": flair,  # a later echo
        f"{stem}_T2star.nii.gz": t2,  # a contrast the adapter does not use
        f"{stem}_run-02_T1w.json": None,
    }
    for name, source in extra.items():
        target = anat / name
        if source is None:
            target.write_text('{"RepetitionTime": 2.4}')
        elif name.endswith(".nii"):
            nib.save(nib.load(source), target)
        else:
            shutil.copyfile(source, target)
    (anat.parent / f"{stem}_scans.tsv").write_text("filename\tacq_time\nanat/" + t1.name + "\tn/a\n")
    (anat.parent.parent / "sub-OAS30003_sessions.tsv").write_text("session_id\tage\nses-d0106\t71\n")
    (anat.parent / "func").mkdir()
    shutil.copyfile(t1, anat.parent / "func" / f"{stem}_task-rest_run-01_bold.nii.gz")
    manifest, failures = build_manifest("oasis3", root)
    assert clean[["subject", "session", "contrast", "path"]].equals(
        manifest[["subject", "session", "contrast", "path"]]
    )
    noted = {Path(p).name: reason for p, reason in zip(failures["path"], failures["reason"], strict=True)}
    assert set(noted) == {n for n in extra if n.endswith((".nii", ".nii.gz")) and "T2star" not in n}
    assert "is used (lowest run first)" in noted[f"{stem}_run-02_T1w.nii.gz"]
    assert "not a magnitude image" in noted[f"{stem}_part-phase_T1w.nii.gz"]
    assert "contrast-enhanced" in noted[f"{stem}_ce-gadolinium_T1w.nii.gz"]
    # with the plain T2w gone, a file without run- (the lowest run) beats run-01 whatever its acq-
    t2.unlink()
    manifest, _ = build_manifest("oasis3", root)
    rows = manifest[(manifest["session"] == "ses-d0106") & (manifest["contrast"] == "T2w")]
    assert Path(rows["path"].item()).name == f"{stem}_acq-TSE_T2w.nii.gz"


# ---------------------------------------------------------------------------------- Decathlon


def test_monai_reads_the_hippocampus_datalist(cohort) -> None:
    from monai.data import load_decathlon_datalist, load_decathlon_properties

    root = cohort("hippocampus")
    listing = root / "dataset.json"
    training = load_decathlon_datalist(listing, is_segmentation=True, data_list_key="training")
    test = load_decathlon_datalist(listing, is_segmentation=True, data_list_key="test")
    properties = load_decathlon_properties(listing, ["numTraining", "numTest", "labels", "modality"])
    assert properties["numTraining"] == len(training) and properties["numTest"] == len(test)
    assert properties["labels"] == {"0": "background", "1": "Anterior", "2": "Posterior"}
    assert properties["modality"] == {"0": "MRI"} and len(training) + len(test) == COUNTS["hippocampus"]
    for item in training:
        image, label = nib.load(item["image"]), nib.load(item["label"])
        assert image.shape == label.shape and set(np.unique(np.asarray(label.dataobj))) <= {0, 1, 2}
        assert Path(item["image"]).parent.name == "imagesTr" and Path(item["label"]).parent.name == "labelsTr"
    assert all(Path(item["image"]).parent.name == "imagesTs" for item in test)
    manifest, failures = build_manifest("hippocampus", root)
    assert failures.empty
    assert set(manifest["path"]) == {str(Path(i["image"])) for i in training + test}


# ------------------------------------------------------------------------ release names, tables


def _header(path: Path) -> list[str]:
    with path.open(newline="") as handle:
        return next(csv.reader(handle))


def test_brats_names_and_tables_are_the_releases(cohort) -> None:
    root = cohort("brats21")
    cases = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "_truth")
    assert cases and all(re.fullmatch(r"BraTS2021_\d{5}", c) for c in cases)
    for case in cases:
        names = sorted(p.name for p in (root / case).iterdir())
        assert names == [f"{case}_{s}.nii.gz" for s in ("flair", "seg", "t1", "t1ce", "t2")]
        seg = np.asarray(nib.load(root / case / f"{case}_seg.nii.gz").dataobj)
        assert set(np.unique(seg)) <= {0, 1, 2, 4}
    assert _header(root / "train_labels.csv") == ["BraTS21ID", "MGMT_value"]
    assert _header(root / "survival_info.csv") == ["Brats20ID", "Age", "Survival_days", "Extent_of_Resection"]
    with (root / "survival_info.csv").open() as handle:
        ids = [row["Brats20ID"] for row in csv.DictReader(handle)]
    assert all(re.fullmatch(r"BraTS20_Training_\d{3}", i) for i in ids)


def test_ixi_names_and_table_are_the_releases(cohort) -> None:
    root = cohort("ixi")
    for contrast in ("T1", "T2", "PD"):
        names = [p.name for p in (root / f"IXI-{contrast}").iterdir()]
        assert len(names) == COUNTS["ixi"]
        assert all(re.fullmatch(rf"IXI\d{{3}}-(Guys|HH|IOP)-\d{{4}}-{contrast}\.nii\.gz", n) for n in names)
    assert _header(root / "IXI.csv") == [
        "IXI_ID", "SEX_ID (1=m, 2=f)", "HEIGHT", "WEIGHT", "ETHNIC_ID", "MARITAL_ID", "OCCUPATION_ID",
        "QUALIFICATION_ID", "DOB", "DATE_AVAILABLE", "STUDY_DATE", "AGE",
    ]  # fmt: skip


def test_tumor4_names_are_the_releases(cohort) -> None:
    root = cohort("tumor4")
    prefix = {"glioma": "gl", "meningioma": "me", "notumor": "no", "pituitary": "pi"}
    seen = 0
    for split, short in (("Training", "Tr"), ("Testing", "Te")):
        for cls, code in prefix.items():
            folder = root / split / cls
            names = sorted(p.stem for p in folder.glob("*.jpg")) if folder.is_dir() else []
            # numbered within the folder from 0000; the first ten carry a "Tr" infix
            expected = [f"{short}-{code}{'Tr' if n < 10 else ''}_{n:04d}" for n in range(len(names))]
            assert names == expected, (split, cls)
            seen += len(names)
    assert seen == COUNTS["tumor4"]
    assert {p.name for p in root.iterdir()} == {"Training", "Testing", "_truth"}
