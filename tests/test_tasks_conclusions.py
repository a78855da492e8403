"""Conclusions from the paired comparisons: the table, the figure and the seed-claims statement."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from brainssl.tasks.conclusions import (
    CONCLUSION_COLUMNS,
    claims_markdown,
    conclusions,
    encoder_role,
    main,
    oriented,
    read_conclusions,
    seed_claims,
)
from brainssl.tasks.figures import VERDICT_COLOURS, save_conclusions_figure

MOCO, DINO, RANDOM = "moco-vit_tiny", "dino-vit_tiny", "random-vit_tiny"


def _cmp(
    encoder,
    baseline,
    diff,
    low,
    high,
    task="tumor4",
    metric="balanced_accuracy",
    shots=0,
    fraction=1.0,
    seed=0,
):
    return {
        "task": task,
        "dataset": task,
        "metric": metric,
        "label_fraction": math.nan if shots else fraction,
        "shots": shots,
        "seed": seed,
        "encoder": encoder,
        "baseline": baseline,
        "diff": diff,
        "ci_low": low,
        "ci_high": high,
        "p_value": 0.01,
    }


def test_conclusions_average_draws_orient_mae_and_give_verdicts():
    rows = [
        _cmp(MOCO, RANDOM, 0.1, 0.05, 0.15, seed=0),
        _cmp(MOCO, RANDOM, 0.2, 0.1, 0.3, seed=1),
        _cmp(MOCO, RANDOM, 0.3, -0.1, 0.7, metric="accuracy"),
        _cmp(MOCO, RANDOM, -3.0, -5.0, -1.0, task="brain_age", metric="mae"),  # MAE 3 years lower
        _cmp(DINO, MOCO, 0.05, -0.02, 0.12, shots=2),
        _cmp(DINO, MOCO, 0.04, 0.01, 0.07, shots=5),
        _cmp(DINO, RANDOM, math.nan, math.nan, math.nan, shots=5),
    ]
    table = conclusions(pd.DataFrame(rows))
    assert tuple(table.columns) == CONCLUSION_COLUMNS
    row = table[(table["metric"] == "balanced_accuracy") & (table["encoder"] == MOCO)].iloc[0]
    assert row["draws"] == 2 and row["draws_better"] == 2 and row["verdict"] == "better"
    assert np.allclose([row["gain"], row["ci_low"], row["ci_high"]], [0.15, 0.075, 0.225])
    age = table[table["metric"] == "mae"].iloc[0]
    assert (age["gain"], age["ci_low"], age["ci_high"], age["verdict"]) == (3.0, 1.0, 5.0, "better")
    shots = table[table["shots"] > 0].set_index(["shots", "baseline"])
    assert shots.loc[(2, MOCO), "verdict"] == "inconclusive" and shots.loc[(5, MOCO), "verdict"] == "better"
    assert shots.loc[(5, RANDOM), "verdict"] == "undefined" and shots["label_fraction"].isna().all()
    primary = table.groupby("task")["metric"].apply(lambda m: sorted(set(m[table.loc[m.index, "primary"]])))
    assert primary.to_dict() == {"brain_age": ["mae"], "tumor4": ["balanced_accuracy"]}
    assert conclusions(pd.DataFrame()).empty


def test_oriented_flips_stored_pairs_and_roles_read_names():
    table = conclusions(pd.DataFrame([_cmp("imagenet-vit", MOCO, -0.2, -0.3, -0.1)]))
    (row,) = oriented(
        table, lambda n: encoder_role(n) == "moco", lambda n: encoder_role(n) == "natural"
    ).to_dict("records")
    assert (row["encoder"], row["baseline"], row["verdict"]) == (MOCO, "imagenet-vit", "better")
    assert np.allclose([row["gain"], row["ci_low"], row["ci_high"]], [0.2, 0.1, 0.3])
    roles = [encoder_role(n) for n in (MOCO, DINO, RANDOM, "scratch-vit_tiny", "classical", "imagenet-vit")]
    assert roles == ["moco", "dino", "random", "scratch", "classical", "natural"]


def _claims(rows):
    return {c.key: c for c in seed_claims(conclusions(pd.DataFrame(rows)))}


@pytest.mark.parametrize(
    ("tumor", "sequence", "verdict"),
    [
        ((0.1, 0.05, 0.2), (0.1, 0.02, 0.2), "yes"),  # every comparison favourable
        ((0.1, 0.05, 0.2), (-0.1, -0.2, -0.05), "inconclusive"),  # one against
        ((-0.1, -0.2, -0.05), (-0.1, -0.2, -0.05), "no"),
    ],
)
def test_first_claim_judged_on_primary_metric_with_all_subjects(tumor, sequence, verdict):
    rows = []
    for encoder in (MOCO, DINO):
        rows += [
            _cmp(encoder, RANDOM, *tumor),
            _cmp(encoder, RANDOM, *sequence, task="sequence", metric="macro_auc"),
        ]
        rows.append(_cmp(encoder, RANDOM, -0.5, -0.6, -0.4, fraction=0.1))  # not the full budget
        rows.append(_cmp(encoder, RANDOM, -0.5, -0.6, -0.4, metric="accuracy"))  # not primary
        rows.append(_cmp(encoder, "classical", -0.5, -0.6, -0.4))  # not a claim-1 reference
    claim = _claims(rows)["ssl_beats_baselines"]
    assert (claim.verdict, claim.total) == (verdict, 4)
    if verdict == "yes":  # three of four favourable, but one against: not a yes
        rows.append(_cmp(DINO, RANDOM, -0.1, -0.2, -0.05, task="sequence", metric="macro_auc", seed=1))
        rows = [r for r in rows if not (r["encoder"] == DINO and r["task"] == "sequence" and r["seed"] == 0)]
        claim = _claims(rows)["ssl_beats_baselines"]
        assert (claim.verdict, claim.favourable, claim.unfavourable) == ("inconclusive", 3, 1)
    assert claims_markdown(conclusions(pd.DataFrame(rows))).count("\n   - ") == 4 + 0


def test_second_claim_needs_few_shot_cells_and_dino_ahead_of_every_other_encoder():
    assert _claims([_cmp(DINO, MOCO, 0.1, 0.05, 0.2)])["dino_strongest_scarce"].verdict == "untested"
    ahead = [_cmp(DINO, MOCO, 0.1, 0.05, 0.2, shots=2), _cmp(DINO, RANDOM, 0.2, 0.1, 0.3, shots=2)]
    ahead.append(_cmp("scratch-vit_tiny", DINO, 0.2, 0.1, 0.3, shots=2))  # scratch is not a frozen encoder
    assert _claims(ahead)["dino_strongest_scarce"].verdict == "yes"
    behind = [_cmp(DINO, MOCO, -0.1, -0.2, -0.05, shots=k) for k in (2, 5)] + [ahead[1]]
    claim = _claims(behind)["dino_strongest_scarce"]
    assert (claim.verdict, claim.favourable, claim.unfavourable, claim.total) == ("no", 1, 2, 3)


def test_claims_statement_names_encoders_gains_and_intervals(tmp_path, capsys):
    rows = [_cmp(MOCO, RANDOM, 0.12, 0.05, 0.2, seed=s) for s in range(3)]
    rows += [_cmp(DINO, RANDOM, 0.1, 0.04, 0.2), _cmp(DINO, MOCO, 0.02, -0.03, 0.06, shots=5)]
    text = claims_markdown(conclusions(pd.DataFrame(rows)))
    assert (
        "MoCo v3 (vit_tiny) beats random init (vit_tiny) on tumor4 balanced accuracy with all training "
        "subjects: gain +0.12 [+0.05, +0.2], 3/3 draws better"
    ) in text
    assert "(Huang et al.): **yes** — 2 of 2 comparisons favourable, 0 unfavourable." in text
    assert "(BrainDINO): **inconclusive**" in text and "with 5 shots per class" in text
    path = tmp_path / "comparisons.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    assert main([str(path)]) == 0  # a comparisons table works too
    assert capsys.readouterr().out.startswith("Which seed claims this run reproduces")
    table = conclusions(pd.DataFrame(rows))
    table.to_csv(tmp_path / "conclusions.tsv", sep="\t", index=False)
    assert read_conclusions(tmp_path / "conclusions.tsv")["primary"].dtype == bool


def test_conclusions_figure_one_panel_per_pair_cells_by_verdict(tmp_path):
    rows = [
        _cmp(MOCO, RANDOM, 0.12, 0.05, 0.2),
        _cmp(MOCO, RANDOM, -0.1, -0.2, -0.05, shots=2),
        _cmp(MOCO, RANDOM, 0.01, -0.05, 0.06, task="sequence", metric="macro_auc"),
        _cmp(DINO, MOCO, 0.03, -0.01, 0.08, shots=2),
        _cmp(DINO, MOCO, 0.5, 0.4, 0.6, metric="accuracy"),  # not primary: not drawn
    ]
    fig = save_conclusions_figure(conclusions(pd.DataFrame(rows)), tmp_path / "conclusions.png")
    assert (tmp_path / "conclusions.png").stat().st_size > 5000
    panels = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in panels] == [f"{DINO} vs {MOCO}", f"{MOCO} vs {RANDOM}"]
    ax = panels[1]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2 shots", "fraction 1"]  # shots first
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "sequence\nmacro_auc",
        "tumor4\nbalanced_accuracy",
    ]
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert cells == {
        (1, 1): "+0.12\n[+0.05, +0.2]",
        (1, 0): "-0.1\n[-0.2, -0.05]",
        (0, 1): "+0.01\n[-0.05, +0.06]",
    }
    image = ax.get_images()[0]
    colours = image.cmap(image.norm(image.get_array()))
    assert (
        to_hex(colours[1, 1]) == VERDICT_COLOURS["better"]
        and to_hex(colours[1, 0]) == VERDICT_COLOURS["worse"]
    )
    assert to_hex(colours[0, 1]) == VERDICT_COLOURS["inconclusive"]
    assert to_hex(colours[0, 0]) == VERDICT_COLOURS["undefined"]  # sequence at 2 shots: not compared
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["better", "worse", "inconclusive"]
    empty = save_conclusions_figure(conclusions(pd.DataFrame()), tmp_path / "empty.png")
    assert "no paired comparison" in empty.axes[0].texts[0].get_text()
