"""Conclusions from the paired comparisons: which encoder beats which, where, and the seed claims.

Every frozen-feature task writes ``comparisons.tsv``: per metric, label budget (fraction or
shots), label draw (seed) and pair of encoders, the paired subject-bootstrap difference with its
95% interval (:func:`~brainssl.tasks.results.paired_bootstrap`). :func:`conclusions` turns the
merged table into one row per pair, metric and budget: the *gain* of ``encoder`` over
``baseline`` oriented so that positive is better (a lower MAE is a gain), the mean over draws
of the difference and of its interval bounds, and a verdict — ``better`` (interval above 0),
``worse`` (below), ``inconclusive`` (it holds 0) or ``undefined``.

:func:`seed_claims` then judges the two seed claims on each task's primary metric
(:data:`PRIMARY_METRICS`):

1. *Tailored self-supervised pretraining beats natural-image and random-initialised
   baselines* (Huang et al.): MoCo v3 and DINO against the random-initialised encoders and
   any natural-image encoder (a ``pretrain.natural`` baseline), with all training subjects.
2. *A frozen self-distilled encoder is strongest when labels are scarce* (BrainDINO): DINO
   against every other frozen encoder at the few-shot budgets.

A claim is ``yes`` when the favourable verdicts are a majority of its comparisons and none is
unfavourable, ``no`` when the unfavourable ones are a majority, ``inconclusive`` otherwise and
``untested`` without comparisons. :func:`claims_markdown` writes the statement the README
quotes; ``python -m brainssl.tasks.conclusions results/tasks/conclusions.tsv`` prints it.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from brainssl.ablation import ablation_variant
from brainssl.io import write_table

__all__ = [
    "CONCLUSION_COLUMNS",
    "PRIMARY_METRICS",
    "VERDICTS",
    "Claim",
    "budget_text",
    "claims_markdown",
    "conclusions",
    "display_name",
    "encoder_role",
    "higher_is_better",
    "oriented",
    "read_conclusions",
    "seed_claims",
    "write_conclusions",
]

#: Per task and dataset, the first of these among its compared metrics is the one claims use.
PRIMARY_METRICS = ("balanced_accuracy", "macro_auc", "auc", "mae", "accuracy", "macro_f1")
#: Verdict of a row: the encoder's interval above 0, below 0, holding 0, or not computable.
VERDICTS = ("better", "worse", "inconclusive", "undefined")
_KEYS = ("task", "dataset", "metric", "label_fraction", "shots", "encoder", "baseline")
CONCLUSION_COLUMNS = (
    *_KEYS,
    "primary",
    "draws",
    "gain",
    "ci_low",
    "ci_high",
    "p_value",
    "draws_better",
    "draws_worse",
    "verdict",
)
_LOWER_IS_BETTER = ("mae", "mae_corrected", "ibs", "logrank_p")
_ROLE_NAMES = {
    "moco": "MoCo v3",
    "dino": "DINO",
    "random": "random init",
    "scratch": "supervised from scratch",
    "classical": "classical features",
}
_VARIANT_NAMES = {"unfiltered": "unfiltered slices", "subset": "random subset"}


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (not for MAE, IBS, log-rank p)."""
    return not any(metric == m or metric.endswith(f"_{m}") for m in _LOWER_IS_BETTER)


def encoder_role(name: str) -> str:
    """An encoder's role: moco, dino, random, scratch, classical, ablation or natural.

    Pretrained encoders are named ``<method>-<arch>``; the slice-filter ablation's runs
    ``<method>-<arch>-<variant>`` (:mod:`brainssl.ablation`) are kept out of the seed claims, which
    are about the ordinary runs; an encoder of any other name is an ``embed.extra`` encoder, the
    natural-image baselines' place.
    """
    if name == "classical":
        return "classical"
    if ablation_variant(name):
        return "ablation"
    prefix = name.split("-", 1)[0]
    return prefix if prefix in ("moco", "dino", "random", "scratch") and "-" in name else "natural"


def display_name(name: str) -> str:
    """A reader's name of an encoder: ``moco-vit_tiny`` -> ``MoCo v3 (vit_tiny)``."""
    role = encoder_role(name)
    if role == "natural":
        return name
    if role == "classical":
        return _ROLE_NAMES[role]
    if role == "ablation":
        method, arch, variant = name.split("-")
        return f"{_ROLE_NAMES[method]} ({arch}, {_VARIANT_NAMES[variant]})"
    return f"{_ROLE_NAMES[role]} ({name.split('-', 1)[1]})"


def budget_text(label_fraction: float, shots: int) -> str:
    """``5 shots per class``, ``all training subjects`` or ``10% of the training subjects``."""
    if shots:
        return f"{int(shots)} shots per class"
    if math.isclose(float(label_fraction), 1.0):
        return "all training subjects"
    return f"{float(label_fraction):.0%} of the training subjects"


def _verdict(low: float, high: float) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "undefined"
    return "better" if low > 0 else "worse" if high < 0 else "inconclusive"


def _primary(frame: pd.DataFrame) -> pd.Series:
    """Whether each row's metric is its task and dataset's primary metric."""
    primary = pd.Series(False, index=frame.index)
    for _, part in frame.groupby(["task", "dataset"], sort=False):
        metrics = set(part["metric"])
        chosen = next((m for m in PRIMARY_METRICS if m in metrics), min(metrics))
        primary[part.index[part["metric"] == chosen]] = True
    return primary


def conclusions(comparisons: pd.DataFrame) -> pd.DataFrame:
    """One row per task, dataset, metric, label budget and encoder pair, over the label draws.

    Args:
        comparisons: the merged ``comparisons.tsv`` (columns of
            :data:`~brainssl.tasks.pairs.COMPARISON_COLUMNS`; ``shots`` 0 where absent).

    Returns:
        Columns :data:`CONCLUSION_COLUMNS`: ``gain`` and its interval are the mean over draws of
        the oriented difference and bounds (positive = ``encoder`` better), ``p_value`` their
        median, ``draws_better``/``draws_worse`` the draws whose own interval excludes 0.
    """
    if comparisons.empty:
        return pd.DataFrame(columns=list(CONCLUSION_COLUMNS))
    frame = comparisons.copy()
    if "shots" not in frame:
        frame["shots"] = 0
    frame["shots"] = frame["shots"].fillna(0).astype(int)
    sign = np.where([higher_is_better(m) for m in frame["metric"]], 1.0, -1.0)
    diff, low, high = (
        pd.to_numeric(frame[c], errors="coerce").to_numpy(float) for c in ("diff", "ci_low", "ci_high")
    )
    frame["gain"] = sign * diff
    frame["ci_low"] = np.where(sign > 0, low, -high)
    frame["ci_high"] = np.where(sign > 0, high, -low)
    frame["draw_better"] = frame["ci_low"] > 0
    frame["draw_worse"] = frame["ci_high"] < 0
    grouped = frame.groupby(list(_KEYS), dropna=False, sort=True)
    table = grouped.agg(
        draws=("gain", "size"),
        gain=("gain", "mean"),
        ci_low=("ci_low", "mean"),
        ci_high=("ci_high", "mean"),
        p_value=("p_value", "median"),
        draws_better=("draw_better", "sum"),
        draws_worse=("draw_worse", "sum"),
    ).reset_index()
    table["verdict"] = [_verdict(lo, hi) for lo, hi in zip(table["ci_low"], table["ci_high"], strict=True)]
    table["primary"] = _primary(table)
    table = table.astype({"shots": int, "draws": int, "draws_better": int, "draws_worse": int})
    order = ["task", "dataset", "metric", "encoder", "baseline", "shots", "label_fraction"]
    return table.sort_values(order, kind="stable").reset_index(drop=True)[list(CONCLUSION_COLUMNS)]


def write_conclusions(comparisons: pd.DataFrame, path: str | Path) -> pd.DataFrame:
    """Write :func:`conclusions` of ``comparisons`` as a TSV (atomically); return the table."""
    table = conclusions(comparisons)
    write_table(path, table)
    return table


def read_conclusions(path: str | Path) -> pd.DataFrame:
    """Read a conclusions TSV, or compute it from a comparisons TSV (no ``verdict`` column)."""
    frame = pd.read_csv(path, sep="\t")
    if frame.empty and not len(frame.columns):
        return pd.DataFrame(columns=list(CONCLUSION_COLUMNS))
    if "verdict" not in frame:
        return conclusions(frame)
    return frame.astype({"primary": bool, "shots": int})


_FLIP = {"better": "worse", "worse": "better"}


def oriented(
    table: pd.DataFrame, first: Callable[[str], bool], second: Callable[[str], bool]
) -> pd.DataFrame:
    """The rows comparing an encoder with ``first(name)`` against one with ``second(name)``.

    Rows stored the other way round are flipped (gain and bounds negated, verdicts and draw
    counts swapped), so that ``encoder`` is always the ``first`` one.
    """
    if table.empty:
        return table.copy()
    forward = table[table["encoder"].map(first) & table["baseline"].map(second)]
    back = table[table["baseline"].map(first) & table["encoder"].map(second)].copy()
    back["encoder"], back["baseline"] = back["baseline"].to_numpy(), back["encoder"].to_numpy()
    back["gain"] = -back["gain"]
    back["ci_low"], back["ci_high"] = -back["ci_high"].to_numpy(), -back["ci_low"].to_numpy()
    back["draws_better"], back["draws_worse"] = (
        back["draws_worse"].to_numpy(),
        back["draws_better"].to_numpy(),
    )
    back["verdict"] = back["verdict"].map(lambda v: _FLIP.get(v, v))
    return pd.concat([forward, back]).sort_values(
        ["task", "dataset", "shots", "label_fraction", "encoder", "baseline"], kind="stable"
    )


@dataclass(frozen=True)
class Claim:
    """One seed claim judged on the conclusions table."""

    key: str
    statement: str
    source: str
    scope: str
    """Which comparisons count (encoders, budgets, metric)."""
    verdict: str
    """``yes``, ``no``, ``inconclusive`` or ``untested``."""
    favourable: int = 0
    unfavourable: int = 0
    total: int = 0
    evidence: tuple[str, ...] = field(default_factory=tuple)


def _judge(rows: pd.DataFrame) -> tuple[str, int, int, int]:
    total = len(rows)
    fav = int((rows["verdict"] == "better").sum()) if total else 0
    unfav = int((rows["verdict"] == "worse").sum()) if total else 0
    if total == 0:
        return "untested", 0, 0, 0
    if fav > total / 2 and unfav == 0:
        return "yes", fav, unfav, total
    if unfav > total / 2:
        return "no", fav, unfav, total
    return "inconclusive", fav, unfav, total


def _where(task: str, dataset: str, metric: str) -> str:
    on = task if dataset in ("", task) else f"{task} ({dataset})"
    return f"{on} {metric.replace('_', ' ')}"


def _evidence(row: pd.Series) -> str:
    verb = {"better": "beats", "worse": "trails", "inconclusive": "does not separate from"}.get(
        str(row["verdict"]), "is not comparable with"
    )
    gain, low, high = (float(row[c]) for c in ("gain", "ci_low", "ci_high"))
    interval = f"[{low:+.3g}, {high:+.3g}]" if math.isfinite(low) and math.isfinite(high) else "[no interval]"
    direction = "" if higher_is_better(str(row["metric"])) else " (lower is better; gain = reduction)"
    return (
        f"{display_name(row['encoder'])} {verb} {display_name(row['baseline'])} on "
        f"{_where(row['task'], row['dataset'], row['metric'])} with "
        f"{budget_text(row['label_fraction'], int(row['shots']))}: gain {gain:+.3g} {interval}{direction}, "
        f"{int(row['draws_better'])}/{int(row['draws'])} draws better"
    )


def _full_budget(table: pd.DataFrame) -> pd.DataFrame:
    """Rows at each task and dataset's largest label fraction (no shots)."""
    fractions = table[table["shots"] == 0]
    if fractions.empty:
        return fractions
    largest = fractions.groupby(["task", "dataset"])["label_fraction"].transform("max")
    return fractions[np.isclose(fractions["label_fraction"], largest)]


def _roles(*roles: str) -> Callable[[str], bool]:
    """Whether an encoder name has one of ``roles`` (:func:`encoder_role`)."""
    return lambda name: encoder_role(name) in roles


def seed_claims(table: pd.DataFrame) -> list[Claim]:
    """Judge the two seed claims on the primary metric of every task (see the module docstring)."""
    primary = table[table["primary"].astype(bool)] if len(table) else table
    naturals = sorted(
        {n for n in (*table.get("encoder", []), *table.get("baseline", [])) if encoder_role(n) == "natural"}
    )
    references = "random-initialised encoders" + (
        f" and natural-image encoders ({', '.join(naturals)})"
        if naturals
        else " (no natural-image encoder in pretrain.natural)"
    )
    claims = []
    rows = oriented(_full_budget(primary), _roles("moco", "dino"), _roles("random", "natural"))
    verdict, fav, unfav, total = _judge(rows)
    claims.append(
        Claim(
            "ssl_beats_baselines",
            "Tailored self-supervised pretraining (MoCo v3, DINO) beats natural-image and "
            "random-initialised baselines",
            "Huang et al.",
            f"MoCo v3 and DINO against the {references}, each task's primary metric, all training subjects",
            verdict,
            fav,
            unfav,
            total,
            tuple(_evidence(r) for _, r in rows.iterrows()),
        )
    )
    few = primary[primary["shots"] > 0] if len(primary) else primary
    rows = oriented(few, _roles("dino"), _roles("moco", "random", "classical", "natural"))
    verdict, fav, unfav, total = _judge(rows)
    claims.append(
        Claim(
            "dino_strongest_scarce",
            "A frozen self-distilled (DINO) encoder is strongest when labels are scarce",
            "BrainDINO",
            "DINO against every other frozen encoder, each task's primary metric, at every reported "
            "few-shot budget (labelled subjects per class)",
            verdict,
            fav,
            unfav,
            total,
            tuple(_evidence(r) for _, r in rows.iterrows()),
        )
    )
    return claims


def claims_markdown(table: pd.DataFrame, claims: Sequence[Claim] | None = None, source: str = "") -> str:
    """The README's statement of which seed claims the run reproduces, as Markdown."""
    claims = seed_claims(table) if claims is None else claims
    origin = f" from `{source}`" if source else ""
    lines = [
        f"Which seed claims this run reproduces (generated{origin} by "
        "`python -m brainssl.tasks.conclusions`; paired subject bootstrap, 95% intervals, mean over "
        "label draws; a claim is *yes* when most of its comparisons favour it and none goes against "
        "it, *no* when most go against it):",
        "",
    ]
    for number, claim in enumerate(claims, 1):
        counts = (
            f"{claim.favourable} of {claim.total} comparisons favourable, {claim.unfavourable} unfavourable"
            if claim.total
            else "no comparison was reported"
        )
        lines.append(f"{number}. **{claim.statement}** ({claim.source}): **{claim.verdict}** — {counts}.")
        lines.append(f"   Scope: {claim.scope}.")
        lines += [f"   - {line}" for line in claim.evidence]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the seed-claims statement of a conclusions (or comparisons) TSV."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("table", nargs="?", default="results/tasks/conclusions.tsv")
    args = parser.parse_args(argv)
    sys.stdout.write(claims_markdown(read_conclusions(args.table), source=args.table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
