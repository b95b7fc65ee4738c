"""A 2x-epochs run continues its finished 1x run (gsg.reproduce.prefix) and ends with the weights it would have
trained from scratch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from gsg.checkpoint import load_checkpoint
from gsg.config import load_config
from gsg.reproduce import prefix, runner
from gsg.reproduce.experiments import get_experiment
from gsg.reproduce.runner import plan_runs
from gsg.train.loop import pretrain

pytestmark = pytest.mark.usefixtures("one_thread")

TINY: dict[str, dict[str, Any]] = {
    "data": {"dataset": "synthetic", "image_size": 16, "subset": 64},
    "model": {"width": 0.125, "proj_dim": 32, "pred_hidden": 16},
    "optim": {"epochs": 2, "batch_size": 16},
    "run": {"device": "cpu", "knn_every": 1, "knn_train_subset": 64, "knn_test_subset": 32,
            "tensorboard": False, "checkpoint_every": 1, "log_every": 1},
}


def _crops_plans(tmp: Path, names: tuple[str, ...], seeds: int = 1) -> list[runner.PlannedRun]:
    plans = plan_runs(get_experiment("crops", "cpu"), seeds, tmp, base_overrides=TINY)
    return [p for p in plans if p.run.name in names]


def test_the_2x_runs_continue_their_1x_runs_and_nothing_else_does(tmp_path: Path) -> None:
    plans = plan_runs(get_experiment("crops", "cpu"), 3, tmp_path, base_overrides=TINY)
    sources = {k: v.key for k, v in prefix.prefix_sources(plans).items()}
    assert sources == {**{f"simsiam_sym2x2-s{s}": f"simsiam-s{s}" for s in range(3)},
                       "simsiam_gsg2x2-s0": "simsiam_gsg2-s0"}
    # the lr schedule or BYOL's EMA momentum reading the total length: no prefix
    cosine = plan_runs(get_experiment("crops", "cpu"), 1, tmp_path,
                       base_overrides={**TINY, "optim": {**TINY["optim"], "schedule": "cosine"}})
    assert prefix.prefix_sources(cosine) == {}
    byol = load_config(overrides={"ssl": {"method": "byol", "ema_schedule": "cosine"},
                                  "optim": {"schedule": "constant"}})
    assert prefix.length_dependence(byol) == ["ssl.ema_schedule = 'cosine' (the EMA momentum depends on the total)"]
    assert prefix.length_dependence(load_config(overrides={"ssl": {"method": "byol", "ema_schedule": "constant"},
                                                           "optim": {"schedule": "constant"}})) == []


def test_a_continued_run_ends_with_the_weights_of_one_trained_straight_through(tmp_path: Path) -> None:
    short, long = _crops_plans(tmp_path, ("simsiam_sym2", "simsiam_sym2x2"))
    assert (short.config.optim.epochs, long.config.optim.epochs) == (2, 4)
    # the 2x run waits for the 1x run (put first in the list: it is not taken before its source has finished)
    records = runner.run_all(get_experiment("crops", "cpu"), [long, short], linear=None, tsne=None, out=tmp_path)
    assert [r["key"] for r in records] == [long.key, short.key]
    rec = records[0]
    assert rec["how"] == f"continued {short.key} from epoch 2" and rec["continued_from"]["source"] == short.key
    saved = json.loads((long.dir / prefix.RECORD_NAME).read_text())
    assert saved["epoch"] == 2 and saved["by_hand"][1].startswith("cp ") and saved["by_hand"][2] == long.command
    assert [h["epoch"] for h in rec["history"]] == [1, 2, 3, 4]
    # its pretraining time is its own two epochs, not the two that the run it continues already counts
    clocks = [h["epoch_time_s"] for h in rec["history"]]
    assert runner.train_seconds(rec) == pytest.approx(clocks[2] + clocks[3])
    assert runner.train_seconds(records[1]) == pytest.approx(clocks[0] + clocks[1])
    steps = [json.loads(line)["step"] for line in (long.dir / "metrics.jsonl").read_text().splitlines()
             if json.loads(line).get("kind") == "step"]
    assert steps == list(range(1, 4 * 4 + 1))  # 64 images / batch 16: the copied steps, then the new ones

    straight = long.config.to_dict()
    straight["run"]["out"] = str(tmp_path / "straight")
    res = pretrain(load_config(overrides=straight))
    ref = load_checkpoint(Path(res["checkpoint"]))
    got = load_checkpoint(long.dir / "checkpoint.pt")
    differ = [k for k in ref["model"] if not torch.equal(ref["model"][k], got["model"][k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"
    assert [h["loss"] for h in ref["metrics"]["history"]] == [h["loss"] for h in rec["history"]]


def test_a_2x_run_with_a_checkpoint_of_its_own_is_not_overwritten(tmp_path: Path) -> None:
    short, long = _crops_plans(tmp_path, ("simsiam_sym2", "simsiam_sym2x2"))
    pretrain(short.config)
    assert prefix.finished_epoch(short) == 2
    long.dir.mkdir(parents=True)
    (long.dir / "checkpoint.pt").write_bytes(b"its own")
    assert prefix.continue_from(long, short) is None
    assert (long.dir / "checkpoint.pt").read_bytes() == b"its own" and not (long.dir / prefix.RECORD_NAME).exists()
