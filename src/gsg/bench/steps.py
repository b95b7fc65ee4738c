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

import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gsg.bench.report import finish, interleaved_times, machine_info, ratios, resolve_device, summarize_times
from gsg.config import Config, load_config
from gsg.ssl.ema import momentum_at
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
    cfg = trainer.cfg

    def step(images: Tensor) -> Tensor:
        loss, stats = trainer.views_and_loss(images)
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.scaler.scale(loss).backward()
        trainer.scaler.step(trainer.optimizer)
        trainer.scaler.update()
        momentum = momentum_at(trainer.state.step, trainer.total_steps, cfg.ssl.ema_momentum, cfg.ssl.ema_schedule)
        trainer.model.update_target(momentum)
        observe = getattr(trainer.model.predictor, "observe", None)
        if observe is not None:
            observe(stats["z_online"])
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


def compute_table(medians: dict[str, float], passes: dict[str, int]) -> list[dict[str, Any]]:
    """Rows: variant, median step time, ratio to the same method's symmetric variant, encoder passes."""
    rows = []
    for name, med in medians.items():
        method = name.split()[0]
        base = f"{method} symmetric"
        ratio = ratios(medians, base)[name] if base in medians else float("nan")
        rows.append({"variant": name, "median step ms": 1000.0 * med, "ratio to symmetric": ratio,
                     "encoder passes": passes.get(name)})
    return rows


def run(*, device: str = "auto", quick: bool = False, methods: Sequence[str] = ("simsiam", "byol"),
        width: float | None = None, batch_size: int | None = None, proj_dim: int | None = None,
        pred_hidden: int | None = None, image_size: int | None = None, backbone: str = "resnet18",
        repeats: int = 15, warmup: int = 2, amp: str = "auto", channels_last: bool | None = None,
        compile: bool = False, profile: bool = True) -> dict[str, Any]:
    """Median step time of the six variants (or those of ``methods``), timed round-robin on one batch.

    Model size and batch default per device (``model_defaults``); ``quick`` shrinks everything for tests.
    ``profile``: also return the top ops of one guided-reuse step.
    """
    dev = resolve_device(device)
    sizes = model_defaults(dev, quick)
    for key, val in (("width", width), ("batch_size", batch_size), ("proj_dim", proj_dim),
                     ("pred_hidden", pred_hidden), ("image_size", image_size)):
        if val is not None:
            sizes[key] = val
    if quick:
        repeats, warmup = min(repeats, 2), min(warmup, 1)
    variants = [v for v in VARIANTS if v[1] in methods]
    options = {"device": str(dev), "quick": quick, "methods": list(methods), "backbone": backbone, **sizes,
               "repeats": repeats, "warmup": warmup, "amp": amp, "channels_last": channels_last,
               "compile": compile}
    result: dict[str, Any] = {"machine": machine_info(dev), "options": options}
    with tempfile.TemporaryDirectory(prefix="gsg-bench-steps-") as tmp:
        trainers: dict[str, Trainer] = {}
        fns: dict[str, Callable[[], object]] = {}
        passes: dict[str, int] = {}
        images: Tensor | None = None
        for name, method, policy, views in variants:
            cfg = bench_config(Path(tmp) / name.replace(" ", "_"), method=method, stop_gradient=policy,
                               views=views, device=dev, amp=amp, channels_last=channels_last, compile=compile,
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
            fns[name] = (lambda s=step, x=images: s(x))  # type: ignore[misc]
        times = interleaved_times(fns, repeats=repeats, warmup=warmup, device=dev)
        stats = {name: summarize_times(ts) for name, ts in times.items()}
        medians = {name: s["median_s"] for name, s in stats.items()}
        rows = compute_table(medians, passes)
        for row in rows:
            row["IQR ms"] = 1000.0 * stats[row["variant"]]["iqr_s"]
        result["tables"] = {"Median step time (round-robin)": rows}
        result["medians_s"] = medians
        result["encoder_passes"] = passes
        for method in methods:
            key = f"{method} guided reuse"
            if key in medians and f"{method} symmetric" in medians:
                r = medians[key] / medians[f"{method} symmetric"]
                result[f"{method}_reuse_over_symmetric"] = r
                result[f"{method}_reuse_meets_target_1.05"] = r <= TARGET_REUSE_RATIO
            key = f"{method} guided fresh"
            if key in medians and f"{method} symmetric" in medians:
                result[f"{method}_fresh_over_symmetric"] = medians[key] / medians[f"{method} symmetric"]
        result["raw"] = times
        if profile:
            name = next(n for n in fns if "guided reuse" in n)
            result["tables"][f"Profile of one step: {name} (top ops by self time)"] = profile_step(fns[name], dev)
    return finish(result)
