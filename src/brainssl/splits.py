"""Subject-level train/val/test split, deterministic and stable when subjects are added.

Every stage that needs to know whether a subject is for training (Nyúl landmarks,
pretraining, downstream tasks) asks :func:`subject_split`. The answer depends only on
the subject id, the seed and the fractions, never on which other subjects exist, so
adding subjects to a dataset never moves an existing subject between splits, and all
sessions and contrasts of one subject always land in the same split (no leakage).

The rule: ``u = sha256(f"{seed}:{subject}")`` read as a number in ``[0, 1)``; the
subject is ``train`` when ``u < train``, ``val`` when ``u < train + val``, else
``test``. A dataset that prescribes its own split (the manifest's ``split_group``) is
honoured: ``test`` stays ``test``, and ``train`` subjects are divided into ``train``
and ``val`` in the ratio ``train : val`` by the same hash.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

__all__ = ["SPLITS", "DEFAULT_FRACTIONS", "split_fractions", "subject_split"]

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.7, "val": 0.15, "test": 0.15}


def split_fractions(fractions: Mapping[str, float]) -> tuple[float, float, float]:
    """Check split fractions and return them as ``(train, val, test)``.

    Args:
        fractions: mapping with keys ``train``, ``val``, ``test``; non-negative, summing to 1.

    Raises:
        ValueError: for a missing or unknown key, a negative value or a sum other than 1.
    """
    keys = set(fractions)
    if keys != set(SPLITS):
        raise ValueError(f"split fractions need exactly the keys {list(SPLITS)}, got {sorted(keys)}")
    values = tuple(float(fractions[name]) for name in SPLITS)
    if any(v < 0 or not math.isfinite(v) for v in values):
        raise ValueError(f"split fractions must be finite and >= 0, got {dict(fractions)}")
    if not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise ValueError(f"split fractions must sum to 1, got {sum(values):.6f} from {dict(fractions)}")
    return values  # type: ignore[return-value]


def _unit(subject: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{subject}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def subject_split(
    subject: str,
    seed: int,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    fixed: str = "",
) -> str:
    """Return the split (``train``, ``val`` or ``test``) of one subject.

    Args:
        subject: the pseudonymous subject id (``sub-<12 hex>``).
        seed: the workflow's master seed.
        fractions: ``{"train": .., "val": .., "test": ..}`` summing to 1.
        fixed: the dataset's own split for this subject (manifest ``split_group``): ``train``,
            ``test`` or ``""`` for none.

    Returns:
        The split name.

    Raises:
        ValueError: for an empty subject, bad fractions or an unknown ``fixed`` value.
    """
    if not subject:
        raise ValueError("subject id is empty")
    train, val, _ = split_fractions(fractions)
    u = _unit(subject, seed)
    if fixed == "test":
        return "test"
    if fixed == "train":
        if train + val <= 0:
            raise ValueError("a dataset-prescribed train subject needs train + val > 0")
        return "train" if u < train / (train + val) else "val"
    if fixed not in ("", None):
        raise ValueError(f"fixed split must be 'train', 'test' or '', got {fixed!r}")
    if u < train:
        return "train"
    return "val" if u < train + val else "test"
