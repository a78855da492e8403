"""Intensity normalisation: z-score, WhiteStripe, Nyúl–Udupa (fitted on training only), clipping."""

from __future__ import annotations

import numpy as np
import pytest

from brainssl.preprocess import NyulLandmarks, apply_nyul, clip_percentiles, fit_nyul, whitestripe, zscore


def _tissue_volume(
    rng: np.random.Generator,
    means: tuple[float, float, float],
    gain: float = 1.0,
    shape: tuple[int, int, int] = (24, 24, 24),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSF/GM/WM volume (fractions 0.15/0.40/0.45) inside a cube mask, with Gaussian noise."""
    tissue = rng.choice([1, 2, 3], size=shape, p=[0.15, 0.40, 0.45])
    mask = np.zeros(shape, bool)
    mask[2:-2, 2:-2, 2:-2] = True
    data = np.choose(tissue - 1, means).astype(np.float64) * gain
    data = data + rng.normal(0, 3.0 * gain, shape)
    data[~mask] = rng.normal(0, 1.0, (~mask).sum())
    return data.astype(np.float32), mask, tissue


def test_zscore_has_zero_mean_unit_std_in_brain() -> None:
    data, mask, _ = _tissue_volume(np.random.default_rng(0), (30.0, 60.0, 100.0), gain=3.7)
    out = zscore(data, mask)
    assert abs(float(out[mask].mean())) < 1e-4
    assert float(out[mask].std()) == pytest.approx(1.0, abs=1e-4)
    # the background does not enter the statistics
    assert float(zscore(np.where(mask, data, 1e4), mask)[mask].std()) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    ("means", "bright", "wm"), [((30.0, 60.0, 100.0), True, 100.0), ((160.0, 90.0, 55.0), False, 55.0)]
)
def test_whitestripe_centres_white_matter(means: tuple[float, float, float], bright: bool, wm: float) -> None:
    data, mask, tissue = _tissue_volume(np.random.default_rng(1), means)
    out, info = whitestripe(data, mask, wm_bright=bright)
    assert info["mode"] == pytest.approx(wm, abs=3.0)
    assert info["mean"] == pytest.approx(wm, abs=2.0)
    # WM lands at 0 (within 1.5 intensity units; the stripe std is narrow by design)
    wm_voxels = out[mask & (tissue == 3)]
    assert abs(float(np.median(wm_voxels))) * info["std"] < 1.5
    # the stripe is invariant to a global gain
    scaled, _ = whitestripe(data * 5.0, mask, wm_bright=bright)
    assert np.allclose(scaled[mask], out[mask], atol=1e-3)


def test_nyul_landmarks_depend_on_training_only() -> None:
    rng = np.random.default_rng(2)
    train = [_tissue_volume(rng, (30.0, 60.0, 100.0), gain=g)[:2] for g in (0.8, 1.0, 1.6)]
    landmarks = fit_nyul(train, contrast="T1w")
    frozen = landmarks.to_dict()
    assert landmarks.n_train == 3
    # applying to a training image puts its landmarks on the standard ones (known values)
    out = apply_nyul(*train[1], landmarks)
    marks = np.percentile(out[train[1][1]], landmarks.percentiles)
    assert np.allclose(marks, landmarks.standard, atol=1e-3)
    # an evaluation subject, then the same subject changed: the landmarks never move
    evaluation, eval_mask, _ = _tissue_volume(rng, (35.0, 70.0, 90.0), gain=2.5)
    first = apply_nyul(evaluation, eval_mask, landmarks)
    changed = evaluation * 3.0 + 50.0
    changed[:8] *= 2.0
    second = apply_nyul(changed, eval_mask, landmarks)
    assert landmarks.to_dict() == frozen
    assert not np.allclose(first, second)
    assert np.array_equal(apply_nyul(*train[1], landmarks), out)
    # whereas changing a TRAINING image does move them (the test can see a change)
    moved = fit_nyul([(np.clip(train[0][0], 0, None) ** 1.5, train[0][1]), *train[1:]])
    assert not np.allclose(moved.standard, landmarks.standard)


def test_nyul_landmarks_round_trip_json(tmp_path) -> None:
    rng = np.random.default_rng(3)
    landmarks = fit_nyul([_tissue_volume(rng, (30.0, 60.0, 100.0))[:2]], contrast="T2w")
    landmarks.save(tmp_path / "nyul.json")
    assert NyulLandmarks.load(tmp_path / "nyul.json") == landmarks


def test_nyul_rejects_empty_training_and_bad_percentiles() -> None:
    with pytest.raises(ValueError, match="at least one"):
        fit_nyul([])
    data, mask, _ = _tissue_volume(np.random.default_rng(4), (30.0, 60.0, 100.0))
    with pytest.raises(ValueError, match="increasing"):
        fit_nyul([(data, mask)], percentiles=(1.0, 50.0, 40.0, 99.0))


def test_clip_percentiles_within_brain() -> None:
    data, mask, _ = _tissue_volume(np.random.default_rng(5), (30.0, 60.0, 100.0))
    data[5, 5, 5] = 1e6
    out = clip_percentiles(data, mask, 0.5, 99.5)
    lo, hi = np.percentile(data[mask], [0.5, 99.5])
    assert float(out.max()) == pytest.approx(hi) and float(out[mask].min()) == pytest.approx(lo)
    assert float((out[mask] >= hi - 1e-3).mean()) == pytest.approx(0.005, abs=0.002)
    with pytest.raises(ValueError, match="low < high"):
        clip_percentiles(data, mask, 99.0, 1.0)
