"""Pretrain on your own folder of unlabelled images, monitor and evaluate on a labelled folder.

    python examples/pretrain_folder.py --unlabelled DIR --labelled DIR --out runs/folder [--epochs 20]

``--unlabelled``: any folder of images (no class subfolders needed). ``--labelled``: a folder with ``train/``
and ``test/`` subfolders, each with one subfolder of images per class. Without them, ``--demo`` writes
small demo folders of gsg's synthetic images under OUT/demo first.

During pretraining the labelled folder is the monitor (``run.monitor_data_dir``): every epoch logs kNN
accuracy and an online linear probe's top-1 on it (OUT/metrics.jsonl). Afterwards the checkpoint is
evaluated on it by kNN and by a linear probe on frozen features. The same with the command line:

    gsg pretrain --dataset imagefolder --data-dir DIR --set run.monitor_data_dir=LABELLED --out OUT
    gsg knn OUT/checkpoint.pt --dataset imagefolder --data-dir LABELLED
    gsg linear OUT/checkpoint.pt --dataset imagefolder --data-dir LABELLED --mode features
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from gsg.config import load_config
from gsg.data.datasets import synthetic_images
from gsg.eval.knn import knn_evaluate
from gsg.eval.linear import linear_evaluate
from gsg.train.loop import pretrain


def write_demo_folders(root: Path, n_unlabelled: int, n_per_split: int, size: int) -> tuple[Path, Path]:
    """root/unlabelled/*.png and root/labelled/{train,test}/class_k/*.png from gsg's synthetic images."""
    images, _ = synthetic_images(n_unlabelled, image_size=size, sample_seed=11)
    (root / "unlabelled").mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(root / "unlabelled" / f"{i:05d}.png")
    for split, seed in (("train", 12), ("test", 13)):
        images, labels = synthetic_images(n_per_split, image_size=size, sample_seed=seed)
        for i, (img, y) in enumerate(zip(images, labels.tolist(), strict=True)):
            folder = root / "labelled" / split / f"class_{y}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i:05d}.png")
    return root / "unlabelled", root / "labelled"


def main() -> None:
    parser = argparse.ArgumentParser(description="pretrain on an unlabelled folder, evaluate on a labelled one")
    parser.add_argument("--unlabelled", type=Path)
    parser.add_argument("--labelled", type=Path)
    parser.add_argument("--demo", action="store_true", help="write small demo folders under OUT/demo and use them")
    parser.add_argument("--out", type=Path, default=Path("runs/folder"))
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--width", type=float, default=0.25, help="ResNet-18 width (1 for a full ResNet-18)")
    parser.add_argument("--linear-epochs", type=int, default=30)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if args.demo:
        args.unlabelled, args.labelled = write_demo_folders(args.out / "demo", 256, 128, args.image_size)
    if args.unlabelled is None or args.labelled is None:
        parser.error("give --unlabelled DIR and --labelled DIR, or --demo")

    cfg = load_config(overrides={
        "data": {"dataset": "imagefolder", "data_dir": str(args.unlabelled), "image_size": args.image_size,
                 "workers": 0 if args.demo else 4},
        "model": {"width": args.width},
        "optim": {"epochs": args.epochs, "batch_size": args.batch_size},
        "run": {"out": str(args.out), "monitor_data_dir": str(args.labelled), "knn_k": 20, "device": args.device,
                "progress": False},
    })
    result = pretrain(cfg)
    print(f"checkpoint: {result['checkpoint']}")
    print(f"last epoch on {args.labelled}: kNN (k=20) {result['knn_k20']:.1f}%, online probe top-1 "
          f"{result['probe_test_top1']:.1f}% (test), {result['probe_top1']:.1f}% (train)")
    ckpt = result["checkpoint"]
    knn = knn_evaluate(ckpt, dataset="imagefolder", data_dir=str(args.labelled), k=20, device=args.device)
    lin = linear_evaluate(ckpt, dataset="imagefolder", data_dir=str(args.labelled), mode="features",
                          epochs=args.linear_epochs, lr=0.5, device=args.device)
    print(f"gsg knn: {knn['knn_k20']:.1f}% (k=20), {knn['knn_k1']:.1f}% (k=1); "
          f"gsg linear (frozen features): top-1 {lin['top1']:.1f}%")


if __name__ == "__main__":
    main()
