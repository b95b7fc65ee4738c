"""The ``gsg`` command. The only module that parses arguments or prints for a human."""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gsg.errors import GsgError

log = logging.getLogger("gsg")

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


class _Parser(argparse.ArgumentParser):
    """argparse that names the nearest valid option for a typo, and exits with code 2 on bad input."""

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        ns, extra = self.parse_known_args(args, namespace)
        if extra:
            sub = getattr(ns, "_parser", self)
            valid = [o for a in sub._actions for o in a.option_strings]
            msgs = []
            for tok in extra:
                opt = tok.split("=", 1)[0]
                if opt.startswith("-"):
                    close = difflib.get_close_matches(opt, valid, n=1, cutoff=0.5)
                    msgs.append(f"unknown option {opt}" + (f" (did you mean {close[0]}?)" if close else ""))
                else:
                    msgs.append(f"unexpected argument {tok!r}")
            sub.error("; ".join(msgs) + f". Valid options: {' '.join(sorted(set(valid)))}")
        return ns


def _choices_from_config() -> dict[str, tuple[str, ...]]:
    from gsg.config import CHOICES

    # --backbone also takes timm:NAME, checked (with the nearest names) by the config's validation
    return {flag: CHOICES[sk] for flag, sk in PRETRAIN_FLAGS.items() if sk in CHOICES and flag != "backbone"}


def build_parser() -> argparse.ArgumentParser:
    from gsg.config import preset_names

    parser = _Parser(prog="gsg", description="Non-contrastive self-supervised learning with Guided Stop-Gradient.",
                     allow_abbrev=False)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("pretrain", help="self-supervised pretraining (SimSiam/BYOL × stop-gradient policy)",
                       allow_abbrev=False)
    p.set_defaults(_parser=p, func=cmd_pretrain)
    p.add_argument("--preset", choices=preset_names(), help="a preset of src/gsg/presets")
    p.add_argument("--config", type=Path, help="a TOML or JSON file of [section] keys (see docs/config.md)")
    choices = _choices_from_config()
    types: dict[str, Callable[[str], Any]] = {"subset": int, "width": float, "epochs": int, "batch_size": int,
                                              "lr": float, "seed": int}
    for flag in PRETRAIN_FLAGS:
        p.add_argument("--" + flag.replace("_", "-"), dest=flag, choices=choices.get(flag),
                       type=types.get(flag, str), default=None)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="set any config key, e.g. --set model.proj_last_bn=affine (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--auto-resume", action="store_true",
                   help="continue from the checkpoint in --out if there is one, else start "
                   "(for torchrun --max-restarts)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")

    bl = sub.add_parser("baselines", help="raw-pixel and random-init kNN / linear probe under a result's protocol",
                        allow_abbrev=False)
    bl.set_defaults(_parser=bl, func=cmd_baselines)
    bl.add_argument("checkpoint", type=Path, nargs="?",
                    help="take dataset, size, normalisation and architecture from this checkpoint (and print its "
                         "own kNN beside the baselines)")
    bl.add_argument("--dataset", help="without a checkpoint: the dataset (its train/test splits)")
    bl.add_argument("--data-dir")
    bl.add_argument("--backbone", default="resnet18", help="without a checkpoint: the architecture")
    bl.add_argument("--width", type=float, default=1.0)
    bl.add_argument("--image-size", type=int, help="without a checkpoint: default the dataset's own size")
    bl.add_argument("--k", type=int, default=200)
    bl.add_argument("--temperature", type=float, default=0.1)
    bl.add_argument("--train-subset", type=int, help="kNN bank: a fixed subset of the train split")
    bl.add_argument("--test-subset", type=int)
    bl.add_argument("--no-linear", action="store_true", help="kNN only (skip the feature-mode linear probe)")
    bl.add_argument("--linear-epochs", type=int, default=90)
    bl.add_argument("--linear-train-subset", type=int)
    bl.add_argument("--lr", type=float, help="the probe's base lr (default: the probe protocol's)")
    bl.add_argument("--seeds", type=int, default=3, help="random-init networks to average")
    bl.add_argument("--device", default="auto")
    bl.add_argument("--out", type=Path, help="JSON file (default: baselines.json next to the checkpoint)")

    k = sub.add_parser("knn", help="kNN accuracy of a checkpoint's backbone (weighted k=200 and k=1)",
                       allow_abbrev=False)
    k.set_defaults(_parser=k, func=cmd_knn)
    k.add_argument("checkpoint", type=Path)
    k.add_argument("--dataset", help="evaluate on another dataset than the one trained on")
    k.add_argument("--data-dir")
    k.add_argument("--k", type=int, default=200)
    k.add_argument("--temperature", type=float, default=0.1)
    k.add_argument("--batch-size", type=int, default=512)
    k.add_argument("--train-subset", type=int, default=None, help="use a fixed subset of the train set as bank")
    k.add_argument("--device", default="auto", help="where the backbone and the neighbour search run")
    k.add_argument("--target", action="store_true", help="BYOL: evaluate the EMA (target) backbone")
    _add_eval_speed_flags(k)

    lin = sub.add_parser("linear", help="linear probe on the frozen backbone (§5.1 protocol)", allow_abbrev=False)
    lin.set_defaults(_parser=lin, func=cmd_linear)
    lin.add_argument("checkpoint", type=Path)
    lin.add_argument("--dataset")
    lin.add_argument("--data-dir")
    lin.add_argument("--epochs", type=int, default=90)
    lin.add_argument("--protocol", choices=["auto", "cifar", "imagenet"], default="auto",
                     help="cifar: SGD lr 30, batch 256, cosine; imagenet: LARS, batch 4096 (auto: by image size)")
    lin.add_argument("--mode", choices=["augment", "features"], default="augment",
                     help="features: train on precomputed features without augmentation (fast, for CPUs)")
    lin.add_argument("--batch-size", type=int)
    lin.add_argument("--lr", type=float, help="base lr (scaled by batch/256)")
    lin.add_argument("--train-subset", type=int)
    lin.add_argument("--seed", type=int, default=0)
    lin.add_argument("--device", default="auto")
    lin.add_argument("--target", action="store_true", help="BYOL: evaluate the EMA (target) backbone")
    _add_eval_speed_flags(lin)

    tr = sub.add_parser("transfer", help="transfer by L2-regularised logistic regression (Ericsson et al.)",
                        allow_abbrev=False)
    tr.set_defaults(_parser=tr, func=cmd_transfer)
    tr.add_argument("checkpoint", type=Path)
    tr.add_argument("--dataset", nargs="+", required=True,
                    help="cifar10 aircraft caltech101 cars dtd flowers food pets sun397 voc2007 mnist "
                         "fashion-mnist imagefolder ...")
    tr.add_argument("--data-dir")
    tr.add_argument("--image-size", type=int, default=224, help="224 per protocol; smaller for small backbones")
    tr.add_argument("--download", action="store_true", help="let torchvision download missing datasets")
    tr.add_argument("--batch-size", type=int, default=256)
    tr.add_argument("--device", default="auto")
    tr.add_argument("--target", action="store_true")

    ts = sub.add_parser("tsne", help="t-SNE of test-set representations (Appendix E)", allow_abbrev=False)
    ts.set_defaults(_parser=ts, func=cmd_tsne)
    ts.add_argument("checkpoint", type=Path)
    ts.add_argument("--out", type=Path, required=True, help="output PNG")
    ts.add_argument("--dataset")
    ts.add_argument("--data-dir")
    ts.add_argument("--max-points", type=int, default=5000)
    ts.add_argument("--title")
    ts.add_argument("--device", default="auto")
    ts.add_argument("--target", action="store_true")

    ex = sub.add_parser("export", help="export the backbone to torchvision, Detectron2 or timm format",
                        allow_abbrev=False)
    ex.set_defaults(_parser=ex, func=cmd_export)
    ex.add_argument("checkpoint", type=Path)
    ex.add_argument("--format", choices=["torchvision", "detectron2", "timm"], required=True)
    ex.add_argument("--out", type=Path, required=True)
    ex.add_argument("--target", action="store_true", help="BYOL: export the EMA (target) backbone")

    dg = sub.add_parser("diagnose", help="collapse metrics of a checkpoint (features and projections)",
                        allow_abbrev=False)
    dg.set_defaults(_parser=dg, func=cmd_diagnose)
    dg.add_argument("checkpoint", type=Path)
    dg.add_argument("--dataset")
    dg.add_argument("--data-dir")
    dg.add_argument("--samples", type=int, default=2048)
    dg.add_argument("--plot", type=Path, help="spectrum PNG (default: next to the checkpoint)")
    dg.add_argument("--device", default="auto")

    rp = sub.add_parser("reproduce", help="reproduce a table or figure of the paper (results.md, plots)",
                        allow_abbrev=False)
    rp.set_defaults(_parser=rp, func=cmd_reproduce)
    rp.add_argument("experiment", choices=_reproduce_experiments())
    rp.add_argument("--scale", choices=["cpu", "full"], default="cpu")
    rp.add_argument("--seeds", type=int)
    rp.add_argument("--out", type=Path)
    rp.add_argument("--runs", type=Path, metavar="DIR",
                    help="directory of the runs (default OUT/runs); give several experiments the same one and "
                         "the runs they share (e.g. Table 1's in Fig. 4, t-SNE, Table 4) are trained once")
    rp.add_argument("--jobs", type=int, metavar="N",
                    help="runs trained at a time, each in its own process with cores/N threads (default: 2 at cpu "
                         "scale on 2+ cores, 1 at full scale)")
    rp.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a --jobs helper: train, no report
    rp.add_argument("--device", default="auto")
    rp.add_argument("--dry-run", action="store_true", help="print the commands of every run without training")
    rp.add_argument("--report-only", action="store_true",
                    help="train nothing: write the report from the runs finished so far, marked incomplete")
    rp.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a config key in every run (and reproduce.* evaluation options)")

    pl = sub.add_parser("plot", help="plot per-epoch metrics of runs (metrics.jsonl), one line per run",
                        allow_abbrev=False)
    pl.set_defaults(_parser=pl, func=cmd_plot)
    pl.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR", help="run directories, optionally labelled")
    pl.add_argument("--metrics", nargs="+", default=["knn_k1", "z_std"])
    pl.add_argument("--out", type=Path, required=True)
    pl.add_argument("--title", default="")
    pl.add_argument("--table", action="store_true", help="also print a Markdown table of the metrics per run")

    bn = sub.add_parser("bench", help="benchmarks that compare side by side and print ratios (docs/performance.md)",
                        allow_abbrev=False)
    bn.set_defaults(_parser=bn, func=cmd_bench)
    bn.add_argument("name", choices=["steps", "datapath", "knn", "accuracy", "epoch", "cpuscale"])
    bn.add_argument("--device", default="auto")
    bn.add_argument("--quick", action="store_true", help="tiny sizes (seconds), to check the benchmark runs")
    bn.add_argument("--out", type=Path, help="also write the result as JSON")
    bn.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                    help="a keyword option of the benchmark's run(), e.g. --set batch_size=256 (JSON values)")

    doc = sub.add_parser("doctor", help="run every GPU code path once at small sizes: a PASS/FAIL/SKIP table",
                         allow_abbrev=False)
    doc.set_defaults(_parser=doc, func=cmd_doctor)
    doc.add_argument("--device", default="cuda", help="cuda (the point of it), or cpu to check the CPU stand-ins")
    doc.add_argument("--out", type=Path, default=Path("runs/doctor"), help="a log per step and doctor.json")
    doc.add_argument("--quick", action="store_true", help="the smallest sizes and fewest epochs (seconds a step)")
    doc.add_argument("--skip", nargs="+", default=[], metavar="STEP", help="steps to skip (e.g. compile bench_epoch)")
    doc.add_argument("--only", nargs="+", default=[], metavar="STEP", help="run only these steps")

    sim = sub.add_parser("simulate", help="linear learning dynamics of Tian et al. (plots + JSON)", allow_abbrev=False)
    sim.set_defaults(_parser=sim, func=cmd_simulate)
    sim.add_argument("experiment", choices=[*_simulation_experiments(), "all"])
    sim.add_argument("--out", type=Path, default=Path("runs/simulate"))
    sim.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE",
                     help="override a simulation parameter, e.g. --set eta=0.1 (see docs/simulator.md)")
    return parser


def _add_eval_speed_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=0, help="decoding processes for image folders (0: in-process)")
    p.add_argument("--amp", choices=["off", "auto", "native", "bf16", "fp16"], default="off",
                   help="autocast the backbone (auto: bf16 on GPUs that have it natively, else fp16; off on CPU; "
                        "native: bf16 wherever the device has it natively, CPUs with AVX-512 BF16 or AMX too)")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory layout for the backbone")


def _eval_amp(setting: str, device: str) -> Any:
    from gsg.models.embed import resolve_device
    from gsg.train.precision import amp_dtype

    return amp_dtype(setting, resolve_device(device))


def _is_rank0() -> bool:
    """Under torchrun only rank 0 writes the run's files and prints its summary."""
    import os

    return int(os.environ.get("RANK", "0")) == 0


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
    if cfg.run.final_baselines and int(os.environ.get("RANK", "0")) == 0:
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


def cmd_knn(args: argparse.Namespace) -> int:
    from gsg.eval.knn import knn_evaluate

    result = knn_evaluate(args.checkpoint, dataset=args.dataset, data_dir=args.data_dir, k=args.k,
                          temperature=args.temperature, batch_size=args.batch_size, device=args.device,
                          train_subset=args.train_subset, target=args.target, workers=args.workers,
                          channels_last=args.channels_last, amp_dtype=_eval_amp(args.amp, args.device),
                          command=args.command_line)
    print(f"{result['dataset']}: kNN (k={args.k}, T={args.temperature}) {result['knn_k' + str(args.k)]:.2f}%, "
          f"kNN (k=1) {result['knn_k1']:.2f}%  [{result['train_size']} train, {result['test_size']} test]")
    print(f"result: {result['result_file']}")
    return 0


def cmd_baselines(args: argparse.Namespace) -> int:
    from gsg.errors import ConfigError
    from gsg.eval.baselines import Protocol, compare_checkpoint, evaluate_baselines, format_rows

    common = {"train_subset": args.train_subset, "test_subset": args.test_subset, "k": args.k,
              "temperature": args.temperature, "linear": not args.no_linear, "linear_epochs": args.linear_epochs,
              "linear_lr": args.lr, "linear_train_subset": args.linear_train_subset}
    learned = None
    if args.checkpoint is not None:
        learned, res, proto = compare_checkpoint(args.checkpoint, seeds=range(args.seeds), device=args.device,
                                                 **common, **({"data_dir": args.data_dir} if args.data_dir else {}))
    else:
        if not args.dataset:
            raise ConfigError("gsg baselines needs a CHECKPOINT or --dataset NAME (with --backbone/--width)")
        from gsg.data.datasets import load_dataset
        from gsg.models.backbones import CIFAR_STEM_MAX_SIZE

        ds = load_dataset(args.dataset, "train", data_dir=args.data_dir, download=False, image_size=args.image_size)
        spec = {"arch": args.backbone, "width": args.width, "in_channels": ds.channels,
                "cifar_stem": ds.image_size <= CIFAR_STEM_MAX_SIZE}
        proto = Protocol(dataset=args.dataset, image_size=ds.image_size, mean=ds.mean, std=ds.std, backbone=spec,
                         data_dir=args.data_dir, **common)
        res = evaluate_baselines(proto, seeds=range(args.seeds), device=args.device)
    metrics = [f"knn_k{args.k}", "knn_k1"] + ([] if args.no_linear else ["linear_top1"])
    print(f"{proto.dataset} at {proto.image_size} px, {proto.backbone['arch']} width {proto.backbone['width']}: "
          f"kNN k={args.k}, T={args.temperature}" + ("" if args.no_linear else
                                                    f"; linear probe: features, {args.linear_epochs} epochs"))
    print("\n".join(format_rows(learned, res, metrics)))
    out = args.out or (args.checkpoint.with_name("baselines.json") if args.checkpoint else Path("baselines.json"))
    record = {"protocol": {k: v for k, v in vars(proto).items()}, "learned": learned, "baselines": res,
              "command": args.command_line}
    out.write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(f"result: {out}")
    return 0


def cmd_linear(args: argparse.Namespace) -> int:
    from gsg.eval.linear import linear_evaluate

    r = linear_evaluate(args.checkpoint, dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs,
                        protocol=args.protocol, batch_size=args.batch_size, lr=args.lr, mode=args.mode,
                        device=args.device, seed=args.seed, train_subset=args.train_subset, target=args.target,
                        workers=args.workers, channels_last=args.channels_last,
                        amp_dtype=_eval_amp(args.amp, args.device), command=args.command_line)
    top5 = f", top-5 {r['top5']:.2f}%" if r.get("top5") is not None else ""
    print(f"{r['dataset']}: linear probe top-1 {r['top1']:.2f}%{top5}  [{args.epochs} epochs, {args.mode}]")
    print(f"result: {r['result_file']}\nclassifier: {r['classifier_file']}")
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    from gsg.eval.transfer import transfer_evaluate

    for name in args.dataset:
        r = transfer_evaluate(args.checkpoint, name, command=args.command_line, device=args.device,
                              data_dir=args.data_dir, download=args.download, image_size=args.image_size,
                              batch_size=args.batch_size, target=args.target)
        print(f"{r['dataset']}: {r['metric']} {r['value']:.2f}  (weight decay {r.get('best_wd', r.get('wd'))})")
        print(f"result: {r['result_file']}")
    return 0


def cmd_tsne(args: argparse.Namespace) -> int:
    from gsg.eval.knn import tsne_evaluate

    r = tsne_evaluate(args.checkpoint, args.out, dataset=args.dataset, data_dir=args.data_dir,
                      max_points=args.max_points, device=args.device, title=args.title, target=args.target)
    print(f"t-SNE of {r['points']} test images: {r['png']} (kNN k=200 {r['knn_k200']:.2f}%, k=1 {r['knn_k1']:.2f}%)")
    return 0


def _reproduce_experiments() -> tuple[str, ...]:
    from gsg.reproduce import EXPERIMENTS

    return tuple(EXPERIMENTS)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from gsg.reproduce import reproduce
    from gsg.train.loop import Interrupted

    args.resume = False
    overrides = _set_overrides(args.set)
    try:
        r = reproduce(args.experiment, scale=args.scale, seeds=args.seeds, out=args.out, device=args.device,
                      dry_run=args.dry_run, base_overrides=overrides or None, runs_dir=args.runs, jobs=args.jobs,
                      worker=args.worker, report_only=args.report_only)
    except Interrupted as exc:
        print(f"gsg: {exc}; run the same gsg reproduce command again to continue", file=sys.stderr)
        return 130
    if args.dry_run:
        print(r["commands_md"])
        return 0
    if args.worker:
        return 0
    out = Path(r.get("out", args.out or "."))
    for name in ("results.md", "results.json", "commands.md"):
        print(f"{name}: {out / name}")
    for png in r.get("plots", []):
        print(f"plot: {png}")
    print(f"took {r['timing']['wall_s'] / 60:.1f} min")
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


def cmd_diagnose(args: argparse.Namespace) -> int:
    from gsg.eval.diagnose import diagnose
    from gsg.eval.results import write_result

    plot = args.plot or args.checkpoint.with_name(args.checkpoint.stem + ".spectrum.png")
    r = diagnose(args.checkpoint, dataset=args.dataset, data_dir=args.data_dir, samples=args.samples,
                 device=args.device, plot=plot)
    print(f"{r['checkpoint']}: {r['method']}, {r['stop_gradient']} stop-gradient, predictor {r['predictor']}; "
          f"{r['samples']} {r['dataset']} {r['split']} images")
    keys = ("dim", "std_sqrt_d", "m_o", "m_r", "rankme", "uniformity", "alignment")
    print(f"{'metric':<14}{'backbone':>12}{'projection':>12}")
    for k in keys:
        cells = [r[part].get(k) for part in ("backbone", "projection")]
        print(f"{k:<14}" + "".join(f"{c:>12.4g}" if c is not None else f"{'-':>12}" for c in cells))
    g = r["gsg"]
    print("GSG cases (11,21 / 11,22 / 12,21 / 12,22): "
          + " / ".join(f"{g['case_' + c]:.3f}" for c in ("11_21", "11_22", "12_21", "12_22"))
          + f"; distance margin mean {g['margin_mean']:.4g}")
    if "predictor_alignment" in r:
        print(f"predictor eigenspace alignment: {r['predictor_alignment']:.4f}")
    if r.get("decomposition"):  # docs/decomposition.md
        dec = r["decomposition"]
        shown = ("ge_norm", "ge_center_norm", "ge_residual_norm", "eta_p", "sel_center_norm", "sel_eta")
        print(f"gradient decomposition (mean over {dec['batches']} batches of {dec['batch_size']}): "
              + ", ".join(f"{k} {dec[k]:.4g}" for k in shown if k in dec))
    print(f"spectrum plot: {r['plot']}")
    path = write_result(args.checkpoint, "diagnose", r["dataset"], "projection_std_sqrt_d",
                        r["projection"]["std_sqrt_d"], r, args.command_line)
    print(f"result: {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from gsg.eval.export import export_backbone

    path = export_backbone(args.checkpoint, args.out, format=args.format, target=args.target)
    print(f"{args.format} backbone: {path} (settings: {path}.json)")
    if args.format == "torchvision":
        build = json.loads(path.with_name(path.name + ".json").read_text())["build"]
        standard = build["width"] == 1.0 and build["in_channels"] == 3 and not build["cifar_stem"]
        model = (f"torchvision.models.{build['arch']}()" if standard else
                 "gsg.eval.export.torchvision_resnet(" + ", ".join(f"{k}={v!r}" for k, v in build.items()) + ")")
        print(f"load it with: m = {model}; m.load_state_dict(torch.load({str(path)!r}, weights_only=True))")
    if args.format == "timm":
        from gsg.eval.export import timm_create_line

        meta = json.loads(path.with_name(path.name + ".json").read_text())
        print(f"load it with: import timm, torch; m = {timm_create_line(meta['build'])}; "
              f"m.load_state_dict(torch.load({str(path)!r}, weights_only=True))")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = "gsg " + shlex.join(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return int(args.func(args))
    except GsgError as exc:
        print(f"gsg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gsg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
