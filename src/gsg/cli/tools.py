"""The commands around training: the linear-dynamics simulator, metric plots, benchmarks and the GPU doctor."""

from __future__ import annotations

import argparse
import difflib
import json
from pathlib import Path
from typing import Any

from gsg.errors import GsgError


def _simulation_experiments() -> tuple[str, ...]:
    from gsg.analysis.dynamics import SIMULATION_EXPERIMENTS

    return SIMULATION_EXPERIMENTS


def cmd_simulate(args: argparse.Namespace) -> int:
    from gsg.analysis.dynamics import run_simulation

    overrides: dict[str, str] = {}
    for item in args.set:
        if "=" not in item:
            raise GsgError(f"--set expects PARAM=VALUE (e.g. eta=0.1), got {item!r}")
        k, v = item.split("=", 1)
        overrides[k] = v
    result = run_simulation(args.experiment, args.out, **overrides)
    names = _simulation_experiments() if args.experiment == "all" else (args.experiment,)
    for name in names:
        print(f"{name}: {args.out / (name + '.png')}  {args.out / (name + '.json')}")
    summary = result if args.experiment != "all" else {}
    for key in ("fixed_points", "collapse_threshold", "eta_c", "collapsed"):
        if key in summary:
            print(f"  {key}: {summary[key]}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from gsg.analysis.plots import plot_histories
    from gsg.train.logging import read_metrics

    runs: dict[str, list[dict[str, Any]]] = {}
    for item in args.runs:
        label, _, path = item.rpartition("=")
        run = Path(path)
        file = run / "metrics.jsonl" if run.is_dir() else run
        if not file.is_file():
            raise GsgError(f"{file} does not exist; pass run directories written by gsg pretrain")
        runs[label or run.name] = read_metrics(file, "epoch")
    print(f"plot: {plot_histories(runs, args.metrics, args.out, title=args.title)}")
    if args.table:
        every = max(1, max(len(h) for h in runs.values()) // 6)
        print("| run | epoch | " + " | ".join(args.metrics) + " |")
        print("|---|---|" + "---|" * len(args.metrics))
        for label, hist in runs.items():
            for rec in hist:
                if rec["epoch"] % every == 0 or rec is hist[-1] or rec["epoch"] == 1:
                    cells = [f"{rec[m]:.3g}" if isinstance(rec.get(m), float) else str(rec.get(m, "-"))
                             for m in args.metrics]
                    print(f"| {label} | {rec['epoch']} | " + " | ".join(cells) + " |")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import inspect

    from gsg.bench import BENCHES, format_report

    run = BENCHES[args.name]
    valid = set(inspect.signature(run).parameters)
    options: dict[str, Any] = {"device": args.device, "quick": args.quick}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or key not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise GsgError(f"gsg bench {args.name}: unknown option {key!r}{hint}; options: {', '.join(sorted(valid))}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    result = run(**options)
    print(format_report(args.name, result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str))
        print(f"result: {args.out}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from gsg.doctor import run_doctor

    report = run_doctor(args.device, args.out, quick=args.quick, skip=args.skip, only=args.only)
    print(report.table())
    print(f"logs: {args.out}")
    return 0 if report.ok else 1
