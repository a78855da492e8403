"""The ``brainssl`` command line: embed one's own scans, read a model card, check a dataset folder.

``brainssl embed --encoder DIR IMAGE... -o FILE``
    applies the recipe an exported encoder records (preprocessing, slicing and intensity mapping,
    slice filters, pooling window) to NIfTI scans (or 2D JPEG/PNG slices) and writes their pooled
    embeddings (one row per scan) to ``FILE`` and the slice embeddings beside it. It runs the
    workflow's own stage functions: :func:`brainssl.preprocess.preprocess_shard`,
    :func:`brainssl.slices.build_slice_shard` and :func:`brainssl.embed.embed_index`
    (:mod:`brainssl.cli.embed`).
``brainssl card DIR``
    prints an encoder's model card (``--json`` for the raw card).
``brainssl check KIND PATH``
    reads a dataset folder with the reader the workflow's manifest uses and prints what it found,
    and each subject that would be left out, with the reason; it counts them as the workflow's
    attrition table does (:func:`brainssl.attrition.lost_native_ids`).

Nothing heavy is imported before a subcommand runs, so ``brainssl --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["CliError", "build_parser", "main"]

logger = logging.getLogger("brainssl.cli")


class CliError(Exception):
    """A mistake the user can fix (exit status 2); the message says how."""


# ------------------------------------------------------------------------------------ embed


def _slices_path(output: Path) -> Path:
    name = output.name[: -len(".parquet")] if output.name.endswith(".parquet") else output.name
    return output.with_name(f"{name}.slices.parquet")


def _cmd_embed(args: argparse.Namespace) -> int:
    from brainssl.cli.embed import embed_images
    from brainssl.io import write_table

    output = Path(args.output)
    slices_out = Path(args.slices) if args.slices else _slices_path(output)
    slices, pooled, failures = embed_images(
        args.encoder,
        args.images,
        recipe=args.recipe,
        contrast=args.contrast,
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
    from brainssl import modelcard_hub
    from brainssl.cli.embed import read_card

    card = read_card(Path(args.encoder))
    card.pop("_folder")
    if args.json:
        print(json.dumps(card, indent=2, sort_keys=True))
        return 0
    text = modelcard_hub.render_readme(card)
    print(text.split("---\n", 2)[2].lstrip() if text.startswith("---\n") else text)
    if not card.get("recipe"):
        print(
            "note: this card holds no recipe; brainssl embed needs the export folder "
            "(results/pretrain/<run>/export/)",
            file=sys.stderr,
        )
    return 0


# ------------------------------------------------------------------------------------ check


_LABELS = (
    *("age", "sex", "site", "diagnosis", "days_since_event"),
    *("pathology", "idh", "mgmt", "survival_days", "tumor_class"),
)


def _filled(values: Any) -> Any:
    return values.notna() & (values.astype(str) != "")


def _counts(values: Any) -> str:
    counts = values.value_counts().sort_index()
    return ", ".join(f"{k or '(none)'} {int(n)}" for k, n in counts.items())


def _bids_entry(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The ``kind: bids`` entry ``check bids`` reads with: from ``--config``, or T1w alone."""
    import yaml

    from brainssl.datasets.layouts.bids_entry import DEFAULT_CONTRASTS

    if args.config is None:
        return "bids", {"kind": "bids", "contrasts": DEFAULT_CONTRASTS}

    datasets = (yaml.safe_load(Path(args.config).read_text()) or {}).get("datasets", {})
    names = [n for n, e in datasets.items() if isinstance(e, dict) and e.get("kind") == "bids"]
    name = args.dataset or (names[0] if len(names) == 1 else None)
    if name not in names:
        listed = ", ".join(names) or "none"
        raise CliError(f"{args.config}: name the kind: bids entry with --dataset (entries: {listed})")
    return name, {"contrasts": DEFAULT_CONTRASTS, **datasets[name]}


def _cmd_check(args: argparse.Namespace) -> int:
    import numpy as np

    from brainssl.attrition import lost_native_ids
    from brainssl.datasets import DATASETS, DatasetLayoutError, build_manifest
    from brainssl.datasets.catalog import LAYOUTS
    from brainssl.io import write_table

    root = Path(args.path)
    if args.kind == "bids":
        name, entry = _bids_entry(args)
        print(f"BIDS dataset {name!r} at {root}")
        print(f"expected layout: BIDS raw data; contrasts by suffix {dict(entry['contrasts'])}")
    elif args.kind in DATASETS:
        name, entry = args.kind, None
        info = LAYOUTS[args.kind].INFO
        print(f"{info.name} ({info.key}) at {root}")
        print(f"expected layout: {info.layout}")
    else:
        raise CliError(f"unknown dataset kind {args.kind!r}; choose one of {', '.join(DATASETS)} or bids")
    try:
        manifest, failures = build_manifest(name, root, entry=entry)
    except DatasetLayoutError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    subjects = manifest["subject"].nunique()
    sessions = manifest.groupby(["subject", "session"]).ngroups if len(manifest) else 0
    print(f"read: {len(manifest)} images of {subjects} subjects ({sessions} sessions)")
    if len(manifest):
        print(f"contrasts: {_counts(manifest['contrast'])}; formats: {_counts(manifest['format'])}")
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
    # a failure of a kept subject (a duplicate file) or of a row naming no subject loses none
    lost = lost_native_ids(failures["native_id"], manifest["native_id"])
    unused = int((~failures["native_id"].astype(str).isin(lost)).sum())
    others = f"; {unused} of them only leave a file or row unused" if unused else ""
    print(f"failures: {len(lost)} subjects would be left out ({len(failures)} problems{others}):")
    shown = failures if args.all else failures.head(args.show)
    for row in shown.itertuples():
        print(f"  {row.native_id or '(no subject)'}: {row.path}: {row.reason}")
    if len(shown) < len(failures):
        print(f"  ... and {len(failures) - len(shown)} more (--all shows them, --failures FILE writes them)")
    return 1 if lost or not len(manifest) else 0


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
    embed.add_argument("--contrast", help="contrast of every scan (default: from the file name, e.g. _T1w)")
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
        "every subject that would be left out, with the reason (and files or rows that would not be "
        "used). Exit status 0: no subject would be left out; 1: some would (or none found); 2: the "
        "folder is not the layout.",
    )
    check.add_argument(
        "kind", help="dataset key: ixi, brats21, fastmri_brain, oasis3, tumor4, hippocampus, or bids"
    )
    check.add_argument("path", help="the dataset's root folder")
    check.add_argument("--config", help="bids: a config file whose kind: bids entry says how to read it")
    check.add_argument("--dataset", help="bids: which entry of --config (when it has several)")
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
