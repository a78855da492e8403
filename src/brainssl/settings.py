"""One conversion from a config mapping to a stage's frozen settings dataclass.

Every stage's settings class is built through :func:`from_mapping`, so an unknown key is the same
error everywhere (:class:`UnknownSettingError`, naming the key and the allowed ones), lists become
tuples where a field is a tuple, and nested sections become their own settings classes.

Each field is declared once with :func:`setting`: its default, a one-line description and its
JSON-schema constraints. The workflow's config schema is generated from these declarations.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["SCHEMA_KEY", "UnknownSettingError", "from_mapping", "setting"]

T = TypeVar("T")


#: The field-metadata key holding a setting's description and JSON-schema constraints.
SCHEMA_KEY = "brainssl.schema"


class UnknownSettingError(ValueError):
    """A config mapping holds a key that its settings class has no field for."""


def setting(
    default: Any = dataclasses.MISSING,
    description: str = "",
    *,
    factory: Any = dataclasses.MISSING,
    **constraints: Any,
) -> Any:
    """Declare one setting as the dataclass field that the config schema is generated from.

    A setting has its default (or ``factory`` for a nested section), what it means and its range.
    ``constraints`` are JSON-schema keywords in snake case (``minimum``, ``exclusive_maximum``,
    ``enum``, ``min_items``, ``items={"minimum": 0}``, ...); the type comes from the annotation.
    """
    if not description:
        raise ValueError("a setting needs a description")
    schema = {"description": description, **{_camel(k): v for k, v in constraints.items()}}
    if isinstance(schema.get("items"), Mapping):
        schema["items"] = {_camel(k): v for k, v in schema["items"].items()}
    metadata = {SCHEMA_KEY: schema}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def from_mapping(cls: type[T], values: Mapping[str, Any], section: str | None = None) -> T:
    """Build the settings dataclass ``cls`` from ``values``.

    Args:
        cls: a dataclass whose fields are the section's settings.
        values: the config mapping (missing keys take the field defaults).
        section: the name used in error messages (default: the class name).

    Raises:
        UnknownSettingError: when ``values`` has a key that ``cls`` does not, naming the key
            (with its nested path) and the allowed keys.
    """
    name = section or cls.__name__
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        keys = ", ".join(f"{name}.{key}" for key in unknown)
        raise UnknownSettingError(f"unknown setting(s) {keys}; allowed: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {key: _convert(hints[key], value, f"{name}.{key}") for key, value in values.items()}
    return cls(**kwargs)


def _convert(hint: Any, value: Any, path: str) -> Any:
    """A config value as the field's type wants it: nested settings, tuples for lists."""
    for option in _options(hint):
        if dataclasses.is_dataclass(option) and isinstance(value, Mapping):
            return from_mapping(option, value, section=path)  # type: ignore[arg-type]
    if isinstance(value, list) and any(typing.get_origin(o) is tuple for o in _options(hint)):
        return tuple(_element(hint, item) for item in value)
    return value


def _options(hint: Any) -> tuple[Any, ...]:
    """The alternatives of a union hint (``X | None``), or the hint itself."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _element(hint: Any, item: Any) -> Any:
    """A tuple element as its declared type: ints become floats in a tuple of floats."""
    tuples = [o for o in _options(hint) if typing.get_origin(o) is tuple]
    args = typing.get_args(tuples[0]) if tuples else ()
    if (
        args
        and all(a in (float, Ellipsis) for a in args)
        and isinstance(item, int)
        and not isinstance(item, bool)
    ):
        return float(item)
    return item
