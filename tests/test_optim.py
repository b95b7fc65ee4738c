"""The optimisers: SGD as the paper's (every parameter decayed), AdamW with decay on weights only, the schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gsg.config import load_config
from gsg.ssl.build import build_model
from gsg.train.optim import build_optimizer, lr_factor, set_lr


def _names(model: nn.Module, params: list[torch.Tensor]) -> set[str]:
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_sgd_decays_every_parameter_in_two_groups() -> None:
    cfg = load_config(overrides={"model": {"width": 0.125, "proj_dim": 16, "pred_hidden": 8}})
    model = build_model(cfg.model, "simsiam", in_channels=1, image_size=16)
    opt = build_optimizer(model, cfg.optim, 0.1)
    assert isinstance(opt, torch.optim.SGD)
    assert [g["name"] for g in opt.param_groups] == ["encoder", "predictor"]
    assert all(g["weight_decay"] == 5e-4 and g["momentum"] == 0.9 for g in opt.param_groups)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_adamw_decays_weights_only_and_keeps_the_predictor_flag() -> None:
    pytest.importorskip("timm")
    cfg = load_config(overrides={
        "model": {"backbone": "timm:vit_tiny_patch16_224", "proj_dim": 16, "pred_hidden": 8,
                  "timm_kwargs": "patch_size=4,depth=1,embed_dim=16,num_heads=2"},
        "optim": {"optimizer": "adamw", "weight_decay": 0.05, "adam_beta2": 0.95, "adam_eps": 1e-6,
                  "fix_pred_lr": True}})
    model = build_model(cfg.model, "simsiam", in_channels=3, image_size=16)
    opt = build_optimizer(model, cfg.optim, 1e-3)
    assert isinstance(opt, torch.optim.AdamW)
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"encoder", "encoder_no_decay", "predictor", "predictor_no_decay"}
    assert groups["encoder"]["weight_decay"] == 0.05 and groups["encoder_no_decay"]["weight_decay"] == 0.0
    assert groups["predictor"]["fix_lr"] and groups["predictor_no_decay"]["fix_lr"]
    assert groups["encoder"]["betas"] == (0.9, 0.95) and groups["encoder"]["eps"] == 1e-6
    no_decay = _names(model, groups["encoder_no_decay"]["params"] + groups["predictor_no_decay"]["params"])
    decay = _names(model, groups["encoder"]["params"] + groups["predictor"]["params"])
    # biases, norms, and the ViT's position embedding and class token (its no_weight_decay()) are not decayed
    assert {"backbone.pos_embed", "backbone.cls_token", "backbone.norm.weight", "backbone.blocks.0.attn.qkv.bias",
            "predictor.3.bias"} <= no_decay
    assert {"backbone.blocks.0.attn.qkv.weight", "backbone.patch_embed.proj.weight", "projector.0.weight",
            "predictor.0.weight"} <= decay
    assert all(p.ndim >= 2 for p in groups["encoder"]["params"])
    assert decay | no_decay == {n for n, p in model.named_parameters() if p.requires_grad}
    # the schedule reaches every group; fix_pred_lr keeps the predictor's groups at the base lr
    set_lr(opt, 1e-3, 0.5)
    assert groups["encoder_no_decay"]["lr"] == 5e-4 and groups["predictor_no_decay"]["lr"] == 1e-3


def test_adamw_step_is_torchs_adamw() -> None:
    """Against torch.optim.AdamW on one decayed matrix and one undecayed bias, applied by hand."""
    cfg = load_config(overrides={"optim": {"optimizer": "adamw", "weight_decay": 0.1}})
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2))
    ref = [p.detach().clone().requires_grad_() for p in model.parameters()]
    opt = build_optimizer(model, cfg.optim, 0.01)
    ref_opt = torch.optim.AdamW([{"params": [ref[0]], "weight_decay": 0.1}, {"params": [ref[1]], "weight_decay": 0.0}],
                                lr=0.01)
    x = torch.randn(5, 3)
    for _ in range(3):
        for o, params, fwd in ((opt, list(model.parameters()), model), (ref_opt, ref, None)):
            o.zero_grad()
            out = fwd(x) if fwd is not None else x @ params[0].T + params[1]
            out.square().sum().backward()
            o.step()
    for a, b in zip(model.parameters(), ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_warmup_then_cosine() -> None:
    assert [lr_factor(s, 10, 4, "cosine") for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 10, 4, "cosine") == 1.0
    assert lr_factor(7, 10, 4, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(10, 10, 4, "cosine") == pytest.approx(0.0)
    assert lr_factor(7, 10, 4, "constant") == 1.0
