"""The online linear probe: it learns, it never changes the pretraining, it resumes exactly, and monitor data."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from gsg.checkpoint import load_checkpoint
from gsg.data.datasets import synthetic_images
from gsg.errors import CheckpointError, ConfigError, DataError
from gsg.train import loop as loop_mod
from gsg.train.logging import read_metrics
from gsg.train.loop import Trainer, pretrain
from gsg.train.probe import FeatureTap, OnlineProbe

pytestmark = pytest.mark.usefixtures("one_thread")


def write_folder(root: Path, n: int, *, classes: int = 0, size: int = 16, seed: int = 1) -> Path:
    """Synthetic images as PNG files: flat (unlabelled) or in one subfolder per class."""
    images, labels = synthetic_images(n, channels=3, image_size=size, sample_seed=seed, num_classes=max(classes, 2))
    for i in range(n):
        folder = root / f"class_{int(labels[i])}" if classes else root
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
    return root


def separable(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    return torch.randn(n, 4, generator=g) + 3 * (2 * y[:, None] - 1).float(), y


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_probe_learns_a_separable_problem(optimizer: str) -> None:
    x, y = separable()
    probe = OnlineProbe(4, 2, optimizer=optimizer)
    assert probe.lr == {"sgd": 0.1, "adam": 1e-3}[optimizer]
    probe.train_batch(x, y)
    first = probe.epoch_metrics()
    assert first["probe_top1"] == 50.0  # zero weights: every logit ties, argmax is class 0 (half the batch)
    assert first["probe_loss"] == pytest.approx(np.log(2))
    for _ in range(30):
        probe.train_batch(x, y)
    assert probe.epoch_metrics()["probe_top1"] > 90 and probe.evaluate(x, y) == 100.0


def test_unlabelled_rows_are_not_scored_and_give_no_gradient() -> None:
    x, y = separable(8)
    probe = OnlineProbe(4, 2)
    probe.train_batch(x, torch.full((8,), -1))
    assert probe.epoch_metrics() == {}  # nothing scored
    assert torch.count_nonzero(probe.head.linear.weight) == 0  # and no step taken on the classifier
    probe.train_batch(x, torch.where(torch.arange(8) < 4, y, -1))
    assert probe.head.seen == 4  # the counts restarted at the last epoch_metrics; 4 labelled rows since
    assert probe.epoch_metrics()["probe_top1"] == pytest.approx(100 * float((y[:4] == 0).float().mean()))


def test_probe_state_round_trip_continues_exactly() -> None:
    x, y = separable()
    a = OnlineProbe(4, 2, optimizer="adam")
    for _ in range(3):
        a.train_batch(x, y)
    b = OnlineProbe(4, 2, optimizer="adam")
    b.load_state_dict(a.state_dict())
    for p in (a, b):
        p.train_batch(x, y)
    for (k, va), vb in zip(a.head.state_dict().items(), b.head.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    with pytest.raises(CheckpointError, match="4 features and 2 classes, this run's 4 and 3"):
        OnlineProbe(4, 3).load_state_dict(a.state_dict())


def test_feature_tap_records_only_while_recording() -> None:
    net = torch.nn.Linear(3, 2)
    tap = FeatureTap(net)
    net(torch.zeros(1, 3))
    with tap.recording() as feats:
        out = net(torch.ones(2, 3))
    net(torch.zeros(1, 3))
    assert len(feats) == 1 and torch.equal(feats[0], out.detach()) and not feats[0].requires_grad


def _weights(cfg: Any) -> dict[str, torch.Tensor]:
    return load_checkpoint(Path(cfg.run.out) / "checkpoint.pt")["model"]


COMMON = {"optim": {"epochs": 2, "batch_size": 16, "lr": 0.05}, "run": {"knn_every": 1, "knn_k": 5}}


def test_probe_does_not_change_the_pretraining(tmp_path: Path) -> None:
    from conftest import tiny_config

    off = tiny_config(tmp_path / "off", optim=COMMON["optim"], run={**COMMON["run"], "online_probe": False})
    on = tiny_config(tmp_path / "on", optim=COMMON["optim"], run=COMMON["run"])
    pretrain(off)
    result = pretrain(on)
    a, b = _weights(off), _weights(on)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    hist_off = read_metrics(Path(off.run.out) / "metrics.jsonl", "epoch")
    hist_on = read_metrics(Path(on.run.out) / "metrics.jsonl", "epoch")
    assert [h["loss"] for h in hist_off] == [h["loss"] for h in hist_on]
    assert [h["knn_k5"] for h in hist_off] == [h["knn_k5"] for h in hist_on]
    assert "probe_top1" not in hist_off[0]
    for h in hist_on:  # logged every epoch: train accuracy on the augmented views and on the clean test set
        assert 0 <= h["probe_top1"] <= 100 and 0 <= h["probe_test_top1"] <= 100 and h["probe_loss"] > 0
    assert result["probe_top1"] == hist_on[-1]["probe_top1"]
    state = load_checkpoint(Path(on.run.out) / "checkpoint.pt")["train_state"]["probe"]
    assert state["num_classes"] == 10 and state["dim"] == 64  # width-1/8 ResNet-18: 512 / 8 features
    assert torch.count_nonzero(state["head"]["linear.weight"]) > 0


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_interrupted_run_with_the_probe_resumes_bit_exactly(tmp_path: Path, optimizer: str) -> None:
    from conftest import tiny_config

    run = {**COMMON["run"], "probe_optimizer": optimizer}
    full = tiny_config(tmp_path / "full", optim=COMMON["optim"], run=run)
    pretrain(full)
    part = tiny_config(tmp_path / "part", optim=COMMON["optim"], run=run)
    trainer = Trainer(part)
    original, count = trainer.views_and_loss, {"n": 0}

    def signal_on_sixth_step(images):  # type: ignore[no-untyped-def]
        count["n"] += 1
        if count["n"] == 6:  # mid-epoch 2: the probe's running counts of the epoch are in the checkpoint
            os.kill(os.getpid(), signal.SIGTERM)
        return original(images)

    trainer.views_and_loss = signal_on_sixth_step  # type: ignore[method-assign]
    with pytest.raises(loop_mod.Interrupted):
        trainer.fit()
    saved = load_checkpoint(Path(part.run.out) / "checkpoint.pt")["train_state"]
    assert (saved["epoch"], saved["batch_in_epoch"]) == (1, 2) and int(saved["probe"]["head"]["seen"]) == 2 * 2 * 16
    pretrain(part, resume=True)
    a, b = load_checkpoint(Path(full.run.out) / "checkpoint.pt"), load_checkpoint(Path(part.run.out) / "checkpoint.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    pa, pb = a["train_state"]["probe"], b["train_state"]["probe"]
    for k in pa["head"]:
        assert torch.equal(pa["head"][k], pb["head"][k]), k
    # the probe's metrics too, also for the interrupted epoch (its running counts were checkpointed), and the
    # loop's own epoch means (its running sums were checkpointed too): every metric but the clock's
    for x, y in zip(a["metrics"]["history"], b["metrics"]["history"], strict=True):
        keys = [k for k in x if k.startswith(("probe_", "knn_"))]
        assert len(keys) == 5 and [x[k] for k in keys] == [y[k] for k in keys]
        clock = ("epoch_time_s", "time")
        assert {k: v for k, v in x.items() if k not in clock} == {k: v for k, v in y.items() if k not in clock}


def _folder_config(tmp_path: Path, **run: Any) -> Any:
    from conftest import tiny_config

    write_folder(tmp_path / "unlabelled", 48)
    return tiny_config(tmp_path / "run", data={"dataset": "imagefolder", "data_dir": str(tmp_path / "unlabelled"),
                                               "image_size": 16, "subset": None, "workers": 0},
                       optim={"epochs": 2, "batch_size": 16, "lr": 0.05},
                       run={"knn_every": 1, "knn_k": 5, "knn_test_subset": None, **run})


def test_unlabelled_folder_with_monitor_data_logs_knn_and_the_probe(tmp_path: Path) -> None:
    monitor = tmp_path / "monitor"
    write_folder(monitor / "train", 40, classes=4, seed=2)
    write_folder(monitor / "val", 20, classes=4, seed=3)  # val/ when there is no test/
    cfg = _folder_config(tmp_path, monitor_data_dir=str(monitor))
    trainer = Trainer(cfg)
    assert trainer.probe_mode == "monitor" and trainer.tap is None
    result = trainer.fit()
    hist = read_metrics(Path(cfg.run.out) / "metrics.jsonl", "epoch")
    for h in hist:
        assert 0 <= h["knn_k5"] <= 100 and 0 <= h["probe_test_top1"] <= 100
        assert 0 <= h["probe_top1"] <= 100  # one pass over the 40 clean monitor train images
    ckpt = load_checkpoint(Path(cfg.run.out) / "checkpoint.pt")
    assert ckpt["train_state"]["probe"]["num_classes"] == 4
    assert result["knn_k5"] == hist[-1]["knn_k5"]
    # the same run without the probe trains the same weights
    off = _folder_config(tmp_path / "off", monitor_data_dir=str(monitor), online_probe=False)
    pretrain(off)
    for k, v in _weights(off).items():
        assert torch.equal(v, ckpt["model"][k]), k
    assert [h["knn_k5"] for h in read_metrics(Path(off.run.out) / "metrics.jsonl", "epoch")] == [
        h["knn_k5"] for h in hist]


def test_monitoring_off_says_why_and_how_to_fix(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = _folder_config(tmp_path)
    with caplog.at_level(logging.WARNING):
        result = pretrain(cfg)
    text = caplog.text
    assert "online linear probe off" in text and "has no labels" in text and "run.monitor_data_dir" in text
    assert "online kNN monitor requested" in text and "switched off for this run" in text
    assert "probe_top1" not in result and "knn_k5" not in result
    asked = _folder_config(tmp_path / "b", online_probe=True)
    with pytest.raises(ConfigError, match=r"online_probe = true needs labels.*run.monitor_data_dir"):
        Trainer(asked)


def test_bad_monitor_data_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "m1").mkdir()
    with pytest.raises(DataError, match="no train/ subfolder"):
        Trainer(_folder_config(tmp_path / "a", monitor_data_dir=str(tmp_path / "m1")))
    write_folder(tmp_path / "m2" / "train", 8, classes=2)
    with pytest.raises(DataError, match="neither test/ nor val/"):
        Trainer(_folder_config(tmp_path / "b", monitor_data_dir=str(tmp_path / "m2")))
    write_folder(tmp_path / "m3" / "train", 8)  # flat: unlabelled
    write_folder(tmp_path / "m3" / "test", 8, classes=2)
    with pytest.raises(DataError, match="one subfolder of images per class"):
        Trainer(_folder_config(tmp_path / "c", monitor_data_dir=str(tmp_path / "m3")))
