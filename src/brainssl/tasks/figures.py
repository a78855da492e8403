"""Figures of the task results: label-fraction curves per task and Kaplan-Meier curves of risk groups."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainssl.io import atomic_path

__all__ = ["save_fraction_curves", "save_risk_group_curves"]


def _figure(n_panels: int, width: float = 3.6, height: float = 3.0) -> tuple[Any, np.ndarray]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, max(1, n_panels))
    rows = max(1, -(-n_panels // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    return fig, axes.ravel()


def save_figure(fig: Any, path: str | Path) -> None:
    """Lay out, write atomically as PNG and close a figure (every task figure goes through here)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def save_fraction_curves(results: pd.DataFrame, path: str | Path) -> Any:
    """Metric against label fraction, one line per encoder (mean over seeds, bars = seed range).

    One panel per (task, dataset, metric); skipped rows are left out, and a task with no
    ``ok`` row gets one panel that says so, so the figure always exists.

    Returns:
        The (closed) matplotlib figure, for inspection.
    """
    ok = results[results["status"] == "ok"]
    panels = sorted(ok.groupby(["task", "dataset", "metric"]).groups) if len(ok) else []
    fig, axes = _figure(max(1, len(panels)))
    if not panels:
        axes[0].text(0.5, 0.5, "no task could be evaluated\n(see the reasons in results.tsv)", ha="center")
        axes[0].set_axis_off()
    for ax, key in zip(axes, panels, strict=False):
        part = ok[(ok["task"] == key[0]) & (ok["dataset"] == key[1]) & (ok["metric"] == key[2])]
        for encoder, rows in part.groupby("encoder"):
            stats = rows.groupby("label_fraction")["value"].agg(["mean", "min", "max"]).sort_index()
            x = stats.index.to_numpy()
            # equal seeds give mean - min = -1e-17 in floating point; matplotlib refuses negative bars
            err = np.clip(np.vstack([stats["mean"] - stats["min"], stats["max"] - stats["mean"]]), 0.0, None)
            ax.errorbar(x, stats["mean"], yerr=err, marker="o", capsize=3, label=encoder)
        ax.set_xscale("log")
        ax.set_xlabel("label fraction (training subjects)")
        ax.set_title(f"{key[0]} / {key[1]}", fontsize=9)
        ax.set_ylabel(key[2])
        ax.legend(fontsize=7)
    for ax in axes[len(panels) or 1 :]:
        ax.set_axis_off()
    save_figure(fig, path)
    return fig


def save_risk_group_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path
) -> Any:
    """Kaplan-Meier curves of the high- and low-risk halves, one panel per encoder.

    Args:
        curves: encoder -> ``(survival structured array, high_risk mask, log-rank p)``.
        path: destination PNG.

    Returns:
        The (closed) matplotlib figure, for inspection.
    """
    from sksurv.nonparametric import kaplan_meier_estimator

    fig, axes = _figure(max(1, len(curves)))
    if not curves:
        axes[0].text(0.5, 0.5, "no risk groups (survival task skipped)", ha="center")
        axes[0].set_axis_off()
    for ax, (encoder, (survival, high, p_value)) in zip(axes, sorted(curves.items()), strict=False):
        event, time = (survival[name] for name in survival.dtype.names)
        for mask, label in ((~high, "low risk"), (high, "high risk")):
            if mask.any():
                t, s = kaplan_meier_estimator(event[mask], time[mask])
                ax.step(t, s, where="post", label=f"{label} (n={int(mask.sum())})")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("days")
        ax.set_ylabel("survival probability")
        ax.set_title(f"{encoder}: log-rank p = {p_value:.3g}", fontsize=9)
        ax.legend(fontsize=7)
    for ax in axes[len(curves) or 1 :]:
        ax.set_axis_off()
    save_figure(fig, path)
    return fig
