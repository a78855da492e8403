"""Pretraining schedules and MoCo v3's step order against the authors' own code.

The reference functions below are short excerpts of the authors' code, kept here only as test
oracles (no package ships them), each marked with its repository, commit and file:

- facebookresearch/moco-v3 at c349e6e24f40d3fedb22d973f92defa4cedf37a7 (CC BY-NC 4.0),
  ``main_moco.py`` (``adjust_learning_rate``, ``adjust_moco_momentum``, the loop of ``train``)
  and ``moco/builder.py`` (``MoCo.forward``, ``_update_momentum_encoder``, ``contrastive_loss``);
- facebookresearch/dino at 7c446df5b9f45747937fb0d72314eb9f7b66930a (Apache 2.0), ``utils.py``
  (``cosine_scheduler``).

The step-order test holds the authors' order in the test itself, as the lightly project's tests
of its MoCo v3 do: momentum update with this step's momentum, keys, loss, optimizer step.
"""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from _pretrain_tiny import dataset, settings
from conftest import REPO
from torch import nn

from brainssl.config import pretrain_run_settings
from brainssl.pretrain import build_trainer
from brainssl.pretrain.distributed import DistEnv
from brainssl.pretrain.optim import build_optimizer
from brainssl.pretrain.order import step_seed
from brainssl.pretrain.schedules import build_schedules

# ----------------------------------------------------------------------------- reference code


def moco_adjust_learning_rate(epoch, args):
    """facebookresearch/moco-v3 c349e6e2 main_moco.py ``adjust_learning_rate`` (optimizer left out)."""
    if epoch < args.warmup_epochs:
        lr = args.lr * epoch / args.warmup_epochs
    else:
        lr = (
            args.lr
            * 0.5
            * (1.0 + math.cos(math.pi * (epoch - args.warmup_epochs) / (args.epochs - args.warmup_epochs)))
        )
    return lr


def moco_adjust_moco_momentum(epoch, args):
    """facebookresearch/moco-v3 c349e6e2 main_moco.py ``adjust_moco_momentum``."""
    m = 1.0 - 0.5 * (1.0 + math.cos(math.pi * epoch / args.epochs)) * (1.0 - args.moco_m)
    return m


def moco_schedules(args, iters_per_epoch):
    """The per-iteration values of main_moco.py ``train``: ``epoch + i / iters_per_epoch``."""
    lrs, moms = [], []
    for epoch in range(args.epochs):
        moco_m = args.moco_m
        for i in range(iters_per_epoch):
            lrs.append(moco_adjust_learning_rate(epoch + i / iters_per_epoch, args))
            if args.moco_m_cos:
                moco_m = moco_adjust_moco_momentum(epoch + i / iters_per_epoch, args)
            moms.append(moco_m)
    return np.array(lrs), np.array(moms)


def dino_cosine_scheduler(
    base_value, final_value, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0
):
    """facebookresearch/dino 7c446df5 utils.py ``cosine_scheduler``."""
    warmup_schedule = np.array([])
    warmup_iters = warmup_epochs * niter_per_ep
    if warmup_epochs > 0:
        warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)

    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))

    schedule = np.concatenate((warmup_schedule, schedule))
    assert len(schedule) == epochs * niter_per_ep
    return schedule


def moco_contrastive_loss(q, k, T):
    """facebookresearch/moco-v3 c349e6e2 moco/builder.py ``contrastive_loss`` on one process (rank 0)."""
    q = nn.functional.normalize(q, dim=1)
    k = nn.functional.normalize(k, dim=1)
    logits = torch.einsum("nc,mc->nm", [q, k]) / T
    N = logits.shape[0]
    labels = torch.arange(N, dtype=torch.long)
    return nn.CrossEntropyLoss()(logits, labels) * (2 * T)


# ------------------------------------------------------------------------------- schedules

SCHEDULE_CASES = [
    # epochs, iters per epoch, warm-up epochs, lr, min lr 0 (the authors'), m, m_cos
    (10, 7, 2, 0.6, 0.99, True),
    (5, 3, 0, 1.5e-4 * 4, 0.99, False),
    (4, 5, 4, 0.3, 0.996, True),
    (300, 2, 40, 1.5e-4 * 1024 / 256, 0.99, True),
]


def _build(method, epochs, spe, warmup, lr, m, m_cos, min_lr=0.0):
    return build_schedules(
        lr=lr,
        min_lr=min_lr,
        warmup_epochs=warmup,
        weight_decay=0.1,
        weight_decay_end=0.1,
        momentum=m,
        teacher_temp=0.04,
        warmup_teacher_temp=0.04,
        warmup_teacher_temp_epochs=0,
        epochs=epochs,
        steps_per_epoch=spe,
        method=method,
        momentum_cosine=m_cos,
    )


@pytest.mark.parametrize(("epochs", "spe", "warmup", "lr", "m", "m_cos"), SCHEDULE_CASES)
def test_moco_lr_and_momentum_are_the_authors_per_iteration_values(epochs, spe, warmup, lr, m, m_cos):
    args = SimpleNamespace(lr=lr, epochs=epochs, warmup_epochs=warmup, moco_m=m, moco_m_cos=m_cos)
    ref_lr, ref_m = moco_schedules(args, spe)
    sched = _build("moco", epochs, spe, warmup, lr, m, m_cos)
    np.testing.assert_allclose(sched.lr, ref_lr, rtol=1e-12, atol=1e-18)
    np.testing.assert_allclose(sched.momentum, ref_m, rtol=1e-12)
    assert np.all(sched.weight_decay == 0.1)  # MoCo v3 keeps its weight decay constant
    if 0 < warmup < epochs:  # the peak is first reached at the first step after the warm-up
        assert sched.lr[warmup * spe - 1] < lr and sched.lr[warmup * spe] == pytest.approx(lr)


@pytest.mark.parametrize(("epochs", "spe", "warmup", "lr", "m", "m_cos"), SCHEDULE_CASES)
def test_dino_lr_wd_and_momentum_are_the_authors_cosine_scheduler(epochs, spe, warmup, lr, m, m_cos):
    sched = build_schedules(
        lr=lr,
        min_lr=1e-6,
        warmup_epochs=warmup,
        weight_decay=0.04,
        weight_decay_end=0.4,
        momentum=m,
        teacher_temp=0.04,
        warmup_teacher_temp=0.04,
        warmup_teacher_temp_epochs=0,
        epochs=epochs,
        steps_per_epoch=spe,
        method="dino",
        momentum_cosine=m_cos,  # DINO's teacher momentum always follows its cosine
    )
    np.testing.assert_allclose(
        sched.lr, dino_cosine_scheduler(lr, 1e-6, epochs, spe, warmup_epochs=min(warmup, epochs)), rtol=1e-12
    )
    np.testing.assert_allclose(sched.weight_decay, dino_cosine_scheduler(0.04, 0.4, epochs, spe), rtol=1e-12)
    np.testing.assert_allclose(sched.momentum, dino_cosine_scheduler(m, 1, epochs, spe), rtol=1e-12)


@pytest.mark.parametrize("arch", ["resnet50", "vit_small"])
def test_paper_config_ends_each_cosine_where_its_authors_do(arch):
    paper = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    assert pretrain_run_settings(paper, "moco", arch)["min_lr"] == 0.0  # main_moco.py: cosine to 0
    assert pretrain_run_settings(paper, "dino", arch)["min_lr"] == 1e-6  # main_dino.py --min_lr default


def test_unknown_schedule_method_is_refused():
    with pytest.raises(ValueError, match="unknown method"):
        _build("byol", 2, 2, 0, 0.1, 0.99, True)


# ------------------------------------------------------------------------------ step order


def authors_moco_steps(method, batches, schedules, optimizer, seed, temperature):
    """MoCo v3's training steps in the authors' order, on brainssl's modules.

    facebookresearch/moco-v3 c349e6e2: main_moco.py ``train`` sets the lr and momentum of the
    iteration, calls ``model(x1, x2, moco_m)``, then ``zero_grad``, ``backward``, ``step``;
    moco/builder.py ``MoCo.forward`` computes the queries, updates the momentum encoder with
    ``moco_m`` (``param_m = param_m * m + param_b * (1 - m)``), then computes the keys.
    The augmentation, optimizer and parameter groups are brainssl's (not under test here).
    """
    base = list(method.student.encoder.parameters()) + list(method.student.projector.parameters())
    momentum = list(method.teacher.encoder.parameters()) + list(method.teacher.projector.parameters())
    losses = []
    for step, x in enumerate(batches):
        values = schedules.at(step)
        for group in optimizer.param_groups:
            group["lr"] = values["lr"]
            if group.get("apply_wd"):
                group["weight_decay"] = values["weight_decay"]
        gen = torch.Generator().manual_seed(step_seed(seed, 0, step))
        x1, x2 = method.make_views(x.float(), gen)
        student = method.student
        q1 = student.predictor(student.projector(student.encoder(x1)))
        q2 = student.predictor(student.projector(student.encoder(x2)))
        with torch.no_grad():
            m = values["momentum"]
            for param_b, param_m in zip(base, momentum, strict=True):
                param_m.data = param_m.data * m + param_b.data * (1.0 - m)
            k1 = method.teacher.projector(method.teacher.encoder(x1))
            k2 = method.teacher.projector(method.teacher.encoder(x2))
        loss = moco_contrastive_loss(q1, k2, temperature) + moco_contrastive_loss(q2, k1, temperature)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def test_moco_steps_follow_the_authors_order(tmp_path):
    torch.set_num_threads(1)
    # A fast-moving momentum encoder and a cosine momentum make the order visible within 3 steps:
    # flipped back (update after the optimizer step), parameters differ by 5e-3 to 2.5e-2; in
    # this order by at most 3e-6. LARS (MoCo v3's default optimizer), since Adam's first steps
    # turn rounding noise in near-zero gradients into full-size updates.
    s = settings(
        "moco",
        optimizer="lars",
        lr=5.0,
        weight_decay=1e-6,
        weight_decay_end=1e-6,
        momentum=0.9,
        moco_m_cos=True,
        warmup_epochs=0,
        clip_grad=0.0,
        epochs=2,
        batch_size=8,
    )
    data = dataset(16)
    env = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    trainer = build_trainer(s, data, None, tmp_path, env)
    reference = copy.deepcopy(trainer.method)
    optimizer = build_optimizer("lars", reference.student, env.device)
    batches = [torch.stack(data[i : i + 8]) for i in (0, 8, 0)]

    ours = [trainer.train_step([x])["loss"] for x in batches]
    theirs = authors_moco_steps(reference, batches, trainer.schedules, optimizer, s.seed, s.temperature)

    assert ours == pytest.approx(theirs, rel=1e-5)
    for name, module in (("student", "student"), ("momentum encoder", "teacher")):
        got = dict(getattr(trainer.method, module).named_parameters())
        for key, want in getattr(reference, module).named_parameters():
            assert torch.allclose(got[key], want, rtol=1e-4, atol=5e-5), f"{name} {key}"
