"""Accelerated MRI reconstruction (fastMRI brain layout): zero-filled baseline and U-Nets, per mask.

Masks, metrics and the SSIM loss are those of fastMRI (Zbontar et al. 2018, arXiv:1811.08839;
facebookresearch/fastMRI v0.3.0, commit 84ab6e57748c2631b0e780255dcbc1d6e372269d, the
``fastmri==0.3.0`` package the tests compare against): the Cartesian masks, each file's mask seed
and the zero-filled image are in :mod:`brainssl.tasks.recon_masks`, the metrics and ``SSIMLoss``
in :mod:`brainssl.tasks.recon_metrics`; this module reads the files and runs the sweep.

The zero-filled image is the root-sum-of-squares over coils of the centred orthonormal
inverse FFT of the masked k-space, centre-cropped to the RSS target. Networks see it (and the
target) scaled by the zero-filled volume's maximum and resized to the encoder's side; a
:class:`~brainssl.tasks.dense_networks.DenseModel` (the encoder as its contracting path, the light
decoder as its expanding one) learns a residual correction, its encoder starting from pretrained
weights (``finetune``/``frozen``) or at random (``scratch``). The training loss is L1
(``loss: l1``, the loss of fastMRI's U-Net baseline) or fastMRI's ``SSIMLoss`` (``loss: ssim``,
as its VarNet trains: ``1 -`` mean SSIM of 7x7 uniform windows, ``data_range`` the target
volume's maximum).

Metrics are computed per volume ``(slices, H, W)``. PSNR, SSIM and NMSE are reported: they are
invariant to scaling target and prediction together, so the scaled, resized grid gives the
metrics of that grid (MSE is not, so it is not reported). A file whose k-space or target holds
NaN/inf is skipped and listed with the reason.

A job holds one volume's k-space at a time: the files are checked one by one and kept as
:class:`ReconFile` names, and each is read again only while its slices are prepared (once per mask
kind and acceleration). The prepared slices live in a :class:`~.dense_memory.SliceSpace`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .dense_memory import Rows, SliceSpace
from .dense_metrics import mean_or_nan
from .dense_settings import ReconstructionSettings
from .dense_sweep import SweepResult, TrainingSet, sweep
from .dense_training import regroup
from .recon_masks import cartesian_mask, mask_seed, zero_filled
from .recon_metrics import SSIMLoss, nmse, psnr, ssim
from .results import bootstrap_ci, result_row, skipped_rows

__all__ = [
    "RECON_LOSSES",
    "RECON_METRICS",
    "ReconFile",
    "ReconVolume",
    "load_recon_volume",
    "run_reconstruction",
]

logger = logging.getLogger(__name__)

RECON_METRICS = ("psnr", "ssim", "nmse")
RECON_LOSSES = ("l1", "ssim")


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


# ------------------------------------------------------------------------- volumes


@dataclass
class ReconVolume:
    """One fastMRI file: k-space, RSS target, subject.

    Attributes:
        name: file stem.
        subject: subject id (for the split).
        kspace: ``(Z, coils, ky, kx)`` complex64.
        target: ``(Z, H, W)`` RSS reconstruction.
        file_name: the file's name, whose code points seed its masks (:func:`~.recon_masks.mask_seed`);
            empty means ``<name>.h5``.
    """

    name: str
    subject: str
    kspace: np.ndarray
    target: np.ndarray
    file_name: str = ""

    def load(self) -> ReconVolume:
        """The volume itself (already in memory, as :meth:`ReconFile.load` gives one)."""
        return self


@dataclass(frozen=True)
class ReconFile:
    """A fastMRI file checked readable, whose k-space is read only when its slices are prepared.

    Paper-scale k-space (thousands of multi-coil volumes, a 640-row oversampled readout) is
    terabytes; holding names instead keeps the job's memory at one volume's.
    """

    path: Path
    subject: str

    @property
    def name(self) -> str:
        """The file stem (as :attr:`ReconVolume.name`)."""
        return self.path.stem

    def load(self) -> ReconVolume:
        """Read the file (:func:`load_recon_volume`); the caller drops it after preparing its slices."""
        return load_recon_volume(self.path, self.subject)


def load_recon_volume(path: str | Path, subject: str) -> ReconVolume:
    """Read k-space and its RSS target from a fastMRI HDF5 file.

    The k-space is stored as in the real files, its readout (rows) oversampled twice: 640 rows
    for a 320 x 320 ``reconstruction_rss``; :func:`~.recon_masks.zero_filled` crops to the target
    as fastMRI does. The target is ``reconstruction_rss``; a fully sampled file without it (no ``mask``)
    gets fastMRI's own target, the RSS of its k-space centre-cropped to the header's reconSpace
    matrix (:func:`brainssl.datasets.layouts.fastmri.reconstruct_rss`). An under-sampled
    test-split file (a ``mask``, no target) cannot be scored and is refused.

    Raises:
        ValueError: with the file's name, for a missing dataset, a wrong shape or NaN/inf values.
    """
    from brainssl.datasets.layouts.errors import SubjectError
    from brainssl.datasets.layouts.fastmri import reconstruct_rss
    from brainssl.datasets.layouts.ismrmrd import recon_matrix, recon_shape

    path = Path(path)
    try:
        with h5py.File(path, "r") as handle:
            has_target = "reconstruction_rss" in handle
            derivable = "ismrmrd_header" in handle and "mask" not in handle
            if "kspace" not in handle or not (has_target or derivable):
                raise ValueError(
                    f"{path.name}: needs 'kspace' and 'reconstruction_rss' (or fully sampled k-space with an "
                    "ismrmrd_header)"
                )
            kspace = np.asarray(handle["kspace"][()])
            if has_target:
                target = np.asarray(handle["reconstruction_rss"][()], dtype=np.float32)
            elif kspace.ndim == 4:
                matrix = recon_matrix(path, handle["ismrmrd_header"][()])
                target = reconstruct_rss(kspace, recon_shape(kspace.shape, matrix))
            else:
                target = np.zeros((0,), dtype=np.float32)  # refused below with the shapes
    except SubjectError as err:
        raise ValueError(f"{path.name}: {err.reason}") from err
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


class _Targets:
    """Training targets ``(N, 1, S, S)``; for ``ssim`` a second channel holds each volume's maximum.

    Only the images and one maximum per slice are stored; the second channel is made per batch.
    """

    def __init__(self, images: np.ndarray, peaks: np.ndarray | None) -> None:
        self.images, self.peaks = images, peaks
        self.shape: tuple[int, ...] = (len(images), 1 if peaks is None else 2, *images.shape[2:])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: slice | np.ndarray) -> np.ndarray:
        images = np.array(self.images[index])  # a copy in memory, also of a memory map's rows
        if self.peaks is None:
            return images
        peaks = np.broadcast_to(self.peaks[index][:, None, None, None], images.shape)
        return np.concatenate([images, peaks], axis=1)


def _peaks(prepared: _Prepared) -> np.ndarray:
    """Each slice's volume maximum, the SSIM loss's ``data_range``."""
    return np.full(len(prepared.targets), prepared.targets.max(), dtype=np.float32)


def _training_targets(prepared: Sequence[_Prepared], loss: str) -> np.ndarray:
    """All :class:`_Targets` of ``prepared`` volumes at once (small sets; the task reads them per batch)."""
    peaks = np.concatenate([_peaks(p) for p in prepared]) if loss == "ssim" else None
    return _Targets(np.concatenate([p.targets for p in prepared]), peaks)[:]


def _warn_renamed_masks(masks: Sequence[str]) -> None:
    if "equispaced" in masks:
        logger.warning(
            "mask 'equispaced' is fastMRI's EquiSpacedMaskFunc (every acceleration-th column, more "
            "columns than n / acceleration); until issue 18 brainssl's 'equispaced' was fastMRI's "
            "EquispacedMaskFractionFunc, now named 'equispaced_fraction'. Old configs that meant it "
            "must say equispaced_fraction."
        )


def run_reconstruction(
    volumes: Sequence[ReconVolume | ReconFile],
    dataset: str,
    encoders: Mapping[str, str],
    table_split: Mapping[str, str],
    settings: ReconstructionSettings,
    seed: int,
    size: int,
    device: str = "cpu",
) -> tuple[list[dict[str, Any]], pd.DataFrame, dict[str, Any]]:
    """Zero-filled baseline and every network variant at each mask kind and acceleration.

    Args:
        volumes: readable fastMRI volumes, in memory or as files read one at a time.
        dataset: dataset name.
        encoders: ``{name: weights path}``.
        table_split: split per subject (``test`` -> test, others train; re-split if a side is empty).
        settings: the task's settings (see :func:`~brainssl.tasks.segmentation.run_segmentation`),
            with ``masks``, ``accelerations`` and ``centre_fractions``.
        seed: workflow seed (split, training, bootstrap; the masks follow
            :func:`~.recon_masks.mask_seed`).
        size: encoder input side.
        device: ``tasks.device`` (:func:`~brainssl.tasks.dense_training.resolve_device`).

    Returns:
        Results rows, per-volume metrics and an overlay example.

    Each setting's slices live in a :class:`~.dense_memory.SliceSpace` of ``slice_memory_gb``, the
    volumes read and prepared one at a time (:meth:`ReconFile.load`); each network is scored
    volume by volume.
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
            with SliceSpace(settings.slice_memory_gb) as space:  # this setting's slices
                owners, peaks, inputs, targets = [], [], space.collect(), space.collect()
                for volume in train_volumes:  # read, prepared and dropped one at a time
                    prepared = _prepare(volume.load(), kind, acceleration, centre, size)
                    owners.append(np.full(len(prepared.inputs), volume.subject))
                    peaks.append(_peaks(prepared))
                    inputs.add(prepared.inputs)
                    targets.add(prepared.targets)
                peak = np.concatenate(peaks) if settings.loss == "ssim" else None
                train = TrainingSet(np.concatenate(owners), inputs.result(), _Targets(targets.result(), peak))
                test_prep = []
                for volume in test_volumes:
                    prepared = _prepare(volume.load(), kind, acceleration, centre, size)
                    test_prep.append(_Prepared(space.keep(prepared.inputs), space.keep(prepared.targets)))
                test_inputs = Rows([p.inputs for p in test_prep])
                baseline = [_volume_metrics(p.targets[:, 0], p.inputs[:, 0]) for p in test_prep]
                zero = {"encoder": "zero_filled", "mode": "none"}
                rows += _rows(baseline, suffix, settings, dataset, zero, 0, seed)
                per_volume += [
                    {"volume": v.name, "encoder": "zero_filled", "mode": "none", "setting": suffix, **m}
                    for v, m in zip(test_volumes, baseline, strict=True)
                ]
                results = sweep(
                    encoders,
                    settings,
                    train,
                    test_inputs,
                    1,
                    loss_fn,
                    lambda batches, test_prep=test_prep: _score(batches, test_prep),
                    residual=True,
                    device=device,
                )
                for result in results:
                    scores = result.evaluation[0]
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


def _score(
    batches: Iterator[torch.Tensor], prepared: Sequence[_Prepared]
) -> tuple[list[dict[str, float]], np.ndarray]:
    """Metrics of each test volume, scored as its outputs come, and the first volume's middle slice."""
    scores, middle = [], np.zeros(0, np.float32)
    for index, (p, outputs) in enumerate(
        zip(prepared, regroup(batches, [len(p.inputs) for p in prepared]), strict=True)
    ):
        scores.append(_volume_metrics(p.targets[:, 0], outputs[:, 0].numpy()))
        if index == 0:
            middle = outputs[len(p.inputs) // 2, 0].clone().numpy()  # not a view of the batch
    return scores, middle


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
    panels = {name: np.array(image) for name, image in panels.items()}  # copies, not memory maps
    for r in results:
        if r.fraction == top and r.seed == first_seed:
            panels[f"{r.variant.encoder} ({r.variant.mode})"] = r.evaluation[1]
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
    device: str = "cpu",
) -> pd.DataFrame:
    """Accelerated reconstruction on the fastMRI files of the preprocessed subjects.

    Args:
        table_path: ``results/preprocess/fastmri_brain/table.tsv`` (subjects and their split).
        manifest_path: the fastMRI manifest (paths of the raw HDF5 files).
        encoders: ``{name: weights path}``.
        settings: the ``tasks.reconstruction`` settings (merged with the shared keys).
        seed: workflow seed.
        outputs: paths ``results``, ``volumes`` (per-volume metrics and skipped files), ``overlays``.
        device: where the networks train (``tasks.device``: auto, cpu or cuda).

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
    for row in files.itertuples():  # checked one at a time; read again when prepared
        try:
            load_recon_volume(row.path, row.subject)
            volumes.append(ReconFile(Path(row.path), row.subject))
        except ValueError as err:
            logger.warning("skipped: %s", err)
            skipped.append({"volume": Path(row.path).stem, "encoder": "", "mode": "", "reason": str(err)})
    rows, per_volume, example = run_reconstruction(
        volumes, "fastmri_brain", encoders, split, settings, seed, encoder_side(encoders), device
    )
    frame = write_results(rows, outputs["results"])
    write_table(outputs["volumes"], pd.concat([per_volume, pd.DataFrame(skipped)], ignore_index=True))
    plot_reconstructions(example, outputs["overlays"])
    return frame
