"""tools/readme_numbers.py prints the README's tables from a (here fabricated) results folder."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO

SCRIPT = REPO / "tools" / "readme_numbers.py"


@pytest.fixture(scope="module")
def readme_numbers():
    spec = importlib.util.spec_from_file_location("readme_numbers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tsv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)


def _pretrain(root: Path) -> None:
    """Model cards and metrics.jsonl as the runs write them; probe.tsv from the real writer."""
    from brainssl.pretrain.export import probe_table

    runs = {  # encoder: (method, first loss, final loss, {probe: accuracy}, per-epoch probes)
        "random-vit_tiny": ("random", None, None, {"contrast": 0.702, "position": 0.548}, []),
        "moco-vit_tiny": (
            "moco",
            3.4153,
            2.7801,
            {"contrast": 0.813, "position": 0.68},
            [(0.83, 0.589), (0.813, 0.68)],
        ),
        "dino-vit_tiny": ("dino", 5.3207, 3.0712, {"contrast": 0.838, "position": 0.526}, [(0.759, 0.587)]),
    }
    cards = []
    for encoder, (method, first, final, knn, epochs) in runs.items():
        folder = root / "pretrain" / encoder
        folder.mkdir(parents=True)
        metrics = {} if first is None else {"first_loss": first, "final_loss": final}
        card = {
            "method": method,
            "architecture": {"arch": "vit_tiny"},
            "training_metrics": metrics,
            "knn_probe": knn,
        }
        (folder / "model_card.json").write_text(json.dumps(card))
        cards.append(folder / "model_card.json")
        lines = [{"kind": "train", "step": 0, "loss": first}]
        lines += [
            {"kind": "probe", "epoch": i, "knn/contrast": c, "knn/position": p}
            for i, (c, p) in enumerate(epochs)
        ]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    probe_table(cards, root / "pretrain" / "probe.tsv")


def _tasks(root: Path) -> None:
    def row(task, dataset, encoder, mode, metric, value, fraction=1.0, seed=0, status="ok", shots=0):
        return dict(
            task=task,
            dataset=dataset,
            encoder=encoder,
            mode=mode,
            label_fraction=fraction,
            shots=shots,
            seed=seed,
            metric=metric,
            value=value,
            ci_low="",
            ci_high="",
            n_train=10,
            n_test=5,
            status=status,
            reason="" if status == "ok" else "one class",
        )

    rows = [
        row("tumor4", "tumor4", "moco-vit_tiny", "frozen", "balanced_accuracy", 0.55, seed=0),
        row("tumor4", "tumor4", "moco-vit_tiny", "frozen", "balanced_accuracy", 0.574, seed=1),  # mean 0.562
        row(
            "tumor4", "tumor4", "moco-vit_tiny", "frozen", "balanced_accuracy", 0.9, fraction=0.1
        ),  # not shown
        row("tumor4", "tumor4", "moco-vit_tiny", "frozen", "accuracy", 0.9),  # not a headline metric
        row("tumor4", "tumor4", "moco-vit_tiny", "frozen", "balanced_accuracy", 0.9, shots=5),  # few-shot
        row("tumor4", "tumor4", "random-vit_tiny", "frozen", "balanced_accuracy", 0.587),
        row("tumor4", "tumor4", "moco-vit_tiny-subset", "frozen", "balanced_accuracy", 0.4),  # ablation's
        row("tumor4", "tumor4", "classical", "frozen", "balanced_accuracy", 0.5),
        row("tumor4", "tumor4", "scratch-vit_tiny", "scratch", "balanced_accuracy", 0.25),
        row("brain_age", "ixi", "moco-vit_tiny", "frozen", "mae", 8.71),
        row("brain_age", "ixi", "classical", "frozen", "mae", 15.0021),
        row("brain_age", "ixi", "random-vit_tiny", "frozen", "mae", float("nan"), status="skipped"),
        row("hippocampus_segmentation", "hippocampus", "moco-vit_tiny", "frozen", "dice_anterior", 0.089),
        row("hippocampus_segmentation", "hippocampus", "moco-vit_tiny", "finetune", "dice_anterior", 0.087),
        row("hippocampus_segmentation", "hippocampus", "random-vit_tiny", "frozen", "dice_anterior", 0.0),
        row("hippocampus_segmentation", "hippocampus", "scratch-vit_tiny", "scratch", "dice_anterior", 0.503),
        row("reconstruction", "fastmri_brain", "moco-vit_tiny", "finetune", "psnr_random_2x", 30.888),
        row("reconstruction", "fastmri_brain", "scratch-vit_tiny", "scratch", "psnr_random_2x", 30.722),
    ]
    _tsv(root / "tasks" / "results.tsv", rows)


def _ablation(root: Path) -> None:
    """tasks/ablation.tsv in the columns brainssl.tasks.ablation writes."""
    runs = {  # variant: (encoder, pool slices, distinct slices seen, steps, score, gain, low, high)
        "filtered": ("moco-vit_tiny", 5947, 5947, 276, 0.45, "", "", ""),
        "unfiltered": ("moco-vit_tiny-unfiltered", 19785, 12874, 276, 0.5, 0.05, -0.1, 0.2),
        "random": ("random-vit_tiny", 0, 0, 0, 0.4, -0.05, -0.2, 0.1),
    }
    rows = [
        dict(
            variant=variant,
            encoder=encoder,
            pool_slices=pool,
            slices_seen=seen,
            steps=steps,
            train_seconds=12.5,
            task="tumor4",
            dataset="tumor4",
            metric="balanced_accuracy",
            value=value,
            ci_low="",
            ci_high="",
            gain_vs_filtered=gain,
            gain_low=low,
            gain_high=high,
        )
        for variant, (encoder, pool, seen, steps, value, gain, low, high) in runs.items()
    ]
    _tsv(root / "tasks" / "ablation.tsv", rows)


def _preprocess(root: Path) -> None:
    for dataset, dice in (("ixi", [0.977, 0.881, 0.99]), ("oasis3", [0.974, 0.934, ""])):
        rows = []
        for i, value in enumerate(dice):
            png = root / "preprocess" / dataset / "sessions" / f"sub-{i}" / "ses-none" / "qc.png"
            png.parent.mkdir(parents=True)
            (png.parent / "qc.json").write_text(json.dumps({"skull_strip": {"method": "atlas"}}))
            rows.append(dict(dataset=dataset, subject=f"sub-{i}", dice=value, qc_png=str(png)))
        _tsv(root / "preprocess" / dataset / "qc.tsv", rows)


CLAIMS = "Which seed claims this run reproduces:\n\n1. **Pretraining helps** (seed 1): **inconclusive**.\n"


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run") / "results"
    _pretrain(root)
    _tasks(root)
    _ablation(root)
    _preprocess(root)
    (root / "tasks" / "claims.md").write_text(CLAIMS)
    return root


def test_pretrain_table_in_the_readme_format(readme_numbers, results) -> None:
    assert readme_numbers.pretrain_table(results) == "\n".join(
        [
            "| encoder | training loss, first → last step | kNN contrast | kNN position |",
            "|---|---|---|---|",
            "| `random-vit_tiny` (baseline) | – | 0.702 | 0.548 |",
            "| `moco-vit_tiny` | 3.42 → 2.78 | **0.813** | **0.680** |",
            "| `dino-vit_tiny` | 5.32 → 3.07 | **0.838** | 0.526 |",  # below random: not bold
        ]
    )
    assert readme_numbers.probe_epochs(results) == "\n".join(
        [
            "- `moco-vit_tiny`: 0.830 / 0.589 → 0.813 / 0.680 (contrast / position)",
            "- `dino-vit_tiny`: 0.759 / 0.587 (contrast / position)",
        ]
    )


def test_tasks_table_means_seeds_at_full_labels_and_names_modes(readme_numbers, results) -> None:
    header = (
        "| task / metric (fraction 1.0, mean over seeds) "
        "| `moco-vit_tiny` | `random-vit_tiny` | `classical` | `scratch-vit_tiny` |"
    )
    assert readme_numbers.tasks_table(results) == "\n".join(
        [
            header,
            "|---|---|---|---|---|",
            "| tumor4 tumor4 balanced_accuracy | 0.562 | 0.587 | 0.500 | 0.250 |",
            "| brain_age ixi mae | 8.710 | – | 15.002 | – |",
            "| hippocampus_segmentation hippocampus dice_anterior "
            "| 0.087 / 0.089 (finetune/frozen) | 0.000 | – | 0.503 |",
            "| reconstruction fastmri_brain psnr_random_2x | 30.888 (finetune) | – | – | 30.722 |",
        ]
    )


def test_ablation_table_gives_slices_and_gains_over_the_filtered_run(readme_numbers, results) -> None:
    assert readme_numbers.ablation_table(results) == "\n".join(
        [
            "| score (largest label fraction) | filtered `moco-vit_tiny` "
            "| unfiltered `moco-vit_tiny-unfiltered` | random `random-vit_tiny` |",
            "|---|---|---|---|",
            "| slices drawn from / distinct seen / steps | 5,947 / 5,947 / 276 | 19,785 / 12,874 / 276 | – |",
            "| tumor4 tumor4 balanced_accuracy | 0.450 | 0.500 (+0.050 [-0.100, +0.200]) "
            "| 0.400 (-0.050 [-0.200, +0.100]) |",
        ]
    )


def test_skullstrip_row_and_command_line(results) -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(results), "--section", "skullstrip"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == (
        "<!-- skullstrip -->\n"
        "| skull-strip Dice vs truth brain masks, T1w, `atlas` (ixi 3 / oasis3 2 sessions) "
        "| median 0.977 / 0.954, min 0.881 / 0.934 |\n"
    )


def test_check_names_sections_that_drifted(readme_numbers, results, tmp_path) -> None:
    readme = tmp_path / "README.md"
    blocks = readme_numbers.sections(results)
    readme.write_text("# demo\n\n" + "\n\nprose\n\n".join(blocks.values()) + "\n")
    assert readme_numbers.main([str(results), "--check", str(readme)]) == 0
    readme.write_text(readme.read_text().replace("0.562", "0.563"))  # a hand-edited figure
    assert readme_numbers.stale(results, readme) == ["tasks"]
    assert readme_numbers.main([str(results), "--check", str(readme)]) == 1


def test_the_claims_statement_is_the_runs_own(readme_numbers, results, tmp_path) -> None:
    assert readme_numbers.sections(results, ["claims"]) == {"claims": CLAIMS.rstrip("\n")}
    readme = tmp_path / "README.md"
    readme.write_text(CLAIMS.replace("**inconclusive**", "**yes**"))  # a verdict typed by hand
    assert readme_numbers.stale(results, readme, ["claims"]) == ["claims"]
