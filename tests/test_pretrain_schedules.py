import math

import numpy as np
import pytest

from brainssl.pretrain import build_schedules, cosine_schedule, teacher_temperature_schedule


def test_cosine_with_warmup_by_hand():
    s = cosine_schedule(1.0, 0.0, total_steps=6, warmup_steps=2)
    # warm-up linspace(0, 1, 2) = [0, 1]; then j=0..3 of N=4: 0.5(1+cos(pi j/4))
    expected = [0.0, 1.0, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4))]
    assert np.allclose(s, expected)


def test_moco_momentum_formula():
    m0, total = 0.99, 10
    s = cosine_schedule(m0, 1.0, total)
    for t in range(total):
        assert s[t] == pytest.approx(1 - (1 - m0) * (math.cos(math.pi * t / total) + 1) / 2)


def test_teacher_temperature_warmup():
    s = teacher_temperature_schedule(0.04, 0.07, warmup_epochs=3, epochs=4, steps_per_epoch=2)
    assert np.allclose(s, [0.04, 0.04, 0.055, 0.055, 0.07, 0.07, 0.07, 0.07])


def test_build_schedules_weight_decay_and_lr():
    sch = build_schedules(
        lr=0.1,
        min_lr=0.0,
        warmup_epochs=1,
        weight_decay=0.04,
        weight_decay_end=0.4,
        momentum=0.996,
        teacher_temp=0.04,
        warmup_teacher_temp=0.04,
        warmup_teacher_temp_epochs=0,
        epochs=2,
        steps_per_epoch=2,
    )
    assert np.allclose(
        sch.weight_decay,
        [
            0.04,
            0.4 + 0.5 * (0.04 - 0.4) * (1 + math.cos(math.pi / 4)),
            0.22,
            0.4 + 0.5 * (0.04 - 0.4) * (1 + math.cos(3 * math.pi / 4)),
        ],
    )
    assert np.allclose(sch.lr, [0.0, 0.1, 0.1, 0.05])
    assert sch.at(3)["lr"] == pytest.approx(0.05)
    with pytest.raises(IndexError):
        sch.at(4)


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="warmup_steps"):
        cosine_schedule(1.0, 0.0, 3, warmup_steps=4)
