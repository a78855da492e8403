"""Supervised-from-scratch baseline of the classification tasks: same architecture, trained end to end.

Frozen-feature heads show what an encoder's features are worth; this baseline shows what
the same labels are worth *without* pretraining. For each architecture among the
random-initialised exports (``random-<arch>``) a fresh copy of that encoder (re-initialised
from the workflow seed, the label-fraction seed and the fold) plus a linear head is trained
with cross-entropy on the labelled slices of a fit's training subjects, then predicts every
slice of its test subjects. Slice probabilities are pooled exactly as the frozen features
are: averaged per subject, session and contrast inside the embedding's position window
(:func:`~brainssl.embed.pool_units`), then over the unit's sessions and contrasts. The fits
are the frozen heads' own (:func:`~brainssl.tasks.units.evaluation_plan`), so the folds are
subject-level and identical, and the rows (encoder ``scratch-<arch>``, mode ``scratch``) are
scored and compared by :func:`~brainssl.tasks.frozen.run_task` like any encoder's.

Training a network per fold is the expensive part of the tasks, so it runs only at the
configured label fractions and seeds (by default the full training set) with a cap on the
training slices per fit.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from brainssl.embed import UNIT_COLUMNS, pool_units
from brainssl.settings import from_mapping, setting
from brainssl.slices import SliceDataset
from brainssl.slices.store import read_index

from .dense_sweep import Variant, dense_variants
from .dense_training import autocast, resolve_device, run_epochs, seeded_generator, to_device
from .frozen import Prediction
from .units import EvaluationSettings, Fit, TaskSpec, TaskUnits

__all__ = ["ScratchBaseline", "ScratchClassifier", "ScratchSettings", "train_classifier"]

logger = logging.getLogger(__name__)

#: Task kinds the scratch baseline runs on (a slice-level network needs a class per slice).
SCRATCH_KINDS = ("multiclass", "binary")


@dataclass(frozen=True)
class ScratchSettings:
    """The ``tasks.scratch`` config subsection.

    Attributes:
        enabled: train the baseline at all.
        label_fractions: fractions (of ``tasks.label_fractions``) at which it is trained.
        seeds: label-fraction draws it is trained for (the first ``seeds`` of ``tasks.seeds``);
            ``None`` for all of them.
        epochs: passes over the training slices of a fit.
        batch_size: slices per step.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        max_train_slices: at most this many training slices per fit (a seeded random subset).
    """

    enabled: bool = setting(True, "Train the scratch baseline in the classification tasks.")
    label_fractions: tuple[float, ...] = setting(
        (1.0,),
        "Label fractions (each one of tasks.label_fractions) at which networks are trained; "
        "default only 1.0, since every fraction x seed x fold trains a whole network.",
        min_items=1,
        unique_items=True,
        items={"exclusive_minimum": 0, "maximum": 1},
    )
    seeds: int | None = setting(
        None,
        "Train for the first this-many label-fraction seeds only (null: all tasks.seeds); "
        "networks are the expensive part of the tasks.",
        minimum=1,
        maximum=100,
    )
    epochs: int = setting(10, "Passes over a fit's training slices.", minimum=1, maximum=1000)
    batch_size: int = setting(32, "Slices per training step.", minimum=2, maximum=4096)
    lr: float = setting(3e-4, "AdamW learning rate (encoder and head).", exclusive_minimum=0, maximum=1)
    weight_decay: float = setting(1e-4, "AdamW weight decay.", minimum=0, maximum=1)
    max_train_slices: int = setting(
        20000,
        "At most this many training slices per fit (a seeded random subset).",
        minimum=1,
        maximum=100000000,
    )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ScratchSettings:
        """Build from the rule's config slice (see :func:`brainssl.settings.from_mapping`)."""
        return from_mapping(cls, values, section="tasks.scratch")


class ScratchClassifier(nn.Module):
    """An encoder's pooled embedding followed by a linear layer: ``(B, 1, S, S)`` -> ``(B, K)`` logits."""

    def __init__(self, encoder: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(int(encoder.embed_dim), n_classes)  # type: ignore[arg-type]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits of a batch of slices."""
        return self.head(self.encoder(images))


def train_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: ScratchSettings,
    generator: torch.Generator,
    device: str | torch.device = "cpu",
) -> list[float]:
    """Train ``model`` end to end with cross-entropy; return the mean loss of each epoch.

    Args:
        model: the network (every parameter is trained).
        images: ``(N, 1, S, S)`` slices in ``[0, 1]`` (on the host).
        labels: ``(N,)`` class codes.
        settings: epochs, batch size, learning rate, weight decay.
        generator: shuffling order.
        device: where the network trains (``tasks.device``; bf16 autocast on CUDA).

    Raises:
        ValueError: for no training slices, mismatched lengths or a non-finite loss.
    """
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError(f"need matching, non-empty images and labels, got {len(images)} and {len(labels)}")
    device = resolve_device(device)
    model.to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    model.train()

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        with autocast(device):
            logits = model(to_device(images[idx], device))
        return F.cross_entropy(logits.float(), to_device(labels[idx], device))

    return run_epochs(
        batch_loss,
        len(images),
        settings.epochs,
        settings.batch_size,
        optimiser,
        generator,
    )


@torch.no_grad()
def _probabilities(model: nn.Module, images: torch.Tensor, size: int, device: torch.device) -> np.ndarray:
    model.eval()
    chunks = []
    for start in range(0, len(images), size):
        with autocast(device):
            logits = model(to_device(images[start : start + size], device))
        chunks.append(logits.float().softmax(dim=1).cpu())
    return torch.cat(chunks).double().numpy()


class ScratchBaseline:
    """``extra_predictions`` hook of :func:`~brainssl.tasks.frozen.run_task`: one scratch network per fit.

    Args:
        index: the slice index (rows = slices; ``array`` paths relative to ``root``).
        encoders: ``{name: encoder.safetensors}`` of the random-initialised exports; each
            architecture among them gives one baseline ``scratch-<arch>``.
        settings: the ``tasks.scratch`` subsection.
        evaluation: the shared evaluation settings (their fractions and seeds bound the baseline's).
        pool_window: the embedding's pooling window (``embed.pool_window``).
        root: folder the index's array paths are relative to (default: working directory).
        device: where the networks train (``tasks.device``: auto, cpu or cuda).

    Raises:
        ValueError: when a configured fraction is not one of the shared label fractions.
    """

    def __init__(
        self,
        index: pd.DataFrame,
        encoders: Mapping[str, str | Path],
        settings: ScratchSettings,
        evaluation: EvaluationSettings,
        pool_window: Sequence[float],
        root: str | Path | None = None,
        device: str = "cpu",
    ) -> None:
        missing = [f for f in settings.label_fractions if not _among(f, evaluation.label_fractions)]
        if missing:
            raise ValueError(
                f"scratch label fractions {missing} are not among tasks.label_fractions "
                f"{list(evaluation.label_fractions)}"
            )
        self.index = index.reset_index(drop=True)
        self.variants: list[Variant] = dense_variants({k: str(v) for k, v in encoders.items()}, ["scratch"])
        self.settings = settings
        self.seed = evaluation.seed
        self.n_seeds = evaluation.seeds if settings.seeds is None else min(settings.seeds, evaluation.seeds)
        self.pool_window = tuple(float(v) for v in pool_window)
        self.root = root
        self.device = resolve_device(device)

    @classmethod
    def from_files(
        cls,
        index_path: str | Path,
        encoders: Mapping[str, str | Path],
        settings: Mapping[str, Any],
        evaluation: EvaluationSettings,
        pool_window: Sequence[float],
        device: str = "cpu",
    ) -> ScratchBaseline:
        """Build from the rule's inputs and params (array paths relative to the working directory)."""
        scratch = ScratchSettings.from_dict(settings)
        return cls(read_index(index_path), encoders, scratch, evaluation, pool_window, device=device)

    def names(self, spec: TaskSpec) -> tuple[str, ...]:
        """The baselines this hook adds to ``spec`` (none for regression and survival)."""
        if not self.settings.enabled or spec.kind not in SCRATCH_KINDS:
            return ()
        return tuple(v.encoder for v in self.variants)

    def __call__(
        self, spec: TaskSpec, units: TaskUnits, plan: Sequence[Fit]
    ) -> dict[str, dict[tuple[float, int], Prediction]]:
        """Train and predict every chosen fit of ``plan``; ``{scratch-<arch>: {(fraction, seed): ...}}``."""
        names = self.names(spec)
        if not names:
            return {}
        fractions = self.settings.label_fractions
        fits = [f for f in plan if _among(f.fraction, fractions) and f.seed < self.n_seeds]
        slices = self._unit_slices(spec, units)
        out: dict[str, dict[tuple[float, int], Prediction]] = {}
        for variant in self.variants:
            preds = out.setdefault(variant.encoder, {})
            for fit in fits:
                empty = Prediction(np.full((len(units.target), len(units.classes)), np.nan))
                pred = preds.setdefault((fit.fraction, fit.seed), empty)
                pred.values[fit.test] = self._fit(variant, spec, units, slices, fit)
                pred.n_train.append(fit.n_train_subjects)
        return out

    def _unit_slices(self, spec: TaskSpec, units: TaskUnits) -> pd.DataFrame:
        """The stored slices of every unit, with the unit's row number in ``unit``."""
        rows = self.index[self.index["dataset"] == spec.dataset]
        if spec.contrasts:
            rows = rows[rows["contrast"].isin(spec.contrasts)]
        keys = _unit_keys(spec)
        numbered = units.keys[keys].astype(str).assign(unit=np.arange(len(units.keys)))
        return rows.astype({k: str for k in keys}).merge(numbered, on=keys, how="inner")

    def _fit(
        self, variant: Variant, spec: TaskSpec, units: TaskUnits, slices: pd.DataFrame, fit: Fit
    ) -> np.ndarray:
        """Unit probabilities ``(len(fit.test), K)`` of one network trained on the fit's training units."""
        n_classes = len(units.classes)
        seed = int(np.random.SeedSequence([self.seed, fit.seed, fit.fold]).generate_state(1)[0])
        train = slices[slices["unit"].isin(fit.train)]
        labels = units.target[train["unit"].to_numpy()]
        present = np.unique(labels)
        if present.size == 1:
            logger.warning("%s fold %d: training slices hold one class; predicting it", spec.name, fit.fold)
            proba = np.zeros((len(fit.test), n_classes))
            proba[:, present[0]] = 1.0
            return proba
        cap = self.settings.max_train_slices
        if len(train) > cap:
            keep = np.sort(np.random.default_rng(seed).choice(len(train), cap, replace=False))
            train, labels = train.iloc[keep], labels[keep]
        encoder = variant.build(seed, self.device)
        side = int(encoder.config["img_size"])  # type: ignore[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = ScratchClassifier(encoder, n_classes)
        history = train_classifier(
            model,
            self._images(train, side),
            torch.from_numpy(labels.astype(np.int64)),
            self.settings,
            seeded_generator(seed),
            self.device,
        )
        logger.info(
            "%s %s on %s, fraction %.3g seed %d fold %d: %d slices of %d subjects, loss %s",
            variant.encoder,
            spec.name,
            spec.dataset,
            fit.fraction,
            fit.seed,
            fit.fold,
            len(train),
            fit.n_train_subjects,
            " ".join(f"{v:.3f}" for v in history),
        )
        test = slices[slices["unit"].isin(fit.test)]
        proba = _probabilities(model, self._images(test, side), self.settings.batch_size, self.device)
        return self._pool(spec, units, test, proba, fit.test)

    def _images(self, rows: pd.DataFrame, side: int) -> torch.Tensor:
        """``(n, 1, side, side)`` slices in ``[0, 1]`` (bilinear resize when the store's side differs)."""
        data = SliceDataset(rows.reset_index(drop=True), root=self.root, check=False)
        images = torch.stack([data[i] for i in range(len(data))])
        if images.shape[-1] != side or images.shape[-2] != side:
            images = F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False)
        return images

    def _pool(
        self, spec: TaskSpec, units: TaskUnits, test: pd.DataFrame, proba: np.ndarray, test_units: np.ndarray
    ) -> np.ndarray:
        """Slice probabilities -> unit probabilities, pooled as the frozen features are."""
        columns = [f"f{k:03d}" for k in range(proba.shape[1])]
        frame = test[[*UNIT_COLUMNS, "position", "split"]].reset_index(drop=True)
        frame = pd.concat([frame, pd.DataFrame(proba, columns=columns)], axis=1)
        pooled = pool_units(frame, self.pool_window)
        keys = _unit_keys(spec)
        per_unit = pooled.groupby(keys, sort=True)[columns].mean()
        wanted = units.keys.iloc[test_units][keys].astype(str)
        aligned = wanted.merge(per_unit.reset_index(), on=keys, how="left")
        return aligned[columns].to_numpy(np.float64)


def _unit_keys(spec: TaskSpec) -> list[str]:
    return ["subject", "contrast"] if spec.unit == "contrast" else ["subject"]


def _among(value: float, choices: Sequence[float]) -> bool:
    return any(math.isclose(value, c, rel_tol=1e-9, abs_tol=1e-12) for c in choices)
