"""The errors a native-layout reader raises, and the recorder that turns a bad subject into a row.

They sit apart from the file checks (:mod:`.files`), the table readers (:mod:`.tables`) and the
NIfTI I/O (:mod:`.base`) that raise them, so that each of those depends on this module alone.

What readers refuse, and how they say it:

* A file that cannot be used is a :class:`SubjectError` naming it and the real cause
  (:func:`~brainssl.datasets.layouts.files.file_problem`: missing, a broken symlink or a symlink
  loop, a folder where a file is expected, permission denied; then unreadable, not 3D, NaN/inf,
  too small). Its subject becomes one row of the dataset's failures table; reading goes on.
* Volumes smaller than :data:`~brainssl.datasets.layouts.files.MIN_VOLUME_SIZE` voxels along any
  axis, and 2D images smaller than :data:`~brainssl.datasets.layouts.files.MIN_IMAGE_SIZE`
  pixels, are refused as too small to process. A NIfTI of shape ``(X, Y, Z, 1)`` is read as the
  3D volume ``(X, Y, Z)``.
* Dataset-level text tables (``train_labels.csv``, ``IXI.csv``, clinical tables, ...)
  are read as UTF-8, else as latin-1 with a warning
  (:func:`~brainssl.datasets.layouts.tables.read_text`). A missing required column or an
  unparsable table stops the dataset with one :class:`DatasetLayoutError` naming the file and
  the columns expected (:func:`~brainssl.datasets.layouts.tables.table_error`); a bad row costs
  only the subject it names (:class:`~brainssl.datasets.layouts.tables.LabelBook`), reported with
  the file, the row number (the header is row 1, as a spreadsheet counts) and the reason. Cells
  in :data:`~brainssl.datasets.layouts.tables.NA_TOKENS` mean "unknown" and stay empty.
* Several files for one slot (duplicates) are resolved by each layout's documented rule;
  the files not used are reported in the failures table (:meth:`SubjectRecorder.note`)
  and the subject is kept.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DatasetInfo",
    "DatasetLayoutError",
    "NoUsableSubjectsError",
    "SubjectError",
    "SubjectRecorder",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetInfo:
    """What a person needs to know to provide a real copy of a dataset.

    Attributes:
        key: dataset key (``ixi``).
        name: full name.
        layout: the expected folder layout, in one or two lines.
        source: where to obtain it.
    """

    key: str
    name: str
    layout: str
    source: str


class DatasetLayoutError(ValueError):
    """A dataset root is missing or does not look like the native layout.

    Also raised for a dataset-level table that cannot be used at all (unparsable, or
    missing a required column): the message names the file and the columns expected.
    """


class NoUsableSubjectsError(DatasetLayoutError):
    """Every subject of a dataset failed; the message names the failures table."""


class SubjectError(ValueError):
    """One subject cannot be used; the message names the file and the reason."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass
class SubjectRecorder:
    """Collects manifest rows per subject; a failing subject becomes one failure row.

    Use ``with recorder.subject(native_id) as rows: rows.append(...)``; if the
    block raises :class:`SubjectError` (or an ``OSError`` such as ``PermissionError``),
    the subject's rows are dropped and the error is recorded (dataset, native_id, path,
    reason), and reading goes on.
    """

    dataset: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)

    @contextlib.contextmanager
    def subject(self, native_id: str) -> Iterator[list[dict[str, Any]]]:
        """Yield a list for this subject's rows; keep them only if no SubjectError is raised."""
        pending: list[dict[str, Any]] = []
        try:
            yield pending
        except SubjectError as err:
            logger.warning("%s %s dropped: %s", self.dataset, native_id, err)
            self.fail(native_id, err.path, err.reason)
            return
        except OSError as err:  # a folder or file that cannot be listed or opened
            path = err.filename if err.filename is not None else ""
            reason = (
                "permission denied"
                if isinstance(err, PermissionError)
                else f"cannot read: {type(err).__name__}: {err.strerror or err}"
            )
            logger.warning("%s %s dropped: %s: %s", self.dataset, native_id, path, reason)
            self.fail(native_id, path, reason)
            return
        self.rows.extend(pending)

    def fail(self, native_id: str, path: Path | str, reason: str) -> None:
        """Record one failure without a subject context."""
        self.failures.append(
            {"dataset": self.dataset, "native_id": native_id, "path": str(path), "reason": reason}
        )

    def note(self, native_id: str, path: Path | str, reason: str) -> None:
        """Report a file that is not used while its subject is kept (e.g. a duplicate)."""
        logger.warning("%s %s: %s: %s", self.dataset, native_id, path, reason)
        self.fail(native_id, path, reason)
