"""Overlay figures of the dense tasks and the pretraining curves: what they show, not only a PNG."""

import numpy as np
from matplotlib.patches import Rectangle

from brainssl.pretrain.metrics import plot_curves, redraw_curves
from brainssl.tasks.detection import plot_detections
from brainssl.tasks.segmentation import PREDICTION_COLOURS, plot_overlays


def _image():
    yy, xx = np.mgrid[:32, :32]
    return ((yy - 16) ** 2 + (xx - 16) ** 2 < 180).astype(float) * 0.6


def _boxes(ax, gid):
    return [p for p in ax.patches if isinstance(p, Rectangle) and p.get_gid() == gid]


def test_detection_overlay_draws_predictions_with_scores_below_the_threshold_too(tmp_path):
    example = {
        "image": _image(),
        "truth": np.array([[10.0, 10.0, 20.0, 18.0]]),
        "predictions": {
            "weak (frozen)": (
                np.array([[2.0, 2.0, 6.0, 6.0], [11.0, 9.0, 21.0, 19.0]]),
                np.array([0.05, 0.22]),
            ),
            "strong (finetune)": (np.array([[10.0, 10.0, 20.0, 18.0]] * 4), np.array([0.9, 0.8, 0.7, 0.6])),
            "none (frozen)": (np.zeros((0, 4)), np.zeros(0)),
        },
    }
    fig = plot_detections(example, tmp_path / "overlays.png", min_score=0.3, top_k=3)
    assert (tmp_path / "overlays.png").stat().st_size > 0
    weak, strong, none = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["weak (frozen)", "strong (finetune)", "none (frozen)"]
    for ax in fig.axes:
        (truth,) = _boxes(ax, "truth")
        assert truth.get_edgecolor()[:3] == (0.0, 1.0, 0.0)
    # the weak model's guesses are drawn dashed with their scores, best first
    assert not _boxes(weak, "prediction") and len(_boxes(weak, "weak prediction")) == 2
    assert all(p.get_linestyle() == "--" for p in _boxes(weak, "weak prediction"))
    assert [t.get_text() for t in weak.texts if t.get_gid() == "score"] == ["0.22", "0.05"]
    best = _boxes(weak, "weak prediction")[0]
    assert best.get_xy() == (10.5, 8.5) and (best.get_width(), best.get_height()) == (10.0, 10.0)
    # a confident model: its top 3 solid, the 4th left out
    assert len(_boxes(strong, "prediction")) == 3 and not _boxes(strong, "weak prediction")
    assert [t.get_text() for t in strong.texts if t.get_gid() == "score"] == ["0.90", "0.80", "0.70"]
    assert [t.get_text() for t in none.texts] == ["no box predicted"]
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "truth",
        "prediction, score >= 0.30",
        "prediction, score < 0.30",
    ]
    assert legend.get_title().get_text() == "each variant's 3 best boxes, with scores"


def _region_colours(ax):
    return [tuple(c.get_edgecolor()[0][:3]) for c in ax.collections]


def test_segmentation_overlay_has_a_colour_legend_and_an_unclipped_row_title(tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import to_rgb

    yy, xx = np.mgrid[:32, :32]
    disc = [((yy - 16) ** 2 + (xx - 16) ** 2) < r for r in (60, 25, 9)]
    truth = np.stack(disc)
    example = {
        "image": _image(),
        "truth": truth,
        "predictions": {"moco (frozen)": np.stack([disc[0], disc[1], np.zeros_like(disc[2])])},
        "names": ("wt", "tc", "et"),
        "title": "sub-0123456789ab slice 14",
    }
    fig = plot_overlays([example], tmp_path / "overlays.png")
    truth_ax, pred_ax = fig.axes
    assert truth_ax.get_title() == "truth" and pred_ax.get_title() == "moco (frozen)"
    (row_title,) = truth_ax.texts
    assert row_title.get_text() == "sub-0123456789ab slice 14" and row_title.get_rotation() == 90
    renderer = FigureCanvasAgg(fig).get_renderer()  # the figure comes back closed
    box = row_title.get_window_extent(renderer)
    width, height = fig.bbox.width, fig.bbox.height
    assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, "the title is not clipped"
    for ax in fig.axes:
        title = ax.title.get_window_extent(renderer)
        assert title.y1 <= height and title.x0 >= 0 and title.x1 <= width
    region = [to_rgb(c) for c in PREDICTION_COLOURS]
    assert _region_colours(truth_ax) == region, "every true region in its own colour"
    assert _region_colours(pred_ax) == [*region[:2], to_rgb("lime")], "predicted wt, tc; true wt dashed"
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["wt", "tc", "et", "true wt (on predictions)"]
    assert [to_rgb(h.get_color()) for h in legend.legend_handles] == [*region, to_rgb("lime")]
    assert legend.get_window_extent(renderer).y0 >= 0


def _records():
    train = [
        {"kind": "train", "step": s, "epoch": 0, "loss": 5.0 / s, "lr": 1e-3, "momentum": 0.99}
        for s in (1, 5)
    ]
    probes = [
        {"kind": "probe", "step": s, "epoch": e, "knn/ixi_sex": 0.6 + 0.1 * e, "knn/brats21_sequence": 0.7}
        for e, s in enumerate((5, 10))
    ]
    return train + probes


def test_pretrain_curves_draw_the_random_encoder_as_a_reference_line(tmp_path):
    reference = {"ixi_sex": 0.52, "brats21_sequence": 0.55, "broken": float("nan")}
    fig = plot_curves(_records(), tmp_path / "curves.png", reference=reference)
    assert (tmp_path / "curves.png").stat().st_size > 0
    knn = fig.axes[3]
    assert knn.get_title() == "kNN accuracy (dotted: random encoder)"
    lines = {line.get_label(): line for line in knn.get_lines()}
    assert sorted(lines) == [
        "knn/brats21_sequence",
        "knn/ixi_sex",
        "random: brats21_sequence",
        "random: ixi_sex",
    ], "a non-finite reference draws nothing"
    for name, value in (("ixi_sex", 0.52), ("brats21_sequence", 0.55)):
        line = lines[f"random: {name}"]
        assert line.get_gid() == "random" and line.get_linestyle() == ":"
        assert list(line.get_ydata()) == [value, value]
        assert line.get_color() == lines[f"knn/{name}"].get_color(), "the reference has its probe's colour"
    low, high = knn.get_ylim()
    assert low < 0.52 and high > 0.7, "the probe lines and the reference lines are inside the axis"
    assert sorted(t.get_text() for t in knn.get_legend().get_texts()) == sorted(lines)


def test_pretrain_curves_redrawn_from_the_run_folder_with_the_random_card(tmp_path):
    import json

    from brainssl.pretrain.metrics import write_metric_tables

    write_metric_tables(_records(), tmp_path)
    card = tmp_path / "random_card.json"
    card.write_text(json.dumps({"method": "random", "knn_probe": {"ixi_sex": 0.5}}))
    fig = redraw_curves(tmp_path, card)
    assert (tmp_path / "curves.png").stat().st_size > 0
    labels = [line.get_label() for line in fig.axes[3].get_lines()]
    assert "random: ixi_sex" in labels and "knn/ixi_sex" in labels
    plain = redraw_curves(tmp_path, None)
    assert plain.axes[3].get_title() == "kNN accuracy"
    assert not [line for line in plain.axes[3].get_lines() if line.get_gid() == "random"]
