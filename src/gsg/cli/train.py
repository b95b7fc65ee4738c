"""``gsg pretrain`` and ``gsg reproduce``: the commands that train, and how their flags become config keys."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from gsg.errors import GsgError

# flag -> (section, key) of the config schema
PRETRAIN_FLAGS: dict[str, tuple[str, str]] = {
    "method": ("ssl", "method"),
    "stop_gradient": ("ssl", "stop_gradient"),
    "predictor": ("model", "predictor"),
    "views": ("ssl", "views"),
    "pairing": ("ssl", "pairing"),
    "dataset": ("data", "dataset"),
    "data_dir": ("data", "data_dir"),
    "subset": ("data", "subset"),
    "backbone": ("model", "backbone"),
    "width": ("model", "width"),
    "epochs": ("optim", "epochs"),
    "batch_size": ("optim", "batch_size"),
    "lr": ("optim", "lr"),
    "seed": ("run", "seed"),
    "out": ("run", "out"),
    "device": ("run", "device"),
}


def _is_rank0() -> bool:
    """Under torchrun only rank 0 writes the run's files and prints its summary."""
    return int(os.environ.get("RANK", "0")) == 0


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for flag, (section, key) in PRETRAIN_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            out.setdefault(section, {})[key] = value
    for section, values in _set_overrides(args.set).items():
        out.setdefault(section, {}).update(values)
    return out


def _set_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise GsgError(f"--set expects SECTION.KEY=VALUE (e.g. model.proj_last_bn=affine), got {item!r}")
        name, value = item.split("=", 1)
        section, key = name.split(".", 1)
        parsed: Any = value
        try:
            parsed = json.loads(value)  # numbers, true/false, null, lists
        except json.JSONDecodeError:
            pass
        out.setdefault(section, {})[key] = parsed
    return out


def cmd_pretrain(args: argparse.Namespace) -> int:
    from gsg.config import load_config
    from gsg.train.loop import Interrupted, pretrain

    cfg = load_config(preset=args.preset, file=args.config, overrides=_overrides(args))
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    out = Path(cfg.run.out)
    main = _is_rank0()
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "command.txt").write_text(args.command_line + "\n")
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    try:
        result = pretrain(cfg, resume="auto" if args.auto_resume else args.resume)
    except Interrupted as exc:
        if main:
            print(f"gsg: {exc}", file=sys.stderr)
        return 130
    if not main:
        return 0
    print(f"checkpoint: {result['checkpoint']}")
    knn = {k: v for k, v in result.items() if k.startswith("knn_")}
    if knn:
        print("kNN accuracy: " + ", ".join(f"{k} = {v:.2f}%" for k, v in knn.items()))
    print(f"final loss {result.get('loss', float('nan')):.4f}, std(z/|z|)*sqrt(d) {result.get('z_std', 0):.3f}")
    if cfg.run.final_baselines:
        _print_final_baselines(result["checkpoint"], cfg.run.device, cfg.run.knn_k, cfg.run.knn_t)
    return 0


def _print_final_baselines(checkpoint: str, device: str, k: int, t: float) -> None:
    """The final checkpoint's kNN on the whole train and test splits, beside raw pixels and a random-init
    backbone of its architecture (one seed), so that a run shows whether it learned anything."""
    from gsg.eval.baselines import compare_checkpoint, format_rows

    learned, res, proto = compare_checkpoint(checkpoint, seeds=(0,), device=device, k=k, temperature=t, linear=False)
    print(f"kNN on the whole {proto.dataset} train split (bank) and test split, k={k} T={t} and k=1, beside the "
          "baselines of the same protocol:")
    print("\n".join(format_rows(learned, res, [f"knn_k{k}", "knn_k1"])))


def cmd_reproduce(args: argparse.Namespace) -> int:
    from gsg.reproduce import reproduce
    from gsg.train.loop import Interrupted

    args.resume = False
    overrides = _set_overrides(args.set)
    try:
        r = reproduce(args.experiment, scale=args.scale, seeds=args.seeds, out=args.out, device=args.device,
                      dry_run=args.dry_run, base_overrides=overrides or None, runs_dir=args.runs, jobs=args.jobs,
                      worker=args.worker, report_only=args.report_only, wait=not args.no_wait,
                      only=args.only, deadline=args.deadline)
    except Interrupted as exc:
        print(f"gsg: {exc}; run the same gsg reproduce command again to continue", file=sys.stderr)
        return 130
    if args.dry_run:
        print(r["commands_md"])
        return 0
    if args.worker:
        return 0
    if r.get("left_to_others"):
        print(f"{args.experiment}: left {len(r['left_to_others'])} run(s) to the processes training them "
              f"({', '.join(r['left_to_others'])}); the one that finishes the last writes {r['out']}/results.md")
        return 0
    out = Path(r.get("out", args.out or "."))
    for name in ("results.md", "results.json", "commands.md"):
        print(f"{name}: {out / name}")
    for png in r.get("plots", []):
        print(f"plot: {png}")
    print(f"took {r['timing']['wall_s'] / 60:.1f} min")
    return 0
