"""Any BIDS dataset by config: contrasts from BIDS suffixes, labels from the tables the config names.

A ``datasets:`` entry of ``kind: bids`` with a name of the user's choosing (``mycohort``) is read
here; nothing is coded per dataset. Layout (BIDS 1.x raw data; ABIDE, ADHD-200, ATLAS, ...)::

    <root>/dataset_description.json                     (recommended; its absence is a warning)
    <root>/participants.tsv                             participant_id + the columns the entry names
    <root>/sub-<label>/[ses-<label>/]anat/sub-<label>[_ses-<label>][_<key>-<value>...]_<suffix>.nii[.gz]
    <root>/sub-<label>/sub-<label>_sessions.tsv         session_id + columns (only when named)

A release of several BIDS datasets in one folder (ATLAS v2.0: ``ATLAS_2/Training/R001/sub-r001s001/
ses-1/anat/sub-r001s001_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz``, one root per cohort) is read
with ``roots: Training/R*``: each root as above, subjects pooled, ``site`` the root's name.

The entry says (:class:`brainssl.datasets.settings.BidsDatasetSettings`):

* ``contrasts``: manifest contrast -> BIDS suffix, optionally with the entities a file must
  carry, ``{T1w: T1w, T1ce: ce-gadolinium_T1w, FLAIR: FLAIR}``. A file matches when its suffix
  and those entities are the spec's and it carries no other entity besides ``sub``, ``ses``,
  ``run``, ``acq`` and ``space`` (so a ``ce-`` or ``rec-`` variant is never read as the plain
  contrast). Several matching files in one session (runs, ``acq-`` variants, ``.nii`` beside
  ``.nii.gz``): the lowest run is used (no ``run-`` counts lowest), then no ``acq-`` first, then
  ``.nii.gz``; if it cannot be read the next one is; the others are reported and not used.
* ``mask``: optionally, the suffix (and entities) of a label map in the same folder,
  ``label-L_desc-T1lesion_mask`` for ATLAS; it becomes every contrast's ``seg_path``.
* ``participants`` / ``sessions``: label -> column of ``participants.tsv`` / of each subject's
  ``sub-<label>_sessions.tsv`` (a session's value overrides the participant's). Labels:
  :data:`~.bids_entry.LABELS`. ``values``: label -> {cell: value} for coded columns (ABIDE's ``DX_GROUP``
  1/2); a cell of a mapped column that the map lacks refuses its subject with the allowed
  codes. Without a map, ``sex`` reads m/male/f/female, ``diagnosis`` the lower-cased text.

What is missing is said once, for the dataset (:class:`DatasetLayoutError`, naming the dataset,
the file and the config key): no ``sub-*`` folder, a named table or column absent, a contrast
or mask with no matching file anywhere (with the suffixes that were found). A bad file or row
costs only its subject (the failures table), as for every other layout.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brainssl.datasets.layouts.base import first_readable, grid_difference, image_row, read_truth
from brainssl.datasets.layouts.bids_entry import BidsEntry, parse_entry, read_participants, read_sessions
from brainssl.datasets.layouts.errors import DatasetLayoutError, SubjectError, SubjectRecorder
from brainssl.datasets.layouts.files import folder_problem, list_dir, require_root
from brainssl.datasets.layouts.tables import LabelBook

__all__ = ["parse_name", "read"]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^(?P<stem>(?:[a-zA-Z]+-[a-zA-Z0-9]+_)*)(?P<suffix>[a-zA-Z0-9]+)\.nii(?:\.gz)?$")
_SUBJECT_DIR = re.compile(r"sub-[a-zA-Z0-9]+")
_SESSION_DIR = re.compile(r"ses-[a-zA-Z0-9]+")


def parse_name(name: str) -> tuple[str, dict[str, str]] | None:
    """``(suffix, entities)`` of a BIDS NIfTI file name, or ``None`` when it is not one."""
    match = _NAME.match(name)
    if match is None:
        return None
    entities = dict(p.split("-", 1) for p in match.group("stem").rstrip("_").split("_") if p)
    return match.group("suffix"), entities


def _run_order(path: Path) -> tuple[int, str, bool, str]:
    """Sort key among files of one contrast: lowest run first (none = 0), no acq-, .nii.gz."""
    parsed = parse_name(path.name)
    entities = parsed[1] if parsed else {}
    run = entities.get("run", "0")
    return (
        int(run) if run.isdigit() else 0,
        entities.get("acq", ""),
        not path.name.endswith(".gz"),
        path.name,
    )


@dataclass
class _Seen:
    """What the files of the whole dataset were, for the dataset-level messages."""

    suffixes: set[str]
    contrasts: set[str]
    mask: bool = False


def _session_files(
    anat: Path, nid: str, session: str, recorder: SubjectRecorder
) -> list[tuple[Path, str, dict[str, str]]]:
    entries = list_dir(anat, "anat folder") if anat.exists() or anat.is_symlink() else []
    files = []
    for path in entries:
        parsed = parse_name(path.name)
        if parsed is None:
            continue
        suffix, entities = parsed
        if entities.get("sub") != nid or (session and entities.get("ses") != session.removeprefix("ses-")):
            recorder.note(
                nid,
                path,
                f"names sub-{entities.get('sub')} ses-{entities.get('ses')}, not this folder's; not used",
            )
            continue
        files.append((path, suffix, entities))
    return files


def _read_session(
    root: Path,
    nid: str,
    session_dir: Path,
    session: str,
    labels: Mapping[str, Any],
    setup: BidsEntry,
    recorder: SubjectRecorder,
    seen: _Seen,
) -> list[dict[str, Any]]:
    problem = folder_problem(session_dir, "session folder")
    if problem is not None:
        raise SubjectError(session_dir, problem)
    anat = session_dir / "anat"
    files = _session_files(anat, nid, session, recorder)
    seen.suffixes.update(suffix for _, suffix, _ in files)
    chosen: dict[str, tuple[Path, Any]] = {}
    for contrast, spec in setup.contrasts.items():
        candidates = sorted((p for p, s, e in files if spec.matches(s, e)), key=_run_order)
        if not candidates:
            continue
        seen.contrasts.add(contrast)  # found, readable or not (an unreadable one is the subject's failure)
        path, img, notes = first_readable(candidates, f"{contrast} image")
        for other, reason in notes:
            recorder.note(nid, other, reason)
        chosen[contrast] = (path, img)
    if not chosen:
        wanted = ", ".join(f"*_{spec.text}.nii[.gz]" for spec in setup.contrasts.values())
        raise SubjectError(anat, f"no file of the contrasts ({wanted}) in the anat folder")
    seg_path = ""
    if setup.mask is not None:
        masks = sorted((p for p, s, e in files if setup.mask.matches(s, e)), key=_run_order)
        if masks:
            seen.mask = True
            mask_path, mask_img, notes = first_readable(masks, "mask")
            for other, reason in notes:
                recorder.note(nid, other, reason)
            reference = next(iter(chosen.values()))[1]
            difference = grid_difference(mask_img, reference, f"{next(iter(chosen))} image")
            if difference is None:
                seg_path = str(mask_path)
            else:
                recorder.note(nid, mask_path, f"{difference}; the mask is not used")
    truth = read_truth(root, nid, session)
    rows = [
        image_row(
            setup.name,
            nid,
            path,
            img,
            session=session,
            contrast=contrast,
            seg_path=seg_path,
            **{k: v for k, v in labels.items() if v is not None},
            **truth,
        )
        for contrast, (path, img) in chosen.items()
    ]
    rows.sort(key=lambda row: row["path"])
    return rows


Rows = list[dict[str, Any]]


def read(root: Path, name: str, entry: Mapping[str, Any]) -> tuple[Rows, Rows]:
    """Read a BIDS root (or the BIDS roots ``roots`` names below it) as ``datasets.<name>`` says.

    Args:
        root: the BIDS folder, or the folder holding the BIDS roots of ``entry["roots"]``.
        name: the dataset's name in the config (the manifest's ``dataset``).
        entry: its config entry (``roots``, ``contrasts``, ``mask``, ``participants``,
            ``sessions``, ``values``).

    Raises:
        DatasetLayoutError: when the entry cannot be used, no root holds a ``sub-*`` folder,
            a named table or column is missing, or a named contrast or mask matches no file of
            the dataset; the message names the dataset, what is missing and the config key.
    """
    setup = parse_entry(name, entry)
    book = LabelBook()
    recorder = SubjectRecorder(name)
    seen = _Seen(set(), set())
    owners: dict[str, Path] = {}
    any_sessions_table = False
    for bids_root in _bids_roots(root, setup):
        any_sessions_table |= _read_root(bids_root, setup, book, recorder, seen, owners)
    book.report(recorder)
    _check_seen(root, setup, seen, any_sessions_table)
    return recorder.rows, recorder.failures


def _bids_roots(root: Path, setup: BidsEntry) -> list[Path]:
    """The BIDS roots to read: ``root`` itself, or the folders ``roots`` matches below it."""
    if not setup.roots:
        require_root(setup.info, root, ("sub-*",))
        return [root]
    require_root(setup.info, root, (f"{setup.roots}/sub-*",))
    return sorted(p for p in root.glob(setup.roots) if p.is_dir() and next(p.glob("sub-*"), None))


def _read_root(
    root: Path,
    setup: BidsEntry,
    book: LabelBook,
    recorder: SubjectRecorder,
    seen: _Seen,
    owners: dict[str, Path],
) -> bool:
    """Read one BIDS root's subjects into ``recorder``; whether any has a sessions table.

    Of several roots (``roots``), a subject id met again in a later root is reported and not
    used, and ``site`` is the root's folder name unless a table names it.
    """
    if not (root / "dataset_description.json").is_file():
        logger.warning("%s: %s has no dataset_description.json (not a BIDS root?)", setup.name, root)
    participants = read_participants(root, setup, book)
    named = "site" in setup.participants or "site" in setup.sessions
    root_site = {"site": root.name} if setup.roots and not named else {}
    any_sessions_table = False
    for subject_dir in (p for p in list_dir(root, "dataset root") if _SUBJECT_DIR.fullmatch(p.name)):
        nid = subject_dir.name.removeprefix("sub-")
        if nid in book.refused:
            continue
        if nid in owners:
            recorder.note(nid, subject_dir, f"sub-{nid} is also in {owners[nid]}, which is used; not used")
            continue
        owners[nid] = root
        try:
            problem = folder_problem(subject_dir, "subject folder")
            if problem is not None:
                raise SubjectError(subject_dir, problem)
            entries = list_dir(subject_dir, "subject folder")
        except SubjectError as err:
            recorder.fail(nid, err.path, err.reason)
            continue
        any_sessions_table |= (subject_dir / f"sub-{nid}_sessions.tsv").is_file()
        if setup.participants and nid not in participants:
            recorder.note(
                nid,
                root / "participants.tsv",
                "subject not listed in participants.tsv; its labels stay empty",
            )
        sessions = read_sessions(subject_dir, nid, setup, book, recorder)
        if nid in book.refused:
            continue
        session_dirs = [p for p in entries if _SESSION_DIR.fullmatch(p.name) and p.is_dir()]
        units = [(p, p.name) for p in session_dirs] or [(subject_dir, "")]
        for session_dir, session in units:
            labels = {**root_site, **participants.get(nid, {})}
            labels.update(
                {k: v for k, v in sessions.get(session.removeprefix("ses-"), {}).items() if v is not None}
            )
            with recorder.subject(nid) as rows:
                rows.extend(_read_session(root, nid, session_dir, session, labels, setup, recorder, seen))
    return any_sessions_table


def _check_seen(root: Path, setup: BidsEntry, seen: _Seen, any_sessions_table: bool) -> None:
    """The dataset-level messages: a named contrast, mask or sessions table found nowhere."""
    found = ", ".join(sorted(seen.suffixes)) or "none"
    problems = []
    absent = [m for m in setup.contrasts if m not in seen.contrasts]
    if absent:
        specs = ", ".join(f"{m}: *_{setup.contrasts[m].text}.nii[.gz]" for m in absent)
        problems.append(
            f"no file of the contrast(s) {{{specs}}} (datasets.{setup.name}.contrasts) in any "
            f"sub-*/[ses-*/]anat/ folder; suffixes found: {found}"
        )
    if setup.mask is not None and not seen.mask and seen.contrasts:
        problems.append(
            f"no mask *_{setup.mask.text}.nii[.gz] (datasets.{setup.name}.mask) beside any image; "
            f"suffixes found: {found}"
        )
    if setup.sessions and not any_sessions_table:
        problems.append(
            f"no sub-*/sub-*_sessions.tsv, but datasets.{setup.name}.sessions names its columns "
            f"{sorted(setup.sessions.values())}"
        )
    if problems:
        raise DatasetLayoutError(f"{setup.info.name}: {root}: " + "; ".join(problems))
