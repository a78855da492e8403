"""The slice-filter ablation's data: the unfiltered store, the subset, equal steps, slices seen, wiring."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from _pretrain_tiny import settings
from conftest import REPO
from slices_helpers import BRAIN_Z, write_table_fixture
from snakemake.utils import update_config, validate

from brainssl import wiring
from brainssl.ablation import ablation_name, ablation_variant, unfiltered_overrides
from brainssl.io import write_table
from brainssl.pretrain import build_trainer, pretrain_from_index
from brainssl.pretrain.ablation import ablation_from_index, draw_subset, slices_seen
from brainssl.pretrain.distributed import DistEnv
from brainssl.slices import SHARD_KEYS, SliceSettings, build_slice_shard, load_shard_rows, plan_shards

# ---- the unfiltered store


def _shard(root: Path, values: dict, tag: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    table, plan = root / "brats21" / "table.tsv", root / "plan.tsv"
    split = {"train": 0.5, "val": 0.25, "test": 0.25}
    write_table(plan, plan_shards(pd.read_csv(table, sep="\t"), 8, split, seed=1))
    out = {k: root / tag / f"shard-0.{k}" for k in ("npy", "labels.npy", "index.parquet", "stats.parquet")}
    rows = load_shard_rows(table, plan, 0)
    index = build_slice_shard(rows, SliceSettings.from_dict(values), 0, *out.values())
    return index, pd.read_parquet(out["stats.parquet"])


def test_the_unfiltered_store_holds_every_brain_slice_and_the_filtered_ones(tmp_path):
    write_table_fixture(tmp_path, "brats21", n_subjects=2)
    filtered = SliceSettings(size=16, position_window=(0.3, 0.85), entropy_percentile=50.0).to_dict(
        SHARD_KEYS
    )
    kept, _ = _shard(tmp_path, filtered, "filtered")
    every, stats = _shard(tmp_path, unfiltered_overrides(filtered), "unfiltered")
    key = ["subject", "contrast", "slice_index"]
    keys_kept = set(map(tuple, kept[key].to_numpy()))
    keys_every = set(map(tuple, every[key].to_numpy()))
    assert keys_kept < keys_every  # a strict superset: the filter dropped some brain slices
    # every slice with brain in it (the mask spans axial slices BRAIN_Z) and enough area, no other
    brain = stats["slice_index"].between(*BRAIN_Z) & (stats["area"] >= filtered["min_area"])
    assert keys_every == set(map(tuple, stats.loc[brain, key].to_numpy()))
    assert set(stats.loc[~stats["kept"], "reason"]) <= {"position", "area"}
    assert every.attrs["settings"]["entropy_mode"] == "absolute"


def test_unfiltered_settings_widen_the_window_and_turn_entropy_off():
    values = SliceSettings(position_window=(-0.1, 0.9), entropy_threshold=5.0).to_dict(SHARD_KEYS)
    off = unfiltered_overrides(values)
    assert off["position_window"] == [-0.1, 1.0]  # never narrower than the filtered window
    assert (off["entropy_mode"], off["entropy_threshold"], off["entropy_percentile"]) == (
        "absolute",
        0.0,
        0.0,
    )
    replaced = ("position_window", "entropy_mode", "entropy_threshold", "entropy_percentile")
    assert {k: off[k] for k in SHARD_KEYS if k not in replaced} == {
        k: values[k] for k in SHARD_KEYS if k not in replaced
    }
    # tuning the filter leaves the unfiltered store's settings (its jobs' params) as they were
    tuned = {**values, "entropy_percentile": 70.0, "position_window": [0.2, 0.8], "entropy_threshold": 2.0}
    assert unfiltered_overrides(tuned) == {**off, "position_window": [0.0, 1.0]}


# ---- the subset and equal steps


def test_the_subset_has_the_filtered_size_and_is_seeded():
    pool = pd.DataFrame({"slice": np.arange(500)})
    first, again, other = draw_subset(pool, 120, 7), draw_subset(pool, 120, 7), draw_subset(pool, 120, 8)
    assert len(first) == 120 and first["slice"].is_unique and first["slice"].is_monotonic_increasing
    assert first.equals(again) and not first.equals(other)
    with pytest.raises(ValueError, match="cannot draw 501"):
        draw_subset(pool, 501, 7)


class _Numbered(torch.utils.data.Dataset):
    """Item i is an image filled with i, so the loop's batches say which slices they hold."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.full((1, 32, 32), float(i))


def _trainer(tmp_path: Path, n: int, **kw):
    env = DistEnv(0, 1, 0, torch.device("cpu"))
    return build_trainer(settings("moco", epochs=3, seed=5, **kw), _Numbered(n), None, tmp_path / str(n), env)


def test_equal_steps_and_schedules_on_a_larger_pool(tmp_path):
    filtered = _trainer(tmp_path, 40)  # (a): 40 slices, 5 steps per epoch at batch 8
    unfiltered = _trainer(tmp_path, 130, epoch_images=40)  # (b): 130 in the pool, 40 per epoch
    subset = _trainer(tmp_path, 40)  # (c): a subset of 40
    for run in (unfiltered, subset):
        assert (
            (run.steps_per_epoch, run.total_steps)
            == (filtered.steps_per_epoch, filtered.total_steps)
            == (5, 15)
        )
        for name in ("lr", "weight_decay", "momentum"):
            assert np.array_equal(getattr(run.schedules, name), getattr(filtered.schedules, name)), name
    plain = _trainer(tmp_path, 130)
    assert plain.total_steps == 48  # without epoch_images the pool sets the epoch
    with pytest.raises(ValueError, match="exceeds"):
        _trainer(tmp_path, 30, epoch_images=40)


@pytest.mark.parametrize(("pool", "epoch_images", "steps"), [(130, 40, 15), (40, None, 15), (130, 40, 7)])
def test_slices_seen_replays_the_loops_data_order(tmp_path, pool, epoch_images, steps):
    trainer = _trainer(tmp_path, pool, epoch_images=epoch_images)
    fed: set[int] = set()
    done = 0
    for epoch in range(3):
        for micro in trainer._loader(epoch, 0):
            if done == steps:
                break
            fed |= {int(x) for batch in micro for x in batch[:, 0, 0, 0]}
            done += 1
    seen = slices_seen(pool, batch_size=8, epochs=3, seed=5, steps=steps, epoch_images=epoch_images)
    assert seen == len(fed)
    if epoch_images and steps == 15:
        assert 40 < seen <= 3 * 40  # new draws each epoch: more distinct slices than one epoch holds


def test_each_variant_trains_the_filtered_runs_steps_on_its_own_slices(tmp_path):
    write_table_fixture(tmp_path, "brats21", n_subjects=4)
    values = SliceSettings(size=32, position_window=(0.3, 0.85)).to_dict(SHARD_KEYS)
    kept, _ = _shard(tmp_path, values, "filtered")
    every, _ = _shard(tmp_path, unfiltered_overrides(values), "unfiltered")
    filtered, unfiltered = (
        tmp_path / "filtered" / "shard-0.index.parquet",
        tmp_path / "unfiltered" / "shard-0.index.parquet",
    )
    run = settings("moco", epochs=2, batch_size=4, seed=2).to_dict()
    probe = {"split": "val", "probes": ("contrast",), "n_per_class": 5, "position_bins": 3}
    n = int((kept["split"] == "train").sum())
    pool = int((every["split"] == "train").sum())
    assert pool > n >= 4
    base = pretrain_from_index(filtered, tmp_path / "a", run, probe)
    for variant in ("unfiltered", "subset"):
        out = ablation_from_index(filtered, unfiltered, tmp_path / variant, run, probe, variant)
        assert out["status"] == "completed" and out["step"] == base["step"] == 2 * (n // 4), variant
        card = json.loads((tmp_path / variant / "model_card.json").read_text())
        assert card["settings"]["epoch_images"] == (n if variant == "unfiltered" else None)
        assert out["pool"] == (pool if variant == "unfiltered" else n)
    assert out["slices_seen"] <= n


# ---- names and wiring


def test_names_round_trip_and_leave_other_encoders_alone():
    assert ablation_name("moco", "vit_tiny", "filtered") == "moco-vit_tiny"
    assert ablation_variant(ablation_name("moco", "vit_tiny", "subset")) == "subset"
    for other in ("moco-vit_tiny", "random-vit_tiny", "classical", "imagenet_vit", "moco-vit_tiny-other"):
        assert ablation_variant(other) is None, other
    with pytest.raises(ValueError, match="unknown ablation variant"):
        ablation_name("moco", "vit_tiny", "half")


@pytest.fixture(scope="module")
def config() -> dict:
    """config.yaml extended by config/test.yaml (the ablation is on there), validated."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(cfg, yaml.safe_load((REPO / "config/test.yaml").read_text()))
    validate(cfg, str(REPO / "workflow/schemas/config.schema.yaml"))
    return cfg


def test_wiring_when_on(config):
    names = ["moco-vit_tiny-unfiltered", "moco-vit_tiny-subset"]
    assert wiring.ablation_encoders(config) == {n: f"results/pretrain/{n}/encoder.safetensors" for n in names}
    embed = list(wiring.embed_encoders(config))
    assert embed[-3:] == [*names, "classical"]  # embedded and so evaluated on the frozen tasks
    assert not set(names) & set(wiring.encoders(config))  # but not on the dense tasks
    assert wiring.ablation_cards(config) == {
        v: f"results/pretrain/{n}/model_card.json"
        for v, n in [
            ("filtered", "moco-vit_tiny"),
            ("unfiltered", names[0]),
            ("subset", names[1]),
            ("random", "random-vit_tiny"),
        ]
    }
    outputs = wiring.final_outputs(config)
    assert {"results/tasks/ablation.tsv", "results/tasks/ablation.png"} <= set(outputs)


def test_wiring_when_off_or_misnamed(config):
    off = copy.deepcopy(config)
    off["pretrain"]["ablation"]["enabled"] = False
    assert (
        not wiring.ablation_encoders(off)
        and not wiring.ablation_cards(off)
        and not wiring.ablation_variants(off)
    )
    assert not [p for p in wiring.final_outputs(off) if "ablation" in p]
    assert not [n for n in wiring.embed_encoders(off) if ablation_variant(n)]
    bad = copy.deepcopy(config)
    bad["pretrain"]["methods"] = ["dino"]
    with pytest.raises(
        wiring.ConfigError, match="pretrain.ablation.method = 'moco' is not in pretrain.methods"
    ):
        wiring.ablation_encoders(bad)
    bad["pretrain"]["ablation"]["enabled"] = False
    assert wiring.ablation_run(bad) == ("moco", "vit_tiny")  # off: nothing is checked or run
