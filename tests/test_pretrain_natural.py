"""Natural-image baselines: each layout's checkpoint loads into the one-channel encoder, and rightly.

A grey image through the loaded encoder gives what the RGB network gives on that image replicated
to three channels, for a checkpoint written as that layout's releases are.

The references are written here, apart from the adapters: torchvision's ViT through
``nn.MultiheadAttention`` (torchvision's own attention), DINOv2's block with LayerScale applied
explicitly, and the RGB ResNet/ViT loaded with the file's own tensors. Nothing is downloaded.
"""

import argparse
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from brainssl import wiring
from brainssl.io import sha256_file
from brainssl.pretrain import build_encoder, load_encoder
from brainssl.pretrain.natural import (
    LAYOUTS,
    NaturalBaseline,
    detect_layout,
    load_baseline,
    read_checkpoint,
    to_brainssl_keys,
)
from brainssl.pretrain.natural_export import SYNTHETIC_FILES, natural_from_index, synthetic_checkpoint
from brainssl.slices import INDEX_COLUMNS
from brainssl.tasks.dense_sweep import dense_variants

ARCH_OF = {"timm_resnet": "resnet18", "torchvision_resnet": "resnet18"}


def _file(tmp_path, layout, depth=2, seed=0):
    arch = ARCH_OF.get(layout, "vit_tiny")
    return synthetic_checkpoint(layout, arch, tmp_path / SYNTHETIC_FILES[layout], depth=depth, seed=seed)


def _grey(size, seed=0):
    return torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(seed))


def _rgb_vit(state, patch=16, img_size=224, depth=2):
    """Our ViT with three input channels holding the file's tensors (timm/DINO names)."""
    ref = build_encoder("vit_tiny", img_size=img_size, in_chans=3, depth=depth, patch_size=patch)
    ref.load_state_dict({k: v for k, v in state.items() if not k.startswith("head.")}, strict=True)
    return ref.eval()


@pytest.mark.parametrize("layout", ["timm_vit", "dino"])
def test_timm_and_dino_vits_match_the_rgb_network_on_a_grey_image(tmp_path, layout):
    path = _file(tmp_path, layout)
    raw = read_checkpoint(path)
    state = (
        raw if layout == "timm_vit" else {k.removeprefix("backbone."): v for k, v in raw["teacher"].items()}
    )
    encoder, info = load_baseline(path, "vit_tiny", 224)
    grey = _grey(224)
    with torch.no_grad():
        assert torch.allclose(encoder(grey), _rgb_vit(state)(grey.repeat(1, 3, 1, 1)), atol=1e-5)
    assert info["layout"] == layout and info["first_layer"].startswith("RGB")
    assert encoder.config["in_chans"] == 1 and encoder.config["depth"] == 2  # the depth comes from the file


def test_dino_full_checkpoint_gives_the_teacher_unless_told_student(tmp_path):
    path = _file(tmp_path, "dino")
    assert isinstance(torch.load(path, weights_only=False)["args"], argparse.Namespace)  # as DINO saves it
    teacher, info = load_baseline(path, "vit_tiny", 32, layout="dino")
    student, _ = load_baseline(path, "vit_tiny", 32, layout="dino", checkpoint_key="student")
    assert info["checkpoint_key"] == "teacher"
    delta = student.state_dict()["cls_token"] - teacher.state_dict()["cls_token"]
    assert torch.allclose(delta, torch.full_like(delta, 0.01))  # the synthetic student is teacher + 0.01


def _torchvision_vit_forward(state, x, depth, heads):
    """The forward of torchvision's VisionTransformer, with nn.MultiheadAttention as torchvision builds it."""
    x = F.conv2d(x, state["conv_proj.weight"], state["conv_proj.bias"], stride=16)
    x = x.flatten(2).transpose(1, 2)
    x = (
        torch.cat([state["class_token"].expand(x.shape[0], -1, -1), x], dim=1)
        + state["encoder.pos_embedding"]
    )
    width = x.shape[-1]
    for i in range(depth):
        p = f"encoder.layers.encoder_layer_{i}."
        attention = torch.nn.MultiheadAttention(width, heads, batch_first=True)
        attention.load_state_dict(
            {
                k.removeprefix(p + "self_attention."): v
                for k, v in state.items()
                if "self_attention" in k and k.startswith(p)
            }
        )
        y = F.layer_norm(x, (width,), state[p + "ln_1.weight"], state[p + "ln_1.bias"], eps=1e-6)
        x = x + attention(y, y, y, need_weights=False)[0]
        y = F.layer_norm(x, (width,), state[p + "ln_2.weight"], state[p + "ln_2.bias"], eps=1e-6)
        y = F.linear(
            F.gelu(F.linear(y, state[p + "mlp.0.weight"], state[p + "mlp.0.bias"])),
            state[p + "mlp.3.weight"],
            state[p + "mlp.3.bias"],
        )
        x = x + y
    return F.layer_norm(x, (width,), state["encoder.ln.weight"], state["encoder.ln.bias"], eps=1e-6)[:, 0]


def test_torchvision_vit_matches_torchvisions_forward_on_a_grey_image(tmp_path):
    path = _file(tmp_path, "torchvision_vit")
    state = torch.load(path, weights_only=True)
    assert (
        "encoder.layers.encoder_layer_1.self_attention.in_proj_weight" in state
        and "heads.head.weight" in state
    )
    encoder, info = load_baseline(path, "vit_tiny", 224)
    grey = _grey(224)
    with torch.no_grad():
        expected = _torchvision_vit_forward(state, grey.repeat(1, 3, 1, 1), depth=2, heads=3)
        assert torch.allclose(encoder(grey), expected, atol=1e-5)
    assert info["detected_layout"] == "torchvision_vit"


def test_torchvision_vit_before_0_13_names_its_mlp_linear_1_and_linear_2(tmp_path):
    path = _file(tmp_path, "torchvision_vit")
    state = torch.load(path, weights_only=True)
    legacy = {
        k.replace(".mlp.0.", ".mlp.linear_1.").replace(".mlp.3.", ".mlp.linear_2."): v
        for k, v in state.items()
    }
    torch.save(legacy, tmp_path / "legacy.pth")
    new, _ = load_baseline(path, "vit_tiny", 32)
    old, _ = load_baseline(tmp_path / "legacy.pth", "vit_tiny", 32)
    assert all(torch.equal(new.state_dict()[k], v) for k, v in old.state_dict().items())


def _dinov2_forward(state, x, depth):
    """DINOv2's Block: x + ls1(attn(norm1(x))), x + ls2(mlp(norm2(x))), with the gammas applied as such."""
    ref = _rgb_vit({k: v for k, v in state.items() if ".ls" not in k and k != "mask_token"}, 14, 518, depth)
    tokens, _, _ = ref._tokens(x)
    for i, block in enumerate(ref.blocks):
        tokens = tokens + state[f"blocks.{i}.ls1.gamma"] * block.attn(block.norm1(tokens))
        tokens = tokens + state[f"blocks.{i}.ls2.gamma"] * block.mlp(block.norm2(tokens))
    return ref.norm(tokens)[:, 0]


def test_dinov2_layer_scale_folds_exactly_and_matches_its_block(tmp_path):
    path = _file(tmp_path, "dinov2")
    state = torch.load(path, weights_only=True)
    assert {"mask_token", "blocks.0.ls1.gamma", "blocks.1.ls2.gamma"} <= set(state)
    encoder, info = load_baseline(path, "vit_tiny", 518)
    assert info["layout"] == "dinov2" and info["layer_scale_folded"] and encoder.config["patch_size"] == 14
    grey = _grey(518)
    with torch.no_grad():
        assert torch.allclose(encoder(grey), _dinov2_forward(state, grey.repeat(1, 3, 1, 1), 2), atol=1e-5)
    folded = to_brainssl_keys("dinov2", state)
    gamma = state["blocks.0.ls1.gamma"]
    assert torch.equal(folded["blocks.0.attn.proj.bias"], state["blocks.0.attn.proj.bias"] * gamma)
    assert not any(".ls" in k for k in folded) and "mask_token" not in folded


def test_dinov2_runs_on_slices_that_are_no_multiple_of_its_patch(tmp_path):
    """32 px slices go to 28 px (2 x 2 patches of 14), the grid of every other 32 px encoder."""
    encoder, _ = load_baseline(_file(tmp_path, "dinov2"), "vit_tiny", 32)
    x = _grey(32)
    with torch.no_grad():
        assert encoder(x).shape == (2, 192)
        assert [tuple(m.shape) for m in encoder.forward_features(x)] == [(2, 192, 2, 2)] * 2
        assert torch.allclose(
            encoder(x),
            encoder(F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)),
            atol=1e-6,
        )


def test_dinov2_training_checkpoints_chunk_their_blocks(tmp_path):
    path = _file(tmp_path, "dinov2")
    state = torch.load(path, weights_only=True)
    chunked = {
        k.replace("blocks.1.", "blocks.1.1.").replace("blocks.0.", "blocks.0.0."): v for k, v in state.items()
    }
    torch.save({"model": chunked, "iteration": 10}, tmp_path / "chunked.pth")
    plain, _ = load_baseline(path, "vit_tiny", 32)
    again, info = load_baseline(tmp_path / "chunked.pth", "vit_tiny", 32)
    assert info["detected_layout"] == "dinov2"
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in again.state_dict().items())


@pytest.mark.parametrize("layout", ["timm_resnet", "torchvision_resnet"])
def test_resnets_match_the_rgb_network_on_a_grey_image(tmp_path, layout):
    torch.manual_seed(0)
    ref = build_encoder("resnet18", 32, in_chans=3, zero_init_residual=False)
    for module in ref.modules():  # trained-looking batch-norm statistics, so that eval mode matters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    state = {**ref.state_dict(), "fc.weight": torch.randn(1000, 512), "fc.bias": torch.zeros(1000)}
    path = tmp_path / SYNTHETIC_FILES[layout]
    if layout == "timm_resnet":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    encoder, info = load_baseline(path, "resnet18", 32, layout=layout)
    grey = _grey(64)
    with torch.no_grad():
        assert torch.allclose(encoder(grey), ref.eval()(grey.repeat(1, 3, 1, 1)), atol=1e-5)
    assert info["detected_layout"] == "torchvision_resnet"  # timm's ResNets use torchvision's names


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layouts_synthetic_release_is_detected_and_loads(tmp_path, layout):
    path = _file(tmp_path, layout)
    timm = layout.startswith("timm")
    assert (path.read_bytes()[:2] == b"PK") != timm  # timm releases safetensors, the others torch files
    expected = {"timm_resnet": "torchvision_resnet"}.get(layout, layout)
    tensors = read_checkpoint(path)
    keys = tensors["teacher"] if layout == "dino" else tensors
    assert (
        detect_layout({k.removeprefix("backbone."): 0 for k in keys}, "teacher" if layout == "dino" else None)
        == expected
    )
    encoder, _ = load_baseline(path, ARCH_OF.get(layout, "vit_tiny"), 32)
    assert encoder(_grey(32)).shape[0] == 2


def test_a_file_in_another_layout_names_the_keys_expected_and_found(tmp_path):
    path = _file(tmp_path, "timm_vit")
    with pytest.raises(
        ValueError,
        match=r"layout 'torchvision_vit' expects keys \['conv_proj.weight'.*detected layout: timm_vit",
    ):
        load_baseline(path, "vit_tiny", 32, layout="torchvision_vit")
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match=r"no known layout .* fits keys \['encoder.weight'\]"):
        load_baseline(tmp_path / "odd.pth", "vit_tiny", 32)


def test_an_architecture_that_differs_is_named(tmp_path):
    vit = _file(tmp_path, "timm_vit")
    with pytest.raises(ValueError, match="a ViT of width 192 \\(vit_tiny\\); arch vit_small has width 384"):
        load_baseline(vit, "vit_small", 32)
    with pytest.raises(ValueError, match="the weights are a vit, arch resnet18 a resnet"):
        load_baseline(vit, "resnet18", 32)
    resnet = _file(tmp_path, "torchvision_resnet")
    with pytest.raises(
        ValueError, match=r"basic blocks \[2, 2, 2, 2\] \(resnet18\); arch resnet50 has bottleneck"
    ):
        load_baseline(resnet, "resnet50", 32)


def test_left_over_tensors_and_register_tokens_are_refused(tmp_path):
    state = read_checkpoint(_file(tmp_path, "timm_vit"))
    save_file({**state, "fc_norm.weight": torch.ones(192)}, str(tmp_path / "avgpool.safetensors"))
    with pytest.raises(ValueError, match=r"file tensors the encoder lacks \['fc_norm.weight'\]"):
        load_baseline(tmp_path / "avgpool.safetensors", "vit_tiny", 32)
    dinov2 = torch.load(_file(tmp_path, "dinov2"), weights_only=True)
    torch.save({**dinov2, "register_tokens": torch.zeros(1, 4, 192)}, tmp_path / "reg.pth")
    with pytest.raises(ValueError, match="4 register tokens .* not supported"):
        load_baseline(tmp_path / "reg.pth", "vit_tiny", 32)


class _Payload:
    def __reduce__(self):
        return (print, ("unpickled",))


def test_only_tensors_are_ever_unpickled(tmp_path):
    with open(tmp_path / "evil.pth", "wb") as handle:
        pickle.dump({"x": _Payload()}, handle, protocol=2)
    with pytest.raises(ValueError, match="refusing to unpickle"):
        read_checkpoint(tmp_path / "evil.pth")
    (tmp_path / "notes.txt").write_text("not weights")
    with pytest.raises(ValueError, match="neither safetensors nor a torch checkpoint"):
        read_checkpoint(tmp_path / "notes.txt")


def test_synthetic_weights_need_a_layout():
    with pytest.raises(ValueError, match="needs a layout"):
        NaturalBaseline.from_dict({"name": "x", "arch": "vit_tiny", "weights": "synthetic"})


def _store(tmp_path, n_subjects=6, per_subject=8, size=32):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(n_subjects * per_subject, size, size), dtype=np.uint8)
    np.save(tmp_path / "shard-0.npy", arr)
    rows = [
        {
            **{c: "" for c in INDEX_COLUMNS},
            "dataset": "ixi",
            "subject": f"s{i // per_subject}",
            "contrast": ["T1w", "T2w"][i % 2],
            "slice_index": i % per_subject,
            "position": (i % per_subject + 0.5) / per_subject,
            "entropy": 1.0,
            "area": 0.5,
            "shard": 0,
            "offset": i,
            "split": "val" if i // per_subject < 4 else "train",
            "has_seg": False,
            "array": str(tmp_path / "shard-0.npy"),
        }
        for i in range(len(arr))
    ]
    pd.DataFrame(rows, columns=list(INDEX_COLUMNS)).to_parquet(tmp_path / "index.parquet")
    return tmp_path / "index.parquet"


def test_natural_from_index_writes_an_export_every_stage_reads(tmp_path):
    index = _store(tmp_path)
    baseline = {"name": "dinov2_tiny", "arch": "vit_tiny", "weights": "synthetic", "layout": "dinov2"}
    settings = {"arch": "vit_tiny", "img_size": 32, "vit_depth": 2, "device": "cpu", "seed": 3}
    probe = {"split": "val", "probes": ("contrast",), "n_per_class": 4, "position_bins": 2}
    card = natural_from_index(index, tmp_path / "out", baseline, settings, probe)
    source = card["natural_source"]
    assert card["method"] == "natural" and set(card["knn_probe"]) == {"contrast"}
    assert source["layout"] == "dinov2" and source["synthetic"] is True and len(source["file_sha256"]) == 64
    assert source["file"].endswith(SYNTHETIC_FILES["dinov2"]) and "dinov2" in source["obtain"]
    assert not (tmp_path / "out/source").exists()  # removed once read; the seed rebuilds it
    rebuilt = synthetic_checkpoint(
        "dinov2", "vit_tiny", tmp_path / SYNTHETIC_FILES["dinov2"], depth=2, seed=3
    )
    assert sha256_file(rebuilt) == source["file_sha256"]
    direct, _ = load_baseline(rebuilt, "vit_tiny", 32)
    exported = load_encoder(tmp_path / "out")
    x = _grey(32)
    assert torch.equal(exported(x), direct(x)) and exported.config["patch_size"] == 14


def test_natural_baselines_are_encoders_of_every_stage(tmp_path):
    config = {
        "pretrain": {
            "methods": ["moco"],
            "archs": ["vit_tiny"],
            "img_size": 32,
            "vit_depth": 2,
            "natural": [
                {"name": "tv_resnet", "arch": "resnet18", "weights": "w/resnet18.pth", "layout": "auto"}
            ],
        },
        "embed": {"extra": []},
    }
    assert wiring.natural_names(config) == ["tv_resnet"]
    assert wiring.encoders(config)["tv_resnet"] == "results/pretrain/tv_resnet/encoder.safetensors"
    assert wiring.natural_weights(config, "tv_resnet") == ["w/resnet18.pth"]
    assert wiring.natural_params(config, "tv_resnet")["settings"] == {
        "arch": "resnet18",
        "device": "cpu",
        "img_size": 32,
        "vit_depth": 2,
    }
    config["embed"]["extra"] = [{"name": "tv_resnet", "weights": "x"}]
    with pytest.raises(ValueError, match="tv_resnet"):
        wiring.natural_names(config)
    variants = dense_variants({"random-vit_tiny": "a", "tv_resnet": "b"}, ["frozen", "finetune", "scratch"])
    assert [(v.encoder, v.mode) for v in variants] == [
        ("random-vit_tiny", "frozen"),
        ("tv_resnet", "frozen"),
        ("tv_resnet", "finetune"),
        ("scratch-vit_tiny", "scratch"),  # scratch only for the random encoders' architectures
    ]
