import json
import math
import pickle

import pandas as pd
import pytest
import torch
from _pretrain_tiny import dataset, scattered_blobs, settings

from brainssl.pretrain import (
    AugmentSettings,
    ProbeSet,
    build_encoder,
    export_encoder,
    export_random,
    load_encoder,
    load_natural_image_weights,
)
from brainssl.pretrain.export import probe_table
from brainssl.pretrain.methods import train


@pytest.mark.parametrize("arch,kw", [("vit_tiny", {"depth": 2}), ("resnet18", {})])
def test_export_load_round_trip(tmp_path, arch, kw):
    enc = build_encoder(arch, 32, **kw).eval()
    card = export_encoder(
        enc,
        tmp_path / "e.safetensors",
        tmp_path / "card.json",
        intensity="x/255",
        manifest_sha256="m",
        config_sha256="c",
        method="moco",
        knn={"a": 0.5},
    )
    back = load_encoder(tmp_path / "e.safetensors")
    x = torch.rand(3, 1, 32, 32)
    assert torch.equal(enc(x), back(x))
    feats = back.forward_features(x)
    assert len(feats) == (2 if arch == "vit_tiny" else 4) and all(
        f.ndim == 4 and f.shape[0] == 3 for f in feats
    )
    assert json.loads((tmp_path / "card.json").read_text()) == card
    assert card["architecture"]["arch"] == arch and card["training_manifest_sha256"] == "m"


def test_export_writes_the_same_bytes_every_time(tmp_path):
    enc = build_encoder("vit_tiny", 32, depth=1).eval()
    blobs = set()
    for i in range(8):
        export_encoder(
            enc,
            tmp_path / f"{i}.safetensors",
            tmp_path / f"{i}.json",
            intensity="x",
            manifest_sha256=None,
            config_sha256=None,
            method="random",
        )
        blobs.add((tmp_path / f"{i}.safetensors").read_bytes())
    assert len(blobs) == 1


def test_load_refuses_pickle(tmp_path):
    enc = build_encoder("resnet18", 32)
    torch.save(enc.state_dict(), tmp_path / "encoder.safetensors")
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_encoder(tmp_path)


def test_natural_image_weights_fold_rgb():
    enc = build_encoder("vit_tiny", 32, depth=1)
    rgb = {k: v.clone() for k, v in enc.state_dict().items()}
    rgb["patch_embed.proj.weight"] = torch.randn(192, 3, 16, 16)
    rgb["pos_embed"] = torch.randn(1, 1 + 16, 192)  # a 64 px grid, resized to 32 px
    missing, unexpected = load_natural_image_weights(enc, {**rgb, "head.weight": torch.zeros(2)})
    assert missing == [] and unexpected == []
    grey = torch.rand(1, 1, 16, 16)
    conv_rgb = torch.nn.functional.conv2d(grey.repeat(1, 3, 1, 1), rgb["patch_embed.proj.weight"])
    conv_one = torch.nn.functional.conv2d(grey, enc.patch_embed.proj.weight)
    assert torch.allclose(conv_rgb, conv_one, atol=1e-4)


# Known limitation, kept strict so that a real improvement shows up as XPASS. On toy data a
# random ViT is a near-isometric projection of the pixels (kNN = pixel kNN), and MoCo's instance
# discrimination on 64 images learns the cues the crops keep (object position), not shape; DINO
# drifts towards the uniform distribution at this scale. Measured (seed 3, 128 test images):
# MoCo 0.742 vs random 0.750, DINO 0.766 vs random 0.750; seeds 3-5 earlier: trained 0.73-0.82
# vs random 0.75-0.88. An accuracy on 128 images has a standard error of ~0.04, so the claim
# asks for a margin of 0.05: a win inside the noise is not a win. Only the claim is an
# ``assert`` (the expected AssertionError); a broken run fails through pytest.fail or its own
# exception, which ``raises=AssertionError`` does not excuse. Loss curves are not compared:
# DINO's loss rises while the teacher temperature warms up, MoCo's falls by 0.2 %. The real
# check is the demo's contrast/position probe.
@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="SSL does not beat a random ViT by a clear margin on the toy shape probe (see comment)",
)
@pytest.mark.parametrize("method", ["moco", "dino"])
def test_ssl_beats_a_random_vit_on_the_toy_shape_probe(tmp_path, method):
    torch.set_num_threads(1)
    data = list(scattered_blobs(64, 0)[0])
    train_x, train_y = scattered_blobs(128, 101)
    test_x, test_y = scattered_blobs(128, 202)
    probes = {"shape": ProbeSet(train_x, train_y, test_x, test_y)}
    s = settings(
        method,
        epochs=20,
        batch_size=16,
        crop_scale=(0.2, 0.6),
        out_dim=256,
        momentum=0.99,
        augment=AugmentSettings(hflip=0.5, vflip=0.5),
    )
    summary = train(s, data, probes, tmp_path / "ssl", resume=False)
    rows = [json.loads(line) for line in (tmp_path / "ssl" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["kind"] == "train"]
    rand = export_random(s, probes, tmp_path / "rand")
    trained, random_ = summary["knn"]["shape"], rand["knn_probe"]["shape"]
    # preconditions: a run that did not happen must fail, not count as the expected failure
    if len(losses) != 20 * 64 // 16 or not all(math.isfinite(x) for x in losses):
        pytest.fail(f"the toy run did not train 80 finite steps: {losses}")
    if not (0.0 <= trained <= 1.0 and 0.0 <= random_ <= 1.0):
        pytest.fail(f"kNN accuracies out of range: {summary['knn']}, {rand['knn_probe']}")
    assert trained >= random_ + 0.05, (summary["knn"], rand["knn_probe"])


class _Payload:
    """Any non-tensor object: unpickling it would run code a checkpoint must never carry."""


def test_checkpoint_loading_never_unpickles_objects(tmp_path):
    from brainssl.pretrain import load_checkpoint
    from brainssl.pretrain.checkpoint import CHECKPOINT_FORMAT

    torch.save({"format": CHECKPOINT_FORMAT, "evil": _Payload()}, tmp_path / "last.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_checkpoint(tmp_path / "last.pt")


def test_package_level_load_encoder(tmp_path):
    import brainssl

    enc = build_encoder("vit_tiny", 32, depth=1).eval()
    export_encoder(
        enc,
        tmp_path / "encoder.safetensors",
        tmp_path / "card.json",
        intensity="x",
        manifest_sha256=None,
        config_sha256=None,
        method="random",
    )
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(brainssl.load_encoder(tmp_path)(x), enc(x)) and "load_encoder" in brainssl.__all__


def test_a_checkpoint_of_other_settings_is_discarded_not_resumed(tmp_path, caplog):
    torch.set_num_threads(1)
    data = dataset(16)
    stopped = train(settings("moco", epochs=2, max_steps=2), data, None, tmp_path, manifest_sha256="m")
    assert stopped["status"] == "stopped" and (tmp_path / "checkpoints" / "last.pt").is_file()
    resumed = train(settings("moco", epochs=2, max_steps=3), data, None, tmp_path, manifest_sha256="m")
    assert "starting afresh" not in caplog.text, "max_steps does not change the weights: resume"
    assert resumed["step"] == 3
    other = train(settings("moco", epochs=2, lr=0.01, max_steps=1), data, None, tmp_path, manifest_sha256="m")
    assert "starting afresh" in caplog.text
    assert other["step"] == 1, "a run with another learning rate must not continue the old run"


def test_probe_table_sets_each_encoder_beside_the_random_one(tmp_path):
    enc = build_encoder("vit_tiny", 32, depth=1)
    for name, method, knn, metrics in (
        ("moco-vit_tiny", "moco", {"contrast": 0.9, "position": 0.6}, {"final_loss": 1.5}),
        ("random-vit_tiny", "random", {"contrast": 0.7, "position": 0.5}, None),
    ):
        folder = tmp_path / name
        export_encoder(
            enc,
            folder / "encoder.safetensors",
            folder / "model_card.json",
            intensity="x",
            manifest_sha256=None,
            config_sha256=None,
            method=method,
            metrics=metrics,
            knn=knn,
        )
    table = probe_table(sorted(tmp_path.glob("*/model_card.json")), tmp_path / "probe.tsv")
    moco = table[table["method"] == "moco"].set_index("probe")
    assert moco.loc["contrast", "accuracy"] == 0.9 and moco.loc["contrast", "random_accuracy"] == 0.7
    assert moco.loc["position", "random_accuracy"] == 0.5 and moco.loc["position", "final_loss"] == 1.5
    assert len(pd.read_csv(tmp_path / "probe.tsv", sep="\t")) == 4


@pytest.mark.parametrize("method,branch", [("dino", "teacher"), ("moco", "student")])
def test_the_exported_encoder_is_the_one_each_method_evaluates(tmp_path, method, branch):
    # DINO releases its teacher, MoCo v3 its base (student) encoder
    train(settings(method, epochs=1), dataset(16), None, tmp_path, resume=False)
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["method"]
    exported = load_encoder(tmp_path / "encoder.safetensors").state_dict()
    for name in ("teacher", "student"):
        prefix = f"{name}.encoder."
        weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        same = all(torch.equal(weights[k], v) for k, v in exported.items())
        assert same == (name == branch), f"{method}: exported encoder vs {name}"


def test_dino_head_batch_norm_option():
    from brainssl.pretrain.heads import DINOHead

    plain, normed = DINOHead(8, 16, 12, 4), DINOHead(8, 16, 12, 4, use_bn=True)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in plain.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in normed.modules()) == 2
    assert normed(torch.randn(5, 8)).shape == (5, 16)
