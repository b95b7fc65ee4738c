"""LARS follows its update formula, checked against a hand computation over two steps."""

from __future__ import annotations

import math

import pytest
import torch

from gsg.errors import ConfigError
from gsg.eval.lars import LARS


def test_lars_two_steps_by_hand() -> None:
    # w = (3, 4): ‖w‖ = 5. lr 0.5, momentum 0.9, wd 0.1, η = 0.01.
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))
    b = torch.nn.Parameter(torch.tensor([1.0]))  # 1-d: plain momentum SGD, no wd, no trust ratio
    opt = LARS([w, b], lr=0.5, momentum=0.9, weight_decay=0.1, trust_coefficient=0.01)

    # Step 1: g = (1, 0). d = g + 0.1 w = (1.3, 0.4); ‖d‖ = sqrt(1.69 + 0.16) = sqrt(1.85).
    w.grad = torch.tensor([[1.0, 0.0]])
    b.grad = torch.tensor([2.0])
    opt.step()
    q1 = 0.01 * 5 / math.sqrt(1.85)
    mu1 = (1.3 * q1, 0.4 * q1)
    w1 = (3 - 0.5 * mu1[0], 4 - 0.5 * mu1[1])
    assert w.detach().flatten().tolist() == pytest.approx(w1, rel=1e-6)
    assert b.item() == pytest.approx(1.0 - 0.5 * 2.0)  # mu_b = 2

    # Step 2: g = (0, 2). d = g + 0.1 w1; q2 = η‖w1‖ / ‖d‖; mu2 = 0.9 mu1 + q2 d.
    w.grad = torch.tensor([[0.0, 2.0]])
    b.grad = torch.tensor([-1.0])
    opt.step()
    d = (0.1 * w1[0], 2 + 0.1 * w1[1])
    q2 = 0.01 * math.hypot(*w1) / math.hypot(*d)
    mu2 = (0.9 * mu1[0] + q2 * d[0], 0.9 * mu1[1] + q2 * d[1])
    w2 = (w1[0] - 0.5 * mu2[0], w1[1] - 0.5 * mu2[1])
    assert w.detach().flatten().tolist() == pytest.approx(w2, rel=1e-6)
    assert b.item() == pytest.approx(0.0 - 0.5 * (0.9 * 2.0 - 1.0))


def test_lars_zero_norm_falls_back_to_ratio_one_and_adapts_1d_when_asked() -> None:
    w = torch.nn.Parameter(torch.zeros(2, 2))  # ‖w‖ = 0: trust ratio 1 (a zero-initialised layer can move)
    v = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # 1-d, adapted because exclude_1d=False
    opt = LARS([w, v], lr=1.0, momentum=0.0, trust_coefficient=0.1, exclude_1d=False)
    w.grad = torch.ones(2, 2)
    v.grad = torch.tensor([0.0, 10.0])
    opt.step()
    assert torch.equal(w.detach(), -torch.ones(2, 2))
    # q = 0.1 * 5 / 10 = 0.05: v - 0.05 * (0, 10) = (3, 3.5)
    assert v.detach().tolist() == pytest.approx([3.0, 3.5])


def test_lars_rejects_bad_hyperparameters() -> None:
    p = [torch.nn.Parameter(torch.ones(1))]
    with pytest.raises(ConfigError, match="momentum"):
        LARS(p, lr=0.1, momentum=1.0)
    with pytest.raises(ConfigError, match="trust"):
        LARS(p, lr=0.1, trust_coefficient=0.0)
    with pytest.raises(ConfigError, match="learning rate"):
        LARS(p, lr=-1.0)
