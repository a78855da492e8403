"""What the pretraining loop writes about itself: metric tables, TensorBoard scalars, curves.

Split from :mod:`brainssl.pretrain.loop` so that the training step and its reporting live
apart. The loop keeps its records (dicts with ``kind`` ``train`` or ``probe``, ``step`` and
``epoch``) in memory and rewrites these files from them, so a resumed run's files hold
exactly the records of the steps it has kept.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from brainssl.io import atomic_path, write_text

__all__ = ["write_metric_tables", "TensorBoardLog", "plot_curves", "redraw_curves"]


def write_metric_tables(records: list[dict[str, Any]], out_dir: Path) -> None:
    """Rewrite ``metrics.jsonl`` (every record) and ``metrics.csv`` (train records) atomically."""
    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    write_text(out_dir / "metrics.jsonl", lines)
    train = [r for r in records if r["kind"] == "train"]
    buf = io.StringIO()
    keys = sorted({k for r in train for k in r})
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(train)
    write_text(out_dir / "metrics.csv", buf.getvalue())


class TensorBoardLog:
    """Append records to a TensorBoard log as scalars, each record once.

    Args:
        log_dir: the event folder; opened on the first :meth:`add`, purging events from the
            first record's step on (those of a run that was resumed from an earlier step).
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._writer: Any = None
        self._done = 0

    def add(self, records: list[dict[str, Any]]) -> None:
        """Write the numeric fields of the records not yet written and flush."""
        from torch.utils.tensorboard import SummaryWriter

        if self._writer is None:
            first = records[self._done]["step"] if self._done < len(records) else 0
            self._writer = SummaryWriter(str(self.log_dir), purge_step=first)
        for row in records[self._done :]:
            for key, value in row.items():
                if key not in ("kind", "step", "epoch") and isinstance(value, int | float):
                    self._writer.add_scalar(key if "/" in key else f"train/{key}", value, row["step"])
        self._done = len(records)
        self._writer.flush()

    def close(self) -> None:
        """Close the event file, if one was opened."""
        if self._writer is not None:
            self._writer.close()


def plot_curves(
    records: list[dict[str, Any]], path: str | Path, reference: Mapping[str, float] | None = None
) -> Any:
    """Draw loss, learning rate, momentum and kNN accuracy against step into one PNG.

    Args:
        records: the loop's records (``kind`` ``train`` or ``probe``).
        path: destination PNG.
        reference: ``{probe: accuracy}`` of the random-initialised encoder of the same
            architecture on the same probe sets; each is drawn as a dotted horizontal line in
            its probe's colour, labelled ``random: <probe>``, so that the kNN panel shows how
            far training moved the encoder from chance features.

    Returns:
        The (closed) matplotlib figure, for inspection.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r["kind"] == "train"]
    probes = [r for r in records if r["kind"] == "probe"]
    reference = {k: float(v) for k, v in (reference or {}).items() if math.isfinite(float(v))}
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
    for ax, key in zip(axes[:3], ("loss", "lr", "momentum"), strict=True):
        ax.plot([r["step"] for r in train], [r.get(key, float("nan")) for r in train])
        ax.set_title(key)
        ax.set_xlabel("step")
    names = sorted(
        {k.removeprefix("knn/") for r in probes for k in r if k.startswith("knn/")} | set(reference)
    )
    for k, name in enumerate(names):
        colour = f"C{k % 10}"
        key = f"knn/{name}"
        if any(key in r for r in probes):
            axes[3].plot(
                [r["step"] for r in probes],
                [r.get(key, float("nan")) for r in probes],
                marker="o",
                color=colour,
                label=key,
            )
        if name in reference:
            axes[3].axhline(
                reference[name], color=colour, ls=":", lw=1.2, label=f"random: {name}", gid="random"
            )
    axes[3].set_title("kNN accuracy" + (" (dotted: random encoder)" if reference else ""))
    axes[3].set_xlabel("step")
    if names:
        axes[3].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    return fig


def redraw_curves(out_dir: str | Path, random_card: str | Path | None) -> Any:
    """Redraw a finished run's ``curves.png`` from its ``metrics.jsonl``, with the random baseline.

    Args:
        out_dir: the run folder (holds ``metrics.jsonl``; ``curves.png`` is rewritten).
        random_card: the ``model_card.json`` of the random-initialised encoder of the same
            architecture (its ``knn_probe``); None draws no reference line.

    Returns:
        The (closed) matplotlib figure.
    """
    out = Path(out_dir)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    reference = json.loads(Path(random_card).read_text()).get("knn_probe", {}) if random_card else {}
    return plot_curves(records, out / "curves.png", reference=reference)
