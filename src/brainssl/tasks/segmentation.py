"""Tumour (BraTS regions) and hippocampus segmentation on encoder feature maps, scored per subject in 3D.

Slices of whole preprocessed volumes go through :class:`~brainssl.tasks.dense_networks.DenseModel`;
the predicted slices of each test subject are stacked back into a volume on the slice grid
and compared with the stacked truth (:mod:`brainssl.tasks.dense_metrics`: Dice and HD95):

- BraTS regions (Menze et al. 2015; BraTS 2021 evaluation): whole tumour ``WT`` (labels
  1, 2, 4), tumour core ``TC`` (1, 4) and enhancing tumour ``ET`` (4), predicted as three
  overlapping sigmoid channels;
- hippocampus: one softmax class per label (Decathlon Task04: anterior, posterior; generator
  labels of OASIS-3/IXI: left, right).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from brainssl.io import write_table

from .dense_memory import Rows, SliceSpace
from .dense_metrics import BRATS_REGIONS, brats_regions, mean_or_nan, subject_metrics
from .dense_settings import DenseTaskSettings, HippocampusSegmentationSettings, TumorSegmentationSettings
from .dense_slices import VolumeSlices, dense_split, load_brats_cases, load_hippocampus_cases
from .dense_sweep import SweepResult, TrainingSet, encoder_side, sweep
from .dense_training import regroup
from .figures import save_figure
from .results import bootstrap_ci, result_row, skipped_rows, write_results

__all__ = [
    "SegmentationSpec",
    "hippocampus_segmentation_task",
    "plot_overlays",
    "run_segmentation",
    "segmentation_loss",
    "tumor_segmentation_task",
    "write_outputs",
]

logger = logging.getLogger(__name__)

PREDICTION_COLOURS = ("red", "orange", "yellow")


@dataclass(frozen=True)
class SegmentationSpec:
    """What differs between segmentation tasks.

    Attributes:
        task: results-table task name.
        region_names: names of the predicted regions / classes.
        multilabel: overlapping regions (sigmoid per channel, BraTS) or exclusive classes (softmax).
        label_values: for exclusive classes, the label value of each class in ``region_names``.
    """

    task: str
    region_names: tuple[str, ...]
    multilabel: bool
    label_values: tuple[int, ...] = ()

    def regions(self, labels: np.ndarray) -> np.ndarray:
        """Label map ``(Z, S, S)`` -> boolean regions ``(K, Z, S, S)``."""
        if self.multilabel:
            return brats_regions(labels)
        return np.stack([labels == value for value in self.label_values])

    def targets(self, labels: np.ndarray) -> np.ndarray:
        """Training targets of label slices: float regions (multilabel) or class indices."""
        if self.multilabel:
            return np.moveaxis(brats_regions(labels), 0, 1).astype(np.float32)
        classes = np.zeros(labels.shape, dtype=np.int64)
        for index, value in enumerate(self.label_values, start=1):
            classes[labels == value] = index
        return classes

    def out_channels(self) -> int:
        """Decoder outputs: one per region, or background + one per class."""
        return len(self.region_names) + (0 if self.multilabel else 1)

    def predicted_regions(self, outputs: torch.Tensor) -> np.ndarray:
        """Raw outputs ``(Z, K', S, S)`` -> boolean regions ``(K, Z, S, S)``."""
        if self.multilabel:
            return np.moveaxis((outputs > 0).numpy(), 1, 0)
        classes = outputs.argmax(dim=1).numpy()
        return np.stack([classes == index for index in range(1, len(self.region_names) + 1)])


def segmentation_loss(multilabel: bool):
    """Cross-entropy (BCE for overlapping regions) plus soft Dice over the foreground channels."""

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if multilabel:
            probs = torch.sigmoid(logits)
            ce = F.binary_cross_entropy_with_logits(logits, target)
            onehot = target
        else:
            probs = torch.softmax(logits, dim=1)[:, 1:]
            ce = F.cross_entropy(logits, target)
            onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
        inter = (probs * onehot).sum(dim=(0, 2, 3))
        denom = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
        return ce + (1.0 - ((2 * inter + 1.0) / (denom + 1.0))).mean()

    return loss


def run_segmentation(
    cases: Sequence[VolumeSlices],
    spec: SegmentationSpec,
    dataset: str,
    encoders: Mapping[str, str],
    table_split: Mapping[str, str],
    settings: DenseTaskSettings,
    seed: int,
    device: str = "cpu",
) -> tuple[list[dict[str, Any]], pd.DataFrame, dict[str, Any]]:
    """Train and score every variant of a segmentation task on one dataset.

    Training and test sets are rows of the cases' own arrays (in memory, or memory maps of the
    loader's :class:`~.dense_memory.SliceSpace`), so nothing is copied; each network's test
    outputs are scored subject by subject as they come (:func:`_score`).

    Args:
        cases: labelled volumes (one per subject).
        spec: the task's regions.
        dataset: dataset name for the results.
        encoders: ``{name: weights path}``.
        table_split: preprocessing split per subject.
        settings: the task's settings (label fractions, seeds, bootstrap, modes, test fraction,
            training slices and the training subset :attr:`~DenseTaskSettings.train`).
        seed: workflow seed.
        device: ``tasks.device`` (:func:`~brainssl.tasks.dense_training.resolve_device`).

    Returns:
        Results rows, the per-subject metric table and an overlay example (for the figure).
    """
    metrics = [f"{m}_{r}" for r in spec.region_names for m in ("dice", "hd95")]
    labelled = [c for c in cases if c.labels is not None]
    if len(labelled) < 2:
        reason = f"{len(labelled)} labelled subject(s); a subject-level train/test split needs two"
        return skipped_rows(spec.task, dataset, reason, metrics), pd.DataFrame(), {}
    split = dense_split([c.subject for c in labelled], table_split, seed, settings.test_fraction)
    train_cases = [c for c in labelled if split[c.subject] == "train"]
    test_cases = [c for c in labelled if split[c.subject] == "test"]
    train = _training_set(train_cases, spec)
    test_images = Rows([c.images for c in test_cases])
    shown = _example_slice(test_cases, spec)
    results = sweep(
        encoders,
        settings,
        train,
        test_images,
        spec.out_channels(),
        segmentation_loss(spec.multilabel),
        lambda batches: _score(batches, test_cases, spec, shown),
        device=device,
    )
    rows, per_subject = [], []
    for result in results:
        scores = result.evaluation[0]
        frame = pd.DataFrame(scores)
        per_subject.append(frame.assign(**_run_columns(result)))
        for metric in metrics:
            values = frame[metric].to_numpy(dtype=float)
            low, high = bootstrap_ci(mean_or_nan, values, n_boot=settings.n_boot, seed=result.seed)
            rows.append(
                result_row(
                    task=spec.task,
                    dataset=dataset,
                    metric=metric,
                    value=mean_or_nan(values),
                    ci_low=low,
                    ci_high=high,
                    n_train=result.n_train,
                    n_test=len(test_cases),
                    **_run_columns(result),
                )
            )
    example = _overlay_example(results, test_cases, spec, shown)
    return rows, pd.concat(per_subject, ignore_index=True), example


def _run_columns(result: SweepResult) -> dict[str, Any]:
    return {
        "encoder": result.variant.encoder,
        "mode": result.variant.mode,
        "label_fraction": result.fraction,
        "seed": result.seed,
    }


def _training_set(cases: Sequence[VolumeSlices], spec: SegmentationSpec) -> TrainingSet:
    """Slices holding brain (non-zero input) of the training subjects, with their targets.

    Rows of the stored slices, not a copy; the targets are made from the stored labels per batch.
    """
    keep = [case.images.reshape(len(case.images), -1).max(axis=1) > 0 for case in cases]
    subjects = np.concatenate([np.full(int(k.sum()), c.subject) for c, k in zip(cases, keep, strict=True)])
    labels = Rows([case.labels for case in cases], keep, transform=spec.targets)  # type: ignore[misc]
    return TrainingSet(subjects, Rows([case.images for case in cases], keep), labels)


def _score(
    batches: Iterator[torch.Tensor],
    cases: Sequence[VolumeSlices],
    spec: SegmentationSpec,
    shown: tuple[int, int],
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Stack each test subject's predicted slices back into a volume and score it in 3D.

    Returns:
        One record per subject, and the predicted regions ``(K, S, S)`` of the ``shown``
        ``(case, slice)`` (the overlay figure's).
    """
    scores, shown_regions = [], np.zeros(0, bool)
    for index, (case, outputs) in enumerate(
        zip(cases, regroup(batches, [len(c.images) for c in cases]), strict=True)
    ):
        pred = spec.predicted_regions(outputs)
        truth = spec.regions(case.labels)  # type: ignore[arg-type]
        record = subject_metrics(pred, truth, spec.region_names, case.spacing)
        empty = [name for name, region in zip(spec.region_names, truth, strict=True) if not region.any()]
        record.update(subject=case.subject, empty_truth=",".join(empty))
        scores.append(record)
        if index == shown[0]:
            shown_regions = spec.predicted_regions(outputs[shown[1] : shown[1] + 1])[:, 0]
    return scores, shown_regions


def _example_slice(cases: Sequence[VolumeSlices], spec: SegmentationSpec) -> tuple[int, int]:
    """``(case, slice)`` of the test slice with the most foreground (the overlay figure's)."""
    sizes = [spec.regions(c.labels)[0].reshape(len(c.labels), -1).sum(axis=1) for c in cases]  # type: ignore[arg-type]
    case_index = int(np.argmax([s.max() for s in sizes]))
    return case_index, int(np.argmax(sizes[case_index]))


def _overlay_example(
    results: Sequence[SweepResult],
    cases: Sequence[VolumeSlices],
    spec: SegmentationSpec,
    shown: tuple[int, int],
) -> dict[str, Any]:
    """The ``shown`` test slice, with each variant's prediction at the largest fraction."""
    case_index, slice_index = shown
    case = cases[case_index]
    top = max(r.fraction for r in results)
    first_seed = min(r.seed for r in results)
    predictions = {
        f"{r.variant.encoder} ({r.variant.mode})": r.evaluation[1]
        for r in results
        if r.fraction == top and r.seed == first_seed
    }
    return {
        "image": np.array(case.images[slice_index, 0]),
        "truth": spec.regions(case.labels[slice_index : slice_index + 1])[:, 0],  # type: ignore[index]
        "predictions": predictions,
        "names": spec.region_names,
        "title": f"{case.subject} slice {slice_index}",
    }


def write_outputs(
    rows: Sequence[dict[str, Any]],
    per_subject: pd.DataFrame,
    examples: Sequence[dict[str, Any]],
    results: str | Path,
    subjects: str | Path,
    overlays: str | Path,
) -> pd.DataFrame:
    """Write the results table, the per-subject metrics and the overlay figure of a segmentation task."""
    frame = write_results(rows, results)
    write_table(subjects, per_subject)
    plot_overlays(examples, overlays)
    return frame


def plot_overlays(examples: Sequence[dict[str, Any]], path: str | Path) -> Any:
    """One row per example: the truth regions, then each variant's predicted regions, outlined.

    Each region has one colour: true regions in the first panel, predicted ones in the others,
    where the true first region (whole tumour, or the first class) is outlined dashed green for
    comparison. A legend under the panels names the colours; each row is titled on its left.

    Returns:
        The (closed) matplotlib figure, for inspection.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    examples = [e for e in examples if e]
    n_cols = max([1 + len(e["predictions"]) for e in examples] or [1])
    n_rows = max(len(examples), 1)
    height = 2.4 * n_rows + 0.35  # the last 0.35 inch holds the legend
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(max(2.2 * n_cols, 4.4), height), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    if not examples:
        axes[0, 0].text(0.5, 0.5, "no labelled test subject", ha="center", va="center")
    names: list[str] = []
    for row, example in enumerate(examples):
        names = list(example.get("names") or names)
        panels = [("truth", example["truth"]), *example["predictions"].items()]
        for col, (name, masks) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(example["image"], cmap="gray", vmin=0, vmax=1)
            for k, mask in enumerate(masks):
                if mask.any():
                    colour = PREDICTION_COLOURS[k % len(PREDICTION_COLOURS)]
                    ax.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=0.8)
            if col and example["truth"][0].any():
                ax.contour(
                    example["truth"][0].astype(float),
                    levels=[0.5],
                    colors="lime",
                    linewidths=0.8,
                    linestyles="--",
                )
            ax.set_title(name, fontsize=7)
        axes[row, 0].text(
            -0.06,
            0.5,
            example["title"],
            rotation=90,
            ha="right",
            va="center",
            fontsize=7,
            transform=axes[row, 0].transAxes,
        )
    first = names[0] if names else "foreground"
    handles = [
        Line2D([], [], color=PREDICTION_COLOURS[k % len(PREDICTION_COLOURS)], lw=1.5, label=name)
        for k, name in enumerate(names)
    ]
    handles.append(Line2D([], [], color="lime", lw=1.5, ls="--", label=f"true {first} (on predictions)"))
    if examples:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=7, frameon=False)
    save_figure(fig, path, rect=(0.02, 0.35 / height, 1, 1))
    return fig


# ---------------------------------------------------------------------- entry points


def _table_split(table: pd.DataFrame) -> dict[str, str]:
    return dict(zip(table["subject"].astype(str), table["split"].astype(str), strict=True))


def tumor_segmentation_task(
    table_path: str | Path,
    encoders: Mapping[str, str],
    settings: TumorSegmentationSettings,
    seed: int,
    outputs: Mapping[str, str | Path],
    *,
    percentiles: tuple[float, float],
    device: str = "cpu",
) -> pd.DataFrame:
    """BraTS whole tumour, tumour core and enhancing tumour segmentation (results, subjects, overlays).

    Args:
        table_path: ``results/preprocess/brats21/table.tsv``.
        encoders: ``{name: weights path}``.
        settings: the ``tasks.tumor_segmentation`` settings (merged with the shared keys).
        seed: workflow seed.
        outputs: paths ``results``, ``subjects``, ``overlays``.
        percentiles: the slice store's intensity percentiles of ``brats21``
            (:func:`~brainssl.tasks.dense_slices.slice_recipes`).
        device: where the networks train (``tasks.device``: auto, cpu or cuda).

    Returns:
        The results table as written.
    """
    spec = SegmentationSpec("tumor_segmentation", tuple(BRATS_REGIONS), multilabel=True)
    table = pd.read_csv(table_path, sep="\t", keep_default_na=False)
    side = encoder_side(encoders)
    with SliceSpace(settings.slice_memory_gb) as space:
        cases, problems = load_brats_cases(
            table, settings.contrasts, side, settings.max_subjects, percentiles=percentiles, keep=space.keep
        )
        for problem in problems:
            logger.warning("left out: %s", problem)
        split = _table_split(table)
        rows, per_subject, example = run_segmentation(
            cases, spec, "brats21", encoders, split, settings, seed, device
        )
    return write_outputs(rows, per_subject, [example], **outputs)


def hippocampus_segmentation_task(
    tables: Mapping[str, str | Path],
    manifests: Mapping[str, str | Path],
    encoders: Mapping[str, str],
    settings: HippocampusSegmentationSettings,
    seed: int,
    outputs: Mapping[str, str | Path],
    *,
    percentiles: Mapping[str, tuple[float, float]],
    device: str = "cpu",
) -> pd.DataFrame:
    """Hippocampus segmentation per dataset (Decathlon labels, or generator labels of OASIS-3/IXI).

    Args:
        tables: ``{dataset: preprocessed table.tsv}``.
        manifests: ``{dataset: its manifest.tsv}`` (generator truth paths), needed for datasets
            other than ``hippocampus``; each dataset's own, so another dataset's new subject
            does not re-run this task.
        encoders: ``{name: weights path}``.
        settings: the ``tasks.hippocampus_segmentation`` settings (merged with the shared keys).
        seed: workflow seed.
        outputs: paths ``results``, ``subjects``, ``overlays``.
        percentiles: ``{dataset: the slice store's intensity percentiles}``
            (:func:`~brainssl.tasks.dense_slices.slice_recipes`).
        device: where the networks train (``tasks.device``: auto, cpu or cuda).

    Returns:
        The results table as written.
    """
    side = encoder_side(encoders)
    rows, frames, examples = [], [], []
    for dataset, path in sorted(tables.items()):
        table = pd.read_csv(path, sep="\t", keep_default_na=False)
        if dataset == "hippocampus":
            spec = SegmentationSpec("hippocampus_segmentation", ("anterior", "posterior"), False, (1, 2))
            truth = None
        else:
            spec = SegmentationSpec("hippocampus_segmentation", ("left", "right"), False, (1, 2))
            truth = _generator_truth(manifests.get(dataset), dataset)
        with SliceSpace(settings.slice_memory_gb) as space:  # one dataset's slices at a time
            cases, problems = load_hippocampus_cases(
                table, truth, side, settings.max_subjects, percentiles=percentiles[dataset], keep=space.keep
            )
            logger.info("%s: %d subjects, %d without labels", dataset, len(cases), len(problems))
            split = _table_split(table)
            found, frame, example = run_segmentation(
                cases, spec, dataset, encoders, split, settings, seed, device
            )
        rows += found
        frames.append(frame.assign(dataset=dataset))
        examples.append(example)
    per_subject = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return write_outputs(rows, per_subject, examples, **outputs)


def _generator_truth(manifest_path: str | Path | None, dataset: str) -> dict[tuple[str, str], str]:
    """``{(subject, session): truth_hippocampus path}`` of a dataset's T1w manifest rows."""
    if manifest_path is None:
        raise ValueError(f"generator labels of {dataset} need the manifest")
    manifest = pd.read_csv(manifest_path, sep="\t", keep_default_na=False)
    rows = manifest[(manifest.dataset == dataset) & (manifest.contrast == "T1w")]
    return {(r.subject, r.session): r.truth_hippocampus for r in rows.itertuples() if r.truth_hippocampus}
