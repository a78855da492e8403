"""Accelerated MRI reconstruction (fastMRI brain layout): Cartesian masks, zero-filled baseline, U-Nets.

Masks, metrics and the SSIM loss are those of fastMRI (Zbontar et al. 2018, arXiv:1811.08839;
facebookresearch/fastMRI v0.3.0, commit 84ab6e57748c2631b0e780255dcbc1d6e372269d, the
``fastmri==0.3.0`` package the tests compare against).

Masks (``fastmri/data/subsample.py``), named as fastMRI names them: a fully sampled centre of
``round(n * centre_fraction)`` columns (the phase-encoding axis, the last axis of ``kspace``) plus

- ``random`` (``RandomMaskFunc``): every column with probability
  ``(n / acceleration - n_low) / (n - n_low)``;
- ``equispaced`` (``EquiSpacedMaskFunc``): every ``acceleration``-th column from a random offset
  (with the centre, more than ``n / acceleration`` columns);
- ``equispaced_fraction`` (``EquispacedMaskFractionFunc``): columns at a spacing adjusted so that,
  with the centre, about ``n / acceleration`` are kept, from a random offset. brainssl called this
  one ``equispaced`` before; a config that means it must now say ``equispaced_fraction``.

The draws are fastMRI's: a legacy ``numpy.random.RandomState`` seeded for the call, which first
draws the index of the (centre fraction, acceleration) pair, then the columns or the offset. So
:func:`cartesian_mask` with seed ``s`` is ``MaskFunc([centre_fraction], [acceleration])(shape,
seed=s)``. Each file's seed is fastMRI's own per-file rule (:func:`mask_seed`:
``tuple(map(ord, file_name))``, as its ``UnetDataTransform``/``VarNetDataTransform`` with
``use_seed=True`` seed the masks of validation and test files), so every slice of a file shares
one mask, the same for training and test files, and it is exactly the mask fastMRI gives that file.

The zero-filled image is the root-sum-of-squares over coils of the centred orthonormal
inverse FFT of the masked k-space, centre-cropped to the RSS target. Networks see it (and the
target) scaled by the zero-filled volume's maximum and resized to the encoder's side; a
:class:`~brainssl.tasks.dense_networks.DenseModel` (the encoder as its contracting path, the light
decoder as its expanding one) learns a residual correction, its encoder starting from pretrained
weights (``finetune``/``frozen``) or at random (``scratch``). The training loss is L1
(``loss: l1``, the loss of fastMRI's U-Net baseline) or fastMRI's ``SSIMLoss`` (``loss: ssim``,
as its VarNet trains: ``1 -`` mean SSIM of 7x7 uniform windows, ``data_range`` the target
volume's maximum).

Metrics are fastMRI's ``fastmri/evaluate.py`` definitions, per volume ``(slices, H, W)``, with
its signatures: :func:`mse`, :func:`nmse`, :func:`psnr` and :func:`ssim` (``maxval`` defaults to
the target volume's maximum). PSNR, SSIM and NMSE are reported: they are invariant to scaling
target and prediction together, so the scaled, resized grid gives the metrics of that grid (MSE
is not, so it is not reported). A file whose k-space or target holds NaN/inf is skipped and
listed with the reason.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from brainssl.synth.acquisition import ifft2c

from .dense_metrics import mean_or_nan
from .dense_settings import ReconstructionSettings
from .dense_sweep import SweepResult, TrainingSet, dense_variants, sweep
from .results import bootstrap_ci, result_row, skipped_rows

__all__ = [
    "MASK_KINDS",
    "RECON_LOSSES",
    "RECON_METRICS",
    "ReconVolume",
    "SSIMLoss",
    "cartesian_mask",
    "load_recon_volume",
    "mask_seed",
    "mse",
    "nmse",
    "psnr",
    "run_reconstruction",
    "ssim",
    "zero_filled",
]

logger = logging.getLogger(__name__)

MASK_KINDS = ("random", "equispaced", "equispaced_fraction")
RECON_METRICS = ("psnr", "ssim", "nmse")
RECON_LOSSES = ("l1", "ssim")
SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03


# ------------------------------------------------------------------------- metrics


def _check_pair(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gt, pred = np.asarray(gt, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if gt.shape != pred.shape:
        raise ValueError(f"target shape {gt.shape} differs from prediction shape {pred.shape}")
    return gt, pred


def mse(gt: np.ndarray, pred: np.ndarray) -> float:
    """Mean squared error ``mean((gt - pred)^2)`` of a volume (fastMRI ``evaluate.mse``)."""
    gt, pred = _check_pair(gt, pred)
    return float(np.mean((gt - pred) ** 2))


def nmse(gt: np.ndarray, pred: np.ndarray) -> float:
    """Normalised squared error ``||gt - pred||^2 / ||gt||^2`` of a volume (fastMRI ``evaluate.nmse``)."""
    gt, pred = _check_pair(gt, pred)
    return float(np.sum((gt - pred) ** 2) / np.sum(gt**2))


def psnr(gt: np.ndarray, pred: np.ndarray, maxval: float | None = None) -> float:
    """Peak signal-to-noise ratio ``10 log10(maxval^2 / mse)`` in dB (fastMRI ``evaluate.psnr``).

    Args:
        gt: target volume.
        pred: prediction of the same shape.
        maxval: the peak; ``None`` (fastMRI's default) takes ``gt.max()`` of the volume.
    """
    gt, pred = _check_pair(gt, pred)
    peak = gt.max() if maxval is None else float(maxval)
    error = np.mean((gt - pred) ** 2)
    return math.inf if error == 0 else float(10 * np.log10(peak**2 / error))


def ssim(gt: np.ndarray, pred: np.ndarray, maxval: float | None = None) -> float:
    """Mean structural similarity over the slices of ``(slices, H, W)`` volumes (fastMRI ``evaluate.ssim``).

    Per slice, scikit-image's ``structural_similarity`` as fastMRI calls it: a 7x7 uniform
    window, sample covariances, ``K1 = 0.01``, ``K2 = 0.03``, ``data_range = maxval``, averaged
    over the windows that fit inside the slice; then the mean over slices.

    Args:
        gt: ``(slices, H, W)`` target.
        pred: prediction of the same shape.
        maxval: the data range; ``None`` (fastMRI's default) takes ``gt.max()`` of the volume.

    Raises:
        ValueError: for different shapes, a non-3D volume or slices smaller than the 7x7 window.
    """
    gt, pred = _check_pair(gt, pred)
    if gt.ndim != 3 or min(gt.shape[1:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs (slices, H, W) with H, W >= {SSIM_WINDOW}, got {gt.shape}")
    data_range = gt.max() if maxval is None else float(maxval)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    n = SSIM_WINDOW**2
    cov_norm = n / (n - 1)
    pad = SSIM_WINDOW // 2
    values = []
    for x, y in zip(gt, pred, strict=True):
        mean = {k: ndimage.uniform_filter(v, SSIM_WINDOW) for k, v in (("x", x), ("y", y))}
        xx = cov_norm * (ndimage.uniform_filter(x * x, SSIM_WINDOW) - mean["x"] ** 2)
        yy = cov_norm * (ndimage.uniform_filter(y * y, SSIM_WINDOW) - mean["y"] ** 2)
        xy = cov_norm * (ndimage.uniform_filter(x * y, SSIM_WINDOW) - mean["x"] * mean["y"])
        numerator = (2 * mean["x"] * mean["y"] + c1) * (2 * xy + c2)
        denominator = (mean["x"] ** 2 + mean["y"] ** 2 + c1) * (xx + yy + c2)
        values.append((numerator / denominator)[pad:-pad, pad:-pad].mean())
    return float(np.mean(values))


class SSIMLoss(nn.Module):
    """fastMRI's ``SSIMLoss`` (``fastmri/losses.py``): ``1 -`` mean SSIM over 7x7 uniform windows.

    Local means, variances (scaled by ``n / (n - 1)``) and covariance come from a 7x7 box filter
    over the windows that fit inside the image (no padding); ``C1 = (k1 R)^2`` and
    ``C2 = (k2 R)^2`` with the per-image data range ``R``.

    Args:
        win_size: window side (7).
        k1: 0.01.
        k2: 0.03.

    Shapes:
        ``x``, ``y``: ``(B, 1, H, W)``; ``data_range``: ``(B,)``; output: scalar, or ``(B, 1, H', W')``
        of ``1 - SSIM`` maps when ``reduced`` is false.
    """

    def __init__(self, win_size: int = SSIM_WINDOW, k1: float = SSIM_K1, k2: float = SSIM_K2) -> None:
        super().__init__()
        self.win_size, self.k1, self.k2 = win_size, k1, k2
        n = win_size**2
        self.cov_norm = n / (n - 1)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, data_range: torch.Tensor, reduced: bool = True
    ) -> torch.Tensor:
        """Return ``1 - SSIM(x, y)`` (mean over images and windows when ``reduced``)."""
        box = lambda t: F.avg_pool2d(t, self.win_size, stride=1)  # noqa: E731
        r = data_range.reshape(-1, 1, 1, 1).to(x.dtype)
        c1, c2 = (self.k1 * r) ** 2, (self.k2 * r) ** 2
        mx, my = box(x), box(y)
        vx = self.cov_norm * (box(x * x) - mx * mx)
        vy = self.cov_norm * (box(y * y) - my * my)
        vxy = self.cov_norm * (box(x * y) - mx * my)
        s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        return 1 - s.mean() if reduced else 1 - s


def _training_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``l1``, or ``ssim``: targets ``(B, 2, S, S)`` hold the image and its volume's maximum."""
    if name == "l1":
        return F.l1_loss
    if name != "ssim":
        raise ValueError(f"unknown reconstruction loss {name!r}; choose from {list(RECON_LOSSES)}")
    criterion = SSIMLoss()

    def ssim_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return criterion(output, target[:, :1], target[:, 1, 0, 0])

    return ssim_loss


# --------------------------------------------------------------------------- masks


def mask_seed(file_name: str) -> tuple[int, ...]:
    """The per-file mask seed of fastMRI: the code points of the file's name, ``tuple(map(ord, name))``.

    The rule of ``fastmri/data/transforms.py`` (``UnetDataTransform``, ``VarNetDataTransform``
    with ``use_seed=True``), where the name is the HDF5 file's (``file_brain_AXT2_200_2000019.h5``).
    """
    return tuple(map(ord, file_name))


def cartesian_mask(
    kind: str,
    n_cols: int,
    acceleration: int,
    centre_fraction: float,
    seed: int | Sequence[int] | None,
) -> np.ndarray:
    """The column mask ``(n_cols,)`` (True = sampled) fastMRI draws for one seed.

    Equal to ``RandomMaskFunc``, ``EquiSpacedMaskFunc`` or ``EquispacedMaskFractionFunc`` of
    ``fastmri.data.subsample`` built with ``([centre_fraction], [acceleration])`` and called on a
    k-space of ``n_cols`` columns with ``seed=seed``: a ``RandomState(seed)`` first draws the pair
    index (``randint(1)``, as fastMRI's ``choose_acceleration`` does), then the columns or offset.

    Args:
        kind: ``random``, ``equispaced`` or ``equispaced_fraction``.
        n_cols: k-space columns.
        acceleration: nominal acceleration (2, 4, 8 ...).
        centre_fraction: share of fully sampled centre columns (fastMRI: 0.08 at 4x, 0.04 at 8x).
        seed: an int or a sequence of ints (:func:`mask_seed`); ``None`` draws fresh entropy.

    Raises:
        ValueError: for an unknown kind or a centre as large as the requested sampling.
    """
    if kind not in MASK_KINDS:
        raise ValueError(f"unknown mask kind {kind!r}; choose from {list(MASK_KINDS)}")
    n_low = round(n_cols * centre_fraction)
    if n_low * acceleration >= n_cols:
        raise ValueError(
            f"centre fraction {centre_fraction} at {acceleration}x leaves nothing to under-sample "
            f"({n_low} centre columns of {n_cols})"
        )
    rng = np.random.RandomState(seed)  # fastMRI's legacy generator, seeded for this call
    rng.randint(1)  # the (centre fraction, acceleration) pair, drawn first as fastMRI does
    mask = np.zeros(n_cols, dtype=bool)
    start = (n_cols - n_low + 1) // 2
    mask[start : start + n_low] = True
    if kind == "random":
        probability = (n_cols / acceleration - n_low) / (n_cols - n_low)
        mask |= rng.uniform(size=n_cols) < probability
    elif kind == "equispaced":
        offset = rng.randint(0, high=round(acceleration))
        mask[offset::acceleration] = True
    else:
        spacing = acceleration * (n_low - n_cols) / (n_low * acceleration - n_cols)
        offset = rng.randint(0, high=round(spacing))
        mask[np.around(np.arange(offset, n_cols - 1, spacing)).astype(np.uint)] = True
    return mask


def zero_filled(kspace: np.ndarray, mask: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """RSS of the inverse FFT of column-masked multi-coil k-space ``(Z, coils, ky, kx)``, centre-cropped.

    Args:
        kspace: complex k-space.
        mask: ``(kx,)`` sampled columns.
        shape: ``(H, W)`` of the RSS target to crop to.

    Returns:
        ``(Z, H, W)`` float32 magnitude.
    """
    coils = ifft2c(np.where(mask[None, None, None, :], kspace, 0))
    rss = np.sqrt((np.abs(coils) ** 2).sum(axis=1))
    h, w = shape
    top, left = (rss.shape[1] - h) // 2, (rss.shape[2] - w) // 2
    return rss[:, top : top + h, left : left + w].astype(np.float32)


# ------------------------------------------------------------------------- volumes


@dataclass
class ReconVolume:
    """One fastMRI file: k-space, RSS target, subject.

    Attributes:
        name: file stem.
        subject: subject id (for the split).
        kspace: ``(Z, coils, ky, kx)`` complex64.
        target: ``(Z, H, W)`` RSS reconstruction.
        file_name: the file's name, whose code points seed its masks (:func:`mask_seed`);
            empty means ``<name>.h5``.
    """

    name: str
    subject: str
    kspace: np.ndarray
    target: np.ndarray
    file_name: str = ""


def load_recon_volume(path: str | Path, subject: str) -> ReconVolume:
    """Read k-space and ``reconstruction_rss`` from a fastMRI HDF5 file.

    Raises:
        ValueError: with the file's name, for a missing dataset, a wrong shape or NaN/inf values.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as handle:
            if "kspace" not in handle or "reconstruction_rss" not in handle:
                raise ValueError(f"{path.name}: needs 'kspace' and 'reconstruction_rss'")
            kspace = np.asarray(handle["kspace"][()])
            target = np.asarray(handle["reconstruction_rss"][()], dtype=np.float32)
    except OSError as err:
        raise ValueError(f"{path.name}: cannot read HDF5 ({err})") from err
    if kspace.ndim != 4 or not np.iscomplexobj(kspace) or target.ndim != 3:
        shapes = f"kspace {kspace.shape} / target {target.shape}"
        raise ValueError(f"{path.name}: {shapes} are not (Z, C, ky, kx) complex / (Z, H, W)")
    if not np.isfinite(kspace).all() or not np.isfinite(target).all():
        raise ValueError(f"{path.name}: k-space or target holds NaN/inf")
    if target.shape[1] > kspace.shape[2] or target.shape[2] > kspace.shape[3]:
        raise ValueError(f"{path.name}: target {target.shape} larger than k-space {kspace.shape}")
    return ReconVolume(path.stem, subject, kspace, target, path.name)


def _square(images: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad ``(Z, H, W)`` to centred squares and resize (bilinear, antialiased, unclipped)."""
    z, h, w = images.shape
    side = max(h, w)
    padded = np.zeros((z, side, side), dtype=np.float32)
    padded[:, (side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = images
    tensor = torch.from_numpy(padded)[:, None]
    out = F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out[:, 0].numpy()


@dataclass
class _Prepared:
    inputs: np.ndarray  # (Z, 1, S, S) zero-filled, scaled
    targets: np.ndarray  # (Z, 1, S, S) target, same scale


def _prepare(volume: ReconVolume, kind: str, acceleration: int, centre: float, size: int) -> _Prepared:
    seed = mask_seed(volume.file_name or f"{volume.name}.h5")
    mask = cartesian_mask(kind, volume.kspace.shape[-1], acceleration, centre, seed)
    zf = zero_filled(volume.kspace, mask, volume.target.shape[1:])
    scale = float(zf.max()) or 1.0
    return _Prepared(_square(zf / scale, size)[:, None], _square(volume.target / scale, size)[:, None])


def _volume_metrics(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return {"psnr": psnr(gt, pred), "ssim": ssim(gt, pred), "nmse": nmse(gt, pred)}


def _training_targets(prepared: Sequence[_Prepared], loss: str) -> np.ndarray:
    """``(N, 1, S, S)`` targets; for ``ssim`` a second channel holds each volume's maximum."""
    targets = np.concatenate([p.targets for p in prepared])
    if loss != "ssim":
        return targets
    peaks = np.concatenate([np.full(len(p.targets), p.targets.max(), dtype=np.float32) for p in prepared])
    return np.concatenate([targets, np.broadcast_to(peaks[:, None, None, None], targets.shape)], axis=1)


def _warn_renamed_masks(masks: Sequence[str]) -> None:
    if "equispaced" in masks:
        logger.warning(
            "mask 'equispaced' is fastMRI's EquiSpacedMaskFunc (every acceleration-th column, more "
            "columns than n / acceleration); until issue 18 brainssl's 'equispaced' was fastMRI's "
            "EquispacedMaskFractionFunc, now named 'equispaced_fraction'. Old configs that meant it "
            "must say equispaced_fraction."
        )


def run_reconstruction(
    volumes: Sequence[ReconVolume],
    dataset: str,
    encoders: Mapping[str, str],
    table_split: Mapping[str, str],
    settings: ReconstructionSettings,
    seed: int,
    size: int,
) -> tuple[list[dict[str, Any]], pd.DataFrame, dict[str, Any]]:
    """Zero-filled baseline and every network variant at each mask kind and acceleration.

    Args:
        volumes: readable fastMRI volumes.
        dataset: dataset name.
        encoders: ``{name: weights path}``.
        table_split: split per subject (``test`` -> test, others train; re-split if a side is empty).
        settings: the task's settings (see :func:`~brainssl.tasks.segmentation.run_segmentation`),
            with ``masks``, ``accelerations`` and ``centre_fractions``.
        seed: workflow seed (split, training, bootstrap; the masks follow :func:`mask_seed`).
        size: encoder input side.

    Returns:
        Results rows, per-volume metrics and an overlay example.
    """
    from .dense_slices import dense_split

    _warn_renamed_masks(settings.masks)
    loss_fn = _training_loss(settings.loss)
    setting_names = [f"{k}_{a}x" for k in settings.masks for a in settings.accelerations]
    metrics = [f"{m}_{s}" for s in setting_names for m in RECON_METRICS]
    if len({v.subject for v in volumes}) < 2:
        reason = f"{len(volumes)} readable volume(s); a subject-level train/test split needs two subjects"
        return skipped_rows("reconstruction", dataset, reason, metrics), pd.DataFrame(), {}
    split = dense_split([v.subject for v in volumes], table_split, seed, settings.test_fraction)
    train_volumes = [v for v in volumes if split[v.subject] == "train"]
    test_volumes = [v for v in volumes if split[v.subject] == "test"]
    rows, per_volume, example = [], [], {}
    for kind in settings.masks:
        for acceleration in settings.accelerations:
            centre = settings.centre_fraction(acceleration)
            suffix = f"{kind}_{acceleration}x"
            train_prep = [_prepare(v, kind, acceleration, centre, size) for v in train_volumes]
            test_prep = [_prepare(v, kind, acceleration, centre, size) for v in test_volumes]
            pairs = zip(train_volumes, train_prep, strict=True)
            owners = [np.full(len(p.inputs), v.subject) for v, p in pairs]
            train = TrainingSet(
                np.concatenate(owners),
                np.concatenate([p.inputs for p in train_prep]),
                _training_targets(train_prep, settings.loss),
            )
            test_inputs = np.concatenate([p.inputs for p in test_prep])
            baseline = [_volume_metrics(p.targets[:, 0], p.inputs[:, 0]) for p in test_prep]
            zero = {"encoder": "zero_filled", "mode": "none"}
            rows += _rows(baseline, suffix, settings, dataset, zero, 0, seed)
            per_volume += [
                {"volume": v.name, "encoder": "zero_filled", "mode": "none", "setting": suffix, **m}
                for v, m in zip(test_volumes, baseline, strict=True)
            ]
            results = sweep(
                dense_variants(encoders, settings.modes),
                train,
                test_inputs,
                settings.fractions,
                range(settings.n_seeds),
                settings.train,
                1,
                loss_fn,
                max_train_slices=settings.max_train_slices,
                residual=True,
            )
            for result in results:
                scores = _score(result, test_prep)
                columns = {
                    "encoder": result.variant.encoder,
                    "mode": result.variant.mode,
                    "label_fraction": result.fraction,
                    "seed": result.seed,
                }
                rows += _rows(scores, suffix, settings, dataset, columns, result.n_train, result.seed)
                per_volume += [
                    {"volume": v.name, "setting": suffix, **columns, **m}
                    for v, m in zip(test_volumes, scores, strict=True)
                ]
            example = _example(results, test_prep, suffix)
    return rows, pd.DataFrame(per_volume), example


def _score(result: SweepResult, prepared: Sequence[_Prepared]) -> list[dict[str, float]]:
    scores, start = [], 0
    for p in prepared:
        stop = start + len(p.inputs)
        scores.append(_volume_metrics(p.targets[:, 0], result.outputs[start:stop, 0].numpy()))
        start = stop
    return scores


def _rows(
    scores: Sequence[Mapping[str, float]],
    suffix: str,
    settings: ReconstructionSettings,
    dataset: str,
    columns: Mapping[str, Any],
    n_train: int,
    seed: int,
) -> list[dict[str, Any]]:
    rows = []
    for metric in RECON_METRICS:
        values = np.array([s[metric] for s in scores], dtype=float)
        low, high = bootstrap_ci(mean_or_nan, values, n_boot=settings.n_boot, seed=seed)
        rows.append(
            result_row(
                task="reconstruction",
                dataset=dataset,
                metric=f"{metric}_{suffix}",
                value=mean_or_nan(values),
                ci_low=low,
                ci_high=high,
                n_train=n_train,
                n_test=len(scores),
                **columns,
            )
        )
    return rows


def _example(results: Sequence[SweepResult], prepared: Sequence[_Prepared], suffix: str) -> dict[str, Any]:
    """The middle slice of the first test volume: target, zero-filled and each variant's output."""
    index = len(prepared[0].inputs) // 2
    top, first_seed = max(r.fraction for r in results), min(r.seed for r in results)
    panels = {"target": prepared[0].targets[index, 0], "zero-filled": prepared[0].inputs[index, 0]}
    for r in results:
        if r.fraction == top and r.seed == first_seed:
            panels[f"{r.variant.encoder} ({r.variant.mode})"] = r.outputs[index, 0].numpy()
    return {"setting": suffix, "panels": panels}


def plot_reconstructions(example: Mapping[str, Any], path: str | Path) -> None:
    """Target, zero-filled input and each variant's reconstruction of one slice, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .figures import save_figure

    panels = list(example.get("panels", {}).items())
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(2.2 * max(len(panels), 1), 2.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    if not panels:
        axes[0, 0].text(0.5, 0.5, "no test volume", ha="center", va="center")
    top = max((float(np.max(p)) for _, p in panels), default=1.0)
    for ax, (name, image) in zip(axes.ravel(), panels, strict=False):
        ax.imshow(image, cmap="gray", vmin=0, vmax=top)
        ax.set_title(f"{name}\n{example['setting']}" if name == "target" else name, fontsize=6)
    save_figure(fig, path)


def reconstruction_task(
    table_path: str | Path,
    manifest_path: str | Path,
    encoders: Mapping[str, str],
    settings: ReconstructionSettings,
    seed: int,
    outputs: Mapping[str, str | Path],
) -> pd.DataFrame:
    """Accelerated reconstruction on the fastMRI files of the preprocessed subjects.

    Args:
        table_path: ``results/preprocess/fastmri_brain/table.tsv`` (subjects and their split).
        manifest_path: the fastMRI manifest (paths of the raw HDF5 files).
        encoders: ``{name: weights path}``.
        settings: the ``tasks.reconstruction`` settings (merged with the shared keys).
        seed: workflow seed.
        outputs: paths ``results``, ``volumes`` (per-volume metrics and skipped files), ``overlays``.

    Returns:
        The results table as written.
    """
    from brainssl.io import write_table

    from .dense_sweep import encoder_side
    from .results import write_results

    table = pd.read_csv(table_path, sep="\t", keep_default_na=False)
    split = dict(zip(table["subject"].astype(str), table["split"].astype(str), strict=True))
    manifest = pd.read_csv(manifest_path, sep="\t", keep_default_na=False)
    files = manifest[(manifest.dataset == "fastmri_brain") & manifest.subject.isin(split)]
    files = files.sort_values("path").drop_duplicates("path")
    if settings.max_subjects:
        keep = sorted(files.subject.unique())[: settings.max_subjects]
        files = files[files.subject.isin(keep)]
    volumes, skipped = [], []
    for row in files.itertuples():
        try:
            volumes.append(load_recon_volume(row.path, row.subject))
        except ValueError as err:
            logger.warning("skipped: %s", err)
            skipped.append({"volume": Path(row.path).stem, "encoder": "", "mode": "", "reason": str(err)})
    rows, per_volume, example = run_reconstruction(
        volumes, "fastmri_brain", encoders, split, settings, seed, encoder_side(encoders)
    )
    frame = write_results(rows, outputs["results"])
    write_table(outputs["volumes"], pd.concat([per_volume, pd.DataFrame(skipped)], ignore_index=True))
    plot_reconstructions(example, outputs["overlays"])
    return frame
