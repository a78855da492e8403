"""What a ``kind: bids`` entry says, and the tables it names (``participants.tsv``, ``sessions.tsv``).

Parsed once per read (:func:`parse_entry`): the contrast and mask specs, the labels taken from
which table columns, the code maps. A table's bad row costs only its subject (:class:`LabelBook`);
an entry that cannot be used, or a table or column it names that is absent, is the dataset's
error (:class:`DatasetLayoutError`), naming the config key. The layout itself is read by
:mod:`brainssl.datasets.layouts.bids`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brainssl.datasets.layouts.errors import DatasetInfo, DatasetLayoutError, SubjectRecorder
from brainssl.datasets.layouts.files import file_problem
from brainssl.datasets.layouts.tables import LabelBook, Table, is_na, parse_number, read_csv_table

__all__ = [
    "DEFAULT_CONTRASTS",
    "IGNORED_ENTITIES",
    "LABELS",
    "BidsEntry",
    "FileSpec",
    "info",
    "parse_entry",
    "parse_spec",
    "read_participants",
    "read_sessions",
    "read_tsv",
]

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
    if entry.get("roots"):
        each = layout.removeprefix("BIDS: ")
        layout = f"BIDS roots {entry['roots']}/ (datasets.{name}.roots), each with {each}"
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
class BidsEntry:
    """A ``kind: bids`` entry, parsed: its specs, the labels of each table and the code maps."""

    name: str
    info: DatasetInfo
    contrasts: dict[str, FileSpec]
    mask: FileSpec | None
    participants: dict[str, str]
    sessions: dict[str, str]
    values: dict[str, dict[str, str]]
    roots: str = ""


def parse_entry(name: str, entry: Mapping[str, Any]) -> BidsEntry:
    """Parse ``datasets.<name>``; every problem of the entry in one :class:`DatasetLayoutError`."""
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
    roots = str(entry.get("roots") or "").strip()
    if roots.startswith("/") or ".." in Path(roots).parts:
        problems.append(f"{where}.roots: {roots!r} is not a glob below the path (Training/R*)")
    roots = roots.rstrip("/")
    if problems:
        raise DatasetLayoutError(f"{about.name}: " + "; ".join(problems))
    return BidsEntry(name, about, contrasts, mask, tables["participants"], tables["sessions"], values, roots)


def _label_id(text: str, prefix: str) -> str:
    cell = str(text).strip()
    return cell[len(prefix) :] if cell.startswith(prefix) else cell


def read_participants(root: Path, setup: BidsEntry, book: LabelBook) -> dict[str, dict[str, Any]]:
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
    setup: BidsEntry,
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


def read_sessions(
    subject_dir: Path, nid: str, setup: BidsEntry, book: LabelBook, recorder: SubjectRecorder
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
