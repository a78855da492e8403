"""Subject anatomy: atrophy in template space, then a random smooth warp onto the synthesis grid."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from brainssl.synth.template import CSF_IN, VENT, Template

logger = logging.getLogger(__name__)

__all__ = ["Atrophy", "SynthGrid", "apply_atrophy", "draw_pose", "make_grid", "warp_labels"]


@dataclass(frozen=True)
class Atrophy:
    """How far (mm) each boundary moves: ventricles out, cortex and hippocampus in."""

    ventricle_mm: float
    cortex_mm: float
    hippocampus_mm: float
    mtl_mm: float


@dataclass(frozen=True)
class SynthGrid:
    """Isotropic synthesis grid of one subject: shape and (4, 4) voxel -> subject world affine."""

    shape: tuple[int, int, int]
    affine: np.ndarray


def atrophy_for(age: float, cdr: float, rng: np.random.Generator) -> Atrophy:
    """Draw atrophy amounts from age (normal ageing) and CDR (Alzheimer-like atrophy).

    Normal ageing: ventricles grow ~0.06 mm/year and cortex thins ~0.012 mm/year after 20.
    Alzheimer-like: extra ventricular growth and hippocampal/medial temporal loss scale with CDR.
    """
    years = max(age - 20.0, 0.0)
    jitter = rng.lognormal(0.0, 0.2, size=4)
    return Atrophy(
        ventricle_mm=float((0.06 * years + 1.2 * cdr) * jitter[0]),
        cortex_mm=float((0.012 * years + 0.4 * cdr) * jitter[1]),
        hippocampus_mm=float((0.008 * years + 1.4 * cdr) * jitter[2]),
        mtl_mm=float((0.01 * years + 1.5 * cdr) * jitter[3]),
    )


def _convert(
    flat: np.ndarray,
    idx: np.ndarray,
    dist: np.ndarray,
    amount: float,
    grid_mm: float,
    new_label: int,
    rng: np.random.Generator,
) -> None:
    """Relabel voxels within ``amount`` mm; the last partial voxel layer is converted at random."""
    if amount <= 0 or idx.size == 0:
        return
    prob = np.clip((amount - dist) / grid_mm + 1.0, 0.0, 1.0)
    hit = rng.random(idx.size, dtype=np.float32) < prob
    flat[idx[hit]] = new_label


def apply_atrophy(template: Template, atrophy: Atrophy, rng: np.random.Generator) -> np.ndarray:
    """Return a copy of the template labels with the subject's atrophy applied.

    Args:
        template: the cached template.
        atrophy: boundary shifts in mm.
        rng: subject generator.

    Returns:
        (X, Y, Z) uint8 synthesis labels in template space.
    """
    labels = template.labels.copy()
    flat = labels.reshape(-1)
    g = template.grid_mm
    # Cortex thins from the CSF side; hippocampus and MTL shrink, the temporal horn fills in.
    _convert(flat, template.cortex_idx, template.cortex_dist, atrophy.cortex_mm, g, CSF_IN, rng)
    _convert(flat, template.mtl_idx, template.mtl_dist, atrophy.mtl_mm, g, CSF_IN, rng)
    _convert(flat, template.hippo_idx, template.hippo_dist, atrophy.hippocampus_mm, g, VENT, rng)
    _convert(flat, template.vent_idx, template.vent_dist, atrophy.ventricle_mm, g, VENT, rng)
    return labels


def rotation(angles_deg: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix from three angles (degrees) about x, y then z."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def draw_pose(rng: np.random.Generator, head_scale: float) -> np.ndarray:
    """(4, 4) subject world -> template world: head size, small rotation and shift."""
    scale = head_scale * np.exp(rng.normal(0.0, 0.02, size=3))
    pose = np.eye(4)
    pose[:3, :3] = rotation(rng.normal(0.0, 5.0, size=3)) @ np.diag(1.0 / scale)
    pose[:3, 3] = rng.normal(0.0, 3.0, size=3)
    return pose


def make_grid(template: Template, pose: np.ndarray, oblique: np.ndarray, crop_mm: float) -> SynthGrid:
    """Grid covering the subject's head in an (optionally oblique) frame, inferior part cropped.

    Args:
        template: the cached template.
        pose: (4, 4) subject world -> template world.
        oblique: (3, 3) rotation of the grid axes in subject world (identity: RAS grid).
        crop_mm: how much of the inferior head (neck) lies outside the field of view.

    Returns:
        The :class:`SynthGrid`.
    """
    g = template.grid_mm
    inv = np.linalg.inv(pose)
    subj = template.head_points_world @ inv[:3, :3].T + inv[:3, 3]
    frame = subj @ oblique  # coordinates along the grid axes
    start = frame.min(0) - 2 * g
    stop = frame.max(0) + 2 * g
    start[2] += crop_mm
    shape = tuple(int(n) for n in np.ceil((stop - start) / g).astype(int))
    affine = np.eye(4)
    affine[:3, :3] = oblique * g
    affine[:3, 3] = oblique @ start
    return SynthGrid(shape=shape, affine=affine)


def _cosine_field(shape: tuple[int, int, int], coefs: np.ndarray) -> np.ndarray:
    """Smooth field sum_abc coefs[a,b,c] cos(pi a x) cos(pi b y) cos(pi c z), separable, float32."""
    bases = []
    for n, k in zip(shape, coefs.shape, strict=True):
        u = (np.arange(n, dtype=np.float32) + 0.5) / n
        bases.append(np.cos(np.pi * np.outer(u, np.arange(k, dtype=np.float32))))
    field = np.tensordot(coefs.astype(np.float32), bases[2], axes=([2], [1]))  # (a, b, z)
    field = np.tensordot(field, bases[1], axes=([1], [1]))  # (a, z, y)
    field = np.tensordot(field, bases[0], axes=([0], [1]))  # (z, y, x)
    return np.ascontiguousarray(field.transpose(2, 1, 0), dtype=np.float32)


def smooth_field(
    shape: tuple[int, int, int], rng: np.random.Generator, order: int, amplitude: float
) -> np.ndarray:
    """Random smooth field of RMS about ``amplitude``, built from cosines up to ``order``."""
    freq = np.add.outer(np.add.outer(np.arange(order), np.arange(order)), np.arange(order))
    coefs = rng.normal(0.0, 1.0, size=(order,) * 3) / (1.0 + freq) ** 1.5
    coefs[0, 0, 0] = 0.0
    field = _cosine_field(shape, coefs)
    field *= np.float32(amplitude / max(float(field.std()), 1e-9))
    return field


@dataclass(frozen=True)
class MassEffect:
    """Radial push away from ``centre`` (subject world mm): tissue at r is moved from r*(1-a*exp(-r²/s²))."""

    centre: np.ndarray
    strength: float
    scale_mm: float


def warp_labels(
    labels: np.ndarray,
    template: Template,
    grid: SynthGrid,
    pose: np.ndarray,
    rng: np.random.Generator,
    masses: tuple[MassEffect, ...] = (),
) -> np.ndarray:
    """Sample template-space labels on the subject grid through pose, mass effect and a smooth warp.

    Args:
        labels: (X, Y, Z) uint8 labels in template space.
        template: the cached template (its affine).
        grid: the subject's synthesis grid.
        pose: (4, 4) subject world -> template world.
        rng: subject generator (draws the non-linear displacement).
        masses: tumour mass effects, applied in subject world before the pose.

    Returns:
        (grid.shape) uint8 labels (nearest-neighbour sampling, background outside the template).
    """
    world = [np.asarray(c) for c in _grid_world(grid)]
    for mass in masses:
        world = _push(world, mass)
    to_vox = np.linalg.inv(template.affine) @ pose
    disp_vox = 2.0 / template.grid_mm  # 2 mm RMS non-linear displacement
    coords = np.empty((3, *grid.shape), dtype=np.float32)
    for axis in range(3):
        row = to_vox[axis]
        coords[axis] = row[0] * world[0] + row[1] * world[1] + row[2] * world[2] + row[3]
        coords[axis] += smooth_field(grid.shape, rng, order=4, amplitude=disp_vox)
    return ndimage.map_coordinates(labels, coords, order=0, mode="constant", cval=0)


def _grid_world(grid: SynthGrid) -> list[np.ndarray]:
    """Broadcastable world coordinates (x, y, z) of every grid voxel, float32."""
    axes = [np.arange(n, dtype=np.float32) for n in grid.shape]
    i, j, k = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    aff = grid.affine.astype(np.float32)
    return [aff[r, 0] * i + aff[r, 1] * j + aff[r, 2] * k + aff[r, 3] for r in range(3)]


def _push(world: list[np.ndarray], mass: MassEffect) -> list[np.ndarray]:
    """Apply one radial mass effect to world coordinates."""
    c = mass.centre.astype(np.float32)
    rel = [
        np.broadcast_to(w, np.broadcast_shapes(*(x.shape for x in world))) - c[a] for a, w in enumerate(world)
    ]
    r2 = rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2
    shrink = 1.0 - np.float32(mass.strength) * np.exp(-r2 / np.float32(mass.scale_mm**2))
    return [c[a] + rel[a] * shrink for a in range(3)]


def label_volume_ml(labels: np.ndarray, values: tuple[int, ...], voxel_ml: float) -> float:
    """Volume in ml of the voxels whose label is in ``values``."""
    return float(np.isin(labels, values).sum() * voxel_ml)


def dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Binary dilation with the 6-neighbourhood (thin wrapper kept for readability)."""
    return ndimage.binary_dilation(mask, iterations=iterations) if iterations > 0 else mask
