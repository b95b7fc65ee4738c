"""Backbone export: torchvision weights load strictly and give the same features; Detectron2 key names."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from gsg.checkpoint import file_sha256, save_atomic
from gsg.errors import ConfigError
from gsg.eval.export import export_backbone, export_detectron2, export_torchvision, torchvision_resnet
from gsg.models.backbones import Backbone


def make_checkpoint(tmp_path: Path, arch: str = "resnet18", *, width: float = 1.0, cifar_stem: bool = False,
                    in_channels: int = 3, seed: int = 0) -> tuple[Path, Backbone]:
    torch.manual_seed(seed)
    net = Backbone(arch, width=width, in_channels=in_channels, cifar_stem=cifar_stem)
    # Non-trivial BN statistics, so a mix-up of running_mean/var or weight/bias would show in the features.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    net.eval()
    size = 32 if cifar_stem else 64
    ckpt = {
        "gsg_checkpoint": 1,
        "backbone": {"arch": arch, "width": width, "in_channels": in_channels, "cifar_stem": cifar_stem,
                     "image_size": size},
        "data": {"dataset": "synthetic", "mean": [0.5] * in_channels, "std": [0.25] * in_channels,
                 "image_size": size, "channels": in_channels},
        "config": {},
        "model": {"backbone." + k: v for k, v in net.state_dict().items()},
    }
    path = tmp_path / f"{arch}_w{width}_{'cifar' if cifar_stem else 'in'}.pt"
    save_atomic(ckpt, path)
    return path, net


def test_torchvision_export_loads_strictly_and_matches_features(tmp_path: Path) -> None:
    ckpt, net = make_checkpoint(tmp_path)
    out = export_torchvision(ckpt, tmp_path / "r18.pth")
    state = torch.load(out, weights_only=True)
    model = torchvision.models.resnet18()
    model.load_state_dict(state, strict=True)
    assert torch.count_nonzero(state["fc.weight"]) == 0 and state["fc.weight"].shape == (1000, 512)
    model.fc = torch.nn.Identity()
    model.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x), rtol=0, atol=0)
    meta = json.loads((tmp_path / "r18.pth.json").read_text())
    assert meta["arch"] == "resnet18" and meta["cifar_stem"] is False
    assert meta["source_sha256"] == file_sha256(ckpt)


def test_cifar_stem_export_loads_into_modified_torchvision_model(tmp_path: Path) -> None:
    ckpt, net = make_checkpoint(tmp_path, cifar_stem=True)
    state = torch.load(export_backbone(ckpt, tmp_path / "c.pth", format="torchvision"), weights_only=True)
    model = torchvision.models.resnet18()
    model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)  # the recipe documented in export.py
    model.maxpool = torch.nn.Identity()
    model.load_state_dict(state, strict=True)
    model.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), net(x), rtol=0, atol=0)


@pytest.mark.parametrize(("arch", "width", "in_channels", "cifar_stem", "size"), [
    ("resnet18", 0.25, 1, True, 28),  # the quickstart's backbone
    ("resnet50", 0.5, 3, False, 64),
])
def test_non_standard_backbone_loads_into_a_torchvision_resnet_built_from_the_side_file(
        tmp_path: Path, arch: str, width: float, in_channels: int, cifar_stem: bool, size: int) -> None:
    ckpt, net = make_checkpoint(tmp_path, arch, width=width, in_channels=in_channels, cifar_stem=cifar_stem)
    out = export_torchvision(ckpt, tmp_path / "w.pth")
    build = json.loads((tmp_path / "w.pth.json").read_text())["build"]
    assert build == {"arch": arch, "width": width, "in_channels": in_channels, "cifar_stem": cifar_stem}
    model = torchvision_resnet(**build)
    assert type(model) is torchvision.models.ResNet  # torchvision's class and forward, not gsg's subclass
    model.load_state_dict(torch.load(out, weights_only=True), strict=True)
    assert model.conv1.out_channels == round(64 * width) and model.conv1.in_channels == in_channels
    model.fc = torch.nn.Identity()
    x = torch.randn(2, in_channels, size, size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), net(x), rtol=0, atol=0)


def test_torchvision_resnet_is_torchvisions_model_for_the_standard_shape() -> None:
    a, b = torchvision_resnet("resnet50"), torchvision.models.resnet50()
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    assert isinstance(a.maxpool, torch.nn.MaxPool2d) and a.conv1.kernel_size == (7, 7)


def test_detectron2_export_key_names_and_shapes(tmp_path: Path) -> None:
    ckpt, net = make_checkpoint(tmp_path, "resnet50")
    out = export_detectron2(ckpt, tmp_path / "r50.pkl")
    with open(out, "rb") as f:
        obj = pickle.load(f, encoding="latin1")  # as Detectron2 reads it
    assert obj["__author__"] == "gsg" and obj["matching_heuristics"] is True
    model = obj["model"]
    assert all(isinstance(v, np.ndarray) for v in model.values())
    sd = net.state_dict()
    assert model["stem.conv1.weight"].shape == (64, 3, 7, 7)
    np.testing.assert_array_equal(model["stem.conv1.norm.running_var"], sd["bn1.running_var"].numpy())
    assert model["res2.0.conv1.norm.weight"].shape == (64,)
    assert model["res2.0.shortcut.weight"].shape == (256, 64, 1, 1)
    assert model["res2.0.shortcut.norm.bias"].shape == (256,)
    np.testing.assert_array_equal(model["res5.2.conv3.weight"], sd["layer4.2.conv3.weight"].numpy())
    assert model["res5.0.shortcut.weight"].shape == (2048, 1024, 1, 1)
    assert "res5.2.shortcut.weight" not in model  # only the first block of a stage has a projection
    assert not any(k.startswith(("layer", "fc", "bn1", "conv1")) or "num_batches_tracked" in k for k in model)
    # Every backbone tensor except the BN counters was converted, one to one.
    assert len(model) == sum(1 for k in sd if not k.endswith("num_batches_tracked"))


def test_export_refusals(tmp_path: Path) -> None:
    ckpt, _ = make_checkpoint(tmp_path, width=0.5)
    with pytest.raises(ConfigError, match=r"width 0\.5.*torchvision_resnet"):
        export_detectron2(ckpt, tmp_path / "x.pkl")
    assert not (tmp_path / "x.pkl").exists()
    ckpt, _ = make_checkpoint(tmp_path, cifar_stem=True)
    with pytest.raises(ConfigError, match="CIFAR stem"):
        export_detectron2(ckpt, tmp_path / "x.pkl")
    with pytest.raises(ConfigError, match="format"):
        export_backbone(ckpt, tmp_path / "x", format="onnx")  # type: ignore[arg-type]
