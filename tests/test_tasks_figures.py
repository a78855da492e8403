"""Task figures: what the panels show (titles, axis labels, lines, legends, ranges), not only a PNG."""

import numpy as np
import pandas as pd
from matplotlib.container import ErrorbarContainer
from PIL import Image

from brainssl.tasks.figures import save_fraction_curves, save_risk_group_curves
from brainssl.tasks.results import result_row


def _rows(encoders, fractions, seeds, value, **fields):
    base = dict(task="sequence", dataset="brats21", mode="frozen", metric="auc", n_train=10) | fields
    return [
        result_row(
            encoder=encoder, label_fraction=fraction, seed=seed, value=value(encoder, fraction, seed), **base
        )
        for encoder in encoders
        for fraction in fractions
        for seed in seeds
    ]


def _drawn(ax):
    """The error-bar lines of a panel, by legend label."""
    return {c.get_label(): c for c in ax.containers if isinstance(c, ErrorbarContainer)}


def test_fraction_curves_draw_seeds_whose_values_round_apart(tmp_path):
    # three equal seeds whose mean lies a rounding error outside [min, max]
    value = 0.7  # pandas: mean of [0.7] * 3 - 0.7 = -1.1e-16
    rows = _rows(["moco-vit_tiny"], (0.1, 1.0), range(3), lambda *_: value)
    fig = save_fraction_curves(pd.DataFrame(rows), tmp_path / "curves.png")
    with Image.open(tmp_path / "curves.png") as image:
        assert image.format == "PNG" and image.size[0] > 200
    (ax,) = [ax for ax in fig.axes if ax.axison]
    assert ax.get_title() == "sequence / brats21"
    assert ax.get_xlabel() == "label fraction (training subjects)" and ax.get_ylabel() == "auc"
    assert ax.get_xscale() == "log"
    (line,) = _drawn(ax).values()
    x, y = line.lines[0].get_data()
    assert list(x) == [0.1, 1.0] and np.allclose(y, value)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["moco-vit_tiny"]
    low, high = ax.get_ylim()
    assert np.isfinite([low, high]).all() and low < value < high


def test_fraction_curves_one_line_per_encoder_mean_over_seeds_and_seed_range(tmp_path):
    scores = {"moco-vit_tiny": 0.8, "random-vit_tiny": 0.6, "classical": 0.5}
    rows = _rows(scores, (0.05, 0.25, 1.0), range(2), lambda e, f, s: scores[e] + 0.1 * s)
    rows += _rows(["moco-vit_tiny"], (1.0,), [0], lambda *_: 3.0, task="age", metric="mae")
    rows.append(
        result_row(task="age", dataset="ixi", encoder="x", metric="mae", status="skipped", reason="too few")
    )
    fig = save_fraction_curves(pd.DataFrame(rows), tmp_path / "curves.png")
    panels = [ax for ax in fig.axes if ax.axison]
    assert [(ax.get_title(), ax.get_ylabel()) for ax in panels] == [
        ("age / brats21", "mae"),
        ("sequence / brats21", "auc"),
    ], "one panel per (task, dataset, metric) with an ok row, sorted; the skipped row draws nothing"
    lines = _drawn(panels[1])
    assert sorted(lines) == sorted(scores)
    assert sorted(t.get_text() for t in panels[1].get_legend().get_texts()) == sorted(scores)
    for encoder, container in lines.items():
        x, y = container.lines[0].get_data()
        assert list(x) == [0.05, 0.25, 1.0]
        assert np.allclose(y, scores[encoder] + 0.05), "the line is the mean of the two seeds"
        (bars,) = container.lines[2]
        spans = [seg[:, 1] for seg in bars.get_segments()]
        assert np.allclose([s.min() for s in spans], scores[encoder])
        assert np.allclose([s.max() for s in spans], scores[encoder] + 0.1), "bars span the seeds"


def test_fraction_curves_say_so_when_nothing_could_be_evaluated(tmp_path):
    rows = [result_row(task="age", dataset="ixi", metric="mae", status="skipped", reason="no subjects")]
    fig = save_fraction_curves(pd.DataFrame(rows), tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert not any(ax.axison for ax in fig.axes)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts == ["no task could be evaluated\n(see the reasons in results.tsv)"]


def _curves(ax):
    """The Kaplan-Meier step lines of a panel (not the censor marks, not the legend's dummy)."""
    return [line for line in ax.get_lines() if line.get_gid() != "censored" and len(line.get_xdata())]


def _survival(n: int, seed: int):
    from sksurv.util import Surv

    rng = np.random.default_rng(seed)
    return Surv.from_arrays(event=rng.random(n) < 0.7, time=rng.uniform(10, 1000, n))


def test_risk_group_curves_two_steps_per_encoder_with_counts_and_p(tmp_path):
    high = np.arange(12) % 3 == 0
    curves = {"moco-vit_tiny": (_survival(12, 0), high, 0.0123), "classical": (_survival(12, 1), ~high, 0.5)}
    fig = save_risk_group_curves(curves, tmp_path / "km.png")
    assert (tmp_path / "km.png").stat().st_size > 0
    panels = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in panels] == [
        "classical: log-rank p = 0.5",
        "moco-vit_tiny: log-rank p = 0.0123",
    ]
    for ax in panels:
        assert ax.get_xlabel() == "days" and ax.get_ylabel() == "survival probability"
        assert ax.get_ylim() == (0.0, 1.02)
        assert len(_curves(ax)) == 2
        for line in _curves(ax):
            t, s = line.get_data()
            assert np.isfinite(t).all() and (np.diff(t) >= 0).all()
            assert ((0 <= s) & (s <= 1)).all() and (np.diff(s) <= 0).all(), "survival never rises"
    labels = [t.get_text() for t in panels[1].get_legend().get_texts()]
    assert labels == ["low risk (n=8)", "high risk (n=4)", "censored"]


def test_risk_group_curves_leave_out_an_empty_group_and_say_when_there_are_none(tmp_path):
    fig = save_risk_group_curves({"m": (_survival(6, 0), np.zeros(6, bool), 1.0)}, tmp_path / "km.png")
    (ax,) = [ax for ax in fig.axes if ax.axison]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["low risk (n=6)", "censored"]
    empty = save_risk_group_curves({}, tmp_path / "none.png")
    assert [t.get_text() for ax in empty.axes for t in ax.texts] == ["no risk groups (survival task skipped)"]


def test_fraction_curves_leave_out_cells_on_one_subject_or_non_finite_with_a_note(tmp_path):
    # brain age on one training subject: an MAE of 400 years that would flatten every real curve
    def mae(encoder, fraction, seed):
        return {0.01: 400.0, 0.1: 12.0 + seed, 1.0: 6.0 + seed}[fraction]

    rows = _rows(["moco-vit_tiny"], (0.1, 1.0), range(2), mae, task="age", dataset="ixi", metric="mae")
    rows += _rows(
        ["moco-vit_tiny"], (0.01,), range(2), mae, task="age", dataset="ixi", metric="mae", n_train=1
    )
    rows += _rows(["classical"], (0.1, 1.0), [0], lambda *_: 9.0, task="age", dataset="ixi", metric="mae")
    rows += _rows(
        ["classical"], (0.01,), [0], lambda *_: float("nan"), task="age", dataset="ixi", metric="mae"
    )
    fig = save_fraction_curves(pd.DataFrame(rows), tmp_path / "curves.png")
    (ax,) = [ax for ax in fig.axes if ax.axison]
    lines = _drawn(ax)
    assert sorted(lines) == ["classical", "moco-vit_tiny"]
    for container in lines.values():
        x, y = container.lines[0].get_data()
        assert list(x) == [0.1, 1.0] and np.isfinite(np.asarray(y, float)).all(), "degenerate cells left out"
    low, high = ax.get_ylim()
    assert np.isfinite([low, high]).all() and high < 20, "the axis is set by the cells that measure something"
    assert np.isfinite(ax.get_xlim()).all()
    notes = [t.get_text() for t in ax.texts]
    assert notes == ["left out: 3 result(s) (2 on < 2 training subjects, 1 non-finite)"]


def test_fraction_curves_panel_of_only_degenerate_cells_says_so(tmp_path):
    rows = _rows(["moco-vit_tiny"], (0.01,), range(2), lambda *_: -5000.0, metric="r2", n_train=1)
    fig = save_fraction_curves(pd.DataFrame(rows), tmp_path / "curves.png")
    (ax,) = [ax for ax in fig.axes if ax.axison]
    assert not _drawn(ax) and ax.get_legend() is None
    assert ax.get_ylim() == (0.0, 1.0) and np.isfinite(ax.get_xlim()).all()
    texts = [t.get_text() for t in ax.texts]
    assert "no result on >= 2 training subjects\nwith a finite value" in texts
    assert "left out: 2 result(s) (2 on < 2 training subjects)" in texts


def test_risk_group_curves_mark_censored_subjects_and_write_numbers_at_risk(tmp_path):
    from sksurv.util import Surv

    # low risk: events at 100, 300; censored at 200, 400. high risk: events at 50, 150, 250
    time = np.array([100.0, 200.0, 300.0, 400.0, 50.0, 150.0, 250.0])
    event = np.array([True, False, True, False, True, True, True])
    high = np.array([False] * 4 + [True] * 3)
    fig = save_risk_group_curves({"m": (Surv.from_arrays(event, time), high, 0.04)}, tmp_path / "km.png")
    (ax,) = [ax for ax in fig.axes if ax.axison]
    low_curve, high_curve = _curves(ax)
    marks = [line for line in ax.get_lines() if line.get_gid() == "censored" and len(line.get_xdata())]
    assert len(marks) == 1, "only the low-risk group has censored subjects"
    (mark,) = marks
    assert mark.get_marker() == "|" and mark.get_linestyle() == "None"
    assert mark.get_color() == low_curve.get_color()
    x, y = mark.get_data()
    assert list(x) == [200.0, 400.0]
    assert np.allclose(y, [0.75, 0.375]), "each tick sits on the curve at the censoring time"
    ticks = list(ax.get_xticks())
    assert ticks[0] == 0 and all(t <= 400 for t in ticks) and len(ticks) >= 3
    at_risk = [t for t in ax.texts if t.get_gid() == "at risk"]
    by_colour = {}
    for text in at_risk:
        by_colour.setdefault(text.get_color(), []).append((text.get_position()[0], int(text.get_text())))
    expected_low = [(t, int((time[:4] >= t).sum())) for t in ticks]
    expected_high = [(t, int((time[4:] >= t).sum())) for t in ticks]
    assert by_colour[low_curve.get_color()] == expected_low
    assert by_colour[high_curve.get_color()] == expected_high
    assert all(t.get_position()[1] < 0 for t in at_risk), "numbers at risk sit below the axis"
    labels = {t.get_text() for t in ax.texts if t.get_gid() == "at risk label"}
    assert labels == {"low risk", "high risk"} and "at risk" in {t.get_text() for t in ax.texts}
