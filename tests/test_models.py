"""Backbones (torchvision-compatible, CIFAR stem, width, channels) and the Appendix C heads."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from gsg.errors import ConfigError
from gsg.models.backbones import build_backbone
from gsg.models.heads import predictor, projector


@pytest.mark.parametrize("arch,dim", [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)])
def test_width1_backbone_loads_into_torchvision_strictly(arch: str, dim: int) -> None:
    net = build_backbone(arch, image_size=224)
    assert net.out_dim == dim and not net.cifar_stem
    tv = getattr(torchvision.models, arch)()
    state = net.state_dict()
    state["fc.weight"], state["fc.bias"] = tv.fc.weight, tv.fc.bias
    tv.load_state_dict(state, strict=True)
    tv.fc = nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    net.eval(), tv.eval()
    assert torch.allclose(net(x), tv(x), atol=1e-5)


def test_cifar_stem_chosen_for_small_inputs_and_keeps_resolution() -> None:
    small = build_backbone("resnet18", image_size=32)
    assert small.cifar_stem and small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    assert not build_backbone("resnet18", image_size=96).cifar_stem
    feats: dict[str, torch.Size] = {}

    def record(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        feats["l1"] = output.shape

    small.layer1.register_forward_hook(record)
    small(torch.randn(2, 3, 32, 32))
    assert feats["l1"][-1] == 32  # no downsampling before the first residual stage


def test_width_multiplier_and_one_channel_input() -> None:
    net = build_backbone("resnet18", width=0.25, in_channels=1, image_size=28)
    assert net.out_dim == 128 and net.conv1.in_channels == 1 and net.conv1.out_channels == 16
    assert net(torch.randn(3, 1, 28, 28)).shape == (3, 128)
    full = sum(p.numel() for p in build_backbone("resnet18", image_size=32).parameters())
    quarter = sum(p.numel() for p in net.parameters())
    assert 0.04 < quarter / full < 0.08  # parameters scale with width²


def test_bad_backbone_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="resnet18"):
        build_backbone("resnet19")
    with pytest.raises(ConfigError, match="positive"):
        build_backbone("resnet18", width=0)


def test_heads_follow_appendix_c() -> None:
    cifar = projector(512, 2048, layers=2)
    linears = [m for m in cifar if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 2048), (2048, 2048)]
    assert isinstance(cifar[-1], nn.BatchNorm1d) and not cifar[-1].affine  # official: BN without affine
    imagenet = projector(2048, 2048, layers=3, last_bn="affine")
    assert sum(isinstance(m, nn.Linear) for m in imagenet) == 3 and imagenet[-1].affine
    assert sum(isinstance(m, nn.ReLU) for m in imagenet) == 2
    assert not isinstance(projector(8, 4, last_bn="none")[-1], nn.BatchNorm1d)
    mlp = predictor("mlp", 2048, hidden=512)
    assert [(m.in_features, m.out_features) for m in mlp if isinstance(m, nn.Linear)] == [(2048, 512), (512, 2048)]
    lin = predictor("linear", 16)
    assert isinstance(lin, nn.Linear) and lin.bias is None
    x = torch.randn(2, 16)
    assert torch.equal(predictor("none", 16)(x), x)
    with pytest.raises(ConfigError, match="directpred"):
        predictor("mpl", 16)


def test_zero_init_residual_starts_every_branch_at_zero_and_presets_follow_the_authors() -> None:
    import torch

    from gsg.config import load_config
    from gsg.models.backbones import Backbone

    x = torch.randn(2, 3, 32, 32)
    for arch, last in (("resnet18", "bn2"), ("resnet50", "bn3")):
        net = Backbone(arch, width=0.25, cifar_stem=True, zero_init_residual=True).eval()
        gammas = [getattr(m, last).weight for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for m in layer]
        assert all(bool((g == 0).all()) for g in gammas)
        plain = Backbone(arch, width=0.25, cifar_stem=True).eval()
        assert all(bool((getattr(m, last).weight == 1).all()) for m in plain.layer1)
        assert torch.isfinite(net(x)).all()
    imagenet = load_config(preset="imagenet")
    assert imagenet.model.zero_init_residual and imagenet.model.proj_last_bn == "plain"
    assert imagenet.ssl.ema_schedule == "constant" and imagenet.ssl.ema_momentum == 0.99
    assert load_config(preset="cifar10").model.proj_last_bn == "affine"
