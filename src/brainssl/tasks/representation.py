"""Representation analysis of slice embeddings: 2D maps, kNN retrieval and a slice-position probe.

Each encoder's ``slices.parquet`` is analysed the same way:

* PCA and t-SNE (scikit-learn; umap is not installed) maps of a subject-balanced sample
  of slices, coloured by slice position, contrast, dataset and pathology;
* kNN retrieval: every test-split slice looks up its ``k`` nearest training-split slices
  (cosine) and takes their majority contrast, dataset and pathology; train and test hold
  different subjects, so a neighbour is never the same brain;
* a ridge probe of slice position (anatomical organisation), fitted on training slices
  and scored on test slices (mean absolute error in position units and R^2).

Scores are rows of the shared results table (task ``representation``), with bootstrap
intervals over test subjects.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainssl.embed import feature_columns
from brainssl.settings import from_mapping, setting

from .figures import _figure, save_figure
from .frozen import encoder_mode
from .results import bootstrap_ci, result_row, skipped_rows

__all__ = ["RepresentationSettings", "analyse_representations", "knn_labels"]

logger = logging.getLogger(__name__)

COLOUR_BY = ("position", "contrast", "dataset", "pathology")
RETRIEVED = ("contrast", "dataset", "pathology")


@dataclass(frozen=True)
class RepresentationSettings:
    """The ``tasks.representation`` config subsection."""

    enabled: bool = setting(True, "Run the analysis.")
    max_slices: int = setting(
        4000,
        "At most this many training and this many test slices (seeded sample) for retrieval and the probe.",
        minimum=10,
        maximum=10000000,
    )
    map_slices: int = setting(600, "Slices drawn in the PCA/t-SNE maps.", minimum=10, maximum=100000)
    knn_k: int = setting(10, "Neighbours of the kNN retrieval.", minimum=1, maximum=1000)
    probe_alpha: float = setting(
        10.0, "Ridge penalty of the slice-position probe.", exclusive_minimum=0, maximum=1000000
    )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RepresentationSettings:
        """Build from the rule's config slice (see :func:`brainssl.settings.from_mapping`)."""
        return from_mapping(cls, values, section="tasks.representation")


def _sample(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    if len(frame) <= n:
        return frame
    return frame.sample(n=n, random_state=seed).sort_index()


def _text(values: pd.Series) -> pd.Series:
    """Labels as strings, missing ones as ``unknown`` (a class of its own in maps and retrieval)."""
    return values.astype(object).where(values.notna(), "unknown").astype(str)


def knn_labels(reference: np.ndarray, labels: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Majority label of each query's ``k`` nearest reference rows by cosine similarity (ties: first)."""

    def unit(a: np.ndarray) -> np.ndarray:
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    k = min(k, len(reference))
    sims = unit(queries) @ unit(reference).T
    nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    codes, inverse = np.unique(labels.astype(str), return_inverse=True)
    votes = np.zeros((len(queries), len(codes)))
    np.add.at(votes, (np.repeat(np.arange(len(queries)), k), inverse[nearest].ravel()), 1)
    return codes[np.argmax(votes, axis=1)]


def _scores(
    name: str, table: pd.DataFrame, settings: RepresentationSettings, n_boot: int, seed: int
) -> list[dict]:
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = feature_columns(table)
    train = _sample(table[table["split"] != "test"], settings.max_slices, seed)
    test = _sample(table[table["split"] == "test"], settings.max_slices, seed)
    base = {"task": "representation", "dataset": "all", "encoder": name, "mode": encoder_mode(name)}
    base |= {
        "label_fraction": 1.0,
        "seed": 0,
        "n_train": train["subject"].nunique(),
        "n_test": test["subject"].nunique(),
    }
    if train.empty or test.empty:
        metrics = [f"knn_{c}" for c in RETRIEVED] + ["position_mae", "position_r2"]
        return skipped_rows(reason="needs slices of both training and test subjects", metrics=metrics, **base)
    x_train, x_test = train[features].to_numpy(float), test[features].to_numpy(float)
    groups = test["subject"].to_numpy()
    rows = []
    for column in RETRIEVED:
        truth = _text(test[column]).to_numpy()
        hit = (knn_labels(x_train, _text(train[column]).to_numpy(), x_test, settings.knn_k) == truth).astype(
            float
        )
        low, high = bootstrap_ci(np.mean, hit, n_boot=n_boot, seed=seed, groups=groups)
        rows.append(
            result_row(metric=f"knn_{column}", value=float(hit.mean()), ci_low=low, ci_high=high, **base)
        )
    known = train["position"].notna().to_numpy()
    probe = make_pipeline(StandardScaler(), Ridge(alpha=settings.probe_alpha))
    probe.fit(x_train[known], train["position"].to_numpy()[known])
    has_position = test["position"].notna().to_numpy()
    truth = test["position"].to_numpy()[has_position]
    error = np.abs(probe.predict(x_test[has_position]) - truth)
    low, high = bootstrap_ci(np.mean, error, n_boot=n_boot, seed=seed, groups=groups[has_position])
    rows.append(
        result_row(metric="position_mae", value=float(error.mean()), ci_low=low, ci_high=high, **base)
    )
    r2 = 1.0 - float(np.sum(error**2) / np.sum((truth - truth.mean()) ** 2))
    rows.append(result_row(metric="position_r2", value=r2, **base))
    return rows


def _maps(
    tables: Mapping[str, pd.DataFrame], settings: RepresentationSettings, seed: int, path: str | Path
) -> None:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    fig, axes = _figure(2 * len(COLOUR_BY) * max(1, len(tables)), width=2.6, height=2.4)
    ax_iter = iter(axes)
    for name, table in sorted(tables.items()):
        sample = _sample(table, settings.map_slices, seed)
        x = StandardScaler().fit_transform(sample[feature_columns(sample)].to_numpy(float))
        pca = PCA(n_components=2, random_state=seed).fit_transform(x)
        perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
        tsne = TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity).fit_transform(x)
        for method, coords in (("PCA", pca), ("t-SNE", tsne)):
            for column in COLOUR_BY:
                ax = next(ax_iter)
                values = sample[column] if column == "position" else _text(sample[column])
                if column == "position":
                    art = ax.scatter(*coords.T, c=values.to_numpy(float), s=4, cmap="viridis")
                    fig.colorbar(art, ax=ax, fraction=0.05)
                else:
                    for label in sorted(values.unique()):
                        mask = (values == label).to_numpy()
                        ax.scatter(*coords[mask].T, s=4, label=label)
                    ax.legend(fontsize=5, markerscale=2)
                ax.set_title(f"{name} {method}: {column}", fontsize=7)
                ax.set_xticks([])
                ax.set_yticks([])
    for ax in ax_iter:
        ax.set_axis_off()
    save_figure(fig, path)


def analyse_representations(
    slices: Mapping[str, str | Path],
    settings: RepresentationSettings,
    n_boot: int,
    seed: int,
    figure: str | Path,
) -> list[dict[str, Any]]:
    """Score every encoder's slice embeddings and draw their maps.

    Args:
        slices: encoder name -> its ``slices.parquet``.
        settings: sample sizes, k and probe penalty.
        n_boot: bootstrap resamples for the intervals.
        seed: sampling seed.
        figure: destination of the PCA/t-SNE figure.

    Returns:
        Results rows (task ``representation``).
    """
    tables = {name: pd.read_parquet(path) for name, path in slices.items()}
    rows = []
    for name, table in sorted(tables.items()):
        rows += _scores(name, table, settings, n_boot, seed)
    _maps(tables, settings, seed, figure)
    return rows
