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
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "OPTIONS_KEY",
    "SCHEMA_KEY",
    "Keyed",
    "MissingSettingError",
    "UnknownSettingError",
    "from_mapping",
    "setting",
]

T = TypeVar("T")


#: The field-metadata key holding a setting's description and JSON-schema constraints.
SCHEMA_KEY = "brainssl.schema"
#: The field-metadata key holding where a setting sits in the config (see :func:`setting`).
OPTIONS_KEY = "brainssl.setting"


class UnknownSettingError(ValueError):
    """A config mapping holds a key that its settings class has no field for."""


class MissingSettingError(ValueError):
    """A config mapping lacks a key that its settings class has no default for."""


@dataclass(frozen=True)
class Keyed:
    """The keys a mapping-typed setting may hold: a registry's names (per-dataset overrides).

    The field's annotation says what each key holds (``Mapping[str, PreprocessSettings]``): the
    overrides of a settings class (every key optional, none with a default: an absent key keeps
    the value it overrides), another :class:`Keyed` level (``value``), or a plain value whose
    default is the field default's entry and whose range is ``constraints``.

    Attributes:
        keys: the allowed keys, in order (the field default's keys when empty).
        description: what each key's entry is; ``{key}`` stands for the key.
        value: the next level, for a mapping of mappings (``per_arch.<arch>.<method>``).
        constraints: JSON-schema keywords of each entry (snake case, as in :func:`setting`).
        pattern: other keys allowed, by regular expression (user-named datasets), each holding
            what a listed key holds; the workflow checks that they name a configured one.
    """

    keys: tuple[str, ...] = ()
    description: str = ""
    value: Keyed | None = None
    constraints: Mapping[str, Any] = field(default_factory=dict)
    pattern: str = ""


def setting(
    default: Any = dataclasses.MISSING,
    description: str = "",
    *,
    factory: Any = dataclasses.MISSING,
    config: bool = True,
    override: bool = True,
    group: str = "",
    required: bool = False,
    unset: Any = dataclasses.MISSING,
    keyed: Keyed | None = None,
    fill: bool = True,
    **constraints: Any,
) -> Any:
    """Declare one setting as the dataclass field that the config schema is generated from.

    A setting has its default (or ``factory`` for a nested section), what it means and its range.
    ``constraints`` are JSON-schema keywords in snake case (``minimum``, ``exclusive_maximum``,
    ``enum``, ``min_items``, ``items={"minimum": 0}``, ...); the type comes from the annotation
    (a fixed-length tuple also gives the item count).

    Args:
        default: the package's default; none for a value every caller passes.
        description: one line: what the setting means (the schema's description).
        factory: builds the default instead (a nested settings class, an empty mapping).
        config: ``False`` for a value the workflow or the adapter sets (the run's seed, a
            pretraining run's method): no config key.
        override: ``False`` for a key of the stage only, not of its per-dataset (per-method)
            overrides (``slices.shard_size``).
        group: the config nests the key in this subsection of its section
            (``pretrain.moco.temperature``); the section class's ``setting_groups`` describes it.
        required: the config must set the key although the package has a default (``seed``).
        unset: for a field without a default: what the schema fills in where the config leaves
            the key out (``None``, which the workflow replaces, makes the key nullable).
        keyed: for a mapping: the keys it may hold and what each holds (:class:`Keyed`).
        fill: ``False``: the schema writes no default, so validation leaves the key out where the
            config does (a dataset's ``path``, which a condition of the schema requires).
        **constraints: JSON-schema keywords in snake case.

    ``config``, ``override``, ``group``, ``required``, ``unset``, ``keyed`` and ``fill`` say where
    the setting sits in the config; :mod:`brainssl.schema` reads them.
    """
    if not description:
        raise ValueError("a setting needs a description")
    schema = {"description": description, **_camel_keys(constraints)}
    if isinstance(schema.get("items"), Mapping):
        schema["items"] = _camel_keys(schema["items"])
    options = {
        "config": config,
        "override": override,
        "group": group,
        "required": required,
        "fill": fill,
    }
    if unset is not dataclasses.MISSING:
        options["unset"] = unset
    if keyed is not None:
        options["keyed"] = keyed
    metadata = {SCHEMA_KEY: schema, OPTIONS_KEY: options}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _camel_keys(values: Mapping[str, Any]) -> dict[str, Any]:
    return {_camel(k): v for k, v in values.items()}


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
        MissingSettingError: when ``values`` lacks a key that ``cls`` has no default for.
    """
    name = section or cls.__name__
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        keys = ", ".join(f"{name}.{key}" for key in unknown)
        raise UnknownSettingError(f"unknown setting(s) {keys}; allowed: {sorted(fields)}")
    missing = [
        key
        for key, f in fields.items()
        if f.init
        and key not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        keys = ", ".join(f"{name}.{key}" for key in missing)
        raise MissingSettingError(f"missing setting(s) {keys}; they have no default")
    hints = typing.get_type_hints(cls)
    kwargs = {key: _convert(hints[key], value, f"{name}.{key}") for key, value in values.items()}
    return cls(**kwargs)


def _convert(hint: Any, value: Any, path: str) -> Any:
    """A config value as the field's type wants it: nested settings, tuples for lists."""
    for option in _options(hint):
        if dataclasses.is_dataclass(option) and isinstance(value, Mapping):
            return from_mapping(option, value, section=path)  # type: ignore[arg-type]
    if isinstance(value, list) and any(typing.get_origin(o) is tuple for o in _options(hint)):
        return tuple(_element(hint, item, f"{path}[{i}]") for i, item in enumerate(value))
    return value


def _options(hint: Any) -> tuple[Any, ...]:
    """The alternatives of a union hint (``X | None``), or the hint itself."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _element(hint: Any, item: Any, path: str) -> Any:
    """A tuple element as its declared type: ints become floats in a tuple of floats."""
    tuples = [o for o in _options(hint) if typing.get_origin(o) is tuple]
    args = typing.get_args(tuples[0]) if tuples else ()
    if args and dataclasses.is_dataclass(args[0]) and isinstance(item, Mapping):
        return from_mapping(args[0], item, section=path)  # type: ignore[arg-type]
    if (
        args
        and all(a in (float, Ellipsis) for a in args)
        and isinstance(item, int)
        and not isinstance(item, bool)
    ):
        return float(item)
    return item
