"""Evaluation results as JSON files next to the checkpoint they measure.

``<ckpt_dir>/<ckpt_stem>.<protocol>.<dataset>.json`` holds the number and everything needed to trust and
rerun it: the checkpoint's SHA-256 (so a result cannot be attributed to a retrained file of the same
name), the exact command line, the gsg version and a UTC timestamp.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

import gsg
from gsg.checkpoint import file_sha256
from gsg.errors import CheckpointError, ConfigError

RESULT_FORMAT = 1


def result_path(ckpt_path: str | os.PathLike[str], protocol: str, dataset: str) -> Path:
    """``<ckpt_dir>/<ckpt_stem>.<protocol>.<dataset>.json`` (dataset sanitised to a file-name part)."""
    ckpt = Path(ckpt_path)
    return ckpt.with_name(f"{ckpt.stem}.{_slug(protocol)}.{_slug(dataset)}.json")


def write_result(ckpt_path: str | os.PathLike[str], protocol: str, dataset: str, metric: str, value: float,
                 extra: dict[str, Any] | None = None, command: str | list[str] | None = None) -> Path:
    """Write one result JSON next to the checkpoint (atomically) and return its path.

    ``extra``: protocol details (hyper-parameters, other metrics); it must be JSON-serialisable (numpy
    scalars and tensors of one element are converted). ``command``: the command line that produced the
    number, as a string or argv list.
    """
    ckpt = Path(ckpt_path)
    if not ckpt.is_file():
        raise CheckpointError(f"checkpoint {ckpt} does not exist; results are stored next to the checkpoint "
                              "they measure")
    if not math.isfinite(float(value)):
        raise ConfigError(f"refusing to record a non-finite {metric} ({value}) for {protocol}/{dataset}")
    record = {
        "format": RESULT_FORMAT,
        "protocol": protocol,
        "dataset": dataset,
        "metric": metric,
        "value": float(value),
        "checkpoint": str(ckpt.resolve()),
        "checkpoint_sha256": file_sha256(ckpt),
        "command": command if isinstance(command, str) or command is None else " ".join(map(str, command)),
        "gsg_version": gsg.__version__,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "extra": _jsonable(extra or {}),
    }
    out = result_path(ckpt, protocol, dataset)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def read_result(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a result JSON written by :func:`write_result`."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _slug(text: str) -> str:
    # Dataset names can be folder paths (imagefolder); keep the last component, file-name safe.
    name = Path(str(text).rstrip("/\\")).name or str(text)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "dataset"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (np.generic, np.ndarray, torch.Tensor)):
        return _jsonable(obj.tolist())  # 0-d arrays and tensors give a Python scalar
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise ConfigError(f"result field of type {type(obj).__name__} is not JSON-serialisable; pass plain "
                      "values")
