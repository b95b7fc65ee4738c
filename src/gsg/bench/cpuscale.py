"""Training throughput of the CPU-scale model: bf16 autocast, torch.compile, and one 2-thread vs two 1-thread runs.

The question (issue #12): on a small CPU (the development machine: 2 cores of an AMD EPYC with AVX-512 BF16),
which of (a) bf16 autocast (``run.amp = "bf16"``), (b) ``torch.compile`` (``run.compile = true``), (c) two
single-thread training runs side by side instead of one two-thread run buys training throughput for the
CPU-scale model: SimSiam + guided stop-gradient (views reuse, the GSG default), CIFAR-stem ResNet-18 at width
0.25, projector 512, predictor hidden 128, batch 256, on 1-channel 28 px images (Fashion-MNIST's shape, from
the synthetic dataset with ``channels=1``; its grayscale recipe is what a Fashion-MNIST run picks).

Part 1 (one process, ``threads`` torch threads): four real :class:`gsg.train.loop.Trainer` s — fp32, bf16,
fp32 + compile, bf16 + compile, all channels-last — take one training step each
(:func:`gsg.bench.steps.train_step`: augment, encode, policy loss, backward, SGD, exactly the loop's step) on
the same uint8 batch, timed round-robin (``report.interleaved_times``) and compared by median step time as
ratios to fp32. Every Trainer starts from the same weights and augmentation RNG state, so the first steps'
losses are comparable: their difference to fp32 is a sanity number for bf16 (not an accuracy claim). A
compiled variant's first two steps (compilation of the forward, the backward and the augmentation, and any
recompilation) are timed separately and reported as its compile time, with inductor's cache hits.

Part 2 (process layout): one process with ``layout_threads`` torch threads runs ``layout_steps`` steps, then
(in the next round the other way round) ``layout_threads`` processes with one thread each run
``layout_steps`` steps each at the same time. Every process is started with multiprocessing's spawn, builds
its Trainer, takes ``layout_warmup`` untimed steps and waits at a barrier; the layout's wall time runs from
the first process leaving the barrier to the last one finishing. Throughput = images trained / wall time.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import queue as queue_mod
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gsg.bench.epoch import dataset_override
from gsg.bench.report import finish, interleaved_times, machine_info, ratios, resolve_device, summarize_times
from gsg.bench.steps import bench_config, first_batch, paired_ratio, train_step
from gsg.config import Config
from gsg.data.datasets import TensorImageDataset, load_dataset
from gsg.errors import ConfigError, GsgError
from gsg.train.loop import Trainer

# (name, run.amp, run.compile)
VARIANTS: tuple[tuple[str, str, bool], ...] = (
    ("fp32", "off", False),
    ("bf16", "bf16", False),
    ("fp32 + compile", "off", True),
    ("bf16 + compile", "bf16", True),
)
BASELINE = "fp32"
STEPS_TABLE = "Median step time, one process (round-robin)"
LAYOUT_TABLE = "Process layout: throughput of the same training step"


def model_sizes(quick: bool) -> dict[str, Any]:
    """The CPU-scale model and batch (the quickstart preset's), or a tiny one for tests."""
    if quick:
        return {"width": 0.125, "proj_dim": 32, "pred_hidden": 16, "batch_size": 16, "image_size": 16,
                "channels": 1}
    return {"width": 0.25, "proj_dim": 512, "pred_hidden": 128, "batch_size": 256, "image_size": 28, "channels": 1}


def cpuscale_config(out: Path, sizes: dict[str, Any], *, amp: str, compile: bool, seed: int = 0) -> Config:
    """``steps.bench_config`` (SimSiam, guided, views reuse, monitoring off, channels-last) with the recipe a run
    on these images picks (grayscale for 1 channel, cifar for 3) instead of bench_config's fixed cifar one."""
    model = {k: v for k, v in sizes.items() if k != "channels"}
    cfg = bench_config(out, method="simsiam", stop_gradient="guided", views="reuse", device=torch.device("cpu"),
                       amp=amp, channels_last=True, compile=compile, seed=seed, **model)
    cfg.data.recipe = None
    return cfg


def shaped_dataset(sizes: dict[str, Any]) -> TensorImageDataset:
    """Synthetic images of the benchmark's shape (channels x image_size²), at least two batches of them."""
    ds = load_dataset("synthetic", "pretrain", channels=sizes["channels"], image_size=sizes["image_size"],
                      synthetic_size=max(512, 2 * sizes["batch_size"]))
    assert isinstance(ds, TensorImageDataset)
    return ds


def make_trainer(out: Path, sizes: dict[str, Any], ds: TensorImageDataset, *, amp: str, compile: bool,
                 seed: int = 0) -> Trainer:
    """A real Trainer on ``ds`` (loaded in place of the config's dataset), in training mode."""
    with dataset_override(ds):
        tr = Trainer(cpuscale_config(out, sizes, amp=amp, compile=compile, seed=seed))
    tr.model.train()
    return tr


def inductor_cache_counts() -> dict[str, int]:
    """Inductor's FX-graph cache hits and misses so far in this process (a hit skips most of a compilation)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:  # pragma: no cover - private API
        return {}
    return {"hit": int(counters["inductor"].get("fxgraph_cache_hit", 0)),
            "miss": int(counters["inductor"].get("fxgraph_cache_miss", 0))}


def bf16_support() -> dict[str, Any]:
    """What the CPU offers bf16 matrix multiplies: oneDNN's verdict and the relevant /proc/cpuinfo flags."""
    flags: list[str] = []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = sorted({x for x in line.split(":", 1)[1].split() if "bf16" in x or x.startswith("amx")})
                    break
    except OSError:
        pass
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        onednn = None
    return {"onednn_bf16": onednn, "cpu_flags": flags, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


# ------------------------------------------------------------------------------------------------ part 1


def step_variants(sizes: dict[str, Any], ds: TensorImageDataset, tmp: Path, *, repeats: int, warmup: int,
                  compile: bool) -> dict[str, Any]:
    """Per-round step seconds of each variant (``raw``) and per variant its first steps, loss and compile data."""
    variants = [v for v in VARIANTS if compile or not v[2]]
    fns: dict[str, Callable[[], object]] = {}
    first: dict[str, dict[str, Any]] = {}
    images: Tensor | None = None
    for name, amp, compiled in variants:
        tr = make_trainer(tmp / name.replace(" ", "_").replace("+", "plus"), sizes, ds, amp=amp, compile=compiled)
        if images is None:
            images = first_batch(tr)  # one batch for every variant: same pixels, same cost
        step = train_step(tr)
        cache0 = inductor_cache_counts()
        # First two steps timed on their own: compilation (forward, backward, augmentation) and any recompile.
        t0 = time.perf_counter()
        loss = float(step(images))
        t1 = time.perf_counter()
        step(images)
        t2 = time.perf_counter()
        cache1 = inductor_cache_counts()
        first[name] = {"amp": amp, "compile": compiled, "first_step_s": t1 - t0, "second_step_s": t2 - t1,
                       "first_step_loss": loss,
                       "cache_hits": cache1.get("hit", 0) - cache0.get("hit", 0) if compiled else None,
                       "cache_misses": cache1.get("miss", 0) - cache0.get("miss", 0) if compiled else None}
        fns[name] = (lambda s=step, x=images: s(x))  # type: ignore[misc]
    raw = interleaved_times(fns, repeats=repeats, warmup=warmup, device=torch.device("cpu"))
    return {"raw": raw, "first": first}


def step_table(raw: dict[str, list[float]], first: dict[str, dict[str, Any]], batch: int) -> list[dict[str, Any]]:
    """Rows: median step, images/s, time ratio to fp32 (of medians, and paired per round), first steps, loss."""
    medians = {name: summarize_times(ts)["median_s"] for name, ts in raw.items()}
    rel = ratios(medians, BASELINE)
    base_loss = first[BASELINE]["first_step_loss"]
    rows = []
    for name, med in medians.items():
        f = first[name]
        rows.append({
            "variant": name, "amp": f["amp"], "compiled": f["compile"],
            "median step ms": 1000.0 * med, "IQR ms": 1000.0 * summarize_times(raw[name])["iqr_s"],
            "images/s": batch / med,
            "time ratio to fp32": rel[name],
            "paired ratio to fp32": paired_ratio(raw[name], raw[BASELINE])["median"],
            "first step s": f["first_step_s"], "second step s": f["second_step_s"],
            # the warm-up steps' excess over a steady step: for a compiled variant, its compilation
            "compile s": f["first_step_s"] + f["second_step_s"] - 2 * med if f["compile"] else None,
            "inductor cache hits/misses": f"{f['cache_hits']}/{f['cache_misses']}" if f["compile"] else None,
            "first-step loss": f["first_step_loss"],
            "loss − fp32": f["first_step_loss"] - base_loss,
        })
    return rows


# ------------------------------------------------------------------------------------------------ part 2


def _layout_worker(rank: int, spec: dict[str, Any], barrier: Any, queue: Any) -> None:
    """One training process of a layout (spawn target): build, warm up, wait at the barrier, time the steps."""
    try:
        torch.set_num_threads(spec["threads"])
        ds = shaped_dataset(spec["sizes"])
        tr = make_trainer(Path(spec["out"]) / f"rank{rank}", spec["sizes"], ds, amp=spec["amp"],
                          compile=spec["compile"], seed=spec["seed"] + rank)  # two independent runs, two seeds
        step = train_step(tr)
        images = first_batch(tr)
        for _ in range(spec["warmup"]):
            step(images)
        barrier.wait(timeout=spec["timeout_s"])
        # time.monotonic is CLOCK_MONOTONIC on Linux: one clock for all processes, so the layout's wall time
        # is max(end) - min(start) over its processes.
        start = time.monotonic()
        losses = [float(step(images)) for _ in range(spec["steps"])]
        end = time.monotonic()
        queue.put({"rank": rank, "pid": os.getpid(), "threads": torch.get_num_threads(), "start": start,
                   "end": end, "steps": spec["steps"], "images": spec["steps"] * spec["sizes"]["batch_size"],
                   "losses_finite": all(math.isfinite(x) for x in losses)})
    except BaseException:  # reported to the parent, which raises it
        barrier.abort()
        queue.put({"rank": rank, "pid": os.getpid(), "error": traceback.format_exc()})


def run_layout(processes: int, threads: int, spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``processes`` training processes of ``threads`` threads at once; their records and the throughput."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(processes), ctx.Queue()
    spec = {**spec, "threads": threads}
    procs = [ctx.Process(target=_layout_worker, args=(r, spec, barrier, queue), daemon=True)
             for r in range(processes)]
    for p in procs:
        p.start()
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + spec["timeout_s"]
    try:
        while len(records) < processes:
            try:
                rec = queue.get(timeout=1.0)
            except queue_mod.Empty:
                # A process killed outright (out of memory, a signal) reports nothing: do not wait for it.
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise GsgError(f"gsg bench cpuscale: a layout process (pid {dead[0].pid}) died with exit code "
                                   f"{dead[0].exitcode} before reporting; rerun, or lower batch_size if it ran "
                                   "out of memory") from None
                if time.monotonic() > deadline:
                    raise GsgError(f"gsg bench cpuscale: the {layout_name(processes, threads)} layout did not "
                                   f"finish within timeout_s={spec['timeout_s']} s; raise timeout_s or lower "
                                   "layout_steps") from None
                continue
            if "error" in rec:  # the first failure, not a sibling's BrokenBarrierError that follows it
                raise GsgError(f"gsg bench cpuscale: a layout process failed (rank {rec['rank']}):\n{rec['error']}")
            records.append(rec)
    except BaseException:
        for p in procs:  # the others would only wait at the barrier or train on for nothing
            if p.is_alive():
                p.terminate()
        raise
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join()
    records.sort(key=lambda r: r["rank"])
    wall = max(r["end"] for r in records) - min(r["start"] for r in records)
    images = sum(r["images"] for r in records)
    for r in records:
        r["images_per_s"] = r["images"] / (r["end"] - r["start"])
    return {"layout": layout_name(processes, threads), "processes": processes, "threads": threads,
            "wall_s": wall, "images": images, "images_per_s": images / wall, "records": records}


def layout_name(processes: int, threads: int) -> str:
    return f"{processes} process{'es' if processes > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}"


def run_layout_rounds(n: int, rounds: int, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """``rounds`` rounds of (1 process x n threads, n processes x 1 thread), the order alternating per round."""
    out = []
    for r in range(rounds):
        order = [(1, n), (n, 1)] if r % 2 == 0 else [(n, 1), (1, n)]
        for processes, threads in order:
            out.append({"round": r, **run_layout(processes, threads, spec)})
    return out


def layout_summary(runs: list[dict[str, Any]], n: int) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Table rows (median over rounds) and the headline ratio: throughput of n single-thread processes over
    one n-thread process (median of the rounds' throughputs, and per round)."""
    one, many = layout_name(1, n), layout_name(n, 1)
    tput = {name: [r["images_per_s"] for r in runs if r["layout"] == name] for name in (one, many)}
    med = {name: statistics.median(v) for name, v in tput.items()}
    per_round = [a / b for a, b in zip(tput[many], tput[one], strict=True)]
    rows = []
    for name, (processes, threads) in ((one, (1, n)), (many, (n, 1))):
        mine = [r for r in runs if r["layout"] == name]
        rows.append({
            "layout": name, "processes": processes, "threads each": threads,
            "steps each": mine[0]["records"][0]["steps"],
            "rounds": len(mine), "median wall s": statistics.median(r["wall_s"] for r in mine),
            "images/s": med[name],
            "images/s per process": statistics.median(x["images_per_s"] for r in mine for x in r["records"]),
            "throughput ratio to 1 process": med[name] / med[one],
        })
    head = {"two_single_over_one_double": med[many] / med[one],
            "two_single_over_one_double_per_round_median": statistics.median(per_round)}
    return rows, head


# ------------------------------------------------------------------------------------------------ run


def run(*, device: str = "cpu", quick: bool = False, width: float | None = None, batch_size: int | None = None,
        proj_dim: int | None = None, pred_hidden: int | None = None, image_size: int | None = None,
        channels: int | None = None, repeats: int = 9, warmup: int = 1, threads: int | None = None,
        compile: bool = True, layout: bool = True, layout_threads: int = 2, layout_steps: int = 12,
        layout_warmup: int = 2, layout_rounds: int = 3, layout_amp: str = "off", layout_compile: bool = False,
        timeout_s: float = 3600.0) -> dict[str, Any]:
    """Part 1 (bf16 / compile step times, one process) and part 2 (process layout), see the module docstring.

    Sizes default to the CPU-scale model (``model_sizes``); ``quick`` shrinks the model, the rounds and the
    layout's steps for tests. ``threads``: torch threads of part 1 (None: this process's setting, i.e.
    OMP_NUM_THREADS). ``compile=False`` leaves out the two compiled variants, ``layout=False`` part 2.
    ``layout_amp`` / ``layout_compile``: the step the layout processes take (default fp32 eager).
    ``layout_rounds``: rounds of the two layouts, alternating which goes first.
    """
    dev = resolve_device(device)
    if dev.type != "cpu":
        raise ConfigError(f"gsg bench cpuscale measures CPU threads and processes, not {dev}: use --device cpu")
    if layout_threads < 2:
        raise ConfigError(f"layout_threads must be at least 2 (one process of N threads vs N processes), got "
                          f"{layout_threads}")
    sizes = model_sizes(quick)
    for key, val in (("width", width), ("batch_size", batch_size), ("proj_dim", proj_dim),
                     ("pred_hidden", pred_hidden), ("image_size", image_size), ("channels", channels)):
        if val is not None:
            sizes[key] = val
    if quick:
        repeats, warmup = min(repeats, 2), min(warmup, 1)
        layout_steps, layout_warmup, layout_rounds = 1, min(layout_warmup, 1), 1
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    options = {"device": str(dev), "quick": quick, **sizes, "repeats": repeats, "warmup": warmup,
               "threads": torch.get_num_threads(), "compile": compile, "layout": layout,
               "layout_threads": layout_threads, "layout_steps": layout_steps, "layout_warmup": layout_warmup,
               "layout_rounds": layout_rounds, "layout_amp": layout_amp, "layout_compile": layout_compile}
    result: dict[str, Any] = {"machine": machine_info(dev), "options": options, "tables": {}}
    result["bf16_support"] = bf16_support()
    result["images"] = f"synthetic, {sizes['channels']} x {sizes['image_size']} x {sizes['image_size']}"
    try:
        with tempfile.TemporaryDirectory(prefix="gsg-bench-cpuscale-") as tmp:
            if layout:  # the layout processes build this config: check it now, not after part 1's minutes
                cpuscale_config(Path(tmp) / "check", sizes, amp=layout_amp, compile=layout_compile)
            ds = shaped_dataset(sizes)
            part1 = step_variants(sizes, ds, Path(tmp), repeats=repeats, warmup=warmup, compile=compile)
            result["raw"] = part1["raw"]
            rows = step_table(part1["raw"], part1["first"], sizes["batch_size"])
            result["tables"][STEPS_TABLE] = rows
            by = {r["variant"]: r for r in rows}
            result["medians_s"] = {name: summarize_times(ts)["median_s"] for name, ts in part1["raw"].items()}
            for name, key in (("bf16", "bf16"), ("fp32 + compile", "compile"), ("bf16 + compile", "bf16_compile")):
                if name in by:
                    result[f"{key}_over_fp32"] = by[name]["time ratio to fp32"]
                    result[f"{key}_over_fp32_paired"] = by[name]["paired ratio to fp32"]
            result["bf16_first_step_loss_diff"] = by["bf16"]["loss − fp32"]
            if "fp32 + compile" in by:
                result["compile_first_step_loss_diff"] = by["fp32 + compile"]["loss − fp32"]
            if layout:
                spec = {"sizes": sizes, "amp": layout_amp, "compile": layout_compile, "seed": 0,
                        "steps": layout_steps, "warmup": layout_warmup, "out": str(Path(tmp) / "layout"),
                        "timeout_s": timeout_s}
                runs = run_layout_rounds(layout_threads, layout_rounds, spec)
                result["runs"] = runs
                layout_rows, head = layout_summary(runs, layout_threads)
                result["tables"][LAYOUT_TABLE] = layout_rows
                result.update(head)
    finally:
        torch.set_num_threads(old_threads)
    return finish(result)
