"""One shard job: manifest rows in, one folder per session and the shard's tables out.

Split from :mod:`brainssl.preprocess.session`, which preprocesses one session in memory; this
module reads the sessions of a shard (:mod:`brainssl.preprocess.inputs`), writes each one
atomically and records failures. Which rows a shard gets is :mod:`brainssl.preprocess.shards`.

The output folder is a BIDS derivatives dataset (:func:`derivative_names`)::

    <out>/dataset_description.json            DatasetType derivative, GeneratedBy brainssl
    <out>/.bidsignore                         the QC and transform records (not BIDS files)
    <out>/sub-<hex>/ses-<label>/anat/sub-<hex>_ses-<label>_desc-preproc_T1w.nii.gz
                                    .../sub-<hex>_ses-<label>_ce-gadolinium_desc-preproc_T1w.nii.gz (T1ce)
                                    .../sub-<hex>_ses-<label>_desc-brain_mask.nii.gz
                                    .../<each image>.json (SkullStripped; the mask's Type)
                                    .../sub-<hex>_ses-<label>_desc-preproc_dseg.nii.gz (a label map)
                                    .../sub-<hex>_ses-<label>_{xfm,qc}.json, _qc.png

A session without one is ``ses-none``; a session name with other characters than letters and
digits (a fastMRI file stem) loses them in the file names (the table keeps it). Readers take
every path from the shard table (``path``, ``mask_path``, ``seg_path``, ...), never rebuild it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainssl.io import save_nifti, write_json, write_text
from brainssl.logs import progress

from .inputs import _session_inputs, _text
from .intensity import NyulLandmarks
from .qc import qc_png
from .session import PreprocessError, PreprocessResult, preprocess_session
from .settings import PreprocessSettings

__all__ = [
    "preprocess_shard",
    "derivative_names",
    "write_derivative_description",
    "TABLE_COLUMNS",
    "FAILURE_COLUMNS",
]

logger = logging.getLogger(__name__)

TABLE_COLUMNS = (
    "dataset",
    "subject",
    "session",
    "contrast",
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
#: BIDS suffix (and entities) of each manifest contrast in the derivative file names.
BIDS_CONTRASTS = {
    "T1w": "desc-preproc_T1w",
    "T2w": "desc-preproc_T2w",
    "FLAIR": "desc-preproc_FLAIR",
    "PD": "desc-preproc_PDw",
    "T1ce": "ce-gadolinium_desc-preproc_T1w",
}
#: Files of a session folder that BIDS does not define (listed in the root's ``.bidsignore``).
NOT_BIDS = ("*_qc.json", "*_qc.png", "*_xfm.json")


def _label(text: str, prefix: str) -> str:
    """A BIDS label: the text without its ``sub-``/``ses-`` prefix, letters and digits only."""
    label = re.sub(r"[^A-Za-z0-9]", "", str(text).removeprefix(prefix))
    return label or "none"


def _file_suffix(contrast: str) -> str:
    return BIDS_CONTRASTS.get(contrast, f"desc-preproc_{_label(contrast, '')}")


def derivative_names(
    subject: str, session: str, contrasts: list[str], label_contrasts: list[str] | tuple[str, ...] = ()
) -> dict[str, str]:
    """Relative paths of one session's derivative files (BIDS derivatives naming).

    Args:
        subject: the pseudonymous subject (``sub-<hex>``).
        session: the session (``ses-d0129``; empty for none).
        contrasts: the session's contrasts.
        label_contrasts: the contrasts whose label maps are written, first one first.

    Returns:
        ``{contrast: ..._desc-preproc_<suffix>.nii.gz, "mask": ..._desc-brain_mask.nii.gz,
        "seg": ..._desc-preproc_dseg.nii.gz (the first label map), "seg_<contrast>":
        ..._desc-preproc<contrast>_dseg.nii.gz (further ones), "transforms": ..._xfm.json,
        "qc": ..._qc.json, "qc_png": ..._qc.png}``, relative to the derivative root.
    """
    sub, ses = f"sub-{_label(subject, 'sub-')}", f"ses-{_label(session or NO_SESSION, 'ses-')}"
    folder, stem = f"{sub}/{ses}/anat", f"{sub}_{ses}"
    names = {m: f"{folder}/{stem}_{_file_suffix(m)}.nii.gz" for m in contrasts}
    names["mask"] = f"{folder}/{stem}_desc-brain_mask.nii.gz"
    for index, contrast in enumerate(label_contrasts):
        key = "seg" if index == 0 else f"seg_{contrast}"
        desc = "preproc" if index == 0 else f"preproc{_label(contrast, '')}"
        names[key] = f"{folder}/{stem}_desc-{desc}_dseg.nii.gz"
    names.update(
        transforms=f"{folder}/{stem}_xfm.json",
        qc=f"{folder}/{stem}_qc.json",
        qc_png=f"{folder}/{stem}_qc.png",
    )
    return names


def write_derivative_description(out: Path, dataset: str) -> None:
    """Write the derivative root's ``dataset_description.json`` and ``.bidsignore`` (same each time)."""
    from brainssl import __version__

    write_json(
        out / "dataset_description.json",
        {
            "Name": f"brainssl preprocessing of {dataset}",
            "BIDSVersion": "1.9.0",
            "DatasetType": "derivative",
            "GeneratedBy": [
                {
                    "Name": "brainssl",
                    "Version": __version__,
                    "Description": "RAS resampling, N4 bias correction, skull stripping, intensity "
                    "normalisation and crop (brainssl.preprocess); the settings are in each "
                    "session's _qc.json and the workflow's provenance records.",
                }
            ],
            "SourceDatasets": [
                {"Description": f"the {dataset} manifest (results/datasets/{dataset}/manifest.tsv)"}
            ],
        },
    )
    write_text(out / ".bidsignore", "".join(f"{pattern}\n" for pattern in NOT_BIDS))


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


def _write_sidecars(folder: Path, local: Mapping[str, str], result: PreprocessResult) -> None:
    """The JSON sidecars BIDS derivatives require: ``SkullStripped`` per image, ``Type`` of the mask."""
    brain = np.asarray(result.mask.dataobj) > 0
    method = result.qc["skull_strip"]["method"]
    for contrast, img in result.volumes.items():
        # stripped as BIDS means it: a skull-strip method ran and every non-brain voxel is zero
        stripped = method != "none" and not np.any(np.asarray(img.dataobj)[~brain])
        description = f"brainssl preprocessing ({contrast}); skull strip: {method}; settings in _qc.json"
        write_json(
            _sidecar(folder, local[contrast]), {"SkullStripped": bool(stripped), "Description": description}
        )
    write_json(_sidecar(folder, local["mask"]), {"Type": "Brain", "Description": f"brain mask ({method})"})


def _sidecar(folder: Path, image: str) -> Path:
    return folder / image.replace(".nii.gz", ".json")


def _write_session(
    result: PreprocessResult, out: Path, key: dict[str, str], native_id: str = ""
) -> list[dict[str, Any]]:
    ref = result.transforms.reference
    labels = list(result.labels.items())
    names = derivative_names(key["subject"], key["session"], list(result.volumes), [m for m, _ in labels])
    folder = out / Path(names["mask"]).parent  # <sub>/<ses>/anat, renamed into place as <ses>
    local = {name: Path(rel).name for name, rel in names.items()}
    with _session_folder(folder.parent) as session_tmp:
        tmp = session_tmp / folder.name
        tmp.mkdir()
        for contrast, img in result.volumes.items():
            save_nifti(tmp / local[contrast], img)
        save_nifti(tmp / local["mask"], result.mask)
        _write_sidecars(tmp, local, result)
        seg_names: dict[str, str] = {}
        for index, (contrast, lab) in enumerate(labels):
            seg_names[contrast] = local["seg" if index == 0 else f"seg_{contrast}"]
            save_nifti(tmp / seg_names[contrast], lab)
        write_json(tmp / local["transforms"], result.transforms.to_dict())
        write_json(tmp / local["qc"], result.qc)
        who = f"{key['dataset']} {native_id} ({key['subject']})" if native_id else key["subject"]
        title = f"{who} {key['session']} {ref}" + (
            " | " + "; ".join(result.qc["flags"]) if result.qc["flags"] else ""
        )
        qc_png(
            tmp / local["qc_png"],
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
            "contrast": contrast,
            "path": str(folder / local[contrast]),
            "mask_path": str(folder / local["mask"]),
            "seg_path": seg_path,
            "transforms_path": str(folder / local["transforms"]),
            "qc_path": str(folder / local["qc"]),
            "qc_png": str(folder / local["qc_png"]),
            "shape": "x".join(str(n) for n in img.shape),
            "spacing_mm": result.transforms.spacing_mm,
            "brain_ml": qc["brain_ml"],
            "snr": qc["snr"],
            "bias_std": qc["bias_std_per_contrast"].get(contrast),
            "dice": qc["dice"],
            "qc_flags": "; ".join(qc["flags"]),
            "seconds_total": qc["seconds_total"],
        }
        for contrast, img in result.volumes.items()
    ]


def preprocess_shard(
    rows: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    settings: PreprocessSettings,
    *,
    landmarks: Mapping[str, NyulLandmarks] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Preprocess the sessions in a shard of manifest rows, writing one folder per session.

    Writes a BIDS derivatives folder (the module docstring): ``dataset_description.json`` and
    per session ``<out>/sub-*/ses-*/anat/`` (``ses-none`` when the session is empty) with
    ``..._desc-preproc_<suffix>.nii.gz`` per contrast, ``..._desc-brain_mask.nii.gz``,
    ``..._desc-preproc_dseg.nii.gz`` (when a label map is given), ``..._xfm.json``,
    ``..._qc.json`` and ``..._qc.png`` (titled with the dataset, native id and pseudonym). A
    session's files go to a hidden temp folder renamed at the end, so a failed session leaves
    nothing behind. A failing session is recorded with its reason and the others continue.

    Args:
        rows: manifest rows (columns ``dataset, subject, session, contrast, path, format``
            (``nifti``, or ``fastmri_h5`` read through
            :func:`brainssl.datasets.layouts.fastmri.load_rss`),
            optional ``seg_path, truth_brain_mask, native_id``) of one or more sessions.
        out_dir: output root.
        settings: stage settings.
        landmarks: contrast -> Nyúl landmarks (method ``nyul``).

    Returns:
        ``(table, failures)``: one row per written volume (:data:`TABLE_COLUMNS`) and one per
        failed session (:data:`FAILURE_COLUMNS`).

    Raises:
        KeyError: if a required column is missing.
    """
    required = ("dataset", "subject", "session", "contrast", "path")
    missing = [c for c in required if c not in rows.columns]
    if missing:
        raise KeyError(f"manifest rows lack column(s) {missing}")
    out = Path(out_dir)
    written: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    frame = rows.assign(session=rows["session"].map(_text))
    if len(frame):
        out.mkdir(parents=True, exist_ok=True)
        write_derivative_description(out, str(frame["dataset"].iloc[0]))
    sessions = frame.groupby(["dataset", "subject", "session"], sort=False)
    for (dataset, subject, session), group in progress(sessions, "sessions", total=sessions.ngroups):
        key = {"dataset": str(dataset), "subject": str(subject), "session": str(session) or NO_SESSION}
        try:
            images, truth, labels = _session_inputs(group)
            result = preprocess_session(images, settings, truth, labels, landmarks=landmarks)
            native = _text(group["native_id"].iloc[0]) if "native_id" in group.columns else ""
            written.extend(_write_session(result, out, key, native))
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
