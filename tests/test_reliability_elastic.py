"""Multi-process faults, for real: one of two torchrun workers (gloo, CPU) is killed with SIGKILL mid-epoch;
torchrun's elastic restart (--max-restarts 1) reruns the command, and --auto-resume continues from the last
checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from gsg.checkpoint import load_checkpoint

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads worker pids from /proc")]

WAIT_S = 300
STEPS_PER_EPOCH = 4  # 64 images over 2 processes, 8 per process and batch
EPOCHS = 4


def _config(tmp: Path) -> Path:
    from conftest import tiny_config

    path = tmp / "config.json"
    cfg = tiny_config(tmp / "unused", optim={"epochs": EPOCHS, "batch_size": 16, "lr": 0.05},
                      ssl={"stop_gradient": "guided"})
    path.write_text(json.dumps(cfg.to_dict()))
    return path


def _torchrun(config: Path, out: Path, log: Path, *flags: str, env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1", **(env or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *flags,
           "-m", "gsg", "pretrain", "--config", str(config), "--out", str(out), "--auto-resume"]
    with log.open("w") as f:
        # A session of its own: torchrun's agent signals its process group on shutdown, which must not reach pytest.
        return subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def _steps(out: Path) -> list[int]:
    path = out / "metrics.jsonl"
    steps = []
    for line in (path.read_text().splitlines() if path.is_file() else []):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("kind") == "step":
            steps.append(rec["step"])
    return steps


def _worker(parent: int, local_rank: int) -> int | None:
    """PID of the torchrun worker with this LOCAL_RANK (a child of the torchrun process)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if f"LOCAL_RANK={local_rank}".encode() in env:
            return int(entry.name)
    return None


def _wait(proc: subprocess.Popen[bytes], log: Path, what: str, cond: Any) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"torchrun exited ({proc.returncode}) before {what}:\n{log.read_text()[-4000:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"gave up waiting for {what}:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("elastic")
    out, log = tmp / "run", tmp / "torchrun.log"
    # No TORCH_DISABLE_SHARE_RDZV_TCP_STORE: gsg's init_from_env gives each restart round its own store
    # prefix, so restarted gloo workers never read the dead workers' addresses (docs/reliability.md).
    proc = _torchrun(_config(tmp), out, log, "--max-restarts", "1")
    try:
        _wait(proc, log, "a step of the second epoch", lambda: any(s > STEPS_PER_EPOCH + 1 for s in _steps(out)))
        victim = _wait(proc, log, "the pid of worker 1", lambda: _worker(proc.pid, 1))
        before = load_checkpoint(out / "checkpoint.pt")["train_state"]
        steps_before = _steps(out)
        os.kill(victim, signal.SIGKILL)
        code = proc.wait(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return {"out": out, "log": log.read_text(), "code": code, "victim": victim, "before": before,
            "steps_before": steps_before, "tmp": tmp}


def test_killed_worker_is_restarted_and_resumes_from_the_checkpoint(killed_run: dict[str, Any]) -> None:
    out, log = killed_run["out"], killed_run["log"]
    assert killed_run["code"] == 0, log[-4000:]
    failure = log.find(f"failed (exitcode: -9) local_rank: 1 (pid: {killed_run['victim']})")
    assert failure >= 0, "torchrun did not see the killed worker:\n" + log[-4000:]
    # Both restarted workers found the checkpoint: epoch > 0, the file on disk when the worker was killed (or a
    # later one, had the surviving worker saved on the SIGTERM torchrun sent it).
    resumed = [(int(e), int(s)) for e, s in re.findall(r"resumed from \S+ at epoch (\d+), step (\d+)", log)]
    assert len(resumed) == 2 and resumed[0] == resumed[1], log[-4000:]
    assert log.find("resumed from") > failure
    epoch, step = resumed[0]
    assert epoch >= 1 and step >= killed_run["before"]["step"] >= STEPS_PER_EPOCH
    # Training went on from there: after the kill, the step records restart at step + 1 and run to the end.
    steps = _steps(out)
    restart = len(killed_run["steps_before"])
    while steps[restart] != step + 1:
        restart += 1
    assert steps[restart:] == list(range(step + 1, EPOCHS * STEPS_PER_EPOCH + 1))
    ckpt = load_checkpoint(out / "checkpoint.pt")
    ts = ckpt["train_state"]
    assert (ts["epoch"], ts["step"], ts["world_size"]) == (EPOCHS, EPOCHS * STEPS_PER_EPOCH, 2)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_elastic_restart_ends_with_the_uninterrupted_weights(killed_run: dict[str, Any]) -> None:
    tmp = killed_run["tmp"]
    out, log = tmp / "reference", tmp / "reference.log"
    proc = _torchrun(tmp / "config.json", out, log)
    assert proc.wait(timeout=WAIT_S) == 0, log.read_text()[-4000:]
    ref = load_checkpoint(out / "checkpoint.pt")["model"]
    got = load_checkpoint(killed_run["out"] / "checkpoint.pt")["model"]
    differ = [k for k in ref if not torch.equal(ref[k], got[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"
