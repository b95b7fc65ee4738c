"""Multi-process decisions under DDP, for real: 2 gloo processes (spawned, CPU) that must take the same decision.

- F1: the online kNN monitor on an image folder with train/ and val/ only (ImageNet's layout) must run on val/,
  and where it cannot run at all (no held-out split) every rank must switch it off: no rank left at a barrier.
- F2: a NaN loss on one rank must roll every rank back at the same step (on_nonfinite = "rollback").
- F6: the stop-signal all-reduce (a host sync under NCCL) runs at log steps only, not every step.
- A stop mid-epoch under DDP: every rank's running epoch sums go into the checkpoint and come back to that rank,
  so the resumed epoch's means (the loss is all-reduced over ranks) equal an uninterrupted run's.
- F9/F11: only rank 0 downloads a missing dataset and lists an image folder; the others reuse its work.
(docs/gpu.md maps the review's findings to these tests.)
"""

from __future__ import annotations

import logging
import os
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from multiproc import free_port, run_ranks

pytestmark = pytest.mark.slow


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _image_folder(root: Path, splits: dict[str, int], size: int = 16) -> Path:
    rng = np.random.default_rng(0)
    for split, per_class in splits.items():
        for c, base in (("a", 60), ("b", 190)):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                px = np.clip(base + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(px).save(d / f"{i}.png")
    return root


def _folder_config(out: Path, data_dir: Path) -> Any:
    from conftest import tiny_config

    return tiny_config(out, data={"dataset": "imagefolder", "data_dir": str(data_dir), "image_size": 16,
                                  "subset": None, "workers": 0},
                       optim={"epochs": 2, "batch_size": 16, "lr": 0.05}, run={"knn_every": 1, "knn_k": 5})


def _knn_ranks(rank: int, with_val: Path, train_only: Path, out: Path, second_port: int) -> dict[str, Any]:
    from gsg.train.loop import pretrain

    records = _Records()
    logging.getLogger("gsg").addHandler(records)
    first = pretrain(_folder_config(out / "with_val", with_val))
    os.environ["MASTER_PORT"] = str(second_port)  # a fresh process group for the second run
    second = pretrain(_folder_config(out / "train_only", train_only))
    return {"first": [sorted(k for k in h if k.startswith("knn_")) for h in first["history"]],
            "first_knn": first.get("knn_k1"), "second_steps": second["steps"],
            "second": [sorted(k for k in h if k.startswith("knn_")) for h in second["history"]],
            "warnings": records.messages}


def test_knn_monitor_under_ddp_uses_val_and_never_hangs(tmp_path: Path) -> None:
    with_val = _image_folder(tmp_path / "imagenet_like", {"train": 16, "val": 4})
    train_only = _image_folder(tmp_path / "train_only", {"train": 16})
    ranks = run_ranks(_knn_ranks, with_val, train_only, tmp_path / "runs", free_port(), timeout=300)
    for r in ranks:  # every rank has the monitor's result each epoch (rank 0 computed it, the others received it)
        assert r["first"] == [["knn_k1", "knn_k5"], ["knn_k1", "knn_k5"]]
        assert 0.0 <= r["first_knn"] <= 100.0
        # No held-out split: switched off on both ranks together, and training completes (2 epochs x 2 steps).
        assert r["second"] == [[], []] and r["second_steps"] == 4
    said = [m for m in ranks[0]["warnings"] if "online kNN monitor requested" in m]
    assert len(said) == 1 and "no 'test/' subfolder" in said[0] and "gsg knn" in said[0]
    assert not [m for m in ranks[1]["warnings"] if "kNN" in m]  # said once, by rank 0


def _nan_ranks(rank: int, out: Path) -> dict[str, Any]:
    from conftest import tiny_config
    from gsg.train.distributed import shutdown
    from gsg.train.loop import Trainer

    fired: list[int] = []
    orig = Trainer.views_and_loss
    stop_checks: list[int] = []
    orig_stop = Trainer._stop_requested

    def poisoned(self: Trainer, images: torch.Tensor) -> Any:
        loss, stats = orig(self, images)
        if self.dist.rank == 1 and self.state.step == 5 and not fired:  # one NaN loss, on rank 1 only
            fired.append(self.state.step)
            loss = loss * float("nan")
        return loss, stats

    def counted_stop(self: Trainer, signals: Any) -> bool:
        stop_checks.append(self.state.step)
        return orig_stop(self, signals)

    Trainer.views_and_loss = poisoned  # type: ignore[method-assign]
    Trainer._stop_requested = counted_stop  # type: ignore[method-assign]
    cfg = tiny_config(out, optim={"epochs": 3, "batch_size": 16, "lr": 0.05},
                      run={"on_nonfinite": "rollback", "log_every": 2})
    trainer = Trainer(cfg)
    try:
        trainer.fit()
    finally:
        shutdown(trainer.dist)
    params = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    return {"rollbacks": trainer.rollbacks, "lr_scale": trainer.state.lr_scale, "step": trainer.state.step,
            "params": params, "fired": fired, "stop_checks": stop_checks}


def test_nan_on_one_rank_rolls_every_rank_back_together(tmp_path: Path) -> None:
    r0, r1 = run_ranks(_nan_ranks, tmp_path / "run", timeout=300)
    assert r1["fired"] == [5] and r0["fired"] == []
    # One rollback each, at the same step (the NaN reached rank 0 through the gradient all-reduce a step later).
    assert r0["rollbacks"] == r1["rollbacks"] == 1 and r0["lr_scale"] == r1["lr_scale"] == 0.5
    assert r0["step"] == r1["step"] == 12  # 3 epochs x 4 steps, after the rolled-back epoch was redone
    assert torch.isfinite(r0["params"]).all() and torch.equal(r0["params"], r1["params"])
    # F6: the stop flag's all-reduce ran at log steps (every 2nd) and epoch ends only, never in between.
    assert r0["stop_checks"] == r1["stop_checks"] and r0["stop_checks"]
    assert all(s % 2 == 0 for s in r0["stop_checks"])


def _stop_resume_ranks(rank: int, out: Path, ports: tuple[int, int]) -> dict[str, Any]:
    from conftest import tiny_config
    from gsg.checkpoint import load_checkpoint
    from gsg.train.distributed import shutdown
    from gsg.train.loop import Interrupted, Trainer, pretrain

    def cfg(name: str) -> Any:
        return tiny_config(out / name, optim={"epochs": 2, "batch_size": 16, "lr": 0.05})

    full = pretrain(cfg("full"))
    os.environ["MASTER_PORT"] = str(ports[0])  # a fresh process group for the interrupted run
    orig_stop = Trainer._stop_requested
    Trainer._stop_requested = lambda self, signals: self.state.step == 2  # type: ignore[method-assign]
    trainer = Trainer(cfg("part"))
    try:
        trainer.fit()
        raise AssertionError("the stop at step 2 did not interrupt the run")
    except Interrupted:
        pass
    finally:
        shutdown(trainer.dist)
    Trainer._stop_requested = orig_stop  # type: ignore[method-assign]
    saved = load_checkpoint(out / "part" / "checkpoint.pt")["train_state"]
    os.environ["MASTER_PORT"] = str(ports[1])
    resumed = pretrain(cfg("part"), resume=True)
    return {"full": full["history"], "resumed": resumed["history"], "batch_in_epoch": saved["batch_in_epoch"],
            "partials": saved["partial_per_rank"]}


def test_a_mid_epoch_stop_under_ddp_keeps_each_ranks_epoch_sums(tmp_path: Path) -> None:
    r0, _ = run_ranks(_stop_resume_ranks, tmp_path, (free_port(), free_port()), timeout=300)
    partials = r0["partials"]
    assert r0["batch_in_epoch"] == 2 and [p["n"] for p in partials] == [2, 2]
    assert not torch.equal(partials[0]["zstd_sum"], partials[1]["zstd_sum"])  # each rank's own batches
    clock = ("epoch_time_s", "time")
    assert len(r0["full"]) == len(r0["resumed"]) == 2
    for x, y in zip(r0["full"], r0["resumed"], strict=True):
        assert {k: v for k, v in x.items() if k not in clock} == {k: v for k, v in y.items() if k not in clock}


def _idx(path: Path, magic: int, data: np.ndarray, slow: bool) -> None:
    with path.open("wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in data.shape))
        f.flush()
        if slow:
            time.sleep(1.0)  # a download in progress: the file exists but is truncated
        f.write(data.tobytes())


def _shared_data_ranks(rank: int, root: Path, folder: Path, log: Path) -> dict[str, Any]:
    from gsg.data import datasets, standard
    from gsg.data import images as image_files
    from gsg.train.distributed import init_from_env, shutdown

    def slow_download(name: str, where: Path) -> None:
        with log.open("a") as f:
            f.write(f"{rank}\n")
        raw = where / "FashionMNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        images = np.arange(20 * 28 * 28, dtype=np.uint8).reshape(20, 28, 28)
        _idx(raw / "train-images-idx3-ubyte", 0x803, images, slow=True)
        _idx(raw / "train-labels-idx1-ubyte", 0x801, np.arange(20, dtype=np.uint8) % 10, slow=False)

    checked: list[str] = []
    orig_check = image_files.check_image

    def counted_check(path: Any, full: bool = True) -> str | None:
        checked.append(str(path))
        return orig_check(path, full)

    standard.SYSTEM_DATA_DIRS = {}  # not this machine's installed copy: the download must run
    standard._download = slow_download  # type: ignore[assignment]
    image_files.check_image = counted_check  # type: ignore[assignment]
    info = init_from_env("cpu")
    try:
        fmnist = datasets.load_dataset("fashion-mnist", "train", data_dir=root, download=True, collective=True)
        images = datasets.load_dataset("imagefolder", "pretrain", data_dir=folder, collective=True)
    finally:
        shutdown(info)
    return {"n": len(fmnist), "sum": int(fmnist.images.sum()), "files": images.files, "checked": len(checked)}


def test_only_rank0_downloads_and_lists(tmp_path: Path) -> None:
    log = tmp_path / "downloads.log"
    folder = _image_folder(tmp_path / "folder", {"train": 3})
    r0, r1 = run_ranks(_shared_data_ranks, tmp_path / "data", folder, log, timeout=240)
    assert log.read_text().split() == ["0"]  # one download, by rank 0; rank 1 waited for it
    assert r0["n"] == r1["n"] == 20 and r0["sum"] == r1["sum"]
    assert r0["files"] == r1["files"] and len(r0["files"]) == 6
    assert r0["checked"] == 6 and r1["checked"] == 0  # rank 1 reused rank 0's checked listing
