"""The files a frozen-feature task rule writes: results table, paired comparisons and figures.

:func:`write_task_outputs` turns a :class:`~brainssl.tasks.frozen.TaskOutcome` into the rule's
outputs; the survival tasks' Kaplan-Meier figure of risk halves comes from
:func:`risk_group_curves`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from brainssl.io import write_table

from .figures import save_fraction_curves, save_risk_group_curves
from .frozen import TaskOutcome
from .metrics import logrank_groups
from .pairs import COMPARISON_COLUMNS
from .results import write_results

__all__ = ["risk_group_curves", "write_task_outputs"]

logger = logging.getLogger(__name__)


def risk_group_curves(outcome: TaskOutcome) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """Per encoder of a survival target: the survival of tested subjects, their high-risk half, log-rank p.

    Uses the first survival model's out-of-fold risks at the largest reported label fraction,
    seed 0 (no curve where every fraction's cell was skipped).
    """
    curves = {}
    for (task, dataset, encoder), preds in sorted(outcome.predictions.items()):
        units = outcome.units.get((task, dataset))
        if units is None or not units.target.dtype.names or ":" in encoder:
            continue
        reported = [k for k, p in preds.items() if k[1] == 0 and k[0] > 0 and not p.short]
        if not reported:
            continue
        pred = preds[max(reported)]
        tested = pred.tested
        try:
            high, p_value = logrank_groups(units.target[tested], pred.values[tested])
        except ValueError as err:
            logger.warning("no risk groups for %s: %s", encoder, err)
            continue
        curves[f"{encoder} ({dataset})"] = (units.target[tested], high, p_value)
    return curves


def write_task_outputs(
    outcome: TaskOutcome,
    results: str | Path,
    comparisons: str | Path,
    curves: str | Path,
    risk_groups: str | Path | None = None,
) -> pd.DataFrame:
    """Write a task's results table, paired comparisons and figures (all atomically).

    Returns:
        The results table as written.
    """
    table = write_results(outcome.rows, results)
    frame = pd.DataFrame(outcome.comparisons, columns=list(COMPARISON_COLUMNS))
    order = list(COMPARISON_COLUMNS[: COMPARISON_COLUMNS.index("baseline") + 1])
    write_table(comparisons, frame.sort_values(order, kind="stable"))
    save_fraction_curves(table, curves)
    if risk_groups is not None:
        save_risk_group_curves(risk_group_curves(outcome), risk_groups)
    return table
