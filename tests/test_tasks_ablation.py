"""The slice-filter ablation downstream: encoder roles, comparison pairs, the table and the figure."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from brainssl.tasks.ablation import ABLATION_COLUMNS, AblationRun, ablation_table, read_run, write_ablation
from brainssl.tasks.conclusions import display_name, encoder_role, seed_claims
from brainssl.tasks.pairs import comparison_pairs

A, B, C, R = "moco-vit_tiny", "moco-vit_tiny-unfiltered", "moco-vit_tiny-subset", "random-vit_tiny"


def test_roles_keep_the_ablation_out_of_the_seed_claims():
    assert [encoder_role(n) for n in (A, B, C, R, "imagenet_vit")] == [
        "moco",
        "ablation",
        "ablation",
        "random",
        "natural",
    ]
    assert display_name(B) == "MoCo v3 (vit_tiny, unfiltered slices)"
    assert display_name(C) == "MoCo v3 (vit_tiny, random subset)"
    row = {"task": "t", "dataset": "d", "metric": "auc", "label_fraction": 1.0, "shots": 0, "primary": True}
    row |= {"draws": 1, "gain": 0.2, "ci_low": 0.1, "ci_high": 0.3, "p_value": 0.01}
    row |= {"draws_better": 1, "draws_worse": 0, "verdict": "better"}
    table = pd.DataFrame([{**row, "encoder": A, "baseline": R}, {**row, "encoder": B, "baseline": R}])
    claim = seed_claims(table)[0]
    assert claim.total == 1 and claim.verdict == "yes", claim  # only the ordinary MoCo run counts


def test_ablation_runs_are_compared_with_their_filtered_run_and_random_only():
    ordinary = ["dino-vit_tiny", A, R, "classical"]
    pairs = comparison_pairs([*ordinary, B, C])
    assert pairs[: len(comparison_pairs(ordinary))] == comparison_pairs(ordinary)
    assert pairs[len(comparison_pairs(ordinary)) :] == [(A, C), (C, R), (A, B), (B, R)]


def _results() -> pd.DataFrame:
    rows = []
    for encoder, shift in ((A, 0.0), (B, -0.05), (C, -0.1), (R, -0.2)):
        for seed in (0, 1):
            for fraction in (0.5, 1.0):
                base = {"dataset": "brats21", "encoder": encoder, "mode": "frozen", "shots": 0, "seed": seed}
                base |= {"label_fraction": fraction, "status": "ok", "reason": ""}
                auc = 0.8 + shift + 0.01 * seed
                rows.append({**base, "task": "sequence", "metric": "macro_auc", "value": auc})
                rows.append({**base, "task": "sequence", "metric": "accuracy", "value": 0.5})
                mae = 5.0 - 10 * shift
                rows.append({**base, "task": "brain_age", "dataset": "ixi", "metric": "mae", "value": mae})
    frame = pd.DataFrame(rows)
    frame["ci_low"], frame["ci_high"] = frame["value"] - 0.1, frame["value"] + 0.1
    dense = {"task": "hippocampus_segmentation", "dataset": "hippocampus", "encoder": A, "mode": "frozen"}
    dense |= {"label_fraction": 1.0, "shots": 0, "seed": 0, "metric": "dice", "value": 0.5, "status": "ok"}
    return pd.concat([frame, pd.DataFrame([dense])], ignore_index=True)


def _comparisons() -> pd.DataFrame:
    rows = []
    for first, second, diff in ((A, B, 0.05), (A, C, 0.1), (A, R, 0.2)):
        for seed in (0, 1):
            base = {"task": "sequence", "dataset": "brats21", "metric": "macro_auc", "label_fraction": 1.0}
            base |= {"shots": 0, "seed": seed, "encoder": first, "baseline": second, "p_value": 0.01}
            rows.append({**base, "diff": diff, "ci_low": diff - 0.02, "ci_high": diff + 0.02})
    return pd.DataFrame(rows)


RUNS = [
    AblationRun("subset", C, 40, 38, 15, 9.0, {"contrast": 0.6}),
    AblationRun("filtered", A, 40, 40, 15, 10.0, {"contrast": 0.7}),
    AblationRun("unfiltered", B, 130, 97, 15, 11.0, {"contrast": 0.65}),
    AblationRun("random", R, 0, 0, 0, 0.0, {"contrast": 0.5}),
]


def test_table_holds_each_runs_cost_scores_and_gain_over_the_filtered_run():
    table = ablation_table(RUNS, _results(), _comparisons())
    assert list(table.columns) == list(ABLATION_COLUMNS)
    # the kNN probe first, then the frozen tasks' primary metrics; the dense task left out
    assert list(dict.fromkeys(zip(table["task"], table["metric"], strict=True))) == [
        ("knn_probe", "contrast"),
        ("brain_age", "mae"),
        ("sequence", "macro_auc"),
    ]
    assert table["variant"].tolist()[:4] == ["filtered", "unfiltered", "subset", "random"]
    seq = table[table["task"] == "sequence"].set_index("variant")
    assert seq.loc["filtered", "value"] == pytest.approx(0.805)  # mean over draws, all labels
    assert seq.loc["unfiltered", "ci_low"] == pytest.approx(0.655)
    # the variants' paired gain over the filtered run: the filter helped, so it is negative
    assert seq.loc["unfiltered", ["gain_vs_filtered", "gain_low", "gain_high"]].tolist() == pytest.approx(
        [-0.05, -0.07, -0.03]
    )
    assert seq.loc["subset", "gain_vs_filtered"] == pytest.approx(-0.1)
    assert seq.loc["random", "gain_vs_filtered"] == pytest.approx(-0.2)
    assert np.isnan(seq.loc["filtered", "gain_vs_filtered"])
    assert seq.loc["unfiltered", ["pool_slices", "slices_seen", "steps", "train_seconds"]].tolist() == [
        130,
        97,
        15,
        11.0,
    ]
    mae = table[table["task"] == "brain_age"].set_index("variant")["value"]
    assert mae["unfiltered"] == pytest.approx(5.5) and mae["random"] == pytest.approx(7.0)


def test_a_skipped_cell_is_an_empty_score_not_a_number():
    results = _results()
    results.loc[(results["encoder"] == B) & (results["task"] == "sequence"), "status"] = "skipped"
    table = ablation_table(RUNS, results, pd.DataFrame())
    seq = table[table["task"] == "sequence"].set_index("variant")
    assert np.isnan(seq.loc["unfiltered", "value"]) and seq.loc["filtered", "value"] == pytest.approx(0.805)
    assert table["gain_vs_filtered"].isna().all()  # no comparisons given


def test_read_run_and_write_ablation_from_files(tmp_path):
    from brainssl.io import write_table

    cards, provs = {}, {}
    for variant, name, method in (
        ("filtered", A, "moco"),
        ("unfiltered", B, "moco"),
        ("random", R, "random"),
    ):
        folder = tmp_path / name
        folder.mkdir()
        settings = {
            "batch_size": 8,
            "epochs": 3,
            "seed": 5,
            "epoch_images": 40 if variant == "unfiltered" else None,
        }
        card = {"method": method, "knn_probe": {"contrast": 0.7}, "settings": settings}
        card["training_metrics"] = {"step": 15}
        (folder / "model_card.json").write_text(json.dumps(card))
        prov = {"started": "2026-01-01T00:00:00+00:00", "ended": "2026-01-01T00:00:12.5+00:00"}
        (folder / "provenance.json").write_text(json.dumps(prov))
        cards[variant], provs[variant] = folder / "model_card.json", folder / "provenance.json"
    run = read_run("unfiltered", cards["unfiltered"], provs["unfiltered"], 130)
    assert (run.encoder, run.pool_slices, run.steps, run.train_seconds) == (B, 130, 15, 12.5)
    assert 40 < run.slices_seen <= 120
    assert read_run("filtered", cards["filtered"], provs["filtered"], 40).slices_seen == 40
    assert read_run("random", cards["random"], provs["random"], 0).steps == 0
    index = pd.DataFrame({"split": ["train"] * 40 + ["val"] * 5})
    write_table(tmp_path / "filtered.parquet", index)
    write_table(tmp_path / "unfiltered.parquet", pd.DataFrame({"split": ["train"] * 130}))
    write_table(tmp_path / "results.tsv", _results())
    write_table(tmp_path / "comparisons.tsv", _comparisons())
    table = write_ablation(
        tmp_path / "results.tsv",
        tmp_path / "comparisons.tsv",
        cards,
        provs,
        tmp_path / "filtered.parquet",
        tmp_path / "unfiltered.parquet",
        tmp_path / "ablation.tsv",
        tmp_path / "ablation.png",
    )
    assert set(table["variant"]) == {"filtered", "unfiltered", "random"}
    assert pd.read_csv(tmp_path / "ablation.tsv", sep="\t").shape == table.shape
    assert (tmp_path / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "ablation.png").stat().st_size > 10_000
