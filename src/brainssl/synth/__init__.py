"""Synthetic whole-head brain MRI subjects with full ground truth.

Generative model (one subject, every draw from ``default_rng([seed, sha256(subject_id)])``):

1. **Template** (:mod:`~brainssl.synth.template`, cached): ICBM152 2009c whole-head T1/T2,
   brain mask and CerebrA atlas, resampled to ``grid_mm``. Inside the brain mask, CerebrA
   gives ventricles, deep grey matter and left/right hippocampus; 3-class k-means of T1 gives
   sulcal CSF, GM and WM. Outside it, T1/T2 intensities give extracerebral CSF, bone (dark on
   both; a closed band around the brain is forced to bone), fat and soft tissue.
2. **Demographics**: age ~ U(age_range), sex 50/50, Alzheimer-like diagnosis (more likely
   with age unless forced) with CDR in {0.5, 1, 2}.
3. **Atrophy** (:mod:`~brainssl.synth.anatomy`), in template space via precomputed distance
   maps, by fractions of a voxel: ventricles grow 0.06 mm/year (+1.2 mm per CDR point), cortex
   thins 0.012 mm/year (+0.4 mm/CDR), hippocampus (+1.4 mm/CDR) and medial temporal cortex
   (+1.5 mm/CDR) shrink.
4. **Pose and shape**: head scale by sex and subject, small rotation/shift, a smooth random
   displacement field (2 mm RMS, low-order cosines), plus a radial mass effect around a
   tumour; labels are sampled (nearest neighbour) onto the subject grid, which covers the
   head with a random inferior crop of 0-45 mm and may be oblique.
5. **Pathology** (:mod:`~brainssl.synth.pathology`): glioma (deep hemispheric WM; necrotic
   core, enhancing rim, edema restricted to brain tissue), meningioma (straddling the upper
   convexity surface, extra-axial, small edema rim), pituitary tumour (midline sella). IDH,
   MGMT and censored Weibull survival follow the logistic/Weibull model documented there.
6. **Contrasts** (:mod:`~brainssl.synth.contrast`): PD/T1/T2 per label with 3-5 % subject
   jitter, spin-echo and inversion-recovery equations per sequence (T1w, T2w, FLAIR, T1ce,
   PD); T1ce shortens T1 where gadolinium enters (enhancing tumour, extra-axial tumours).
   Within-tissue texture, Gaussian PSF.
7. **Acquisition** (:mod:`~brainssl.synth.acquisition`): smooth multiplicative bias field
   (stored), optional thick slices (3x along one axis, averaged), Rician noise at a subject
   SNR, per-site scale and offset, storage orientation RAS/LPS/LAS (array flipped/permuted,
   affine consistent) or oblique. Images are float32; the writer stores them.
"""

from brainssl.synth.acquisition import simulate_kspace
from brainssl.synth.subject import (
    TISSUE_CLASSES,
    SubjectMeta,
    SubjectParams,
    SyntheticSubject,
    Volume,
    generate_subject,
    stable_int_hash,
)
from brainssl.synth.template import Template, load_template

__all__ = [
    "TISSUE_CLASSES",
    "SubjectMeta",
    "SubjectParams",
    "SyntheticSubject",
    "Template",
    "Volume",
    "generate_subject",
    "load_template",
    "simulate_kspace",
    "stable_int_hash",
]
