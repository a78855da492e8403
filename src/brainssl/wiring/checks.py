"""Config checks at workflow start: every mistake at once, each in one short line.

Snakemake's own ``validate`` stops at the first error and prints the whole schema beside it;
:func:`check_config` runs before it and lists every error as the key, the value and what is
allowed, then :func:`missing_dataset_paths` catches a ``local`` dataset folder that does not exist
(otherwise found only inside the first job that reads it).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "check_config", "config_errors", "missing_dataset_paths"]

#: The longest value repr shown in a message (long lists are cut).
_VALUE_CHARS = 60


class ConfigError(ValueError):
    """The config breaks the schema or names something that does not exist."""


def config_errors(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Every schema violation of ``config``, one line each, sorted by key path."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema)
    lines = {_line(error) for error in validator.iter_errors(dict(config))}
    return sorted(lines)


def _line(error: Any) -> str:
    """``key.path: value — what is allowed`` for one jsonschema error."""
    where = ".".join(str(part) for part in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        keys = ", ".join(f"{where}.{key}" if error.absolute_path else key for key in unknown)
        close = {m for key in unknown for m in difflib.get_close_matches(key, allowed, n=1)}
        hint = f" (did you mean {', '.join(sorted(close))}?)" if close else ""
        return f"unknown key {keys}{hint}; allowed here: {', '.join(allowed)}"
    if error.validator == "required":
        return f"{where}: {error.message}"
    value = repr(error.instance)
    if len(value) > _VALUE_CHARS:
        value = value[: _VALUE_CHARS - 3] + "..."
    if error.validator == "enum":
        allowed = ", ".join(repr(v) for v in error.validator_value)
        return f"{where} = {value}: not one of {allowed}"
    return f"{where} = {value}: {_rule(error)}"


def _rule(error: Any) -> str:
    """What the schema asks, without jsonschema's echo of the value."""
    kind = error.validator
    limit = error.validator_value
    texts = {
        "type": f"must be of type {limit}",
        "minimum": f"must be >= {limit}",
        "maximum": f"must be <= {limit}",
        "exclusiveMinimum": f"must be > {limit}",
        "exclusiveMaximum": f"must be < {limit}",
        "minItems": f"needs at least {limit} item(s)",
        "maxItems": f"takes at most {limit} item(s)",
        "uniqueItems": "items must be unique",
        "multipleOf": f"must be a multiple of {limit}",
        "pattern": f"must match {limit}",
        "minLength": f"needs at least {limit} character(s)",
    }
    return texts.get(kind, error.message)


def missing_dataset_paths(config: Mapping[str, Any], base: Path) -> list[str]:
    """One line per enabled ``local`` dataset whose ``path`` is not a folder (relative to ``base``)."""
    lines = []
    for name, entry in config.get("datasets", {}).items():
        if not isinstance(entry, Mapping) or entry.get("source") != "local":
            continue
        if not entry.get("enabled", True) or not entry.get("path"):
            continue
        folder = Path(entry["path"])
        folder = folder if folder.is_absolute() else base / folder
        if not folder.is_dir():
            lines.append(f"datasets.{name}.path = {entry['path']!r}: no such folder ({folder})")
    return lines


def check_config(config: Mapping[str, Any], schema: Mapping[str, Any] | Path, base: Path) -> None:
    """Raise one :class:`ConfigError` listing every schema error and missing dataset folder.

    Args:
        config: the config as the user wrote it (before defaults are filled).
        schema: the config schema, or the path of its YAML file.
        base: the folder relative dataset paths are read from (the workflow's working folder).
    """
    if isinstance(schema, Path):
        import yaml

        schema = yaml.safe_load(schema.read_text())
    lines = config_errors(config, schema)
    if not lines:
        lines = missing_dataset_paths(config, base)
    if lines:
        count = f"{len(lines)} problem(s)"
        raise ConfigError(f"config has {count}:\n" + "\n".join(f"  - {line}" for line in lines))
