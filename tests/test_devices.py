"""One `device` setting per stage: how it resolves, the GPU each training rule requests, the start checks.

All on the CPU: CUDA's presence is monkeypatched (torch.cuda.is_available), never needed.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO
from snakemake.utils import update_config, validate

from brainssl import wiring
from brainssl.tasks.dense_training import autocast, resolve_device, to_device
from brainssl.wiring import checks


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """config.yaml extended by config/test.yaml, validated (defaults filled)."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(cfg, yaml.safe_load((REPO / "config/test.yaml").read_text()))
    validate(cfg, str(REPO / "workflow/schemas/config.schema.yaml"))
    return cfg


def with_values(config: dict[str, Any], **dotted: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(config)
    for key, value in dotted.items():
        *parents, leaf = key.split("__")
        node = cfg
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return cfg


def wildcards(**values: str) -> SimpleNamespace:
    """What a resources function reads of Snakemake's wildcards (attribute access)."""
    return SimpleNamespace(**values)


# ---- resolving a device setting


def test_auto_takes_cuda_only_where_torch_sees_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_cuda_without_a_gpu_is_an_error_naming_the_setting(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"tasks.device = 'cuda' but torch finds no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="not one of auto, cpu, cuda"):
        resolve_device("gpu")


def test_the_cpu_path_adds_nothing():
    cpu = torch.device("cpu")
    batch = torch.ones(2, 3)
    assert to_device(batch, cpu) is batch  # no copy, no pinning
    with autocast(cpu):
        assert (batch @ batch.T).dtype == torch.float32  # no autocast on the CPU


def test_dense_training_and_prediction_on_cpu_match_the_device_less_call():
    from brainssl.pretrain.backbones import build_encoder
    from brainssl.tasks.dense_networks import DenseModel, encode_slices
    from brainssl.tasks.dense_training import TrainSettings, predict_batches, seeded_generator, train_dense

    images = np.random.default_rng(0).random((6, 1, 32, 32), dtype=np.float32)
    targets = (images > 0.5).astype(np.float32)
    settings = TrainSettings(epochs=1, batch_size=3, lr=1e-3, encoder_lr=1e-4, weight_decay=0.0, width=8)

    def run(**device: Any) -> tuple[list[float], torch.Tensor, list[torch.Tensor]]:
        torch.manual_seed(0)
        encoder = build_encoder("vit_tiny", img_size=32, depth=1, embed_dim=24, num_heads=2)
        model = DenseModel(encoder, 1, 1, frozen=False, width=8)
        loss = torch.nn.functional.binary_cross_entropy_with_logits
        history = train_dense(model, images, targets, loss, settings, seeded_generator(0), **device)
        outputs = torch.cat(list(predict_batches(model, images, **device)))
        return history, outputs, encode_slices(encoder, images, **device)

    plain, on_cpu = run(), run(device="cpu")
    assert plain[0] == on_cpu[0]
    assert torch.equal(plain[1], on_cpu[1]) and plain[1].dtype == torch.float32
    assert all(torch.equal(a, b) for a, b in zip(plain[2], on_cpu[2], strict=True))


# ---- the GPU each training rule requests


def test_gpu_resources_follow_the_device_settings(config):
    assert wiring.task_gpu_resources(config) == {}  # test config: cpu
    assert wiring.task_gpu_resources(with_values(config, tasks__device="auto")) == {}
    cuda = with_values(config, tasks__device="cuda", embed__device="cuda")
    assert wiring.task_gpu_resources(cuda) == {"gpu": 1}
    frozen = wiring.frozen_task_gpu_resources(cuda)["gpu"]
    scratch_task = wiring.scratch_tasks()[0]
    assert frozen(wildcards(task=scratch_task)) == 1  # trains scratch networks
    assert frozen(wildcards(task="survival")) == 0  # scikit-learn heads only
    assert wiring.frozen_task_gpu_resources(config) == {}
    embed = wiring.embed_gpu_resources(cuda)["gpu"]
    assert embed(wildcards(encoder="random-vit_tiny")) == 1
    assert embed(wildcards(encoder="classical")) == 0
    assert wiring.embed_gpu_resources(config) == {}


def test_the_device_is_a_param_of_the_scratch_jobs_only_where_they_train(config):
    task = wiring.scratch_tasks()[0]
    assert wiring.scratch_params(config, task)["device"] == "cpu"
    assert wiring.scratch_params(config, "survival") == {}
    assert wiring.task_device(with_values(config, tasks__device="cuda")) == "cuda"


# ---- the checks at workflow start


def test_cuda_without_a_gpu_stops_a_local_run(config):
    asked = with_values(config, tasks__device="cuda", embed__device="cuda")
    with pytest.raises(checks.ConfigError, match=r"'cuda' \(embed.device, tasks.device\) but this machine"):
        checks.check_devices(asked, cuda=lambda: False)
    checks.check_devices(asked, cuda=lambda: True)
    checks.check_devices(asked, local=False, cuda=lambda: False)  # cluster jobs check on their node

    def never() -> bool:
        raise AssertionError("no cuda asked for: CUDA is not probed")

    checks.check_devices(config, cuda=never)


def test_a_pretraining_override_asking_for_cuda_is_found(config):
    override = with_values(config, pretrain__per_method={"dino": {"device": "cuda"}})
    assert checks.cuda_requests(override) == ["pretrain.device (dino-vit_tiny, per_method/per_arch)"]


def test_cuda_available_asks_a_cuda_build_of_torch(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert checks.cuda_available() is True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert checks.cuda_available() is False


def test_a_pretraining_size_unlike_the_store_is_refused(config):
    checks.check_slice_sizes(config)  # 32 and 32
    bigger = with_values(config, pretrain__img_size=64)
    with pytest.raises(checks.ConfigError, match=r"pretrain.img_size = 64 .* but slices.size = 32"):
        checks.check_slice_sizes(bigger)
    per_arch = with_values(config, pretrain__per_arch={"vit_tiny": {"dino": {"img_size": 48}}})
    lines = checks.slice_size_errors(per_arch)
    assert len(lines) == 1 and "runs dino-vit_tiny" in lines[0]
    per_dataset = with_values(config, slices__per_dataset={"tumor4": {"size": 64}})
    assert "tumor4 64" in checks.slice_size_errors(per_dataset)[0]
