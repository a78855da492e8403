"""File surgery for the bad-input tests: damage a copy of a demo dataset the way real data go bad.

Shared by the manifest matrix (``test_datasets_bad_inputs.py``) and the mixed workflow run
(``test_workflow_mixed_bad_inputs.py``), so that both damage files in the same ways.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from deny_site.sitecustomize import ENV as DENY_ENV
from deny_site.sitecustomize import Deny

__all__ = [
    "DENY_ENV",
    "Deny",
    "add_latin1_column",
    "all_negative",
    "drop_column",
    "edit_csv",
    "flipped",
    "folder_in_place",
    "not_a_brain",
    "read_spec",
    "rewrite_nifti",
    "set_cell",
    "set_cell_where",
    "small_nifti",
    "stretched",
    "symlink_loop",
    "truncate",
    "write_spec",
]


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def rewrite_nifti(
    path: Path, change: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
) -> None:
    img = nib.load(path)
    data, affine = change(np.asarray(img.dataobj), img.affine.copy())
    out = nib.Nifti1Image(data, affine, img.header.copy())
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    nib.save(out, path)


def flipped(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same world content stored with the first axis reversed: same shape, other orientation."""
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, data.shape[0] - 1
    return np.ascontiguousarray(data[::-1]), affine @ flip


def stretched(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    affine[:3, :3] *= 1.25
    return data, affine


def all_negative(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every voxel below zero (a sign-flipped export): readable, finite, not constant."""
    values = np.asarray(data, dtype=np.float32)
    return -(values - values.min() + 1.0), affine


def not_a_brain(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A readable scan that is no head: a small bright ball (a phantom) in faint noise.

    The ball fills a tenth of the field of view, far below any brain volume that QC accepts.
    """
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in data.shape], indexing="ij"))
    radius = np.sqrt((grid**2).sum(axis=0))
    noise = np.random.default_rng(0).normal(0.0, 1.0, data.shape)
    ball = np.where(radius < 0.25, 400.0, 0.0) + np.abs(noise)
    return ball.astype(np.float32), affine


def edit_csv(path: Path, change: Callable[[list[list[str]]], None]) -> None:
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    change(rows)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")


def set_cell(column: str, row: int, value: str) -> Callable[[list[list[str]]], None]:
    """Set ``column`` of data row ``row`` (0-based; the file's row ``row + 2``)."""

    def change(rows: list[list[str]]) -> None:
        rows[row + 1][rows[0].index(column)] = value

    return change


def set_cell_where(
    key: str, match: Callable[[str], bool], column: str, value: str
) -> Callable[[list[list[str]]], None]:
    """Set ``column`` in every data row whose ``key`` cell ``match`` accepts (at least one)."""

    def change(rows: list[list[str]]) -> None:
        at, to = rows[0].index(key), rows[0].index(column)
        hits = [cells for cells in rows[1:] if match(cells[at])]
        assert hits, f"no row with a matching {key}"
        for cells in hits:
            cells[to] = value

    return change


def drop_column(column: str) -> Callable[[list[list[str]]], None]:
    def change(rows: list[list[str]]) -> None:
        index = rows[0].index(column)
        for cells in rows:
            del cells[index]

    return change


def add_latin1_column(path: Path, row: int) -> None:
    """Append a free-text column whose cell in data row ``row`` holds a latin-1 byte (é)."""
    lines = path.read_bytes().split(b"\n")
    lines[0] += b",NOTE"
    for number in range(1, len(lines)):
        if lines[number]:
            lines[number] += b",Gu\xe9rin" if number == row + 1 else b","
    path.write_bytes(b"\n".join(lines))


def small_nifti(path: Path, size: int = 4) -> None:
    img = nib.load(path)
    data = np.ones((size, size, size), dtype=np.float32)
    nib.save(nib.Nifti1Image(data, img.affine), path)


def symlink_loop(path: Path) -> None:
    path.unlink()
    os.symlink(path.name, path)  # points at itself


def folder_in_place(path: Path) -> None:
    path.unlink()
    path.mkdir()


def read_spec(root: Path) -> dict:
    return json.loads((root / "dataset.json").read_text(encoding="utf-8"))


def write_spec(root: Path, spec: dict) -> None:
    (root / "dataset.json").write_text(json.dumps(spec, indent=2), encoding="utf-8")
