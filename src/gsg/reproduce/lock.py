"""The lock of a run directory: one process at a time trains a run; a lock left by a dead process is taken over."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger("gsg.reproduce")

LOCK_NAME = "lock"
LOCK_POLL_S = 10.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    try:  # a helper that died but is not reaped yet is a zombie: gone, for the lock
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _try_lock(run_dir: Path, key: str) -> Path | None:
    """Take ``run_dir/lock``, or None while another live process on this host holds it.

    Two reproductions sharing a ``--runs`` directory (or the helpers of ``--jobs``) would otherwise train the
    same run twice into one checkpoint. A lock left by a process that died is taken over."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK_NAME
    host = os.uname().nodename
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text())
                pid, holder_host = int(holder["pid"]), str(holder["host"])
            except (OSError, ValueError, KeyError, TypeError):
                time.sleep(0.5)  # being written this instant, or removed; look again
                continue
            if holder_host == host and not _pid_alive(pid):
                log.warning("%s: taking over the lock of process %d, which is gone", key, pid)
                lock.unlink(missing_ok=True)
                continue
            return None
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": host}, f)
        return lock
