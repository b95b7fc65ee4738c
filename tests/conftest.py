"""Shared fixtures: a tiny pretraining config on the synthetic dataset (CPU, seconds)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from gsg.config import Config, load_config


def tiny_config(out: Path, **sections: dict[str, Any]) -> Config:
    """A config that trains a width-1/8 ResNet-18 on 16-px synthetic images, a few steps per epoch."""
    base: dict[str, dict[str, Any]] = {
        "data": {"dataset": "synthetic", "image_size": 16, "subset": 64},
        "model": {"width": 0.125, "proj_dim": 32, "pred_hidden": 16},
        "optim": {"epochs": 1, "batch_size": 16, "lr": 0.05},
        "run": {"out": str(out), "device": "cpu", "knn_every": 0, "progress": False, "tensorboard": False,
                "log_every": 1, "knn_train_subset": None},
    }
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    return load_config(overrides=base)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module of tiny models: a second thread only adds synchronisation, which costs
    10-30x on a loaded machine (OpenMP threads waiting for each other at barriers)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def make_config(tmp_path: Path):  # type: ignore[no-untyped-def]
    def make(**sections: dict[str, Any]) -> Config:
        return tiny_config(tmp_path / "run", **sections)

    return make


def nan_loss_at(trainer: Any, bad: Callable[[int], bool]) -> None:
    """Make ``trainer``'s loss NaN at the steps ``n`` (counted from 1) for which ``bad(n)`` holds."""
    original = trainer.views_and_loss
    count = {"n": 0}

    def poisoned(images: torch.Tensor) -> Any:
        count["n"] += 1
        loss, stats = original(images)
        return (loss * float("nan") if bad(count["n"]) else loss), stats

    trainer.views_and_loss = poisoned


def random_backbone_checkpoint(path: Path, *, width: float = 0.125, image_size: int = 32) -> Path:
    """A gsg checkpoint of a randomly initialised 3-channel CIFAR-stem ResNet-18 (seed 0) on synthetic data's
    normalisation, for evaluation tests that need no training."""
    from gsg.checkpoint import save_atomic
    from gsg.models.backbones import Backbone

    torch.manual_seed(0)
    net = Backbone("resnet18", width=width, in_channels=3, cifar_stem=True)
    ckpt = {"gsg_checkpoint": 1, "config": {},
            "backbone": {"arch": "resnet18", "width": width, "in_channels": 3, "cifar_stem": True,
                         "image_size": image_size},
            "data": {"dataset": "synthetic", "mean": [0.5] * 3, "std": [0.25] * 3, "image_size": image_size,
                     "channels": 3},
            "model": {"backbone." + k: v for k, v in net.state_dict().items()}}
    return save_atomic(ckpt, path)
