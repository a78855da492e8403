"""Any BIDS dataset by config: contrasts from BIDS suffixes, labels from the tables the config names.

A ``datasets:`` entry of ``kind: bids`` with a name of the user's choosing (``mycohort``) is read
here; nothing is coded per dataset. Layout (BIDS 1.x raw data; ABIDE, ADHD-200, ATLAS, ...)::

    <root>/dataset_description.json                     (recommended; its absence is a warning)
    <root>/participants.tsv                             participant_id + the columns the entry names
    <root>/sub-<label>/[ses-<label>/]anat/sub-<label>[_ses-<label>][_<key>-<value>...]_<suffix>.nii[.gz]
    <root>/sub-<label>/sub-<label>_sessions.tsv         session_id + columns (only when named)

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
  :data:`LABELS`. ``values``: label -> {cell: value} for coded columns (ABIDE's ``DX_GROUP``
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brainssl.datasets.layouts.base import first_readable, grid_difference, image_row, read_truth
from brainssl.datasets.layouts.errors import DatasetInfo, DatasetLayoutError, SubjectError, SubjectRecorder
from brainssl.datasets.layouts.files import file_problem, folder_problem, list_dir, require_root
from brainssl.datasets.layouts.tables import (
    LabelBook,
    Table,
    is_na,
    parse_number,
    read_csv_table,
)

__all__ = [
    "IGNORED_ENTITIES",
    "LABELS",
    "FileSpec",
    "info",
    "parse_name",
    "parse_spec",
    "read",
    "read_tsv",
]

logger = logging.getLogger(__name__)

#: Labels a BIDS entry can fill from its tables (each a manifest column), with what they hold.
LABELS: dict[str, str] = {
    "age": "age in years at the scan (a number >= 0)",
    "sex": "M or F (m/male/f/female read as such; other codes need a values map)",
    "site": "acquisition site or scanner (text)",
    "diagnosis": "diagnosis group, lower case (control, autism, ...; codes need a values map)",
    "days_since_event": "days from the index event (stroke onset, ...) to the scan (a number >= 0)",
}
#: The contrasts of an entry that names none (the schema's default).
DEFAULT_CONTRASTS = {"T1w": "T1w"}
#: Entities a file may carry beyond its spec's: which subject, session, run, acquisition, space.
IGNORED_ENTITIES = ("sub", "ses", "run", "acq", "space")
_NAME = re.compile(r"^(?P<stem>(?:[a-zA-Z]+-[a-zA-Z0-9]+_)*)(?P<suffix>[a-zA-Z0-9]+)\.nii(?:\.gz)?$")
_SUBJECT_DIR = re.compile(r"sub-[a-zA-Z0-9]+")
_SESSION_DIR = re.compile(r"ses-[a-zA-Z0-9]+")
_SEX = {"m": "M", "male": "M", "f": "F", "female": "F"}


@dataclass(frozen=True)
class FileSpec:
    """What a file name must say: its suffix and entities (``ce-gd_T1w`` -> T1w, {ce: gd})."""

    text: str
    suffix: str
    entities: tuple[tuple[str, str], ...] = ()

    def matches(self, suffix: str, entities: Mapping[str, str]) -> bool:
        """Whether a parsed file name is this spec's file."""
        own = {k: v for k, v in entities.items() if k not in IGNORED_ENTITIES}
        return suffix == self.suffix and own == dict(self.entities)


def parse_spec(text: str) -> FileSpec:
    """Parse a contrast or mask spec: ``[<key>-<value>_]...<suffix>``.

    Raises:
        ValueError: when ``text`` is not of that form.
    """
    parts = str(text).strip().split("_")
    suffix, pairs = parts[-1], parts[:-1]
    if not re.fullmatch(r"[a-zA-Z0-9]+", suffix) or not all(
        re.fullmatch(r"[a-zA-Z]+-[a-zA-Z0-9]+", p) for p in pairs
    ):
        raise ValueError(f"{text!r} is not a BIDS suffix with optional entities (e.g. T1w, ce-gd_T1w)")
    return FileSpec(str(text).strip(), suffix, tuple(tuple(p.split("-", 1)) for p in pairs))  # type: ignore[misc]


def parse_name(name: str) -> tuple[str, dict[str, str]] | None:
    """``(suffix, entities)`` of a BIDS NIfTI file name, or ``None`` when it is not one."""
    match = _NAME.match(name)
    if match is None:
        return None
    entities = dict(p.split("-", 1) for p in match.group("stem").rstrip("_").split("_") if p)
    return match.group("suffix"), entities


def info(name: str, entry: Mapping[str, Any]) -> DatasetInfo:
    """What the entry expects, for messages."""
    specs = dict(entry.get("contrasts", DEFAULT_CONTRASTS))
    contrasts = ", ".join(f"{k}: *_{v}.nii[.gz]" for k, v in specs.items())
    tables = []
    if entry.get("participants"):
        tables.append(f"participants.tsv with participant_id, {', '.join(entry['participants'].values())}")
    if entry.get("sessions"):
        tables.append(f"sub-*/sub-*_sessions.tsv with session_id, {', '.join(entry['sessions'].values())}")
    layout = f"BIDS: sub-*/[ses-*/]anat/ files of the contrasts {{{contrasts}}}"
    if tables:
        layout += "; " + "; ".join(tables)
    return DatasetInfo(
        key=name,
        name=f"{name} (BIDS)",
        layout=layout,
        source=f"the BIDS folder given as datasets.{name}.path",
    )


def read_tsv(info: DatasetInfo, path: Path, required: Sequence[str]) -> Table:
    """Read a BIDS ``.tsv`` table into text cells (header row 1), checking the required columns.

    Raises:
        DatasetLayoutError: for an unreadable or empty file or a missing column, naming both.
    """
    return read_csv_table(info, path, required, delimiter="\t")


def _parse_label(label: str, column: str, text: str, values: Mapping[str, str] | None) -> Any:
    """One table cell as a manifest value; ValueError names the column and what is allowed."""
    if is_na(text):
        return None
    cell = str(text).strip()
    if values:
        lowered = {str(k).strip().lower(): v for k, v in values.items()}
        key = cell.lower()
        if key not in lowered and key.endswith(".0") and key[:-2].isdigit():
            key = key[:-2]
        if key not in lowered:
            raise ValueError(f"{column} {cell!r} is not one of {list(values)} (datasets.*.values.{label})")
        cell = str(lowered[key])
    if label in ("age", "days_since_event"):
        return parse_number(cell, column, minimum=0.0)
    if label == "sex":
        sex = cell if cell in ("M", "F") else _SEX.get(cell.lower())
        if sex is None:
            raise ValueError(f"{column} {cell!r} is not M or F; map its codes with values.sex")
        return sex
    if label == "diagnosis":
        diagnosis = re.sub(r"[\s-]+", "_", cell.lower())
        if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", diagnosis):
            raise ValueError(f"{column} {cell!r} is not a diagnosis word; map it with values.diagnosis")
        return diagnosis
    return cell


@dataclass
class _Setup:
    name: str
    info: DatasetInfo
    contrasts: dict[str, FileSpec]
    mask: FileSpec | None
    participants: dict[str, str]
    sessions: dict[str, str]
    values: dict[str, dict[str, str]]


def _setup(name: str, entry: Mapping[str, Any]) -> _Setup:
    about = info(name, entry)
    where = f"datasets.{name}"
    problems = []
    contrasts: dict[str, FileSpec] = {}
    for contrast, text in dict(entry.get("contrasts", DEFAULT_CONTRASTS)).items():
        try:
            contrasts[str(contrast)] = parse_spec(text)
        except ValueError as err:
            problems.append(f"{where}.contrasts.{contrast}: {err}")
    if not contrasts and not problems:
        problems.append(f"{where}.contrasts names no contrast (e.g. {{T1w: T1w}})")
    mask = None
    if entry.get("mask"):
        try:
            mask = parse_spec(entry["mask"])
        except ValueError as err:
            problems.append(f"{where}.mask: {err}")
    tables = {
        key: {str(k): str(v) for k, v in dict(entry.get(key) or {}).items()}
        for key in ("participants", "sessions")
    }
    for key, mapping in tables.items():
        unknown = sorted(set(mapping) - set(LABELS))
        if unknown:
            problems.append(f"{where}.{key}: unknown label(s) {unknown}; allowed: {list(LABELS)}")
    values = {
        str(k): {str(a): str(b) for a, b in dict(v).items()}
        for k, v in dict(entry.get("values") or {}).items()
    }
    if problems:
        raise DatasetLayoutError(f"{about.name}: " + "; ".join(problems))
    return _Setup(name, about, contrasts, mask, tables["participants"], tables["sessions"], values)


def _label_id(text: str, prefix: str) -> str:
    cell = str(text).strip()
    return cell[len(prefix) :] if cell.startswith(prefix) else cell


def _read_participants(root: Path, setup: _Setup, book: LabelBook) -> dict[str, dict[str, Any]]:
    """Per subject label -> value from ``participants.tsv``; a bad row refuses its subject."""
    if not setup.participants:
        return {}
    path = root / "participants.tsv"
    if file_problem(path, "participants table") is not None:
        raise DatasetLayoutError(
            f"{setup.info.name}: {path} is missing or unreadable, but datasets.{setup.name}.participants "
            f"names its columns {sorted(setup.participants.values())}"
        )
    required = ["participant_id", *setup.participants.values()]
    try:
        table = read_tsv(setup.info, path, required)
    except DatasetLayoutError as err:
        raise DatasetLayoutError(f"{err} (named by datasets.{setup.name}.participants)") from None
    return _table_labels(table, "participant_id", "sub-", setup.participants, setup, book, None)


def _table_labels(
    table: Table,
    id_column: str,
    prefix: str,
    mapping: Mapping[str, str],
    setup: _Setup,
    book: LabelBook,
    subject: str | None,
) -> dict[str, dict[str, Any]]:
    """Rows of a participants or sessions table as id -> {label: value}.

    A bad cell refuses the subject (``subject`` for a sessions table, else the row's own).
    """
    id_col = table.column(id_column)
    assert id_col is not None
    columns = {label: table.column(column) for label, column in mapping.items()}
    for number, reason in table.bad:
        book.stray(table.path, f"row {number}: {reason}; row not used")
    out: dict[str, dict[str, Any]] = {}
    for number, cells in table.rows:
        key = _label_id(cells[id_col], prefix)
        owner = subject or key
        if not key:
            book.stray(table.path, f"row {number}: empty {id_column}; row not used")
            continue
        try:
            labels = {
                label: _parse_label(label, str(column), cells[str(column)], setup.values.get(label))
                for label, column in columns.items()
            }
        except ValueError as err:
            book.refuse(owner, table.path, f"row {number}: {err}")
            continue
        if key in out and out[key] != labels:
            book.refuse(
                owner, table.path, f"row {number}: {id_column} {key!r} is listed twice with different values"
            )
            continue
        out[key] = labels
    return out


def _read_sessions(
    subject_dir: Path, nid: str, setup: _Setup, book: LabelBook, recorder: SubjectRecorder
) -> dict[str, dict[str, Any]]:
    """Per session label -> value from the subject's ``sessions.tsv`` (``{}`` when it has none)."""
    if not setup.sessions:
        return {}
    path = subject_dir / f"sub-{nid}_sessions.tsv"
    if file_problem(path, "sessions table") is not None:
        recorder.note(
            nid, path, f"no sessions table; the labels {sorted(setup.sessions)} stay empty for this subject"
        )
        return {}
    try:
        table = read_tsv(setup.info, path, ["session_id", *setup.sessions.values()])
    except DatasetLayoutError as err:
        book.refuse(nid, path, f"{err} (named by datasets.{setup.name}.sessions)")
        return {}
    return _table_labels(table, "session_id", "ses-", setup.sessions, setup, book, nid)


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
    setup: _Setup,
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
    """Read a BIDS root into manifest rows and failures as the entry ``datasets.<name>`` says.

    Args:
        root: the BIDS folder.
        name: the dataset's name in the config (the manifest's ``dataset``).
        entry: its config entry (``contrasts``, ``mask``, ``participants``, ``sessions``, ``values``).

    Raises:
        DatasetLayoutError: when the entry cannot be used, the root holds no ``sub-*`` folder,
            a named table or column is missing, or a named contrast or mask matches no file of
            the dataset; the message names the dataset, what is missing and the config key.
    """
    setup = _setup(name, entry)
    require_root(setup.info, root, ("sub-*",))
    if not (root / "dataset_description.json").is_file():
        logger.warning("%s: %s has no dataset_description.json (not a BIDS root?)", name, root)
    book = LabelBook()
    participants = _read_participants(root, setup, book)
    recorder = SubjectRecorder(name)
    seen = _Seen(set(), set())
    any_sessions_table = False
    for subject_dir in (p for p in list_dir(root, "dataset root") if _SUBJECT_DIR.fullmatch(p.name)):
        nid = subject_dir.name.removeprefix("sub-")
        if nid in book.refused:
            continue
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
        sessions = _read_sessions(subject_dir, nid, setup, book, recorder)
        if nid in book.refused:
            continue
        session_dirs = [p for p in entries if _SESSION_DIR.fullmatch(p.name) and p.is_dir()]
        units = [(p, p.name) for p in session_dirs] or [(subject_dir, "")]
        for session_dir, session in units:
            labels = {**participants.get(nid, {})}
            labels.update(
                {k: v for k, v in sessions.get(session.removeprefix("ses-"), {}).items() if v is not None}
            )
            with recorder.subject(nid) as rows:
                rows.extend(_read_session(root, nid, session_dir, session, labels, setup, recorder, seen))
    book.report(recorder)
    _check_seen(root, setup, seen, any_sessions_table)
    return recorder.rows, recorder.failures


def _check_seen(root: Path, setup: _Setup, seen: _Seen, any_sessions_table: bool) -> None:
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
