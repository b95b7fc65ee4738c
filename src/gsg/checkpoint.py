"""Checkpoints: atomic writes, loads that never execute code, and the backbone for evaluation.

A checkpoint is a ``torch.save`` dict of tensors and plain Python values, read back with
``torch.load(weights_only=True)``: a file crafted to run code when unpickled is refused, not run.

Layout (``FORMAT_VERSION`` 1)::

    {"gsg_checkpoint": 1,
     "config": {...},            # the full resolved config, plain JSON types
     "backbone": {"arch", "width", "in_channels", "cifar_stem", "image_size"},  # + "timm_kwargs" for timm:NAME
     "data": {"dataset", "mean", "std", "image_size", "channels"},
     "model": state_dict,        # Siamese model: "backbone.*", "projector.*", "predictor.*", "target.*"
     "train_state": {...},       # optimizer, epoch, step, RNG states ... (for --resume)
     "metrics": {...},
     "integrity": {"algorithm": "sha256", "digest": ...}}   # added by save_atomic, checked on load

Reliability (docs/reliability.md):

- :func:`save_atomic` writes to ``.<name>.<host>.<pid>.<random>.tmp`` in the same folder, fsyncs it and renames
  it over the target, so a crash, SIGKILL or full disk at any moment leaves the previous file intact.
  Temporary files left by a killed process of this host are removed by the next save.
- A write error (``ENOSPC``, ``EFBIG``, ``EDQUOT``, ...) becomes :class:`CheckpointError` naming the error;
  ``torch.save`` itself would turn it into an opaque ``RuntimeError`` ("unexpected pos").
- gsg checkpoints carry a SHA-256 of their contents: ``torch.load`` does not check the zip CRCs, so a flipped
  bit in the tensor data would otherwise load silently.
- Testing hook: ``GSG_TEST_CHECKPOINT_PAUSE="write:SECONDS"`` makes save_atomic sleep after the first 64 KiB
  are in the temporary file, ``"rename:SECONDS"`` after the file is complete and fsynced but before the
  rename, so that a test can kill the process at exactly that moment (tests/test_reliability_preemption.py).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import pickle
import socket
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gsg.errors import CheckpointError

if TYPE_CHECKING:  # imported where used: torchvision (1-3 s) is not needed to save or load a checkpoint
    from gsg.models.backbones import Backbone

log = logging.getLogger(__name__)

FORMAT_KEY = "gsg_checkpoint"
FORMAT_VERSION = 1
INTEGRITY_KEY = "integrity"
PAUSE_ENV = "GSG_TEST_CHECKPOINT_PAUSE"
_PAUSE_AFTER_BYTES = 64 * 1024
_TMP_SUFFIX = ".tmp"


# ------------------------------------------------------------------------------------------------ writing


class _Sink:
    """The temporary file as ``torch.save`` sees it: remembers the OSError a write raised.

    torch.save calls ``write`` from C++ and replaces a Python exception by ``RuntimeError: unexpected pos``;
    keeping the original lets save_atomic say "No space left on device".
    """

    def __init__(self, f: Any, pause: tuple[str, float] | None) -> None:
        self._f = f
        self.error: OSError | None = None
        self.written = 0
        self._pause = pause

    def write(self, data: Any) -> int:
        try:
            n = self._f.write(data)
        except OSError as exc:
            if self.error is None:
                self.error = exc
            raise
        self.written += memoryview(data).nbytes
        if self._pause is not None and self._pause[0] == "write" and self.written >= _PAUSE_AFTER_BYTES:
            self._f.flush()
            os.fsync(self._f.fileno())
            seconds, self._pause = self._pause[1], None
            time.sleep(seconds)
        return n

    def flush(self) -> None:
        self._f.flush()


def _test_pause() -> tuple[str, float] | None:
    raw = os.environ.get(PAUSE_ENV, "")
    if not raw:
        return None
    phase, _, seconds = raw.partition(":")
    try:
        value = float(seconds)
    except ValueError:
        value = -1.0
    if phase not in ("write", "rename") or value < 0:
        log.warning("ignoring %s=%r: expected 'write:SECONDS' or 'rename:SECONDS'", PAUSE_ENV, raw)
        return None
    return phase, value


def _host() -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname()) or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # another user's process, or a platform without signal 0: assume it is in use
    return True


def _stale_temps(path: Path) -> list[Path]:
    """Temporary files of ``path`` left by killed processes of this host (or by this process's pid earlier).

    A temp name is ``.<name>.<host>.<pid>.<random>.tmp``; files of other hosts (shared file systems) and of
    living processes are left alone, as they may be writing right now.
    """
    prefix, host, me = f".{path.name}.", _host(), os.getpid()
    stale = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return []
    for p in entries:
        name = p.name
        if not (name.startswith(prefix) and name.endswith(_TMP_SUFFIX)):
            continue
        parts = name[len(prefix):-len(_TMP_SUFFIX)].rsplit(".", 2)
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid == me or not _pid_alive(pid):
            stale.append(p)
    return stale


def _remove_stale_temps(path: Path) -> None:
    removed = []
    for p in _stale_temps(path):
        try:
            p.unlink()
            removed.append(p.name)
        except OSError:
            pass
    if removed:
        log.warning("removed %d temporary file(s) left in %s by an interrupted checkpoint write: %s",
                    len(removed), path.parent, ", ".join(removed))


def save_atomic(obj: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``obj`` to ``path`` so that a crash at any moment leaves either the old or the new file.

    The bytes go to a temporary file in the same directory, are fsynced, then renamed over ``path``
    (``os.replace`` is atomic on POSIX and Windows). On failure (disk full, ...) the temporary file is
    removed, the previous checkpoint is untouched and :class:`CheckpointError` names the error. A gsg
    checkpoint (a dict with ``"gsg_checkpoint"``) gets a content digest that :func:`load_checkpoint` checks.
    """
    path = Path(path)
    if isinstance(obj, dict) and FORMAT_KEY in obj:
        body = {k: v for k, v in obj.items() if k != INTEGRITY_KEY}
        obj = {**body, INTEGRITY_KEY: {"algorithm": "sha256", "digest": content_digest(body)}}
    pause = _test_pause()
    tmp: str | None = None
    sink: _Sink | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_host()}.{os.getpid()}.", suffix=_TMP_SUFFIX,
                                   dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            sink = _Sink(f, pause)
            torch.save(obj, sink)
            f.flush()
            os.fsync(f.fileno())
        if pause is not None and pause[0] == "rename":
            time.sleep(pause[1])
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        os_error = exc if isinstance(exc, OSError) else (sink.error if sink is not None else None)
        if os_error is not None:
            code = errno.errorcode.get(os_error.errno or 0, "")
            reason = os_error.strerror or str(os_error)
            raise CheckpointError(
                f"could not write checkpoint {path}: {reason}{f' ({code})' if code else ''}. The previous "
                "checkpoint, if any, is intact; free disk space or choose another --out directory."
            ) from exc
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------------ digest


def content_digest(obj: Any) -> str:
    """SHA-256 of a checkpoint's contents: every tensor's dtype, shape and bytes, and every plain value.

    Independent of dict order and of the device tensors live on, so that it is the same when written and
    when read back (with ``weights_only=True``) onto another device.
    """
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: Any, x: Any) -> None:
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        h.update(f"T{t.dtype}{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy())
    elif isinstance(x, dict):
        h.update(f"D{len(x)};".encode())
        for k in sorted(x, key=lambda k: (type(k).__name__, repr(k))):
            _feed(h, k)
            _feed(h, x[k])
    elif isinstance(x, list | tuple):
        h.update(f"{'L' if isinstance(x, list) else 'U'}{len(x)};".encode())
        for v in x:
            _feed(h, v)
    elif isinstance(x, set | frozenset):
        h.update(f"S{len(x)};".encode())
        for v in sorted(x, key=repr):
            _feed(h, v)
    else:
        r = repr(x)
        h.update(f"V{type(x).__name__}:{len(r)}:{r};".encode())


# ------------------------------------------------------------------------------------------------ loading


def _unsafe_reason(exc: BaseException) -> str:
    """The line of torch's weights-only error that names what was refused (not its advice to disable it)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if "GLOBAL" in ln or "Unsupported" in ln or "unsupported" in ln:
            return ln
    keep = [ln for ln in lines if "weights_only" not in ln and "http" not in ln]
    return keep[0] if keep else type(exc).__name__


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a gsg checkpoint without executing code from it.

    Raises :class:`CheckpointError` naming the problem for a missing, truncated, corrupt (content digest
    mismatch), non-gsg, malformed or unsafe file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the path of a checkpoint.pt that "
                              "`gsg pretrain` wrote (it is in the run's --out directory)")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pickle protocol.*", category=UserWarning)
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unsafe_reason(exc)
        if "GLOBAL" not in reason:  # an opcode the safe unpickler does not know: garbage, e.g. a cut-off file
            raise CheckpointError(
                f"checkpoint {path} is truncated or corrupt (not a checkpoint's pickle: {reason}); nothing from "
                "it was executed; use an earlier checkpoint or retrain"
            ) from exc
        raise CheckpointError(
            f"refused to load {path}: it is not a plain checkpoint of tensors and values and could run code "
            f"when unpickled ({reason}). Nothing from it was executed. gsg checkpoints hold "
            "only tensors and plain values; do not load files from untrusted sources."
        ) from exc
    except PermissionError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
    except Exception as exc:  # RuntimeError (zip), EOFError, ValueError, ...: the bytes are not a checkpoint
        first = (str(exc).strip().splitlines() or [""])[0]
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({type(exc).__name__}{': ' + first if first else ''}); "
            "use an earlier checkpoint or retrain"
        ) from exc
    if not isinstance(obj, dict) or obj.get(FORMAT_KEY) is None:
        raise CheckpointError(f"{path} is not a gsg checkpoint (no {FORMAT_KEY!r} key)")
    if obj[FORMAT_KEY] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {obj[FORMAT_KEY]!r}, this gsg reads format {FORMAT_VERSION}"
        )
    integrity = obj.pop(INTEGRITY_KEY, None)
    if integrity is not None:
        expected = integrity.get("digest") if isinstance(integrity, dict) else None
        if not isinstance(expected, str) or content_digest(obj) != expected:
            raise CheckpointError(
                f"checkpoint {path} is corrupt: its contents do not match the SHA-256 written with it (a "
                "damaged disk or an incomplete copy); copy it again or use an earlier checkpoint"
            )
    _check_layout(obj, path)
    return obj


def _check_layout(obj: dict[str, Any], path: Path) -> None:
    """The parts every gsg checkpoint has, with the right types, so that a crafted file gives no KeyError."""
    for key in ("config", "backbone", "data", "model"):
        if not isinstance(obj.get(key), dict):
            raise CheckpointError(f"{path} is a malformed gsg checkpoint: {key!r} is "
                                  f"{'missing' if key not in obj else type(obj[key]).__name__}, not a table")
    bad = [k for k, v in obj["model"].items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path} is a malformed gsg checkpoint: 'model' entries that are not tensors: "
                              f"{bad[:5]}")
    missing = [k for k in ("arch", "width", "in_channels", "cifar_stem") if k not in obj["backbone"]]
    if missing:
        raise CheckpointError(f"{path} is a malformed gsg checkpoint: its backbone spec lacks {missing}")


TRAIN_STATE_KEYS = ("optimizer", "scaler", "epoch", "step", "batch_in_epoch", "lr_scale", "rng")


def check_resumable(ckpt: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Raise CheckpointError unless ``ckpt`` holds what ``--resume`` needs (train_state, metrics history).

    Checkpoints made for evaluation only (e.g. converted from another framework) have weights but no
    training state.
    """
    ts = ckpt.get("train_state")
    if not isinstance(ts, dict):
        raise CheckpointError(f"{path} holds weights but no training state, so training cannot resume from "
                              "it; start a new run (it can still be evaluated)")
    missing = [k for k in TRAIN_STATE_KEYS if k not in ts]
    if missing:
        raise CheckpointError(f"{path} is a malformed gsg checkpoint: its training state lacks {missing}")
    metrics = ckpt.get("metrics")
    if not isinstance(metrics, dict) or not isinstance(metrics.get("history"), list):
        raise CheckpointError(f"{path} is a malformed gsg checkpoint: no metrics history")


def backbone_from_checkpoint(ckpt: dict[str, Any], *, target: bool = False) -> Backbone:
    """Rebuild the backbone a checkpoint was trained with and load its weights (eval mode).

    ``target=True`` takes BYOL's EMA (target) backbone instead of the online one.
    """
    from gsg.models.backbones import backbone_from_spec

    spec = ckpt["backbone"]
    try:
        net = backbone_from_spec(spec)  # a gsg ResNet, or the timm model of a "timm:NAME" spec
    except KeyError as exc:
        raise CheckpointError(f"checkpoint backbone spec {spec} lacks {exc}") from exc
    prefix = "target.backbone." if target else "backbone."
    state = {k[len(prefix):]: v for k, v in ckpt["model"].items() if k.startswith(prefix)}
    if not state:
        raise CheckpointError(f"checkpoint has no weights under {prefix!r}"
                              + (" (only BYOL checkpoints have a target backbone)" if target else ""))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint backbone does not match its recorded spec {spec}: {exc}") from exc
    return net.eval()


def load_backbone(path: str | os.PathLike[str], map_location: str | torch.device = "cpu",
                  *, target: bool = False) -> tuple[Backbone, dict[str, Any]]:
    """Load the backbone of a checkpoint for evaluation. Returns ``(backbone, checkpoint_dict)``."""
    ckpt = load_checkpoint(path, map_location)
    return backbone_from_checkpoint(ckpt, target=target), ckpt


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, to name the exact checkpoint in evaluation results."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
