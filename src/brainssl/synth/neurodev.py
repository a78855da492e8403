"""An autism-like regional change for the ABIDE-style demo: frontal cortical thickening.

Documented synthetic effect (the neurodevelopmental task's signal):

* Subjects with diagnosis ``autism`` get a thicker frontal cortex: white-matter voxels of the
  frontal lobe (template world y > :data:`FRONTAL_Y_MM`, above z = :data:`FRONTAL_Z_MM`) lying
  within ``d`` mm of cortical grey matter become grey matter, with
  ``d = THICKENING_MM * LogNormal(0, 0.25)`` drawn per subject (the last partial voxel layer is
  converted at random, as ageing atrophy is). That is a regional volume change (frontal GM up,
  WM down by the same amount) and, through the tissue contrasts, a regional intensity change.
* Controls are unchanged. Early frontal overgrowth and thicker frontal cortex are among the
  reported (and debated) structural findings in autism; the size here, about half of the first
  white-matter voxel layer of the 2 mm demo grid, is chosen so that a 24-40-subject demo can
  show it without every feature finding it at once (3 mm gave AUC 0.97 to the classical
  histogram features), not taken from a study.

Nothing else depends on the diagnosis, so a head that separates the groups has found this
change or a confound: the ABIDE-style writer (:mod:`brainssl.datasets.layouts.abide`) gives the
sites different shares of autistic subjects and different scanners on purpose, and the task
reports a site-only baseline beside the encoders.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from brainssl.synth.template import GM, WM, Template

__all__ = ["FRONTAL_Y_MM", "FRONTAL_Z_MM", "THICKENING_MM", "apply_frontal_thickening", "frontal_wm_depth"]

#: Mean frontal cortical thickening (mm) of an autistic demo subject.
THICKENING_MM = 1.0
#: The frontal lobe: template world (MNI) y above this (anterior to the central sulcus, roughly).
FRONTAL_Y_MM = 5.0
#: ... and z above this (above the orbitofrontal floor and the temporal poles).
FRONTAL_Z_MM = -15.0
_REACH_MM = 8.0


_CACHE: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def frontal_wm_depth(template: Template) -> tuple[np.ndarray, np.ndarray]:
    """Frontal white-matter voxels within 8 mm of cortical GM (flat indices) and their depth in mm.

    Computed once per template (cached while the template lives).
    """
    labels = template.labels
    cached = _CACHE.get(id(labels))
    if cached is not None and cached[0] is labels:
        return cached[1], cached[2]
    dist = ndimage.distance_transform_edt(labels != GM, sampling=(template.grid_mm,) * 3).reshape(-1)
    ijk = np.indices(labels.shape, dtype=np.float32).reshape(3, -1).T
    world = ijk @ template.affine[:3, :3].T.astype(np.float32) + template.affine[:3, 3].astype(np.float32)
    frontal = (world[:, 1] > FRONTAL_Y_MM) & (world[:, 2] > FRONTAL_Z_MM)
    idx = np.flatnonzero((labels.reshape(-1) == WM) & frontal & (dist <= _REACH_MM))
    depth = dist[idx].astype(np.float32)
    for arr in (idx, depth):
        arr.flags.writeable = False
    _CACHE[id(labels)] = (labels, idx, depth)
    return idx, depth


def apply_frontal_thickening(labels: np.ndarray, template: Template, rng: np.random.Generator) -> float:
    """Thicken the frontal cortex of template-space ``labels`` in place (see the module docstring).

    Args:
        labels: (X, Y, Z) uint8 synthesis labels in template space (after ageing atrophy).
        template: the cached template they came from.
        rng: subject generator (draws the subject's thickening and the partial layer).

    Returns:
        The subject's thickening in mm.
    """
    amount = float(THICKENING_MM * rng.lognormal(0.0, 0.25))
    idx, depth = frontal_wm_depth(template)
    flat = labels.reshape(-1)
    prob = np.clip((amount - depth) / template.grid_mm + 1.0, 0.0, 1.0)
    hit = rng.random(idx.size, dtype=np.float32) < prob
    target = idx[hit]
    flat[target[flat[target] == WM]] = GM
    return amount
