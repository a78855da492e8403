"""The ``datasets:`` config section: the demo cohort's knobs, the split, one entry per dataset.

The per-dataset entries follow the layout registry (:data:`brainssl.datasets.catalog.LAYOUTS`):
:func:`datasets_section` builds the section's class from it, so a registered layout gets its
``datasets.<name>`` schema entry with no other edit. Any other name (lower case, digits, ``_``)
is a dataset of the user's whose entry has ``kind: bids`` (:class:`BidsDatasetSettings`, read
by :mod:`brainssl.datasets.layouts.bids`). Only the config schema (:mod:`brainssl.schema`) is
built from these classes; the rules read the validated config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from brainssl.settings import setting

from .catalog import DEMO_WRITERS, LAYOUTS
from .download import DEFAULT_IXI_BASE_URL
from .layouts.bids_entry import LABELS
from .manifest import CONTRASTS
from .names import BIDS_NAME_PATTERN

__all__ = [
    "BidsDatasetSettings",
    "DATASET_SETTINGS",
    "DatasetSettings",
    "DatasetSplit",
    "DatasetsSettings",
    "IxiDatasetSettings",
    "datasets_section",
]

#: What a dataset's entry says about it (its layout's full name where none is given here).
SUMMARIES = {
    "ixi": "IXI: healthy adults, T1/T2/PD, three London sites.",
    "brats21": "BraTS 2021: glioma, T1/T1ce/T2/FLAIR + labels.",
    "fastmri_brain": "fastMRI brain: multi-coil k-space HDF5.",
    "oasis3": "OASIS-3: ageing and Alzheimer's, BIDS.",
    "tumor4": "4-class brain tumor MRI image set (JPEG).",
    "hippocampus": "Decathlon Task04 hippocampus segmentation.",
}


def _path_required(sources: tuple[str, ...]) -> dict[str, Any]:
    """JSON schema: ``path`` must be a non-empty string when ``source`` is one of ``sources``."""
    condition = {"const": sources[0]} if len(sources) == 1 else {"enum": list(sources)}
    return {
        "if": {"properties": {"source": condition}},
        "then": {"required": ["path"], "properties": {"path": {"type": "string", "minLength": 1}}},
    }


@dataclass(frozen=True, kw_only=True)
class DatasetSettings:
    """One dataset's entry (``datasets.<name>``): where it comes from."""

    #: JSON schema added to the entry's own (``path`` is required for a real copy).
    schema_extra: ClassVar[Mapping[str, Any]] = _path_required(("local",))

    enabled: bool = setting(True, "Include this dataset in the run.")
    source: str = setting(
        description='"synthetic" generates the embedded demo cohort in this dataset\'s native '
        'layout; "local" reads the real dataset from `path`.',
        enum=("synthetic", "local"),
    )
    path: str | None = setting(  # not filled in: the condition below requires it for a real copy
        None,
        'Folder holding the real dataset in its native layout; required when source is "local" '
        '(or the download target when source is "download").',
        fill=False,
    )
    subjects: int = setting(
        8,
        'Number of synthetic subjects generated when source is "synthetic".',
        minimum=1,
        maximum=100000,
    )


@dataclass(frozen=True, kw_only=True)
class IxiDatasetSettings(DatasetSettings):
    """IXI's entry: it can also be downloaded from the public archives."""

    schema_extra: ClassVar[Mapping[str, Any]] = _path_required(("local", "download"))

    source: str = setting(
        description='"synthetic" (demo cohort), "local" (an extracted copy at `path`) or '
        '"download" (fetch the public archives into `path`, with checksum checks).',
        enum=("synthetic", "local", "download"),
    )
    base_url: str = setting(
        DEFAULT_IXI_BASE_URL,
        'Where the IXI archives are served (source "download" only).',
        pattern="^(https?|file)://",
    )
    contrasts: tuple[str, ...] = setting(
        ("T1", "T2", "PD"),
        'Which IXI archives to fetch (source "download" only).',
        items={"enum": ("T1", "T2", "PD")},
        min_items=1,
        unique_items=True,
    )


#: The entry class of each dataset that needs its own (the others take :class:`DatasetSettings`).
DATASET_SETTINGS: dict[str, type[DatasetSettings]] = {"ixi": IxiDatasetSettings}

_SPEC = "^([a-zA-Z]+-[a-zA-Z0-9]+_)*[a-zA-Z0-9]+$"
_LABEL_KEYS = {"enum": list(LABELS)}
_LABEL_TEXT = "; ".join(f"{key}: {about}" for key, about in LABELS.items())


@dataclass(frozen=True, kw_only=True)
class BidsDatasetSettings(DatasetSettings):
    """A dataset of the user's, in BIDS (``datasets.<name>`` with ``kind: bids``).

    Read by :mod:`brainssl.datasets.layouts.bids`; ``source: synthetic`` writes the demo named
    by ``demo`` in its real layout first.
    """

    schema_extra: ClassVar[Mapping[str, Any]] = {
        "allOf": [
            _path_required(("local",)),
            {
                "if": {"properties": {"source": {"const": "synthetic"}}},
                "then": {"required": ["demo"]},
            },
        ]
    }

    kind: str = setting(
        description="bids: read the folder as BIDS raw data, as this entry says (any name of "
        "lower-case letters, digits and '_' that is not a registered dataset).",
        enum=("bids",),
    )
    source: str = setting(
        description='"local" reads the BIDS folder at `path`; "synthetic" first writes the demo '
        "cohort named by `demo` there in its real layout.",
        enum=("synthetic", "local"),
    )
    path: str | None = setting(
        None,
        "The BIDS folder (the one holding participants.tsv and sub-*/); required when source is "
        '"local" (source "synthetic" writes the demo under results/datasets/<name>/raw).',
        fill=False,
    )
    roots: str = setting(
        "",
        "When the release is several BIDS datasets in one folder, the glob of their roots below "
        "`path`, e.g. Training/R* for ATLAS v2.0 (ATLAS_2/Training/R001/sub-r001s001/ses-1/anat/); "
        "their subjects are pooled, each root's own participants.tsv is read, and site is the "
        "root's folder name unless a table names it. Empty: `path` is the one BIDS root.",
        pattern=r"^$|^[^/]",
    )
    demo: str | None = setting(
        None,
        'Source "synthetic": which demo cohort is written: abide (autism and controls, four '
        "sites; the neurodevelopmental task) or atlas (stroke lesions of known age; the "
        "post-stroke timing task).",
        fill=False,
        enum=tuple(DEMO_WRITERS),
    )
    contrasts: Mapping[str, str] = setting(
        factory=lambda: {"T1w": "T1w"},
        description="Manifest contrast -> BIDS suffix, optionally with the entities its "
        "files carry: {T1w: T1w, T1ce: ce-gadolinium_T1w, FLAIR: FLAIR}. Files with other "
        "entities (besides sub, ses, run, acq, space) are not that contrast; of several runs "
        "the lowest is used.",
        min_properties=1,
        property_names={"enum": list(CONTRASTS)},
        additional_properties={"type": "string", "pattern": _SPEC},
    )
    mask: str = setting(
        "",
        "Suffix (with entities) of a label map beside the images that every contrast of the "
        "session takes as its seg_path, e.g. label-L_desc-T1lesion_mask (ATLAS); empty for none.",
        pattern=f"^$|{_SPEC}",
    )
    participants: Mapping[str, str] = setting(
        factory=dict,
        description="Label -> participants.tsv column (rows by participant_id). Labels: " + _LABEL_TEXT + ".",
        property_names=_LABEL_KEYS,
        additional_properties={"type": "string", "minLength": 1},
    )
    sessions: Mapping[str, str] = setting(
        factory=dict,
        description="Label -> column of each subject's sub-<label>_sessions.tsv (rows by "
        "session_id); a session's value overrides the participant's. Same labels as participants.",
        property_names=_LABEL_KEYS,
        additional_properties={"type": "string", "minLength": 1},
    )
    values: Mapping[str, Mapping[str, str]] = setting(
        factory=dict,
        description='Label -> {cell: value} for coded columns, e.g. diagnosis: {"1": autism, "2": '
        'control}, sex: {"1": M, "2": F}; a cell the map lacks leaves its subject out (failures.tsv).',
        property_names=_LABEL_KEYS,
        additional_properties={"type": "object", "additionalProperties": {"type": "string"}},
    )


@dataclass(frozen=True)
class DatasetSplit:
    """``datasets.split``: subject-level split fractions."""

    train: float = setting(0.7, "Fraction of subjects for training.", minimum=0, maximum=1)
    val: float = setting(0.15, "Fraction for validation.", minimum=0, maximum=1)
    test: float = setting(0.15, "Fraction for testing.", minimum=0, maximum=1)


@dataclass(frozen=True, kw_only=True)
class DatasetsSettings:
    """The ``datasets:`` keys besides the per-dataset entries."""

    shard_size: int = setting(
        16,
        "Subjects per generation/ingest job (many subjects make few jobs).",
        minimum=1,
        maximum=10000,
    )
    grid_mm: float = setting(
        2.0,
        "Resolution (mm) at which synthetic anatomy is built; 1.0 is full resolution.",
        minimum=0.5,
        maximum=4.0,
    )
    montage_subjects: int = setting(3, "Subjects shown in each dataset's montage PNG.", minimum=1, maximum=12)
    split: DatasetSplit = setting(
        factory=DatasetSplit,
        description="Subject-level split fractions (brainssl.splits.subject_split: hash of seed "
        "and subject, stable when subjects are added); a dataset's own train/test split is "
        "honoured.",
    )


def datasets_section() -> type:
    """The ``datasets:`` section's class: :class:`DatasetsSettings` and one entry per layout.

    Every entry is required (it says where the dataset comes from). Any other key matching
    :data:`BIDS_NAME_PATTERN` is a user's dataset (:class:`BidsDatasetSettings`).
    """
    fields = []
    for name, layout in LAYOUTS.items():
        summary = SUMMARIES.get(name, f"{layout.INFO.name}.")
        cls = DATASET_SETTINGS.get(name, DatasetSettings)
        fields.append((name, cls, setting(description=summary)))
    section = dataclasses.make_dataclass(
        "DatasetsSection", fields, bases=(DatasetsSettings,), frozen=True, kw_only=True
    )
    section.__doc__ = "The ``datasets:`` config section."
    section.__module__ = __name__
    section.schema_extra = {"patternProperties": {bids_name_pattern(section): bids_entry_schema()}}
    return section


def bids_name_pattern(section: type) -> str:
    """:data:`BIDS_NAME_PATTERN` less the section's own keys (registered datasets, shard_size, ...)."""
    taken = "|".join(f.name for f in dataclasses.fields(section))
    return f"^(?!({taken})$)" + BIDS_NAME_PATTERN.removeprefix("^")


def bids_entry_schema() -> dict[str, Any]:
    """The JSON schema of a ``kind: bids`` entry (what :mod:`brainssl.schema` makes of the class)."""
    from brainssl.schema import _Builder

    body = _Builder().section(BidsDatasetSettings)
    body["description"] = (
        "A dataset of the user's in BIDS (any other name of lower-case letters, digits and '_'): "
        "kind: bids, its source, and how contrasts and labels are read."
    )
    return body
