"""Load an exported gsg backbone into torchvision or timm and fine-tune it with a new classifier.

    python examples/finetune_export.py --checkpoint runs/quickstart/checkpoint.pt --dataset fashion-mnist

exports the checkpoint's backbone (``gsg export``: a ResNet to torchvision's format, a ``timm:NAME``
backbone to timm's), loads the file into a plain ``torchvision.models.ResNet`` or ``timm.create_model(...)``
with ``strict=True``, checks that it gives the checkpoint's features, puts a fresh linear classifier on top
and fine-tunes the whole network for a few steps on a labelled dataset, printing test accuracy before
(linear layer at zero) and after. ``--demo`` first pretrains a tiny backbone on synthetic images (add
``--backbone timm:vit_tiny_patch16_224 --timm-kwargs patch_size=4,depth=2`` for a ViT).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn

from gsg.checkpoint import load_backbone
from gsg.config import load_config
from gsg.data.datasets import load_dataset
from gsg.data.views import BatchAugment, eval_transform, make_recipe
from gsg.eval.export import export_backbone, timm_create_line, torchvision_resnet
from gsg.train.loop import pretrain


def load_exported(ckpt: Path, out_dir: Path) -> tuple[nn.Module, int, str]:
    """Export the backbone and load it into torchvision or timm; returns (model, feature size, what it is)."""
    arch = load_backbone(ckpt)[1]["backbone"]["arch"]
    fmt = "timm" if arch.startswith("timm:") else "torchvision"
    path = export_backbone(ckpt, out_dir / f"backbone.{fmt}.pth", format=fmt)
    build = json.loads(path.with_name(path.name + ".json").read_text())["build"]
    state = torch.load(path, weights_only=True)
    if fmt == "timm":
        import timm

        model = timm.create_model(**build)  # num_classes=0: returns the pooled feature
        model.load_state_dict(state, strict=True)
        return model, model.num_features, timm_create_line(build)
    model = torchvision_resnet(**build)  # torchvision.models.ResNet (for width 1: torchvision.models.resnetXX())
    model.load_state_dict(state, strict=True)
    dim = model.fc.in_features
    model.fc = nn.Identity()  # the export's fc is a zero placeholder: drop it, the classifier comes next
    return model, dim, f"gsg.eval.export.torchvision_resnet({', '.join(f'{k}={v!r}' for k, v in build.items())})"


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, size: int, mean, std) -> float:
    with torch.no_grad():
        pred = model.eval()(eval_transform(images, size=size, mean=mean, std=std)).argmax(1)
    return 100.0 * float((pred == labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description="fine-tune an exported gsg backbone in torchvision or timm")
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--demo", action="store_true", help="pretrain a tiny backbone on synthetic images first")
    parser.add_argument("--backbone", default="resnet18", help="--demo: resnet18 or timm:NAME")
    parser.add_argument("--timm-kwargs", default="", help='--demo: e.g. "patch_size=4,depth=2"')
    parser.add_argument("--dataset", default=None, help="labelled dataset to fine-tune on (default: pretraining's)")
    parser.add_argument("--data-dir")
    parser.add_argument("--out", type=Path, default=Path("runs/finetune"))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args()
    if args.demo:
        timm_model = args.backbone.startswith("timm:")
        cfg = load_config(overrides={
            "data": {"dataset": "synthetic", "image_size": 16, "subset": 256},
            "model": {"backbone": args.backbone, "width": 1.0 if timm_model else 0.125, "proj_dim": 64,
                      "pred_hidden": 16, **({"timm_kwargs": args.timm_kwargs} if args.timm_kwargs else {})},
            "optim": {"epochs": 1, "batch_size": 32, "lr": 0.05},
            "run": {"out": str(args.out / "pretrain"), "device": "cpu", "progress": False, "knn_every": 0}})
        args.checkpoint = Path(pretrain(cfg)["checkpoint"])
    if args.checkpoint is None:
        parser.error("give --checkpoint FILE (a gsg checkpoint) or --demo")

    model, dim, built = load_exported(args.checkpoint, args.out)
    ours, ckpt = load_backbone(args.checkpoint)
    data = ckpt["data"]
    size, mean, std = data["image_size"], tuple(data["mean"]), tuple(data["std"])
    probe = torch.randint(0, 256, (4, data["channels"], size, size), dtype=torch.uint8)
    x = eval_transform(probe, size=size, mean=mean, std=std)
    with torch.no_grad():
        diff = (model.eval()(x) - ours(x)).abs().max().item()
    print(f"loaded into {built}: max feature difference to the checkpoint {diff:.3g}")

    name = args.dataset or data["dataset"]
    kw = {"data_dir": args.data_dir, "image_size": size, "channels": data["channels"], "download": False}
    train, test = load_dataset(name, "train", **kw), load_dataset(name, "test", **kw)
    net = nn.Sequential(model, nn.Linear(dim, train.num_classes))
    nn.init.zeros_(net[1].weight)
    nn.init.zeros_(net[1].bias)
    print(f"test top-1 before fine-tuning: {accuracy(net, test.images, test.labels, size, mean, std):.1f}%")
    augment = BatchAugment(make_recipe("grayscale" if data["channels"] == 1 else "cifar", size=size, mean=mean,
                                       std=std))
    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(args.steps):
        idx = torch.randint(len(train), (args.batch_size,), generator=gen)
        loss = nn.functional.cross_entropy(net(augment(train.images[idx], gen)), train.labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"test top-1 after {args.steps} fine-tuning steps: "
          f"{accuracy(net, test.images, test.labels, size, mean, std):.1f}%  (last loss {loss.item():.3f})")


if __name__ == "__main__":
    main()
