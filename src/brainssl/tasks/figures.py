"""Figures of the task results: label-fraction curves per task and Kaplan-Meier curves of risk groups."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainssl.io import atomic_path

__all__ = ["degenerate_cells", "save_fraction_curves", "save_risk_group_curves"]


def _figure(n_panels: int, width: float = 3.6, height: float = 3.0) -> tuple[Any, np.ndarray]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, max(1, n_panels))
    rows = max(1, -(-n_panels // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    return fig, axes.ravel()


def save_figure(fig: Any, path: str | Path, rect: tuple[float, float, float, float] | None = None) -> None:
    """Lay out, write atomically as PNG and close a figure (every task figure goes through here).

    Args:
        fig: the figure.
        path: destination PNG.
        rect: the part of the figure (left, bottom, right, top, in figure fractions) the axes
            are laid out in; the rest is left to figure legends and notes.
    """
    import matplotlib.pyplot as plt

    fig.tight_layout(rect=rect)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def degenerate_cells(results: pd.DataFrame) -> pd.Series:
    """Rows a curve must not rest on: fewer than two training subjects, or a non-finite value.

    A model fitted on one subject (the smallest label fraction of a small cohort) predicts a
    constant, and its error (a brain-age MAE of hundreds of years, an R² of -1000) says nothing
    about the encoder while stretching the axis so far that the real curves flatten out.
    """
    values = pd.to_numeric(results["value"], errors="coerce").to_numpy(dtype=float)
    n_train = pd.to_numeric(results["n_train"], errors="coerce").fillna(0).to_numpy()
    return pd.Series((n_train < 2) | ~np.isfinite(values), index=results.index)


def _left_out_note(part: pd.DataFrame, bad: pd.Series) -> str:
    few = int((pd.to_numeric(part["n_train"], errors="coerce").fillna(0) < 2).sum())
    nonfinite = int((~np.isfinite(pd.to_numeric(part["value"], errors="coerce").to_numpy(dtype=float))).sum())
    reasons = []
    if few:
        reasons.append(f"{few} on < 2 training subjects")
    if nonfinite:
        reasons.append(f"{nonfinite} non-finite")
    return f"left out: {int(bad.sum())} result(s) ({', '.join(reasons)})" if reasons else ""


def save_fraction_curves(results: pd.DataFrame, path: str | Path) -> Any:
    """Metric against label fraction, one line per encoder (mean over seeds, bars = seed range).

    One panel per (task, dataset, metric); skipped rows are left out, and a task with no
    ``ok`` row gets one panel that says so, so the figure always exists. Results resting on
    fewer than two training subjects or with a non-finite value (:func:`degenerate_cells`)
    are left out of the curves, and the panel says how many, so that the axis range is set
    by the cells that measure something.

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
        bad = degenerate_cells(part)
        for encoder, rows in part[~bad].groupby("encoder"):
            values = rows.assign(value=rows["value"].astype(float))
            stats = values.groupby("label_fraction")["value"].agg(["mean", "min", "max"]).sort_index()
            x = stats.index.to_numpy()
            # equal seeds give mean - min = -1e-17 in floating point; matplotlib refuses negative bars
            err = np.clip(np.vstack([stats["mean"] - stats["min"], stats["max"] - stats["mean"]]), 0.0, None)
            ax.errorbar(x, stats["mean"], yerr=err, marker="o", capsize=3, label=encoder)
        ax.set_xscale("log")
        ax.set_xlabel("label fraction (training subjects)")
        ax.set_title(f"{key[0]} / {key[1]}", fontsize=9)
        ax.set_ylabel(key[2])
        note = _left_out_note(part, bad)
        if bad.all():
            ax.text(
                0.5,
                0.5,
                "no result on >= 2 training subjects\nwith a finite value",
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize=8,
            )
            ax.set_xlim(min(part["label_fraction"].min(), 1.0) / 2, 1.5)
            ax.set_ylim(0.0, 1.0)
        else:
            ax.legend(fontsize=7)
        if note:
            ax.text(0.5, -0.3, note, transform=ax.transAxes, fontsize=7, color="0.3", ha="center", va="top")
    for ax in axes[len(panels) or 1 :]:
        ax.set_axis_off()
    save_figure(fig, path)
    return fig


def _at_risk_times(t_max: float) -> np.ndarray:
    from matplotlib.ticker import MaxNLocator

    ticks = MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(0.0, t_max)
    return ticks[(ticks >= 0) & (ticks <= t_max)]


def save_risk_group_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path
) -> Any:
    """Kaplan-Meier curves of the high- and low-risk halves, one panel per encoder.

    Each curve carries a tick (``|``) where a subject was censored, and the numbers still at
    risk at the x ticks are written under the axis, one row per group in its colour.

    Args:
        curves: encoder -> ``(survival structured array, high_risk mask, log-rank p)``.
        path: destination PNG.

    Returns:
        The (closed) matplotlib figure, for inspection. The censor marks are the lines with
        gid ``censored``; the numbers at risk are texts with gid ``at risk``.
    """
    from matplotlib.transforms import blended_transform_factory
    from sksurv.nonparametric import kaplan_meier_estimator

    fig, axes = _figure(max(1, len(curves)), width=4.0, height=3.4)
    if not curves:
        axes[0].text(0.5, 0.5, "no risk groups (survival task skipped)", ha="center")
        axes[0].set_axis_off()
    for ax, (encoder, (survival, high, p_value)) in zip(axes, sorted(curves.items()), strict=False):
        event, time = (np.asarray(survival[name]) for name in survival.dtype.names)
        event = event.astype(bool)
        t_max = float(time.max()) if len(time) else 1.0
        ticks = _at_risk_times(t_max)
        below = blended_transform_factory(ax.transData, ax.transAxes)
        groups = [(mask, label) for mask, label in ((~high, "low risk"), (high, "high risk")) if mask.any()]
        for row, (mask, label) in enumerate(groups):
            t, s = kaplan_meier_estimator(event[mask], time[mask])
            # start at 1 at time 0, so that the step from the first event is drawn
            t, s = np.concatenate([[0.0], t]), np.concatenate([[1.0], s])
            (line,) = ax.step(t, s, where="post", label=f"{label} (n={int(mask.sum())})")
            colour = line.get_color()
            censored = time[mask & ~event]
            if len(censored):
                at = s[np.searchsorted(t, censored, side="right") - 1]
                ax.plot(censored, at, ls="none", marker="|", ms=7, mew=1.0, color=colour, gid="censored")
            y = -0.3 - 0.09 * row
            ax.text(
                -0.07,
                y,
                label,
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=7,
                color=colour,
                gid="at risk label",
            )
            for tick in ticks:
                ax.text(
                    tick,
                    y,
                    str(int((time[mask] >= tick).sum())),
                    transform=below,
                    ha="center",
                    va="top",
                    fontsize=7,
                    color=colour,
                    gid="at risk",
                )
        if groups:
            ax.text(-0.07, -0.21, "at risk", transform=ax.transAxes, ha="right", va="top", fontsize=7)
        ax.set_xticks(ticks)
        ax.set_xlim(0.0, max(t_max, float(ticks[-1]) if len(ticks) else 0.0) * 1.03)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("days")
        ax.set_ylabel("survival probability")
        ax.set_title(f"{encoder}: log-rank p = {p_value:.3g}", fontsize=9)
        ax.plot([], [], ls="none", marker="|", color="0.3", label="censored")
        ax.legend(fontsize=7)
    for ax in axes[len(curves) or 1 :]:
        ax.set_axis_off()
    save_figure(fig, path)
    return fig
