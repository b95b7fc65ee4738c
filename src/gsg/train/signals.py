"""SIGTERM/SIGINT during training: a flag the loop polls, the exception it stops with, and the ranks' vote on it.

The loop never stops inside a signal handler: it finishes the step, saves a checkpoint and raises
:class:`Interrupted`, so that ``--resume`` continues exactly.
"""

from __future__ import annotations

import signal
from typing import Any

import torch

from gsg.train.distributed import DistInfo, any_rank


class Signals:
    """Turns SIGTERM/SIGINT into a flag so the loop can checkpoint before exiting."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Interrupted(Exception):
    """Training stopped on a signal after saving a checkpoint."""


def stop_requested(signals: Signals, info: DistInfo, device: torch.device) -> bool:
    """A signal seen by any rank stops every rank after the same step (else ranks disagree on collectives)."""
    return bool(any_rank(signals.received is not None, info, device))
