"""Slices: axial slices cut from preprocessed volumes, filtered by entropy and position, stored in shards.

:func:`build_slice_shard` writes one shard (memory-mappable ``.npy`` + Parquet index + stats),
:func:`merge_slice_index` joins indexes, :func:`check_store` validates a store before training
and :class:`SliceDataset` reads it with random access (never opening NIfTI). The intensity
mapping and measures are documented in :mod:`brainssl.slices.measures`.
"""

from .dataset import SliceDataset
from .figures import (
    retention_table,
    save_entropy_histogram,
    save_retention_figure,
    save_slice_figures,
    save_slice_montage,
)
from .measures import (
    INTENSITY_MAPPING,
    brain_positions,
    map_intensity,
    position_keep,
    radiological,
    slice_entropy,
    square_resize,
    to_store_dtype,
)
from .plan import (
    LABEL_COLUMNS,
    PLAN_COLUMNS,
    load_shard_rows,
    plan_shards,
    read_input_table,
    subject_labels,
)
from .settings import FIGURE_KEYS, PLAN_KEYS, SHARD_KEYS, SliceSettings
from .store import (
    INDEX_COLUMNS,
    STATS_COLUMNS,
    SliceStoreError,
    build_slice_shard,
    check_store,
    cut_slices,
    merge_slice_index,
    read_index,
)

__all__ = [
    "FIGURE_KEYS",
    "INDEX_COLUMNS",
    "INTENSITY_MAPPING",
    "LABEL_COLUMNS",
    "PLAN_COLUMNS",
    "PLAN_KEYS",
    "SHARD_KEYS",
    "STATS_COLUMNS",
    "SliceDataset",
    "SliceSettings",
    "SliceStoreError",
    "brain_positions",
    "build_slice_shard",
    "check_store",
    "cut_slices",
    "load_shard_rows",
    "map_intensity",
    "merge_slice_index",
    "plan_shards",
    "position_keep",
    "radiological",
    "read_index",
    "read_input_table",
    "retention_table",
    "save_entropy_histogram",
    "save_retention_figure",
    "save_slice_figures",
    "save_slice_montage",
    "slice_entropy",
    "square_resize",
    "subject_labels",
    "to_store_dtype",
]
