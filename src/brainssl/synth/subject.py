"""Public data classes and :func:`generate_subject`, which chains the generative model."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
from nibabel import orientations
from scipy import ndimage

from brainssl.synth import acquisition as acq
from brainssl.synth.anatomy import (
    apply_atrophy,
    atrophy_for,
    draw_pose,
    make_grid,
    rotation,
    warp_labels,
)
from brainssl.synth.contrast import CONTRASTS, draw_tissue_params, signal_lut, texture_lut
from brainssl.synth.neurodev import apply_frontal_thickening
from brainssl.synth.pathology import PATHOLOGIES, TumourPlan, glioma_markers, paint_tumour, plan_tumour
from brainssl.synth.stroke import enlarge_ventricles, paint_stroke, plan_stroke
from brainssl.synth.template import (
    BONE,
    BRAIN_LABELS,
    CSF_IN,
    CSF_OUT,
    DEEP,
    EDEMA,
    ENHANCING,
    EXTRA_AXIAL,
    FAT,
    GM,
    HIPPO_L,
    HIPPO_R,
    NECROSIS,
    SOFT,
    VENT,
    WM,
    load_template,
)

logger = logging.getLogger(__name__)

__all__ = [
    "SubjectMeta",
    "SubjectParams",
    "SyntheticSubject",
    "Volume",
    "generate_subject",
    "stable_int_hash",
]

# Public tissue classes (SyntheticSubject.tissue).
TISSUE_CLASSES = {
    0: "background/air",
    1: "CSF",
    2: "GM",
    3: "WM",
    4: "skull/bone",
    5: "scalp/soft tissue",
    6: "deep GM",
    7: "lesion",
}
_TISSUE_LUT = np.zeros(256, dtype=np.uint8)
for _src, _dst in (
    (CSF_IN, 1),
    (CSF_OUT, 1),
    (VENT, 1),
    (GM, 2),
    (HIPPO_L, 2),
    (HIPPO_R, 2),
    (WM, 3),
    (BONE, 4),
    (SOFT, 5),
    (FAT, 5),
    (DEEP, 6),
    (NECROSIS, 7),
    (EDEMA, 7),
    (ENHANCING, 7),
    (EXTRA_AXIAL, 7),
):
    _TISSUE_LUT[_src] = _dst
_BRATS_LUT = np.zeros(256, dtype=np.uint8)
_BRATS_LUT[[NECROSIS, EDEMA, ENHANCING, EXTRA_AXIAL]] = [1, 2, 4, 4]
_HIPPO_LUT = np.zeros(256, dtype=np.uint8)
_HIPPO_LUT[[HIPPO_L, HIPPO_R]] = [1, 2]
#: Diagnoses a synthetic subject can have.
DIAGNOSES = ("control", "alzheimer", "autism")


@dataclass
class Volume:
    """A 3D array with its voxel -> world affine.

    Attributes:
        data: (X, Y, Z) array in the acquisition grid.
        affine: (4, 4) voxel -> world (RAS+ mm, nibabel convention).
    """

    data: np.ndarray
    affine: np.ndarray


@dataclass
class SubjectMeta:
    """Ground truth and acquisition facts of one synthetic subject.

    ``tumor_box3d`` is (i0, j0, k0, i1, j1, k1) in acquisition voxels, end exclusive.
    ``voxel_size`` is in mm along the stored array axes. ``orientation`` is the axis code
    string of the array ("RAS", "LPS", "LAS") or "oblique" when its axes are rotated.
    ``days_since_event`` is the age of a stroke lesion (:mod:`brainssl.synth.stroke`) and
    ``thickening_mm`` the frontal cortical thickening of an autistic subject
    (:mod:`brainssl.synth.neurodev`).
    """

    subject_id: str
    age: float
    sex: str
    site: str
    diagnosis: str
    cdr: float
    pathology: str
    idh: str | None
    mgmt: int | None
    survival_days: float | None
    event: bool | None
    snr: float
    voxel_size: tuple[float, float, float]
    orientation: str
    brain_volume_ml: float
    tumor_box3d: tuple[int, int, int, int, int, int] | None
    tumor_volume_ml: float = 0.0
    necrosis_fraction: float | None = None
    enhancing_fraction: float | None = None
    hippocampus_ml: float = 0.0
    contrasts: tuple[str, ...] = ()
    seed: int = 0
    days_since_event: float | None = None
    lesion_volume_ml: float = 0.0
    thickening_mm: float = 0.0


@dataclass
class SyntheticSubject:
    """One synthetic head: images on one shared grid plus every ground-truth map.

    ``tissue`` classes: 0 background/air, 1 CSF, 2 GM, 3 WM, 4 skull/bone, 5 scalp/soft tissue,
    6 deep GM, 7 lesion. ``hippocampus``: 0, 1 left, 2 right. ``tumor``: BraTS labels
    0, 1 necrosis, 2 edema, 4 enhancing (meningioma and pituitary tumours are 4).
    ``lesion``: the stroke lesion mask (1 = lesion) of a subject with ``stroke_days``, else None.
    """

    meta: SubjectMeta
    images: dict[str, Volume]
    brain_mask: Volume
    tissue: Volume
    hippocampus: Volume
    tumor: Volume
    bias_field: Volume
    lesion: Volume | None = None


@dataclass(frozen=True)
class SubjectParams:
    """Cohort-level choices for :func:`generate_subject`.

    ``site_index`` fixes the subject's site (an index into ``sites``, also choosing the
    scanner's intensity scaling) instead of drawing it; ``stroke_days`` gives the subject a
    stroke lesion that old (:mod:`brainssl.synth.stroke`); diagnosis ``autism`` adds the
    frontal thickening of :mod:`brainssl.synth.neurodev`.
    """

    pathology: str | None = None
    diagnosis: str | None = None
    age_range: tuple[float, float] = (20, 85)
    contrasts: tuple[str, ...] = ("T1w", "T2w", "FLAIR")
    grid_mm: float = 2.0
    sites: tuple[str, ...] = ("siteA", "siteB", "siteC")
    anisotropic_prob: float = 0.3
    oblique_prob: float = 0.2
    orientations: tuple[str, ...] = ("RAS", "LPS", "LAS")
    site_index: int | None = None
    stroke_days: float | None = None

    def __post_init__(self) -> None:
        if self.pathology is not None and self.pathology not in PATHOLOGIES:
            raise ValueError(f"pathology must be None or one of {PATHOLOGIES}, got {self.pathology!r}")
        if self.diagnosis not in (None, *DIAGNOSES):
            raise ValueError(f"diagnosis must be None or one of {DIAGNOSES}, got {self.diagnosis!r}")
        bad = [m for m in self.contrasts if m not in CONTRASTS]
        if bad or not self.contrasts:
            raise ValueError(f"contrasts must be a non-empty subset of {CONTRASTS}, got {self.contrasts}")
        if not self.sites:
            raise ValueError("sites must not be empty")
        if self.site_index is not None and not 0 <= self.site_index < len(self.sites):
            raise ValueError(f"site_index must index sites {self.sites}, got {self.site_index}")
        if self.stroke_days is not None and not self.stroke_days >= 0:
            raise ValueError(f"stroke_days must be None or >= 0, got {self.stroke_days}")
        if not 0 <= self.age_range[0] <= self.age_range[1]:
            raise ValueError(f"age_range must be (low, high) with 0 <= low <= high, got {self.age_range}")


def stable_int_hash(text: str) -> int:
    """A 64-bit integer from ``text`` that is the same in every process (sha256, not hash())."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


@dataclass(frozen=True)
class _Demographics:
    age: float
    sex: str
    diagnosis: str
    cdr: float
    pathology: str


def _draw_demographics(params: SubjectParams, rng: np.random.Generator) -> _Demographics:
    """Age uniform in range; Alzheimer more likely with age (when not forced); CDR from diagnosis."""
    age = float(rng.uniform(*params.age_range))
    sex = "M" if rng.random() < 0.5 else "F"
    pathology = params.pathology or "none"
    diagnosis = params.diagnosis
    if diagnosis is None:
        p_ad = 0.5 / (1.0 + np.exp(-(age - 72.0) / 5.0)) if pathology == "none" else 0.0
        diagnosis = "alzheimer" if rng.random() < p_ad else "control"
    cdr = float(rng.choice([0.5, 1.0, 2.0], p=[0.5, 0.35, 0.15])) if diagnosis == "alzheimer" else 0.0
    return _Demographics(age=age, sex=sex, diagnosis=diagnosis, cdr=cdr, pathology=pathology)


def _draw_acquisition(params: SubjectParams, rng: np.random.Generator) -> acq.Acquisition:
    """Site, SNR, thick-slice axis and storage orientation."""
    thick = rng.random() < params.anisotropic_prob
    oblique = rng.random() < params.oblique_prob
    axcodes = params.orientations[int(rng.integers(len(params.orientations)))]
    site = int(rng.integers(len(params.sites)))  # drawn even when fixed: the other draws stay put
    return acq.Acquisition(
        site_index=site if params.site_index is None else int(params.site_index),
        snr=float(rng.uniform(12.0, 40.0)),
        thick_axis=int(rng.choice([2, 2, 1, 0])) if thick else None,
        thick_factor=3 if thick else 1,
        orientation="oblique" if oblique else axcodes,
        axcodes=axcodes,
    )


def _oblique_rotation(acquisition: acq.Acquisition, rng: np.random.Generator) -> np.ndarray:
    if acquisition.orientation != "oblique":
        return np.eye(3)
    angles = rng.uniform(8.0, 20.0, size=3) * rng.choice([-1.0, 1.0], size=3) * (rng.random(3) < 0.7)
    angles[int(rng.integers(3))] = rng.uniform(10.0, 20.0)
    return rotation(angles)


def _images(
    labels: np.ndarray,
    contrasts: tuple[str, ...],
    bias: np.ndarray,
    acquisition: acq.Acquisition,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Contrasts from labels: signal LUT, texture, PSF blur, bias, thick slices, noise, site scaling."""
    table = draw_tissue_params(rng)
    tex_amp = texture_lut()[labels]
    coarse = rng.standard_normal(tuple(-(-n // 2) for n in labels.shape), dtype=np.float32)
    texture = np.repeat(np.repeat(np.repeat(coarse, 2, 0), 2, 1), 2, 2)[
        tuple(slice(0, n) for n in labels.shape)
    ]
    modulation = 1.0 + tex_amp * texture
    scale, offset = acq.SITE_SCALING[acquisition.site_index % len(acq.SITE_SCALING)]
    brain = np.isin(labels, (GM, WM))
    out: dict[str, np.ndarray] = {}
    for contrast in contrasts:
        lut = signal_lut(contrast, table)
        clean = ndimage.gaussian_filter(lut[labels] * modulation, 0.6, truncate=2.5) * bias
        clean = acq.block_mean(clean, acquisition.thick_axis, acquisition.thick_factor)
        sigma = float(np.mean(lut[[GM, WM]])) / acquisition.snr if brain.any() else 0.01
        noisy = acq.rician(clean, sigma, rng)
        out[contrast] = (noisy * np.float32(scale) + np.float32(offset)).astype(np.float32)
    return out


def _tumour_stats(labels: np.ndarray, voxel_ml: float) -> dict[str, float]:
    n_nec, n_edema, n_enh, n_extra = (
        int((labels == v).sum()) for v in (NECROSIS, EDEMA, ENHANCING, EXTRA_AXIAL)
    )
    total = n_nec + n_edema + n_enh + n_extra
    return {
        "volume_ml": total * voxel_ml,
        "necrosis_fraction": n_nec / max(n_nec + n_enh, 1),
        "enhancing_fraction": (n_enh + n_extra) / max(total, 1),
    }


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int, int, int] | None:
    if not mask.any():
        return None
    idx = np.argwhere(mask)
    lo, hi = idx.min(0), idx.max(0) + 1
    return (int(lo[0]), int(lo[1]), int(lo[2]), int(hi[0]), int(hi[1]), int(hi[2]))


def generate_subject(seed: int, subject_id: str, params: SubjectParams) -> SyntheticSubject:
    """Generate one synthetic whole-head subject, deterministic in (seed, subject_id, params).

    Args:
        seed: non-negative cohort seed.
        subject_id: subject identifier (hashed with sha256 into the subject's generator).
        params: cohort-level choices.

    Returns:
        The :class:`SyntheticSubject` (float32 images, uint8 label maps, all on one grid).

    Raises:
        ValueError: if ``seed`` is negative or ``subject_id`` empty.
    """
    if seed < 0 or not subject_id:
        raise ValueError(f"seed must be >= 0 and subject_id non-empty, got {seed!r}, {subject_id!r}")
    rng = np.random.default_rng([seed, stable_int_hash(subject_id)])
    template = load_template(params.grid_mm)
    demo = _draw_demographics(params, rng)
    acquisition = _draw_acquisition(params, rng)
    head_scale = (0.89 if demo.sex == "M" else 0.86) * float(np.exp(rng.normal(0.0, 0.025)))
    pose = draw_pose(rng, head_scale)
    grid = make_grid(
        template, pose, _oblique_rotation(acquisition, rng), crop_mm=float(rng.uniform(0.0, 45.0))
    )
    atrophied = apply_atrophy(template, atrophy_for(demo.age, demo.cdr, rng), rng)
    thickening = apply_frontal_thickening(atrophied, template, rng) if demo.diagnosis == "autism" else 0.0
    if params.stroke_days is not None:  # ex-vacuo ventricular widening (brainssl.synth.stroke)
        enlarge_ventricles(atrophied, template, params.stroke_days, rng)
    plan = plan_tumour(demo.pathology, template, pose, rng) if demo.pathology != "none" else None
    stroke = None if params.stroke_days is None else plan_stroke(params.stroke_days, template, pose, rng)
    masses = ((plan.mass_effect(),) if plan else ()) + (stroke.mass_effects() if stroke else ())
    labels = warp_labels(atrophied, template, grid, pose, rng, masses)
    if plan is not None:
        paint_tumour(labels, plan, grid)
    lesion = paint_stroke(labels, stroke, grid) if stroke is not None else None
    bias = acq.bias_field(grid.shape, rng)
    images = _images(labels, params.contrasts, bias, acquisition, rng)
    return _assemble(
        labels,
        images,
        bias,
        grid.affine,
        demo,
        acquisition,
        plan,
        params,
        rng,
        subject_id=subject_id,
        seed=seed,
        lesion=lesion,
        thickening_mm=thickening,
    )


def _assemble(
    labels: np.ndarray,
    images: dict[str, np.ndarray],
    bias: np.ndarray,
    affine: np.ndarray,
    demo: _Demographics,
    acquisition: acq.Acquisition,
    plan: TumourPlan | None,
    params: SubjectParams,
    rng: np.random.Generator,
    *,
    subject_id: str,
    seed: int,
    lesion: np.ndarray | None = None,
    thickening_mm: float = 0.0,
) -> SyntheticSubject:
    """Thick-slice and reorient the label maps, derive ground truth and metadata."""
    axis, factor = acquisition.thick_axis, acquisition.thick_factor
    labels = acq.block_centre(labels, axis, factor)
    if lesion is not None:
        lesion = acq.block_centre(lesion, axis, factor)
    bias = acq.block_mean(bias, axis, factor)
    affine = acq.thick_affine(affine, axis, factor)
    ornt, new_affine = acq.reorient(affine, labels.shape, acquisition.axcodes)

    def vol(arr: np.ndarray) -> Volume:
        return Volume(np.ascontiguousarray(orientations.apply_orientation(arr, ornt)), new_affine.copy())

    voxel_ml = float(abs(np.linalg.det(new_affine[:3, :3]))) / 1000.0
    in_brain = BRAIN_LABELS + (
        (NECROSIS, EDEMA, ENHANCING, EXTRA_AXIAL) if demo.pathology != "pituitary" else ()
    )
    brain_mask = vol(np.isin(labels, in_brain).astype(np.uint8))
    tumor = vol(_BRATS_LUT[labels])
    meta = _meta(labels, voxel_ml, demo, acquisition, plan, params, rng, subject_id=subject_id, seed=seed)
    meta.voxel_size = tuple(float(v) for v in np.linalg.norm(new_affine[:3, :3], axis=0))
    meta.brain_volume_ml = float(brain_mask.data.sum() * voxel_ml)
    meta.tumor_box3d = _bbox(tumor.data > 0)
    meta.thickening_mm = float(thickening_mm)
    if params.stroke_days is not None:
        meta.days_since_event = float(params.stroke_days)
        meta.lesion_volume_ml = float(lesion.sum() * voxel_ml) if lesion is not None else 0.0
    logger.debug("subject %s: %s, grid %s", subject_id, demo.pathology, brain_mask.data.shape)
    return SyntheticSubject(
        meta=meta,
        images={m: vol(images[m]) for m in params.contrasts},
        brain_mask=brain_mask,
        tissue=vol(_TISSUE_LUT[labels]),
        hippocampus=vol(_HIPPO_LUT[labels]),
        tumor=tumor,
        bias_field=vol(bias.astype(np.float32)),
        lesion=vol(lesion) if lesion is not None else None,
    )


def _meta(
    labels: np.ndarray,
    voxel_ml: float,
    demo: _Demographics,
    acquisition: acq.Acquisition,
    plan: TumourPlan | None,
    params: SubjectParams,
    rng: np.random.Generator,
    *,
    subject_id: str,
    seed: int,
) -> SubjectMeta:
    """Metadata, including the glioma markers drawn from measured tumour features."""
    stats = _tumour_stats(labels, voxel_ml)
    idh = mgmt = survival = event = None
    if plan is not None and plan.kind == "glioma":
        idh, mgmt, survival, event = glioma_markers(
            demo.age, stats["necrosis_fraction"], stats["enhancing_fraction"], stats["volume_ml"], rng
        )
    return SubjectMeta(
        subject_id=subject_id,
        age=demo.age,
        sex=demo.sex,
        site=params.sites[acquisition.site_index],
        diagnosis=demo.diagnosis,
        cdr=demo.cdr,
        pathology=demo.pathology,
        idh=idh,
        mgmt=mgmt,
        survival_days=survival,
        event=event,
        snr=acquisition.snr,
        voxel_size=(0.0, 0.0, 0.0),
        orientation=acquisition.orientation,
        brain_volume_ml=0.0,
        tumor_box3d=None,
        tumor_volume_ml=stats["volume_ml"],
        necrosis_fraction=stats["necrosis_fraction"] if plan is not None and plan.kind == "glioma" else None,
        enhancing_fraction=stats["enhancing_fraction"] if plan is not None else None,
        hippocampus_ml=float(np.isin(labels, (HIPPO_L, HIPPO_R)).sum() * voxel_ml),
        contrasts=tuple(params.contrasts),
        seed=seed,
    )
