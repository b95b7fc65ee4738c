"""The commands that evaluate a checkpoint: kNN, baselines, linear probe, transfer, t-SNE, diagnose, export."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _eval_amp(setting: str, device: str) -> Any:
    from gsg.models.embed import resolve_device
    from gsg.train.precision import amp_dtype

    return amp_dtype(setting, resolve_device(device))


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


def cmd_diagnose(args: argparse.Namespace) -> int:
    from gsg.eval.diagnose import diagnose
    from gsg.eval.results import write_result

    plot = args.plot or args.checkpoint.with_name(args.checkpoint.stem + ".spectrum.png")
    r = diagnose(args.checkpoint, dataset=args.dataset, data_dir=args.data_dir, samples=args.samples,
                 device=args.device, plot=plot, bn=args.bn)
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
        shown = ("ge_norm", "ge_center_norm", "ge_residual_norm", "eta_p", "sel_center_norm", "sel_eta",
                 "z_center_ratio")
        sd = dec["sd"]
        print(f"gradient decomposition ({r['bn']} BatchNorm statistics; mean ± sd over {dec['batches']} batches of "
              f"{dec['batch_size']}): "
              + ", ".join(f"{k} {dec[k]:.4g}" + ("" if sd.get(k) is None else f" ± {sd[k]:.2g}")
                          for k in shown if k in dec))
    print(f"spectrum plot: {r['plot']}")
    protocol = "diagnose" if args.bn == "running" else "diagnose-bn-batch"  # both modes' results side by side
    path = write_result(args.checkpoint, protocol, r["dataset"], "projection_std_sqrt_d",
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
