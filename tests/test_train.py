"""The training loop: every method × policy × predictor × views, exact resume, non-finite losses."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from conftest import nan_loss_at
from gsg.checkpoint import load_checkpoint
from gsg.errors import CheckpointError, TrainingDiverged
from gsg.train import loop as loop_mod
from gsg.train.logging import read_metrics
from gsg.train.loop import Trainer, pretrain

COMBOS = list(itertools.product(["simsiam", "byol"], ["symmetric", "guided", "random", "reverse"],
                                ["mlp", "linear", "none", "directpred", "directcopy"], ["reuse", "fresh"]))


@pytest.mark.parametrize("method,policy,pred,views", COMBOS)
def test_every_combination_trains(make_config, method: str, policy: str, pred: str, views: str) -> None:
    cfg = make_config(ssl={"method": method, "stop_gradient": policy, "views": views},
                      model={"predictor": pred}, run={"limit_batches": 2})
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    result = trainer.fit()
    after = trainer.model.state_dict()
    assert result["steps"] == 2 and torch.isfinite(torch.tensor(result["loss"]))
    assert -1.0 <= result["loss"] <= 1.0  # a mean of ½D + ½D with D ∈ [-1, 1]
    assert not torch.equal(before["backbone.conv1.weight"], after["backbone.conv1.weight"])
    if method == "byol":
        # the target moved towards the online network but is not equal to it
        assert not torch.equal(before["target.backbone.conv1.weight"], after["target.backbone.conv1.weight"])
        assert not torch.equal(after["target.backbone.conv1.weight"], after["backbone.conv1.weight"])
    if pred == "linear":
        assert 0.0 < result["pred_alignment"] <= 1.0 + 1e-6
    if pred in ("directpred", "directcopy"):
        assert bool(after["predictor.corr_initialized"])
        assert 0.0 < result["pred_alignment"] <= 1.0 + 1e-6
        assert not torch.equal(after["predictor.weight"], torch.eye(after["predictor.weight"].shape[0]))
    assert result["z_alignment"] >= 0 and result["z_uniformity"] <= 0 and result["z_rankme"] >= 1
    if policy == "symmetric":
        assert "case_11_21" not in result and "gsg_margin_mean" not in result
    else:
        shares = [result[f"case_{c}"] for c in ("11_21", "11_22", "12_21", "12_22")]
        assert result["gsg_margin_mean"] >= 0
        assert sum(shares) == pytest.approx(1.0)
    ckpt = load_checkpoint(Path(cfg.run.out) / "checkpoint.pt")
    assert ckpt["train_state"]["step"] == 2


def test_compile_compiles_the_model_and_the_augmentation_not_the_random_draw(make_config, monkeypatch) -> None:
    compiled: list[object] = []

    def fake_compile(fn):  # type: ignore[no-untyped-def]
        compiled.append(fn)
        return fn

    monkeypatch.setattr(loop_mod.torch, "compile", fake_compile)
    Trainer(make_config(run={"compile": False}))
    assert compiled == []
    trainer = Trainer(make_config(run={"compile": True}))
    assert compiled[0] is trainer.net
    assert getattr(compiled[1], "__func__", None) is type(trainer.augment).apply  # the bound apply
    assert len(compiled) == 2  # sample() is not compiled


def test_fresh_views_cost_four_encoder_passes_and_reuse_two(make_config, monkeypatch) -> None:
    calls: list[int] = []
    for views, expected in (("reuse", 2), ("fresh", 4)):
        calls.clear()
        trainer = Trainer(make_config(ssl={"views": views}, run={"limit_batches": 1}))
        original = trainer.model.project

        def counting(x, original=original):  # type: ignore[no-untyped-def]
            calls.append(x.shape[0])
            return original(x)

        monkeypatch.setattr(trainer.model, "project", counting)
        trainer.fit()
        assert len(calls) == expected and set(calls) == {16}


def _final_weights(cfg) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    return load_checkpoint(Path(cfg.run.out) / "checkpoint.pt")["model"]


@pytest.mark.parametrize("method,pred", [("simsiam", "mlp"), ("byol", "directpred")])
def test_resume_equals_uninterrupted_run(tmp_path: Path, method: str, pred: str) -> None:
    from conftest import tiny_config

    common = {"ssl": {"method": method, "stop_gradient": "random"}, "model": {"predictor": pred},
              "optim": {"epochs": 3, "batch_size": 16, "lr": 0.05, "schedule": "cosine"}}
    full = tiny_config(tmp_path / "full", **common)
    pretrain(full)
    part = tiny_config(tmp_path / "part", **{**common, "optim": {**common["optim"], "epochs": 3}})
    # Stop after the first epoch by running a 1-epoch job... with the same total schedule: simulate an
    # interruption by raising after epoch 1 has been checkpointed.
    trainer = Trainer(part)
    original = trainer.train_epoch
    done = {"n": 0}

    def stop_after_one(signals):  # type: ignore[no-untyped-def]
        if done["n"] == 1:
            raise KeyboardInterrupt
        done["n"] += 1
        return original(signals)

    trainer.train_epoch = stop_after_one  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert load_checkpoint(Path(part.run.out) / "checkpoint.pt")["train_state"]["epoch"] == 1
    pretrain(part, resume=True)
    a, b = _final_weights(full), _final_weights(part)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    hist_full = [r["loss"] for r in read_metrics(Path(full.run.out) / "metrics.jsonl", "epoch")]
    hist_part = [r["loss"] for r in read_metrics(Path(part.run.out) / "metrics.jsonl", "epoch")]
    assert hist_full == hist_part


def test_mid_epoch_signal_checkpoint_resumes_exactly(tmp_path: Path) -> None:
    from conftest import tiny_config

    common = {"optim": {"epochs": 2, "batch_size": 16, "lr": 0.05}}
    full = tiny_config(tmp_path / "full", **common)
    pretrain(full)
    part = tiny_config(tmp_path / "part", **common)
    trainer = Trainer(part)
    original = trainer.views_and_loss
    count = {"n": 0}

    def signal_on_third_step(images):  # type: ignore[no-untyped-def]
        count["n"] += 1
        if count["n"] == 3:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGTERM)  # handled: the loop checkpoints after this step
        return original(images)

    trainer.views_and_loss = signal_on_third_step  # type: ignore[method-assign]
    with pytest.raises(loop_mod.Interrupted, match="--resume"):
        trainer.fit()
    ts = load_checkpoint(Path(part.run.out) / "checkpoint.pt")["train_state"]
    assert (ts["epoch"], ts["batch_in_epoch"], ts["step"]) == (0, 3, 3)
    assert ts["partial_per_rank"][0]["n"] == 3  # the interrupted epoch's running sums travel with the checkpoint
    pretrain(part, resume=True)
    a, b = _final_weights(full), _final_weights(part)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the interrupted epoch's means (loss, z_std, GSG case shares) cover all of its batches, as without the stop
    ha, hb = (read_metrics(Path(c.run.out) / "metrics.jsonl", "epoch") for c in (full, part))
    assert len(ha) == len(hb) == 2 and "case_11_21" in ha[0]
    for x, y in zip(ha, hb, strict=True):
        clock = ("epoch_time_s", "time")
        assert {k: v for k, v in x.items() if k not in clock} == {k: v for k, v in y.items() if k not in clock}
    # an epoch-end checkpoint carries no partial sums
    assert load_checkpoint(Path(part.run.out) / "checkpoint.pt")["train_state"]["partial_per_rank"] is None


def test_non_finite_loss_stops_and_keeps_last_checkpoint(make_config, monkeypatch) -> None:
    cfg = make_config(optim={"epochs": 3, "batch_size": 16, "lr": 0.05})
    trainer = Trainer(cfg)
    nan_loss_at(trainer, lambda n: n >= 6)
    with pytest.raises(TrainingDiverged, match=r"step 6 .*checkpoint.*epoch 1\) is kept"):
        trainer.fit()
    ckpt = load_checkpoint(Path(cfg.run.out) / "checkpoint.pt")
    assert ckpt["train_state"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_non_finite_rollback_lowers_lr_and_finishes(make_config) -> None:
    cfg = make_config(optim={"epochs": 2, "batch_size": 16, "lr": 0.05}, run={"on_nonfinite": "rollback"})
    trainer = Trainer(cfg)
    nan_loss_at(trainer, lambda n: n == 6)
    result = trainer.fit()
    assert result["epochs"] == 2 and trainer.state.lr_scale == 0.5


def test_resume_refuses_a_different_config(tmp_path: Path) -> None:
    from conftest import tiny_config

    pretrain(tiny_config(tmp_path / "r"))
    other = tiny_config(tmp_path / "r", model={"predictor": "linear"})
    with pytest.raises(CheckpointError, match=r"model\.predictor"):
        pretrain(other, resume=True)


def test_online_knn_is_logged_each_epoch(make_config) -> None:
    cfg = make_config(optim={"epochs": 2, "batch_size": 16, "lr": 0.05}, run={"knn_every": 1, "knn_k": 5})
    result = pretrain(cfg)
    epochs = read_metrics(Path(cfg.run.out) / "metrics.jsonl", "epoch")
    assert len(epochs) == 2
    for rec in epochs:
        assert 0.0 <= rec["knn_k5"] <= 100.0 and 0.0 <= rec["knn_k1"] <= 100.0
        assert rec["z_std"] > 0
    assert result["knn_k1"] == epochs[-1]["knn_k1"]
