"""Shared pieces of the benchmarks: machine description, interleaved timing, ratios, Markdown rendering.

Every benchmark's ``run()`` returns a plain JSON-able dict with a ``machine`` entry (``machine_info``) and
its numbers; ``format_report(name, result)`` turns that dict into a Markdown table for the docs and the CLI.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers restrict), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def machine_info(device: str | torch.device = "cpu") -> dict[str, Any]:
    """What a number depends on: CPU, cores, threads, torch build, device and the load when it was taken.

    The 1-minute load average is recorded because the benchmark machines are shared: a load above the core
    count means other processes competed for the CPU (ratios measured in one interleaved run stay
    comparable; absolute times do not).
    """
    dev = resolve_device(device)
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(dev),
        "device_name": "cpu",
        "load_avg_1min": load_average(),
    }
    if dev.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(dev)
        info["cuda"] = torch.version.cuda
    return info


def synchronize(device: torch.device) -> None:
    """Wait for queued device work so that a wall-clock interval covers it (CUDA kernels run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(fns: Mapping[str, Callable[[], object]], *, repeats: int, warmup: int = 1,
                      device: torch.device | None = None) -> dict[str, list[float]]:
    """Seconds per call of each function, timed round-robin: rep 1 runs every variant, then rep 2, ...

    Round-robin (rather than all reps of A, then all of B) makes background load, CPU frequency changes
    and allocator warm-up hit every variant alike; the starting variant rotates each round so that no
    variant always runs right after the same neighbour. ``warmup`` untimed rounds come first.
    """
    names = list(fns)
    dev = device or torch.device("cpu")
    for _ in range(warmup):
        for name in names:
            fns[name]()
        synchronize(dev)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize(dev)
            t0 = time.perf_counter()
            fns[name]()
            synchronize(dev)
            times[name].append(time.perf_counter() - t0)
    return times


def summarize_times(times: Sequence[float]) -> dict[str, float]:
    """Median (the benchmark's number: robust to the odd preempted repetition), min, max, spread and count."""
    xs = sorted(times)
    med = statistics.median(xs)
    q1, q3 = (statistics.quantiles(xs, n=4)[0], statistics.quantiles(xs, n=4)[2]) if len(xs) >= 2 else (med, med)
    return {"median_s": med, "min_s": xs[0], "max_s": xs[-1], "iqr_s": q3 - q1, "n": len(xs)}


def ratios(medians: Mapping[str, float], baseline: str) -> dict[str, float]:
    """Each median divided by the baseline's median (1.0 for the baseline itself)."""
    base = medians[baseline]
    if base <= 0:
        raise ValueError(f"baseline {baseline!r} has a non-positive time {base}")
    return {name: m / base for name, m in medians.items()}


# ---------------------------------------------------------------------------------------------- rendering


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != v:  # NaN
            return "n/a"
        a = abs(v)
        if a == 0:
            return "0"
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.3g}" if a < 10 else f"{v:.2f}"
        return f"{v:.3g}"
    if v is None:
        return "—"
    if isinstance(v, list | tuple):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A Markdown table of dict rows; columns default to the union of keys in first-seen order."""
    if not rows:
        return "(no rows)\n"
    cols: list[str] = list(columns) if columns else []
    if not columns:
        for row in rows:
            cols.extend(k for k in row if k not in cols)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in cols) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def machine_line(info: Mapping[str, Any]) -> str:
    dev = info.get("device_name", "cpu")
    return (f"Machine: {info.get('cpu')} ({info.get('cores')} cores, {info.get('torch_threads')} torch threads), "
            f"device {dev}, torch {info.get('torch')}, load average {info.get('load_avg_1min')} at start"
            + (f", {info.get('load_avg_end')} at end" if info.get("load_avg_end") is not None else "") + ".\n")


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


# Raw per-repetition or per-epoch records: kept in the JSON (--out), summarised by the tables, not listed.
BULKY = ("raw", "runs")


def format_report(name: str, result: Mapping[str, Any]) -> str:
    """Markdown for one benchmark result: a machine line, the options, and one table per ``tables`` entry.

    Each bench's run() puts its rows under ``result["tables"]`` ({title: [row dicts]}); every other field
    (besides the machine and the options) is listed as ``key: value`` under "Other fields", so nothing the
    bench measured is missing from the report.
    """
    parts = [f"### gsg bench {name}\n", machine_line(result.get("machine", {}))]
    options = result.get("options", {})
    if options:
        parts.append("Options: " + ", ".join(f"`{k}={_fmt(v)}`" for k, v in options.items()) + "\n")
    for title, rows in result.get("tables", {}).items():
        parts.append(f"\n**{title}**\n\n" + table(rows))
    extra: dict[str, Any] = {}
    for k, v in result.items():
        if k not in ("machine", "options", "tables", *BULKY):
            _flat(k, v, extra)
    if extra:
        parts.append("\nOther fields:\n\n" + "".join(f"- {k}: {_fmt(v)}\n" for k, v in extra.items()))
    return "".join(parts)


def finish(result: dict[str, Any]) -> dict[str, Any]:
    """Record the load at the end next to the load at the start (the machine line shows both)."""
    result.setdefault("machine", {})["load_avg_end"] = load_average()
    return result
