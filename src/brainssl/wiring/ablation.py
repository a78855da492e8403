"""Parse-time decisions of the slice-filter ablation (``pretrain.ablation``; see :mod:`brainssl.ablation`).

Nothing of it is in the workflow while the ablation is off: no unfiltered store, no extra run,
encoder or target. When on, the ablation runs are encoders like any other for the embed stage,
the kNN probe table and the frozen-feature tasks, but not for the dense tasks (they train
decoders per encoder, the expensive part).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from brainssl.ablation import ablation_name
from brainssl.wiring.checks import ConfigError

Config = Mapping[str, Any]

#: The unfiltered store: every brain slice, cut as the filtered store's (shards share its plans).
UNFILTERED_ROOT = "results/slices/unfiltered"
#: The ablation's table and figure (rule tasks_ablation).
ABLATION_OUTPUTS = ("results/tasks/ablation.tsv", "results/tasks/ablation.png")


def ablation_enabled(config: Config) -> bool:
    """Whether ``pretrain.ablation.enabled`` is set."""
    return bool(config["pretrain"].get("ablation", {}).get("enabled", False))


def ablation_run(config: Config) -> tuple[str, str]:
    """The ablation's ``(method, arch)``: the filtered run it compares against.

    Raises:
        ConfigError: while the ablation is on, when the method or arch is not trained by
            ``pretrain.methods``/``pretrain.archs`` (the filtered run would be missing).
    """
    section, ablation = config["pretrain"], config["pretrain"]["ablation"]
    method, arch = ablation["method"], ablation["arch"] or section["archs"][0]
    problems = [
        f"pretrain.ablation.{key} = {value!r} is not in pretrain.{key}s {list(section[key + 's'])}"
        for key, value in (("method", method), ("arch", arch))
        if value not in section[key + "s"]
    ]
    if problems and ablation_enabled(config):
        lines = "\n".join(f"  - {line}" for line in problems)
        raise ConfigError(f"config has {len(problems)} problem(s):\n{lines}")
    return method, arch


def ablation_variants(config: Config) -> list[str]:
    """The variants trained besides the filtered run (none while the ablation is off)."""
    return list(config["pretrain"]["ablation"]["variants"]) if ablation_enabled(config) else []


def ablation_encoders(config: Config) -> dict[str, str]:
    """Ablation run name -> weights file, e.g. ``moco-vit_tiny-subset`` (empty while off)."""
    if not ablation_enabled(config):
        return {}
    method, arch = ablation_run(config)
    names = [ablation_name(method, arch, variant) for variant in ablation_variants(config)]
    return {name: f"results/pretrain/{name}/encoder.safetensors" for name in names}


def ablation_cards(config: Config) -> dict[str, str]:
    """Variant -> model card of every run the ablation table reads: filtered, its variants, random."""
    if not ablation_enabled(config):
        return {}
    method, arch = ablation_run(config)
    names = {"filtered": f"{method}-{arch}"}
    names.update({variant: ablation_name(method, arch, variant) for variant in ablation_variants(config)})
    names["random"] = f"random-{arch}"
    return {variant: f"results/pretrain/{name}/model_card.json" for variant, name in names.items()}


def ablation_outputs(config: Config) -> list[str]:
    """What rule ``all`` asks for from the ablation: its table and figure (nothing while off)."""
    return list(ABLATION_OUTPUTS) if ablation_enabled(config) else []
