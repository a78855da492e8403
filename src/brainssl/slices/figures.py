"""Report figures of the slices stage: entropy histograms, retained fractions, montages.

Figures read the stats table (every cut slice, kept or not). Only the montage touches image
files: it re-cuts the few volumes it shows, so a person can see what was dropped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainssl.io import atomic_path

from .settings import SliceSettings
from .store import cut_slices

__all__ = [
    "POSITION_BINS",
    "retention_table",
    "save_entropy_histogram",
    "save_retention_figure",
    "save_slice_figures",
    "save_slice_montage",
]

PathLike = str | os.PathLike[str]
POSITION_BINS = np.round(np.arange(-0.3, 1.31, 0.1), 2)
THRESHOLD_COLOURS = ("tab:red", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive")
THRESHOLD_DASHES = ("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", metadata={"Software": None})
    _pyplot().close(fig)


def retention_table(stats: pd.DataFrame) -> pd.DataFrame:
    """Kept fraction per dataset, overall and per position bin (``position_bin`` = 'all').

    Args:
        stats: the stats table (columns ``dataset, position, kept``).

    Returns:
        Columns ``dataset, position_bin, slices, kept, fraction``.
    """
    rows = []
    for dataset, group in stats.groupby("dataset", sort=True):
        rows.append(
            {
                "dataset": dataset,
                "position_bin": "all",
                "slices": len(group),
                "kept": int(group["kept"].sum()),
            }
        )
        pos = group.dropna(subset=["position"])
        bins = pd.cut(
            pos["position"].clip(POSITION_BINS[0], POSITION_BINS[-1]), POSITION_BINS, include_lowest=True
        )
        for interval, part in pos.groupby(bins, observed=True, sort=True):
            label = f"{interval.left:.1f}..{interval.right:.1f}"
            rows.append(
                {
                    "dataset": dataset,
                    "position_bin": label,
                    "slices": len(part),
                    "kept": int(part["kept"].sum()),
                }
            )
    table = pd.DataFrame(rows, columns=["dataset", "position_bin", "slices", "kept"])
    table["fraction"] = table["kept"] / table["slices"].clip(lower=1)
    return table


def save_entropy_histogram(stats: pd.DataFrame, path: PathLike) -> Any:
    """One panel per dataset: entropy of kept and dropped slices, thresholds as dashed lines.

    Returns the (closed) matplotlib figure, as do the other ``save_*`` figure functions here.
    """
    plt = _pyplot()
    datasets = sorted(stats["dataset"].unique())
    fig, axes = plt.subplots(
        1, max(1, len(datasets)), figsize=(6.0 * max(1, len(datasets)), 3.2), squeeze=False
    )
    for ax, dataset in zip(axes[0], datasets, strict=False):
        group = stats[stats["dataset"] == dataset]
        edges = np.linspace(0.0, max(float(group["entropy"].max()), 1e-3) * 1.02, 41)
        ax.hist(
            [group.loc[group["kept"], "entropy"], group.loc[~group["kept"], "entropy"]],
            bins=edges,
            stacked=True,
            color=["tab:blue", "tab:gray"],
            label=["kept", "dropped"],
        )
        # thresholds of several contrasts often lie within a bar's width of each other: each gets
        # its own colour and dash and is named in the legend, never by a label on the plot
        for k, (contrast, part) in enumerate(group.groupby("contrast", sort=True)):
            finite = part["threshold"][np.isfinite(part["threshold"])]
            if len(finite):
                ax.axvline(
                    float(finite.median()),
                    color=THRESHOLD_COLOURS[k % len(THRESHOLD_COLOURS)],
                    ls=THRESHOLD_DASHES[k % len(THRESHOLD_DASHES)],
                    lw=1.2,
                    label=f"threshold {contrast or '2D'}: {float(finite.median()):.2f}",
                )
        ax.set(
            title=f"{dataset}: {int(group['kept'].sum())}/{len(group)} kept",
            xlabel="entropy (bits)",
            ylabel="slices",
        )
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    _save(fig, path)
    return fig


def save_retention_figure(stats: pd.DataFrame, path: PathLike) -> Any:
    """Kept fraction by dataset (bars) and by relative position bin (lines)."""
    plt = _pyplot()
    table = retention_table(stats)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    overall = table[table["position_bin"] == "all"]
    left.bar(overall["dataset"], overall["fraction"], color="tab:blue")
    for x, (_, row) in enumerate(overall.iterrows()):
        left.text(x, row["fraction"], f"{row['kept']}/{row['slices']}", ha="center", va="bottom", fontsize=7)
    left.set(ylim=(0, 1.1), ylabel="kept fraction", title="retained by dataset")
    left.tick_params(axis="x", rotation=30, labelsize=8)
    centres = {
        f"{a:.1f}..{b:.1f}": (a + b) / 2 for a, b in zip(POSITION_BINS[:-1], POSITION_BINS[1:], strict=True)
    }
    for dataset, part in table[table["position_bin"] != "all"].groupby("dataset", sort=True):
        right.plot(part["position_bin"].map(centres), part["fraction"], marker="o", label=dataset)
    right.axvspan(0, 1, color="0.9", zorder=0)
    right.set(
        ylim=(0, 1.05),
        xlabel="relative position (0 = lowest brain slice)",
        ylabel="kept fraction",
        title="retained by position",
    )
    right.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    return fig


def _pick(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    if len(frame) <= n:
        return frame
    return frame.iloc[np.unique(np.linspace(0, len(frame) - 1, n).round().astype(int))]


def _montage_rows(stats: pd.DataFrame, n: int) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The top (kept) and bottom rows of the montage, and what the bottom row shows.

    The bottom row shows dropped slices; when nothing was dropped (a 2D image set kept whole)
    it shows more kept ones instead of staying blank, and says so (``"kept"``).
    """
    volumes = stats.groupby("source", sort=True)
    if volumes.size().max() > 1:
        scores = volumes["kept"].agg(lambda k: min(k.sum(), (~k).sum()))
        source = scores.idxmax()
        pool = stats[stats["source"] == source]
    else:  # 2D images: in path order, so that evenly spaced picks cover every class folder
        pool = stats.sort_values(["source", "slice_index"], kind="stable")
    dropped = pool[~pool["kept"]]
    if (dropped["reason"] != "step").any():
        dropped = dropped[dropped["reason"] != "step"]  # thinned neighbours of kept slices
    kept = pool[pool["kept"]]
    if dropped.empty and len(kept) > n:
        both = _pick(kept, 2 * n)
        return both.iloc[0::2], both.iloc[1::2], "kept"
    return _pick(kept, n), _pick(dropped, n), "dropped"


def save_slice_montage(stats: pd.DataFrame, settings: SliceSettings, path: PathLike) -> Any:
    """Kept slices (top row) against dropped slices (bottom row) of one volume (or of 2D images).

    The volume shown is the one with the most slices on both sides; slices are evenly spaced
    among the kept and the dropped (slices dropped only by the step thinning are left out: they
    are neighbours of kept ones), titled with slice index, position, entropy and the reason.
    2D images are titled with their folder (the class of a class-per-folder image set) instead
    of slice index and position; when nothing was dropped both rows show kept images.
    """
    plt = _pyplot()
    n = settings.montage_slices
    kept, bottom, bottom_label = _montage_rows(stats, n)
    cache: dict[str, np.ndarray] = {}

    def image(row: pd.Series) -> np.ndarray:
        if row["source"] not in cache:
            cache[row["source"]] = cut_slices(
                {"path": row["source"], "mask_path": row.get("mask_source", "")}, settings
            ).images
        return cache[row["source"]][int(row["slice_index"])]

    n_cols = max(1, min(n, max(len(kept), len(bottom))))  # no empty columns when there are few images
    fig, axes = plt.subplots(2, n_cols, figsize=(max(1.6 * n_cols, 4.0), 4.4), squeeze=False)
    for r, (label, rows) in enumerate((("kept", kept), (bottom_label, bottom))):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(rows):
                if c == 0:
                    ax.text(0.5, 0.5, f"no slice {label}", ha="center", va="center", transform=ax.transAxes)
                continue
            row = rows.iloc[c]
            ax.imshow(image(row), cmap="gray", vmin=0, vmax=255 if settings.dtype == "uint8" else 1.0)
            why = label if label == "kept" else row["reason"]
            if pd.isna(row["position"]):
                where = Path(str(row["source"])).parent.name or "2D"
            else:
                where = f"z{row['slice_index']} p{row['position']:.2f}"
            ax.set_title(f"{where}\nH{row['entropy']:.2f} {why}", fontsize=7)
    dataset = stats["dataset"].iloc[0]
    if bottom_label == "kept":
        title = f"{dataset}: none dropped, {int(stats['kept'].sum())} kept (both rows kept)"
    else:
        title = f"{dataset}: kept (top) vs dropped (bottom)"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    return fig


def save_slice_figures(stats: pd.DataFrame, settings: SliceSettings, out_dir: PathLike) -> dict[str, Path]:
    """Write ``entropy.png``, ``retained.png``, ``retained.tsv`` and ``montage.png`` into ``out_dir``.

    Args:
        stats: the stats table of one dataset (or several; the montage uses the first one).
        settings: stage settings (montage size, dtype).
        out_dir: output folder.

    Returns:
        ``{name: path}`` of the files written.
    """
    from brainssl.io import write_table

    out = Path(out_dir)
    paths = {name: out / name for name in ("entropy.png", "retained.png", "retained.tsv", "montage.png")}
    save_entropy_histogram(stats, paths["entropy.png"])
    save_retention_figure(stats, paths["retained.png"])
    write_table(paths["retained.tsv"], retention_table(stats))
    first = sorted(stats["dataset"].unique())[0]
    save_slice_montage(stats[stats["dataset"] == first], settings, paths["montage.png"])
    return paths
