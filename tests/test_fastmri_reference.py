"""Reconstruction masks, metrics and SSIM loss against fastMRI's own package (``fastmri==0.3.0``).

``make install`` installs it with ``--no-deps`` (its declared torchvision/lightning pins clash
with our torch); ``fastmri.evaluate`` also needs scikit-image and runstats (the dev extra).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainssl.synth.acquisition import simulate_kspace
from brainssl.tasks import reconstruction as recon
from brainssl.tasks.recon_masks import MASK_KINDS, cartesian_mask, mask_seed, zero_filled
from brainssl.tasks.recon_metrics import SSIMLoss, mse, nmse, psnr, ssim
from brainssl.tasks.reconstruction import ReconVolume

subsample = pytest.importorskip("fastmri.data.subsample")
evaluate = pytest.importorskip("fastmri.evaluate")
fastmri_losses = pytest.importorskip("fastmri.losses")
fastmri_transforms = pytest.importorskip("fastmri.data.transforms")

#: brainssl's mask kinds are fastMRI's names (``fastmri.data.subsample.create_mask_for_mask_type``).
FASTMRI_MASKS = {
    "random": subsample.RandomMaskFunc,
    "equispaced": subsample.EquiSpacedMaskFunc,
    "equispaced_fraction": subsample.EquispacedMaskFractionFunc,
}

FILE_NAMES = ["file_brain_AXT2_200_2000019.h5", "file_brain_AXFLAIR_201_6002900.h5"]
SEEDS = [0, 1, 42, 2**32 - 1, *(tuple(map(ord, name)) for name in FILE_NAMES)]


def _fastmri_mask(kind, n_cols, acceleration, centre, seed):
    func = FASTMRI_MASKS[kind]([centre], [acceleration])
    mask, n_low = func((15, 640, n_cols, 2), seed=seed)
    return mask.numpy().reshape(-1).astype(bool), n_low


def test_mask_kinds_are_fastmris_names():
    assert set(MASK_KINDS) == set(FASTMRI_MASKS)
    for kind, cls in FASTMRI_MASKS.items():
        assert isinstance(subsample.create_mask_for_mask_type(kind, [0.08], [4]), cls)


@pytest.mark.parametrize("kind", sorted(FASTMRI_MASKS))
def test_masks_are_fastmris_for_every_seed_shape_acceleration_and_centre(kind):
    compared = 0
    for n_cols in (320, 368, 396, 213):
        for acceleration in (2, 4, 8):
            for centre in (0.16, 0.08, 0.04, 0.1):
                if round(n_cols * centre) * acceleration >= n_cols:
                    continue
                for seed in SEEDS:
                    want, n_low = _fastmri_mask(kind, n_cols, acceleration, centre, seed)
                    got = cartesian_mask(kind, n_cols, acceleration, centre, seed)
                    assert got.dtype == bool and got.shape == (n_cols,)
                    assert np.array_equal(got, want), (kind, n_cols, acceleration, centre, seed)
                    assert n_low == round(n_cols * centre)
                    compared += 1
    assert compared > 200


def test_a_files_masks_are_the_ones_fastmris_transforms_give_it():
    n_cols = 368
    attrs = {"max": 1.0, "padding_left": 0, "padding_right": n_cols, "recon_size": (320, 320, 1)}
    for name in FILE_NAMES:
        assert mask_seed(name) == tuple(map(ord, name))
        for kind in MASK_KINDS:
            transform = fastmri_transforms.VarNetDataTransform(
                FASTMRI_MASKS[kind]([0.08], [4]), use_seed=True
            )
            kspace = np.ones((2, 8, n_cols), dtype=np.complex64)
            sample = transform(kspace, None, np.zeros((320, 320), np.float32), attrs, name, 0)
            want = sample.mask.numpy().reshape(-1)
            assert np.array_equal(cartesian_mask(kind, n_cols, 4, 0.08, mask_seed(name)), want)


def test_reconstruction_inputs_use_the_files_fastmri_mask():
    rng = np.random.default_rng(0)
    kspace, rss = simulate_kspace(rng.random((2, 32, 32)).astype(np.float32), 2, rng)
    volume = ReconVolume("file_brain_AXT1_201_600000", "sub-x", kspace, rss, "file_brain_AXT1_201_600000.h5")
    for kind in MASK_KINDS:
        want, _ = _fastmri_mask(kind, 32, 4, 0.08, tuple(map(ord, volume.file_name)))
        zf = zero_filled(kspace, want, rss.shape[1:])
        prepared = recon._prepare(volume, kind, 4, 0.08, 32)
        assert np.allclose(prepared.inputs[:, 0], recon._square(zf / zf.max(), 32), atol=1e-6)


def _volumes(seed, shape, dtype):
    rng = np.random.default_rng(seed)
    gt = rng.random(shape).astype(dtype) * rng.uniform(0.5, 40)
    pred = (gt + rng.normal(0, 0.1 * gt.max(), shape)).astype(dtype)
    return gt, pred


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_are_fastmris_evaluate(seed):
    for shape in ((3, 20, 24), (2, 7, 9), (4, 32, 32)):
        for dtype in (np.float64, np.float32):
            gt, pred = _volumes(seed, shape, dtype)
            tol = 1e-10 if dtype == np.float64 else 2e-5
            assert mse(gt, pred) == pytest.approx(float(evaluate.mse(gt, pred)), rel=tol)
            assert nmse(gt, pred) == pytest.approx(float(evaluate.nmse(gt, pred)), rel=tol)
            for maxval in (None, float(gt.max()) * 1.7, 1.0):
                assert psnr(gt, pred, maxval) == pytest.approx(
                    float(evaluate.psnr(gt, pred, maxval)), rel=tol
                )
                want = float(evaluate.ssim(gt, pred, maxval)[0])
                assert ssim(gt, pred, maxval) == pytest.approx(want, rel=tol, abs=tol)
            # the defaults are the target's maximum, by keyword and by position alike
            assert psnr(gt, pred) == psnr(gt, pred, maxval=None)
            assert ssim(gt, pred) == pytest.approx(float(evaluate.ssim(gt, pred)[0]), rel=tol, abs=tol)


@pytest.mark.parametrize("seed", [0, 1])
def test_ssim_loss_is_fastmris(seed):
    # float32, as the networks train (fastMRI's window holds 1/49 rounded to float32, so float64
    # inputs still agree only to ~1e-8)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 1, 24, 20, generator=g)
    y = (x + 0.2 * torch.randn(x.shape, generator=g)).requires_grad_(True)
    data_range = torch.tensor([1.0, 2.5, 0.7])
    ref_fn, ours_fn = fastmri_losses.SSIMLoss(), SSIMLoss()
    for reduced in (True, False):
        want, got = ref_fn(y, x, data_range, reduced), ours_fn(y, x, data_range, reduced)
        assert got.shape == want.shape
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    want_grad = torch.autograd.grad(ref_fn(y, x, data_range), y)[0]
    got_grad = torch.autograd.grad(ours_fn(y, x, data_range), y)[0]
    assert torch.allclose(got_grad, want_grad, rtol=1e-4, atol=1e-7)


def test_reconstruction_ssim_training_loss_uses_the_target_volumes_maximum():
    g = torch.Generator().manual_seed(3)
    volumes = [
        recon._Prepared(
            torch.rand(n, 1, 16, 16, generator=g).numpy(), 3 * torch.rand(n, 1, 16, 16, generator=g).numpy()
        )
        for n in (2, 3)
    ]
    targets = recon._training_targets(volumes, "ssim")
    assert targets.shape == (5, 2, 16, 16)
    output = torch.rand(5, 1, 16, 16, generator=g)
    peaks = torch.tensor([float(v.targets.max()) for v in volumes for _ in range(len(v.targets))])
    want = fastmri_losses.SSIMLoss()(output, torch.from_numpy(targets[:, :1]), peaks)
    got = recon._training_loss("ssim")(output, torch.from_numpy(targets))
    assert torch.allclose(got, want, rtol=1e-5)
    assert recon._training_loss("l1") is torch.nn.functional.l1_loss
    assert recon._training_targets(volumes, "l1").shape == (5, 1, 16, 16)
    with pytest.raises(ValueError, match="unknown reconstruction loss"):
        recon._training_loss("l2")


def test_tiny_reconstruction_run_trains_with_the_ssim_loss(tmp_path, caplog):
    from brainssl.pretrain.backbones import build_encoder
    from brainssl.pretrain.export import export_encoder
    from brainssl.tasks.dense_settings import ReconstructionSettings

    torch.set_num_threads(1)
    torch.manual_seed(0)
    path = tmp_path / "moco-vit_tiny" / "encoder.safetensors"
    encoder = build_encoder("vit_tiny", img_size=32, depth=1, embed_dim=24, num_heads=2)
    card = path.with_name("model_card.json")
    export_encoder(
        encoder, path, card, intensity="t", manifest_sha256=None, config_sha256=None, method="moco"
    )
    rng = np.random.default_rng(1)
    volumes = []
    for i in range(4):
        kspace, rss = simulate_kspace(rng.random((2, 32, 32)).astype(np.float32), 2, rng)
        volumes.append(ReconVolume(f"file_brain_AXT1_201_60000{i}", f"sub-{i}", kspace, rss))
    settings = ReconstructionSettings.from_dict(
        {
            "modes": ["finetune"],
            "masks": ["equispaced"],
            "accelerations": [4],
            "loss": "ssim",
            "label_fractions": [1.0],
            "seeds": 1,
            "bootstrap": 2,
            "epochs": 1,
            "width": 8,
            "test_fraction": 0.5,
        }
    )
    with caplog.at_level("WARNING", logger=recon.__name__):
        rows, per_volume, _ = recon.run_reconstruction(
            volumes, "fastmri_brain", {"moco-vit_tiny": str(path)}, {}, settings, 0, 32
        )
    assert "equispaced_fraction" in caplog.text
    ours = [r for r in rows if r["encoder"] == "moco-vit_tiny" and r["metric"] == "ssim_equispaced_4x"]
    assert ours and all(r["status"] == "ok" and 0 < r["value"] <= 1 for r in ours)
    assert set(per_volume["setting"]) == {"equispaced_4x"}
