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
from pathlib import Path
from typing import Any

from brainssl.io import atomic_path, write_text

__all__ = ["write_metric_tables", "TensorBoardLog", "plot_curves"]


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


def plot_curves(records: list[dict[str, Any]], path: str | Path) -> None:
    """Draw loss, learning rate, momentum and kNN accuracy against step into one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r["kind"] == "train"]
    probes = [r for r in records if r["kind"] == "probe"]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
    for ax, key in zip(axes[:3], ("loss", "lr", "momentum"), strict=True):
        ax.plot([r["step"] for r in train], [r.get(key, float("nan")) for r in train])
        ax.set_title(key)
        ax.set_xlabel("step")
    for key in sorted({k for r in probes for k in r if k.startswith("knn/")}):
        axes[3].plot(
            [r["step"] for r in probes], [r.get(key, float("nan")) for r in probes], marker="o", label=key
        )
    axes[3].set_title("kNN accuracy")
    axes[3].set_xlabel("step")
    if probes:
        axes[3].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
