"""Datasets: synthetic demo data in six native layouts, and manifests read from native layouts.

Keys: ``ixi``, ``brats21``, ``fastmri_brain``, ``oasis3``, ``tumor4``, ``hippocampus``.
The manifest schema is documented in :mod:`brainssl.datasets.manifest`.

The names below load their submodule on first use (:mod:`brainssl._lazy`): the workflow
imports :data:`DATASETS` and :func:`read_manifest` while Snakemake parses it, which must not
import the layouts' nibabel, h5py, scipy and Pillow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from brainssl._lazy import attach
from brainssl.datasets.names import DATASETS

if TYPE_CHECKING:
    from brainssl.datasets.catalog import (
        build_manifest,
        demo_subject_ids,
        finalize_demo,
        generate_demo_shard,
        subject_seed,
    )
    from brainssl.datasets.download import fetch_ixi
    from brainssl.datasets.layouts.errors import DatasetInfo, DatasetLayoutError, SubjectError
    from brainssl.datasets.manifest import (
        FAILURE_COLUMNS,
        MANIFEST_COLUMNS,
        check_manifest,
        merge_manifests,
        pseudonymize,
        read_manifest,
    )
    from brainssl.datasets.montage import save_montage

__getattr__, __dir__ = attach(
    __name__,
    {
        "build_manifest": "catalog",
        "demo_subject_ids": "catalog",
        "finalize_demo": "catalog",
        "generate_demo_shard": "catalog",
        "subject_seed": "catalog",
        "fetch_ixi": "download",
        "DatasetInfo": "layouts.errors",
        "DatasetLayoutError": "layouts.errors",
        "SubjectError": "layouts.errors",
        "FAILURE_COLUMNS": "manifest",
        "MANIFEST_COLUMNS": "manifest",
        "check_manifest": "manifest",
        "merge_manifests": "manifest",
        "pseudonymize": "manifest",
        "read_manifest": "manifest",
        "save_montage": "montage",
    },
)

__all__ = [
    "DATASETS",
    "FAILURE_COLUMNS",
    "MANIFEST_COLUMNS",
    "DatasetInfo",
    "DatasetLayoutError",
    "SubjectError",
    "build_manifest",
    "check_manifest",
    "demo_subject_ids",
    "fetch_ixi",
    "finalize_demo",
    "generate_demo_shard",
    "merge_manifests",
    "pseudonymize",
    "read_manifest",
    "save_montage",
    "subject_seed",
]
