"""Preprocessing: RAS resampling, N4, skull stripping, intensity normalisation, crop, QC.

Each step is a pure function on nibabel images / numpy arrays (SimpleITK inside);
:func:`preprocess_session` chains them for one session and :func:`preprocess_shard`
runs a shard of manifest rows to disk.
"""

from .bias import head_mask, n4_correct
from .cohort import (
    QC_COLUMNS,
    fit_landmarks,
    load_landmarks,
    merge_shards,
    plot_qc_summary,
    read_shard_table,
    save_landmarks,
)
from .intensity import NyulLandmarks, apply_nyul, clip_percentiles, fit_nyul, whitestripe, zscore
from .qc import bias_strength, dice, qc_flags, qc_png, qc_record, snr_estimate, touches_fov
from .session import PreprocessError, PreprocessResult, preprocess_session, validate_image
from .settings import N4Settings, NormalisationSettings, PreprocessSettings, QCRules, RegistrationSettings
from .shard_job import FAILURE_COLUMNS, TABLE_COLUMNS, preprocess_shard
from .shards import (
    PREPROCESS_DATASETS,
    assign_shards,
    shard_count,
    shard_files,
    shard_records,
    shard_rows,
    subject_order,
    training_rows,
    volume_rows,
)
from .skullstrip import (
    SkullStripResult,
    load_template,
    register_rigid,
    skull_strip,
    strip_atlas,
    strip_deepbet,
    strip_none,
)
from .spatial import (
    TransformRecord,
    crop_box,
    crop_image,
    from_sitk,
    ras_grid,
    reorient_resample,
    resample_to_grid,
    sitk_transform_to_ras,
    to_original_space,
    to_sitk,
)

__all__ = [
    "FAILURE_COLUMNS",
    "PREPROCESS_DATASETS",
    "QC_COLUMNS",
    "TABLE_COLUMNS",
    "N4Settings",
    "NormalisationSettings",
    "NyulLandmarks",
    "PreprocessError",
    "PreprocessResult",
    "PreprocessSettings",
    "QCRules",
    "RegistrationSettings",
    "SkullStripResult",
    "TransformRecord",
    "apply_nyul",
    "assign_shards",
    "shard_count",
    "shard_files",
    "shard_records",
    "shard_rows",
    "fit_landmarks",
    "load_landmarks",
    "merge_shards",
    "plot_qc_summary",
    "read_shard_table",
    "save_landmarks",
    "subject_order",
    "training_rows",
    "volume_rows",
    "bias_strength",
    "clip_percentiles",
    "crop_box",
    "crop_image",
    "dice",
    "fit_nyul",
    "from_sitk",
    "head_mask",
    "load_template",
    "n4_correct",
    "preprocess_shard",
    "preprocess_session",
    "qc_flags",
    "qc_png",
    "qc_record",
    "ras_grid",
    "register_rigid",
    "reorient_resample",
    "resample_to_grid",
    "sitk_transform_to_ras",
    "skull_strip",
    "snr_estimate",
    "strip_atlas",
    "strip_deepbet",
    "strip_none",
    "to_original_space",
    "to_sitk",
    "touches_fov",
    "validate_image",
    "whitestripe",
    "zscore",
]
