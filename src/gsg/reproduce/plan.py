"""Planning a reproduction: every run × seed of an experiment with its resolved config, the commands that
reproduce it by hand (`gsg pretrain`, the evaluations, `gsg reproduce`, the full-scale torchrun launch) and its
single-core time estimate. Nothing here trains or writes a file."""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gsg.config import Config, crops_per_image, load_config
from gsg.errors import ConfigError
from gsg.eval.linear import MODES
from gsg.reproduce.experiments import (
    CPU_TRAIN_IMAGES,
    Experiment,
    LinearDef,
    Overrides,
    RunDef,
    TsneDef,
    estimate_seconds,
    get_experiment,
    run_overrides,
)
from gsg.reproduce.experiments.base import _merge
from gsg.train.loop import CHECKPOINT_NAME

# base_overrides may carry this extra section: evaluation settings, which are not part of the training config.
EVAL_SECTION = "reproduce"
EVAL_KEYS = ("linear_epochs", "linear_mode", "linear_train_subset", "tsne_max_points", "tsne_train_subset")


@dataclass
class PlannedRun:
    run: RunDef
    seed: int
    key: str  # "<run>-s<seed>": the directory name under out/runs
    dir: Path
    config: Config
    command: str  # the gsg pretrain command that trains this run by hand
    eval_commands: list[str]


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
    # "none" reads back as None only for a field that may be empty (gsg.config.overrides._coerce); a plain str
    # field such as model.proj_last_bn keeps it as the string.
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


def select_runs(plans: list[PlannedRun], only: Sequence[str] | None) -> list[PlannedRun]:
    """The runs of ``plans`` named in ``only`` (a variant name, every seed of it, or a run key such as
    ``simclr_b512-s0``), in plan order; all of them for ``None``. A name that matches no run is an error that
    names the nearest ones, rather than training nothing."""
    if only is None:
        return list(plans)
    names = {p.run.name for p in plans} | {p.key for p in plans}
    for name in only:
        if name not in names:
            close = difflib.get_close_matches(name, sorted(names), n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
            raise ConfigError(f"--only {name!r} names no run of this experiment; {hint}its runs: "
                              f"{', '.join(p.key for p in plans)}")
    wanted = set(only)
    return [p for p in plans if p.run.name in wanted or p.key in wanted]


def reproduce_command(experiment: str, scale: str, seeds: int, out: Path, device: str,
                      base_overrides: dict[str, Any] | None, runs_dir: Path | None = None, jobs: int = 1,
                      only: Sequence[str] | None = None) -> str:
    args = ["gsg", "reproduce", experiment, "--scale", scale, "--seeds", str(seeds), "--out", str(out)]
    if runs_dir is not None:
        args += ["--runs", str(runs_dir)]
    for name in only or ():
        args += ["--only", name]
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


def estimate(exp: Experiment, plan: PlannedRun, source: PlannedRun | None = None,
             done_epochs: int = 0) -> float | None:
    """Single-core seconds of ``plan``; a run that continues ``source`` trains only the epochs after it, and one
    whose checkpoint holds ``done_epochs`` only the epochs after those."""
    c = plan.config
    if exp.scale != "cpu":
        return None
    images = c.data.subset or CPU_TRAIN_IMAGES
    start = max(done_epochs, source.config.optim.epochs if source is not None else 0)
    epochs = max(0, c.optim.epochs - start)
    return estimate_seconds(epochs, images, c.optim.batch_size, knn_every=c.run.knn_every,
                            checkpoint_every=c.run.checkpoint_every, evals=exp.evals,
                            crops=crops_per_image(c.ssl.views), amp=c.run.amp, method=c.ssl.method)
