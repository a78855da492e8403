"""Figures of the task results: label-fraction and few-shot curves, conclusions, Kaplan-Meier curves."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainssl.io import atomic_path

__all__ = [
    "degenerate_cells",
    "save_conclusions_figure",
    "save_fewshot_curves",
    "save_fraction_curves",
    "save_risk_group_curves",
]


def _figure(
    n_panels: int, width: float = 3.6, height: float = 3.0, max_cols: int = 4
) -> tuple[Any, np.ndarray]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(max_cols, max(1, n_panels))
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
    ok = results[(results["status"] == "ok") & (_shots(results) == 0)]  # the few-shot rows have their figure
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


def _shots(results: pd.DataFrame) -> pd.Series:
    """The ``shots`` column (0 for label-fraction rows; tables without it have none)."""
    if "shots" not in results:
        return pd.Series(0, index=results.index)
    return pd.to_numeric(results["shots"], errors="coerce").fillna(0).astype(int)


#: The few-shot legend entry of the dotted lines (each encoder's value with every training subject).
_CEILING = "dotted: all training subjects"
_REGRESSION_METRICS = ("mae", "mae_corrected", "gap_slope", "gap_slope_corrected")
_SURVIVAL_METRICS = ("c_harrell", "c_uno", "ibs", "logrank_p")


def fewshot_axis_label(metric: str) -> str:
    """The x label of a few-shot panel: per class, per event status (survival) or in all (regression)."""
    if metric in _REGRESSION_METRICS:
        return "labelled training subjects (log)"
    if any(metric.endswith(f"_{m}") for m in _SURVIVAL_METRICS):
        return "labelled training subjects per event status (log)"
    return "labelled training subjects per class (log)"


def _skipped_note(part: pd.DataFrame) -> str:
    """``skipped (reasons in results.tsv): 2 shots x4, 10 shots x4`` for a panel's skipped cells."""
    skipped = part[part["status"] == "skipped"]
    if skipped.empty:
        return ""
    counts = skipped.groupby(_shots(skipped)).size().sort_index()
    cells = ", ".join(f"{int(k)} shots x{int(n)}" for k, n in counts.items())
    return f"skipped (reasons in results.tsv): {cells}"


def save_fewshot_curves(results: pd.DataFrame, path: str | Path, title: str = "") -> Any:
    """One task's few-shot curves: metric against labelled training subjects per class (log x).

    One panel per (task, dataset, metric) of the rows with ``shots`` > 0; one line per encoder:
    the mean over label draws, with bars from the mean of the draws' 95% bootstrap intervals
    over test subjects (the encoders' points are spread a little along x so that bars do not
    hide each other). A dotted line in the encoder's colour marks its value with every training
    subject (the largest label fraction), as a ceiling. An encoder has one colour in every panel,
    and one legend under the panels names them, so that no legend covers a curve. Skipped cells
    (too few subjects per class, a degenerate fit) and :func:`degenerate_cells` are left out,
    and the panel counts them. Without any few-shot row the figure says so, so that it always exists.

    Args:
        results: one task's results table (``results.tsv`` columns, ``shots`` included).
        path: destination PNG.
        title: the figure's title (default: the task names).

    Returns:
        The (closed) matplotlib figure, for inspection.
    """
    shots = _shots(results)
    few = results[shots > 0]
    panels = sorted(few.groupby(["task", "dataset", "metric"]).groups) if len(few) else []
    fig, axes = _figure(max(1, len(panels)), width=3.8, height=3.2)
    names = " / ".join(sorted(set(results["task"]))) or "no task"
    fig.suptitle(title or f"{names}: few-shot curves", fontsize=10)
    if not panels:
        axes[0].text(
            0.5,
            0.5,
            "no few-shot budget was evaluated\n(tasks.shots empty, or the task was skipped)",
            ha="center",
            va="center",
            fontsize=8,
        )
        axes[0].set_axis_off()
    full = results[(results["status"] == "ok") & (shots == 0)]
    # one colour per encoder in every panel, so that one legend under the panels serves them all
    colours = {
        e: f"C{i % 10}" for i, e in enumerate(sorted(few.loc[few["status"] == "ok", "encoder"].unique()))
    }
    legend: dict[str, Any] = {}
    for ax, key in zip(axes, panels, strict=False):
        part = few[(few["task"] == key[0]) & (few["dataset"] == key[1]) & (few["metric"] == key[2])]
        ok = part[part["status"] == "ok"]
        bad = degenerate_cells(ok)
        good = ok[~bad]
        budgets = sorted(int(k) for k in _shots(part).unique())
        encoders = sorted(good["encoder"].unique())
        ceiling = full[(full["task"] == key[0]) & (full["dataset"] == key[1]) & (full["metric"] == key[2])]
        ceiling = ceiling[~degenerate_cells(ceiling)]
        for i, encoder in enumerate(encoders):
            rows = good[good["encoder"] == encoder]
            stats = rows.groupby(_shots(rows))[["value", "ci_low", "ci_high"]].mean().sort_index()
            x = stats.index.to_numpy(dtype=float) * 1.05 ** (i - (len(encoders) - 1) / 2)
            mean = stats["value"].to_numpy(dtype=float)
            low = np.nan_to_num(mean - stats["ci_low"].to_numpy(dtype=float), nan=0.0)
            high = np.nan_to_num(stats["ci_high"].to_numpy(dtype=float) - mean, nan=0.0)
            bars = ax.errorbar(
                x,
                mean,
                yerr=np.clip(np.vstack([low, high]), 0.0, None),
                marker="o",
                capsize=3,
                label=encoder,
                color=colours[encoder],
            )
            legend.setdefault(encoder, bars)
            top = ceiling[ceiling["encoder"] == encoder]
            if len(top):
                largest = top[np.isclose(top["label_fraction"], top["label_fraction"].max())]
                ax.axhline(
                    float(largest["value"].mean()),
                    ls=":",
                    lw=1.0,
                    color=colours[encoder],
                    gid="all training subjects",
                )
                legend.setdefault(_CEILING, None)
        ax.set_xscale("log")
        ax.set_xticks(budgets, [str(k) for k in budgets])
        ax.minorticks_off()
        ax.set_xlim(min(budgets) / 1.5, max(budgets) * 1.5)
        ax.set_xlabel(fewshot_axis_label(key[2]))
        ax.set_ylabel(key[2])
        ax.set_title(f"{key[0]} / {key[1]}", fontsize=9)
        if not encoders:
            ax.text(
                0.5,
                0.5,
                "no few-shot cell reported",
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize=8,
            )
            ax.set_ylim(0.0, 1.0)
        notes = [n for n in (_skipped_note(part), _left_out_note(ok, bad)) if n]
        if notes:
            ax.annotate(  # below the x label, whatever the panel's height
                "\n".join(notes),
                xy=(0.5, 0.0),
                xycoords="axes fraction",
                xytext=(0, -40),
                textcoords="offset points",
                fontsize=7,
                color="0.3",
                ha="center",
                va="top",
            )
    for ax in axes[len(panels) or 1 :]:
        ax.set_axis_off()
    bottom = 0.0
    if legend:
        from matplotlib.lines import Line2D

        names = sorted(n for n in legend if n != _CEILING) + [n for n in legend if n == _CEILING]
        handles = [legend[n] if n != _CEILING else Line2D([], [], ls=":", color="0.3") for n in names]
        ncol = max(1, min(len(names), int(fig.get_figwidth() / 1.7)))  # about 1.7 in per entry
        fig.legend(handles, names, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
        rows_inches = 0.1 + 0.25 * -(-len(names) // ncol)  # the legend's rows, added below the panels
        fig.set_figheight(fig.get_figheight() + rows_inches)
        bottom = rows_inches / fig.get_figheight()
    save_figure(fig, path, rect=(0.0, bottom, 1.0, 0.95))
    return fig


#: Cell colours of the conclusions figure, per verdict of the row's encoder.
VERDICT_COLOURS = {"better": "#4daf4a", "worse": "#e41a1c", "inconclusive": "#d9d9d9", "undefined": "#ffffff"}


def save_conclusions_figure(table: pd.DataFrame, path: str | Path) -> Any:
    """Which encoder beats which, where: one panel per encoder pair, cells coloured by verdict.

    Rows of a panel are the tasks (and datasets) with their primary metric, columns the label
    budgets (shots per class, then label fractions); each cell holds the gain of the panel's
    first encoder over the second (positive = better; a lower MAE is a gain) with its 95%
    interval, green where the interval is above 0, red below, grey when it holds 0.

    Args:
        table: :func:`brainssl.tasks.conclusions.conclusions` output.
        path: destination PNG.

    Returns:
        The (closed) matplotlib figure; each cell's text has gid ``cell``.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    primary = table[table["primary"].astype(bool)] if len(table) else table
    pairs = sorted(primary.groupby(["encoder", "baseline"]).groups) if len(primary) else []
    cells = [
        _budget(shots, fraction)
        for shots, fraction in zip(primary["shots"], primary["label_fraction"], strict=True)
    ]
    budgets = sorted(set(cells), key=lambda b: (b[0] == 0, b[0], b[1]))  # shots first, then fractions
    tasks = sorted(primary.groupby(["task", "dataset", "metric"]).groups) if len(primary) else []
    width = max(4.0, 1.15 * len(budgets) + 2.6)
    height = max(2.2, 0.42 * len(tasks) + 1.4)
    fig, axes = _figure(max(1, len(pairs)), width=width, height=height, max_cols=2)
    if not pairs:
        axes[0].text(
            0.5, 0.5, "no paired comparison was reported\n(every cell skipped?)", ha="center", va="center"
        )
        axes[0].set_axis_off()
    order = list(VERDICT_COLOURS)
    cmap = ListedColormap([VERDICT_COLOURS[v] for v in order])
    for ax, (encoder, baseline) in zip(axes, pairs, strict=False):
        part = primary[(primary["encoder"] == encoder) & (primary["baseline"] == baseline)]
        codes = np.full((len(tasks), len(budgets)), order.index("undefined"), dtype=float)
        for _, row in part.iterrows():
            r = tasks.index((row["task"], row["dataset"], row["metric"]))
            c = budgets.index(_budget(row["shots"], row["label_fraction"]))
            codes[r, c] = order.index(str(row["verdict"]))
            low, high = float(row["ci_low"]), float(row["ci_high"])
            interval = f"\n[{low:+.2g}, {high:+.2g}]" if np.isfinite([low, high]).all() else ""
            ax.text(
                c, r, f"{float(row['gain']):+.2g}{interval}", ha="center", va="center", fontsize=6, gid="cell"
            )
        ax.imshow(codes, cmap=cmap, vmin=-0.5, vmax=len(order) - 0.5, aspect="auto")
        ax.set_xticks(range(len(budgets)), [_budget_label(*b) for b in budgets], fontsize=7, rotation=30)
        ax.set_yticks(range(len(tasks)), [_task_label(*t) for t in tasks], fontsize=7)
        ax.set_title(f"{encoder} vs {baseline}", fontsize=9)
    for ax in axes[len(pairs) or 1 :]:
        ax.set_axis_off()
    handles = [Patch(color=VERDICT_COLOURS[v], label=v) for v in order[:3]]
    title = "gain of the first encoder over the second (95% paired bootstrap interval over test subjects)"
    fig.legend(handles=handles, loc="upper center", ncol=3, fontsize=8, title=title, title_fontsize=8)
    save_figure(fig, path, rect=(0.0, 0.0, 1.0, 1.0 - 0.75 / fig.get_figheight()))
    return fig


def _budget(shots: Any, fraction: Any) -> tuple[int, float]:
    """A budget as a sortable pair: ``(shots, 0.0)`` or ``(0, fraction)``."""
    return (int(shots), 0.0) if int(shots) else (0, float(fraction))


def _budget_label(shots: int, fraction: float) -> str:
    return f"{shots} shots" if shots else f"fraction {fraction:g}"


def _task_label(task: str, dataset: str, metric: str) -> str:
    on = task if dataset == task else f"{task} ({dataset})"
    return f"{on}\n{metric}"


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
