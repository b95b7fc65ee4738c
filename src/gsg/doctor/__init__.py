"""``gsg doctor``: run every GPU code path once at small sizes and print a PASS/FAIL/SKIP table.

The first command to run on a machine with a GPU (``gsg doctor --device cuda``, about 5 minutes on one
GPU, most of it torch.compile): training in fp32, bf16 with channels-last and the dataset on the device,
fp16 with a GradScaler, BYOL + DirectPred + fresh views, the online kNN monitor, resume, torch.compile of the
model and the augmentation (graph breaks and recompiles counted), kNN / linear probe / diagnose on the
device, a device checkpoint evaluated and resumed on the CPU, CUDA's sync-debug mode on training steps, the
epoch benchmark and, with 2+ GPUs, 2-process NCCL runs (SyncBatchNorm, the BYOL target, compile, the kNN
monitor on an ImageNet-style folder). Steps that need what the machine lacks say SKIP and why.

``--device cpu`` runs the same steps with the CPU standing in (the test suite does, with ``--quick``).
Every step writes ``OUT/<step>.log``; ``OUT/doctor.json`` holds the table.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from gsg.doctor.steps import STEPS, Context, Skip
from gsg.errors import ConfigError

log = logging.getLogger("gsg.doctor")

__all__ = ["STEPS", "Report", "StepResult", "run_doctor"]


@dataclass
class StepResult:
    name: str
    status: str  # PASS | FAIL | SKIP
    seconds: float
    detail: str


@dataclass
class Report:
    device: str
    steps: list[StepResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.status != "FAIL" for s in self.steps)

    def table(self) -> str:
        width = max([len(s.name) for s in self.steps] + [4])
        lines = [f"gsg doctor on {self.device}", f"{'step':<{width}}  status  {'s':>6}  detail"]
        for s in self.steps:
            lines.append(f"{s.name:<{width}}  {s.status:<6}  {s.seconds:>6.1f}  {s.detail}")
        counts = {k: sum(s.status == k for s in self.steps) for k in ("PASS", "FAIL", "SKIP")}
        lines.append(", ".join(f"{v} {k}" for k, v in counts.items()))
        return "\n".join(lines)


def _resolve(device: str) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("gsg doctor --device cuda: no GPU is visible (torch.cuda.is_available() is False; "
                          f"torch {torch.__version__}, CUDA build {torch.version.cuda}); use --device cpu to "
                          "check the CPU stand-ins")
    if dev.type not in ("cuda", "cpu"):
        raise ConfigError(f"gsg doctor checks cuda or cpu, not {device!r}")
    return dev


def run_doctor(device: str = "cuda", out: str | Path = "runs/doctor", *, quick: bool = False,
               skip: Sequence[str] = (), only: Sequence[str] = (),
               on_step: Callable[[StepResult], None] | None = None) -> Report:
    """Run the steps in order (``only``: just these; ``skip``: all but these); see the module docstring."""
    unknown = sorted(set(skip) | set(only) - set(STEPS))
    if unknown:
        raise ConfigError(f"unknown doctor step(s) {', '.join(unknown)}; steps: {', '.join(STEPS)}")
    dev = _resolve(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(device=dev, out=out, quick=quick)
    report = Report(device=_describe(dev))
    for name, fn in STEPS.items():
        if (only and name not in only) or name in skip:
            result = StepResult(name, "SKIP", 0.0, "not requested" if only else "skipped (--skip)")
        else:
            result = _run_step(name, fn, ctx)
        report.steps.append(result)
        if on_step is not None:
            on_step(result)
    (out / "doctor.json").write_text(json.dumps({"device": report.device, "steps": [asdict(s) for s in report.steps]},
                                                indent=2))
    return report


def _describe(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return f"cpu (torch {torch.__version__})"


def _run_step(name: str, fn: Callable[[Context], str], ctx: Context) -> StepResult:
    path = ctx.out / f"{name}.log"
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(min(old_level, logging.INFO) if old_level else logging.INFO)
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            logging.captureWarnings(True)
            detail = fn(ctx)
        status = "PASS"
    except Skip as exc:
        status, detail = "SKIP", str(exc)
    except Exception as exc:  # a failing step must not stop the others: its traceback goes to its log
        status, detail = "FAIL", f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        logging.getLogger("gsg.doctor").error("step %s failed:\n%s", name, traceback.format_exc())
    finally:
        logging.captureWarnings(False)
        seconds = time.perf_counter() - t0
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
    with path.open("a") as f:
        f.write(f"\n{status} in {seconds:.1f} s: {detail}\n")
    return StepResult(name, status, seconds, detail)
