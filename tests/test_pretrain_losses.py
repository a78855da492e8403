import math

import pytest
import torch
import torch.nn.functional as F

from brainssl.pretrain import DINOLoss, MoCoV3Loss, dino_cross_entropy, infonce


def test_infonce_2x2_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # logits = I / T; CE of each row = log(1 + e^{-1/T}); scaled by 2T
    for t in (1.0, 0.5):
        expected = math.log(1 + math.exp(-1 / t)) * 2 * t
        assert float(infonce(q, q, t)) == pytest.approx(expected, rel=1e-6)


def test_infonce_temperature_and_norm_invariance():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    assert float(infonce(3 * q, k, 0.2)) == pytest.approx(float(infonce(q, k, 0.2)), rel=1e-6)
    logits = F.normalize(q) @ F.normalize(k).T
    for t in (0.1, 1.0):
        ref = F.cross_entropy(logits / t, torch.arange(4)) * 2 * t
        assert float(infonce(q, k, t)) == pytest.approx(float(ref), rel=1e-6)
    assert float(infonce(q, k, 0.1)) != pytest.approx(float(infonce(q, k, 1.0)))


def test_infonce_rank_offsets_positives():
    k = torch.eye(4)
    q = k[2:]  # rank 1 of two with batch 2: positives are keys 2 and 3
    assert float(infonce(q, k, 1.0, rank=1)) == pytest.approx(float(infonce(k[:2], k, 1.0, rank=0)))


def test_moco_loss_is_symmetric_sum():
    g = torch.Generator().manual_seed(1)
    q1, q2, k1, k2 = (torch.randn(5, 6, generator=g) for _ in range(4))
    loss = MoCoV3Loss(0.3)
    assert float(loss(q1, q2, k1, k2)) == pytest.approx(float(infonce(q1, k2, 0.3) + infonce(q2, k1, 0.3)))
    assert float(loss(q1, q2, k1, k2)) == pytest.approx(float(loss(q2, q1, k2, k1)))


def test_moco_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match="share a shape"):
        MoCoV3Loss()(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 3))


def naive_dino(student, teacher, center, ts, tt):
    """The authors' loop (facebookresearch/dino DINOLoss.forward), written out."""
    s_out = [x / ts for x in student]
    t_out = [F.softmax((t - center) / tt, dim=-1) for t in teacher]
    total, n = 0.0, 0
    for iq, q in enumerate(t_out):
        for v in range(len(s_out)):
            if v == iq:
                continue
            total += torch.sum(-q * F.log_softmax(s_out[v], dim=-1), dim=-1).mean()
            n += 1
    return total / n


@pytest.mark.parametrize("views,batch,k,tt", [(2, 3, 5, 0.04), (4, 2, 7, 0.07), (6, 5, 3, 0.5)])
def test_dino_matches_naive_loop(views, batch, k, tt):
    g = torch.Generator().manual_seed(views)
    s, t = torch.randn(views, batch, k, generator=g), torch.randn(2, batch, k, generator=g)
    c = torch.randn(1, k, generator=g)
    assert float(dino_cross_entropy(s, t, c, 0.1, tt)) == pytest.approx(
        float(naive_dino(s, t, c, 0.1, tt)), rel=1e-5
    )


def test_dino_by_hand_two_views_k2():
    # one sample, K=2; teacher probs p = softmax([0, 0]) = [.5, .5]; student logits [0, ln 3] -> p_s=[.25,.75]
    s = torch.tensor([[[0.0, math.log(3)]], [[0.0, math.log(3)]]])
    t = torch.zeros(2, 1, 2)
    expected = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    assert float(dino_cross_entropy(s, t, torch.zeros(1, 2), 1.0, 1.0)) == pytest.approx(expected, rel=1e-6)


def test_dino_teacher_sharpening():
    t = torch.tensor([[[1.0, 0.0]]]).repeat(2, 1, 1)
    s = torch.tensor([[[0.0, 0.0]], [[2.0, 0.0]], [[0.0, 2.0]]])
    # a sharper teacher (lower temperature) puts more mass on class 0, rewarding view 1 over view 2 more
    soft = float(dino_cross_entropy(s, t, torch.zeros(2), 1.0, 10.0))
    sharp = float(dino_cross_entropy(s, t, torch.zeros(2), 1.0, 0.01))
    p_sharp = 1 / (1 + math.exp(-100))
    ls = torch.log_softmax(torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]]), -1)
    q = torch.tensor([p_sharp, 1 - p_sharp])
    # pairs: (g0: v1, v2), (g1: v0, v2)
    hand = (-(q * ls[1]).sum() - (q * ls[2]).sum() - (q * ls[0]).sum() - (q * ls[2]).sum()) / 4
    assert sharp == pytest.approx(float(hand), rel=1e-5)
    assert sharp != pytest.approx(soft)


def test_dino_centre_update_by_hand():
    loss = DINOLoss(out_dim=2, center_momentum=0.9)
    t = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]])  # (G=2, B=2, K=2), mean [4, 5]
    loss.update_center(t)
    assert torch.allclose(loss.center, torch.tensor([[0.4, 0.5]]))
    loss.update_center(t)
    assert torch.allclose(loss.center, torch.tensor([[0.4 * 0.9 + 0.4, 0.5 * 0.9 + 0.5]]))
    assert "center" in loss.state_dict()


def test_dino_rejects_bad_shapes():
    with pytest.raises(ValueError, match="disagree"):
        dino_cross_entropy(torch.zeros(2, 3, 4), torch.zeros(2, 2, 4), torch.zeros(4), 0.1, 0.04)
