"""Print the README's result figures from a results folder, so that none is typed by hand.

Usage::

    python tools/readme_numbers.py [RESULTS] [--section NAME ...] [--check README.md]

``RESULTS`` defaults to ``results`` (a finished ``make demo``). Each section prints the
Markdown the README shows; ``--check`` instead exits 1 naming every section whose text is
not in the given file verbatim. The sections, and the files they read:

* ``pretrain``: encoder, training loss (first -> last step) and kNN probes
  (``pretrain/probe.tsv``, first losses from each ``pretrain/<encoder>/model_card.json``);
  a pretrained encoder's probe is bold where it beats the random encoder of its architecture.
* ``probe-epochs``: the per-epoch kNN probes of every trained encoder (``metrics.jsonl``).
* ``tasks``: the headline metric of each task at label fraction 1.0, mean over seeds
  (``tasks/results.tsv``, rows with status ``ok``); frozen encoders unless the cell names its
  mode (dense tasks: ``finetune/frozen``).
* ``ablation``: the slice-filter ablation, per run its slices and each score with its gain over
  the filtered run (``tasks/ablation.tsv``; empty while ``pretrain.ablation`` is off). Its
  runs are left out of the ``tasks`` table.
* ``skullstrip``: the skull-strip Dice against the truth brain masks
  (``preprocess/<dataset>/qc.tsv``).
* ``claims``: which seed claims the run reproduces, as the workflow wrote it from the paired
  comparisons (``tasks/claims.md``, :func:`brainssl.tasks.conclusions.claims_markdown`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from brainssl.ablation import ablation_variant

DASH = "–"
#: (task, dataset, metric) of each row of the README's task table, in its order.
HEADLINE = (
    ("tumor4", "tumor4", "balanced_accuracy"),
    ("sequence", "brats21", "macro_auc"),
    ("neurodegeneration", "oasis3", "auc"),
    ("molecular_idh", "brats21", "auc"),
    ("molecular_mgmt", "brats21", "auc"),
    ("brain_age", "ixi", "mae"),
    ("brain_age", "oasis3", "mae"),
    ("neurodevelopmental", "abide", "auc"),
    ("stroke_time", "atlas", "mae"),
    ("survival", "brats21", "cox_c_harrell"),
    ("representation", "all", "knn_contrast"),
    ("representation", "all", "position_r2"),
    ("hippocampus_segmentation", "hippocampus", "dice_anterior"),
    ("reconstruction", "fastmri_brain", "psnr_random_2x"),
)
#: Modes shown together in one cell, in this order (the README's ``finetune/frozen``).
MODE_ORDER = ("finetune", "frozen", "scratch", "none")
METHOD_ORDER = ("moco", "dino")
SKULLSTRIP_DATASETS = ("ixi", "oasis3")
SECTIONS = ("pretrain", "probe-epochs", "tasks", "ablation", "skullstrip", "claims")


def _markdown(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _number(value: float, digits: int = 3) -> str:
    return DASH if value is None or not math.isfinite(float(value)) else f"{float(value):.{digits}f}"


def _encoder_key(name: str) -> tuple[int, int, str]:
    """Pretrained (MoCo, DINO, others), then extra encoders, random, classical, scratch."""
    method = name.split("-", 1)[0]
    if method in METHOD_ORDER:
        return 0, METHOD_ORDER.index(method), name
    rank = {"random": 2, "classical": 3, "scratch": 4}.get(method, 1)
    return rank, 0, name


def pretrain_table(results: Path) -> str:
    """The pretraining table: loss first -> last step and each kNN probe, random encoder first."""
    probe = pd.read_csv(results / "pretrain" / "probe.tsv", sep="\t")
    probes = sorted(probe["probe"].unique())
    rows = []
    ordered = sorted(
        probe.drop_duplicates("encoder").itertuples(index=False),
        key=lambda r: (r.arch, r.method != "random", _encoder_key(r.encoder)),
    )
    for run in ordered:
        mine = probe[probe["encoder"] == run.encoder].set_index("probe")
        card_path = results / "pretrain" / run.encoder / "model_card.json"
        metrics = json.loads(card_path.read_text()).get("training_metrics", {}) if card_path.is_file() else {}
        first, last = metrics.get("first_loss"), metrics.get("final_loss", run.final_loss)
        loss = DASH if run.method == "random" else f"{_number(first, 2)} → {_number(last, 2)}"
        cells = []
        for name in probes:
            if name not in mine.index:
                cells.append(DASH)
                continue
            text = _number(mine.loc[name, "accuracy"])
            if run.method != "random" and mine.loc[name, "accuracy"] > mine.loc[name, "random_accuracy"]:
                text = f"**{text}**"
            cells.append(text)
        label = f"`{run.encoder}`" + (" (baseline)" if run.method == "random" else "")
        rows.append([label, loss, *cells])
    header = ["encoder", "training loss, first → last step", *(f"kNN {p}" for p in probes)]
    return _markdown(header, rows)


def probe_epochs(results: Path) -> str:
    """One line per trained encoder: its kNN probes after each epoch (``metrics.jsonl``)."""
    probe = pd.read_csv(results / "pretrain" / "probe.tsv", sep="\t")
    names = sorted(probe["probe"].unique())
    lines = []
    for encoder in sorted(probe.loc[probe["method"] != "random", "encoder"].unique(), key=_encoder_key):
        path = results / "pretrain" / encoder / "metrics.jsonl"
        if not path.is_file():
            continue
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        epochs = [r for r in records if r.get("kind") == "probe"]
        steps = [" / ".join(_number(r.get(f"knn/{n}", math.nan)) for n in names) for r in epochs]
        lines.append(f"- `{encoder}`: {' → '.join(steps)} ({' / '.join(names)})")
    return "\n".join(lines)


def _cell(values: pd.Series) -> str:
    """``value`` or ``v1 / v2 (mode1/mode2)``; a mode other than frozen, scratch or classical is named."""
    modes = sorted(
        values.index, key=lambda m: (MODE_ORDER.index(m) if m in MODE_ORDER else len(MODE_ORDER), m)
    )
    text = " / ".join(_number(values[m]) for m in modes)
    if len(modes) > 1 or modes[0] not in ("frozen", "scratch", "classical", "none"):
        text += f" ({'/'.join(modes)})"
    return text


def tasks_table(results: Path, headline: Sequence[tuple[str, str, str]] = HEADLINE) -> str:
    """The task table: headline metrics at label fraction 1.0, mean over seeds, per encoder."""
    frame = pd.read_csv(results / "tasks" / "results.tsv", sep="\t", keep_default_na=False, na_values=[""])
    keep = (frame["status"] == "ok") & (frame["label_fraction"].astype(float) == 1.0)
    if "shots" in frame.columns:  # few-shot rows (labelled subjects per class) are another table
        keep &= pd.to_numeric(frame["shots"], errors="coerce").fillna(0) == 0
    frame = frame[keep & ~frame["encoder"].map(lambda e: bool(ablation_variant(e)))]
    means = frame.groupby(["task", "dataset", "metric", "encoder", "mode"])["value"].mean()
    wanted = [key for key in headline if key in means.index.droplevel([3, 4])]
    encoders = sorted(
        {e for key in wanted for e in means.loc[key].index.get_level_values(0)}, key=_encoder_key
    )
    rows = []
    for key in wanted:
        cells = means.loc[key]
        row = [" ".join(key)]
        for encoder in encoders:
            row.append(_cell(cells.loc[encoder]) if encoder in cells.index.get_level_values(0) else DASH)
        rows.append(row)
    header = ["task / metric (fraction 1.0, mean over seeds)", *(f"`{e}`" for e in encoders)]
    return _markdown(header, rows)


def ablation_table(results: Path) -> str:
    """The ablation table: each run's slices, then per score its value and its gain over filtered."""
    path = results / "tasks" / "ablation.tsv"
    if not path.is_file():
        return ""
    frame = pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""])
    runs = frame.drop_duplicates("variant").set_index("variant")
    variants = list(runs.index)  # filtered, its variants, random: the table's order

    def slices(run: pd.Series) -> str:
        counts = (run["pool_slices"], run["slices_seen"], run["steps"])
        return DASH if not run["steps"] else " / ".join(f"{n:,}" for n in counts)

    rows = [["slices drawn from / distinct seen / steps", *(slices(runs.loc[v]) for v in variants)]]
    for (task, dataset, metric), part in frame.groupby(["task", "dataset", "metric"], sort=False):
        by = part.set_index("variant")
        cells = []
        for variant in variants:
            if variant not in by.index:
                cells.append(DASH)
                continue
            row = by.loc[variant]
            text = _number(row["value"])
            if math.isfinite(row["gain_vs_filtered"]):
                text += f" ({row['gain_vs_filtered']:+.3f} [{row['gain_low']:+.3f}, {row['gain_high']:+.3f}])"
            cells.append(text)
        rows.append([f"{task} {dataset} {metric}", *cells])
    header = ["score (largest label fraction)", *(f"{v} `{runs.loc[v, 'encoder']}`" for v in variants)]
    return _markdown(header, rows)


def _strip_method(results: Path, qc: pd.DataFrame) -> str:
    """The skull-strip method of a dataset, from its first session's ``qc.json``."""
    for png in qc.get("qc_png", pd.Series(dtype=str)).dropna().astype(str):
        for base in (results.parent, Path.cwd(), Path("/")):
            path = (base / png).with_name(Path(png).name.replace("qc.png", "qc.json"))  # <stem>_qc.json
            if path.is_file():
                return str(json.loads(path.read_text()).get("skull_strip", {}).get("method", "?"))
    return "?"


def skullstrip_row(results: Path, datasets: Sequence[str] = SKULLSTRIP_DATASETS) -> str:
    """The README's preprocessing row: median and minimum skull-strip Dice per dataset."""
    found = []
    for dataset in datasets:
        path = results / "preprocess" / dataset / "qc.tsv"
        if path.is_file():
            qc = pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""])
            found.append((dataset, qc, pd.to_numeric(qc["dice"], errors="coerce").dropna()))
    if not found:
        return ""
    methods = sorted({_strip_method(results, qc) for _, qc, _ in found})
    counts = " / ".join(f"{d} {len(dice)}" for d, _, dice in found)
    label = f"skull-strip Dice vs truth brain masks, T1w, `{'/'.join(methods)}` ({counts} sessions)"
    medians = " / ".join(_number(dice.median()) for _, _, dice in found)
    minima = " / ".join(_number(dice.min()) for _, _, dice in found)
    return f"| {label} | median {medians}, min {minima} |"


def claims_statement(results: Path) -> str:
    """The seed-claims statement of the run (``tasks/claims.md``), without its trailing newline."""
    return (results / "tasks" / "claims.md").read_text(encoding="utf-8").rstrip("\n")


def sections(results: Path, names: Sequence[str] = SECTIONS) -> dict[str, str]:
    """The text of every requested section, by name."""
    makers = {
        "pretrain": pretrain_table,
        "probe-epochs": probe_epochs,
        "tasks": tasks_table,
        "ablation": ablation_table,
        "skullstrip": skullstrip_row,
        "claims": claims_statement,
    }
    return {name: makers[name](results) for name in names}


def render(results: Path, names: Sequence[str] = SECTIONS) -> str:
    """Every requested section, each under a ``<!-- name -->`` marker line."""
    return "\n\n".join(f"<!-- {name} -->\n{text}" for name, text in sections(results, names).items()) + "\n"


def stale(results: Path, readme: Path, names: Sequence[str] = SECTIONS) -> list[str]:
    """The sections whose text is not in ``readme`` verbatim."""
    text = readme.read_text(encoding="utf-8")
    return [name for name, block in sections(results, names).items() if block not in text]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print the sections from a results folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default="results", type=Path, help="results folder")
    parser.add_argument("--section", action="append", choices=SECTIONS, help="only these sections")
    parser.add_argument("--check", type=Path, help="exit 1 unless this file holds every section verbatim")
    args = parser.parse_args(argv)
    names = args.section or SECTIONS
    if args.check is not None:
        missing = stale(args.results, args.check, names)
        for name in missing:
            sys.stderr.write(f"{args.check}: section {name} differs from {args.results}\n")
        return 1 if missing else 0
    sys.stdout.write(render(args.results, names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
