"""Config slices: the part of the config each rule depends on.

A rule's ``params`` hold exactly the slice returned here. That slice is what
the schema validated, what Snakemake's params rerun trigger watches and what
the provenance record stores, so changing an unrelated key re-runs nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["shard_indices", "n_shards", "pretrain_run_settings", "stage_params"]

PER_DATASET_KEY = "per_dataset"
# keys of the `pretrain` section that organise runs rather than set one run's values
PRETRAIN_RUN_KEYS = (
    *("archs", "methods", "moco", "dino", "per_method", "per_arch", "probe", "resources"),
    *("natural", "ablation"),
)
# what the random-initialised baseline depends on: its weights (arch, size, depth, seed) and its probe
RANDOM_BASELINE_KEYS = ("img_size", "vit_depth", "knn_k", "knn_temperature")


def stage_params(
    config: Mapping[str, Any],
    stage: str,
    dataset: str | None = None,
    keys: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Return a stage's settings, with one dataset's overrides applied.

    Args:
        config: the validated workflow config.
        stage: the top-level section (``preprocess``, ``slices``, ...).
        dataset: when given, ``config[stage]["per_dataset"][dataset]`` overrides
            the stage defaults key by key (nested mappings are merged).
        keys: keep only these keys (the ones the rule uses).

    Returns:
        The slice with every mapping's keys sorted (recursively), so that Snakemake's params
        trigger, which compares the printed value, does not fire when only the order of keys
        in a config file changes (``yaml.safe_dump`` sorts them, for one).

    Raises:
        KeyError: when the stage or one of ``keys`` is not in the config.
    """
    if stage not in config:
        raise KeyError(f"config has no section {stage!r}")
    section = copy.deepcopy(dict(config[stage]))
    overrides = section.pop(PER_DATASET_KEY, {}) or {}
    if dataset is not None and dataset in overrides:
        section = _merge(section, overrides[dataset])
    if keys is not None:
        missing = [key for key in keys if key not in section]
        if missing:
            raise KeyError(f"config section {stage!r} has no key(s) {missing}")
        section = {key: section[key] for key in keys}
    return _sorted(section)


def pretrain_run_settings(config: Mapping[str, Any], method: str, arch: str) -> dict[str, Any]:
    """Return one pretraining run's settings: shared keys, the method's own, per_method, per_arch.

    Args:
        config: the validated workflow config.
        method: ``moco``, ``dino``, or ``random`` for the random-initialised baseline, whose
            weights depend only on the architecture, size and seed (:data:`RANDOM_BASELINE_KEYS`).
        arch: the encoder architecture.

    Returns:
        A :class:`~brainssl.pretrain.settings.PretrainSettings` mapping (without ``seed``), keys
        sorted recursively, holding only what this run depends on: editing DINO's section does
        not touch the MoCo run's params, so Snakemake re-runs only the DINO job.
    """
    section = config["pretrain"]
    shared = {key: copy.deepcopy(value) for key, value in section.items() if key not in PRETRAIN_RUN_KEYS}
    if method == "random":
        baseline = {key: shared[key] for key in RANDOM_BASELINE_KEYS if key in shared}
        return _sorted({**baseline, "arch": arch, "device": "cpu"})
    merged = _merge(shared, section.get(method, {}))
    merged = _merge(merged, section.get("per_method", {}).get(method, {}))
    merged = _merge(merged, section.get("per_arch", {}).get(arch, {}).get(method, {}))
    return _sorted({**merged, "method": method, "arch": arch})


def _sorted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list | tuple):
        return [_sorted(item) for item in value]
    return value


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def n_shards(n_items: int, shard_size: int) -> int:
    """Return how many shards of ``shard_size`` cover ``n_items`` (at least one)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return max(1, -(-n_items // shard_size))


def shard_indices(n_items: int, shard_size: int, shard: int) -> list[int]:
    """Return the item indices of one shard.

    Items keep their shard when more are added, so appending one subject to a
    dataset changes only the last shard and Snakemake re-runs only that one.
    """
    if not 0 <= shard < n_shards(n_items, shard_size):
        raise ValueError(f"shard {shard} out of range for {n_items} items in shards of {shard_size}")
    start = shard * shard_size
    return list(range(start, min(start + shard_size, n_items)))
