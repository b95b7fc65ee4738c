"""Checkpoints: atomic writes, loads that never execute code, and the backbone for evaluation.

A checkpoint is a ``torch.save`` dict of tensors and plain Python values, read back with
``torch.load(weights_only=True)``: a file crafted to run code when unpickled is refused, not run.

Layout (``FORMAT_VERSION`` 1)::

    {"gsg_checkpoint": 1,
     "config": {...},            # the full resolved config, plain JSON types
     "backbone": {"arch", "width", "in_channels", "cifar_stem", "image_size"},
     "data": {"dataset", "mean", "std", "image_size", "channels"},
     "model": state_dict,        # Siamese model: "backbone.*", "projector.*", "predictor.*", "target.*"
     "train_state": {...},       # optimizer, epoch, step, RNG states ... (for --resume)
     "metrics": {...}}
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from gsg.errors import CheckpointError
from gsg.models.backbones import Backbone

FORMAT_KEY = "gsg_checkpoint"
FORMAT_VERSION = 1


def save_atomic(obj: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``obj`` to ``path`` so that a crash at any moment leaves either the old or the new file.

    The bytes go to a temporary file in the same directory, are fsynced, then renamed over ``path``
    (``os.replace`` is atomic on POSIX and Windows). On failure (disk full, ...) the temporary file is
    removed and the previous checkpoint is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise CheckpointError(
                f"could not write checkpoint {path}: {exc.strerror or exc}. The previous checkpoint, if any, "
                "is intact; free disk space or choose another --out directory."
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


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a gsg checkpoint without executing code from it.

    Raises :class:`CheckpointError` naming the problem for a missing, truncated, non-gsg or unsafe file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the path of a checkpoint.pt that "
                              "`gsg pretrain` wrote (it is in the run's --out directory)")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refused to load {path}: it contains objects that would run code when unpickled ({exc}). "
            "gsg checkpoints hold only tensors and plain values; do not load files from untrusted sources."
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({type(exc).__name__}: {exc}); use an earlier "
            "checkpoint or retrain"
        ) from exc
    if not isinstance(obj, dict) or obj.get(FORMAT_KEY) is None:
        raise CheckpointError(f"{path} is not a gsg checkpoint (no {FORMAT_KEY!r} key)")
    if obj[FORMAT_KEY] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {obj[FORMAT_KEY]}, this gsg reads format {FORMAT_VERSION}"
        )
    return obj


def backbone_from_checkpoint(ckpt: dict[str, Any], *, target: bool = False) -> Backbone:
    """Rebuild the backbone a checkpoint was trained with and load its weights (eval mode).

    ``target=True`` takes BYOL's EMA (target) backbone instead of the online one.
    """
    spec = ckpt["backbone"]
    net = Backbone(spec["arch"], width=spec["width"], in_channels=spec["in_channels"],
                   cifar_stem=spec["cifar_stem"])
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
