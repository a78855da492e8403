"""Downstream tasks: light heads on frozen embeddings, baselines, statistics and one results table.

:mod:`brainssl.tasks.results` defines the table every task rule writes (one row per task,
dataset, encoder, mode, label fraction, seed and metric, with bootstrap confidence
intervals over test subjects and a status/reason for skipped work). Every task is one entry
of :mod:`brainssl.tasks.registry`, which the workflow reads at parse time. Task modules
import their heavy dependencies themselves, so importing this package stays cheap.
"""

from .results import (
    RESULT_COLUMNS,
    SORT_COLUMNS,
    STATUSES,
    bootstrap_ci,
    label_fraction_subjects,
    paired_bootstrap,
    result_row,
    skipped_rows,
    write_results,
)

__all__ = [
    "RESULT_COLUMNS",
    "SORT_COLUMNS",
    "STATUSES",
    "bootstrap_ci",
    "label_fraction_subjects",
    "paired_bootstrap",
    "result_row",
    "skipped_rows",
    "write_results",
]
