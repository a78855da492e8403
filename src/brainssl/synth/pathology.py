"""Tumours: where they sit, how they are painted into the labels, and their clinical model.

Molecular markers and survival follow a documented generative model tied to age and to
image features measured on the painted tumour, so that they are learnable but not trivial:

* ``IDH`` mutant ~ Bernoulli(sigmoid(1.0 - 0.07 (age - 45) - 5.0 (necrosis_fraction - 0.25)))
* ``MGMT`` methylated ~ Bernoulli(sigmoid(0.2 + 0.015 (age - 55) - 1.5 (enhancing_fraction - 0.3)
  + 0.8 IDH))
* survival time T ~ Weibull(shape 1.4, scale 500 d * exp(-lp / 1.4)) with
  lp = 0.035 (age - 55) - 1.1 IDH - 0.6 MGMT + 0.35 log(tumour_volume_ml / 30);
  censoring C ~ Exponential(mean 2200 d) capped at 3650 d (end of follow-up);
  observed time min(T, C), event = T <= C (about a quarter censored).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from brainssl.synth.anatomy import MassEffect, SynthGrid, rotation
from brainssl.synth.template import (
    BG,
    BONE,
    BRAIN_LABELS,
    DEEP,
    EDEMA,
    ENHANCING,
    EXTRA_AXIAL,
    FAT,
    NECROSIS,
    SOFT,
    TISSUE_LABELS,
    WM,
    Template,
)

logger = logging.getLogger(__name__)

__all__ = ["PATHOLOGIES", "TumourPlan", "glioma_markers", "paint_tumour", "plan_tumour"]

PATHOLOGIES = ("none", "glioma", "meningioma", "pituitary")
_BRAIN_CENTRE = np.array([0.0, -18.0, 15.0])  # template world mm, used for surface normals


@dataclass(frozen=True)
class TumourPlan:
    """One tumour in subject world: kind, centre (mm), core radius (mm) and shape parameters."""

    kind: str
    centre: np.ndarray
    radius_mm: float
    axes: np.ndarray  # (3, 3) rotation times per-axis stretch, unit mean
    lobes: np.ndarray  # (3, 3) directions of three lobulation bumps, scaled by their weight
    necrosis_frac: float  # necrotic core radius / core radius (glioma)
    edema_mm: float

    def mass_effect(self) -> MassEffect:
        """The radial push this tumour exerts on surrounding tissue."""
        strength = {"glioma": 0.55, "meningioma": 0.6, "pituitary": 0.4}[self.kind]
        return MassEffect(centre=self.centre, strength=strength, scale_mm=1.4 * self.radius_mm)


def _site(kind: str, template: Template, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Tumour centre in template world and core radius (mm) for one tumour kind."""
    if kind == "glioma":
        radius = rng.uniform(10.0, 22.0)
        return template.glioma_world[rng.integers(len(template.glioma_world))], radius
    if kind == "meningioma":
        radius = rng.uniform(8.0, 18.0)
        point = template.surface_world[rng.integers(len(template.surface_world))]
        normal = (point - _BRAIN_CENTRE) / np.linalg.norm(point - _BRAIN_CENTRE)
        return point + 0.3 * radius * normal, radius
    radius = rng.uniform(5.0, 11.0)
    return template.sella_world + rng.normal(0.0, [0.5, 1.5, 1.5]), radius


def plan_tumour(kind: str, template: Template, pose: np.ndarray, rng: np.random.Generator) -> TumourPlan:
    """Draw a tumour's site, size and shape; its centre is mapped to subject world through ``pose``.

    Args:
        kind: "glioma", "meningioma" or "pituitary".
        template: the cached template (candidate sites).
        pose: (4, 4) subject world -> template world.
        rng: subject generator.

    Returns:
        The :class:`TumourPlan`.

    Raises:
        ValueError: for an unknown ``kind``.
    """
    if kind not in PATHOLOGIES[1:]:
        raise ValueError(f"unknown tumour kind {kind!r}; expected one of {PATHOLOGIES[1:]}")
    centre_t, radius = _site(kind, template, rng)
    inv = np.linalg.inv(pose)
    centre = inv[:3, :3] @ centre_t + inv[:3, 3]
    stretch = np.exp(rng.normal(0.0, 0.15, size=3))
    axes = rotation(rng.uniform(-180, 180, size=3)) @ np.diag(1.0 / (stretch / stretch.mean()))
    lobes = rng.normal(0.0, 1.0, size=(3, 3))
    lobes /= np.linalg.norm(lobes, axis=1, keepdims=True)
    lobes *= rng.uniform(0.0, 0.15, size=(3, 1))
    return TumourPlan(
        kind=kind,
        centre=centre,
        radius_mm=float(radius),
        axes=axes,
        lobes=lobes,
        necrosis_frac=float(rng.uniform(0.0, 0.75)) if kind == "glioma" else 0.0,
        edema_mm=float(rng.uniform(5.0, 22.0) if kind == "glioma" else rng.uniform(0.0, 4.0)),
    )


def _normalised_radius(
    plan: TumourPlan, grid: SynthGrid, reach_mm: float
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Box around the tumour and, inside it, distance from the centre divided by the local radius."""
    inv = np.linalg.inv(grid.affine)
    centre_vox = inv[:3, :3] @ plan.centre + inv[:3, 3]
    half = reach_mm / np.linalg.norm(grid.affine[:3, :3], axis=0)
    lo = np.clip(np.floor(centre_vox - half), 0, grid.shape).astype(int)
    hi = np.clip(np.ceil(centre_vox + half) + 1, 0, grid.shape).astype(int)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    ijk = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi, strict=True)], indexing="ij"), -1)
    rel = ijk @ grid.affine[:3, :3].T + grid.affine[:3, 3] - plan.centre
    dist = np.linalg.norm(rel, axis=-1)
    unit = rel / np.maximum(dist, 1e-6)[..., None]
    shaped = np.linalg.norm(rel @ plan.axes, axis=-1)
    lobulation = 1.0 + (unit @ plan.lobes.T).sum(-1)
    return box, shaped / (plan.radius_mm * lobulation)


def paint_tumour(labels: np.ndarray, plan: TumourPlan, grid: SynthGrid) -> None:
    """Write the tumour labels (NECROSIS, EDEMA, ENHANCING, EXTRA_AXIAL) into ``labels`` in place.

    Glioma: necrotic core and enhancing rim over brain labels, edema over white matter and deep GM.
    Meningioma: homogeneous extra-axial mass inside the skull plus a thin edema rim in brain.
    Pituitary: homogeneous sellar mass.

    Args:
        labels: (X, Y, Z) uint8 synthesis labels on ``grid`` (modified in place).
        plan: the tumour.
        grid: the subject's synthesis grid.
    """
    box, rho = _normalised_radius(plan, grid, plan.radius_mm * 1.5 + plan.edema_mm)
    sub = labels[box]
    edge = 1.0 + plan.edema_mm / plan.radius_mm
    if plan.kind == "glioma":
        brain = np.isin(sub, BRAIN_LABELS)
        white = np.isin(sub, (WM, DEEP))  # vasogenic edema spreads in white matter, spares cortex
        sub[white & (rho < edge)] = EDEMA
        sub[brain & (rho < 1.0)] = ENHANCING
        sub[brain & (rho < plan.necrosis_frac)] = NECROSIS
    elif plan.kind == "meningioma":
        sub[np.isin(sub, TISSUE_LABELS) & (rho < edge)] = EDEMA
        sub[~np.isin(sub, (BG, BONE, SOFT, FAT)) & (rho < 1.0)] = EXTRA_AXIAL
    else:
        sub[(sub != BG) & (rho < 1.0)] = EXTRA_AXIAL


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def glioma_markers(
    age: float,
    necrosis_fraction: float,
    enhancing_fraction: float,
    volume_ml: float,
    rng: np.random.Generator,
) -> tuple[str, int, float, bool]:
    """Draw IDH, MGMT and (censored) overall survival from the model in the module docstring.

    Args:
        age: years.
        necrosis_fraction: necrotic / (necrotic + enhancing) voxels.
        enhancing_fraction: enhancing / all tumour voxels (edema included).
        volume_ml: tumour volume, edema included.
        rng: subject generator.

    Returns:
        (idh "mutant"/"wildtype", mgmt 1/0, observed survival in days, event).
    """
    idh = int(rng.random() < _sigmoid(1.0 - 0.07 * (age - 45.0) - 5.0 * (necrosis_fraction - 0.25)))
    mgmt = int(
        rng.random() < _sigmoid(0.2 + 0.015 * (age - 55.0) - 1.5 * (enhancing_fraction - 0.3) + 0.8 * idh)
    )
    lp = 0.035 * (age - 55.0) - 1.1 * idh - 0.6 * mgmt + 0.35 * np.log(max(volume_ml, 1.0) / 30.0)
    shape = 1.4
    t_event = 500.0 * np.exp(-lp / shape) * (-np.log(1.0 - rng.random())) ** (1.0 / shape)
    t_censor = min(rng.exponential(2200.0), 3650.0)
    return ("mutant" if idh else "wildtype"), mgmt, float(min(t_event, t_censor)), bool(t_event <= t_censor)
