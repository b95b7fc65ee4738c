"""Raw-pixel and random-init baselines: their numbers against a direct computation on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gsg.cli import main
from gsg.data.datasets import load_dataset
from gsg.errors import ConfigError
from gsg.eval.baselines import Protocol, evaluate_baselines, format_rows, gains, random_backbone

SPEC = {"arch": "resnet18", "width": 0.125, "in_channels": 3, "cifar_stem": True}
TINY_PRETRAIN = ["pretrain", "--dataset", "synthetic", "--subset", "64", "--epochs", "1", "--batch-size", "16",
                 "--device", "cpu", "--set", "data.image_size=16", "--set", "model.width=0.125", "--set",
                 "model.proj_dim=32", "--set", "model.pred_hidden=16", "--set", "run.knn_every=0", "--set",
                 "run.progress=false"]


def _protocol(**kw) -> Protocol:  # type: ignore[no-untyped-def]
    ds = load_dataset("synthetic", "train", image_size=16, subset=200)
    base = {"dataset": "synthetic", "image_size": 16, "mean": ds.mean, "std": ds.std, "backbone": SPEC,
            "train_subset": 200, "test_subset": 100, "k": 20, "temperature": 0.1, "linear": False}
    return Protocol(**{**base, **kw})


def _direct_knn(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                k: int, t: float, classes: int) -> tuple[float, float]:
    """A literal loop: cosine similarity, top-k neighbours, vote weighted by exp(s/T); and 1-NN."""
    a, b = F.normalize(train_x.double(), dim=1), F.normalize(test_x.double(), dim=1)
    hit_k = hit_1 = 0
    for i in range(b.shape[0]):
        sims = a @ b[i]
        top = torch.topk(sims, k).indices
        votes = torch.zeros(classes, dtype=torch.float64)
        for j in top.tolist():
            votes[train_y[j]] += torch.exp(sims[j] / t)
        hit_k += int(votes.argmax() == test_y[i])
        hit_1 += int(train_y[int(sims.argmax())] == test_y[i])
    return 100.0 * hit_k / b.shape[0], 100.0 * hit_1 / b.shape[0]


def _normalised(ds, p: Protocol) -> torch.Tensor:  # type: ignore[no-untyped-def]
    x = ds.get(torch.arange(len(ds))).float() / 255.0
    mean = torch.tensor(p.mean).view(1, -1, 1, 1)
    std = torch.tensor(p.std).view(1, -1, 1, 1)
    return (x - mean) / std


def test_raw_pixel_and_random_init_knn_equal_a_direct_computation(one_thread: None) -> None:
    p = _protocol()
    res = evaluate_baselines(p, seeds=[0, 1], device="cpu")
    train = load_dataset("synthetic", "train", image_size=16, subset=200, seed=0)
    test = load_dataset("synthetic", "test", image_size=16, subset=100, seed=0)
    xtr, xte = _normalised(train, p), _normalised(test, p)
    ytr, yte = train.labels, test.labels
    k200, k1 = _direct_knn(xtr.flatten(1), ytr, xte.flatten(1), yte, 20, 0.1, train.num_classes)
    assert res["raw_pixels"]["knn_k20"] == pytest.approx(k200, abs=1e-6)
    assert res["raw_pixels"]["knn_k1"] == pytest.approx(k1, abs=1e-6)
    per_seed = []
    for seed in (0, 1):
        net = random_backbone(SPEC, seed)
        with torch.no_grad():
            ftr, fte = net(xtr), net(xte)
        per_seed.append(_direct_knn(ftr, ytr, fte, yte, 20, 0.1, train.num_classes))
    assert [r["knn_k20"] for r in res["random_init"]["per_seed"]] == pytest.approx([s[0] for s in per_seed], abs=1e-6)
    mean_k1 = sum(s[1] for s in per_seed) / 2
    assert res["random_init"]["knn_k1"] == pytest.approx(mean_k1, abs=1e-6)
    # different seeds are different networks; the same seed is the same network
    w0, w1 = random_backbone(SPEC, 0).conv1.weight, random_backbone(SPEC, 1).conv1.weight
    assert not torch.equal(w0, w1) and torch.equal(w0, random_backbone(SPEC, 0).conv1.weight)


def test_linear_probe_baseline_and_gains(one_thread: None) -> None:
    p = _protocol(linear=True, linear_epochs=5)
    res = evaluate_baselines(p, seeds=[0], which=["raw_pixels"], device="cpu")
    top1 = res["raw_pixels"]["linear_top1"]
    assert 20.0 < top1 <= 100.0  # 10 synthetic classes: well above chance (10%) on pixels
    learned = {"knn_k20": 90.0, "knn_k1": 80.0}
    g = gains(learned, res)["raw_pixels"]
    assert g["knn_k20"] == pytest.approx(90.0 - res["raw_pixels"]["knn_k20"])
    rows = format_rows(learned, res, ["knn_k20", "knn_k1", "linear_top1"])
    assert rows[2].startswith("| learned | 90.00 | 80.00 | — |")
    assert rows[-1].startswith("| gain over raw pixels |")


def test_bad_requests_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="unknown baseline"):
        evaluate_baselines(_protocol(), which=["pixels"])
    with pytest.raises(ConfigError, match="at least one seed"):
        evaluate_baselines(_protocol(), seeds=[])


def test_cli_prints_learned_beside_baselines(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             one_thread: None) -> None:
    out = tmp_path / "run"
    assert main([*TINY_PRETRAIN, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["baselines", str(out / "checkpoint.pt"), "--train-subset", "100", "--test-subset", "50",
                 "--k", "10", "--seeds", "2", "--no-linear", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "| learned |" in text and "| raw pixels |" in text and "| random-init backbone (2 seeds) |" in text
    assert "gain over random-init backbone" in text
    rec = json.loads((out / "baselines.json").read_text())
    assert set(rec["baselines"]) == {"raw_pixels", "random_init"} and "knn_k10" in rec["learned"]
    assert main(["baselines"]) == 2  # neither a checkpoint nor a dataset


def test_pretrain_can_end_with_its_kNN_beside_the_baselines(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            one_thread: None) -> None:
    out = tmp_path / "run"
    assert main([*TINY_PRETRAIN, "--out", str(out), "--set", "run.final_baselines=true", "--set", "run.knn_k=20"]) == 0
    text = capsys.readouterr().out
    assert "beside the baselines of the same protocol" in text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert {"learned", "raw pixels", "random-init backbone", "gain over raw pixels"} <= set(rows)
    learned = float(rows["learned"].split("|")[2])
    raw = float(rows["raw pixels"].split("|")[2])
    assert float(rows["gain over raw pixels"].split("|")[2]) == pytest.approx(learned - raw, abs=0.011)
