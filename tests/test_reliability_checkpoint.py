"""Checkpoint faults, for real: files crafted to run code, from another model or config, truncated or with a
flipped bit, a disk that fills up (or a file-size limit the kernel enforces) while a checkpoint is written, a
kill between the complete write and the rename, and a loss that really diverges (a huge learning rate).
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import nan_loss_at
from gsg import checkpoint as ck
from gsg.checkpoint import PAUSE_ENV, check_resumable, load_checkpoint, save_atomic
from gsg.cli import main
from gsg.errors import CheckpointError, TrainingDiverged
from gsg.train.loop import Trainer, pretrain

WAIT_S = 300


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 1-epoch checkpoint of the tiny config (4 steps)."""
    from conftest import tiny_config

    out = tmp_path_factory.mktemp("trained")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pretrain(tiny_config(out))
    finally:
        torch.set_num_threads(threads)
    return out / "checkpoint.pt"


def _config_file(tmp: Path, **sections: dict[str, Any]) -> Path:
    from conftest import tiny_config

    path = tmp / "config.json"
    path.write_text(json.dumps(tiny_config(tmp / "unused", **sections).to_dict()))
    return path


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    env.pop(PAUSE_ENV, None)
    return env


# ------------------------------------------------------------------------------------- code in a checkpoint


class _Payload:
    """Unpickles to ``func(*args)``: what a hostile checkpoint does."""

    def __init__(self, func: Any, args: tuple[Any, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def _craft(kind: str, path: Path, marker: Path) -> str:
    """Write a checkpoint that creates ``marker`` when unpickled; returns the global it smuggles in."""
    if kind == "os.system":
        payload, name = _Payload(os.system, (f"touch '{marker}'",)), "system"
    elif kind == "builtins.exec":
        payload, name = _Payload(exec, (f"open({str(marker)!r}, 'w').write('pwned')",)), "exec"
    else:  # subprocess.Popen, in the legacy (non-zip) torch format, hidden among the weights
        payload, name = _Payload(subprocess.Popen, (["touch", str(marker)],)), "Popen"
    obj = {ck.FORMAT_KEY: 1, "config": {}, "backbone": {}, "data": {},
           "model": {"backbone.conv1.weight": torch.zeros(1), "backbone.bn1.weight": payload}}
    if kind == "legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:
        torch.save(obj, path)
    return name


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "legacy"])
def test_checkpoint_that_runs_code_is_refused_and_runs_nothing(tmp_path: Path, kind: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    # Control: the crafted file really runs code when unpickled the unsafe way. This is the only unsafe load in
    # the project, on purpose and on a file the test made: its payload only creates a marker in tmp_path.
    control, control_marker = tmp_path / "control.pt", tmp_path / "control-marker"
    _craft(kind, control, control_marker)
    loaded = torch.load(control, weights_only=False)
    popen = loaded["model"]["backbone.bn1.weight"]
    if isinstance(popen, subprocess.Popen):
        popen.wait()
    assert control_marker.exists()

    evil, marker = tmp_path / "evil.pt", tmp_path / "marker"
    name = _craft(kind, evil, marker)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(evil)
    msg = str(e.value)
    assert "refused to load" in msg and "Nothing from it was executed" in msg and name in msg
    assert "weights_only" not in msg  # torch's advice to turn the protection off is not passed on
    # Through the command line: `gsg knn` and `gsg pretrain --resume` with it as the run's checkpoint.
    assert main(["knn", str(evil)]) == 2
    assert "refused to load" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    evil.rename(run / "checkpoint.pt")
    assert main(["pretrain", "--config", str(_config_file(tmp_path)), "--out", str(run), "--resume"]) == 2
    assert "gsg: error: refused to load" in capsys.readouterr().err
    time.sleep(0.2)  # a forked `touch` would have had time to run
    assert not marker.exists()


# ------------------------------------------------------------------------------ wrong model, config, format


def test_resume_with_another_model_or_config_names_the_mismatch(tmp_path: Path, trained: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(trained.read_bytes())
    cfg = _config_file(tmp_path, model={"width": 0.25}, data={"image_size": 24})
    assert main(["pretrain", "--config", str(cfg), "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "model.width: checkpoint 0.125 vs now 0.25" in err and "data.image_size: checkpoint 16 vs now 24" in err
    assert "Traceback" not in err

    # Same config, weights of another model (a tampered or mixed-up file): named by tensor and shape.
    from conftest import tiny_config

    other = tmp_path / "other"
    pretrain(tiny_config(other, model={"width": 0.25}, run={"limit_batches": 1}))
    mixed = load_checkpoint(trained)
    mixed["model"] = load_checkpoint(other / "checkpoint.pt")["model"]
    save_atomic(mixed, run / "checkpoint.pt")
    assert main(["pretrain", "--config", str(_config_file(tmp_path)), "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "does not fit this model" in err and "size mismatch for backbone.conv1.weight" in err

    # Evaluation of a checkpoint whose backbone spec does not match its weights.
    spec = load_checkpoint(trained)
    spec["backbone"]["width"] = 0.5
    save_atomic(spec, tmp_path / "spec.pt")
    assert main(["knn", str(tmp_path / "spec.pt")]) == 2
    assert "does not match its recorded spec" in capsys.readouterr().err


def test_foreign_newer_and_malformed_files_are_named(tmp_path: Path, trained: Path) -> None:
    torch.save({"conv1.weight": torch.zeros(2)}, tmp_path / "plain.pt")  # e.g. a torchvision state dict
    with pytest.raises(CheckpointError, match="is not a gsg checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    newer = load_checkpoint(trained)
    newer[ck.FORMAT_KEY] = 2
    save_atomic(newer, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match="format 2, this gsg reads format 1"):
        load_checkpoint(tmp_path / "newer.pt")
    torch.save({ck.FORMAT_KEY: 1, "config": {}}, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="malformed gsg checkpoint: 'backbone' is missing"):
        load_checkpoint(tmp_path / "bare.pt")
    weights_only = load_checkpoint(trained)
    del weights_only["train_state"]
    with pytest.raises(CheckpointError, match="no training state"):
        check_resumable(weights_only, "x.pt")
    check_resumable(load_checkpoint(trained), "x.pt")


def test_resume_from_a_weights_only_checkpoint_is_a_clear_error(tmp_path: Path, trained: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    ckpt = load_checkpoint(trained)
    del ckpt["train_state"]
    save_atomic(ckpt, run / "checkpoint.pt")
    assert main(["pretrain", "--config", str(_config_file(tmp_path)), "--out", str(run), "--resume"]) == 2
    assert "no training state" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ truncated, bit flips


def test_truncated_checkpoint_is_detected(tmp_path: Path, trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = trained.read_bytes()
    for cut in (0, 1, 100, 4096, len(data) // 2, len(data) - 22, len(data) - 1):
        bad = tmp_path / f"cut{cut}.pt"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            load_checkpoint(bad)
    assert main(["knn", str(tmp_path / "cut100.pt")]) == 2
    err = capsys.readouterr().err
    assert "gsg: error: checkpoint" in err and "truncated or corrupt" in err and "Traceback" not in err


def _data_span(path: Path) -> tuple[int, int]:
    """(offset, size) of the largest tensor record's bytes inside the checkpoint's zip."""
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def test_flipped_bit_is_detected_not_loaded(tmp_path: Path, trained: Path) -> None:
    original = load_checkpoint(trained)
    raw = bytearray(trained.read_bytes())
    start, size = _data_span(trained)
    flipped = bytearray(raw)
    flipped[start + size // 2] ^= 0x10  # inside a weight tensor: torch.load itself does not notice
    (tmp_path / "flip.pt").write_bytes(flipped)
    assert torch.load(tmp_path / "flip.pt", weights_only=True).keys() == original.keys() | {"integrity"}
    with pytest.raises(CheckpointError, match="do not match the SHA-256"):
        load_checkpoint(tmp_path / "flip.pt")
    # A flip anywhere else is detected too, or lands in padding and changes nothing.
    for pos in range(0, len(raw), max(1, len(raw) // 41)):
        flipped = bytearray(raw)
        flipped[pos] ^= 0x01
        (tmp_path / "any.pt").write_bytes(flipped)
        try:
            got = load_checkpoint(tmp_path / "any.pt")
        except CheckpointError:
            continue
        assert ck.content_digest(got) == ck.content_digest(original), f"byte {pos} changed the contents silently"


# ----------------------------------------------------------------------------------------------- disk full


class _FillingFile:
    """A real file on a disk that fills up after ``room`` bytes: the write that crosses it writes what fits
    and fails with ENOSPC, as write(2) does."""

    def __init__(self, f: Any, room: int) -> None:
        self._f, self.room = f, room

    def write(self, data: Any) -> int:
        data = bytes(data)
        if len(data) > self.room:
            self._f.write(data[:self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> _FillingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


def _assert_intact(out: Path, before: bytes, err: BaseException | str) -> None:
    text = str(err)
    assert "could not write checkpoint" in text and "previous checkpoint, if any, is intact" in text
    assert (out / "checkpoint.pt").read_bytes() == before
    load_checkpoint(out / "checkpoint.pt")
    assert not list(out.glob(".checkpoint.pt.*")), "a temporary file was left behind"


@pytest.mark.parametrize("room", [0, 10, 100_000])
def test_disk_full_while_writing_keeps_the_previous_checkpoint(tmp_path: Path, trained: Path,
                                                               monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    out = tmp_path / "run"
    ckpt = load_checkpoint(trained)
    save_atomic(ckpt, out / "checkpoint.pt")
    before = (out / "checkpoint.pt").read_bytes()
    real_fdopen = os.fdopen
    monkeypatch.setattr(ck.os, "fdopen", lambda fd, mode: _FillingFile(real_fdopen(fd, mode), room))
    ckpt["train_state"]["epoch"] = 2
    with pytest.raises(CheckpointError, match=r"No space left on device \(ENOSPC\)") as e:
        save_atomic(ckpt, out / "checkpoint.pt")
    _assert_intact(out, before, e.value)


def test_disk_full_reported_at_fsync_keeps_the_previous_checkpoint(tmp_path: Path, trained: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Network and delayed-allocation file systems report a full disk when the data is flushed.
    out = tmp_path / "run"
    save_atomic(load_checkpoint(trained), out / "checkpoint.pt")
    before = (out / "checkpoint.pt").read_bytes()

    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ck.os, "fsync", fsync)
    with pytest.raises(CheckpointError, match="ENOSPC") as e:
        save_atomic(load_checkpoint(trained), out / "checkpoint.pt")
    _assert_intact(out, before, e.value)


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="POSIX file-size limit")
def test_kernel_refusing_the_write_keeps_the_previous_checkpoint(tmp_path: Path, trained: Path) -> None:
    """A real failing write(2): RLIMIT_FSIZE makes the kernel refuse bytes past the limit (EFBIG), as it
    refuses them with ENOSPC on a full disk. torch.save alone turns this into 'unexpected pos'."""
    import resource

    out = tmp_path / "run"
    save_atomic(load_checkpoint(trained), out / "checkpoint.pt")
    before = (out / "checkpoint.pt").read_bytes()
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 2, limits[1]))
    try:
        with pytest.raises(CheckpointError, match=r"File too large \(EFBIG\)") as e:
            save_atomic(load_checkpoint(trained), out / "checkpoint.pt")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, old_handler)
    _assert_intact(out, before, e.value)


def test_disk_full_during_training_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    real_fdopen = os.fdopen
    saves = {"n": 0}

    def fdopen(fd: int, mode: str) -> Any:
        saves["n"] += 1
        return _FillingFile(real_fdopen(fd, mode), 10**12 if saves["n"] == 1 else 50_000)

    monkeypatch.setattr(ck.os, "fdopen", fdopen)
    cfg = _config_file(tmp_path, optim={"epochs": 2, "batch_size": 16, "lr": 0.05})
    assert main(["pretrain", "--config", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "gsg: error: could not write checkpoint" in err and "No space left on device" in err
    assert "Traceback" not in err
    assert load_checkpoint(out / "checkpoint.pt")["train_state"]["epoch"] == 1
    assert not list(out.glob(".checkpoint.pt.*"))


# -------------------------------------------------------------------------------- kill before the rename

_SPEC = {"arch": "resnet18", "width": 0.125, "in_channels": 3, "cifar_stem": True}
_SAVER = """
import sys, torch
SPEC = __SPEC__
from gsg.checkpoint import save_atomic
torch.manual_seed(int(sys.argv[2]))
save_atomic({"gsg_checkpoint": 1, "config": {}, "backbone": SPEC, "data": {}, "version": int(sys.argv[2]),
             "model": {"w": torch.randn(256, 1024)}}, sys.argv[1])
""".replace("__SPEC__", repr(_SPEC))


def _save_in_subprocess(path: Path, version: int, pause: str | None = None) -> subprocess.Popen[bytes]:
    env = _env()
    if pause:
        env[PAUSE_ENV] = pause
    return subprocess.Popen([sys.executable, "-c", _SAVER, str(path), str(version)], env=env)


def _wait(cond: Any, proc: subprocess.Popen[bytes], what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        assert proc.poll() is None, f"the process exited ({proc.returncode}) before {what}"
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"gave up waiting for {what}")


def _complete_temps(path: Path) -> list[Path]:
    found = []
    for p in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            load_checkpoint(p)
        except CheckpointError:
            continue
        found.append(p)
    return found


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_kill_between_write_and_rename_keeps_the_old_file_and_the_next_save_cleans_up(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_atomic({ck.FORMAT_KEY: 1, "config": {}, "backbone": _SPEC, "data": {}, "model": {}, "version": 1}, path)
    proc = _save_in_subprocess(path, 2, pause="rename:600")
    try:
        temp = _wait(lambda: _complete_temps(path), proc, "a complete temporary file")[0]
    finally:
        proc.kill()
        proc.wait()
    assert load_checkpoint(path)["version"] == 1  # the old file, whole
    assert load_checkpoint(temp)["version"] == 2  # the new one was complete but never renamed
    save_atomic({ck.FORMAT_KEY: 1, "config": {}, "backbone": _SPEC, "data": {}, "model": {}, "version": 3}, path)
    assert load_checkpoint(path)["version"] == 3
    assert not temp.exists()


def test_only_temporary_files_of_dead_processes_on_this_host_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = ck._host()
    files = {
        "dead": tmp_path / f".checkpoint.pt.{host}.{dead.pid}.abc.tmp",
        "alive": tmp_path / f".checkpoint.pt.{host}.{os.getppid()}.abc.tmp",  # e.g. another writer, running
        "other_host": tmp_path / f".checkpoint.pt.{host}-elsewhere.{dead.pid}.abc.tmp",
        "other_file": tmp_path / f".metrics.jsonl.{host}.{dead.pid}.abc.tmp",
        "unrelated": tmp_path / "checkpoint.pt.bak",
    }
    for p in files.values():
        p.write_bytes(b"x")
    save_atomic({ck.FORMAT_KEY: 1, "config": {}, "backbone": {}, "data": {}, "model": {}}, path)
    assert not files["dead"].exists()
    assert all(p.exists() for k, p in files.items() if k != "dead")


# -------------------------------------------------------------------------------------------- divergence

# The loss (or, once the lead's weights check is in, a weight) became non-finite; the step, the epoch and the
# checkpoint that is kept are named.
_DIVERGED = re.compile(r"became NaN or infinite (?:at|by) step (\d+) \(epoch (\d+)\); training stopped and "
                       r"the last good checkpoint (\S+) \(epoch (\d+)\) is kept")
_HUGE_LR = {"epochs": 30, "batch_size": 16, "lr": 1e4, "schedule": "constant"}


def _finite(ckpt: dict[str, Any]) -> list[str]:
    """Names of the non-finite tensors of a checkpoint's model and optimizer state."""
    bad = [k for k, v in ckpt["model"].items() if v.is_floating_point() and not torch.isfinite(v).all()]
    for i, s in ckpt["train_state"]["optimizer"]["state"].items():
        if not torch.isfinite(s["momentum_buffer"]).all():
            bad.append(f"momentum of parameter {i}")
    return bad


@pytest.fixture(scope="module")
def diverged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """lr = 1e4 with weight decay 5e-4: the weights grow geometrically until float32 overflows, a few epochs
    in (step 17 of 4-step epochs on the machines we tried), in a `gsg pretrain` process."""
    tmp = tmp_path_factory.mktemp("diverged")
    out = tmp / "run"
    cfg = _config_file(tmp, optim=_HUGE_LR)
    proc = subprocess.run([sys.executable, "-m", "gsg", "pretrain", "--config", str(cfg), "--out", str(out)],
                          env=_env(), capture_output=True, text=True, timeout=WAIT_S)
    return {"out": out, "code": proc.returncode, "stderr": proc.stderr}


@pytest.mark.slow
def test_a_loss_that_really_diverges_stops_naming_the_step_and_checkpoint(diverged: dict[str, Any]) -> None:
    out, err = diverged["out"], diverged["stderr"]
    assert diverged["code"] == 2, err[-3000:]
    assert "Traceback" not in err and "gsg: error: " in err
    m = _DIVERGED.search(err)
    assert m, err[-3000:]
    step, epoch, path, kept_epoch = int(m[1]), int(m[2]), m[3], int(m[4])
    assert path == str(out / "checkpoint.pt") and kept_epoch == epoch - 1 >= 1
    ts = load_checkpoint(path)["train_state"]
    assert ts["epoch"] == kept_epoch and ts["step"] == 4 * kept_epoch < step <= 4 * epoch
    steps = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, len(steps) + 1)) and len(steps) >= step - 1
    assert all(abs(r["loss"]) <= 1.0 for r in steps)  # every step logged had a finite loss


@pytest.mark.slow
def test_the_last_good_checkpoint_after_a_divergence_is_finite(diverged: dict[str, Any]) -> None:
    """Before the loss turns NaN, BatchNorm running variances (which the training forward does not use)
    overflow to inf: the checkpoint kept as 'good' must not hold them."""
    assert diverged["code"] == 2
    assert _finite(load_checkpoint(diverged["out"] / "checkpoint.pt")) == []


def test_rollback_on_a_real_divergence_reloads_the_checkpoint_with_lower_lr(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """run.on_nonfinite = "rollback": each divergence reloads the last checkpoint with half the lr, at most 3
    times; the run then either finishes with the lowered lr or stops as without rollback."""
    out = tmp_path / "run"
    cfg = _config_file(tmp_path, optim={**_HUGE_LR, "epochs": 6}, run={"on_nonfinite": "rollback"})
    caplog.set_level("INFO", logger="gsg")
    code = main(["pretrain", "--config", str(cfg), "--out", str(out)])
    err, logs = capsys.readouterr().err, caplog.text
    scales = [float(s) for s in re.findall(r"non-finite .* lr scaled by ([\d.]+)", logs)]
    assert scales and scales == [0.5, 0.25, 0.125][:len(scales)], logs[-3000:]
    resumes = re.findall(r"resumed from (\S+) at epoch (\d+), step (\d+)", logs)
    assert len(resumes) == len(scales) and {r[0] for r in resumes} == {str(out / "checkpoint.pt")}
    ts = load_checkpoint(out / "checkpoint.pt")["train_state"]
    if code == 0:  # recovered: finished with the last lowered lr
        assert ts["epoch"] == 6 and ts["lr_scale"] == scales[-1]
    else:  # gave up after 3 rollbacks, the checkpoint it rolled back to kept
        assert code == 2 and len(scales) == 3 and "Traceback" not in err
        m = _DIVERGED.search(err)
        assert m and int(m[4]) == ts["epoch"] == int(resumes[-1][1])


def test_message_after_exhausted_rollbacks_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import tiny_config

    cfg = tiny_config(tmp_path / "run", optim={"epochs": 3}, run={"on_nonfinite": "rollback"})
    trainer = Trainer(cfg)
    nan_loss_at(trainer, lambda n: n >= 6)
    with pytest.raises(TrainingDiverged) as e:
        trainer.fit()
    assert "after 3 rollbacks" in str(e.value) and "set run.on_nonfinite = 'rollback'" not in str(e.value)
