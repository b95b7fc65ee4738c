"""Capture and restore every random number generator a run uses, for exact resume."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture(aug_generator: torch.Generator) -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": torch.tensor(random.getstate()[1], dtype=torch.int64),
        "python_version": random.getstate()[0],
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": int(np.random.get_state()[2]),
        "torch": torch.get_rng_state(),
        "aug": aug_generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any], aug_generator: torch.Generator) -> None:
    random.setstate((state["python_version"], tuple(int(x) for x in state["python"].tolist()), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    aug_generator.set_state(state["aug"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
