"""The ``gsg`` command's argument parser: every subcommand, its flags and the function that runs it."""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gsg.cli.evaluate import cmd_baselines, cmd_diagnose, cmd_export, cmd_knn, cmd_linear, cmd_transfer, cmd_tsne
from gsg.cli.tools import _simulation_experiments, cmd_bench, cmd_doctor, cmd_plot, cmd_simulate
from gsg.cli.train import PRETRAIN_FLAGS, cmd_pretrain, cmd_reproduce


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
    dg.add_argument("--bn", choices=("running", "batch"), default="running",
                    help="BatchNorm on the augmented views: running statistics (eval mode) or each batch's own, as "
                         "in training (the per-epoch log's mode; the checkpoint's statistics are not changed)")

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
    rp.add_argument("--no-wait", action="store_true",
                    help="when every run left is being trained by another process sharing --runs, exit without "
                         "a report instead of waiting (the process that finishes the last run writes it): for "
                         "lanes that loop over experiments, as docs/experiments/reproduce_cpu2.sh does")
    rp.add_argument("--only", action="append", metavar="RUN",
                    help="train only this run (a variant name for all its seeds, or a run key such as "
                         "simclr_b512-s0; repeat for more); the report covers every run finished so far")
    rp.add_argument("--deadline", metavar="WHEN",
                    help="cpu scale: start no run that the cost model says would end after WHEN (+MINUTES, +2h, "
                         "HH:MM today, or an ISO date and time), for a machine lent for a fixed time; the report "
                         "covers the runs finished so far; with --dry-run, lists which runs would start")
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


def _reproduce_experiments() -> tuple[str, ...]:
    from gsg.reproduce import EXPERIMENTS

    return tuple(EXPERIMENTS)
