"""SimCLR and MoCo v2 through the one Trainer: what each method does per step, exact resume, the CLI."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gsg.checkpoint import load_checkpoint
from gsg.cli import main
from gsg.config import Config
from gsg.errors import ConfigError
from gsg.train import loop as loop_mod
from gsg.train.logging import read_metrics
from gsg.train.loop import Trainer, pretrain

pytestmark = pytest.mark.usefixtures("one_thread")
B = 16  # the tiny config's batch


@pytest.mark.parametrize("method", ["simsiam", "byol", "simclr", "moco"])
def test_every_method_trains_with_its_own_targets_and_loss(make_config, method: str) -> None:
    ssl: dict[str, Any] = {"method": method, **({"queue_size": 48} if method == "moco" else {})}
    cfg = make_config(ssl=ssl, run={"limit_batches": 2})
    trainer = Trainer(cfg)
    model = trainer.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = trainer.fit()
    after = model.state_dict()
    assert result["steps"] == 2 and math.isfinite(result["loss"])
    assert not torch.equal(before["backbone.conv1.weight"], after["backbone.conv1.weight"])
    steps = read_metrics(Path(cfg.run.out) / "metrics.jsonl", "step")
    assert [s["step"] for s in steps] == [1, 2]
    assert (model.target is not None) == (method in ("byol", "moco"))
    assert (model.queue is not None) == (method == "moco")
    if method in ("simsiam", "byol"):
        assert any(k.startswith("ge_") for k in result)  # the decomposition (run.log_decomposition)
        assert -1.0 <= result["loss"] <= 1.0 and isinstance(model.predictor, nn.Sequential)
        assert sum(result[f"case_{c}"] for c in ("11_21", "11_22", "12_21", "12_22")) == pytest.approx(1.0)
        return
    # contrastive: no predictor, no stop-gradient policy, no GSG case statistics
    assert isinstance(model.predictor, nn.Identity) and not any(k.startswith("predictor.") for k in after)
    assert not any(k.startswith("case_") or k == "gsg_margin_mean" for k in result)
    # Zhang et al.'s decomposition of InfoNCE (gsg.analysis.decomposition_contrastive): no selection gradient
    assert cfg.run.log_decomposition and result["ge_norm"] > 0 and not any(k.startswith("sel_") for k in result)
    if method == "simclr":
        # an untrained network's features say nothing about which view is whose: NT-Xent ≈ log(2B - 1)
        assert steps[0]["loss"] == pytest.approx(math.log(2 * B - 1), abs=0.15)
        assert not any(k.startswith("target.") or k.startswith("queue.") for k in after)
    else:
        assert int(after["queue.ptr"]) == 2 * B  # B keys a step
        assert after["queue.keys"].shape == (48, cfg.model.proj_dim)
        assert not torch.equal(before["target.backbone.conv1.weight"], after["target.backbone.conv1.weight"])
        assert steps[0]["ema_momentum"] == 0.999  # MoCo v2's constant momentum, not BYOL's schedule


def _fixed_views(trainer: Trainer) -> torch.Tensor:
    """One batch and two fixed augmentations of it, so that only the training changes the loss."""
    images = next(iter(trainer.loader.iterate(0)))[0]
    g = torch.Generator().manual_seed(0)
    fixed = [trainer.augment(images, g), trainer.augment(images, g)]
    calls = {"n": 0}

    def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        calls["n"] += 1
        return fixed[(calls["n"] - 1) % 2]

    trainer.augment = augment  # type: ignore[assignment]
    return images


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_training_on_fixed_views_lowers_the_contrastive_loss(make_config, method: str) -> None:
    cfg = make_config(ssl={"method": method, **({"queue_size": 48} if method == "moco" else {})})
    trainer = Trainer(cfg)
    images = _fixed_views(trainer)
    trainer.model.train()
    losses = [float(trainer.train_step(images)[0].detach()) for _ in range(12)]
    assert losses[0] > 3.0 and losses[-1] < 0.65 * losses[0], losses


def test_moco_queue_holds_the_key_encoders_keys_and_wraps(make_config) -> None:
    k = 48
    trainer = Trainer(make_config(ssl={"method": "moco", "queue_size": k}))
    model = trainer.model
    outs: list[Any] = []
    forward = trainer.forward

    def capture(views: list[torch.Tensor]) -> Any:
        outs.append(forward(views))
        return outs[-1]

    trainer.forward = capture  # type: ignore[assignment]
    images = next(iter(trainer.loader.iterate(0)))[0]
    model.train()
    init = model.queue.keys.clone()
    target0 = model.target["backbone"].conv1.weight.detach().clone()
    _, _, m = trainer.train_step(images)
    # the key encoder moved by MoCo's momentum update towards the updated query encoder
    assert m == 0.999
    torch.testing.assert_close(model.target["backbone"].conv1.weight,
                               0.999 * target0 + 0.001 * model.backbone.conv1.weight.detach())
    # the queue's first B slots hold the key encoder's (view 2) keys of this batch, normalised; the rest is as before
    assert int(model.queue.ptr) == B
    torch.testing.assert_close(model.queue.keys[:B], F.normalize(outs[0].t[1].float(), dim=1))
    torch.testing.assert_close(model.queue.keys[B:], init[B:])
    ptrs = []
    for _ in range(3):
        trainer.train_step(images)
        ptrs.append(int(model.queue.ptr))
    assert ptrs == [32, 0, 16]  # 48 slots: the fourth batch wraps to the start
    torch.testing.assert_close(model.queue.keys[:B], F.normalize(outs[3].t[1].float(), dim=1))
    torch.testing.assert_close(model.queue.keys[2 * B:], F.normalize(outs[2].t[1].float(), dim=1))


def test_symmetric_moco_enqueues_both_views(make_config) -> None:
    trainer = Trainer(make_config(ssl={"method": "moco", "queue_size": 64, "moco_symmetric": True}))
    images = next(iter(trainer.loader.iterate(0)))[0]
    trainer.model.train()
    trainer.train_step(images)
    assert int(trainer.model.queue.ptr) == 2 * B


def test_contrastive_run_checks_at_start(make_config, caplog: pytest.LogCaptureFixture) -> None:
    # the default queue at 16 px (4096, MoCo's CIFAR demo) does not divide by a batch of 12
    with pytest.raises(ConfigError, match=r"queue_size = 4096 \(the default at this image size\).*batch 12"):
        Trainer(make_config(ssl={"method": "moco"}, optim={"batch_size": 12}))
    # a queue as large as the data set holds older keys of the query's own image: said, not refused
    with caplog.at_level(logging.WARNING, logger="gsg.ssl"):
        Trainer(make_config(ssl={"method": "moco", "queue_size": 64}))
    assert "not smaller than the data set (64 images)" in caplog.text
    # a config built in code gets the same rules as one that was loaded
    cfg = make_config()
    cfg = dataclasses.replace(cfg, ssl=dataclasses.replace(cfg.ssl, method="simclr"))
    assert isinstance(cfg, Config) and cfg.ssl.stop_gradient == "guided"
    with pytest.raises(ConfigError, match=r"does not apply to ssl\.method = 'simclr'"):
        Trainer(cfg)


def _moco(tmp: Path, epochs: int = 3) -> Config:
    from conftest import tiny_config

    return tiny_config(tmp, ssl={"method": "moco", "queue_size": 80},
                       optim={"epochs": epochs, "batch_size": B, "lr": 0.05, "schedule": "cosine"})


def _assert_same_state(a_dir: Path, b_dir: Path) -> None:
    a, b = (load_checkpoint(d / "checkpoint.pt")["model"] for d in (a_dir, b_dir))
    assert a.keys() == b.keys() and {"queue.keys", "queue.ptr"} <= set(a)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_moco_resume_equals_the_uninterrupted_run_queue_included(tmp_path: Path) -> None:
    full = _moco(tmp_path / "full")
    pretrain(full)
    part = _moco(tmp_path / "part")
    trainer = Trainer(part)
    original = trainer.train_epoch
    done = {"n": 0}

    def stop_after_one(signals: Any) -> Any:
        if done["n"] == 1:
            raise KeyboardInterrupt
        done["n"] += 1
        return original(signals)

    trainer.train_epoch = stop_after_one  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    saved = load_checkpoint(Path(part.run.out) / "checkpoint.pt")
    assert saved["train_state"]["epoch"] == 1 and int(saved["model"]["queue.ptr"]) == 4 * B  # mid-ring
    pretrain(part, resume=True)
    _assert_same_state(Path(full.run.out), Path(part.run.out))
    assert int(load_checkpoint(Path(full.run.out) / "checkpoint.pt")["model"]["queue.ptr"]) == (12 * B) % 80
    losses = [[r["loss"] for r in read_metrics(Path(c.run.out) / "metrics.jsonl", "epoch")] for c in (full, part)]
    assert losses[0] == losses[1]


def test_moco_mid_epoch_signal_resumes_exactly(tmp_path: Path) -> None:
    full = _moco(tmp_path / "full", epochs=2)
    pretrain(full)
    part = _moco(tmp_path / "part", epochs=2)
    trainer = Trainer(part)
    original = trainer.views_and_loss
    count = {"n": 0}

    def signal_on_third_step(images: torch.Tensor) -> Any:
        count["n"] += 1
        if count["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # handled: the loop checkpoints after this step
        return original(images)

    trainer.views_and_loss = signal_on_third_step  # type: ignore[method-assign]
    with pytest.raises(loop_mod.Interrupted):
        trainer.fit()
    saved = load_checkpoint(Path(part.run.out) / "checkpoint.pt")
    assert saved["train_state"]["batch_in_epoch"] == 3 and int(saved["model"]["queue.ptr"]) == 3 * B
    pretrain(part, resume=True)
    _assert_same_state(Path(full.run.out), Path(part.run.out))


def test_cli_pretrains_simclr_and_moco_and_refuses_a_stop_gradient(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    tiny = ["--dataset", "synthetic", "--subset", "64", "--epochs", "1", "--batch-size", "16", "--width", "0.125",
            "--set", "data.image_size=16", "--set", "model.proj_dim=32", "--set", "run.knn_k=5",
            "--set", "run.progress=false", "--set", "run.knn_train_subset=none", "--set", "run.tensorboard=false"]
    out = tmp_path / "simclr"
    assert main(["pretrain", "--method", "simclr", *tiny, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "checkpoint:" in printed and "kNN accuracy: knn_k5 = " in printed
    saved = json.loads((out / "config.json").read_text())
    assert saved["ssl"]["stop_gradient"] == saved["model"]["predictor"] == "none"
    # the checkpoint evaluates like any other; the full model (MoCo: with its queue) loads for diagnose
    assert main(["knn", str(out / "checkpoint.pt"), "--k", "5"]) == 0
    out = tmp_path / "moco"
    assert main(["pretrain", "--method", "moco", *tiny, "--set", "ssl.queue_size=32", "--out", str(out)]) == 0
    from gsg.eval.diagnose import load_model

    model, _ = load_model(out / "checkpoint.pt", torch.device("cpu"))
    assert model.queue is not None and int(model.queue.ptr) == (4 * B) % 32
    capsys.readouterr()
    assert main(["pretrain", "--method", "simclr", "--stop-gradient", "guided", *tiny, "--out", str(out)]) == 2
    assert "ssl.stop_gradient = 'guided' does not apply" in capsys.readouterr().err
    assert main(["pretrain", "--method", "moco", *tiny, "--set", "ssl.queue_size=40", "--out", str(out)]) == 2
    assert "multiple of the global batch 16" in capsys.readouterr().err
