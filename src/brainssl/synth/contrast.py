"""MR contrasts from tissue labels with spin-echo and inversion-recovery signal equations.

Each synthesis label has a proton density PD, T1 and T2 (ms, roughly 3 T). Per subject the
values are jittered (PD 3 %, T1 and T2 5 %). Sequences:

* ``T1w`` and ``T1ce``: inversion-prepared (MPRAGE-like) S = PD |1 - 2 e^(-TI/T1) + e^(-TR/T1)| e^(-TE/T2),
  TR 2300, TI 900, TE 3. ``T1ce`` shortens T1 where gadolinium leaks (1/T1' = 1/T1 + 1/T1_gd).
* ``T2w``: spin echo S = PD (1 - e^(-TR/T1)) e^(-TE/T2), TR 4000, TE 100.
* ``FLAIR``: inversion recovery spin echo, TR 9000, TI 2500 (nulls CSF), TE 120.
* ``PD``: spin echo, TR 3000, TE 15.
"""

from __future__ import annotations

import logging

import numpy as np

from brainssl.synth.template import (
    BONE,
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
)

logger = logging.getLogger(__name__)

__all__ = ["CONTRASTS", "SEQUENCES", "TISSUE_PARAMS", "draw_tissue_params", "signal_lut", "texture_lut"]

CONTRASTS = ("T1w", "T2w", "FLAIR", "T1ce", "PD")
N_LABELS = 32

# label: (PD, T1 ms, T2 ms)
TISSUE_PARAMS: dict[int, tuple[float, float, float]] = {
    CSF_IN: (1.0, 4000.0, 2000.0),
    CSF_OUT: (1.0, 4000.0, 2000.0),
    VENT: (1.0, 4000.0, 2000.0),
    GM: (0.80, 1330.0, 110.0),
    HIPPO_L: (0.80, 1300.0, 115.0),
    HIPPO_R: (0.80, 1300.0, 115.0),
    WM: (0.69, 830.0, 80.0),
    DEEP: (0.76, 1100.0, 90.0),
    BONE: (0.05, 500.0, 10.0),
    SOFT: (0.75, 1000.0, 45.0),
    FAT: (0.90, 380.0, 100.0),
    NECROSIS: (0.92, 2600.0, 700.0),
    EDEMA: (0.86, 1450.0, 210.0),
    ENHANCING: (0.84, 1350.0, 120.0),
    EXTRA_AXIAL: (0.80, 1200.0, 100.0),
}
# T1 of the gadolinium term (ms): smaller = stronger enhancement on T1ce.
GADOLINIUM_T1: dict[int, float] = {ENHANCING: 450.0, EXTRA_AXIAL: 500.0, SOFT: 4000.0}
# sequence: (kind, TR, TE, TI)
SEQUENCES: dict[str, tuple[str, float, float, float]] = {
    "T1w": ("ir", 2300.0, 3.0, 900.0),
    "T1ce": ("ir", 2300.0, 3.0, 900.0),
    "T2w": ("se", 4000.0, 100.0, 0.0),
    "FLAIR": ("ir", 9000.0, 120.0, 2500.0),
    "PD": ("se", 3000.0, 15.0, 0.0),
}
_TEXTURE = {
    WM: 0.03,
    GM: 0.04,
    DEEP: 0.04,
    HIPPO_L: 0.04,
    HIPPO_R: 0.04,
    SOFT: 0.1,
    FAT: 0.08,
    BONE: 0.3,
    NECROSIS: 0.15,
    EDEMA: 0.08,
    ENHANCING: 0.12,
    EXTRA_AXIAL: 0.06,
}


def draw_tissue_params(rng: np.random.Generator) -> np.ndarray:
    """Per-subject (N_LABELS, 3) table of PD, T1, T2 with small multiplicative jitter."""
    table = np.zeros((N_LABELS, 3), dtype=np.float64)
    table[:, 1:] = 1.0  # background: PD 0, finite relaxation times
    for label, values in TISSUE_PARAMS.items():
        table[label] = values
    table *= np.exp(rng.normal(0.0, [0.03, 0.05, 0.05], size=(N_LABELS, 3)))
    return table


def _signal(
    kind: str, tr: float, te: float, ti: float, pd: np.ndarray, t1: np.ndarray, t2: np.ndarray
) -> np.ndarray:
    """Spin-echo ("se") or inversion-recovery ("ir") magnitude signal."""
    if kind == "se":
        return pd * (1.0 - np.exp(-tr / t1)) * np.exp(-te / t2)
    return pd * np.abs(1.0 - 2.0 * np.exp(-ti / t1) + np.exp(-tr / t1)) * np.exp(-te / t2)


def signal_lut(contrast: str, table: np.ndarray) -> np.ndarray:
    """Signal of every label for one contrast: (N_LABELS,) float32, to be indexed by labels.

    Args:
        contrast: one of :data:`CONTRASTS`.
        table: (N_LABELS, 3) PD, T1, T2 from :func:`draw_tissue_params`.

    Returns:
        (N_LABELS,) float32 signals.

    Raises:
        KeyError: for an unknown contrast.
    """
    if contrast not in SEQUENCES:
        raise KeyError(f"unknown contrast {contrast!r}; expected one of {CONTRASTS}")
    kind, tr, te, ti = SEQUENCES[contrast]
    pd, t1, t2 = table[:, 0], table[:, 1].copy(), table[:, 2]
    if contrast == "T1ce":
        for label, t1_gd in GADOLINIUM_T1.items():
            t1[label] = 1.0 / (1.0 / t1[label] + 1.0 / t1_gd)
    return _signal(kind, tr, te, ti, pd, t1, t2).astype(np.float32)


def texture_lut() -> np.ndarray:
    """Relative amplitude of within-tissue texture per label: (N_LABELS,) float32."""
    lut = np.full(N_LABELS, 0.02, dtype=np.float32)
    for label, amp in _TEXTURE.items():
        lut[label] = amp
    return lut
