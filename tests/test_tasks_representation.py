"""Representation analysis on tiny synthetic embeddings: kNN retrieval, position probe, maps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainssl.tasks import representation
from brainssl.tasks.representation import (
    COLOUR_BY,
    RepresentationSettings,
    analyse_representations,
    knn_labels,
)


def clusters(n_per: int, centres: np.ndarray, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.concatenate([c + spread * rng.normal(size=(n_per, centres.shape[1])) for c in centres])
    y = np.repeat(np.array([f"class{i}" for i in range(len(centres))]), n_per)
    return x, y


def slice_table(n_subjects: int, per_subject: int, informative: bool, seed: int) -> pd.DataFrame:
    """Slices of subjects half T1w, half T2w; features encode contrast and position when informative."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        for i in range(per_subject):
            contrast = "T1w" if i % 2 == 0 else "T2w"
            position = (i // 2) / max(1, per_subject // 2 - 1)
            if informative:
                direction = np.array([1.0, 0.0]) if contrast == "T1w" else np.array([0.0, 1.0])
                features = np.concatenate([4 * direction, [3 * position], 0.05 * rng.normal(size=3)])
            else:
                features = rng.normal(size=6)
            rows.append(
                {
                    "subject": f"sub-{s:02d}",
                    "split": "test" if s % 2 else "train",
                    "contrast": contrast,
                    "dataset": "ixi" if s < n_subjects // 2 else "brats21",
                    "pathology": None if s % 3 else "glioma",
                    "position": position,
                    **{f"f{j:03d}": float(v) for j, v in enumerate(features)},
                }
            )
    return pd.DataFrame(rows)


def metric_values(rows: list[dict]) -> dict[str, float]:
    return {row["metric"]: row["value"] for row in rows}


def test_knn_retrieves_the_class_of_separable_embeddings():
    centres = np.eye(3) * 10
    ref_x, ref_y = clusters(20, centres, 0.5, seed=0)
    query_x, query_y = clusters(10, centres, 0.5, seed=1)
    predicted = knn_labels(ref_x, ref_y, query_x, k=5)
    assert predicted.shape == (30,)
    assert (predicted == query_y).mean() == 1.0


def test_knn_on_random_embeddings_is_near_chance():
    rng = np.random.default_rng(0)
    ref_x, query_x = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    ref_y, query_y = rng.choice(["a", "b"], 400), rng.choice(["a", "b"], 400)
    precision = (knn_labels(ref_x, ref_y, query_x, k=10) == query_y).mean()
    assert 0.4 < precision < 0.6


def test_knn_is_cosine_and_clips_k():
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    labels = np.array(["x", "y", "y"])
    # far in euclidean distance from [1, 0] but the same direction: cosine picks "x"
    assert list(knn_labels(ref, labels, np.array([[50.0, 1.0]]), k=1)) == ["x"]
    # k larger than the reference: all three vote, "y" wins two to one
    assert list(knn_labels(ref, labels, np.array([[1.0, 0.0]]), k=99)) == ["y"]


def test_knn_ties_go_to_the_first_label_in_sorted_order():
    ref = np.array([[1.0, 0.0], [1.0, 0.01]])
    assert list(knn_labels(ref, np.array(["zeta", "alpha"]), np.array([[1.0, 0.0]]), k=2)) == ["alpha"]


def test_scores_separate_informative_from_random_embeddings():
    settings = RepresentationSettings(knn_k=3, probe_alpha=1.0)
    good = metric_values(
        representation._scores("moco-vit_tiny", slice_table(8, 12, True, 0), settings, 20, 0)
    )
    bad = metric_values(
        representation._scores("random-vit_tiny", slice_table(8, 12, False, 0), settings, 20, 0)
    )
    expected = {"knn_contrast", "knn_dataset", "knn_pathology", "position_mae", "position_r2"}
    assert set(good) == set(bad) == expected
    assert good["knn_contrast"] == 1.0
    assert bad["knn_contrast"] < 0.8
    assert good["position_r2"] > 0.95 and good["position_mae"] < 0.05
    assert bad["position_r2"] < 0.5 and bad["position_mae"] > 0.15


def test_score_rows_carry_the_encoder_counts_and_intervals():
    table = slice_table(8, 12, True, 0)
    rows = representation._scores("scratch-resnet18", table, RepresentationSettings(knn_k=3), 50, 0)
    knn = next(r for r in rows if r["metric"] == "knn_contrast")
    assert knn["task"] == "representation" and knn["encoder"] == "scratch-resnet18"
    assert knn["mode"] == "scratch" and knn["status"] == "ok"
    assert knn["n_train"] == 4 and knn["n_test"] == 4, "counts are subjects, not slices"
    assert knn["ci_low"] <= knn["value"] <= knn["ci_high"]
    assert np.isfinite(next(r for r in rows if r["metric"] == "position_mae")["ci_low"])


def test_no_test_subjects_gives_skipped_rows_with_a_reason():
    table = slice_table(4, 6, True, 0).assign(split="train")
    rows = representation._scores("moco-vit_tiny", table, RepresentationSettings(), 10, 0)
    assert len(rows) == 5
    assert all(r["status"] == "skipped" and "test subjects" in r["reason"] for r in rows)
    assert all(np.isnan(r["value"]) for r in rows)


@pytest.fixture
def captured(monkeypatch):
    figures = []
    monkeypatch.setattr(representation, "save_figure", lambda fig, path: figures.append((fig, path)))
    return figures


def test_maps_draw_pca_and_tsne_panels_per_encoder_and_colouring(tmp_path, captured):
    tables = {"b": slice_table(4, 8, True, 0), "a": slice_table(4, 8, False, 1)}
    representation._maps(tables, RepresentationSettings(map_slices=20), 0, tmp_path / "maps.png")
    ((fig, path),) = captured
    assert path == tmp_path / "maps.png"
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 2 * 2 * len(COLOUR_BY)
    assert [ax.get_title() for ax in panels[: 2 * len(COLOUR_BY)]] == [
        f"a {method}: {column}" for method in ("PCA", "t-SNE") for column in COLOUR_BY
    ], "encoders sorted by name, PCA before t-SNE"
    for ax in panels:
        points = np.concatenate([c.get_offsets() for c in ax.collections])
        assert points.shape == (20, 2), "every sampled slice is one point"
        assert np.isfinite(points).all()
        column = ax.get_title().split(": ")[1]
        legend = ax.get_legend()
        if column == "position":
            assert legend is None and len(ax.collections) == 1
        else:
            labels = [t.get_text() for t in legend.get_texts()]
            assert labels == sorted(labels) and len(labels) == len(ax.collections)
    contrast_legend = next(ax for ax in panels if ax.get_title() == "a PCA: contrast").get_legend()
    assert [t.get_text() for t in contrast_legend.get_texts()] == ["T1w", "T2w"]
    pathology_legend = next(ax for ax in panels if ax.get_title() == "a PCA: pathology").get_legend()
    assert [t.get_text() for t in pathology_legend.get_texts()] == ["glioma", "unknown"]
    colourbars = [ax for ax in fig.axes if not ax.get_title() and ax.get_visible() and ax.axison]
    assert len(colourbars) == 2 * 2, "one colour bar per position panel"


def test_analyse_representations_reads_parquet_and_writes_the_figure(tmp_path):
    paths = {}
    for name, informative in (("moco-vit_tiny", True), ("random-vit_tiny", False)):
        paths[name] = tmp_path / f"{name}.parquet"
        slice_table(6, 8, informative, 0).to_parquet(paths[name])
    settings = RepresentationSettings(knn_k=3, map_slices=16)
    rows = analyse_representations(paths, settings, n_boot=10, seed=0, figure=tmp_path / "maps.png")
    assert len(rows) == 2 * 5
    assert [r["encoder"] for r in rows[:5]] == ["moco-vit_tiny"] * 5
    values = {(r["encoder"], r["metric"]): r["value"] for r in rows}
    assert values["moco-vit_tiny", "knn_contrast"] > values["random-vit_tiny", "knn_contrast"]
    assert (tmp_path / "maps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
