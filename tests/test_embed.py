"""Embed stage: deterministic CPU embeddings, classical features, pooling over the position window."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainssl import load_encoder
from brainssl.embed import (
    EmbedSettings,
    classical_features,
    embed_index,
    encode_slices,
    feature_columns,
    pool_units,
)
from brainssl.pretrain.backbones import build_encoder
from brainssl.pretrain.export import export_encoder
from brainssl.slices.plan import LABEL_COLUMNS


@pytest.fixture
def tiny_store(tmp_path):
    """Two shards of 32 px slices and their index (three subjects, two contrasts each)."""
    rng = np.random.default_rng(0)
    rows = []
    for shard in range(2):
        array = (rng.random((6, 32, 32)) * 255).astype(np.uint8)
        array[:, :4] = 0
        path = tmp_path / f"shard-{shard}.npy"
        np.save(path, array)
        for offset in range(6):
            rows.append(
                {
                    "dataset": "ixi",
                    "subject": f"sub-{shard}{offset // 4}",
                    "session": "ses-none",
                    "contrast": "T1w" if offset % 2 else "T2w",
                    "slice_index": offset,
                    "position": offset / 5,
                    "entropy": 4.0,
                    "area": 0.5,
                    "shard": shard,
                    "offset": offset,
                    "split": "train",
                    "has_seg": False,
                    "array": str(path),
                    "labels": "",
                    **dict.fromkeys(LABEL_COLUMNS),
                }
            )
    index = pd.DataFrame(rows).iloc[::-1]  # out of shard order: reading must follow the index
    index_path = tmp_path / "index.parquet"
    index.to_parquet(index_path)
    encoder = build_encoder("vit_tiny", img_size=32, depth=2)
    export_encoder(
        encoder,
        tmp_path / "enc/encoder.safetensors",
        tmp_path / "enc/model_card.json",
        intensity="test",
        manifest_sha256=None,
        config_sha256=None,
        method="random",
    )
    return tmp_path, index_path, index


def test_embedding_is_deterministic_and_batch_independent_on_cpu(tiny_store):
    tmp, index_path, index = tiny_store
    spec = {"weights": str(tmp / "enc/encoder.safetensors")}
    for name, batch in (("a", 4), ("b", 4), ("c", 5)):
        embed_index(
            index_path,
            spec,
            tmp / f"{name}/s.parquet",
            tmp / f"{name}/u.parquet",
            EmbedSettings(batch, "cpu"),
        )
    first, again, other = (pd.read_parquet(tmp / f"{n}/s.parquet") for n in "abc")
    pd.testing.assert_frame_equal(first, again)
    features = feature_columns(first)
    assert len(features) == 192
    np.testing.assert_allclose(first[features], other[features], atol=1e-5)
    # rows follow the index and the values are the encoder's on the stored slice
    row = index.iloc[3]
    image = np.load(row["array"])[row["offset"]][None]
    direct = encode_slices(load_encoder(spec["weights"]), image)
    np.testing.assert_allclose(first.loc[3, features].to_numpy(float), direct[0], atol=1e-5)


def test_classical_features_on_a_known_square():
    image = np.zeros((1, 10, 10), np.float32)
    image[0, 2:6, 2:8] = 0.55  # a 4 x 6 rectangle of one intensity
    feats = classical_features(image, bins=4)[0]
    assert feats[:4].tolist() == [0.0, 0.0, 1.0, 0.0]  # every brain pixel in bin (0.5, 0.75]
    fraction, mean, std, row, col, major, minor, _ = feats[4:]
    assert (
        fraction == pytest.approx(0.24)
        and mean == pytest.approx(0.55)
        and std == pytest.approx(0.0, abs=1e-6)
    )
    assert row == pytest.approx(3.5 / 9) and col == pytest.approx(4.5 / 9)
    assert major > minor > 0
    assert not classical_features(np.zeros((1, 5, 5)), bins=4).any()


def test_pooling_keeps_the_window_and_falls_back_to_all_slices():
    slices = pd.DataFrame(
        {
            "dataset": "d",
            "subject": ["a", "a", "a", "b"],
            "session": "s",
            "contrast": "T1w",
            "position": [0.1, 0.5, 0.6, np.nan],
            "split": "train",
            "f000": [100.0, 1.0, 3.0, 7.0],
        }
    )
    pooled = pool_units(slices, (0.3, 0.7)).set_index("subject")
    assert pooled.loc["a", "f000"] == 2.0 and pooled.loc["a", "n_slices"] == 2
    assert pooled.loc["b", "f000"] == 7.0 and pooled.loc["b", "n_slices"] == 1
