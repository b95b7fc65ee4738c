"""BYOL target: the EMA formula and the momentum schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gsg.errors import ConfigError
from gsg.models.backbones import Backbone
from gsg.models.heads import predictor, projector
from gsg.ssl.ema import ema_update, momentum_at
from gsg.ssl.siamese import Siamese


def test_ema_follows_formula_exactly() -> None:
    torch.manual_seed(0)
    online, target = nn.Linear(4, 3), nn.Linear(4, 3)
    t0 = [p.detach().clone() for p in target.parameters()]
    o = [p.detach().clone() for p in online.parameters()]
    ema_update(target, online, 0.9)
    for t_new, t_old, o_p in zip(target.parameters(), t0, o, strict=True):
        assert torch.allclose(t_new, 0.9 * t_old + 0.1 * o_p, atol=1e-7)


def test_cosine_schedule_goes_from_base_to_one() -> None:
    assert momentum_at(0, 100, 0.99) == pytest.approx(0.99)
    assert momentum_at(100, 100, 0.99) == pytest.approx(1.0)
    assert momentum_at(50, 100, 0.99) == pytest.approx(1 - 0.01 * (math.cos(math.pi * 0.5) + 1) / 2)
    assert momentum_at(37, 100, 0.99, "constant") == 0.99
    with pytest.raises(ConfigError):
        momentum_at(0, 10, 0.9, "linear")


def _byol() -> Siamese:
    bb = Backbone("resnet18", width=0.125, in_channels=1, cifar_stem=True)
    return Siamese(bb, projector(bb.out_dim, 16), predictor("mlp", 16, hidden=8), "byol")


def test_byol_target_gets_no_gradient_and_tracks_online() -> None:
    torch.manual_seed(0)
    model = _byol()
    x = [torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16)]
    out = model(x)
    assert all(not t.requires_grad for t in out.t)
    (out.p[0].sum() + out.p[1].sum()).backward()
    assert all(p.grad is None for p in model.target.parameters())
    assert all(not p.requires_grad for p in model.target.parameters())
    before = [p.clone() for p in model.target.parameters()]
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)
    model.update_target(0.5)
    online = list(model.online_encoder().parameters())
    for new, old, o in zip(model.target.parameters(), before, online, strict=True):
        assert torch.allclose(new, 0.5 * old + 0.5 * o)


def test_simsiam_target_is_the_detached_online_projection() -> None:
    bb = Backbone("resnet18", width=0.125, in_channels=1, cifar_stem=True)
    model = Siamese(bb, projector(bb.out_dim, 16), predictor("none", 16), "simsiam").eval()
    out = model([torch.randn(3, 1, 16, 16)])
    assert model.target is None
    assert torch.equal(out.t[0], out.z[0]) and not out.t[0].requires_grad and out.z[0].requires_grad
