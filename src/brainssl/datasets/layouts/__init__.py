"""One module per native dataset layout: a demo writer and a reader for real or demo data.

Each layout module offers the same names: ``INFO`` (what and where), ``native_id(index)``,
``subject_params(index, grid_mm)``, ``write_subject(root, index, native_id, make)``,
``finalize(root, shard)`` and ``read(root) -> (rows, failures)``.
"""

from brainssl.datasets.layouts import brats, fastmri, hippocampus, ixi, oasis, tumor4
from brainssl.datasets.layouts.errors import DatasetInfo, DatasetLayoutError, SubjectError

__all__ = [
    "DatasetInfo",
    "DatasetLayoutError",
    "SubjectError",
    "brats",
    "fastmri",
    "hippocampus",
    "ixi",
    "oasis",
    "tumor4",
]
