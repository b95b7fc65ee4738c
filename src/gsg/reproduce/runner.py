"""Run a paper experiment end to end: pretrain every run, evaluate, aggregate over seeds, write the report.

Layout of ``out``::

    out/runs/<run>-s<seed>/   checkpoint.pt, metrics.jsonl, config.json, command.txt, done.json
    out/tsne/<run>-s<seed>.png (t-SNE experiment)
    out/results.json, out/results.md, out/commands.md, out/<experiment>_*.png

A run is finished when its ``done.json`` exists (written atomically after pretraining and the evaluations);
a second call reuses it without training. A run without ``done.json`` is (re)started with
``pretrain(cfg, resume="auto")``, which continues its checkpoint when there is one, so an interrupted
reproduction picks up where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

import gsg
from gsg.checkpoint import load_checkpoint
from gsg.config import Config, crops_per_image, load_config
from gsg.errors import CheckpointError, ConfigError, GsgError, TrainingDiverged
from gsg.eval.baselines import Protocol, evaluate_baselines
from gsg.eval.knn import knn_evaluate, tsne_evaluate
from gsg.eval.linear import MODES, linear_evaluate
from gsg.reproduce import prefix, report
from gsg.reproduce.experiments import (
    CPU_TRAIN_IMAGES,
    Claim,
    Experiment,
    LinearDef,
    Overrides,
    RunDef,
    TsneDef,
    _merge,
    estimate_seconds,
    get_experiment,
    run_overrides,
)
from gsg.reproduce.stats import fmt_difference, paired_difference
from gsg.train.loop import CHECKPOINT_NAME, pretrain

log = logging.getLogger("gsg.reproduce")

RESULT_FORMAT = 1
DONE_NAME = "done.json"
# base_overrides may carry this extra section: evaluation settings, which are not part of the training config.
EVAL_SECTION = "reproduce"
EVAL_KEYS = ("linear_epochs", "linear_mode", "linear_train_subset", "tsne_max_points", "tsne_train_subset")
# Settings that do not change what a run computes: a finished run stays valid when only these differ.
# Settings that do not change what a run trains (its weights): a finished run made with other values is reused.
# The online probe and the decomposition log are bit-identical on/off (tested); W&B and the final baselines only
# report.
VOLATILE = {("run", k) for k in ("out", "device", "progress", "tensorboard", "log_every", "compile", "amp",
                                 "channels_last", "wandb", "wandb_project", "wandb_name", "wandb_mode",
                                 "online_probe", "probe_optimizer", "probe_lr", "final_baselines",
                                 "log_decomposition")} | {("data", k) for k in ("data_dir", "workers", "on_device",
                                                                             "download")}


@dataclass
class PlannedRun:
    run: RunDef
    seed: int
    key: str  # "<run>-s<seed>": the directory name under out/runs
    dir: Path
    config: Config
    command: str  # the gsg pretrain command that trains this run by hand
    eval_commands: list[str]


# ------------------------------------------------------------------------------------------ planning


def default_out(experiment: str, scale: str) -> Path:
    return Path("runs") / "reproduce" / f"{experiment}-{scale}"


def runs_root(out: Path, runs_dir: str | os.PathLike[str] | None) -> Path:
    """Where the run directories live: ``runs_dir`` if given, else ``out/runs``."""
    return out / "runs" if runs_dir is None else Path(runs_dir)


def _split_overrides(base_overrides: dict[str, Any] | None) -> tuple[Overrides, dict[str, Any]]:
    """(config overrides, evaluation settings) from ``base_overrides``."""
    if base_overrides is None:
        return {}, {}
    if not isinstance(base_overrides, dict):
        raise ConfigError(f"base_overrides must be a {{section: {{key: value}}}} table, got {base_overrides!r}")
    cfg = {k: v for k, v in base_overrides.items() if k != EVAL_SECTION}
    extra = base_overrides.get(EVAL_SECTION) or {}
    if not isinstance(extra, dict):
        raise ConfigError(f"[{EVAL_SECTION}] must be a table of keys, got {extra!r}")
    for key, value in extra.items():
        if key not in EVAL_KEYS:
            raise ConfigError(f"unknown key {EVAL_SECTION}.{key}; valid keys: {', '.join(EVAL_KEYS)}")
        if key == "linear_mode":
            if value not in MODES:
                raise ConfigError(f"{EVAL_SECTION}.linear_mode must be one of {', '.join(MODES)}, got {value!r}")
        elif value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{EVAL_SECTION}.{key} must be a positive integer, got {value!r}")
        elif value is None and key in ("linear_epochs", "tsne_max_points"):
            raise ConfigError(f"{EVAL_SECTION}.{key} cannot be empty")
    return cfg, extra


def _eval_settings(exp: Experiment, extra: dict[str, Any]) -> tuple[LinearDef | None, TsneDef | None]:
    linear, tsne = exp.linear, exp.tsne
    if linear is not None:
        linear = dataclasses.replace(linear, **{k[len("linear_"):]: v for k, v in extra.items()
                                                if k.startswith("linear_")})
    if tsne is not None:
        tsne = dataclasses.replace(tsne, **{k[len("tsne_"):]: v for k, v in extra.items() if k.startswith("tsne_")})
    return linear, tsne


# `gsg pretrain` flags for config keys (as gsg.cli.PRETRAIN_FLAGS; the tests parse every command back with the
# real parser). A flag is needed where `--set` would misread a string: `--set model.predictor=none` means null.
FLAG_FOR: dict[tuple[str, str], str] = {
    ("ssl", "method"): "--method", ("ssl", "stop_gradient"): "--stop-gradient", ("model", "predictor"): "--predictor",
    ("ssl", "views"): "--views", ("data", "dataset"): "--dataset", ("data", "data_dir"): "--data-dir",
    ("data", "subset"): "--subset", ("model", "backbone"): "--backbone", ("model", "width"): "--width",
    ("optim", "epochs"): "--epochs", ("optim", "batch_size"): "--batch-size", ("optim", "lr"): "--lr",
    ("run", "device"): "--device",
}


def _is_optional(section: str, key: str) -> bool:
    import typing

    from gsg.config import Config

    cls = type(getattr(Config(), section, None))
    hint = typing.get_type_hints(cls).get(key) if dataclasses.is_dataclass(cls) else None
    return hint is None or type(None) in typing.get_args(hint)


def _set_value(section: str, key: str, value: Any) -> str:
    """``value`` as `gsg pretrain --set` parses it back: JSON, or ``none`` for an empty value."""
    if value is None:
        return "none"
    if not isinstance(value, str):
        return json.dumps(value)
    # "none" reads back as None only for a field that may be empty (gsg.config._coerce); a plain str field such as
    # model.proj_last_bn keeps it as the string.
    optional = _is_optional(section, key)
    try:
        misread = (optional and value.lower() in ("none", "null")) or not isinstance(json.loads(value), str)
    except json.JSONDecodeError:
        misread = False
    if misread:
        raise ConfigError(f"{section}.{key} = {value!r} cannot be written as --set {section}.{key}=...: the command "
                          "line would read it as another type; choose another value")
    return value


def pretrain_args(preset: str | None, overrides: Overrides, seed: int, out: Path) -> list[str]:
    """The `gsg pretrain` arguments (after ``pretrain``) that build exactly this run's config."""
    args: list[str] = []
    if preset:
        args += ["--preset", preset]
    for section, values in overrides.items():
        for key, value in values.items():
            if (section, key) in (("run", "seed"), ("run", "out")):  # given as --seed and --out
                continue
            flag = FLAG_FOR.get((section, key))
            if flag is not None and value is not None:  # flags are typed: an empty value goes through --set
                args += [flag, str(value)]
            else:
                args += ["--set", f"{section}.{key}={_set_value(section, key, value)}"]
    return [*args, "--seed", str(seed), "--out", str(out), "--auto-resume"]


KNN_K = 200  # the final kNN: weighted k=200 (T: the experiment's knn_temperature) and k=1, on the full splits


def knn_settings(exp: Experiment) -> dict[str, Any]:
    return {"protocol": "full splits", "k": KNN_K, "temperature": exp.knn_temperature}


def _eval_commands(exp: Experiment, plan_dir: Path, key: str, label: str, linear: LinearDef | None,
                   tsne: TsneDef | None, out: Path, device: str) -> list[str]:
    ckpt = str(plan_dir / CHECKPOINT_NAME)
    dev = [] if device == "auto" else ["--device", device]
    cmds: list[str] = []
    if "knn" in exp.evals:
        cmds.append(shlex.join(["gsg", "knn", ckpt, "--k", str(KNN_K), "--temperature", str(exp.knn_temperature),
                                *dev]))
    if "linear" in exp.evals and linear is not None:
        sub = [] if linear.train_subset is None else ["--train-subset", str(linear.train_subset)]
        cmds.append(shlex.join(["gsg", "linear", ckpt, "--mode", linear.mode, "--epochs", str(linear.epochs),
                                *sub, *dev]))
    if "tsne" in exp.evals and tsne is not None:
        cmds.append(shlex.join(["gsg", "tsne", ckpt, "--out", str(tsne_png(out, key)), "--max-points",
                                str(tsne.max_points), "--title", label, *dev]))
    return cmds


def tsne_png(out: Path, key: str) -> Path:
    return out / "tsne" / f"{key}.png"


def _check_not_varied(exp: Experiment, cfg_over: Overrides) -> None:
    """base_overrides may change anything but what the experiment varies between its runs (Table 4's batch
    size, Fig. 4's stop-gradient...): overriding that would make every run the same."""
    for section, values in cfg_over.items():
        for key, value in (values or {}).items() if isinstance(values, dict) else ():
            varied = {r.name: r.overrides[section][key] for r in exp.runs if key in r.overrides.get(section, {})}
            if varied and any(v != value for v in varied.values()):
                raise ConfigError(f"{section}.{key} is what {exp.name} varies between its runs ("
                                  + ", ".join(f"{n}: {v}" for n, v in varied.items())
                                  + f"); it cannot be overridden for all of them. Drop {section}.{key} from the "
                                  "overrides, or train the variant you want with gsg pretrain")


def _with_epochs_factor(exp: Experiment, run: RunDef, overrides: Overrides) -> Overrides:
    """``run.epochs_factor`` × the epochs the run would otherwise train (preset, base and overrides)."""
    if run.epochs_factor == 1:
        return overrides
    epochs = load_config(preset=exp.preset, overrides=overrides).optim.epochs
    return _merge(overrides, {"optim": {"epochs": epochs * run.epochs_factor}})


def plan_runs(exp: Experiment, seeds: int, out: Path, device: str = "auto",
              base_overrides: dict[str, Any] | None = None, runs_dir: Path | None = None) -> list[PlannedRun]:
    """Every run × seed of ``exp`` with its resolved config and the commands that reproduce it by hand.

    ``runs_dir`` (default ``out/runs``) holds one directory per run; experiments given the same one share
    the runs they have in common (same directory name and config), so those are trained once."""
    root = runs_root(out, runs_dir)
    cfg_over, extra = _split_overrides(base_overrides)
    _check_not_varied(exp, cfg_over)
    linear, tsne = _eval_settings(exp, extra)
    plans: list[PlannedRun] = []
    for run in exp.runs:
        for seed in range(run.seeds(seeds)):
            key = f"{run.key_name}-s{seed}"
            rdir = root / key
            dev = {"run": {"device": device}} if device != "auto" else {}
            overrides = _with_epochs_factor(exp, run, _merge(run_overrides(exp, run), cfg_over, dev))
            cfg = load_config(preset=exp.preset, overrides=_merge(overrides, {"run": {"seed": seed,
                                                                                      "out": str(rdir)}}))
            command = shlex.join(["gsg", "pretrain", *pretrain_args(exp.preset, overrides, seed, rdir)])
            plans.append(PlannedRun(run, seed, key, rdir, cfg, command,
                                    _eval_commands(exp, rdir, key, run.label, linear, tsne, out, cfg.run.device)))
    if exp.seed_major:  # stable: within a seed, the definition order (SimSiam before BYOL)
        plans.sort(key=lambda p: p.seed)
    return plans


def reproduce_command(experiment: str, scale: str, seeds: int, out: Path, device: str,
                      base_overrides: dict[str, Any] | None, runs_dir: Path | None = None, jobs: int = 1) -> str:
    args = ["gsg", "reproduce", experiment, "--scale", scale, "--seeds", str(seeds), "--out", str(out)]
    if runs_dir is not None:
        args += ["--runs", str(runs_dir)]
    if jobs != 1:
        args += ["--jobs", str(jobs)]
    if device != "auto":
        args += ["--device", device]
    for section, values in (base_overrides or {}).items():
        for key, value in values.items():
            args += ["--set", f"{section}.{key}={_set_value(section, key, value)}"]
    return shlex.join(args)


def full_scale_launch(experiment: str, nproc: int, *, out: str | os.PathLike[str] | None = None,
                      seeds: int | None = None, base_overrides: dict[str, Any] | None = None,
                      runs_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """The torchrun commands, one per run, that pretrain ``experiment`` at full scale on ``nproc`` GPUs.

    Each writes to the directory `gsg reproduce EXPERIMENT --scale full --out OUT` uses, so running that
    afterwards finds the finished checkpoints, evaluates them and writes the report. ``optim.batch_size`` is
    the global batch: each process takes batch/nproc and GSG pairs images within it.
    """
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"nproc must be a positive number of processes (GPUs per node), got {nproc!r}")
    exp = get_experiment(experiment, "full")
    out_path = Path(out) if out is not None else default_out(experiment, "full")
    root = runs_root(out_path, runs_dir)
    n = _check_seeds(exp.default_seeds if seeds is None else seeds)
    cfg_over, _ = _split_overrides(base_overrides)
    cmds = []
    for run in exp.runs:
        overrides = _with_epochs_factor(exp, run, _merge(run_overrides(exp, run), cfg_over))
        for seed in range(run.seeds(n)):
            rdir = root / f"{run.key_name}-s{seed}"
            cfg = load_config(preset=exp.preset, overrides=overrides)
            if cfg.optim.batch_size % nproc:
                raise ConfigError(f"{run.name}: the global batch {cfg.optim.batch_size} does not divide over "
                                  f"{nproc} processes; choose nproc among the divisors of the batch size")
            cmds.append(shlex.join(["torchrun", "--nproc_per_node", str(nproc), "--standalone", "-m", "gsg",
                                    "pretrain", *pretrain_args(exp.preset, overrides, seed, rdir)]))
    return cmds


def _check_seeds(seeds: Any) -> int:
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds must be a positive number of seeds, got {seeds!r}")
    return seeds


# ------------------------------------------------------------------------------------------ one run


def _write_json(path: Path, obj: Any) -> None:
    """Atomic: a crash leaves the old file or the new one, never half of it (done.json marks a run finished)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_finite(obj), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _finite(obj: Any) -> Any:
    """JSON-safe: NaN/inf (a diverged metric) become null, so results.json stays standard JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _identity(cfg: dict[str, Any]) -> dict[str, Any]:
    return {s: {k: v for k, v in vals.items() if (s, k) not in VOLATILE} for s, vals in cfg.items()}


def _config_diffs(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    a, b = _identity(saved), _identity(now)
    # a key added to the schema after the run was made reads as its default: what that run did
    d = Config().to_dict()
    return [f"{s}.{k}: done.json {a.get(s, {}).get(k, d.get(s, {}).get(k))!r} vs now {v!r}"
            for s, vals in b.items() for k, v in vals.items() if a.get(s, {}).get(k, d.get(s, {}).get(k)) != v]


def final_knn(history: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """kNN of the last epoch that measured it (the online monitor always measures the last epoch)."""
    for h in reversed(history):
        if "knn_k1" in h or "knn_k200" in h:
            return {"knn_k1": h.get("knn_k1"), "knn_k200": h.get("knn_k200"), "epoch": h.get("epoch")}
    return {"knn_k1": None, "knn_k200": None, "epoch": None}


def _final_metrics(history: Sequence[dict[str, Any]]) -> dict[str, Any]:
    last = history[-1] if history else {}
    return {"epochs": len(history), "loss": last.get("loss"), "z_std": last.get("z_std"),
            "z_rankme": last.get("z_rankme"), **{k: v for k, v in final_knn(history).items() if k != "epoch"}}


def _run_evals(exp: Experiment, plan: PlannedRun, rec: dict[str, Any], linear: LinearDef | None,
               tsne: TsneDef | None, out: Path) -> bool:
    """Add the missing or outdated evaluations to ``rec``; True if anything was computed."""
    device = plan.config.run.device  # the evaluations run where the training ran
    evals = rec.setdefault("evals", {})
    times = rec.setdefault("times", {}).setdefault("evals_s", {})
    changed = False
    ckpt = plan.dir / CHECKPOINT_NAME
    if "knn" in exp.evals and evals.get("knn", {}).get("settings") != knn_settings(exp):
        # The final numbers use the full protocol (whole train split as bank, whole test split); the online
        # monitor in the history stays small and only draws the curves.
        t0 = time.perf_counter()
        cmd = next((c for c in plan.eval_commands if c.startswith("gsg knn")), "")
        try:
            r = knn_evaluate(ckpt, k=KNN_K, temperature=exp.knn_temperature, device=device, command=cmd)
            evals["knn"] = {"settings": knn_settings(exp), "knn_k1": r["knn_k1"], f"knn_k{KNN_K}": r[f"knn_k{KNN_K}"],
                            "train_size": r["train_size"], "test_size": r["test_size"],
                            "source": "gsg knn: the whole train split as bank, the whole test split",
                            "result_file": r["result_file"]}
        except GsgError as exc:
            log.warning("%s: kNN failed: %s", plan.key, exc)
            evals["knn"] = {"settings": knn_settings(exp), "error": str(exc)}
        times["knn"] = time.perf_counter() - t0
        changed = True
    if "linear" in exp.evals and linear is not None:
        want = dataclasses.asdict(linear)
        have = evals.get("linear")
        if have is None or have.get("settings") != want or "error" in have:
            t0 = time.perf_counter()
            cmd = next((c for c in plan.eval_commands if c.startswith("gsg linear")), "")
            try:
                r = linear_evaluate(ckpt, epochs=linear.epochs, mode=linear.mode,  # type: ignore[arg-type]
                                    train_subset=linear.train_subset, device=device, command=cmd)
                evals["linear"] = {"settings": want, "top1": r["top1"], "top5": r.get("top5"),
                                   "protocol": r["protocol"], "train_size": r["train_size"],
                                   "test_size": r["test_size"], "result_file": r["result_file"]}
            except GsgError as exc:  # e.g. a probe that diverges on collapsed features: record, go on
                log.warning("%s: linear probe failed: %s", plan.key, exc)
                evals["linear"] = {"settings": want, "error": str(exc)}
            times["linear"] = time.perf_counter() - t0
            changed = True
    if "tsne" in exp.evals and tsne is not None:
        want = dataclasses.asdict(tsne)
        have = evals.get("tsne")
        png = tsne_png(out, plan.key)
        if have is None or have.get("settings") != want or "error" in have or not png.is_file():
            t0 = time.perf_counter()
            try:
                r = tsne_evaluate(ckpt, png, max_points=tsne.max_points, train_subset=tsne.train_subset,
                                  device=device, title=plan.run.label)
                evals["tsne"] = {"settings": want, "png": r["png"], "knn_k200": r["knn_k200"],
                                 "knn_k1": r["knn_k1"], "points": r["points"]}
            except GsgError as exc:
                log.warning("%s: t-SNE failed: %s", plan.key, exc)
                evals["tsne"] = {"settings": want, "error": str(exc)}
            times["tsne"] = time.perf_counter() - t0
            changed = True
    return changed


BASELINE_SEEDS = 3  # random-init networks averaged for the baseline rows


def baseline_protocol(plan: PlannedRun, linear: LinearDef | None, temperature: float = 0.1) -> Protocol:
    """The protocol of an experiment's final numbers (full-split kNN, its linear probe) for the baselines."""
    from gsg.data.datasets import load_dataset
    from gsg.models.backbones import CIFAR_STEM_MAX_SIZE

    c = plan.config
    ds = load_dataset(c.data.dataset, "train", data_dir=c.data.data_dir, download=False, image_size=c.data.image_size)
    stem = c.model.cifar_stem if c.model.cifar_stem is not None else ds.image_size <= CIFAR_STEM_MAX_SIZE
    spec = {"arch": c.model.backbone, "width": c.model.width, "in_channels": ds.channels, "cifar_stem": stem}
    use_linear = linear is not None
    return Protocol(dataset=c.data.dataset, image_size=ds.image_size, mean=ds.mean, std=ds.std, backbone=spec,
                    data_dir=c.data.data_dir, k=KNN_K, temperature=temperature, linear=use_linear,
                    linear_epochs=linear.epochs if linear else 90,
                    linear_train_subset=linear.train_subset if linear else None,
                    extra={"linear_mode": "features"})


def experiment_baselines(plans: Sequence[PlannedRun], linear: LinearDef | None, root: Path,
                         device: str, temperature: float = 0.1) -> dict[str, Any]:
    """Raw-pixel and random-init numbers under the experiment's protocol, computed once per protocol and kept
    in ``root/baselines/`` (experiments sharing a runs directory and protocol share them)."""
    proto = baseline_protocol(plans[0], linear, temperature)
    key = hashlib.sha256(json.dumps(dataclasses.asdict(proto), sort_keys=True, default=str).encode()).hexdigest()[:12]
    path = root / "baselines" / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    res = evaluate_baselines(proto, seeds=range(BASELINE_SEEDS), device=device)
    rec = {"protocol": dataclasses.asdict(proto), "results": res, "seconds": time.perf_counter() - t0,
           "command": shlex.join(_baseline_command(proto, linear))}
    _write_json(path, rec)
    return rec


def _baseline_command(p: Protocol, linear: LinearDef | None) -> list[str]:
    cmd = ["gsg", "baselines", "--dataset", p.dataset, "--backbone", p.backbone["arch"], "--width",
           str(p.backbone["width"]), "--image-size", str(p.image_size), "--k", str(p.k), "--temperature",
           str(p.temperature), "--seeds", str(BASELINE_SEEDS)]
    if p.data_dir:
        cmd += ["--data-dir", p.data_dir]
    if linear is None:
        return [*cmd, "--no-linear"]
    cmd += ["--linear-epochs", str(p.linear_epochs)]
    return cmd + (["--linear-train-subset", str(p.linear_train_subset)] if p.linear_train_subset else [])


def _saved_epoch(ckpt: Path) -> int:
    if not ckpt.is_file():
        return 0
    try:
        return int(load_checkpoint(ckpt)["train_state"]["epoch"])
    except (CheckpointError, KeyError, TypeError):
        return 0  # pretrain itself reports an unusable checkpoint, with the fix


def _read_done(path: Path) -> dict[str, Any] | None:
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:  # written atomically, so only a hand edit gets here
        log.warning("ignoring unreadable %s (%s): the run is continued from its checkpoint", path, exc)
        return None
    return rec if isinstance(rec, dict) and rec.get("format") == RESULT_FORMAT else None


LOCK_NAME = "lock"
LOCK_POLL_S = 10.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    try:  # a helper that died but is not reaped yet is a zombie: gone, for the lock
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _try_lock(run_dir: Path, key: str) -> Path | None:
    """Take ``run_dir/lock``, or None while another live process on this host holds it.

    Two reproductions sharing a ``--runs`` directory (or the helpers of ``--jobs``) would otherwise train the
    same run twice into one checkpoint. A lock left by a process that died is taken over."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK_NAME
    host = os.uname().nodename
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text())
                pid, holder_host = int(holder["pid"]), str(holder["host"])
            except (OSError, ValueError, KeyError, TypeError):
                time.sleep(0.5)  # being written this instant, or removed; look again
                continue
            if holder_host == host and not _pid_alive(pid):
                log.warning("%s: taking over the lock of process %d, which is gone", key, pid)
                lock.unlink(missing_ok=True)
                continue
            return None
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": host}, f)
        return lock


def run_all(exp: Experiment, plans: Sequence[PlannedRun], *, linear: LinearDef | None, tsne: TsneDef | None,
            out: Path, on_record: Any = None) -> list[dict[str, Any]]:
    """Every plan's record, in plan order. A run that another process is training is put off, not waited
    for: two reproductions on one runs directory share the work instead of one trailing the other. A run that
    continues a shorter one (:mod:`gsg.reproduce.prefix`) is put off until that one has finished."""
    records: dict[int, dict[str, Any]] = {}
    pending = list(range(len(plans)))
    sources = prefix.prefix_sources(plans)
    index = {p.key: i for i, p in enumerate(plans)}
    estimates = {p.key: _estimate(exp, p, sources.get(p.key)) for p in plans}
    waiting = False
    while pending:
        for i in pending:
            plan = plans[i]
            source = sources.get(plan.key)
            if source is not None and index[source.key] in pending and not (plan.dir / CHECKPOINT_NAME).exists():
                continue  # its first epochs are being (or will be) trained as the shorter run
            lock = _try_lock(plan.dir, plan.key)
            if lock is None:
                continue
            est = estimates[plan.key]
            log.info("run %d/%d: %s%s", i + 1, len(plans), plan.key, f" (about {est / 60:.0f} min on one core)"
                     if est is not None and exp.scale == "cpu" else "")
            try:
                rec = _run_one_locked(exp, plan, linear=linear, tsne=tsne, out=out, source=source)
            finally:
                lock.unlink(missing_ok=True)
            # this experiment's names, also for a run another experiment sharing the runs directory trained
            rec.update(name=plan.run.name, label=plan.run.label, group=plan.run.group)
            records[i] = rec
            pending.remove(i)
            waiting = False
            if on_record is not None:
                on_record([records[j] for j in sorted(records)])
            break
        else:  # every run left is being trained by another process, or waits for one that is
            if not waiting:
                log.info("waiting for other processes training %s", ", ".join(plans[i].key for i in pending))
                waiting = True
            time.sleep(LOCK_POLL_S)
    return [records[i] for i in range(len(plans))]


def _check_same_config(done: Path, rec: dict[str, Any], plan: PlannedRun) -> None:
    """A finished run is reused only if it was made with exactly this plan's config."""
    diffs = _config_diffs(rec.get("config", {}), plan.config.to_dict())
    if diffs:
        raise ConfigError(f"{done} records a run made with a different config ({'; '.join(diffs)}); "
                          f"use another --out, or delete {plan.dir} to train it again")


def _run_one_locked(exp: Experiment, plan: PlannedRun, *, linear: LinearDef | None, tsne: TsneDef | None,
                    out: Path, source: PlannedRun | None = None) -> dict[str, Any]:
    """Pretrain (or reuse, or resume, or continue ``source``) one run and evaluate it, under its lock; returns its
    done.json record."""
    done = plan.dir / DONE_NAME
    now_cfg = plan.config.to_dict()
    rec = _read_done(done) if done.is_file() else None
    t_start = time.perf_counter()
    if rec is not None:
        _check_same_config(done, rec, plan)
        log.info("%s: finished earlier, reusing %s", plan.key, done)
        if rec.get("status") == "ok" and _run_evals(exp, plan, rec, linear, tsne, out):
            _write_json(done, rec)
        rec["how"] = "reused"
        rec["wall_s_this_call"] = time.perf_counter() - t_start
        return rec

    ckpt = plan.dir / CHECKPOINT_NAME
    continued = prefix.continue_from(plan, source) if source is not None else None
    if continued is not None:
        log.info("%s: continues %s from its epoch %d (%s)", plan.key, continued["source"], continued["epoch"],
                 continued["why"])
    continued = continued or prefix.read_record(plan.dir)
    resumed_from = _saved_epoch(ckpt)
    plan.dir.mkdir(parents=True, exist_ok=True)
    _write_text(plan.dir / "command.txt", plan.command + "\n")
    _write_text(plan.dir / "config.json", json.dumps(now_cfg, indent=2))
    log.info("%s: %s (%s)", plan.key, f"resuming from epoch {resumed_from}" if resumed_from else "training",
             plan.command)
    rec = {"format": RESULT_FORMAT, "key": plan.key, "name": plan.run.name, "label": plan.run.label,
           "group": plan.run.group, "seed": plan.seed, "pid": os.getpid(), "config": now_cfg, "command": plan.command,
           "eval_commands": plan.eval_commands, "checkpoint": str(ckpt), "status": "ok"}
    if continued is not None:
        rec["continued_from"] = continued
    t0 = time.perf_counter()
    try:
        res = pretrain(plan.config, resume="auto")
        history = list(res["history"])
    except TrainingDiverged as exc:  # deterministic: record it, so that a rerun does not repeat it
        log.warning("%s: %s", plan.key, exc)
        history = []
        if ckpt.is_file():
            history = list(load_checkpoint(ckpt).get("metrics", {}).get("history", []))
        rec.update(status="diverged", error=str(exc))
    pretrain_s = time.perf_counter() - t0
    rec.update(history=history, final=_final_metrics(history), evals={},
               times={"pretrain_s": pretrain_s, "evals_s": {}, "resumed_from_epoch": resumed_from,
                      "train_epochs_s": sum(float(h.get("epoch_time_s", 0.0)) for h in history)})
    if rec["status"] == "ok":
        _run_evals(exp, plan, rec, linear, tsne, out)
    rec["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    _write_json(done, rec)
    rec["how"] = (f"continued {continued['source']} from epoch {continued['epoch']}" if continued is not None
                  and resumed_from == continued["epoch"] else
                  f"resumed from epoch {resumed_from}" if resumed_from else "trained")
    rec["wall_s_this_call"] = time.perf_counter() - t_start
    return rec


# ------------------------------------------------------------------------------------------ aggregation


def mean_std(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation (n − 1) of the finite values; std is None for fewer than two."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"mean": None, "std": None, "n": 0, "values": []}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else None,
            "n": len(vals), "values": vals}


def _metric_values(rec: dict[str, Any], knn_metric: str) -> dict[str, float | None]:
    f = rec.get("final", {})
    ev = rec.get("evals", {})
    knn = ev.get("knn") if "knn_k1" in ev.get("knn", {}) else f  # full protocol when measured, else the monitor
    return {"knn": knn.get(knn_metric), "knn_k1": knn.get("knn_k1"), "knn_k200": knn.get("knn_k200"),
            "linear": ev.get("linear", {}).get("top1"), "tsne_knn": ev.get("tsne", {}).get("knn_k200"),
            "z_std": f.get("z_std"), "z_rankme": f.get("z_rankme"), "loss": f.get("loss")}


def _curve(records: list[dict[str, Any]], key: str) -> dict[str, list[Any]]:
    """Per-epoch mean (and std over seeds) of ``key`` on the epochs every seed measured."""
    per_seed = [{h["epoch"]: h[key] for h in r.get("history", []) if h.get(key) is not None and "epoch" in h}
                for r in records]
    if not per_seed:
        return {"epoch": [], "mean": [], "std": []}
    epochs = sorted(set.intersection(*(set(s) for s in per_seed)))
    stats = [mean_std([s[e] for s in per_seed]) for e in epochs]
    return {"epoch": epochs, "mean": [s["mean"] for s in stats], "std": [s["std"] for s in stats]}


def aggregate(exp: Experiment, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per run definition: mean ± std over seeds of every metric, and the kNN / std(z) curves."""
    variants: dict[str, Any] = {}
    for run in exp.runs:
        recs = [r for r in records if r.get("name") == run.name]
        if not recs:
            continue
        per = [_metric_values(r, exp.knn_metric) for r in recs]
        best = [max((v for v in _curve([r], exp.knn_metric)["mean"] if v is not None), default=None)
                for r in recs]
        metrics = {m: mean_std([p[m] for p in per]) for m in per[0]}
        metrics["knn_best"] = mean_std(best)
        curves = {"knn": _curve(recs, exp.knn_metric), "z_std": _curve(recs, "z_std")}
        for key in exp.curves:  # the experiment's own per-epoch metrics: the curve and its final value
            curves[key] = _curve(recs, key)
            metrics.setdefault(key, mean_std([_last(r.get("history", []), key) for r in recs]))
        for m, vals in [*((m, [p[m] for p in per]) for m in per[0]), ("knn_best", best)]:
            metrics[m]["by_seed"] = {int(r["seed"]): v for r, v in zip(recs, vals, strict=True)}
        views = recs[0].get("config", {}).get("ssl", {}).get("views")
        variants[run.name] = {"label": run.label, "group": run.group, "seeds": [r["seed"] for r in recs],
                              "crops": crops_per_image(views),
                              "status": sorted({r.get("status", "ok") for r in recs}), "metrics": metrics,
                              "curve": curves,
                              "errors": sorted({e.get("error") for r in recs for e in r.get("evals", {}).values()
                                                if isinstance(e, dict) and e.get("error")})}
    return variants


def _last(history: Sequence[dict[str, Any]], key: str) -> float | None:
    return next((h[key] for h in reversed(history) if h.get(key) is not None), None)


def check_claims(exp: Experiment, variants: dict[str, Any]) -> list[dict[str, Any]]:
    """Each claim of the paper, with our numbers and whether it holds on them."""
    out = []
    for c in exp.claims:
        out.append({"claim": c.text, "kind": c.kind, **_verdict(c, variants, exp.chance)})
    return out


def _mean(variants: dict[str, Any], name: str, metric: str) -> float | None:
    return variants.get(name, {}).get("metrics", {}).get(metric, {}).get("mean")


def _by_seed(variants: dict[str, Any], name: str, metric: str) -> dict[int, float | None]:
    by = variants.get(name, {}).get("metrics", {}).get(metric, {}).get("by_seed", {})
    return {int(k): v for k, v in by.items()}


ACCURACIES = ("knn", "knn_k1", "knn_k200", "knn_best", "linear", "tsne_knn")


def _verdict(c: Claim, variants: dict[str, Any], chance: float) -> dict[str, Any]:
    if c.kind == "range":
        vals = [_mean(variants, r, c.metric) for r in c.runs]
        if any(v is None for v in vals):
            return {"verdict": "n/a", "ours": "missing"}
        spread = max(vals) - min(vals)  # type: ignore[type-var,operator]
        return {"verdict": "holds" if spread <= c.tol else "does not hold",
                "ours": f"range {spread:.1f} points ({' / '.join(f'{v:.1f}' for v in vals)})"}  # type: ignore[str-format]
    if c.kind == "range_less":
        mine, other = ([_mean(variants, r, c.metric) for r in rs] for rs in (c.runs, c.other))
        if any(v is None for v in (*mine, *other)):
            return {"verdict": "n/a", "ours": "missing"}
        r_mine = max(mine) - min(mine)  # type: ignore[type-var,operator]
        r_other = max(other) - min(other)  # type: ignore[type-var,operator]
        return {"verdict": "holds" if r_mine < r_other else "does not hold",
                "ours": f"range {r_mine:.1f} vs {r_other:.1f} points"}
    if c.kind == "rises":
        curve = variants.get(c.a, {}).get("curve", {}).get(c.metric, {}).get("mean", [])
        vals = [v for v in curve if v is not None]
        if len(vals) < 2:
            return {"verdict": "n/a", "ours": "missing"}
        return {"verdict": "holds" if vals[-1] > vals[0] else "does not hold",
                "ours": f"{vals[0]:.3g} -> {vals[-1]:.3g} (first -> last epoch)"}
    a = _mean(variants, c.a, c.metric)
    if a is None:
        return {"verdict": "n/a", "ours": "missing"}
    if c.kind in ("below", "above"):
        ok = a < c.tol if c.kind == "below" else a > c.tol
        return {"verdict": "holds" if ok else "does not hold",
                "ours": f"{c.metric} = {a:.3g} ({'<' if c.kind == 'below' else '>'} {c.tol:g}?)"}
    if c.kind in ("collapsed", "not_collapsed"):
        collapsed = a <= chance + c.tol
        ok = collapsed if c.kind == "collapsed" else not collapsed
        return {"verdict": "holds" if ok else "does not hold", "ours": f"{a:.1f}% (chance {chance:g}%)"}
    b = _mean(variants, c.b, c.metric)
    if b is None:
        return {"verdict": "n/a", "ours": "missing"}
    if c.kind == "greater" and c.metric not in ACCURACIES:  # a history metric such as m_o, in [0, 1]
        return {"verdict": "holds" if a > b else "does not hold", "ours": f"{a:.3g} vs {b:.3g} ({a - b:+.3g})"}
    diff = paired_difference(_by_seed(variants, c.a, c.metric), _by_seed(variants, c.b, c.metric))
    ours = f"{a:.1f} vs {b:.1f}; paired difference {fmt_difference(diff)}"
    if c.kind == "greater":  # it holds only when the difference counts (gsg.reproduce.stats)
        verdict = {"+": "holds", "-": "does not hold (reversed)", "=": "no difference that counts",
                   "?": "n/a"}[diff["direction"]]
        return {"verdict": verdict, "ours": ours, "difference": diff}
    if c.kind == "close":  # the whole interval (one seed: the difference) within ±tol
        lo, hi = (diff["lo"], diff["hi"]) if diff["lo"] is not None else (diff["mean"], diff["mean"])
        if lo is None or hi is None:
            return {"verdict": "n/a", "ours": "missing"}
        return {"verdict": "holds" if -c.tol <= lo and hi <= c.tol else "does not hold", "ours": ours,
                "difference": diff}
    raise ConfigError(f"unknown claim kind {c.kind!r}")


PRETTY_DATASETS = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100",
                   "stl10": "STL-10", "synthetic": "synthetic", "imagefolder": "image folder"}


def dataset_name(cfg: Config, exp: Experiment) -> str:
    """The dataset the runs train on, as the paper writes it (base_overrides may change it)."""
    if cfg.data.dataset == "imagefolder" and exp.preset == "imagenet":
        return "ImageNet"
    return PRETTY_DATASETS.get(cfg.data.dataset, cfg.data.dataset)


def describe_setting(cfg: Config) -> str:
    """The first run's training settings in one line (the runs differ only as the table shows)."""
    d, m, o = cfg.data, cfg.model, cfg.optim
    lr = f"lr {o.lr:g}" if o.lr is not None else f"lr {o.base_lr:g} × batch/256"
    size = f", {d.image_size} px" if d.image_size else ""
    subset = f"{d.subset}-image training subset" if d.subset else "full training set"
    return (f"{subset}{size}, {m.backbone} width {m.width:g}, projector {m.proj_layers}×{m.proj_dim}, "
            f"batch {o.batch_size}, {o.epochs} epochs, {lr} ({o.schedule}), wd {o.weight_decay:g}")


def setting_notes(exp: Experiment, cfg: Config, linear: LinearDef | None, tsne: TsneDef | None,
                  dataset: str) -> list[str]:
    """The experiment's notes plus the ones that depend on the resolved kNN and linear-probe settings."""
    notes = [n.replace("{dataset}", dataset) for n in exp.notes]
    r = cfg.run
    if "knn" in exp.evals:
        notes.append(f"kNN in the tables: `gsg knn` on the final checkpoint with the whole train split as bank and "
                     f"the whole test split (cosine similarity on L2-normalised backbone features; weighted vote "
                     f"k={KNN_K} T={exp.knn_temperature:g}, and k=1; the paper reports k=1 on CIFAR-10, k=200 on "
                     "ImageNet).")
    if r.knn_every:
        notes.append(f"kNN curves (and the runs table's monitor column): the online monitor, bank "
                     f"{r.knn_train_subset or 'all'} clean training images, test {r.knn_test_subset or 'all'} "
                     f"images, every {r.knn_every} epoch(s); smaller than the tables' protocol, so lower.")
    if "linear" in exp.evals and linear is not None:
        size = cfg.data.image_size or 32
        proto = ("SGD, lr 30, batch 256, cosine (the paper's CIFAR protocol)" if size <= 64 else
                 "LARS, batch 4096, cosine (the ImageNet protocol)")
        how = ("on precomputed clean features, without augmentation (the paper trains on augmented views; "
               "a fast stand-in for CPUs, usually a point or two lower)" if linear.mode == "features" else
               "on augmented views (the paper's protocol)")
        notes.append(f"Linear probe (`mode=\"{linear.mode}\"`): a linear classifier on the frozen backbone, "
                     f"{linear.epochs} epochs, {proto}, {how}, on {linear.train_subset or 'all'} training images; "
                     "top-1 on the full test set.")
    if "tsne" in exp.evals and tsne is not None:
        notes.append(f"t-SNE: scikit-learn Barnes-Hut (perplexity 30, PCA initialisation, seed 0) of the backbone "
                     f"features of at most {tsne.max_points} test images; each panel's title gives the kNN accuracy "
                     f"(k=200 / k=1) of those features with {tsne.train_subset or 'all'} training images as bank.")
    return notes


# ------------------------------------------------------------------------------------------ entry point


def default_jobs(scale: str) -> int:
    """2 at cpu scale on a machine with 2+ cores (two 1-thread runs beat one 2-thread run of a small model), else
    1 (full scale: one run at a time uses the GPUs)."""
    return 2 if scale == "cpu" and (os.cpu_count() or 1) >= 2 else 1


def _check_jobs(jobs: Any) -> int:
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"jobs must be a positive number of runs to train at a time, got {jobs!r}")
    return jobs


def experiment_estimate(run_estimates: Sequence[float | None], jobs: int) -> float:
    """Wall-clock estimate of runs shared by ``jobs`` processes: greedy in plan order, as :func:`run_all`."""
    lanes = [0.0] * jobs
    for est in run_estimates:
        i = lanes.index(min(lanes))
        lanes[i] += est or 0.0
    return max(lanes)


def _start_helpers(experiment: str, scale: str, seeds: int, out: Path, device: str,
                   base_overrides: dict[str, Any] | None, runs_dir: Path, jobs: int) -> list[tuple[Any, Path]]:
    """jobs - 1 helper processes (``gsg reproduce ... --worker``) that share the runs through their locks."""
    if jobs <= 1:
        return []
    env = dict(os.environ)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    if "OMP_NUM_THREADS" not in env:  # the user's setting wins
        env["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
    cmd = [sys.executable, "-m", "gsg", *shlex.split(
        reproduce_command(experiment, scale, seeds, out, device, base_overrides, runs_dir))[1:], "--worker"]
    out.mkdir(parents=True, exist_ok=True)
    helpers = []
    for i in range(1, jobs):
        logfile = out / f"helper-{i}.log"
        with open(logfile, "w") as f:  # the child keeps its own descriptor
            helpers.append((subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env), logfile))
        log.info("helper %d: process %d, %d thread(s), log %s", i, helpers[-1][0].pid, int(env["OMP_NUM_THREADS"]),
                 logfile)
    return helpers


def reproduce(experiment: str, *, scale: str = "cpu", seeds: int | None = None,
              out: str | os.PathLike[str] | None = None, device: str = "auto", dry_run: bool = False,
              base_overrides: dict[str, Any] | None = None,
              runs_dir: str | os.PathLike[str] | None = None, jobs: int | None = None,
              worker: bool = False, report_only: bool = False) -> dict[str, Any]:
    """Reproduce one table/figure of the paper at ``scale`` ("cpu" or "full"); returns the results dict.

    ``seeds``: runs per variant (default: the experiment's, 1 at cpu scale, 3 for Table 1 at full scale).
    ``out``: output directory (default ``runs/reproduce/<experiment>-<scale>``). ``base_overrides``:
    ``{section: {key: value}}`` applied last to every run's config (like ``gsg pretrain --set``), plus an
    optional ``reproduce`` section for the evaluations (linear_epochs, linear_mode, linear_train_subset,
    tsne_max_points, tsne_train_subset). ``runs_dir``: where the runs live (default ``out/runs``); give
    several experiments the same one and the runs they share are trained once. ``jobs``: runs trained at a
    time, each in its own process with cores/jobs threads (default: 2 at cpu scale on a machine with 2 or
    more cores, where a small model uses a second thread poorly; 1 at full scale). ``worker``: only train and
    evaluate runs (what the helper processes of ``jobs`` do), write no report. ``dry_run``: plan and return
    the commands, train nothing, write nothing. ``report_only``: train nothing; write the report from the runs
    finished so far (a long reproduction can be read while it runs), marked incomplete, with the runs still to
    do listed; the baselines are measured (once per protocol) as for a full report.
    """
    exp = get_experiment(experiment, scale)
    n_seeds = _check_seeds(exp.default_seeds if seeds is None else seeds)
    out_path = Path(out) if out is not None else default_out(experiment, scale)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("gsg reproduce runs one process; for several GPUs launch the torchrun commands of "
                          "commands.md (gsg.reproduce.full_scale_launch), then run gsg reproduce without torchrun "
                          "to evaluate the finished runs and write the report")
    _, extra = _split_overrides(base_overrides)
    linear, tsne = _eval_settings(exp, extra)
    runs_path = Path(runs_dir) if runs_dir is not None else None
    n_jobs = default_jobs(scale) if jobs is None else _check_jobs(jobs)
    plans = plan_runs(exp, n_seeds, out_path, device, base_overrides, runs_path)
    if worker:
        run_all(exp, plans, linear=linear, tsne=tsne, out=out_path)
        return {"worker": True, "experiment": exp.name, "runs": [p.key for p in plans]}
    command = reproduce_command(experiment, scale, n_seeds, out_path, device, base_overrides, runs_path, n_jobs)
    sources = prefix.prefix_sources(plans)
    estimates = {p.key: _estimate(exp, p, sources.get(p.key)) for p in plans}
    estimated = experiment_estimate(list(estimates.values()), n_jobs) if exp.scale == "cpu" else None
    name = dataset_name(plans[0].config, exp)
    header = {"format": RESULT_FORMAT, "experiment": exp.name, "scale": exp.scale, "title": exp.title,
              "paper_ref": exp.paper_ref, "dataset_name": name,
              "dataset": exp.dataset_label if exp.dataset_label.startswith(name) else name,
              "setting": describe_setting(plans[0].config), "seeds": n_seeds, "knn_metric": exp.knn_metric,
              "chance": exp.chance, "notes": setting_notes(exp, plans[0].config, linear, tsne, name),
              "out": str(out_path), "command": command,
              "gsg_version": gsg.__version__, "linear": dataclasses.asdict(linear) if linear else None,
              "tsne": dataclasses.asdict(tsne) if tsne else None, "estimated_s": estimated, "jobs": n_jobs}
    if dry_run:
        runs = [{"key": p.key, "label": p.run.label, "dir": str(p.dir), "command": p.command,
                 "eval_commands": p.eval_commands, "estimated_s": estimates[p.key],
                 "continues": prefix.read_record(p.dir) or (
                     prefix.planned_record(p, sources[p.key])
                     if p.key in sources and not (p.dir / CHECKPOINT_NAME).exists() else None),
                 "status": "done" if (p.dir / DONE_NAME).is_file() else
                 "partial" if (p.dir / CHECKPOINT_NAME).is_file() else "todo"} for p in plans]
        res = {**header, "dry_run": True, "runs": runs, "launch": _launch(experiment, scale, out_path, n_seeds,
                                                                           base_overrides, runs_path)}
        res["commands_md"] = report.commands_markdown(res)
        return res

    t0 = time.perf_counter()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    if report_only:
        records = finished_records(exp, plans, linear=linear, tsne=tsne, out=out_path)
        missing = [p for p in plans if p.key not in {r["key"] for r in records}]
        log.info("%s: a report of %d finished runs of %d (train nothing)", exp.name, len(records), len(plans))
        header["helpers"] = []
        return _write_report(exp, header, records, plans, started, t0, out_path, n_seeds, base_overrides,
                             runs_path, device, linear, missing=missing)

    def partial(done: list[dict[str, Any]]) -> None:
        # Partial results after every run: an interrupted reproduction still leaves a readable record.
        _write_json(out_path / "results.json", _results(exp, header, done, plans, started, t0, complete=False))

    helpers = _start_helpers(experiment, scale, n_seeds, out_path, device, base_overrides,
                             runs_root(out_path, runs_path), n_jobs)
    try:
        records = run_all(exp, plans, linear=linear, tsne=tsne, out=out_path, on_record=partial)
    except BaseException:
        for h, _ in helpers:  # interrupted: the helpers checkpoint and stop too
            if h.poll() is None:
                h.send_signal(signal.SIGTERM)
        for h, _ in helpers:
            h.wait()
        raise
    for h, logfile in helpers:
        if h.wait() != 0:  # its runs were finished by this process (the lock of a dead helper is taken over)
            log.warning("helper process %d exited with %d; see %s", h.pid, h.returncode, logfile)
    header["helpers"] = [{"pid": h.pid, "returncode": h.returncode, "log": str(f)} for h, f in helpers]
    return _write_report(exp, header, records, plans, started, t0, out_path, n_seeds, base_overrides, runs_path,
                         device, linear, missing=[])


def finished_records(exp: Experiment, plans: Sequence[PlannedRun], *, linear: LinearDef | None,
                     tsne: TsneDef | None, out: Path) -> list[dict[str, Any]]:
    """The done.json records of the plans whose runs have finished (in plan order), named as this experiment
    names them, whatever experiment sharing the runs directory trained them. Evaluations this experiment asks for
    and a record lacks are made now (as when ``run_all`` reuses a run), so none is left out of the report."""
    records = []
    for plan in plans:
        done = plan.dir / DONE_NAME
        rec = _read_done(done) if done.is_file() else None
        if rec is None:
            continue
        _check_same_config(done, rec, plan)
        if rec.get("status") == "ok" and _run_evals(exp, plan, rec, linear, tsne, out):
            _write_json(done, rec)
        rec.update(name=plan.run.name, label=plan.run.label, group=plan.run.group, how="reused")
        records.append(rec)
    return records


def _write_report(exp: Experiment, header: dict[str, Any], records: list[dict[str, Any]],
                  plans: list[PlannedRun], started: str, t0: float, out_path: Path, n_seeds: int,
                  base_overrides: dict[str, Any] | None, runs_path: Path | None, device: str,
                  linear: LinearDef | None, *, missing: Sequence[PlannedRun]) -> dict[str, Any]:
    """Baselines, aggregation, claims, plots and the three files of a report; ``missing``: runs not finished
    (a report-only call), listed on the page, which then says it is incomplete."""
    try:
        header["baselines"] = experiment_baselines(plans, linear, runs_root(out_path, runs_path), device,
                                                   exp.knn_temperature)
    except GsgError as exc:  # e.g. an unlabelled dataset: say so in the report rather than fail the reproduction
        log.warning("baselines not measured: %s", exc)
        header["baselines"] = {"error": str(exc)}
    res = _results(exp, header, records, plans, started, t0, complete=not missing)
    res["missing"] = [{"key": p.key, "label": p.run.label, "seed": p.seed} for p in missing]
    res["plots"] = report.write_plots(res, exp, out_path) if records else []
    res["launch"] = _launch(exp.name, exp.scale, out_path, n_seeds, base_overrides, runs_path)
    res["timing"]["wall_s"] = time.perf_counter() - t0
    _write_json(out_path / "results.json", res)
    _write_text(out_path / "results.md", report.results_markdown(res, exp))
    _write_text(out_path / "commands.md", report.commands_markdown(res))
    log.info("%s (%s scale): %s, %s; %.1f min", exp.title, exp.scale, out_path / "results.md",
             out_path / "results.json", res["timing"]["wall_s"] / 60)
    return res


PAPER_GPUS = 8  # the paper trained on 8 A100s


def _launch(experiment: str, scale: str, out: Path, seeds: int, base_overrides: dict[str, Any] | None,
            runs_dir: Path | None = None) -> list[str]:
    """torchrun commands for the report (full scale only; none when the batch does not split over 8 GPUs)."""
    if scale != "full":
        return []
    try:
        return full_scale_launch(experiment, PAPER_GPUS, out=out, seeds=seeds, base_overrides=base_overrides,
                                 runs_dir=runs_dir)
    except ConfigError:
        return []


def _estimate(exp: Experiment, plan: PlannedRun, source: PlannedRun | None = None) -> float | None:
    """Single-core seconds of ``plan``; a run that continues ``source`` trains only the epochs after it."""
    c = plan.config
    if exp.scale != "cpu":
        return None
    images = c.data.subset or CPU_TRAIN_IMAGES
    epochs = c.optim.epochs - (source.config.optim.epochs if source is not None else 0)
    return estimate_seconds(epochs, images, c.optim.batch_size, knn_every=c.run.knn_every,
                            checkpoint_every=c.run.checkpoint_every, evals=exp.evals,
                            crops=crops_per_image(c.ssl.views))


def _run_summary(rec: dict[str, Any], plan: PlannedRun) -> dict[str, Any]:
    times = rec.get("times", {})
    evals_s = sum(times.get("evals_s", {}).values())
    return {"key": rec["key"], "name": rec["name"], "label": rec.get("label"), "group": rec.get("group"),
            "seed": rec["seed"], "status": rec.get("status", "ok"), "error": rec.get("error"),
            "how": rec.get("how"), "continues": rec.get("continued_from"), "dir": str(plan.dir),
            "final": rec.get("final", {}),
            "evals": rec.get("evals", {}), "pretrain_s": times.get("pretrain_s"), "evals_s": evals_s,
            "resumed_from_epoch": times.get("resumed_from_epoch", 0),
            "run_s": (times.get("pretrain_s") or 0.0) + evals_s, "wall_s_this_call": rec.get("wall_s_this_call"),
            "command": plan.command, "eval_commands": plan.eval_commands,
            "curve": {"epoch": [h.get("epoch") for h in rec.get("history", [])],
                      "knn_k1": [h.get("knn_k1") for h in rec.get("history", [])],
                      "knn_k200": [h.get("knn_k200") for h in rec.get("history", [])],
                      "z_std": [h.get("z_std") for h in rec.get("history", [])],
                      "loss": [h.get("loss") for h in rec.get("history", [])]}}


def _results(exp: Experiment, header: dict[str, Any], records: list[dict[str, Any]], plans: list[PlannedRun],
             started: str, t0: float, *, complete: bool) -> dict[str, Any]:
    by_key = {p.key: p for p in plans}
    runs = [_run_summary(r, by_key[r["key"]]) for r in records]
    variants = aggregate(exp, records)
    return {**header, "dry_run": False, "complete": complete, "started": started,
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "timing": {"wall_s": time.perf_counter() - t0, "compute_s": sum(r["run_s"] for r in runs),
                       "estimated_s": header["estimated_s"]},
            "runs": runs, "variants": variants, "claims": check_claims(exp, variants), "paper": exp.paper}


__all__ = [
    "PlannedRun",
    "aggregate",
    "check_claims",
    "default_jobs",
    "default_out",
    "experiment_estimate",
    "final_knn",
    "finished_records",
    "full_scale_launch",
    "mean_std",
    "plan_runs",
    "reproduce",
    "run_all",
]
