"""The datasets: demo generation into native layouts, and manifests from native layouts.

The Snakemake rules call these functions. Demo data are synthetic subjects
(:mod:`brainssl.synth`) written in each dataset's real layout, so the same
reader serves the demo and a real copy given by path.

Besides the six registered layouts (:data:`LAYOUTS`), a config entry of ``kind: bids`` with a
name of the user's choosing is read by the generic BIDS reader (:mod:`.layouts.bids`) as its
entry says; its demo (``source: synthetic``) is written by one of :data:`DEMO_WRITERS`
(``demo: abide`` or ``demo: atlas``).
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from brainssl.datasets.layouts import (
    abide,
    atlas,
    bids,
    bids_entry,
    brats,
    fastmri,
    hippocampus,
    ixi,
    oasis,
    tumor4,
)
from brainssl.datasets.layouts.errors import NoUsableSubjectsError
from brainssl.datasets.manifest import check_manifest, failures_frame, rows_to_frame
from brainssl.io import write_table

__all__ = [
    "DATASETS",
    "DEMO_WRITERS",
    "LAYOUTS",
    "SHARD_COLUMNS",
    "demo_subject_ids",
    "subject_seed",
    "generate_demo_shard",
    "finalize_demo",
    "build_manifest",
]

logger = logging.getLogger(__name__)

LAYOUTS: dict[str, ModuleType] = {
    "ixi": ixi,
    "brats21": brats,
    "fastmri_brain": fastmri,
    "oasis3": oasis,
    "tumor4": tumor4,
    "hippocampus": hippocampus,
}
DATASETS: tuple[str, ...] = tuple(LAYOUTS)
#: Writers of the demo folders that ``kind: bids`` entries read (``demo: <name>``).
DEMO_WRITERS: dict[str, ModuleType] = {"abide": abide, "atlas": atlas}
META_COLUMNS = (
    "age",
    "sex",
    "site",
    "diagnosis",
    "cdr",
    "pathology",
    "idh",
    "mgmt",
    "survival_days",
    "event",
)
SHARD_COLUMNS: tuple[str, ...] = (
    "dataset",
    "index",
    "native_id",
    "seed",
    "files",
    *META_COLUMNS,
    "extra",
    "meta",
)


def _layout(dataset: str, demo: str | None = None) -> ModuleType:
    """The module that writes (and, for a registered layout, reads) a dataset's demo."""
    if demo is not None:
        if demo not in DEMO_WRITERS:
            raise ValueError(f"{dataset}: unknown demo {demo!r}; expected one of {tuple(DEMO_WRITERS)}")
        return DEMO_WRITERS[demo]
    if dataset not in LAYOUTS:
        raise ValueError(
            f"unknown dataset {dataset!r}; expected one of {DATASETS} (or a kind: bids entry with its demo)"
        )
    return LAYOUTS[dataset]


def demo_subject_ids(dataset: str, n_subjects: int, demo: str | None = None) -> list[str]:
    """Return the native ids of the first ``n_subjects`` demo subjects.

    Subject ``i`` always gets the same id, whatever ``n_subjects`` is.

    Args:
        dataset: dataset key.
        n_subjects: how many.
        demo: the demo writer of a ``kind: bids`` entry (:data:`DEMO_WRITERS`).

    Returns:
        Native ids (``IXI002-Guys-1000``, ``BraTS2021_00000``, ``file_brain_AXT1_201_600000``,
        ``OAS30001``, ``Tr-gl_0000``, ``hippocampus_001``; ``0050002``, ``r001s001``).

    Raises:
        ValueError: for an unknown dataset or a negative count.
    """
    if n_subjects < 0:
        raise ValueError(f"n_subjects must be >= 0, got {n_subjects}")
    layout = _layout(dataset, demo)
    return [layout.native_id(i) for i in range(n_subjects)]


def subject_seed(dataset: str, index: int, seed: int) -> int:
    """Seed of demo subject ``index``: depends on the run seed, the dataset and the index only.

    A registered dataset is numbered by its place in :data:`DATASETS`; a user-named one by a
    CRC-32 of its name (above 2**16, so the two never meet).
    """
    number = DATASETS.index(dataset) if dataset in DATASETS else (1 << 16) + zlib.crc32(dataset.encode())
    sequence = np.random.SeedSequence([int(seed), number, int(index)])
    return int(sequence.generate_state(1, dtype=np.uint32)[0])


def _generate(seed: int, subject_id: str, params: dict[str, Any]) -> Any:
    """Draw one synthetic subject (the single place that calls :mod:`brainssl.synth`)."""
    from brainssl.synth import SubjectParams, generate_subject

    return generate_subject(seed, subject_id, SubjectParams(**params))


def _maker(layout: ModuleType, index: int, native_id: str, seed: int, grid_mm: float) -> Callable[..., Any]:
    base = layout.subject_params(index, grid_mm)

    def make(**overrides: Any) -> Any:
        return _generate(seed, native_id, {**base, **overrides})

    return make


def generate_demo_shard(
    dataset: str,
    raw_root: Path,
    subject_indices: Sequence[int],
    seed: int,
    grid_mm: float,
    demo: str | None = None,
) -> pd.DataFrame:
    """Write some demo subjects' native files (and ``_truth``) under ``raw_root``.

    Args:
        dataset: dataset key.
        raw_root: the dataset root (created if needed).
        subject_indices: which demo subjects (0-based); subject ``i`` is the
            same for any sharding.
        seed: run seed; each subject's seed is :func:`subject_seed`.
        grid_mm: synthetic acquisition grid spacing in mm.
        demo: for a ``kind: bids`` entry, its demo writer (:data:`DEMO_WRITERS`).

    Returns:
        The shard table, one row per subject, columns :data:`SHARD_COLUMNS`:
        native id, subject seed, files written (``;``-joined, relative to
        ``raw_root``), the subject's meta values, and ``extra``/``meta`` as JSON.

    Raises:
        ValueError: for an unknown dataset, a negative index or a non-positive grid.
    """
    layout = _layout(dataset, demo)
    if grid_mm <= 0:
        raise ValueError(f"grid_mm must be > 0, got {grid_mm}")
    if any(int(i) < 0 for i in subject_indices):
        raise ValueError(f"subject indices must be >= 0, got {list(subject_indices)}")
    raw_root = Path(raw_root)
    raw_root.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in subject_indices:
        start = time.perf_counter()
        nid = layout.native_id(int(index))
        sub_seed = subject_seed(dataset, int(index), seed)
        record = layout.write_subject(
            raw_root, int(index), nid, _maker(layout, int(index), nid, sub_seed, grid_mm)
        )
        meta = record["meta"]
        rows.append(
            {
                "dataset": dataset,
                "index": int(index),
                "native_id": nid,
                "seed": sub_seed,
                "files": ";".join(record["files"]),
                **{key: meta.get(key) for key in META_COLUMNS},
                "extra": json.dumps(record["extra"], sort_keys=True),
                "meta": json.dumps(meta, sort_keys=True),
            }
        )
        logger.info("%s %s written in %.2f s", dataset, nid, time.perf_counter() - start)
    return pd.DataFrame(rows, columns=list(SHARD_COLUMNS))


def _read_table(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    sep = "\t" if path.suffix in (".tsv", ".txt") else ","
    return pd.read_csv(path, sep=sep, keep_default_na=False, na_values=[""])


def finalize_demo(
    dataset: str, raw_root: Path, shard_tables: Sequence[Path], demo: str | None = None
) -> list[Path]:
    """Write a demo dataset's dataset-level tables from its shard tables.

    IXI: ``IXI.csv``; BraTS: ``train_labels.csv``, ``survival_info.csv``,
    ``brats20_to_brats21.csv``, ``molecular_labels.csv``; OASIS-3:
    ``OASIS3_clinical.csv``; Decathlon: ``dataset.json``; fastMRI and the
    4-class set have none; the BIDS demos: ``participants.tsv`` and the BIDS root files.

    Args:
        dataset: dataset key.
        raw_root: the dataset root.
        shard_tables: the tables returned by :func:`generate_demo_shard`, saved
            as ``.tsv``, ``.csv`` or ``.parquet``.
        demo: for a ``kind: bids`` entry, its demo writer.

    Returns:
        The paths written.

    Raises:
        ValueError: for an unknown dataset, no shard tables, or a native id listed twice.
    """
    layout = _layout(dataset, demo)
    if not shard_tables:
        raise ValueError(f"{dataset}: no shard tables given")
    shard = pd.concat([_read_table(Path(p)) for p in shard_tables], ignore_index=True)
    duplicated = shard["native_id"][shard["native_id"].duplicated()]
    if not duplicated.empty:
        raise ValueError(f"{dataset}: native id {duplicated.iloc[0]!r} appears in two shard tables")
    return list(layout.finalize(Path(raw_root), shard.sort_values("index", kind="stable")))


def build_manifest(
    dataset: str,
    raw_root: Path,
    *,
    require_usable: bool = False,
    failures_path: Path | None = None,
    entry: Mapping[str, Any] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a dataset root (real copy or demo) into the image manifest.

    Every file is opened completely. A subject with a bad file (truncated,
    missing contrast, NaNs, 4D, too small, unreadable, empty folder, ...) or a bad row in a
    dataset-level table is left out of the manifest and listed in the failures table with a
    reason naming the file (and the row). Files not used while their subject is kept
    (duplicates) are listed there too.

    Args:
        dataset: dataset key.
        raw_root: the dataset root in its native layout.
        require_usable: raise :class:`NoUsableSubjectsError` when no subject is usable (the
            workflow's manifest job does, so that such a dataset stops there and not in
            later jobs); otherwise return the empty manifest with the failures.
        failures_path: with ``require_usable``, where the failures table is written before
            raising (the workflow puts it beside the job's log, which Snakemake keeps).
        entry: the config entry of a ``kind: bids`` dataset (its contrasts, tables, labels);
            ``dataset`` is then its name and the generic BIDS reader reads it.

    Returns:
        ``(manifest, failures)``: the manifest in the schema of
        :mod:`brainssl.datasets.manifest` (checked), and the failures table
        (``dataset, native_id, path, reason``).

    Raises:
        ValueError: for an unknown dataset.
        DatasetLayoutError: when the root is missing or malformed; the message
            names the dataset, the expected layout and where to obtain it. Also when a
            dataset-level table is unparsable or lacks a required column (naming the file
            and the columns expected).
        NoUsableSubjectsError: with ``require_usable``, when no subject is usable: "no
            usable subjects; see failures.tsv" with the path (and the first reasons).
    """
    if entry is not None and entry.get("kind") == "bids":
        info = bids_entry.info(dataset, entry)
        rows, failures = bids.read(Path(raw_root), dataset, entry)
    else:
        info = _layout(dataset).INFO
        rows, failures = _layout(dataset).read(Path(raw_root))
    manifest = rows_to_frame(rows)
    check_manifest(manifest)
    table = failures_frame(failures)
    logger.info("%s: %d images, %d failures", dataset, len(manifest), len(failures))
    if require_usable and manifest.empty:
        raise _no_usable(info, Path(raw_root), table, failures_path)
    return manifest, table


def _no_usable(
    info: Any, raw_root: Path, failures: pd.DataFrame, failures_path: Path | None
) -> NoUsableSubjectsError:
    if failures_path is not None:
        write_table(Path(failures_path), failures)
        where = f"see failures.tsv: {failures_path}"
    else:
        where = "see failures.tsv (not written)"
    first = "; ".join(f"{row.path}: {row.reason}" for row in failures.head(3).itertuples())
    more = f" (first of {len(failures)}: {first})" if first else f" (nothing usable found under {raw_root})"
    return NoUsableSubjectsError(f"{info.name} ({info.key}): no usable subjects; {where}{more}")
