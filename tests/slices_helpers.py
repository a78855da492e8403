"""Tiny preprocessed-looking volumes and tables for the slices tests (no preprocess stage needed).

Each subject: RAS volumes of shape (20, 24, 26) at 2 mm, an ellipsoidal brain mask spanning
axial slices 4..21, intensities z-scored within the brain with background 0, and (for the
first subject) a tumour segmentation with BraTS labels 1/2/4.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from brainssl.io import save_nifti, write_table

SHAPE = (20, 24, 26)
BRAIN_Z = (4, 21)
SPACING = 2.0


def brain_mask() -> np.ndarray:
    x, y, z = np.meshgrid(*[np.arange(n, dtype=float) for n in SHAPE], indexing="ij")
    cz = (BRAIN_Z[0] + BRAIN_Z[1]) / 2
    rz = (BRAIN_Z[1] - BRAIN_Z[0]) / 2 + 0.49
    return ((x - 9.5) / 8.5) ** 2 + ((y - 11.5) / 10.5) ** 2 + ((z - cz) / rz) ** 2 <= 1.0


def write_subject(root: Path, dataset: str, subject: str, rng: np.random.Generator, seg: bool) -> list[dict]:
    """Write one subject's T1w and T2w volumes, mask (and seg); return its table rows."""
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    mask = brain_mask()
    folder = root / dataset / subject / "ses-none"
    save_nifti(folder / "mask.nii.gz", nib.Nifti1Image(mask.astype(np.uint8), affine))
    seg_path = ""
    if seg:
        labels = np.zeros(SHAPE, np.uint8)
        labels[8:12, 9:14, 10:16] = 2
        labels[9:11, 10:13, 11:15] = 4
        labels[10, 11, 12:14] = 1
        seg_path = str(folder / "seg.nii.gz")
        save_nifti(seg_path, nib.Nifti1Image(labels, affine))
    rows = []
    for contrast in ("T1w", "T2w"):
        data = rng.normal(0.0, 1.0, SHAPE).astype(np.float32)
        data = np.where(mask, data, 0.0).astype(np.float32)
        path = folder / f"{contrast}.nii.gz"
        save_nifti(path, nib.Nifti1Image(data, affine))
        rows.append(
            {
                "dataset": dataset,
                "subject": subject,
                "session": "ses-none",
                "contrast": contrast,
                "path": str(path),
                "mask_path": str(folder / "mask.nii.gz"),
                "seg_path": seg_path,
                "shape": "x".join(map(str, SHAPE)),
                "spacing_mm": SPACING,
            }
        )
    return rows


def write_table_fixture(root: Path, dataset: str = "brats21", n_subjects: int = 3, seed: int = 0) -> Path:
    """Write ``n_subjects`` subjects (first with a seg) and ``<root>/<dataset>/table.tsv``."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_subjects):
        rows += write_subject(root, dataset, f"sub-{i:012x}", rng, seg=(i == 0))
    table = root / dataset / "table.tsv"
    write_table(table, pd.DataFrame(rows))
    return table
