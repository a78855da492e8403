"""The Hugging Face-style files of an export: ``README.md`` (the card as text) and ``config.json``.

:func:`render_readme` writes a complete model card (:func:`brainssl.modelcard.release_card`) as a
model-hub ``README.md``, YAML front matter then the card in prose and tables; :func:`hub_config`
writes ``config.json``, what builds the architecture for plain ``safetensors`` loading. Kept apart
from :mod:`brainssl.modelcard`, which decides what the card holds: this module only formats it.
Like it, it imports nothing heavy (PyYAML when the README is rendered).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from brainssl.modelcard import DEFAULT_RECIPE

__all__ = ["CONFIG_FILE", "README_FILE", "hub_config", "render_readme"]

README_FILE = "README.md"
CONFIG_FILE = "config.json"
_TAGS = ["medical-imaging", "mri", "brain-mri", "self-supervised-learning", "feature-extraction"]
_METHOD_NAMES = {"moco": "MoCo v3", "dino": "DINO", "random": "random initialisation (baseline)"}


def hub_config(card: Mapping[str, Any]) -> dict[str, Any]:
    """``config.json``: what builds the architecture that ``encoder.safetensors`` loads into."""
    spec = dict(card["architecture"])
    return {
        "model_type": "brainssl-encoder",
        "library_name": "brainssl",
        "brainssl_version": card.get("brainssl_version"),
        "architecture": spec["arch"],
        "build_encoder": spec,
        "embedding_dim": card["embedding_dim"],
        "input": card["input"],
        "output": (
            "class token after the final LayerNorm, (B, embedding_dim)"
            if spec["arch"].startswith("vit")
            else "global average of the last stage, (B, embedding_dim)"
        ),
        "weights_file": card["weights_file"],
        "weights_sha256": card["weights_sha256"],
        "method": card["method"],
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    return str(value)


def _recipe_lines(entry: Mapping[str, Any]) -> list[str]:
    lines = []
    pre = entry["preprocess"]
    if pre is None:
        lines.append("- preprocessing: none (2D images; slices are cut from the image itself)")
    else:
        norm = pre["normalisation"]
        lines += [
            f"- orientation {pre['orientation']}, isotropic spacing {_fmt(pre['spacing_mm'])} mm "
            f"({pre['interpolation']} interpolation), reference contrast the first of "
            f"{_fmt(pre['reference'])}",
            f"- N4 bias correction: {'on' if pre['n4']['enabled'] else 'off'} ({_fmt(pre['n4'])})",
            f"- skull strip: {pre['skull_strip']}; crop margin {_fmt(pre['crop_margin_mm'])} mm",
            f"- normalisation: {norm['method']} within the brain, clip percentiles "
            f"{_fmt(norm['clip_percentiles'])}, zero background {norm['zero_background']}",
        ]
        if pre.get("nyul_landmarks"):
            lines.append(
                f"- Nyúl landmarks for {', '.join(sorted(pre['nyul_landmarks']))} (in model_card.json)"
            )
    sl = entry["slices"]
    lines += [
        f"- slices: {sl['size']} x {sl['size']} px, {sl['dtype']}; intensities: per scan, brain "
        f"percentiles {_fmt(sl['intensity_percentiles'])} -> [0, 1], clipped, background 0",
        f"- slices kept: position window {_fmt(sl['position_window'])}, one every {_fmt(sl['step_mm'])} mm, "
        f"brain area >= {_fmt(sl['min_area'])}, entropy "
        + (
            f">= the {_fmt(sl['entropy_percentile'])}th percentile of the scan's candidate slices "
            "(per contrast)"
            if sl["entropy_mode"] == "percentile"
            else f">= {_fmt(sl['entropy_threshold'])} bits"
        ),
    ]
    return lines


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping) and key != "nyul_landmarks":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _differences(recipes: Mapping[str, Any]) -> list[str]:
    """One line per training dataset: the settings where its recipe differs from the default."""
    default = recipes[DEFAULT_RECIPE]
    lines = []
    for name, entry in recipes.items():
        if name == DEFAULT_RECIPE:
            continue
        changed = []
        for part in ("preprocess", "slices"):
            mine, base = entry[part], default[part]
            if mine is None:
                changed.append("no preprocessing (2D images)")
                continue
            flat, base_flat = _flat(mine), _flat(base or {})
            for key, value in flat.items():
                if key == "nyul_landmarks":
                    changed.append(f"Nyúl landmarks of {', '.join(sorted(value)) or 'no contrast'}")
                elif base_flat.get(key) != value:
                    changed.append(f"{key} {_fmt(value)}")
        lines.append(f"- `{name}`: " + ("; ".join(changed) if changed else "same as default"))
    return lines


def render_readme(card: Mapping[str, Any]) -> str:
    """The Hugging Face-style ``README.md`` of an export: YAML front matter, then the card as text."""
    import yaml

    data = card.get("training_data") or {}
    arch = card["architecture"]["arch"]
    method = _METHOD_NAMES.get(card["method"], card["method"])
    front = {
        "license": card.get("license", "other"),
        "library_name": "brainssl",
        "pipeline_tag": "image-feature-extraction",
        "tags": [*_TAGS, card["method"], arch, *(["synthetic-data"] if data.get("synthetic") else [])],
    }
    # The Hub's `datasets` field takes Hub dataset ids; none of brainssl's sources is one, and a
    # demo encoder saw synthetic look-alikes only, so the training data is the table below.
    name = card.get("name", f"{card['method']}-{arch}")
    out = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", ""]
    out += [
        f"# {name}: brain MRI slice encoder ({method}, {arch})",
        "",
        f"A {arch} encoder ({card.get('n_parameters', '?')} parameters) "
        + (
            "left at its random initialisation: the baseline the pretrained encoders are compared with"
            if card["method"] == "random"
            else f"trained with {method} on 2D axial brain MRI slices"
        )
        + f" (brainssl {card.get('brainssl_version', '')}). It maps a "
        f"{card['input']['size'][0]} x {card['input']['size'][1]} slice in [0, 1] to a "
        f"{card['embedding_dim']}-dimensional embedding.",
        "",
        "## How to use",
        "",
        "Embed your own NIfTI scans with the recipe below applied for you (slice and pooled embeddings):",
        "",
        "```bash",
        "# with brainssl installed (`pip install .` in its repository)",
        "brainssl embed --encoder . scan_T1w.nii.gz -o embeddings.parquet",
        "```",
        "",
        "Or load the weights in Python (with brainssl, or with plain safetensors and config.json):",
        "",
        "```python",
        "import json, brainssl",
        "from safetensors.torch import load_file",
        "from brainssl.pretrain.backbones import build_encoder",
        "",
        'encoder = brainssl.load_encoder(".")  # eval mode; never unpickles',
        'config = json.load(open("config.json"))',
        'same = build_encoder(**config["build_encoder"]).eval()',
        'same.load_state_dict(load_file("encoder.safetensors"))',
        "# encoder(x): x (B, 1, H, W) float in [0, 1] -> (B, embedding_dim)",
        "```",
        "",
        "## Architecture",
        "",
        f"`config.json` holds the arguments of `brainssl.pretrain.backbones.build_encoder`: "
        f"{_fmt(card['architecture'])}. Output: {hub_config(card)['output']}. The tensor names follow "
        "timm (ViT) and torchvision (ResNet).",
        "",
    ]
    section = card.get("recipe")
    if section:
        recipes = section["recipes"]
        pooling = section["pooling"]
        out += ["## Preprocessing recipe", "", f"The `{section['default']}` recipe (for new images):", ""]
        out += _recipe_lines(recipes[section["default"]])
        out += [
            f"- pooling: mean of the slice embeddings of a scan whose position lies in "
            f"{_fmt(pooling['window'])} ({pooling['position']})",
            "",
        ]
        if len(recipes) > 1:
            out += ["Recipes of the training datasets (`brainssl embed --recipe NAME`):", ""]
            out += [*_differences(recipes), ""]
        out += ["Every number is in `model_card.json` (`recipe`).", ""]
    if data:
        out += [
            "## Training data",
            "",
            f"{data['subjects']} subjects, {data['scans']} scans, {data['slices']} slices of the "
            f"`{data['split']}` split" + (" — all synthetic." if data["synthetic"] else "."),
            "",
            "| dataset | source | subjects | scans | slices | contrasts |",
            "| --- | --- | ---: | ---: | ---: | --- |",
        ]
        for e in data["datasets"]:
            contrasts = ", ".join(f"{m} {n}" for m, n in e["slices_per_contrast"].items())
            cells = [e["name"], e["source"], e["subjects"], e["scans"], e["slices"], contrasts]
            out.append("| " + " | ".join(str(c) for c in cells) + " |")
        out.append("")
    metrics = card.get("training_metrics") or {}
    settings = card.get("settings") or {}
    out += ["## Training and evaluation", ""]
    if metrics:
        shown = {k: metrics[k] for k in ("step", "epoch", "final_loss", "images_per_s") if k in metrics}
        out.append(
            f"- training: {_fmt(shown)}" + (f"; seed {settings['seed']}" if "seed" in settings else "")
        )
    probe = card.get("knn_probe") or {}
    if probe:
        out.append("- kNN probe accuracy on held-out subjects: " + _fmt(probe))
    out += [
        f"- weights: `{card['weights_file']}`, sha256 {card['weights_sha256']}",
        f"- training slice index sha256 {card.get('training_manifest_sha256')}",
        "",
    ]
    use = card.get("intended_use")
    if use:
        out += ["## Intended use", "", *[f"- {line}" for line in use["intended"]], "", "Out of scope:", ""]
        out += [*[f"- {line}" for line in use["out_of_scope"]], ""]
    if card.get("limitations"):
        out += ["## Limitations", "", *[f"- {line}" for line in card["limitations"]], ""]
    if card.get("license_note"):
        out += ["## Licence", "", f"`{card['license']}`. {card['license_note']}", ""]
    return "\n".join(out)
