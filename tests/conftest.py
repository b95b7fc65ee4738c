"""Shared fixtures: a tiny pretraining config on the synthetic dataset (CPU, seconds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

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


@pytest.fixture
def make_config(tmp_path: Path):  # type: ignore[no-untyped-def]
    def make(**sections: dict[str, Any]) -> Config:
        return tiny_config(tmp_path / "run", **sections)

    return make
