"""Linear probe and ``embed``: separable data is learnt, shuffled labels give chance, channels adapt."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import random_backbone_checkpoint
from gsg.data.datasets import TensorImageDataset
from gsg.errors import ConfigError, DataError
from gsg.eval.lars import LARS
from gsg.eval.linear import cosine_lr, linear_evaluate, linear_probe, make_classifier, resolve_protocol
from gsg.eval.results import read_result
from gsg.models.embed import embed, match_channels, stats_for_channels

PALETTE = torch.tensor([[220, 40, 40], [40, 220, 40], [40, 40, 220], [40, 40, 40]], dtype=torch.float32)


class ColourNet(nn.Module):
    """A fixed 'backbone' whose features are the mean colour: crop-invariant for uniform-colour images."""

    in_channels = 3

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)  # a BN layer, to check that embedding keeps it in eval mode
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.bn(x)).flatten(1)


def colour_dataset(n: int, seed: int, *, shuffle_labels: bool = False, size: int = 16) -> TensorImageDataset:
    """Uniform-colour images (4 classes, one colour each) plus pixel noise: separable by mean colour."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    img = PALETTE[y][:, :, None, None] + 20 * torch.randn(n, 3, size, size, generator=g)
    img = img.clamp(0, 255).round().to(torch.uint8)
    if shuffle_labels:
        y = y[torch.randperm(n, generator=g)]
    return TensorImageDataset("toy", img, y, ["red", "green", "blue", "black"], (0.5,) * 3, (0.25,) * 3)


@pytest.mark.parametrize("mode", ["features", "augment"])
def test_linear_probe_separable_reaches_100(mode: str) -> None:
    res = linear_probe(ColourNet(), colour_dataset(256, 0), colour_dataset(128, 1), epochs=5, batch_size=32,
                       mode=mode, seed=0)
    assert res["top1"] == pytest.approx(100.0)
    assert res["top5"] is None  # 4 classes: top-5 is meaningless
    assert res["protocol"] == "cifar" and res["optimizer"] == "sgd"
    assert res["lr"] == pytest.approx(30.0 * 32 / 256)  # base lr 30 scaled by batch / 256
    assert res["history"][0]["lr"] == pytest.approx(res["lr"])  # cosine starts at the peak
    assert res["state_dict"]["weight"].shape == (4, 3) and res["state_dict"]["bias"].shape == (4,)


def test_linear_probe_shuffled_labels_is_chance() -> None:
    res = linear_probe(ColourNet(), colour_dataset(256, 0, shuffle_labels=True),
                       colour_dataset(400, 1, shuffle_labels=True), epochs=5, batch_size=32, mode="features")
    # 4 classes: chance is 25%; 400 test images give a standard error of about 2.2 points.
    assert 15.0 <= res["top1"] <= 35.0


def test_linear_probe_is_deterministic_and_leaves_backbone_frozen() -> None:
    net = ColourNet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    kw = {"epochs": 2, "batch_size": 16, "mode": "augment"}
    a = linear_probe(net, colour_dataset(64, 0), colour_dataset(32, 1), **kw)
    b = linear_probe(net, colour_dataset(64, 0), colour_dataset(32, 1), **kw)
    assert torch.equal(a["state_dict"]["weight"], b["state_dict"]["weight"])
    for k, v in net.state_dict().items():  # BN running stats untouched: the backbone stays in eval mode
        assert torch.equal(v, before[k]), k


def test_linear_probe_top5_and_imagenet_protocol() -> None:
    n_cls = 12
    g = torch.Generator().manual_seed(0)
    y = torch.arange(120) % n_cls
    colours = torch.rand(n_cls, 3, generator=g) * 200 + 20
    img = (colours[y][:, :, None, None] + torch.zeros(120, 3, 8, 8)).round().to(torch.uint8)
    ds = TensorImageDataset("toy12", img, y, [str(i) for i in range(n_cls)], (0.5,) * 3, (0.25,) * 3)
    res = linear_probe(ColourNet(), ds, ds, epochs=1, protocol="imagenet", batch_size=40, mode="features")
    assert res["protocol"] == "imagenet" and res["optimizer"] == "lars"
    assert res["lr"] == pytest.approx(0.1 * 40 / 256)  # SimSiam main_lincls: base lr 0.1 x batch / 256
    assert res["resize"] == round(8 / (224 / 256))  # test view: resize to size / 0.875, centre crop
    assert res["top5"] is not None and res["top5"] >= res["top1"]


def test_linear_probe_rejects_unlabelled_and_bad_settings() -> None:
    ds = colour_dataset(32, 0)
    unlabelled = TensorImageDataset("u", ds.images, torch.full((32,), -1), ds.classes, ds.mean, ds.std)
    with pytest.raises(DataError, match="unlabelled"):
        linear_probe(ColourNet(), unlabelled, ds, epochs=1, mode="features")
    with pytest.raises(ConfigError, match="mode"):
        linear_probe(ColourNet(), ds, ds, epochs=1, mode="bogus")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="protocol"):
        resolve_protocol("bogus", 32)


def test_protocol_auto_and_schedule() -> None:
    assert resolve_protocol("auto", 32) == "cifar" and resolve_protocol("auto", 64) == "cifar"
    assert resolve_protocol("auto", 96) == "imagenet"
    assert cosine_lr(30.0, 0, 90) == 30.0
    assert cosine_lr(30.0, 45, 90) == pytest.approx(15.0)
    assert cosine_lr(30.0, 89, 90) == pytest.approx(30.0 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))


def test_classifier_init_matches_simsiam() -> None:
    clf = make_classifier(2048, 1000, seed=0)
    assert clf.bias.abs().max().item() == 0.0
    assert clf.weight.std().item() == pytest.approx(0.01, rel=0.01)
    assert clf.weight.mean().item() == pytest.approx(0.0, abs=1e-4)


def test_lars_is_used_with_exclusion_of_bias() -> None:
    clf = make_classifier(3, 2)
    opt = LARS(clf.parameters(), lr=1.0)
    assert opt.param_groups[0]["exclude_1d"] is True


# ------------------------------------------------------------------------------------------ embed


def test_embed_order_labels_and_restores_train_mode() -> None:
    ds = colour_dataset(37, 3)
    net = ColourNet().train()
    feats, labels = embed(net, ds, batch_size=8, size=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert net.training and net.bn.training  # mode restored for the training loop's monitor
    assert feats.shape == (37, 3) and feats.dtype == torch.float32
    assert torch.equal(labels, ds.labels)
    # BN in eval mode with default running stats (mean 0, var 1) is ~identity: features = normalised mean.
    expected = (ds.images.float().mean(dim=(2, 3)) / 255 - 0.5) / 0.25
    torch.testing.assert_close(feats, expected, atol=1e-3, rtol=0)


def test_embed_gray_dataset_on_rgb_backbone_repeats_channel() -> None:
    rgb = colour_dataset(10, 4)
    gray = TensorImageDataset("g", rgb.images[:, :1].contiguous(), rgb.labels, rgb.classes, (0.5,), (0.25,))
    rep = TensorImageDataset("r", rgb.images[:, :1].expand(-1, 3, -1, -1).contiguous(), rgb.labels,
                             rgb.classes, (0.5,) * 3, (0.25,) * 3)
    net = ColourNet()
    f_gray, _ = embed(net, gray, batch_size=4, mean=(0.5,) * 3, std=(0.25,) * 3)
    f_rep, _ = embed(net, rep, batch_size=4, mean=(0.5,) * 3, std=(0.25,) * 3)
    torch.testing.assert_close(f_gray, f_rep)
    # Default stats come from the dataset, converted to the backbone's channels.
    f_default, _ = embed(net, gray, batch_size=4)
    torch.testing.assert_close(f_default, f_rep)


def test_match_channels_luma_and_stats() -> None:
    x = torch.tensor([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30], dtype=torch.uint8).view(4, 3, 1, 1)
    gray = match_channels(x, 1).flatten().tolist()
    # PIL integer luma: (19595 R + 38470 G + 7471 B + 32768) >> 16
    assert gray == [76, 150, 29, (19595 * 10 + 38470 * 20 + 7471 * 30 + 32768) >> 16]
    assert match_channels(x[:, :1], 3).shape == (4, 3, 1, 1)
    mean, std = stats_for_channels((0.5, 0.4, 0.3), (0.2, 0.2, 0.2), 1)
    assert mean[0] == pytest.approx(0.299 * 0.5 + 0.587 * 0.4 + 0.114 * 0.3)
    assert std[0] == pytest.approx(0.2)
    assert stats_for_channels((0.3,), (0.1,), 3) == ((0.3,) * 3, (0.1,) * 3)


def test_embed_rejects_mismatched_stats() -> None:
    with pytest.raises(ConfigError, match="channel"):
        embed(ColourNet(), colour_dataset(4, 0), mean=(0.5,), std=(0.25,))


def test_linear_evaluate_writes_result_and_classifier(tmp_path: Path) -> None:
    path = random_backbone_checkpoint(tmp_path / "ckpt.pt")
    res = linear_evaluate(path, epochs=5, lr=0.1, batch_size=32, mode="features", device="cpu",
                          command="gsg linear ckpt.pt")
    assert "state_dict" not in res and res["dataset"] == "synthetic"
    assert res["train_size"] == 512 and res["test_size"] == 256 and res["num_classes"] == 10
    assert 15.0 < res["top1"] <= 100.0  # 10 classes (chance 10%): a random backbone is still informative
    rec = read_result(res["result_file"])
    assert Path(res["result_file"]).name == "ckpt.linear.synthetic.json"
    assert rec["value"] == res["top1"] and rec["extra"]["protocol"] == "cifar"
    state = torch.load(res["classifier_file"], weights_only=True)
    assert state["weight"].shape == (10, 64)  # ResNet-18 at width 0.125: 512 × 0.125 features
