"""BIDS file names: entities, suffix and extension, and which image of a contrast a reader uses.

Shared by the layouts whose files carry BIDS names (OASIS-3's, and any BIDS dataset's): a name is
split into its entities (:func:`parse_bids_name`), an image that is not the plain contrast is
named (:func:`bids_image_problem`) and several images of one contrast are ranked
(:func:`bids_image_order`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BIDS_ENTITIES",
    "TRUTH_IGNORE",
    "BidsName",
    "bids_image_order",
    "bids_image_problem",
    "parse_bids_name",
]

#: BIDS entities in the order the specification writes them (BIDS 1.10, "Entity table").
BIDS_ENTITIES = (
    "sub", "ses", "sample", "task", "tracksys", "acq", "nuc", "voi", "ce", "trc", "stain", "rec", "dir",
    "run", "mod", "echo", "flip", "inv", "mt", "part", "proc", "hemi", "space", "split", "recording",
    "chunk", "seg", "res", "den", "label", "desc",
)  # fmt: skip
#: The ``.bidsignore`` line of the demos' synthetic truth folder: the bare folder name, since
#: bids-validator 3.0.2 does not match ``_truth/`` (it then reports NOT_INCLUDED for the folder).
TRUTH_IGNORE = "_truth"
_BIDS_NAME = re.compile(r"^((?:[a-zA-Z]+-[a-zA-Z0-9]+_)+)([a-zA-Z0-9]+)((?:\.[a-zA-Z0-9]+)+)$")


@dataclass(frozen=True)
class BidsName:
    """A BIDS file name split into its entities (in file order), suffix and extension.

    ``sub-OAS30001_ses-d0129_acq-TSE_run-02_T2w.nii.gz`` is entities ``sub``, ``ses``, ``acq``,
    ``run``, suffix ``T2w`` and extension ``.nii.gz``.
    """

    entities: tuple[tuple[str, str], ...]
    suffix: str
    extension: str

    def get(self, key: str, default: str = "") -> str:
        """The label of entity ``key`` (``default`` when the name has none)."""
        return next((value for name, value in self.entities if name == key), default)

    def has(self, key: str) -> bool:
        """Whether the name carries entity ``key``."""
        return any(name == key for name, _ in self.entities)


def parse_bids_name(name: str) -> BidsName | None:
    """Split a BIDS file name; ``None`` when it is not ``sub-<label>[_<key>-<label>...]_<suffix><ext>``.

    Real datasets do not always keep the specification's entity order (``_run-01_acq-TSE_``,
    ``_echo-1_run-01_``) or its entity list, so any order and any entity key are accepted;
    a name must start with ``sub-`` and name each entity once.
    """
    match = _BIDS_NAME.match(name)
    if match is None:
        return None
    pairs = tuple(tuple(part.split("-", 1)) for part in match.group(1).rstrip("_").split("_"))
    keys = [key for key, _ in pairs]
    if keys[0] != "sub" or len(set(keys)) != len(keys):
        return None
    return BidsName(pairs, match.group(2), match.group(3))  # type: ignore[arg-type]


def bids_image_problem(name: BidsName) -> str | None:
    """Why a BIDS image is not the plain contrast its suffix names, or ``None`` when it is.

    Not the plain image: a phase, real or imaginary part (``part-phase``; ``part-mag`` is fine),
    a contrast-enhanced variant (``ce-``: not the native contrast), or one chunk of a
    multi-part acquisition (``chunk-``).
    """
    part = name.get("part").lower()
    if part and part not in ("mag", "magnitude"):
        return f"part-{name.get('part')} is not a magnitude image"
    if name.has("ce"):
        return f"ce-{name.get('ce')} is contrast-enhanced, not the plain {name.suffix}"
    if name.has("chunk"):
        return f"chunk-{name.get('chunk')} is one piece of a multi-part image"
    return None


def _number(label: str) -> tuple[int, str]:
    return (int(label), "") if label.isdigit() else (10**9, label)


def bids_image_order(name: BidsName, file_name: str) -> tuple[Any, ...]:
    """Sort key among BIDS images of one contrast in one session (the first is used).

    Lowest ``run`` first (a name without ``run-`` counts as the lowest), then no ``acq-``
    before any (then by label), no ``rec-`` before any, lowest ``echo``, fewest other
    entities, ``.nii.gz`` before ``.nii``, then the file name.
    """
    run = _number(name.get("run")) if name.has("run") else (0, "")
    echo = _number(name.get("echo")) if name.has("echo") else (0, "")
    known = {"sub", "ses", "run", "acq", "rec", "echo", "part"}
    others = tuple(sorted((k, v) for k, v in name.entities if k not in known))
    return (
        run,
        (name.has("acq"), name.get("acq")),
        (name.has("rec"), name.get("rec")),
        echo,
        len(others),
        others,
        name.extension != ".nii.gz",
        file_name,
    )
