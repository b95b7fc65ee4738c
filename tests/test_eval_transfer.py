"""Transfer protocol: splits, VOC targets, the PIL pipeline, the feature cache, and an end-to-end run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from conftest import random_backbone_checkpoint
from gsg.checkpoint import file_sha256
from gsg.errors import ConfigError, DataError
from gsg.eval import transfer as tr
from gsg.eval import transfer_sources as sources
from gsg.eval.results import read_result
from gsg.eval.transfer import FeatureSplit, embed_pil_dataset, evaluate_splits, transfer, transfer_evaluate
from gsg.eval.transfer_sources import _PILToUint8, _VOCTarget, per_class_split, random_val_split, resolve_dataset


def test_metric_per_dataset_matches_the_paper() -> None:
    per_class = {"aircraft", "pets", "caltech101", "flowers"}
    top1 = {"cifar10", "cars", "dtd", "food", "sun397", "mnist", "fashion-mnist"}
    for name in per_class:
        assert resolve_dataset(name).metric == "mean_per_class"
    for name in top1:
        assert resolve_dataset(name).metric == "top1"
    assert resolve_dataset("VOC").metric == "voc11_map"
    own_val = {n for n, d in sources.TRANSFER_DATASETS.items() if d.own_val and d.source == "torchvision"}
    assert own_val == {"aircraft", "dtd", "flowers", "voc2007"}
    with pytest.raises(ConfigError, match="did you mean 'cifar10'"):
        resolve_dataset("cifar1O")


def test_random_val_split_is_seeded_20_percent() -> None:
    a_train, a_val = random_val_split(101, 0.2, seed=3)
    _, b_val = random_val_split(101, 0.2, seed=3)
    assert torch.equal(a_val, b_val) and len(a_val) == 20 and len(a_train) == 81
    assert sorted(torch.cat([a_train, a_val]).tolist()) == list(range(101))
    assert not torch.equal(random_val_split(101, 0.2, seed=4)[1], a_val)


def test_per_class_split_counts() -> None:
    labels = [0] * 40 + [1] * 35 + [2] * 31
    train, test = per_class_split(labels, 30, seed=0)
    y = torch.tensor(labels)
    assert torch.bincount(y[train]).tolist() == [30, 30, 30]
    assert torch.bincount(y[test]).tolist() == [10, 5, 1]
    assert set(train.tolist()).isdisjoint(test.tolist())
    _, capped = per_class_split(labels, 30, seed=0, per_class_test=3)
    assert torch.bincount(y[capped]).tolist() == [3, 3, 1]


def test_voc_target_positive_and_difficult() -> None:
    ann = {"annotation": {"object": [
        {"name": "dog", "difficult": "0"},
        {"name": "cat", "difficult": "1"},
        {"name": "person", "difficult": "1"}, {"name": "person", "difficult": "0"},
    ]}}
    t = _VOCTarget()(ann)
    idx = sources.VOC_CLASSES.index
    assert t[0].nonzero().flatten().tolist() == sorted([idx("dog"), idx("person")])
    assert t[1].nonzero().flatten().tolist() == [idx("cat")]  # person has a non-difficult instance


def test_pil_pipeline_is_bicubic_shorter_side_then_centre_crop() -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    out = _PILToUint8(20)(img)
    ref = img.resize((30, 20), Image.BICUBIC)  # shorter side 40 -> 20, longer 60 -> 30
    ref = np.asarray(ref)[:, 5:25].transpose(2, 0, 1)
    assert out.dtype == torch.uint8 and out.shape == (3, 20, 20)
    np.testing.assert_array_equal(out.numpy(), ref)


def test_embed_pil_dataset_uses_the_backbone_normalisation() -> None:
    fake = torchvision.datasets.FakeData(size=6, image_size=(3, 24, 30), num_classes=3,
                                         transform=_PILToUint8(16), random_offset=0)
    pool = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    pool.in_channels = 3  # type: ignore[assignment]
    split = embed_pil_dataset(pool, fake, size=16, mean=(0.5,) * 3, std=(0.25,) * 3, batch_size=4)
    imgs = torch.stack([fake[i][0] for i in range(6)]).float() / 255
    torch.testing.assert_close(split.features, ((imgs - 0.5) / 0.25).mean(dim=(2, 3)))
    assert split.labels.tolist() == [int(fake[i][1]) for i in range(6)]


def blob_split(n: int, seed: int, k: int = 3) -> FeatureSplit:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    x = 3.0 * torch.eye(k, 6)[y] + 0.3 * torch.randn(n, 6, generator=g)
    return FeatureSplit(x, y)


def test_evaluate_splits_random_and_predefined_validation() -> None:
    values = np.logspace(-4, 4, 5)
    res = evaluate_splits({"train": blob_split(100, 0), "test": blob_split(60, 1)}, "top1", values=values)
    assert res["value"] == pytest.approx(100.0)
    assert res["sizes"] == {"train": 80, "val": 20, "trainval": 100, "test": 60}
    assert res["val_split"].startswith("random 20%")
    assert res["best_wd"] in values and res["best_C"] == pytest.approx(1 / res["best_wd"])
    res = evaluate_splits({"train": blob_split(50, 0), "val": blob_split(30, 2), "test": blob_split(60, 1)},
                          "mean_per_class", values=values)
    assert res["sizes"] == {"train": 50, "val": 30, "trainval": 80, "test": 60}
    assert res["val_split"] == "predefined" and res["value"] == pytest.approx(100.0)


def test_evaluate_splits_multilabel() -> None:
    def split(n: int, seed: int) -> FeatureSplit:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 4, generator=g)
        y = torch.stack([x[:, 0] > 0, x[:, 1] > 0], dim=1).long()
        return FeatureSplit(x, y, torch.zeros(n, 2, dtype=torch.bool))

    res = evaluate_splits({"train": split(120, 0), "val": split(60, 1), "test": split(80, 2)}, "voc11_map",
                          values=[1e-3, 1e3])
    assert res["best_wd"] == 1e-3 and res["value"] == pytest.approx(100.0)


def test_missing_torchvision_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="download"):
        sources.open_torchvision_split("dtd", "train", tmp_path, download=False, size=224, seed=0)


def test_transfer_end_to_end_with_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = random_backbone_checkpoint(tmp_path / "ckpt.pt")
    values = [1e-2, 1e2]
    res = transfer(path, "synthetic", image_size=32, values=values, batch_size=256, max_iter=30)
    assert res["metric"] == "top1" and res["dataset"] == "synthetic"
    # Random-init features of the 10-class synthetic set: far above chance (10%), not perfect.
    assert 30.0 < res["value"] <= 100.0
    assert res["sizes"]["test"] == 256 and res["sizes"]["trainval"] == 512
    assert res["checkpoint_sha256"] == file_sha256(path)
    cached = sorted(p.name for p in (tmp_path / "features").iterdir())
    sha = file_sha256(path)[:16]
    assert cached == [f"{sha}-synthetic-test-32px.pt", f"{sha}-synthetic-train-32px.pt"]
    obj = torch.load(tmp_path / "features" / cached[0], weights_only=True)
    assert obj["features"].shape == (256, 64)  # ResNet-18 at width 0.125: 512 × 0.125 features

    def no_embedding(*args: object, **kwargs: object) -> None:
        raise AssertionError("features should come from the cache")

    monkeypatch.setattr(tr, "embed", no_embedding)
    again = transfer_evaluate(path, "synthetic", image_size=32, values=values, max_iter=30, device="cpu",
                              command="gsg transfer ckpt.pt synthetic")
    assert again["value"] == res["value"] and again["best_wd"] == res["best_wd"]
    rec = read_result(again["result_file"])
    assert Path(again["result_file"]).name == "ckpt.transfer.synthetic.json"
    assert rec["value"] == res["value"] and rec["metric"] == "top1"
    assert rec["extra"]["best_wd"] == res["best_wd"] and rec["command"] == "gsg transfer ckpt.pt synthetic"
