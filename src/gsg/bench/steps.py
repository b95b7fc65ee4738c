"""Step cost: symmetric vs guided stop-gradient with reused or fresh partner views, for SimSiam and BYOL.

Each variant is a real :class:`gsg.train.loop.Trainer` (same backbone, batch, device, augmentation); one
timed step is :func:`train_step`, the body of ``Trainer.train_epoch``'s loop (augment + encode + policy
loss in ``Trainer.views_and_loss``, backward, SGD step, EMA target update, DirectPred observe) on a fixed
batch, so the data loader and the per-epoch monitoring are left out. Variants are timed round-robin
(``report.interleaved_times``) and compared by median, as ratios to the symmetric variant of the same method.

What to expect: "reuse" pairs each image with a partner's two existing views, so its encoder work equals
symmetric's (2 passes; the extra cost is four (B, d) distance computations and a gather); "fresh" draws
two more crops of the partner image and encodes them: 4 passes, about 2x the step.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gsg.bench.report import finish, interleaved_times, machine_info, ratios, resolve_device, summarize_times
from gsg.config import Config, load_config
from gsg.ssl.stopgrad import derangement, policy_loss
from gsg.train.loop import Trainer

# (name, method, stop_gradient, views)
VARIANTS: tuple[tuple[str, str, str, str], ...] = (
    ("simsiam symmetric", "simsiam", "symmetric", "reuse"),
    ("simsiam guided reuse", "simsiam", "guided", "reuse"),
    ("simsiam guided fresh", "simsiam", "guided", "fresh"),
    ("byol symmetric", "byol", "symmetric", "reuse"),
    ("byol guided reuse", "byol", "guided", "reuse"),
    ("byol guided fresh", "byol", "guided", "fresh"),
)
TARGET_REUSE_RATIO = 1.05  # the target: reuse at most 5% dearer than symmetric


def model_defaults(device: torch.device, quick: bool) -> dict[str, Any]:
    """Model and batch per device: the paper's CIFAR-10 setting on a GPU, the quickstart model on a CPU.

    GPU: CIFAR ResNet-18 (width 1, projector 2048, predictor hidden 512), batch 512, 32 px.
    CPU: width 0.25, projector 512, predictor hidden 128, batch 128 (a full-width step takes tens of seconds
    on two cores, which would make a round-robin of six variants impractical).
    """
    if quick:
        return {"width": 0.125, "proj_dim": 32, "pred_hidden": 16, "batch_size": 16, "image_size": 16}
    if device.type == "cuda":
        return {"width": 1.0, "proj_dim": 2048, "pred_hidden": 512, "batch_size": 512, "image_size": 32}
    return {"width": 0.25, "proj_dim": 512, "pred_hidden": 128, "batch_size": 128, "image_size": 32}


def bench_config(out: Path, *, method: str, stop_gradient: str, views: str, device: torch.device, width: float,
                 proj_dim: int, pred_hidden: int, batch_size: int, image_size: int, amp: str = "auto",
                 channels_last: bool | None = None, compile: bool = False, seed: int = 0,
                 backbone: str = "resnet18") -> Config:
    """A pretraining config on the synthetic dataset (3 channels, CIFAR recipe), monitoring off."""
    return load_config(overrides={
        "data": {"dataset": "synthetic", "image_size": image_size, "recipe": "cifar"},
        "model": {"backbone": backbone, "width": width, "proj_dim": proj_dim, "pred_hidden": pred_hidden},
        "ssl": {"method": method, "stop_gradient": stop_gradient, "views": views},
        "optim": {"epochs": 1, "batch_size": batch_size},
        "run": {"out": str(out), "device": str(device), "amp": amp, "channels_last": channels_last,
                "compile": compile, "seed": seed, "knn_every": 0, "progress": False, "tensorboard": False,
                "log_every": 10**9},
    })


def train_step(trainer: Trainer) -> Callable[[Tensor], Tensor]:
    """One optimisation step exactly as ``Trainer.train_epoch`` takes it, for a given uint8 batch.

    Returns a function images -> loss (detached). It advances ``trainer.state.step`` as the loop does, so
    BYOL's momentum schedule moves the same way. A test checks that it leaves the weights bit-identical to
    ``Trainer.fit`` on the same batch.
    """

    def step(images: Tensor) -> Tensor:
        loss, _stats, _momentum = trainer.train_step(images)  # exactly the training loop's step
        trainer.state.step += 1
        return loss.detach()

    return step


def first_batch(trainer: Trainer) -> Tensor:
    """The first uint8 batch of the trainer's loader, on its device."""
    images, _labels, _idx = next(iter(trainer.loader))
    return images


@contextmanager
def count_encoder_passes(trainer: Trainer) -> Iterator[list[int]]:
    """Record the batch size of every online-encoder pass (``Siamese.project``) made inside the block."""
    calls: list[int] = []
    original = trainer.model.project

    def counting(x: Tensor) -> Tensor:
        calls.append(int(x.shape[0]))
        return original(x)

    trainer.model.project = counting  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        del trainer.model.project  # back to the class's method


def profile_step(step: Callable[[], object], device: torch.device, top: int = 12) -> list[dict[str, Any]]:
    """The ops that take the most self time in one step (torch.profiler), with their share of the total."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    events = prof.key_averages()
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    total = sum(getattr(e, attr) for e in events) or 1.0
    rows = sorted(events, key=lambda e: getattr(e, attr), reverse=True)[:top]
    return [{"op": e.key, "calls": e.count, "self ms": getattr(e, attr) / 1000.0,
             "share %": 100.0 * getattr(e, attr) / total} for e in rows]


def loss_only_times(batch: int, dim: int, device: torch.device, repeats: int) -> dict[str, float]:
    """Median seconds of the stop-gradient loss alone (forward + backward into the predictions), per policy.

    Isolates what GSG adds to a step (four distances, the argmin, the partner gather, two candidate terms
    per image) from the encoder work, which the step medians cannot resolve below their noise.
    """
    g = torch.Generator(device=device).manual_seed(0)
    p = [torch.randn(batch, dim, device=device, generator=g).requires_grad_() for _ in range(2)]
    t = [torch.randn(batch, dim, device=device, generator=g) for _ in range(2)]
    partner = derangement(batch, generator=g, device=device)

    def loss(policy: str) -> Callable[[], object]:
        def call() -> object:
            out = policy_loss(policy, p1=(p[0], p[1]), t1=(t[0], t[1]), partner=partner)  # type: ignore[arg-type]
            out.loss.backward()
            return out.loss

        return call

    times = interleaved_times({"symmetric": loss("symmetric"), "guided": loss("guided")}, repeats=repeats,
                              warmup=2, device=device)
    return {k: summarize_times(v)["median_s"] for k, v in times.items()}


def paired_ratio(times: Sequence[float], base: Sequence[float]) -> dict[str, float]:
    """Median and quartiles over rounds of time / base time of the same round.

    A round runs every variant back to back, so a slow period of the shared machine inflates both times of a
    round: the per-round ratio cancels it, where the ratio of two medians (taken over different rounds)
    does not. This is the benchmark's ratio; the ratio of medians is shown next to it.
    """
    r = [a / b for a, b in zip(times, base, strict=True)]
    q = statistics.quantiles(r, n=4) if len(r) >= 2 else [r[0], r[0], r[0]]
    return {"median": statistics.median(r), "q1": q[0], "q3": q[2]}


def compute_table(times: dict[str, list[float]], passes: dict[str, int]) -> list[dict[str, Any]]:
    """Rows: variant, median step time, ratios to the same method's symmetric variant, encoder passes.

    ``times``: seconds per round for each variant (``interleaved_times``' output, rounds aligned).
    """
    medians = {name: summarize_times(ts)["median_s"] for name, ts in times.items()}
    rows = []
    for name, med in medians.items():
        base = f"{name.split()[0]} symmetric"
        row: dict[str, Any] = {"variant": name, "median step ms": 1000.0 * med,
                               "IQR ms": 1000.0 * summarize_times(times[name])["iqr_s"]}
        if base in times:
            pr = paired_ratio(times[name], times[base])
            row["ratio to symmetric (paired)"] = pr["median"]
            row["paired ratio IQR"] = f"{pr['q1']:.2f}–{pr['q3']:.2f}"
            row["ratio of medians"] = ratios(medians, base)[name]
        else:
            row["ratio to symmetric (paired)"] = row["paired ratio IQR"] = row["ratio of medians"] = None
        row["encoder passes"] = passes.get(name)
        rows.append(row)
    return rows


def tabulate(result: dict[str, Any]) -> dict[str, Any]:
    """The step table and the headline ratios from ``result["raw"]`` (per-round seconds of each variant)."""
    times: dict[str, list[float]] = result["raw"]
    rows = compute_table(times, result.get("encoder_passes", {}))
    for row in rows:
        row["memory format"] = result.get("memory_formats", {}).get(row["variant"])
    result.setdefault("tables", {})["Median step time (round-robin)"] = rows
    result["medians_s"] = {name: summarize_times(ts)["median_s"] for name, ts in times.items()}
    for method in ("simsiam", "byol"):
        sym = times.get(f"{method} symmetric")
        for views in ("reuse", "fresh"):
            other = times.get(f"{method} guided {views}")
            if sym is not None and other is not None:
                result[f"{method}_{views}_over_symmetric"] = paired_ratio(other, sym)["median"]
        if f"{method}_reuse_over_symmetric" in result:
            result[f"{method}_reuse_meets_target_1.05"] = result[f"{method}_reuse_over_symmetric"] <= TARGET_REUSE_RATIO
    nchw, cl = times.get("simsiam guided reuse (NCHW)"), times.get("simsiam guided reuse")
    if nchw is not None and cl is not None:
        result["channels_last_speedup"] = paired_ratio(nchw, cl)["median"]
    return result


def run(*, device: str = "auto", quick: bool = False, methods: Sequence[str] = ("simsiam", "byol"),
        width: float | None = None, batch_size: int | None = None, proj_dim: int | None = None,
        pred_hidden: int | None = None, image_size: int | None = None, backbone: str = "resnet18",
        repeats: int = 15, warmup: int = 2, amp: str = "auto", channels_last: bool | None = None,
        compile: bool = False, profile: bool = True, compare_layout: bool = False) -> dict[str, Any]:
    """Median step time of the six variants (or those of ``methods``), timed round-robin on one batch.

    Model size and batch default per device (``model_defaults``); ``quick`` shrinks everything for tests.
    ``profile``: also return the top ops of one guided-reuse step. ``compare_layout``: add "simsiam guided
    reuse (NCHW)", the same step with channels-last off, to the round-robin (the Trainer's default is on).
    """
    dev = resolve_device(device)
    sizes = model_defaults(dev, quick)
    for key, val in (("width", width), ("batch_size", batch_size), ("proj_dim", proj_dim),
                     ("pred_hidden", pred_hidden), ("image_size", image_size)):
        if val is not None:
            sizes[key] = val
    if quick:
        repeats, warmup = min(repeats, 2), min(warmup, 1)
    variants: list[tuple[str, str, str, str]] = [v for v in VARIANTS if v[1] in methods]
    if compare_layout:
        variants.append(("simsiam guided reuse (NCHW)", "simsiam", "guided", "reuse"))
    options = {"device": str(dev), "quick": quick, "methods": list(methods), "backbone": backbone, **sizes,
               "repeats": repeats, "warmup": warmup, "amp": amp, "channels_last": channels_last,
               "compile": compile, "profile": profile, "compare_layout": compare_layout}
    result: dict[str, Any] = {"machine": machine_info(dev), "options": options}
    with tempfile.TemporaryDirectory(prefix="gsg-bench-steps-") as tmp:
        trainers: dict[str, Trainer] = {}
        fns: dict[str, Callable[[], object]] = {}
        passes: dict[str, int] = {}
        layouts: dict[str, str] = {}
        images: Tensor | None = None
        for name, method, policy, views in variants:
            cfg = bench_config(Path(tmp) / name.replace(" ", "_"), method=method, stop_gradient=policy,
                               views=views, device=dev, amp=amp, compile=compile,
                               channels_last=False if name.endswith("(NCHW)") else channels_last,
                               backbone=backbone, **sizes)
            tr = Trainer(cfg)
            tr.model.train()
            if images is None:
                images = first_batch(tr)  # one batch for all variants: same pixels, same cost
            step = train_step(tr)
            if compile:  # a Python side effect inside a compiled forward would only force a recompile
                step(images)
            else:
                with count_encoder_passes(tr) as calls:
                    step(images)  # also the first warm-up step
                passes[name] = len(calls)
            trainers[name] = tr
            layouts[name] = "channels-last" if tr.channels_last else "NCHW"
            fns[name] = (lambda s=step, x=images: s(x))  # type: ignore[misc]
        times = interleaved_times(fns, repeats=repeats, warmup=warmup, device=dev)
        result["raw"] = times
        result["encoder_passes"] = passes
        result["memory_formats"] = layouts
        result["tables"] = {}
        tabulate(result)
        lo = loss_only_times(sizes["batch_size"], sizes["proj_dim"], dev, repeats=max(5, 4 * repeats))
        sym_step = result["medians_s"].get(f"{methods[0]} symmetric", float("nan"))
        result["tables"]["Stop-gradient loss alone (forward + backward), batch x proj_dim"] = [
            {"policy": k, "median ms": 1000 * v, "share of a symmetric step": v / sym_step} for k, v in lo.items()]
        result["guided_loss_extra_ms"] = 1000 * (lo["guided"] - lo["symmetric"])
        result["guided_loss_extra_share_of_step"] = (lo["guided"] - lo["symmetric"]) / sym_step
        if profile:
            name = next(n for n in fns if "guided reuse" in n)
            result["tables"][f"Profile of one step: {name} (top ops by self time)"] = profile_step(fns[name], dev)
    return finish(result)
