"""A real 2-process DistributedDataParallel run (gloo backend, CPU) launched with torchrun."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gsg.checkpoint import load_checkpoint
from gsg.train.logging import read_metrics
from multiproc import torchrun_pretrain

CONFIG = """
[data]
dataset = "synthetic"
image_size = 16
subset = 64
[model]
width = 0.125
proj_dim = 32
pred_hidden = 16
[ssl]
method = "{method}"
{ssl}
[optim]
epochs = 2
batch_size = 16
lr = 0.05
[run]
device = "cpu"
knn_every = 0
progress = false
tensorboard = false
"""


@pytest.mark.slow
@pytest.mark.parametrize(("method", "ssl"), [("simsiam", 'stop_gradient = "guided"'),
                                             ("byol", 'stop_gradient = "guided"'), ("simclr", ""),
                                             ("moco", "queue_size = 48")])
def test_two_process_ddp_gloo(tmp_path: Path, method: str, ssl: str) -> None:
    proc, out = torchrun_pretrain(CONFIG.format(method=method, ssl=ssl), tmp_path, threads_at_exit=True)
    # gloo's threads are gone before the interpreter exits: a reference cycle once kept DDP and its process group
    # alive until then, and a rank sometimes aborted at exit ("terminate called without an active exception")
    for rank in (0, 1):
        threads = (tmp_path / "threads" / f"rank{rank}.txt").read_text().split("\n")
        assert not [t for t in threads if "gloo" in t], threads
    ckpt = load_checkpoint(out / "checkpoint.pt")
    # 64 images over 2 processes = 32 each; a global batch of 16 is 8 per process: 4 steps per epoch.
    assert ckpt["train_state"]["step"] == 8 and ckpt["train_state"]["world_size"] == 2
    epochs = read_metrics(out / "metrics.jsonl", "epoch")
    assert len(epochs) == 2 and all(torch.isfinite(torch.tensor(e["loss"])) for e in epochs)
    # The checkpoint holds the plain (non-DDP) model's keys, BatchNorm statistics included.
    assert any(k.endswith("running_mean") for k in ckpt["model"])
    assert not any(k.startswith("module.") for k in ckpt["model"])
    assert "checkpoint:" in proc.stdout
    if method == "moco":  # MoCo enqueues the gathered keys: the global batch of 16 a step, 8 steps
        assert int(ckpt["model"]["queue.ptr"]) == (8 * 16) % 48
