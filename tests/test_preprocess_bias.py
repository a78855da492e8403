"""N4 on the demo cohort: the generator knows the bias field and the tissue classes."""

import logging

import nibabel as nib
import numpy as np
import pytest
import yaml
from conftest import REPO
from scipy import ndimage

from brainssl.config import stage_params
from brainssl.preprocess import PreprocessSettings, head_mask, n4_correct, reorient_resample, resample_to_grid
from brainssl.synth import SubjectParams, generate_subject

logger = logging.getLogger(__name__)
WM = 3  # brainssl.synth.TISSUE_CLASSES


def _cov(values: np.ndarray) -> float:
    return float(values.std() / values.mean())


def _demo_settings() -> PreprocessSettings:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    return PreprocessSettings.from_dict(stage_params(config, "preprocess", "ixi", ["spacing_mm", "n4"]))


@pytest.mark.parametrize("index", range(3))
def test_n4_with_demo_settings_lowers_white_matter_cov(index: int) -> None:
    """Demo T1w heads (seed 1234) resampled as the stage does; WM CoV must drop by a quarter or more."""
    settings = _demo_settings()
    subject = generate_subject(1234, f"n4-{index}", SubjectParams(contrasts=("T1w",), grid_mm=2.0))
    volume = subject.images["T1w"]
    raw = nib.Nifti1Image(volume.data.astype(np.float32), volume.affine)
    img = reorient_resample(raw, settings.spacing_mm)
    tissue_img = nib.Nifti1Image(subject.tissue.data.astype(np.uint8), subject.tissue.affine)
    tissue = np.asarray(resample_to_grid(tissue_img, img.affine, img.shape, is_label=True).dataobj)
    field_img = nib.Nifti1Image(subject.bias_field.data.astype(np.float32), subject.bias_field.affine)
    true_field = np.asarray(resample_to_grid(field_img, img.affine, img.shape).dataobj)
    wm = ndimage.binary_erosion(tissue == WM)
    data = np.asarray(img.dataobj)
    n4 = settings.n4
    shrink = max(1, round(n4.shrink_mm / settings.spacing_mm))
    corrected, _ = n4_correct(img, head_mask(data), shrink, n4.iterations, n4.convergence, n4.control_points)
    before, after = _cov(data[wm]), _cov(np.asarray(corrected.dataobj)[wm])
    bias_free = _cov((data / np.maximum(true_field, 1e-3))[wm])
    logger.info("WM CoV: biased %.4f  N4 %.4f  bias-free %.4f", before, after, bias_free)
    assert bias_free < before  # the generator's field does raise the CoV
    assert after < 0.75 * before, f"N4 lowered WM CoV only from {before:.4f} to {after:.4f}"
