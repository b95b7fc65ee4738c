"""Metrics as JSON lines, TensorBoard scalars and (optionally) Weights & Biases; only the main process writes.

Every record goes to all the sinks that are on, with the same keys: ``metrics.jsonl`` holds
``{"kind": "step"|"epoch", "step": N, "time": ..., <metrics>}``; TensorBoard and W&B get each number as
``<kind>/<metric>`` (``epoch/knn_k200``, ``step/loss``) at the optimizer step ``N``.

W&B (``run.wandb = true``; ``pip install 'gsg-ssl[wandb]'``): project ``run.wandb_project``, run name
``run.wandb_name`` (default: the run directory's name), mode ``run.wandb_mode`` (``online``; ``offline``
writes the run under ``OUT/wandb`` — or ``$WANDB_DIR`` — for a later ``wandb sync``; ``disabled``). The
resolved config is the W&B run's config. The W&B run id is kept in ``OUT/wandb_id``, so a resumed run
continues the same W&B run.

On the console: the one-line epoch summary (:func:`fmt_metrics`) and the progress bar (:func:`progress_bar`).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gsg.errors import ConfigError

WANDB_INSTALL = "pip install 'gsg-ssl[wandb]'"
WANDB_ID_FILE = "wandb_id"


@dataclass
class WandbSettings:
    project: str = "gsg"
    name: str | None = None  # None: the run directory's name
    mode: str = "online"  # online | offline | disabled
    config: dict[str, Any] | None = None  # logged as the W&B run's config


class MetricsLogger:
    """Appends one JSON object per record to ``metrics.jsonl`` and mirrors numbers to TensorBoard and W&B."""

    def __init__(self, out_dir: Path, *, enabled: bool = True, tensorboard: bool = True,
                 wandb: WandbSettings | None = None) -> None:
        self.enabled = enabled
        self.path = out_dir / "metrics.jsonl"
        self._tb = None
        self._wandb: Any = None
        if enabled:
            out_dir.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._tb = SummaryWriter(log_dir=str(out_dir / "tb"))
                except ImportError:  # tensorboard is a dependency, but a broken install must not stop training
                    self._tb = None
            if wandb is not None:
                self._wandb = _start_wandb(out_dir, wandb)

    def log(self, kind: str, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, "time": round(time.time(), 3), **values}
        with self.path.open("a") as f:
            f.write(json.dumps(record, default=_jsonable) + "\n")
        numbers = {f"{kind}/{k}": v for k, v in values.items()
                   if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}
        if self._tb is not None:
            for k, v in numbers.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None and numbers:
            self._wandb.log(numbers, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _start_wandb(out_dir: Path, settings: WandbSettings) -> Any:
    try:
        import wandb
    except ImportError:
        raise ConfigError(f"run.wandb = true needs the wandb package: {WANDB_INSTALL} (or set run.wandb = false)"
                          ) from None
    id_file = out_dir / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if id_file.is_file() else None
    if not run_id:
        run_id = secrets.token_hex(4)  # W&B ids: lowercase letters and digits
        id_file.write_text(run_id + "\n")
    wandb_dir = Path(os.environ.get("WANDB_DIR") or out_dir)
    wandb_dir.mkdir(parents=True, exist_ok=True)
    try:
        return wandb.init(project=settings.project, name=settings.name or out_dir.resolve().name, id=run_id,
                          resume="allow", mode=settings.mode, dir=str(wandb_dir), config=settings.config)
    except Exception as exc:  # wandb raises its own errors (no login, no network): say what to change
        raise ConfigError(f"could not start the W&B run ({type(exc).__name__}: {exc}); log in with `wandb login`, "
                          "or set run.wandb_mode = offline (sync later with `wandb sync`) or run.wandb = false"
                          ) from exc


def _jsonable(v: Any) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def fmt_metrics(metrics: dict[str, Any]) -> str:
    """``k=v`` pairs for the console, floats to 4 significant digits."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())


def progress_bar(total: int, initial: int, desc: str, *, enabled: bool) -> Any:
    """A tqdm bar, or None when off (tqdm is imported only when one is wanted)."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)


def read_metrics(path: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Read back a ``metrics.jsonl`` (optionally only records of one kind)."""
    out = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            if kind is None or rec.get("kind") == kind:
                out.append(rec)
    return out
