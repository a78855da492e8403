"""Preprocessing is repeatable: the same session gives the same bytes whatever the thread counts.

Two ``make demo`` runs once parted here: the atlas skull strip's Mattes-MI registration summed
its work units in thread-scheduling order, and N4 split its fit by ITK's global default thread
count (the machine's cores), so IXI and OASIS-3 volumes differed between runs and machines.
These tests run the demo's own preprocessing settings on one demo IXI subject.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import yaml
from conftest import REPO

from brainssl import wiring
from brainssl.datasets.catalog import generate_demo_shard
from brainssl.preprocess import PreprocessResult, PreprocessSettings, preprocess_session
from brainssl.preprocess.skullstrip import register_rigid
from brainssl.preprocess.spatial import reorient_resample

SEED = 1234  # config.yaml's seed


def _demo_settings(threads: int, seed: int = SEED) -> PreprocessSettings:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    values = wiring.preprocess_settings(config, "ixi")
    return PreprocessSettings.from_dict({**values, "threads": threads, "seed": seed})


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> dict[str, nib.Nifti1Image]:
    """T1w and T2w of demo IXI subject 0 (on one grid, as every demo IXI session)."""
    root = tmp_path_factory.mktemp("ixi")
    shard = generate_demo_shard("ixi", root, [0], SEED, 2.0)
    files = {Path(f).parent.name: root / f for f in shard["files"].iloc[0].split(";")}
    return {"T1w": nib.load(files["IXI-T1"]), "T2w": nib.load(files["IXI-T2"])}


@pytest.fixture()
def itk_threads() -> Iterator[None]:
    """Restore SimpleITK's global default thread count after the test."""
    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    yield
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)


def _run(images: dict[str, nib.Nifti1Image], itk_global: int, threads: int) -> PreprocessResult:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(itk_global)
    result = preprocess_session(images, _demo_settings(threads))
    assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == itk_global  # left as found
    return result


def _arrays(result: PreprocessResult) -> dict[str, np.ndarray]:
    out = {f"volume/{m}": np.asarray(v.dataobj) for m, v in result.volumes.items()}
    out |= {f"field/{m}": np.asarray(v.dataobj) for m, v in result.fields.items()}
    out["mask"] = np.asarray(result.mask.dataobj)
    return out


def test_session_bytes_do_not_depend_on_thread_counts(session, itk_threads) -> None:
    """ITK global threads 1 vs 4 (one core vs a bigger machine) and ``threads`` 1 vs 2."""
    one = _run(session, itk_global=1, threads=1)
    many = _run(session, itk_global=4, threads=2)
    a, b = _arrays(one), _arrays(many)
    assert sorted(a) == sorted(b) == ["field/T1w", "field/T2w", "mask", "volume/T1w", "volume/T2w"]
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert a[name].tobytes() == b[name].tobytes(), f"{name} differs between thread settings"
    assert np.array_equal(one.mask.affine, many.mask.affine)
    assert set(one.transforms.registrations) == {"atlas_to_icbm152"}  # demo contrasts share a grid
    atlas, other = (
        {k: v for k, v in r.transforms.registrations["atlas_to_icbm152"].items() if k != "seconds"}
        for r in (one, many)
    )
    assert json.dumps(atlas) == json.dumps(other)


@pytest.mark.parametrize("seed", [0, SEED])
def test_registration_repeats_on_many_threads(session, itk_threads, seed: int) -> None:
    """The contrast-to-T1w registration (seed 0 is SimpleITK's wall-clock seed), on 4 threads."""
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(4)
    settings = _demo_settings(threads=4, seed=seed)
    fixed = reorient_resample(session["T1w"], settings.spacing_mm)
    moving = reorient_resample(session["T2w"], settings.spacing_mm)
    matrices = [register_rigid(fixed, moving, settings.registration, seed)[1] for _ in range(2)]
    for matrix in matrices[1:]:
        assert matrix.tobytes() == matrices[0].tobytes()
