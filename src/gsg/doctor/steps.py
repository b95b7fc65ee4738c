"""The doctor's steps, in the order of the GPU review's smoke test. Each returns a one-line detail, raises
:class:`Skip` (with the reason) when the machine cannot run it, or raises anything else to FAIL."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gsg.checkpoint import load_checkpoint, save_atomic
from gsg.config import Config, load_config
from gsg.train.precision import amp_dtype, native_bf16

log = logging.getLogger("gsg.doctor")


class Skip(Exception):
    """The step cannot run here; the message says why."""


@dataclass
class Context:
    device: torch.device
    out: Path
    quick: bool = False
    runs: dict[str, Path] = field(default_factory=dict)  # run directories of earlier steps
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def need_cuda(self, what: str = "") -> None:
        if not self.cuda:
            raise Skip(f"needs CUDA{': ' + what if what else ''} (this run is on the CPU)")

    def sizes(self) -> dict[str, Any]:
        if not self.cuda:
            return {"image_size": 16, "subset": 64, "width": 0.125, "proj_dim": 32, "pred_hidden": 16,
                    "batch_size": 16}
        if self.quick:
            return {"image_size": 32, "subset": 512, "width": 0.25, "proj_dim": 256, "pred_hidden": 64,
                    "batch_size": 128}
        return {"image_size": 32, "subset": 4096, "width": 0.5, "proj_dim": 512, "pred_hidden": 128,
                "batch_size": 256}

    def config(self, name: str, *, epochs: int = 1, **sections: dict[str, Any]) -> Config:
        s = self.sizes()
        base: dict[str, dict[str, Any]] = {
            "data": {"dataset": "synthetic", "image_size": s["image_size"], "subset": s["subset"], "workers": 0,
                     "on_device": True},
            "model": {"width": s["width"], "proj_dim": s["proj_dim"], "pred_hidden": s["pred_hidden"]},
            "optim": {"epochs": epochs, "batch_size": s["batch_size"], "lr": 0.05},
            "run": {"out": str(self.out / "runs" / name), "device": str(self.device), "knn_every": 0,
                    "progress": False, "tensorboard": False, "log_every": 5, "knn_train_subset": None,
                    "knn_k": 20},
        }
        for section, values in sections.items():
            base.setdefault(section, {}).update(values)
        return load_config(overrides=base)


def _finite(x: float, what: str) -> float:
    if not math.isfinite(x):
        raise AssertionError(f"{what} is {x}")
    return x


def _fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    return path


def _trainer(cfg: Config, resume: bool | str = False) -> Any:
    from gsg.train.loop import Trainer

    return Trainer(cfg, resume=resume)


def _release(ctx: Context) -> None:
    if ctx.cuda:
        torch.cuda.synchronize(ctx.device)
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------------- steps


def env(ctx: Context) -> str:
    facts = {"torch": torch.__version__, "cuda_build": torch.version.cuda, "python": sys.version.split()[0],
             "gcc": shutil.which("gcc") or shutil.which("cc"),
             "python_h": os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")),
             "triton": importlib.util.find_spec("triton") is not None}
    if ctx.cuda:
        props = torch.cuda.get_device_properties(ctx.device)
        facts.update(gpu=props.name, capability=f"sm{props.major}{props.minor}",
                     memory_gib=round(props.total_memory / 2**30, 1), gpus=torch.cuda.device_count(),
                     native_bf16=native_bf16(ctx.device), amp_auto=str(amp_dtype("auto", ctx.device)))
    ctx.facts.update(facts)
    log.info("environment: %s", json.dumps(facts))
    missing = [k for k in ("gcc", "python_h") if not facts[k]] + ([] if facts["triton"] or not ctx.cuda
                                                                   else ["triton"])
    note = f"; torch.compile (inductor) needs {', '.join(missing)}" if missing else ""
    gpu = f"{facts['gpu']} {facts['capability']}, native bf16 {facts['native_bf16']}, " if ctx.cuda else ""
    return f"{gpu}torch {facts['torch']}, python {facts['python']}{note}"


def cuda_unit(ctx: Context) -> str:
    ctx.need_cuda("the test suite's CUDA test")
    test = Path("tests/test_views.py")
    if not test.is_file():
        raise Skip("run from the repository root to include the test suite's CUDA test (tests/ not found)")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", str(test), "-k", "cuda"], capture_output=True,
                          text=True, timeout=300)
    log.info("%s\n%s", proc.stdout, proc.stderr)
    if proc.returncode != 0:
        raise AssertionError(f"pytest -k cuda exited {proc.returncode}: {proc.stdout.strip().splitlines()[-1:]}")
    return proc.stdout.strip().splitlines()[-1]


def fp32_eager(ctx: Context) -> str:
    cfg = ctx.config("fp32_eager", run={"amp": "off", "channels_last": True, "compile": False})
    _fresh(Path(cfg.run.out))
    t = _trainer(cfg)
    if ctx.cuda and t.train_ds.device.type != "cuda":
        raise AssertionError(f"data.on_device: the dataset is on {t.train_ds.device}, not the GPU")
    r = t.fit()
    _release(ctx)
    return (f"loss {_finite(r['loss'], 'loss'):.4f}, data on {t.train_ds.device}, amp {t.amp}, "
            f"{r['epoch_time_s']:.2f} s/epoch")


def bf16_cl_knn(ctx: Context) -> str:
    cfg = ctx.config("bf16", run={"amp": "bf16", "channels_last": True, "knn_every": 1})
    _fresh(Path(cfg.run.out))
    t = _trainer(cfg)
    r = t.fit()
    if "knn_k1" not in r:
        raise AssertionError("the online kNN monitor reported nothing")
    ctx.runs["bf16"] = Path(cfg.run.out)
    _release(ctx)
    return f"loss {_finite(r['loss'], 'loss'):.4f}, kNN k=20 {r['knn_k20']:.1f}%, k=1 {r['knn_k1']:.1f}%"


def bf16_resume(ctx: Context) -> str:
    if "bf16" not in ctx.runs:
        raise Skip("needs the checkpoint of bf16_cl_knn")
    before = load_checkpoint(ctx.runs["bf16"] / "checkpoint.pt")["train_state"]
    cfg = ctx.config("bf16", epochs=before["epoch"] + 1, run={"amp": "bf16", "channels_last": True, "knn_every": 1})
    r = _trainer(cfg, resume=True).fit()
    if r["epochs"] != before["epoch"] + 1 or r["steps"] <= before["step"]:
        raise AssertionError(f"resumed to epoch {r['epochs']}, step {r['steps']} from {before['epoch']}, "
                             f"{before['step']}")
    _release(ctx)
    return f"epoch {before['epoch']} -> {r['epochs']}, step {before['step']} -> {r['steps']}"


def fp16_scaler(ctx: Context) -> str:
    ctx.need_cuda("GradScaler scales fp16 losses on CUDA")
    cfg = ctx.config("fp16", run={"amp": "fp16"})
    _fresh(Path(cfg.run.out))
    t = _trainer(cfg)
    if not t.scaler.is_enabled():
        raise AssertionError("GradScaler is not enabled for fp16")
    r = t.fit()
    scale = float(t.scaler.get_scale())
    _release(ctx)
    return f"loss {_finite(r['loss'], 'loss'):.4f}, loss scale {_finite(scale, 'loss scale'):g}"


def byol_dp_fresh(ctx: Context) -> str:
    cfg = ctx.config("byol_dp_fresh", ssl={"method": "byol", "views": "fresh"}, model={"predictor": "directpred"},
                     run={"amp": "auto" if ctx.cuda else "off"})
    _fresh(Path(cfg.run.out))
    r = _trainer(cfg).fit()
    _release(ctx)
    return (f"loss {_finite(r['loss'], 'loss'):.4f}, DirectPred eigenspace alignment "
            f"{_finite(r['pred_alignment'], 'alignment'):.3f}")


def _timed_steps(t: Any, images: torch.Tensor, n: int) -> float:
    for _ in range(2):
        t.train_step(images)
    if t.device.type == "cuda":
        torch.cuda.synchronize(t.device)
    t0 = time.perf_counter()
    for _ in range(n):
        t.train_step(images)
    if t.device.type == "cuda":
        torch.cuda.synchronize(t.device)
    return (time.perf_counter() - t0) / n * 1000


def trainer_checks(ctx: Context) -> str:
    from gsg.doctor.probes import HostReads

    parts = []
    for pred in ("mlp", "directpred"):
        cfg = ctx.config(f"checks_{pred}", model={"predictor": pred}, run={"amp": "auto" if ctx.cuda else "bf16"})
        t = _trainer(cfg)
        images = t.train_ds.get(torch.arange(t.local_batch, device=t.train_ds.device))
        if pred == "mlp":
            seen: dict[str, torch.dtype] = {}
            t.model.backbone.register_forward_hook(lambda m, i, o, seen=seen: seen.update(backbone=o.dtype))
            t.model.train()
            with torch.autocast(t.device.type, dtype=t.amp or torch.float32, enabled=t.amp is not None):
                out = t.forward([t.augment(images, t.aug_gen), t.augment(images, t.aug_gen)])
            heads = {"z": out.z[0].dtype, "p": out.p[0].dtype, "t": out.t[0].dtype}
            if any(d != torch.float32 for d in heads.values()):
                raise AssertionError(f"the heads are not float32 under autocast: {heads}")
            parts.append(f"amp {t.amp}, data on {t.train_ds.device}, backbone out {seen['backbone']}, "
                         "z/p/t float32")
        ms = _timed_steps(t, images, 3 if not ctx.cuda else 10)
        with HostReads() as reads:
            t.train_step(images)
        if reads.calls:
            raise AssertionError(f"{pred}: {len(reads.calls)} host reads in one train_step: {reads.calls}")
        parts.append(f"{pred} {ms:.1f} ms/step, 0 host reads")
        del t
        _release(ctx)
    return "; ".join(parts)


def sync_debug(ctx: Context) -> str:
    ctx.need_cuda("torch.cuda.set_sync_debug_mode reports CUDA host syncs")
    counts = {}
    for pred in ("mlp", "directpred"):
        t = _trainer(ctx.config(f"sync_{pred}", model={"predictor": pred}, run={"amp": "auto"}))
        images = t.train_ds.get(torch.arange(t.local_batch, device=t.train_ds.device))
        for _ in range(2):
            t.train_step(images)
        torch.cuda.synchronize(t.device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                t.train_step(images)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message).lower()]
        for s in syncs:
            log.info("%s sync: %s", pred, s)
        counts[pred] = len(syncs)
        del t
        _release(ctx)
    if counts["mlp"]:
        raise AssertionError(f"the mlp step synchronised with the host {counts['mlp']} time(s) (see the log)")
    return f"host syncs per step: mlp 0, directpred {counts['directpred']} (eigh's error check is expected)"


def compile_step(ctx: Context) -> str:
    if not ctx.cuda and ctx.quick:
        raise Skip("torch.compile on the CPU takes minutes (inductor builds C++): run without --quick for it")
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    cfg = ctx.config("compile", epochs=2, run={"compile": True, "amp": "auto" if ctx.cuda else "off",
                                               "knn_every": 1})
    _fresh(Path(cfg.run.out))
    r = _trainer(cfg).fit()
    breaks = sum(counters["graph_break"].values())
    graphs = counters["stats"]["unique_graphs"]
    frames = counters["frames"]["total"]
    log.info("dynamo counters: %s", {k: dict(v) for k, v in counters.items() if v})
    _release(ctx)
    detail = (f"loss {_finite(r['loss'], 'loss'):.4f}, {graphs} graphs (2 expected: model, augmentation), "
              f"{breaks} graph breaks, {frames} frames, recompiles {max(graphs - 2, 0)}")
    if breaks or graphs > 4:
        raise AssertionError(detail)
    return detail


def _amp(ctx: Context) -> torch.dtype | None:
    return amp_dtype("auto", ctx.device)


def _checkpoint(ctx: Context) -> Path:
    if "bf16" not in ctx.runs:
        raise Skip("needs the checkpoint of bf16_cl_knn")
    return ctx.runs["bf16"] / "checkpoint.pt"


def knn_gpu(ctx: Context) -> str:
    from gsg.eval.knn import knn_evaluate

    r = knn_evaluate(_checkpoint(ctx), k=20, device=str(ctx.device), channels_last=True, amp_dtype=_amp(ctx))
    ctx.facts["knn_device"] = r["knn_k1"]
    return f"on {ctx.device}: kNN k=20 {r['knn_k20']:.1f}%, k=1 {r['knn_k1']:.1f}% ({r['train_size']} bank)"


def linear_feat(ctx: Context) -> str:
    from gsg.eval.linear import linear_evaluate

    r = linear_evaluate(_checkpoint(ctx), epochs=2, mode="features", device=str(ctx.device), channels_last=True,
                        amp_dtype=_amp(ctx))
    return f"top-1 {_finite(r['top1'], 'top-1'):.1f}% after 2 epochs on features"


def linear_aug(ctx: Context) -> str:
    from gsg.eval.linear import linear_evaluate

    r = linear_evaluate(_checkpoint(ctx), epochs=1, mode="augment", batch_size=64, device=str(ctx.device),
                        channels_last=True, amp_dtype=_amp(ctx))
    return f"top-1 {_finite(r['top1'], 'top-1'):.1f}% after 1 augmented epoch"


def diagnose_step(ctx: Context) -> str:
    from gsg.eval.diagnose import diagnose

    r = diagnose(_checkpoint(ctx), samples=256, device=str(ctx.device), plot=ctx.out / "diagnose_spectrum.png")
    return f"projection std*sqrt(d) {r['projection']['std_sqrt_d']:.3f}, rankme {r['projection']['rankme']:.1f}"


def knn_on_cpu(ctx: Context) -> str:
    from gsg.eval.knn import knn_evaluate

    r = knn_evaluate(_checkpoint(ctx), k=20, device="cpu")
    return f"the {ctx.device.type} checkpoint on the CPU: kNN k=1 {r['knn_k1']:.1f}%"


def resume_on_cpu(ctx: Context) -> str:
    src = _checkpoint(ctx).parent
    dst = _fresh(ctx.out / "runs" / "resume_on_cpu")
    shutil.copytree(src, dst)
    ckpt = load_checkpoint(dst / "checkpoint.pt")
    stand_in = ""
    if not ctx.cuda:  # the CPU standing in: a CUDA generator's 16-byte state, as a GPU run saves it
        for state in [ckpt["train_state"]["rng"], *ckpt["train_state"]["rng_per_rank"]]:
            state["aug"], state["aug_device"] = torch.zeros(16, dtype=torch.uint8), "cuda"
        save_atomic(ckpt, dst / "checkpoint.pt")
        stand_in = " (stand-in: a faked CUDA generator state)"
    epoch = ckpt["train_state"]["epoch"]
    cfg = ctx.config("resume_on_cpu", epochs=epoch + 1, run={"device": "cpu", "amp": "off", "knn_every": 1})
    records: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    grab = Grab(logging.WARNING)
    logging.getLogger("gsg.train.rng").addHandler(grab)
    try:
        r = _trainer(cfg, resume=True).fit()
    finally:
        logging.getLogger("gsg.train.rng").removeHandler(grab)
    if not any("reseeded" in m for m in records):
        raise AssertionError("no warning that the augmentation generator was reseeded")
    return f"resumed to epoch {r['epochs']} on the CPU, augmentation reseeded with a warning{stand_in}"


def bench_epoch(ctx: Context) -> str:
    from gsg.bench.epoch import run

    if ctx.cuda and not ctx.quick:
        r = run(device=str(ctx.device), n_images=8192, epochs=2, warmup_epochs=1, baseline_epochs=1)
    else:
        r = run(device=str(ctx.device), quick=True)
    ctx.facts["bench_epoch"] = {k: r.get(k) for k in ("gsg_s_per_epoch", "reference_s_per_epoch",
                                                      "speedup_vs_reference", "extrapolated")}
    log.info("bench epoch: %s", json.dumps(r, default=str)[:4000])
    return (f"gsg {r['gsg_s_per_epoch']:.2f} s/epoch{' (extrapolated)' if r.get('extrapolated') else ''}, "
            f"reference {r.get('reference_s_per_epoch', float('nan')):.2f} s/epoch, "
            f"speed-up {r.get('speedup_vs_reference', float('nan')):.2f}x")


def bf16_gsg(ctx: Context) -> str:
    from gsg.doctor.probes import gsg_flip_rates

    kw = ({"batch": 128, "image_size": 16, "width": 0.125, "proj_dim": 64} if not ctx.cuda or ctx.quick
          else {"batch": 512, "image_size": 32, "width": 0.5, "proj_dim": 2048})
    rates = gsg_flip_rates(ctx.device, **kw)
    ctx.facts["gsg_flip_rates"] = rates
    log.info("GSG case flips against float32 (%s): %s", kw, json.dumps(rates))
    return "; ".join(f"proj_last_bn={bn}: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in r.items())
                     for bn, r in rates.items())


# ------------------------------------------------------------------------------------------ 2+ GPUs (NCCL)


def _need_two_gpus(ctx: Context) -> None:
    ctx.need_cuda("2-process NCCL (the CPU's gloo equivalents are tests/test_distributed*.py)")
    if torch.cuda.device_count() < 2:
        raise Skip(f"needs 2+ GPUs, {torch.cuda.device_count()} visible")


def _torchrun(ctx: Context, name: str, cfg: Config, timeout: float) -> tuple[int, str, Path]:
    out = _fresh(Path(cfg.run.out))
    out.mkdir(parents=True)
    path = out / "config.json"
    path.write_text(json.dumps(cfg.to_dict()))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "gsg",
           "pretrain", "--config", str(path), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, start_new_session=True)
        code, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        code = 124
        text = f"{exc.stdout or ''}{exc.stderr or ''}\nTIMEOUT after {timeout:.0f} s (a hang?)"
    log.info("%s\n%s", " ".join(cmd), text)
    return code, text if isinstance(text, str) else str(text), out


def ddp_basic(ctx: Context) -> str:
    _need_two_gpus(ctx)
    cfg = ctx.config("ddp_basic", epochs=2, ssl={"method": "byol"}, run={"amp": "auto"})
    code, text, out = _torchrun(ctx, "ddp_basic", cfg, 300)
    if code:
        raise AssertionError(f"torchrun exited {code}: {text.strip().splitlines()[-1:]}")
    ts = load_checkpoint(out / "checkpoint.pt")["train_state"]
    return f"BYOL + SyncBatchNorm on 2 GPUs: {ts['step']} steps, world size {ts['world_size']}"


def ddp_compile(ctx: Context) -> str:
    _need_two_gpus(ctx)
    cfg = ctx.config("ddp_compile", epochs=2, run={"amp": "auto", "compile": True})
    code, text, _ = _torchrun(ctx, "ddp_compile", cfg, 400)
    if code:
        raise AssertionError(f"torchrun exited {code}: {text.strip().splitlines()[-1:]}")
    skipped = "not compiling the model under multi-GPU DDP" in text
    return f"finished; model compile skipped under SyncBN: {skipped}; augmentation compiled"


def _image_folder(root: Path, per_class: dict[str, int], size: int = 32) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        for c, base in (("a", 60), ("b", 190)):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                px = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(px).save(d / f"{i}.png")
    return root


def ddp_knn_hang(ctx: Context) -> str:
    _need_two_gpus(ctx)
    folder = _image_folder(_fresh(ctx.out / "imagenet_like"), {"train": 128, "val": 32})
    cfg = ctx.config("ddp_knn_hang", epochs=2, data={"dataset": "imagefolder", "data_dir": str(folder),
                                                    "subset": None, "image_size": 32},
                     optim={"batch_size": 64}, run={"amp": "auto", "knn_every": 1})
    code, text, out = _torchrun(ctx, "ddp_knn_hang", cfg, 180)
    if code:
        raise AssertionError(f"torchrun exited {code}: {text.strip().splitlines()[-1:]}")
    from gsg.train.logging import read_metrics

    epochs = read_metrics(out / "metrics.jsonl", "epoch")
    if not all("knn_k1" in e for e in epochs):
        raise AssertionError("the kNN monitor did not report every epoch")
    return f"train/ + val/ folder, kNN each epoch on val/: k=1 {epochs[-1]['knn_k1']:.1f}%, no hang"


STEPS: dict[str, Callable[[Context], str]] = {
    "env": env, "cuda_unit": cuda_unit, "fp32_eager": fp32_eager, "bf16_cl_knn": bf16_cl_knn,
    "bf16_resume": bf16_resume, "fp16_scaler": fp16_scaler, "byol_dp_fresh": byol_dp_fresh,
    "trainer_checks": trainer_checks, "sync_debug": sync_debug, "compile": compile_step, "knn_gpu": knn_gpu,
    "linear_feat": linear_feat, "linear_aug": linear_aug, "diagnose": diagnose_step, "knn_on_cpu": knn_on_cpu,
    "resume_on_cpu": resume_on_cpu, "bench_epoch": bench_epoch, "bf16_gsg": bf16_gsg, "ddp_basic": ddp_basic,
    "ddp_compile": ddp_compile, "ddp_knn_hang": ddp_knn_hang,
}
