"""Test helpers for multi-process runs: a function in N spawned processes that form a gloo process group (with a
hang timeout), and `gsg pretrain` under a real 2-process torchrun."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(rank: int, fn: Callable[..., Any], world: int, port: int, out: str, args: tuple[Any, ...]) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"})
    os.environ.pop("TORCHELASTIC_RESTART_COUNT", None)
    torch.set_num_threads(1)
    result = fn(rank, *args)
    Path(out, f"{rank}.pkl").write_bytes(pickle.dumps(result))


def run_ranks(fn: Callable[..., Any], *args: Any, world: int = 2, timeout: float = 240.0) -> list[Any]:
    """``[fn(0, *args), ..., fn(world - 1, *args)]``, each in its own process with torchrun's environment set
    (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), so that ``init_from_env`` joins a gloo group.

    ``fn`` must be importable (a module-level function). A process that raises fails the call with its
    traceback; processes still running after ``timeout`` seconds (a hang) are killed and AssertionError raised.
    """
    with tempfile.TemporaryDirectory() as out:
        ctx = mp.start_processes(_entry, args=(fn, world, free_port(), out, args), nprocs=world, join=False,
                                 start_method="spawn")
        deadline = time.monotonic() + timeout
        try:
            while not ctx.join(timeout=1.0):
                if time.monotonic() > deadline:
                    raise AssertionError(f"the {world} processes did not finish within {timeout:.0f} s (a hang)")
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
                    p.join()
        return [pickle.loads(Path(out, f"{r}.pkl").read_bytes()) for r in range(world)]


def torchrun_pretrain(
    config_text: str, tmp_path: Path, nproc: int = 2
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``gsg pretrain --config`` on ``config_text`` under ``torchrun --standalone --nproc_per_node nproc`` (one
    thread a process); returns the finished process and the run directory. Fails the test on a non-zero exit."""
    cfg = tmp_path / "ddp.toml"
    cfg.write_text(config_text)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "gsg", "pretrain", "--config", str(cfg), "--out", str(out)]
    # A session of its own: torchrun's agent signals its process group on shutdown, which must not reach pytest.
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, start_new_session=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, out
