"""Reorientation/resampling to RAS, label interpolation, crop and the way back to original space."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from brainssl.preprocess import (
    TransformRecord,
    crop_box,
    crop_image,
    reorient_resample,
    to_original_space,
)

sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def _smooth_volume(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    return ndimage.gaussian_filter(rng.random(shape), 1.5).astype(np.float32) * 100


def _affine(linear: np.ndarray, origin: tuple[float, float, float]) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = origin
    return affine


def _rotation(deg: tuple[float, float, float]) -> np.ndarray:
    ax, ay, az = np.deg2rad(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@pytest.mark.parametrize(
    ("linear", "codes"),
    [
        (np.diag([-2.0, -2.0, 2.0]), "LPS"),
        (np.diag([-2.0, 2.0, 2.0]), "LAS"),
        (np.array([[0, 0, -2.0], [2.0, 0, 0], [0, -2.0, 0]]), "AIL"),
    ],
)
def test_axis_permutations_become_ras_with_world_kept(linear: np.ndarray, codes: str) -> None:
    rng = np.random.default_rng(0)
    data = _smooth_volume((12, 14, 10), rng)
    img = nib.Nifti1Image(data, _affine(linear, (40.0, -30.0, 12.0)))
    assert "".join(nib.aff2axcodes(img.affine)) == codes
    out = reorient_resample(img, spacing_mm=2.0)
    assert nib.aff2axcodes(out.affine) == ("R", "A", "S")
    assert np.allclose(out.affine[:3, :3], np.diag([2.0, 2.0, 2.0]))
    ijk = np.stack([rng.integers(0, n, 50) for n in data.shape], axis=1)
    world = ijk @ img.affine[:3, :3].T + img.affine[:3, 3]
    out_ijk = world @ np.linalg.inv(out.affine)[:3, :3].T + np.linalg.inv(out.affine)[:3, 3]
    assert np.allclose(out_ijk, np.round(out_ijk), atol=1e-6)
    values = np.asarray(out.dataobj)[tuple(np.round(out_ijk).astype(int).T)]
    assert np.allclose(values, data[tuple(ijk.T)], atol=1e-4)


def test_oblique_input_is_resampled_onto_ras_grid_with_world_kept() -> None:
    rng = np.random.default_rng(1)
    data = _smooth_volume((20, 22, 18), rng)
    linear = _rotation((12.0, -8.0, 20.0)) @ np.diag([-2.0, -2.0, 3.0])
    img = nib.Nifti1Image(data, _affine(linear, (30.0, 20.0, -10.0)))
    out = reorient_resample(img, spacing_mm=2.5)
    assert np.allclose(out.affine[:3, :3], np.diag([2.5, 2.5, 2.5]))
    # every output voxel holds the trilinear value of the input at the same world point
    out_data = np.asarray(out.dataobj)
    ijk = np.stack(np.nonzero(out_data), axis=1)[::7]
    world = ijk @ out.affine[:3, :3].T + out.affine[:3, 3]
    src = world @ np.linalg.inv(img.affine)[:3, :3].T + np.linalg.inv(img.affine)[:3, 3]
    inside = np.all((src >= 0) & (src <= np.array(data.shape) - 1), axis=1)
    expected = ndimage.map_coordinates(data, src[inside].T, order=1)
    assert inside.sum() > 100
    assert np.allclose(out_data[tuple(ijk[inside].T)], expected, atol=1e-3)
    # and a blob keeps its world position
    blob = np.zeros((20, 22, 18), np.float32)
    blob[6:9, 10:13, 11:14] = 100.0
    moved = reorient_resample(nib.Nifti1Image(blob, img.affine), spacing_mm=1.0)
    before = img.affine[:3, :3] @ np.array(ndimage.center_of_mass(blob)) + img.affine[:3, 3]
    after = (
        moved.affine[:3, :3] @ np.array(ndimage.center_of_mass(np.asarray(moved.dataobj)))
        + moved.affine[:3, 3]
    )
    assert np.linalg.norm(before - after) < 0.5


def test_labels_stay_nearest_and_share_the_image_grid() -> None:
    rng = np.random.default_rng(2)
    labels = ndimage.zoom(rng.integers(0, 4, (6, 6, 5)), (3, 3, 3), order=0).astype(np.int16)
    labels[labels == 3] = 7  # non-consecutive label values
    linear = _rotation((0.0, 10.0, -15.0)) @ np.diag([-1.2, 1.2, 3.0])
    affine = _affine(linear, (5.0, -7.0, 3.0))
    image = nib.Nifti1Image(rng.random(labels.shape).astype(np.float32), affine)
    img_out = reorient_resample(image, 2.0)
    lab_out = reorient_resample(
        nib.Nifti1Image(labels, affine), 2.0, is_label=True, grid=(img_out.affine, img_out.shape)
    )
    out = np.asarray(lab_out.dataobj)
    assert lab_out.shape == img_out.shape and np.allclose(lab_out.affine, img_out.affine)
    assert np.issubdtype(out.dtype, np.integer)
    assert set(np.unique(out)) <= {0, 1, 2, 7}
    assert {1, 2, 7} <= set(np.unique(out))


def test_reorient_rejects_4d() -> None:
    img = nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), np.eye(4))
    with pytest.raises(ValueError, match="3D"):
        reorient_resample(img, 1.0)


def test_crop_and_ras_round_trip_to_original_voxel() -> None:
    rng = np.random.default_rng(3)
    data = _smooth_volume((16, 18, 14), rng)
    linear = _rotation((5.0, 0.0, 10.0)) @ np.diag([-1.5, -1.5, 2.5])
    original = nib.Nifti1Image(data, _affine(linear, (20.0, 25.0, -30.0)))
    resampled = reorient_resample(original, 2.0)
    mask = np.zeros(resampled.shape, bool)
    mask[4:9, 5:12, 3:8] = True
    box = crop_box(mask, 1)
    cropped = crop_image(resampled, box)
    assert cropped.shape == (7, 9, 7)
    record = TransformRecord(reference="T1w", spacing_mm=2.0)
    record.add_original("T1w", original)
    record.resampled_affine = resampled.affine.tolist()
    record.crop_offset = [a for a, _ in box]
    # the JSON form works the same as the object
    as_json = json.loads(json.dumps(record.to_dict()))
    original_ijk = np.array([[7.0, 9.0, 6.0], [3.25, 11.5, 8.0]])
    world = original_ijk @ original.affine[:3, :3].T + original.affine[:3, 3]
    final_ijk = world @ np.linalg.inv(cropped.affine)[:3, :3].T + np.linalg.inv(cropped.affine)[:3, 3]
    back_world, back_ijk = to_original_space(final_ijk, as_json)
    assert np.allclose(back_world, world, atol=1e-6)
    assert np.allclose(back_ijk, original_ijk, atol=1e-6)
    # a value in the cropped volume equals the original interpolated at the returned voxel
    voxel = np.array([3, 4, 2])
    _, src = to_original_space(voxel, record)
    assert np.asarray(cropped.dataobj)[tuple(voxel)] == pytest.approx(
        ndimage.map_coordinates(data, src[:, None], order=1)[0], abs=1e-3
    )
