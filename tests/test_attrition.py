"""Subjects lost per dataset and stage, counted from fabricated stage tables (issue 17, item 8)."""

from pathlib import Path

import pandas as pd

from brainssl.attrition import LOSS_COLUMNS, SUMMARY_COLUMNS, attrition_message, count_attrition
from brainssl.io import write_table


def _tsv(root: Path, path: str, rows: list[dict], columns: list[str]) -> None:
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    write_table(root / path, pd.DataFrame(rows, columns=columns))


def _manifest(root: Path, dataset: str, subjects: dict[str, str]) -> None:
    rows = [
        {"dataset": dataset, "subject": s, "native_id": n, "path": f"raw/{n}.nii.gz"}
        for s, n in subjects.items()
    ]
    _tsv(root, f"results/datasets/{dataset}/manifest.tsv", rows, ["dataset", "subject", "native_id", "path"])


def _failures(root: Path, path: str, rows: list[tuple[str, str, str]]) -> None:
    records = [{"dataset": "x", "native_id": n, "path": p, "reason": r} for n, p, r in rows]
    _tsv(root, path, records, ["dataset", "native_id", "path", "reason"])


def _qc(root: Path, dataset: str, sessions: list[tuple[str, str, str, bool]]) -> None:
    rows = [
        {"dataset": dataset, "subject": s, "session": ses, "qc_flags": f, "flagged": bool(f), "excluded": x}
        for s, ses, f, x in sessions
    ]
    _tsv(
        root,
        f"results/preprocess/{dataset}/qc.tsv",
        rows,
        ["dataset", "subject", "session", "qc_flags", "flagged", "excluded"],
    )


def _stats(root: Path, dataset: str, slices: list[tuple[str, bool, str]]) -> None:
    (root / f"results/slices/{dataset}").mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(slices, columns=["subject", "kept", "reason"])
    write_table(root / f"results/slices/{dataset}/stats.parquet", frame)


def _fabricated_run(root: Path) -> None:
    # ixi: 5 native subjects; IXI005 refused at the manifest, F fails preprocessing, B is
    # QC-excluded, C keeps one of two sessions but no slice of it survives; A goes all the way
    _manifest(root, "ixi", {"sub-a": "IXI001", "sub-b": "IXI002", "sub-c": "IXI003", "sub-f": "IXI006"})
    _failures(
        root,
        "results/datasets/ixi/failures.tsv",
        [
            ("IXI005", "raw/IXI005-T1.nii.gz", "truncated or corrupt gzip"),
            ("", "IXI.csv", "row 7: IXI_ID 'x' is not a number; row not used"),
            ("IXI002", "raw/IXI002-T2.nii", "also present as .nii.gz; this file is not used"),
        ],
    )
    pre = [
        ("sub-f", "ses-none", "raw/IXI006-T1.nii.gz", "image is constant"),
        ("sub-c", "ses-2", "raw/c2", "all zero"),
    ]
    _tsv(
        root,
        "results/preprocess/ixi/failures.tsv",
        [dict(zip(["subject", "session", "path", "reason"], row, strict=True)) for row in pre],
        ["dataset", "subject", "session", "native_id", "path", "reason"],
    )
    _qc(
        root,
        "ixi",
        [
            ("sub-a", "ses-none", "", False),
            ("sub-b", "ses-none", "brain volume 90 ml", True),
            ("sub-c", "ses-1", "", False),
            ("sub-c", "ses-3", "SNR 2.0 below 5.0", True),  # excluded, but sub-c keeps ses-1
        ],
    )
    _tsv(root, "results/preprocess/ixi/table.tsv", [{"subject": "sub-a"}, {"subject": "sub-c"}], ["subject"])
    _stats(
        root,
        "ixi",
        [
            ("sub-a", True, ""),
            ("sub-a", False, "entropy"),
            ("sub-c", False, "entropy"),
            ("sub-c", False, "position"),
        ],
    )
    # oasis3: no usable subject, the manifest job failed and kept its table beside the log
    _failures(
        root,
        "logs/datasets/oasis3/failures.tsv",
        [("OAS1", "a", "unreadable"), ("OAS2", "b", "permission denied")],
    )
    # brats21: the manifest job failed without a table (a layout error): its log says why
    (root / "logs/datasets/brats21").mkdir(parents=True)
    (root / "logs/datasets/brats21/manifest.log").write_text("DatasetLayoutError: ...\n")
    # hippocampus: manifest done, preprocessing half-way (one shard finished, not merged)
    _manifest(root, "hippocampus", {"sub-h1": "hippocampus_001", "sub-h2": "hippocampus_002"})
    _failures(root, "results/datasets/hippocampus/failures.tsv", [])
    shards = "results/preprocess/hippocampus/shards"
    _tsv(
        root,
        f"{shards}/shard-0.failures.tsv",
        [{"subject": "sub-h1", "reason": "bad"}],
        ["subject", "session", "reason"],
    )
    _tsv(root, f"{shards}/shard-0.tsv", [], ["subject", "session", "qc_flags"])
    # tumor4: 2D images, no preprocessing; one image leaves no slice
    _manifest(root, "tumor4", {"sub-t1": "Tr-gl_1", "sub-t2": "Tr-no_2"})
    _failures(root, "results/datasets/tumor4/failures.tsv", [])
    _stats(root, "tumor4", [("sub-t1", True, ""), ("sub-t2", False, "area")])


DATASETS = ["ixi", "brats21", "oasis3", "tumor4", "hippocampus", "fastmri_brain"]
PREPROCESSED = ["ixi", "brats21", "oasis3", "hippocampus", "fastmri_brain"]
SLICED = ["ixi", "brats21", "oasis3", "tumor4", "fastmri_brain"]


def _counts(summary: pd.DataFrame, dataset: str) -> dict[str, tuple]:
    rows = summary[summary["dataset"] == dataset]
    return {
        r.stage: (r.status, *(None if pd.isna(v) else int(v) for v in (r.subjects_in, r.lost, r.kept)))
        for r in rows.itertuples()
    }


def test_subjects_lost_are_counted_per_dataset_and_stage(tmp_path: Path) -> None:
    _fabricated_run(tmp_path)
    result = count_attrition(DATASETS, PREPROCESSED, SLICED, root=tmp_path)
    summary, losses = result.summary, result.losses
    assert list(summary.columns) == list(SUMMARY_COLUMNS) and list(losses.columns) == list(LOSS_COLUMNS)
    assert _counts(summary, "ixi") == {
        "manifest": ("done", 5, 1, 4),  # IXI005 lost; the stray row and the unused .nii are not subjects
        "preprocess": ("done", 4, 1, 3),  # sub-f: no session written (sub-c's failed session is not a loss)
        "qc": ("done", 3, 1, 2),  # sub-b: its only session excluded
        "slices": ("done", 2, 1, 1),  # sub-c: no slice kept
    }
    assert _counts(summary, "oasis3")["manifest"] == ("failed", 2, 2, 0)
    assert _counts(summary, "oasis3")["preprocess"] == ("not reached", None, None, None)
    assert _counts(summary, "brats21")["manifest"] == ("failed", None, None, None)
    assert _counts(summary, "hippocampus")["preprocess"] == ("partial", 1, 1, 0)
    assert _counts(summary, "hippocampus")["slices"][0] == "n/a"
    assert _counts(summary, "tumor4") == {
        "manifest": ("done", 2, 0, 2),
        "preprocess": ("n/a", None, None, None),
        "qc": ("n/a", None, None, None),
        "slices": ("done", 2, 1, 1),
    }
    assert _counts(summary, "fastmri_brain")["manifest"] == ("not reached", None, None, None)
    ixi = losses[losses["dataset"] == "ixi"].set_index(["stage", "path"])
    assert ixi.loc[("manifest", "raw/IXI005-T1.nii.gz"), "lost"]
    assert not ixi.loc[("manifest", "raw/IXI002-T2.nii"), "lost"]  # a duplicate: its subject is kept
    assert ixi.loc[("manifest", "raw/IXI005-T1.nii.gz"), "table"] == "results/datasets/ixi/failures.tsv"
    lost = losses[losses["lost"]]
    assert set(zip(lost["dataset"], lost["stage"], lost["subject"] + lost["native_id"], strict=True)) == {
        ("ixi", "manifest", "IXI005"),
        ("ixi", "preprocess", "sub-f"),
        ("ixi", "qc", "sub-b"),
        ("ixi", "slices", "sub-c"),
        ("oasis3", "manifest", "OAS1"),
        ("oasis3", "manifest", "OAS2"),
        ("hippocampus", "preprocess", "sub-h1"),
        ("tumor4", "slices", "sub-t2"),
    }
    slices = lost[lost["stage"] == "slices"].set_index("subject")["reason"]
    assert slices["sub-c"] == "no slice kept (dropped: entropy 1, position 1)"


def test_the_end_of_run_message_names_the_losses_and_the_tables(tmp_path: Path) -> None:
    _fabricated_run(tmp_path)
    message = attrition_message(DATASETS, PREPROCESSED, SLICED, root=tmp_path)
    table, tables = message.split("Failure tables")
    lines = {line.split()[0]: line for line in table.splitlines() if line.startswith("  ")}
    assert lines["ixi"].split()[1:] == "1 of 5 1 of 4 1 of 3 1 of 2 1".split()
    assert "2 of 2" in lines["oasis3"] and lines["oasis3"].count("not reached") == 3
    assert "failed" in lines["brats21"] and "partial" in lines["hippocampus"]
    assert (
        "ixi manifest: results/datasets/ixi/failures.tsv (1 subject(s) lost; 2 file(s) or row(s) not used)"
        in message
    )
    assert (
        "oasis3 manifest: logs/datasets/oasis3/failures.tsv (2 subject(s) lost; no usable subjects)"
        in message
    )
    assert (
        "ixi qc: results/preprocess/ixi/qc.tsv (1 subject(s) lost; 2 session(s) flagged, 2 excluded)"
        in message
    )
    assert "brats21 manifest: logs/datasets/brats21/manifest.log (the manifest job failed; its log" in tables
    assert "tumor4 slices: results/slices/tumor4/stats.parquet (1 subject(s) lost)" in message


def test_a_clean_or_empty_run_says_so_and_a_broken_table_does_not_raise(tmp_path: Path) -> None:
    _manifest(tmp_path, "tumor4", {"sub-t1": "Tr-gl_1"})
    _failures(tmp_path, "results/datasets/tumor4/failures.tsv", [])
    _stats(tmp_path, "tumor4", [("sub-t1", True, "")])
    message = attrition_message(["tumor4"], [], ["tumor4"], root=tmp_path)
    assert "none has a row" in message and "0 of 1" in message
    # a damaged table: its stage says so and names it, the stages before it are still counted
    (tmp_path / "results/slices/tumor4/stats.parquet").write_bytes(b"not parquet")
    message = attrition_message(["tumor4"], [], ["tumor4"], root=tmp_path)
    assert "0 of 1" in message and "unreadable" in message
    assert "tumor4 slices: results/slices/tumor4/stats.parquet (ArrowInvalid" in message
