"""The dataset keys in registry order, importable without any layout's dependencies.

Snakemake reads them while it parses the workflow (wildcard constraints, the enabled
datasets); :data:`brainssl.datasets.catalog.LAYOUTS` holds one layout module per key, in
the same order (a test holds the two together).
"""

from __future__ import annotations

__all__ = ["BIDS_NAME_PATTERN", "DATASETS"]

DATASETS: tuple[str, ...] = ("ixi", "brats21", "fastmri_brain", "oasis3", "tumor4", "hippocampus")
#: A user-named dataset (``kind: bids``): lower case, digits and '_', not a registered dataset
#: nor a section key (the datasets section excludes those; per-dataset overrides name one).
BIDS_NAME_PATTERN = "^[a-z][a-z0-9_]{0,39}$"
