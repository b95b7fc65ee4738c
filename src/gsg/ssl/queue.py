"""MoCo's queue of negative keys: a ring buffer of the last K keys and its write pointer.

Both are registered buffers of the model, so the checkpoint holds them and a resumed run continues with
exactly the queue it stopped with. The queue starts as K random unit vectors, as MoCo's official code.

    >>> import torch
    >>> from gsg.ssl.queue import KeyQueue
    >>> q = KeyQueue(6, 4, generator=torch.Generator().manual_seed(0))
    >>> q.enqueue(torch.ones(4, 4)); int(q.ptr)
    4
    >>> q.enqueue(torch.ones(4, 4)); int(q.ptr)                 # wraps: slots 4, 5, 0, 1
    2
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gsg.errors import ConfigError


class KeyQueue(nn.Module):
    """K keys of dimension d (``keys``, (K, d), L2-normalised) and the next slot to write (``ptr``)."""

    keys: Tensor
    ptr: Tensor

    def __init__(self, size: int, dim: int, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ConfigError(f"the MoCo queue needs a positive size and dimension, got {size} × {dim}")
        self.register_buffer("keys", F.normalize(torch.randn(size, dim, generator=generator), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Overwrite the oldest ``len(keys)`` slots with ``keys`` (normalised here) and advance the pointer.

        The slots are computed on the device (no host sync): ``(ptr + arange(n)) mod K``.
        """
        n = keys.shape[0]
        if keys.ndim != 2 or keys.shape[1] != self.keys.shape[1] or n > self.size:
            raise ConfigError(f"cannot enqueue keys of shape {tuple(keys.shape)} into a queue of "
                              f"{tuple(self.keys.shape)}: at most {self.size} keys of dimension {self.keys.shape[1]}")
        slots = (self.ptr + torch.arange(n, device=self.ptr.device)) % self.size
        self.keys.index_copy_(0, slots, F.normalize(keys.detach().to(self.keys.dtype), dim=1))
        self.ptr.copy_((self.ptr + n) % self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.keys.shape[1]}"


__all__ = ["KeyQueue"]
