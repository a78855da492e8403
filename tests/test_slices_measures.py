"""Slice measures: entropy against scipy, the position window at its bounds, orientation, mapping."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from brainssl.settings import UnknownSettingError
from brainssl.slices import (
    SliceSettings,
    brain_positions,
    map_intensity,
    position_keep,
    radiological,
    slice_entropy,
    square_resize,
)


@pytest.mark.parametrize("bins", [16, 100, 256])
def test_entropy_matches_scipy_on_histogram(bins: int) -> None:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(6, 12, 12)).astype(np.uint8)
    images[0] = 0
    images[1, :, :6] = 200
    regions = rng.random((6, 12, 12)) < 0.6
    got = slice_entropy(images, regions, bins)
    for image, region, value in zip(images, regions, got, strict=True):
        counts, _ = np.histogram(image[region] / 255.0, bins=bins, range=(0.0, 1.0))
        assert value == pytest.approx(sps.entropy(counts, base=2), abs=1e-12)
    whole = slice_entropy(images, None, bins)
    counts, _ = np.histogram(images[3] / 255.0, bins=bins, range=(0.0, 1.0))
    assert whole[3] == pytest.approx(sps.entropy(counts, base=2), abs=1e-12)


def test_entropy_known_values() -> None:
    half = np.zeros((1, 4, 4), np.float32)
    half[0, :, :2] = 1.0
    quarters = np.array([[[0.0, 0.3], [0.6, 0.99]]], np.float32)
    assert slice_entropy(half, None, 8)[0] == pytest.approx(1.0)
    assert slice_entropy(quarters, None, 4)[0] == pytest.approx(2.0)
    assert slice_entropy(np.zeros((1, 3, 3), np.uint8), np.zeros((1, 3, 3), bool), 8)[0] == 0.0


def test_position_window_keeps_exactly_the_bounds() -> None:
    counts = np.zeros(40)
    counts[10:31] = 5  # brain on slices 10..30: position (k - 10) / 20
    pos = brain_positions(counts)
    assert pos[10] == 0.0 and pos[30] == 1.0 and pos[9] < 0 and pos[31] > 1
    assert np.flatnonzero(position_keep(pos, (0.25, 0.75))).tolist() == list(range(15, 26))
    assert np.flatnonzero(position_keep(pos, (0.0, 1.0))).tolist() == list(range(10, 31))
    assert np.flatnonzero(position_keep(pos, (0.3, 0.3))).tolist() == [16]
    assert np.flatnonzero(position_keep(pos, (0.25 + 1e-6, 0.75 - 1e-6))).tolist() == list(range(16, 25))
    assert position_keep(np.array([np.nan]), (0.4, 0.6)).tolist() == [True]


def test_radiological_view_puts_anterior_up_and_right_left() -> None:
    vol = np.zeros((5, 6, 3))
    vol[4, 5, 1] = 1.0  # most right (x), most anterior (y), slice z=1
    out = radiological(vol)
    assert out.shape == (3, 6, 5)
    assert out[1, 0, 0] == 1.0


def test_map_intensity_percentiles_and_background() -> None:
    vol = np.arange(100, dtype=np.float32).reshape(10, 10) - 20.0
    brain = np.zeros_like(vol, bool)
    brain[2:8] = True
    out = map_intensity(vol, brain, (0.0, 100.0))
    assert out[~brain].max() == 0.0
    assert out[brain].min() == 0.0 and out[brain].max() == 1.0
    with pytest.raises(ValueError, match="mask shape"):
        map_intensity(vol, brain[:5], (1.0, 99.0))


def test_square_resize_pads_centred_and_keeps_aspect() -> None:
    img = np.ones((1, 4, 8), np.float32)
    out = square_resize(img, 8)
    assert out.shape == (1, 8, 8)
    assert out[0, :2].max() == 0.0 and out[0, 6:].max() == 0.0 and out[0, 2:6].min() == 1.0
    labels = square_resize(np.full((1, 3, 3), 4, np.uint8), 6, label=True)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {4}


def test_settings_reject_unknown_keys_and_bad_values() -> None:
    assert SliceSettings.from_dict({"size": 64, "position_window": [0.2, 0.8]}).position_window == (0.2, 0.8)
    with pytest.raises(UnknownSettingError, match=r"slices\.entropy_bin; allowed"):
        SliceSettings.from_dict({"entropy_bin": 8})
    with pytest.raises(ValueError, match="entropy_region"):
        SliceSettings(entropy_region="skull")
