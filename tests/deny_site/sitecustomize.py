"""Simulated "permission denied" for tests that run as root, in-process or in workflow jobs.

Root reads ``chmod 000`` files, so an unreadable file or folder is simulated: ``os.scandir``
raises ``PermissionError`` for a denied folder and ``os.access`` answers ``False`` for a denied
path and everything below it (what a non-root reader meets). The bad-input matrix installs
:class:`Deny` with ``monkeypatch.setattr``. A workflow test puts this folder on ``PYTHONPATH``
and lists the paths in :data:`ENV` (``os.pathsep``-separated): Python imports this module at
start-up (``site``), in Snakemake and in every job process. Only ``os`` is imported, so the
start-up stays instant.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

ENV = "BRAINSSL_TEST_DENY"


class Deny:
    """Deny listing or reading these paths (and below); call it with a path to add one.

    Args:
        setattr_: how ``os.scandir`` and ``os.access`` are replaced (``monkeypatch.setattr``
            undoes it after a test; the built-in ``setattr`` is for a whole process).
        paths: paths denied from the start.
    """

    def __init__(
        self, setattr_: Callable[[Any, str, Any], None] = setattr, paths: Iterable[str] = ()
    ) -> None:
        self.paths: set[str] = {str(p) for p in paths}
        real_scandir, real_access = os.scandir, os.access

        def scandir(path: Any = ".") -> Any:
            if self._denied(path):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real_scandir(path)

        def access(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
            return False if self._denied(path, below=True) else real_access(path, mode, *args, **kwargs)

        setattr_(os, "scandir", scandir)
        setattr_(os, "access", access)

    def __call__(self, path: os.PathLike[str] | str) -> None:
        self.paths.add(str(path))

    def _denied(self, path: Any, below: bool = False) -> bool:
        text = os.fspath(path) if isinstance(path, str | os.PathLike) else ""
        return text in self.paths or (below and any(text.startswith(p + os.sep) for p in self.paths))


if os.environ.get(ENV):
    Deny(paths=filter(None, os.environ[ENV].split(os.pathsep)))
