"""The slice-filter ablation's table and figure: downstream scores against slices seen and training time.

The ablation (:mod:`brainssl.ablation`, :mod:`brainssl.pretrain.ablation`) trains one method and
architecture at equal steps on the filtered store, on every brain slice (``unfiltered``) and on a
random subset of those the size of the filtered store (``subset``). :func:`ablation_table` puts,
per run, the slices it could draw from, the distinct slices it saw, its steps and training time
beside its kNN probe and every frozen-feature task's primary metric with all training labels
(mean over label draws, with the 95 % interval), and the paired bootstrap gain of the run over the
filtered one (``comparisons.tsv``; negative = the filter helped). The random-initialised encoder
is the floor (no slice seen, no step).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainssl.ablation import FILTERED, VARIANTS
from brainssl.io import write_table

from .conclusions import PRIMARY_METRICS, conclusions, display_name, oriented

__all__ = [
    "ABLATION_COLUMNS",
    "AblationRun",
    "ablation_table",
    "read_run",
    "save_ablation_figure",
    "write_ablation",
]

ABLATION_COLUMNS = (
    "variant",
    "encoder",
    "pool_slices",
    "slices_seen",
    "steps",
    "train_seconds",
    "task",
    "dataset",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "gain_vs_filtered",
    "gain_low",
    "gain_high",
)
#: The kNN probe rows' task name (their dataset is the probe split).
PROBE_TASK = "knn_probe"
_ORDER = (FILTERED, *VARIANTS, "random")
_STYLE = {FILTERED: ("C0", "o"), "unfiltered": ("C1", "s"), "subset": ("C2", "^")}


@dataclass(frozen=True)
class AblationRun:
    """What one run of the ablation cost and saw (the random encoder: nothing)."""

    variant: str
    encoder: str
    pool_slices: int
    slices_seen: int
    steps: int
    train_seconds: float
    knn: Mapping[str, float] = field(default_factory=dict)


def _seconds(provenance: Mapping[str, Any]) -> float:
    started, ended = (dt.datetime.fromisoformat(str(provenance[k])) for k in ("started", "ended"))
    return (ended - started).total_seconds()


def read_run(variant: str, card: str | Path, provenance: str | Path, pool: int) -> AblationRun:
    """One run's facts from its model card and provenance record.

    Args:
        variant: ``filtered``, ``unfiltered``, ``subset`` or ``random``.
        card: the run's ``model_card.json`` (its folder name is the encoder name).
        provenance: the training job's ``provenance.json`` (its start and end: the training time).
        pool: train slices the run drew from (the filtered store's, the unfiltered one's, or the
            subset's size).
    """
    from brainssl.pretrain.ablation import slices_seen

    values = json.loads(Path(card).read_text())
    encoder, knn = Path(card).parent.name, {k: float(v) for k, v in values.get("knn_probe", {}).items()}
    if values["method"] == "random":
        return AblationRun(variant, encoder, 0, 0, 0, 0.0, knn)
    settings, steps = values["settings"], int(values["training_metrics"]["step"])
    seen = slices_seen(
        pool,
        batch_size=int(settings["batch_size"]),
        epochs=int(settings["epochs"]),
        seed=int(settings["seed"]),
        steps=steps,
        epoch_images=settings.get("epoch_images"),
    )
    seconds = _seconds(json.loads(Path(provenance).read_text()))
    return AblationRun(variant, encoder, pool, seen, steps, seconds, knn)


def _scores(results: pd.DataFrame, encoders: list[str], variants: list[str]) -> pd.DataFrame:
    """Each frozen task's primary metric at its largest label fraction, mean over draws, per encoder."""
    frame = results[results["encoder"].isin(encoders) & (results["mode"] == "frozen")].copy()
    frame["shots"] = pd.to_numeric(frame["shots"], errors="coerce").fillna(0)
    frame = frame[frame["shots"] == 0]
    # only tasks the ablation's variants were evaluated on (not the dense ones)
    tested = frame.loc[frame["encoder"].isin(variants), ["task", "dataset"]].drop_duplicates()
    frame = frame.merge(tested, on=["task", "dataset"])
    rows = []
    for (task, dataset), part in frame.groupby(["task", "dataset"], sort=True):
        metrics = set(part["metric"])
        metric = next((m for m in PRIMARY_METRICS if m in metrics), min(metrics))
        part = part[
            (part["metric"] == metric) & np.isclose(part["label_fraction"], part["label_fraction"].max())
        ]
        ok = part[part["status"] == "ok"]
        means = ok.groupby("encoder")[["value", "ci_low", "ci_high"]].mean()
        for encoder in encoders:
            got = (
                means.loc[encoder]
                if encoder in means.index
                else pd.Series(np.nan, ["value", "ci_low", "ci_high"])
            )
            rows.append(
                {"encoder": encoder, "task": task, "dataset": dataset, "metric": metric, **got.to_dict()}
            )
    return pd.DataFrame(rows, columns=["encoder", "task", "dataset", "metric", "value", "ci_low", "ci_high"])


def _gains(comparisons: pd.DataFrame, filtered: str, encoders: list[str]) -> pd.DataFrame:
    """Paired gain (mean over draws, 95 % interval) of each encoder over the filtered run, all labels."""
    columns = ["encoder", "task", "dataset", "metric", "gain_vs_filtered", "gain_low", "gain_high"]
    table = conclusions(comparisons)
    if table.empty:
        return pd.DataFrame(columns=columns)
    full = table[table["shots"] == 0]
    full = full[
        np.isclose(
            full["label_fraction"], full.groupby(["task", "dataset"])["label_fraction"].transform("max")
        )
    ]
    parts = [
        oriented(full, lambda n, e=e: n == e, lambda n: n == filtered) for e in encoders if e != filtered
    ]
    rows = pd.concat(parts) if parts else full.iloc[:0]
    rows = rows.rename(columns={"gain": "gain_vs_filtered", "ci_low": "gain_low", "ci_high": "gain_high"})
    return rows[columns]


def ablation_table(runs: list[AblationRun], results: pd.DataFrame, comparisons: pd.DataFrame) -> pd.DataFrame:
    """One row per run and score: the kNN probes, then each frozen task's primary metric.

    Args:
        runs: the filtered run first, then its variants and the random encoder (:func:`read_run`).
        results: the merged ``results/tasks/results.tsv``.
        comparisons: the merged ``results/tasks/comparisons.tsv``.

    Returns:
        Columns :data:`ABLATION_COLUMNS`; ``gain_vs_filtered`` is the run's paired gain over the
        filtered one (positive = the run is better; lower-is-better metrics are turned round).
    """
    runs = sorted(runs, key=lambda r: _ORDER.index(r.variant) if r.variant in _ORDER else len(_ORDER))
    encoders = [r.encoder for r in runs]
    filtered = next((r.encoder for r in runs if r.variant == FILTERED), "")
    variants = [r.encoder for r in runs if r.variant in VARIANTS]
    facts = pd.DataFrame([{k: v for k, v in vars(r).items() if k != "knn"} for r in runs])
    names = sorted({name for r in runs for name in r.knn})
    probes = pd.DataFrame(
        [
            {
                "encoder": r.encoder,
                "task": PROBE_TASK,
                "dataset": "slices",
                "metric": name,
                "value": r.knn.get(name),
            }
            for name in names
            for r in runs
        ],
        columns=["encoder", "task", "dataset", "metric", "value"],
    )
    # score-major, run-minor order; left merges keep it
    scores = pd.concat([probes, _scores(results, encoders, variants)], ignore_index=True)
    keys = ["encoder", "task", "dataset", "metric"]
    table = scores.merge(facts, on="encoder", how="left")
    table = table.merge(_gains(comparisons, filtered, encoders), on=keys, how="left")
    return table.reindex(columns=list(ABLATION_COLUMNS))


def save_ablation_figure(table: pd.DataFrame, path: str | Path) -> Any:
    """Each score against distinct slices seen (left) and training time (right), per run.

    The filtered run and its variants are points with their 95 % intervals (the kNN probes have
    none); the random-initialised encoder is the dashed floor.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .figures import save_figure

    keys = list(dict.fromkeys(zip(table["task"], table["dataset"], table["metric"], strict=True)))
    keys = [k for k in keys if isinstance(k[0], str)]
    scored = {k for k, part in table.groupby(["task", "dataset", "metric"]) if part["value"].notna().any()}
    skipped = [k for k in keys if k not in scored]  # every cell skipped: named below, not drawn
    keys = [k for k in keys if k in scored] or [("", "", "")]
    note = 0.35 if skipped else 0.0
    fig, axes = plt.subplots(len(keys), 2, figsize=(8.0, 1.9 * len(keys) + 0.6 + note), squeeze=False)
    for row, (task, dataset, metric) in enumerate(keys):
        part = table[(table["task"] == task) & (table["dataset"] == dataset) & (table["metric"] == metric)]
        for col, x_name in enumerate(("slices_seen", "train_seconds")):
            ax = axes[row, col]
            for _, run in part.iterrows():
                value = float(run["value"]) if pd.notna(run["value"]) else np.nan
                if run["variant"] == "random":
                    if np.isfinite(value):
                        ax.axhline(value, ls="--", color="0.4", lw=1, label="random init")
                    continue
                colour, marker = _STYLE.get(run["variant"], ("C3", "D"))
                low, high = (float(run[c]) if pd.notna(run[c]) else value for c in ("ci_low", "ci_high"))
                err = np.clip([[value - low], [high - value]], 0.0, None)
                ax.errorbar(
                    [float(run[x_name])],
                    [value],
                    yerr=err,
                    marker=marker,
                    color=colour,
                    capsize=3,
                    ls="none",
                    label=display_name(str(run["encoder"])),
                )
            if part["value"].isna().all():
                ax.text(
                    0.5,
                    0.5,
                    "no score (skipped)",
                    transform=ax.transAxes,
                    ha="center",
                    va="center",
                    color="0.3",
                )
            ax.set_ylabel(f"{task} ({dataset})\n{metric}".replace("_", " "), fontsize=8)
            ax.tick_params(labelsize=7)
            if row == len(keys) - 1:
                ax.set_xlabel("distinct slices seen" if col == 0 else "training time (s)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    for ax in axes.ravel()[1:]:
        more, names = ax.get_legend_handles_labels()
        handles += [h for h, n in zip(more, names, strict=True) if n not in labels]
        labels += [n for n in names if n not in labels]
    fig.legend(handles, labels, loc="upper center", ncol=4, fontsize=7, frameon=False)
    if skipped:
        names = ", ".join(f"{t} ({d}) {m}" for t, d, m in skipped).replace("_", " ")
        fig.text(0.5, 0.01, f"no score, every cell skipped: {names}", ha="center", fontsize=6, wrap=True)
    height = fig.get_figheight()
    save_figure(fig, path, rect=(0, note / height, 1, 1 - 0.45 / height))
    return fig


def write_ablation(
    results: str | Path,
    comparisons: str | Path,
    cards: Mapping[str, str | Path],
    provenances: Mapping[str, str | Path],
    filtered_index: str | Path,
    unfiltered_index: str | Path,
    out_table: str | Path,
    out_figure: str | Path,
) -> pd.DataFrame:
    """Read the runs and the merged task tables, write the ablation table and figure (what the rule calls).

    Args:
        results: the merged results table.
        comparisons: the merged paired comparisons.
        cards: variant -> model card (``filtered``, the variants, ``random``).
        provenances: variant -> the run's provenance record.
        filtered_index: the filtered store's index (its train split: the filtered and subset pools).
        unfiltered_index: the unfiltered store's index (its train split: the unfiltered pool).
        out_table: TSV to write.
        out_figure: PNG to write.
    """
    from brainssl.pretrain.ablation import train_slices

    size = len(train_slices(filtered_index))
    pools = {FILTERED: size, "subset": size, "unfiltered": len(train_slices(unfiltered_index)), "random": 0}
    runs = [read_run(v, cards[v], provenances[v], pools[v]) for v in cards]
    table = ablation_table(
        runs,
        pd.read_csv(results, sep="\t"),
        pd.read_csv(comparisons, sep="\t") if Path(comparisons).stat().st_size else pd.DataFrame(),
    )
    write_table(out_table, table)
    save_ablation_figure(table, out_figure)
    return table
