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


# Imported by every worker (a sitecustomize on PYTHONPATH): at exit, each rank writes the names of its OS threads.
_THREADS_AT_EXIT = """
import atexit, os

def _threads_at_exit():
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            names.append(open(f"/proc/self/task/{task}/comm").read().strip())
        except OSError:
            pass
    with open(os.path.join(os.environ["GSG_TEST_THREADS_DIR"], f"rank{os.environ.get('RANK')}.txt"), "w") as f:
        f.write("\\n".join(sorted(names)))

if os.environ.get("RANK") is not None:
    atexit.register(_threads_at_exit)
"""


def torchrun_pretrain(
    config_text: str, tmp_path: Path, nproc: int = 2, *, threads_at_exit: bool = False
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``gsg pretrain --config`` on ``config_text`` under ``torchrun --standalone --nproc_per_node nproc`` (one
    thread a process); returns the finished process and the run directory. Fails the test on a non-zero exit.
    ``threads_at_exit``: each rank writes the names of the OS threads it still has at interpreter exit to
    ``tmp_path/threads/rank<R>.txt`` (Linux)."""
    cfg = tmp_path / "ddp.toml"
    cfg.write_text(config_text)
    out = tmp_path / "run"
    path = list(sys.path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if threads_at_exit:
        site = tmp_path / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(_THREADS_AT_EXIT)
        (tmp_path / "threads").mkdir()
        path.insert(0, str(site))
        env["GSG_TEST_THREADS_DIR"] = str(tmp_path / "threads")
    env["PYTHONPATH"] = os.pathsep.join(path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "gsg", "pretrain", "--config", str(cfg), "--out", str(out)]
    # A session of its own: torchrun's agent signals its process group on shutdown, which must not reach pytest.
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, start_new_session=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, out
