"""Post-stroke lesions whose appearance follows the time since the stroke (ATLAS-style demo).

Documented model, ``t`` = days from stroke onset to the scan (the demo draws ``t`` uniform on
[1, 365]; :mod:`brainssl.datasets.layouts.atlas`):

* **Site and size.** One infarct in a hemisphere: the centre is a deep white-matter point at
  least 20 mm off the midline (a middle-cerebral-artery-like territory), the initial radius
  ``r0 ~ U(16, 20)`` mm (large, and alike so that the size tells the time), an ellipsoid with
  mild lobulation (drawn like the tumours' shapes).
* **Acute swelling** (cytotoxic then vasogenic oedema), ``s(t) = exp(-t / 10)``: the lesion
  pushes the surrounding tissue outwards (a radial mass effect of strength ``0.35 s`` over
  ``1.5 r0``) and is ``1 + 0.25 s`` times its later size. The whole lesion is oedema
  (``EDEMA``: T1 hypointense, T2/FLAIR hyperintense), sulci inside it are effaced.
* **Cavitation** (liquefaction, encephalomalacia), ``c(t) = 1 - exp(-t / 90)``: the core out
  to ``0.8 c`` of the lesion radius becomes fluid (CSF signal: T1 and FLAIR dark, T2 bright);
  the rim stays gliotic (``EDEMA`` signal).
* **Atrophy** (tissue loss, ex-vacuo retraction), ``a(t) = 1 - exp(-t / 200)``: the tissue
  around the lesion is pulled in (a mass effect of strength ``-0.25 a`` over ``2 r0``), the
  lesion shrinks to ``1 - 0.4 a`` of its size, and the ventricles widen ex vacuo by
  ``4 a`` mm (both sides, as ageing widens them: :func:`enlarge_ventricles`).

So the lesion radius is ``r0 (1 + 0.25 s) (1 - 0.4 a)``; early scans show a swollen,
homogeneous oedematous lesion pushing on its neighbours, later scans a fluid cavity with a
gliotic rim in retracted tissue. The lesion (oedema, rim and cavity) is the ATLAS-style
``label-L_desc-T1lesion_mask``. Nothing else depends on ``t``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from brainssl.synth.anatomy import MassEffect, SynthGrid, rotation
from brainssl.synth.template import CSF_IN, DEEP, EDEMA, GM, HIPPO_L, HIPPO_R, VENT, WM, Template

__all__ = ["StrokePlan", "appearance", "enlarge_ventricles", "paint_stroke", "plan_stroke"]

#: Time constants (days) of swelling, cavitation and atrophy.
SWELLING_DAYS, CAVITATION_DAYS, ATROPHY_DAYS = 10.0, 90.0, 200.0
#: Ex-vacuo ventricular widening (mm) once atrophy is complete.
EX_VACUO_MM = 4.0
_TISSUE = (GM, WM, DEEP, HIPPO_L, HIPPO_R, CSF_IN)


def appearance(days: float) -> tuple[float, float, float]:
    """``(swelling, cavitation, atrophy)`` in [0, 1] at ``days`` after onset (module docstring)."""
    t = max(float(days), 0.0)
    return (
        float(np.exp(-t / SWELLING_DAYS)),
        float(1.0 - np.exp(-t / CAVITATION_DAYS)),
        float(1.0 - np.exp(-t / ATROPHY_DAYS)),
    )


@dataclass(frozen=True)
class StrokePlan:
    """One infarct in subject world: centre (mm), initial radius, shape and its age in days."""

    centre: np.ndarray
    radius0_mm: float
    axes: np.ndarray  # (3, 3) rotation times per-axis stretch, unit mean
    lobes: np.ndarray  # (3, 3) lobulation directions scaled by their weight
    days: float

    @property
    def radius_mm(self) -> float:
        """The lesion radius at the scan: swollen early, retracted late."""
        swelling, _, atrophy = appearance(self.days)
        return self.radius0_mm * (1.0 + 0.25 * swelling) * (1.0 - 0.4 * atrophy)

    def mass_effects(self) -> tuple[MassEffect, ...]:
        """The outward push of the swelling and the inward pull of the atrophy."""
        swelling, _, atrophy = appearance(self.days)
        effects = []
        if swelling > 1e-3:
            effects.append(MassEffect(self.centre, 0.35 * swelling, 1.5 * self.radius0_mm))
        if atrophy > 1e-3:
            effects.append(MassEffect(self.centre, -0.25 * atrophy, 2.0 * self.radius0_mm))
        return tuple(effects)


def enlarge_ventricles(
    labels: np.ndarray, template: Template, days: float, rng: np.random.Generator
) -> float:
    """Widen the ventricles of template-space ``labels`` in place by ``4 a(t)`` mm; return the mm.

    White matter and deep grey matter within that distance of a ventricle become ventricle (the
    last partial voxel layer at random), as :func:`brainssl.synth.anatomy.apply_atrophy` does.
    """
    amount = EX_VACUO_MM * appearance(days)[2]
    prob = np.clip((amount - template.vent_dist) / template.grid_mm + 1.0, 0.0, 1.0)
    hit = rng.random(template.vent_idx.size, dtype=np.float32) < prob
    if amount > 0:
        labels.reshape(-1)[template.vent_idx[hit]] = VENT
    return float(amount)


def plan_stroke(days: float, template: Template, pose: np.ndarray, rng: np.random.Generator) -> StrokePlan:
    """Draw an infarct's site, size and shape; its centre goes to subject world through ``pose``.

    Args:
        days: time from onset to the scan (>= 0).
        template: the cached template (deep white-matter candidate sites).
        pose: (4, 4) subject world -> template world.
        rng: subject generator.

    Raises:
        ValueError: for a negative ``days``.
    """
    if days < 0:
        raise ValueError(f"days since the stroke must be >= 0, got {days}")
    sites = template.glioma_world[np.abs(template.glioma_world[:, 0]) > 20.0]
    if len(sites) == 0:
        sites = template.glioma_world
    centre_t = sites[rng.integers(len(sites))]
    inv = np.linalg.inv(pose)
    stretch = np.exp(rng.normal(0.0, 0.15, size=3))
    lobes = rng.normal(0.0, 1.0, size=(3, 3))
    lobes /= np.linalg.norm(lobes, axis=1, keepdims=True)
    return StrokePlan(
        centre=inv[:3, :3] @ centre_t + inv[:3, 3],
        radius0_mm=float(rng.uniform(16.0, 20.0)),
        axes=rotation(rng.uniform(-180, 180, size=3)) @ np.diag(1.0 / (stretch / stretch.mean())),
        lobes=lobes * rng.uniform(0.0, 0.15, size=(3, 1)),
        days=float(days),
    )


def paint_stroke(labels: np.ndarray, plan: StrokePlan, grid: SynthGrid) -> np.ndarray:
    """Paint the lesion into ``labels`` in place; return its mask (uint8, 1 = lesion).

    Brain tissue and sulcal CSF inside the lesion become oedema/gliosis (``EDEMA``), the
    core inside ``0.8 c(t)`` of the radius becomes fluid (``CSF_IN``).
    """
    radius = plan.radius_mm
    _, cavitation, _ = appearance(plan.days)
    inv = np.linalg.inv(grid.affine)
    centre_vox = inv[:3, :3] @ plan.centre + inv[:3, 3]
    half = 1.5 * radius / np.linalg.norm(grid.affine[:3, :3], axis=0)
    lo = np.clip(np.floor(centre_vox - half), 0, grid.shape).astype(int)
    hi = np.clip(np.ceil(centre_vox + half) + 1, 0, grid.shape).astype(int)
    mask = np.zeros(labels.shape, dtype=np.uint8)
    if np.any(hi <= lo):
        return mask
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    ijk = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi, strict=True)], indexing="ij"), -1)
    rel = ijk @ grid.affine[:3, :3].T + grid.affine[:3, 3] - plan.centre
    unit = rel / np.maximum(np.linalg.norm(rel, axis=-1), 1e-6)[..., None]
    rho = np.linalg.norm(rel @ plan.axes, axis=-1) / (radius * (1.0 + (unit @ plan.lobes.T).sum(-1)))
    sub = labels[box]
    lesion = np.isin(sub, _TISSUE) & (rho < 1.0)
    sub[lesion] = EDEMA
    sub[lesion & (rho < 0.8 * cavitation)] = CSF_IN
    mask[box] = lesion.astype(np.uint8)
    return mask
