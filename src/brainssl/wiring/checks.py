"""Config checks at workflow start: every mistake at once, each in one short line.

Snakemake's own ``validate`` stops at the first error and prints the whole schema beside it;
:func:`check_config` runs before it and lists every error as the key, the value and what is
allowed, then :func:`missing_dataset_paths` catches a ``local`` dataset folder that does not exist
(otherwise found only inside the first job that reads it).

Two checks need the validated config (defaults filled): :func:`check_slice_sizes` refuses a
pretraining input size that differs from the slice store's (the images would be resized without
anyone asking), and :func:`check_devices` refuses ``cuda`` on a machine without a GPU before any
job starts (``onstart``: it runs neither for a dry-run nor where jobs go to a cluster, whose
head node need not have a GPU).
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "DEVICE_KEYS",
    "ConfigError",
    "check_config",
    "check_devices",
    "check_slice_sizes",
    "config_errors",
    "cuda_available",
    "cuda_requests",
    "missing_dataset_paths",
    "slice_size_errors",
]

#: The settings that say where a stage's networks run (auto, cpu or cuda).
DEVICE_KEYS = ("pretrain.device", "embed.device", "tasks.device")

#: The longest value repr shown in a message (long lists are cut).
_VALUE_CHARS = 60
#: Longest list of allowed keys a message spells out (a section such as pretrain has ~60).
_KEYS_CHARS = 240


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
        patterns = list(error.schema.get("patternProperties", {}))  # user-named keys (BIDS datasets)
        unknown = sorted(
            key for key in set(error.instance) - set(allowed) if not any(re.search(p, key) for p in patterns)
        )
        keys = ", ".join(f"{where}.{key}" if error.absolute_path else key for key in unknown)
        close = {m for key in unknown for m in difflib.get_close_matches(key, allowed, n=1)}
        hint = f" (did you mean {', '.join(sorted(close))}?)" if close else ""
        named = "".join(f", or a name matching {p}" for p in patterns)
        return f"unknown key {keys}{hint}; allowed here: {_key_list(allowed)}{named}"
    if error.validator == "required":
        return f"{where}: {error.message}"
    value = repr(error.instance)
    if len(value) > _VALUE_CHARS:
        value = value[: _VALUE_CHARS - 3] + "..."
    if error.validator == "enum":
        allowed = ", ".join(repr(v) for v in error.validator_value)
        return f"{where} = {value}: not one of {allowed}"
    return f"{where} = {value}: {_rule(error)}"


def _key_list(allowed: list[str]) -> str:
    """The allowed keys, cut to a line's worth (the schema and config.yaml list them all)."""
    text = ", ".join(allowed)
    if len(text) <= _KEYS_CHARS:
        return text
    shown = text[:_KEYS_CHARS].rsplit(", ", 1)[0]
    return f"{shown}, ... ({len(allowed)} keys; the schema lists them all)"


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


def unknown_override_datasets(config: Mapping[str, Any]) -> list[str]:
    """One line per ``<stage>.per_dataset`` key that names no dataset of ``datasets:``.

    The schema lets a per-dataset override name any user-named dataset (``kind: bids``), so a
    misspelt one would silently override nothing; this catches it.
    """
    known = [name for name, entry in config.get("datasets", {}).items() if isinstance(entry, Mapping)]
    lines = []
    for stage in ("preprocess", "slices"):
        for name in (config.get(stage) or {}).get("per_dataset") or {}:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                lines.append(f"{stage}.per_dataset.{name}: no such dataset in datasets{hint}")
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
        lines = unknown_override_datasets(config) + missing_dataset_paths(config, base)
    if lines:
        count = f"{len(lines)} problem(s)"
        raise ConfigError(f"config has {count}:\n" + "\n".join(f"  - {line}" for line in lines))


def slice_size_errors(config: Mapping[str, Any]) -> list[str]:
    """One line per pretraining run whose ``img_size`` differs from a stored dataset's slice side.

    The store's side is ``slices.size`` (with each dataset's ``per_dataset`` override); a run's input
    size is ``pretrain.img_size`` with its ``per_method``/``per_arch`` overrides (the random-* exports
    take ``pretrain.img_size``). There is no setting
    that allows a difference: the random resized crops would resample every slice to the input size
    (64 px slices upsampled to 224 px are blurred, not finer), changing what the encoder learns
    from without anyone asking, while the store is cut again by changing ``slices.size``.

    Args:
        config: the validated config (defaults filled).
    """
    from brainssl.config import pretrain_run_settings, stage_params
    from brainssl.wiring.stages import slice_datasets

    stored = {d: stage_params(config, "slices", d, ["size"])["size"] for d in slice_datasets(config)}
    runs = {
        f"{method}-{arch}": pretrain_run_settings(config, method, arch)["img_size"]
        for method in [*config["pretrain"]["methods"], "random"]
        for arch in config["pretrain"]["archs"]
    }
    lines = []
    for size in sorted(set(runs.values())):
        differ = {d: side for d, side in stored.items() if side != size}
        if not differ:
            continue
        named = ", ".join(run for run, s in runs.items() if s == size)
        if len(set(stored.values())) == 1:
            where = f"slices.size = {next(iter(stored.values()))}"
        else:
            where = "slices.size (per_dataset) = " + ", ".join(f"{d} {v}" for d, v in sorted(differ.items()))
        lines.append(
            f"pretrain.img_size = {size} (runs {named}) but {where}: set slices.size to {size} "
            "(or pretrain.img_size to the store's side): the crops would be resampled silently"
        )
    return lines


def check_slice_sizes(config: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` when a pretraining run's input size differs from the store's slices."""
    lines = slice_size_errors(config)
    if lines:
        raise ConfigError("config has a size mismatch:\n" + "\n".join(f"  - {line}" for line in lines))


def cuda_requests(config: Mapping[str, Any]) -> list[str]:
    """The device settings (:data:`DEVICE_KEYS`, and pretraining overrides) that ask for ``cuda``."""
    from brainssl.config import pretrain_run_settings

    keys = [key for key in DEVICE_KEYS if _dotted(config, key) == "cuda"]
    pretrain = config.get("pretrain", {})
    for method in pretrain.get("methods", []):
        for arch in pretrain.get("archs", []):
            device = pretrain_run_settings(config, method, arch).get("device")
            if device == "cuda" and "pretrain.device" not in keys:
                keys.append(f"pretrain.device ({method}-{arch}, per_method/per_arch)")
    return keys


def _dotted(config: Mapping[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def cuda_available() -> bool:
    """Whether this machine can run CUDA jobs.

    torch's answer where this Python has a CUDA build of torch; otherwise (no torch in a
    Snakemake-only environment, or a CPU build while the jobs' conda env holds a CUDA one)
    whether an NVIDIA driver lists a GPU. The jobs check again when they start
    (:func:`brainssl.tasks.dense_training.resolve_device`,
    :func:`brainssl.pretrain.distributed.init_distributed`).
    """
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.version.cuda is not None:
            return bool(torch.cuda.is_available())
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def check_devices(
    config: Mapping[str, Any], *, local: bool = True, cuda: Callable[[], bool] = cuda_available
) -> None:
    """Refuse a config that asks for ``cuda`` where the jobs run on this machine and it has no GPU.

    Called from the workflow's ``onstart`` (after the DAG is built, never in a dry-run).

    Args:
        config: the validated config.
        local: whether jobs run on this machine; a cluster's jobs check on their own node.
        cuda: tells whether CUDA is available (:func:`cuda_available`).

    Raises:
        ConfigError: naming each setting that asks for ``cuda`` and what to do.
    """
    if not local:
        return
    keys = cuda_requests(config)
    if keys and not cuda():
        raise ConfigError(
            f"config asks for device 'cuda' ({', '.join(keys)}) but this machine has no CUDA GPU "
            "(torch.cuda.is_available() is False and no NVIDIA driver lists one). Set those keys "
            "to 'auto' (GPU when present) or 'cpu', or run where a GPU is (--profile profiles/slurm)."
        )
