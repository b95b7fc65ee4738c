"""Pre-emption, for real: `gsg pretrain` processes killed with SIGKILL mid-epoch and mid-checkpoint-write,
stopped with SIGTERM and SIGINT while they write a checkpoint, and restarted with --resume.

After every fault the checkpoint on disk must load, each restart must continue from it, and the weights at
the end must equal, bit for bit, those of an uninterrupted run (CPU, fixed seed, one thread).

The moment of a kill inside save_atomic is made exact by checkpoint.py's testing hook
GSG_TEST_CHECKPOINT_PAUSE ("write:S" sleeps after the first 64 KiB are in the temporary file): the test
waits until the process is in that state and signals it there. The SIGKILL mid-epoch lands wherever the
process happens to be when the test sees a step of the second epoch logged. A kill between the complete write
and the rename is in tests/test_reliability_checkpoint.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from gsg.checkpoint import PAUSE_ENV, load_checkpoint
from gsg.errors import CheckpointError
from gsg.train.loop import Interrupted, Trainer, pretrain

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

STEPS_PER_EPOCH = 4  # 64 synthetic images, batch 16
EPOCHS = 6
WAIT_S = 300  # generous: only a guard against a hung process, never an assertion on speed


def _config(out: Path):  # type: ignore[no-untyped-def]
    from conftest import tiny_config

    return tiny_config(out, optim={"epochs": EPOCHS, "batch_size": 16, "lr": 0.05, "schedule": "cosine"},
                       ssl={"method": "simsiam", "stop_gradient": "guided"})


class Run:
    """One `python -m gsg pretrain` process with its output in a file."""

    def __init__(self, tmp: Path, name: str, config: Path, out: Path, *flags: str,
                 env: dict[str, str] | None = None) -> None:
        full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
        full_env.pop(PAUSE_ENV, None)
        full_env.update(env or {})
        self.out, self.log = out, tmp / f"{name}.log"
        self.metrics_at_start = len(_records(out))
        with self.log.open("w") as f:
            self.proc = subprocess.Popen([sys.executable, "-m", "gsg", "pretrain", "--config", str(config),
                                          "--out", str(out), *flags], env=full_env, stdout=f,
                                         stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text()

    def new_steps(self) -> list[int]:
        """Steps this process has logged (metrics.jsonl is appended to by every run of the chain)."""
        return [r["step"] for r in _records(self.out)[self.metrics_at_start:] if r.get("kind") == "step"]

    def wait_until(self, what: str, condition: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            if self.proc.poll() is not None:
                pytest.fail(f"the process exited ({self.proc.returncode}) before {what}:\n{self.text()[-3000:]}")
            time.sleep(0.02)
        self.proc.kill()
        pytest.fail(f"gave up waiting for {what}:\n{self.text()[-3000:]}")

    def signal_and_wait(self, sig: int) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=WAIT_S)


def _records(out: Path) -> list[dict[str, Any]]:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    recs = []
    for line in path.read_text().splitlines():
        try:
            recs.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written right now
            pass
    return recs


def _temps(out: Path) -> set[Path]:
    return set(out.glob(".checkpoint.pt.*.tmp"))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # renamed or removed since it was listed
        return 0


def _loads(path: Path) -> bool:
    try:
        load_checkpoint(path)
    except CheckpointError:
        return False
    return True


def _state(out: Path) -> tuple[int, int, int]:
    ts = load_checkpoint(out / "checkpoint.pt")["train_state"]
    return ts["epoch"], ts["batch_in_epoch"], ts["step"]


@pytest.fixture
def runs():  # type: ignore[no-untyped-def]
    started: list[Run] = []
    yield started
    for r in started:  # a failed test must not leave training processes behind
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()


@pytest.mark.slow
def test_killed_and_stopped_run_resumes_to_the_uninterrupted_weights(tmp_path: Path, runs: list[Run]) -> None:
    ref_cfg = _config(tmp_path / "reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses (OMP_NUM_THREADS=1): same kernels, same sums
    try:
        pretrain(ref_cfg)
    finally:
        torch.set_num_threads(threads)
    reference = load_checkpoint(tmp_path / "reference" / "checkpoint.pt")

    out = tmp_path / "run"
    config = tmp_path / "config.json"
    cfg = _config(out).to_dict()
    config.write_text(json.dumps(cfg))
    ckpt = out / "checkpoint.pt"

    def start(name: str, *flags: str, env: dict[str, str] | None = None) -> Run:
        r = Run(tmp_path, name, config, out, *flags, env=env)
        runs.append(r)
        return r

    def resumed_from(r: Run, state: tuple[int, int, int]) -> None:
        assert f"resumed from {ckpt} at epoch {state[0]}, step {state[2]}" in r.text()

    # 1. SIGKILL mid-epoch, in the second epoch (the first checkpoint has been written).
    a = start("a")
    a.wait_until("a step of epoch 2", lambda: any(s >= STEPS_PER_EPOCH + 3 for s in a.new_steps()))
    assert a.signal_and_wait(signal.SIGKILL) == -signal.SIGKILL
    state = _state(out)
    assert state[0] >= 1 and state[1] == 0 and state[2] == state[0] * STEPS_PER_EPOCH
    assert max(a.new_steps()) >= state[2]  # the checkpoint is not ahead of what was trained

    # 2. SIGKILL while the next checkpoint is half written: the temporary file is partial, checkpoint.pt intact.
    left_by_a = _temps(out)  # A may have been killed while it wrote a checkpoint too
    b = start("b", "--resume", env={PAUSE_ENV: "write:600"})
    partial = b.wait_until("a partly written checkpoint",
                           lambda: [p for p in _temps(out) - left_by_a if _size(p) >= 64 * 1024])[0]
    assert b.signal_and_wait(signal.SIGKILL) == -signal.SIGKILL
    resumed_from(b, state)
    assert _state(out) == state, "the interrupted write changed checkpoint.pt"
    assert partial.is_file() and not _loads(partial), "the kill did not land in the middle of the write"

    # 3. SIGTERM while a checkpoint is being written: the write completes, the run takes one more step, saves
    # a mid-epoch checkpoint and exits with 130. Its first save removes the killed process's temporary file.
    d = start("d", "--resume", env={PAUSE_ENV: "write:1.5"})
    d.wait_until("a checkpoint write", lambda: [p for p in _temps(out) - left_by_a - {partial} if _size(p)])
    assert not partial.exists(), "the next save did not remove the temporary file of the killed process"
    assert d.signal_and_wait(signal.SIGTERM) == 130
    resumed_from(d, state)
    assert re.search(r"removed \d+ temporary file\(s\) left in .* by an interrupted checkpoint write", d.text())
    assert "stopped by signal 15" in d.text() and "continue with --resume" in d.text()
    epoch = state[0] + 1
    state = _state(out)
    assert state == (epoch, 1, epoch * STEPS_PER_EPOCH + 1)
    assert not _temps(out), "temporary files left after a clean stop"

    # 4. SIGINT (Ctrl-C) the same way, from the mid-epoch checkpoint.
    e = start("e", "--resume", env={PAUSE_ENV: "write:1.5"})
    e.wait_until("a checkpoint write", lambda: [p for p in _temps(out) if _size(p)])
    assert e.signal_and_wait(signal.SIGINT) == 130
    resumed_from(e, state)
    assert "stopped by signal 2" in e.text()
    epoch = state[0] + 1
    state = _state(out)
    assert state == (epoch, 1, epoch * STEPS_PER_EPOCH + 1)
    assert epoch < EPOCHS

    # 5. Finish.
    f = start("f", "--resume")
    assert f.proc.wait(timeout=WAIT_S) == 0, f.text()[-3000:]
    resumed_from(f, state)
    assert "Traceback" not in "".join(r.text() for r in runs)
    final = load_checkpoint(ckpt)
    assert final["train_state"]["step"] == EPOCHS * STEPS_PER_EPOCH == reference["train_state"]["step"]
    assert final["model"].keys() == reference["model"].keys()
    differ = [k for k in reference["model"] if not torch.equal(final["model"][k], reference["model"][k])]
    assert not differ, f"weights differ from the uninterrupted run: {differ[:5]}"
    mom_ref = reference["train_state"]["optimizer"]["state"]
    mom = final["train_state"]["optimizer"]["state"]
    assert all(torch.equal(mom[i]["momentum_buffer"], mom_ref[i]["momentum_buffer"]) for i in mom_ref)


def test_signal_during_the_last_batch_of_an_epoch_resumes_exactly(tmp_path: Path) -> None:
    from conftest import tiny_config

    common = {"optim": {"epochs": 2, "batch_size": 16, "lr": 0.05}}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        full = tiny_config(tmp_path / "full", **common)
        pretrain(full)
        part = tiny_config(tmp_path / "part", **common)
        trainer = Trainer(part)
        original = trainer.views_and_loss
        count = {"n": 0}

        def signal_on_last_batch(images):  # type: ignore[no-untyped-def]
            count["n"] += 1
            if count["n"] == STEPS_PER_EPOCH:  # a SIGTERM that arrives while the epoch's last batch runs
                os.kill(os.getpid(), signal.SIGTERM)
            return original(images)

        trainer.views_and_loss = signal_on_last_batch  # type: ignore[method-assign]
        with pytest.raises(Interrupted):
            trainer.fit()
        pretrain(part, resume=True)
    finally:
        torch.set_num_threads(threads)
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    assert [h["epoch"] for h in b["metrics"]["history"]] == [1, 2]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
