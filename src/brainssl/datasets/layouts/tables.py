"""Dataset-level text tables (labels, demographics, clinical data): reading, cells, bad rows.

A table is read as text (UTF-8, else latin-1 with a warning), split into cells with row numbers
for messages, and its cells parsed with :data:`NA_TOKENS` meaning "unknown". A table that cannot
be used at all stops the dataset (:func:`table_error`); a bad row costs only the subject it names
(:class:`LabelBook`).
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainssl.datasets.layouts.errors import DatasetInfo, DatasetLayoutError, SubjectRecorder
from brainssl.datasets.layouts.files import file_problem

__all__ = [
    "NA_TOKENS",
    "LabelBook",
    "Table",
    "is_na",
    "parse_choice",
    "parse_number",
    "read_csv_table",
    "read_text",
    "table_error",
]

logger = logging.getLogger(__name__)

#: Table cells that mean "unknown" (compared stripped and lower-cased); such values stay empty.
NA_TOKENS = frozenset({"", "na", "n/a", "nan", "none", "null", "unknown", "?", "-"})


def table_error(
    info: DatasetInfo, path: Path, problem: str, expected: Sequence[str], kind: str = "columns"
) -> DatasetLayoutError:
    """Build the one dataset-level error for an unusable table: the file, the problem, the columns."""
    return DatasetLayoutError(
        f"{info.name} ({info.key}): {path}: {problem}; expected {kind} {list(expected)}"
    )


def read_text(path: Path, info: DatasetInfo | None = None) -> str:
    """Read a text table: UTF-8 (a BOM is dropped), else latin-1 with a warning naming the byte.

    Raises:
        DatasetLayoutError: when the file cannot be read (permission denied, a folder, ...).
    """
    problem = file_problem(path, "table")
    if problem is None:
        try:
            data = path.read_bytes()
        except OSError as err:
            problem = "permission denied" if isinstance(err, PermissionError) else f"cannot read: {err}"
    if problem is not None:
        where = f"{info.name} ({info.key}): " if info is not None else ""
        raise DatasetLayoutError(f"{where}{path}: {problem}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        logger.warning(
            "%s: not valid UTF-8 (byte 0x%02x on line %d); read as latin-1, check the non-ASCII text",
            path,
            data[err.start],
            line,
        )
        return data.decode("latin-1")


@dataclass
class Table:
    """A dataset-level table read as text cells, with row numbers for messages.

    Attributes:
        path: the file.
        columns: the header cells (stripped).
        rows: ``(row number, {column: cell})`` per data row; the header is row 1, as a
            spreadsheet counts (for text files: the line on which the row ends).
        bad: ``(row number, reason)`` of rows that could not be split into the header's cells.
    """

    path: Path
    columns: list[str]
    rows: list[tuple[int, dict[str, str]]]
    bad: list[tuple[int, str]] = field(default_factory=list)

    def column(self, *names: str, prefix: bool = False) -> str | None:
        """Return the header cell matching one of ``names`` (case-insensitive), else ``None``."""
        lower = {c.strip().lower(): c for c in self.columns}
        for name in names:
            key = name.strip().lower()
            if key in lower:
                return lower[key]
            if prefix:
                hit = next((c for k, c in lower.items() if k.startswith(key)), None)
                if hit is not None:
                    return hit
        return None


def read_csv_table(info: DatasetInfo, path: Path, required: Sequence[str], delimiter: str = ",") -> Table:
    """Read a delimited table into text cells; check the required columns.

    Comma-separated by default; ``delimiter`` tab reads a BIDS ``.tsv`` (unquoted, as BIDS writes it).

    Fully empty rows are skipped; a short row is padded with empty cells (as pandas does);
    a row with more non-empty cells than the header is a bad row (:attr:`Table.bad`).

    Raises:
        DatasetLayoutError: for an unreadable or empty file, or a missing required column
            (case-insensitive), naming the file and the columns expected.
    """
    text = read_text(path, info)
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, quoting=quoting)
    header: list[str] | None = None
    rows: list[tuple[int, dict[str, str]]] = []
    bad: list[tuple[int, str]] = []
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            if header is None:
                raise table_error(info, path, f"cannot parse the header: {err}", required) from err
            bad.append((reader.line_num, f"cannot split the row into cells: {err}"))
            continue
        if not any(cell.strip() for cell in cells):
            continue
        if header is None:
            header = [cell.strip() for cell in cells]
            continue
        if len(cells) > len(header) and any(cell.strip() for cell in cells[len(header) :]):
            bad.append((reader.line_num, f"{len(cells)} cells but the header has {len(header)}"))
            continue
        cells = cells + [""] * (len(header) - len(cells))
        rows.append((reader.line_num, dict(zip(header, cells, strict=False))))
    if header is None:
        raise table_error(info, path, "the table is empty", required)
    table = Table(path, header, rows, bad)
    missing = [name for name in required if table.column(name) is None]
    if missing:
        raise table_error(info, path, f"missing column(s) {missing} (the header has {header})", required)
    return table


def is_na(text: Any) -> bool:
    """Whether a table cell means "unknown" (empty, ``NA``, ``unknown``, ...; see :data:`NA_TOKENS`)."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return True
    return str(text).strip().lower() in NA_TOKENS


def parse_number(text: Any, column: str, minimum: float | None = None) -> float:
    """Parse a numeric cell: NaN when unknown (:func:`is_na`).

    Raises:
        ValueError: naming the column and the value when it is not a finite number (or below
            ``minimum``).
    """
    if is_na(text):
        return math.nan
    try:
        value = float(str(text).strip())
    except ValueError:
        raise ValueError(f"{column} {str(text).strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{column} {str(text).strip()!r} is not a finite number")
    if minimum is not None and value < minimum:
        raise ValueError(f"{column} {value:g} is below {minimum:g}")
    return value


def parse_choice(text: Any, column: str, choices: Mapping[str, Any]) -> Any:
    """Map a cell through ``choices`` (keys compared lower-cased; ``1.0`` reads as ``1``).

    Returns ``None`` when the cell is unknown (:func:`is_na`).

    Raises:
        ValueError: naming the column, the value and the allowed values.
    """
    if is_na(text):
        return None
    key = str(text).strip().lower()
    if key.endswith(".0") and key[:-2].isdigit():
        key = key[:-2]
    if key not in choices:
        raise ValueError(f"{column} {str(text).strip()!r} is not one of {list(choices)}")
    return choices[key]


_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


@dataclass
class LabelBook:
    """Per-subject values from dataset-level tables; a bad or contradicting row refuses its subject.

    Readers :meth:`put` the values of each good row, :meth:`refuse` the subject a bad row
    names, and :meth:`stray` rows that name no subject. A value given twice differently (a
    subject listed twice in a table) refuses the subject too: it is never labelled by a guess.
    :meth:`report` writes all of it into the failures table.
    """

    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: dict[str, dict[str, str]] = field(default_factory=dict)
    refused: dict[str, tuple[str, str]] = field(default_factory=dict)
    strays: list[tuple[str, str]] = field(default_factory=list)

    def put(self, nid: str, path: Path, row: int, **values: Any) -> None:
        """Record the values of row ``row`` of ``path`` for subject ``nid``."""
        have = self.values.setdefault(nid, {})
        where = self.sources.setdefault(nid, {})
        for key, value in values.items():
            old = have.get(key, _MISSING)
            if old is not _MISSING and not _same(old, value):
                self.refuse(
                    nid,
                    path,
                    f"row {row}: {key} {value!r} contradicts {old!r} from {where[key]}; "
                    "the subject is listed twice with different values",
                )
                continue
            have[key] = value
            where.setdefault(key, f"{Path(path).name} row {row}")

    def refuse(self, nid: str, path: Path | str, reason: str) -> None:
        """Leave subject ``nid`` out; the first reason is kept."""
        self.refused.setdefault(nid, (str(path), reason))

    def stray(self, path: Path | str, reason: str) -> None:
        """Report a row that names no subject (its values are not used; it costs no subject).

        Its failure row has an empty native id, so that counting the subjects lost (the
        failures' native ids missing from the manifest) does not count a malformed id.
        """
        self.strays.append((str(path), reason))

    def get(self, nid: str) -> dict[str, Any]:
        """The values of a subject that is not refused."""
        return dict(self.values.get(nid, {}))

    def report(self, recorder: SubjectRecorder) -> None:
        """Record every refused subject and stray row in the failures table."""
        for nid, (path, reason) in sorted(self.refused.items()):
            logger.warning("%s %s dropped: %s: %s", recorder.dataset, nid, path, reason)
            recorder.fail(nid, path, reason)
        for path, reason in self.strays:
            logger.warning("%s: %s: %s", recorder.dataset, path, reason)
            recorder.fail("", path, reason)
