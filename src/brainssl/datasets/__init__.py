"""Datasets: synthetic demo data in six native layouts, and manifests read from native layouts.

Keys: ``ixi``, ``brats21``, ``fastmri_brain``, ``oasis3``, ``tumor4``, ``hippocampus``.
The manifest schema is documented in :mod:`brainssl.datasets.manifest`.
"""

from brainssl.datasets.catalog import (
    DATASETS,
    build_manifest,
    demo_subject_ids,
    finalize_demo,
    generate_demo_shard,
    subject_seed,
)
from brainssl.datasets.download import fetch_ixi
from brainssl.datasets.layouts.base import DatasetInfo, DatasetLayoutError, SubjectError
from brainssl.datasets.manifest import (
    FAILURE_COLUMNS,
    MANIFEST_COLUMNS,
    check_manifest,
    merge_manifests,
    pseudonymize,
    read_manifest,
)
from brainssl.datasets.montage import save_montage

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
