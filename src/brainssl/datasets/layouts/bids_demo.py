"""The BIDS root files the demo writers (ABIDE, ATLAS) share: description, README, ``.bidsignore``, tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from brainssl.io import write_json, write_table, write_text


def write_tsv(path: Path, frame: pd.DataFrame) -> None:
    """Write a BIDS table: tab-separated, empty cells as ``n/a``."""
    write_table(path, frame.astype(object).where(frame.notna(), "n/a"))


def write_demo_root(root: Path, name: str, readme: str, ignore: Sequence[str]) -> list[Path]:
    """Write a demo dataset's ``dataset_description.json``, ``README`` and ``.bidsignore``."""
    description = {
        "Name": f"{name} (brainssl synthetic demo)",
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "License": "CC0",
        "Authors": ["brainssl synthetic cohort generator"],
        "GeneratedBy": [{"Name": "brainssl", "Description": "synthetic subjects, brainssl.synth"}],
    }
    paths = [root / "dataset_description.json", root / "README", root / ".bidsignore"]
    write_json(paths[0], description)
    write_text(paths[1], readme.strip() + "\n")
    write_text(paths[2], "".join(f"{pattern}\n" for pattern in ignore))
    return paths
