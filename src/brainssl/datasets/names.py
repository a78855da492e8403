"""The dataset keys in registry order, importable without any layout's dependencies.

Snakemake reads them while it parses the workflow (wildcard constraints, the enabled
datasets); :data:`brainssl.datasets.catalog.LAYOUTS` holds one layout module per key, in
the same order (a test holds the two together).
"""

from __future__ import annotations

__all__ = ["DATASETS"]

DATASETS: tuple[str, ...] = ("ixi", "brats21", "fastmri_brain", "oasis3", "tumor4", "hippocampus")
