"""Tests for brainssl.synth: determinism, anatomy, contrasts, pathology, acquisition, k-space."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from nibabel.orientations import aff2axcodes
from scipy import ndimage

from brainssl.synth import SubjectParams, SyntheticSubject, generate_subject, simulate_kspace
from brainssl.synth.acquisition import ifft2c
from brainssl.synth.pathology import glioma_markers

ALL = ("T1w", "T2w", "FLAIR", "T1ce", "PD")


@functools.lru_cache(maxsize=64)
def subject(
    subject_id: str,
    pathology: str | None = None,
    diagnosis: str | None = None,
    age_range: tuple[float, float] = (20, 85),
    anisotropic: float = 0.0,
    oblique: float = 0.0,
) -> SyntheticSubject:
    params = SubjectParams(
        pathology=pathology,
        diagnosis=diagnosis,
        age_range=age_range,
        contrasts=ALL,
        anisotropic_prob=anisotropic,
        oblique_prob=oblique,
    )
    return generate_subject(7, subject_id, params)


def world(vol_affine: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """World coordinates (N, 3) of the voxels in ``mask``."""
    ijk = np.argwhere(mask).astype(float)
    return ijk @ vol_affine[:3, :3].T + vol_affine[:3, 3]


def eroded(mask: np.ndarray) -> np.ndarray:
    return ndimage.binary_erosion(mask)


def test_same_seed_and_id_give_identical_subjects():
    params = SubjectParams(pathology="glioma", contrasts=("T1w", "FLAIR"))
    a, b = generate_subject(3, "sub-01", params), generate_subject(3, "sub-01", params)
    for key in a.images:
        np.testing.assert_array_equal(a.images[key].data, b.images[key].data)
        np.testing.assert_array_equal(a.images[key].affine, b.images[key].affine)
    np.testing.assert_array_equal(a.tumor.data, b.tumor.data)
    np.testing.assert_array_equal(a.tissue.data, b.tissue.data)
    assert a.meta == b.meta


def test_different_id_gives_different_subject():
    params = SubjectParams(contrasts=("T1w",))
    a, b = generate_subject(3, "sub-01", params), generate_subject(3, "sub-02", params)
    assert a.meta.age != b.meta.age
    assert a.images["T1w"].data.shape != b.images["T1w"].data.shape or not np.array_equal(
        a.images["T1w"].data, b.images["T1w"].data
    )


def test_brain_volume_in_adult_range():
    volumes = [subject(f"vol-{i}").meta.brain_volume_ml for i in range(6)]
    assert all(900 < v < 1800 for v in volumes), volumes
    assert np.std(volumes) > 20, volumes  # subjects differ


def test_all_maps_share_one_grid():
    s = subject("grid-0", pathology="glioma", anisotropic=1.0)
    shape, affine = s.brain_mask.data.shape, s.brain_mask.affine
    for vol in (*s.images.values(), s.tissue, s.hippocampus, s.tumor, s.bias_field):
        assert vol.data.shape == shape
        np.testing.assert_array_equal(vol.affine, affine)
    assert s.tissue.data.dtype == np.uint8 and s.images["T1w"].data.dtype == np.float32


def medians(s: SyntheticSubject, contrast: str) -> dict[int, float]:
    img = s.images[contrast].data
    return {c: float(np.median(img[eroded(s.tissue.data == c)])) for c in (1, 2, 3)}


@pytest.mark.parametrize("sid", ["order-0", "order-1"])
def test_tissue_intensity_order_per_contrast(sid):
    s = subject(sid, pathology="none")
    t1, t2, flair = medians(s, "T1w"), medians(s, "T2w"), medians(s, "FLAIR")
    assert t1[3] > t1[2] > t1[1], t1
    assert t2[1] > t2[2] > t2[3], t2
    assert flair[1] < 0.6 * flair[2], flair


def test_contrasts_are_not_copies_of_one_image():
    s = subject("order-0", pathology="none")
    brain = s.brain_mask.data > 0
    r = np.corrcoef(s.images["T1w"].data[brain], s.images["T2w"].data[brain])[0, 1]
    assert r < 0, r  # T1w and T2w contrast run opposite inside the brain


def test_glioma_labels_match_tumour_contrast():
    s = subject("glioma-0", pathology="glioma")
    tumor = s.tumor.data
    t1, t1ce, flair = s.images["T1w"].data, s.images["T1ce"].data, s.images["FLAIR"].data
    wm = eroded(s.tissue.data == 3)
    enh = tumor == 4
    assert enh.sum() > 20
    assert np.median(t1ce[enh] - t1[enh]) > 0.5 * np.median(t1[wm])
    healthy = ~ndimage.binary_dilation(tumor > 0, iterations=3)
    assert abs(np.median(t1ce[wm & healthy] - t1[wm & healthy])) < 0.1 * np.median(t1[wm])
    # Edema against contralateral white matter.
    centre_x = world(s.tumor.affine, tumor > 0)[:, 0].mean()
    brain_x = world(s.brain_mask.affine, s.brain_mask.data > 0)[:, 0].mean()
    wm_x = world(s.tissue.affine, wm)[:, 0]
    contra = np.sign(wm_x - brain_x) != np.sign(centre_x - brain_x)
    assert np.median(flair[tumor == 2]) > 1.3 * np.median(flair[wm][contra])


def test_glioma_is_intra_axial():
    for i in range(3):
        s = subject(f"glioma-{i}", pathology="glioma")
        tumor = s.tumor.data > 0
        assert tumor.sum() > 50
        assert np.all(s.brain_mask.data[tumor] == 1)
        ring = ndimage.binary_dilation(tumor) & ~tumor
        assert np.isin(s.tissue.data[ring], (0, 4, 5)).mean() < 0.01  # (almost) never bone, scalp or air
        depth = ndimage.distance_transform_edt(s.brain_mask.data, sampling=s.meta.voxel_size)
        centre = tuple(np.round(np.argwhere(s.tumor.data == 4).mean(0)).astype(int))
        assert depth[centre] > 10.0  # core centred deep in a hemisphere
        assert set(np.unique(s.tumor.data)) <= {0, 1, 2, 4}
        assert s.meta.idh in ("mutant", "wildtype") and s.meta.mgmt in (0, 1)
        assert s.meta.survival_days > 0 and isinstance(s.meta.event, bool)


def test_meningioma_touches_brain_surface_and_skull():
    for i in range(3):
        s = subject(f"men-{i}", pathology="meningioma")
        tumor = s.tumor.data == 4
        assert tumor.sum() > 10
        ring = ndimage.binary_dilation(tumor, iterations=2) & ~tumor
        assert np.isin(s.tissue.data[ring], (2, 3)).any()  # brain tissue on one side
        assert (s.tissue.data[ring] == 4).any()  # bone (dura) on the other
        assert s.meta.idh is None and s.meta.survival_days is None


def test_pituitary_is_midline_and_inferior():
    for i in range(3):
        s = subject(f"pit-{i}", pathology="pituitary")
        tumor = world(s.tumor.affine, s.tumor.data > 0)
        brain = world(s.brain_mask.affine, s.brain_mask.data > 0)
        assert len(tumor) > 5
        assert abs(tumor[:, 0].mean() - brain[:, 0].mean()) < 8.0
        assert tumor[:, 2].mean() < brain[:, 2].mean() - 15.0
        box = s.meta.tumor_box3d
        idx = np.argwhere(s.tumor.data > 0)
        assert box == (*idx.min(0), *(idx.max(0) + 1))


def test_orientation_spacing_and_world_coordinates():
    seen = set()
    for i in range(12):
        s = subject(f"orient-{i}", anisotropic=0.5, oblique=0.3)
        affine = s.tissue.affine
        np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), s.meta.voxel_size)
        cosines = np.abs(affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0))
        if s.meta.orientation == "oblique":
            assert cosines.max(0).min() < 0.999
        else:
            assert "".join(aff2axcodes(affine)) == s.meta.orientation
            assert cosines.max(0).min() > 0.999
        seen.add(s.meta.orientation)
        seen.add(max(s.meta.voxel_size) / min(s.meta.voxel_size))
        left = world(affine, s.hippocampus.data == 1)[:, 0].mean()
        right = world(affine, s.hippocampus.data == 2)[:, 0].mean()
        assert left < right  # RAS+ world: left hemisphere at smaller x, whatever the storage order
    assert len(seen & {"RAS", "LPS", "LAS", "oblique"}) >= 3 and 3.0 in seen, seen


def test_bias_field_is_smooth_and_applied():
    s = subject("bias-0", pathology="none")
    bias = s.bias_field.data
    brain = s.brain_mask.data > 0
    assert bias.max() / bias.min() > 1.1
    assert np.abs(np.diff(np.log(bias), 2, axis=0)).max() < 0.01  # smooth: tiny curvature per voxel
    wm = eroded(s.tissue.data == 3) & brain
    r = np.corrcoef(np.log(s.images["T1w"].data[wm]), np.log(bias[wm]))[0, 1]
    assert r > 0.4, r


def test_alzheimer_hippocampi_smaller_than_age_matched_controls():
    ad = [subject(f"hip-{i}", diagnosis="alzheimer", age_range=(70, 80)) for i in range(4)]
    cn = [subject(f"hip-{i}", diagnosis="control", age_range=(70, 80)) for i in range(4)]

    def ml(s: SyntheticSubject) -> float:
        return float((s.hippocampus.data > 0).sum() * np.prod(s.meta.voxel_size) / 1000)

    assert all(s.meta.cdr > 0 for s in ad) and all(s.meta.cdr == 0 for s in cn)
    assert np.mean([ml(s) for s in ad]) < 0.85 * np.mean([ml(s) for s in cn])


def test_ventricles_grow_with_age():
    def csf_fraction(s: SyntheticSubject) -> float:
        brain = s.brain_mask.data > 0
        return float((s.tissue.data[brain] == 1).mean())

    young = [csf_fraction(subject(f"age-{i}", diagnosis="control", age_range=(20, 25))) for i in range(3)]
    old = [csf_fraction(subject(f"age-{i}", diagnosis="control", age_range=(80, 85))) for i in range(3)]
    assert np.mean(old) > np.mean(young) + 0.03, (young, old)


def test_glioma_markers_follow_model():
    rng = np.random.default_rng(0)
    young = [glioma_markers(30, 0.1, 0.3, 30, rng) for _ in range(400)]
    old = [glioma_markers(75, 0.6, 0.3, 30, rng) for _ in range(400)]
    assert np.mean([m[0] == "mutant" for m in young]) > np.mean([m[0] == "mutant" for m in old]) + 0.4
    censored = np.mean([not m[3] for m in young + old])
    assert 0.15 < censored < 0.4, censored
    assert np.median([m[2] for m in young]) > np.median([m[2] for m in old])


def test_kspace_rss_matches():
    rng = np.random.default_rng(1)
    image = rng.random((3, 32, 40)).astype(np.float32)
    kspace, rss = simulate_kspace(image, 4, rng)
    assert kspace.shape == (3, 4, 32, 40) and kspace.dtype == np.complex64
    assert rss.shape == (3, 32, 40) and rss.dtype == np.float32
    np.testing.assert_allclose(np.sqrt((np.abs(ifft2c(kspace)) ** 2).sum(1)), rss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rss, image, rtol=1e-4, atol=1e-5)  # sensitivities have unit RSS
    coils = ifft2c(kspace)
    assert not np.allclose(np.abs(coils[:, 0]), np.abs(coils[:, 1]))  # coils really differ


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="pathology"):
        SubjectParams(pathology="lymphoma")
    with pytest.raises(ValueError, match="contrasts"):
        SubjectParams(contrasts=("DWI",))
    with pytest.raises(ValueError, match="image must be"):
        simulate_kspace(np.zeros((4, 4)), 2, np.random.default_rng(0))
