"""One shard job: manifest rows in, one folder per session and the shard's tables out.

Split from :mod:`brainssl.preprocess.session`, which preprocesses one session in memory; this
module reads the sessions of a shard (:mod:`brainssl.preprocess.inputs`), writes each one
atomically and records failures. Which rows a shard gets is :mod:`brainssl.preprocess.shards`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainssl.io import save_nifti, write_json

from .inputs import _session_inputs, _text
from .intensity import NyulLandmarks
from .qc import qc_png
from .session import PreprocessError, PreprocessResult, preprocess_session
from .settings import PreprocessSettings

__all__ = ["preprocess_shard", "TABLE_COLUMNS", "FAILURE_COLUMNS"]

logger = logging.getLogger(__name__)

TABLE_COLUMNS = (
    "dataset",
    "subject",
    "session",
    "modality",
    "path",
    "mask_path",
    "seg_path",
    "transforms_path",
    "qc_path",
    "qc_png",
    "shape",
    "spacing_mm",
    "brain_ml",
    "snr",
    "bias_std",
    "dice",
    "qc_flags",
    "seconds_total",
)
FAILURE_COLUMNS = ("dataset", "subject", "session", "native_id", "path", "reason")
NO_SESSION = "ses-none"


@contextlib.contextmanager
def _session_folder(final: Path) -> Iterator[Path]:
    """Yield a hidden temp folder beside ``final``; rename it onto ``final`` on success only."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
            os.replace(final, trash / final.name)
            os.replace(tmp, final)
            shutil.rmtree(trash)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_session(result: PreprocessResult, folder: Path, key: dict[str, str]) -> list[dict[str, Any]]:
    ref = result.transforms.reference
    with _session_folder(folder) as tmp:
        for modality, img in result.volumes.items():
            save_nifti(tmp / f"{modality}.nii.gz", img)
        save_nifti(tmp / "mask.nii.gz", result.mask)
        seg_names: dict[str, str] = {}
        for index, (modality, lab) in enumerate(result.labels.items()):
            seg_names[modality] = "seg.nii.gz" if index == 0 else f"seg_{modality}.nii.gz"
            save_nifti(tmp / seg_names[modality], lab)
        write_json(tmp / "transforms.json", result.transforms.to_dict())
        write_json(tmp / "qc.json", result.qc)
        title = f"{key['subject']} {key['session']} {ref}" + (
            " | " + "; ".join(result.qc["flags"]) if result.qc["flags"] else ""
        )
        qc_png(
            tmp / "qc.png",
            np.asarray(result.volumes[ref].dataobj),
            np.asarray(result.mask.dataobj) > 0,
            tuple(float(z) for z in result.mask.header.get_zooms()[:3]),
            title,
        )
    seg_path = str(folder / next(iter(seg_names.values()))) if seg_names else ""
    qc = result.qc
    return [
        {
            **key,
            "modality": modality,
            "path": str(folder / f"{modality}.nii.gz"),
            "mask_path": str(folder / "mask.nii.gz"),
            "seg_path": seg_path,
            "transforms_path": str(folder / "transforms.json"),
            "qc_path": str(folder / "qc.json"),
            "qc_png": str(folder / "qc.png"),
            "shape": "x".join(str(n) for n in img.shape),
            "spacing_mm": result.transforms.spacing_mm,
            "brain_ml": qc["brain_ml"],
            "snr": qc["snr"],
            "bias_std": qc["bias_std_per_modality"].get(modality),
            "dice": qc["dice"],
            "qc_flags": "; ".join(qc["flags"]),
            "seconds_total": qc["seconds_total"],
        }
        for modality, img in result.volumes.items()
    ]


def preprocess_shard(
    rows: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    settings: PreprocessSettings,
    *,
    landmarks: Mapping[str, NyulLandmarks] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Preprocess the sessions in a shard of manifest rows, writing one folder per session.

    Writes ``<out>/<subject>/<session>/`` (session ``ses-none`` when empty) with
    ``<modality>.nii.gz``, ``mask.nii.gz``, ``seg.nii.gz`` (when a seg is given),
    ``transforms.json``, ``qc.json`` and ``qc.png``. A session's files go to a hidden temp
    folder renamed at the end, so a failed session leaves nothing behind. A failing session
    is recorded with its reason and the others continue.

    Args:
        rows: manifest rows (columns ``dataset, subject, session, modality, path, format``
            (``nifti``, or ``fastmri_h5`` read through
            :func:`brainssl.datasets.layouts.fastmri.load_rss`),
            optional ``seg_path, truth_brain_mask, native_id``) of one or more sessions.
        out_dir: output root.
        settings: stage settings.
        landmarks: modality -> Nyúl landmarks (method ``nyul``).

    Returns:
        ``(table, failures)``: one row per written volume (:data:`TABLE_COLUMNS`) and one per
        failed session (:data:`FAILURE_COLUMNS`).

    Raises:
        KeyError: if a required column is missing.
    """
    required = ("dataset", "subject", "session", "modality", "path")
    missing = [c for c in required if c not in rows.columns]
    if missing:
        raise KeyError(f"manifest rows lack column(s) {missing}")
    out = Path(out_dir)
    written: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    frame = rows.assign(session=rows["session"].map(_text))
    for (dataset, subject, session), group in frame.groupby(["dataset", "subject", "session"], sort=False):
        key = {"dataset": str(dataset), "subject": str(subject), "session": str(session) or NO_SESSION}
        try:
            images, truth, labels = _session_inputs(group)
            result = preprocess_session(images, settings, truth, labels, landmarks=landmarks)
            written.extend(_write_session(result, out / key["subject"] / key["session"], key))
            logger.info("%s %s: done in %.1f s", subject, key["session"], result.qc["seconds_total"])
        except Exception as err:  # one bad session must not stop the shard; the reason is recorded
            reason = str(err) if isinstance(err, PreprocessError) else f"{type(err).__name__}: {err}"
            logger.warning("%s %s failed: %s", subject, key["session"], reason)
            native = group["native_id"].iloc[0] if "native_id" in group.columns else ""
            failures.append(
                {
                    **key,
                    "native_id": _text(native),
                    "path": ";".join(group["path"].map(str)),
                    "reason": reason,
                }
            )
    return (
        pd.DataFrame(written, columns=list(TABLE_COLUMNS)),
        pd.DataFrame(failures, columns=list(FAILURE_COLUMNS)),
    )
