"""Capture and restore every random number generator a run uses, for exact resume.

A generator's state is device-specific: a CUDA generator's is 16 bytes (seed + Philox offset), a CPU
generator's 5056 (Mersenne Twister). A checkpoint records which kind its augmentation generator was, and a
resume on the other kind (a GPU run continued on a CPU node, or the reverse) cannot restore it: the
augmentation stream is then reseeded deterministically from the run's seed and the step, with a warning,
instead of failing. Only the training device's CUDA generator is saved (not one per visible GPU: a resume with
fewer visible GPUs must not index past them); training draws from ``aug_generator`` and the CPU generator, so
the global CUDA generator is saved for completeness only.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

_CPU_STATE_BYTES = 5056  # torch's CPUGeneratorImplState


def capture(aug_generator: torch.Generator, device: torch.device | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": torch.tensor(random.getstate()[1], dtype=torch.int64),
        "python_version": random.getstate()[0],
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": int(np.random.get_state()[2]),
        "torch": torch.get_rng_state(),
        "aug": aug_generator.get_state(),
        "aug_device": aug_generator.device.type,
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def saved_aug_device(state: dict[str, Any]) -> str:
    """The device type the checkpoint's augmentation generator ran on (older checkpoints: from its size)."""
    if "aug_device" in state:
        return str(state["aug_device"])
    return "cpu" if state["aug"].numel() == _CPU_STATE_BYTES else "cuda"


def restore(state: dict[str, Any], aug_generator: torch.Generator, *, reseed: int,
            device: torch.device | None = None) -> bool:
    """Restore the generators of ``state``; returns False when ``aug_generator`` had to be reseeded.

    ``reseed``: the seed ``aug_generator`` gets when the saved state comes from another device type (or does
    not fit it): the run then continues with a fresh, deterministic augmentation stream rather than the
    exact one.
    """
    random.setstate((state["python_version"], tuple(int(x) for x in state["python"].tolist()), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    exact = True
    saved = saved_aug_device(state)
    now = aug_generator.device.type
    if saved == now:
        try:
            aug_generator.set_state(state["aug"])
        except RuntimeError as exc:  # a state of the right device type but the wrong layout (another torch)
            log.warning("cannot restore the augmentation generator (%s); reseeding it", exc)
            exact = False
    else:
        log.warning("the checkpoint's augmentation generator ran on %s, this run's is on %s: its state cannot "
                    "be restored there, so the augmentation stream is reseeded (the resume is not exact)",
                    saved, now)
        exact = False
    if not exact:
        aug_generator.manual_seed(reseed)
    cuda = state.get("cuda")
    if cuda is not None and device is not None and device.type == "cuda":
        if isinstance(cuda, list | tuple):  # older checkpoints: one state per visible GPU
            index = device.index or 0
            cuda = cuda[index] if index < len(cuda) else None
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)
    return exact
