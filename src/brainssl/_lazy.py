"""Lazy re-exports for package façades (PEP 562), so that importing a package stays cheap.

Snakemake imports parts of :mod:`brainssl` while it parses the workflow; a package whose
``__init__`` imported every submodule would pull nibabel, SimpleITK, scipy, h5py, Pillow and
matplotlib into that parse. A façade built with :func:`attach` imports a submodule only when
one of its names is first used (``from brainssl.preprocess import n4_correct`` still works).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["attach"]


def attach(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``__getattr__`` and ``__dir__`` for a package's lazy names.

    Args:
        package: the package's ``__name__``.
        exports: public name -> the submodule (relative to the package) that defines it.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        importlib.import_module(package).__dict__[name] = value  # later look-ups skip this hook
        return value

    def __dir__() -> list[str]:
        return sorted({*importlib.import_module(package).__dict__, *exports})

    return __getattr__, __dir__
