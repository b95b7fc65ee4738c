"""Where the transfer datasets of :mod:`gsg.eval.transfer` come from, and how each is split.

=============  ==============  ================================================  ====================
dataset        metric          splits (train / val / test)                       source
=============  ==============  ================================================  ====================
cifar10/100    top1            train, random 20% of train, test                  torchvision CIFAR
aircraft       mean_per_class  train / val / test (variants, 100 classes)        FGVCAircraft
caltech101     mean_per_class  30 per class (seeded), random 20% of it, rest     Caltech101 (101 cl.)
cars           top1            train, random 20% of train, test                  StanfordCars
dtd            top1            train1 / val1 / test1 (partition 1)               DTD
flowers        mean_per_class  train / val / test                                Flowers102
food           top1            train, random 20% of train, test                  Food101
pets           mean_per_class  trainval, random 20% of it, test                  OxfordIIITPet
sun397         top1            50 + 50 per class (seeded), random 20% of train   SUN397
voc2007        voc11_map       train / val / test, 20 labels per image           VOCDetection 2007
mnist, fashion-mnist, synthetic   top1   train, random 20% of train, test        gsg.data
imagefolder    top1            train / val (if present, else 20% of train)       gsg.data (a folder
                               / test                                            with those subfolders)
=============  ==============  ================================================  ====================

Deviations, all forced by what is available offline, and stated so results are read correctly:

- SUN397: torchvision ships no official partition, so train/test are a seeded draw of 50 + 50 images
  per class (the size of the official partitions); Caltech101: torchvision drops the
  ``BACKGROUND_Google`` class, so 101 classes instead of ssl-transfer's 102.
- gsg.data datasets (MNIST, Fashion-MNIST, image folders) are resized with bilinear + antialias
  filtering (gsg.data's decoder and ``eval_transform``), not bicubic. ``image_size`` overrides 224, e.g.
  28 for a 28-px Fashion-MNIST backbone.
- VOC2007 (not a deviation: ssl-transfer's own rule): an image is positive for a class when it has a
  non-difficult object of it and negative otherwise, including when its only objects of that class are
  difficult (VOC's label 0; ssl-transfer's ``target == 1``), in training and in the AP. The AP is the
  11-point AP on ``sklearn.metrics.precision_recall_curve``'s points, appended (recall 0, precision 1)
  included (``gsg.eval.metrics``). ``voc_difficult="ignore"`` instead leaves such entries out of that
  class's training and AP (the VOC devkit's convention; gsg's rule before it followed ssl-transfer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gsg.data.datasets import FolderImageDataset, load_dataset
from gsg.errors import ConfigError, DataError
from gsg.eval.logreg import Metric

VAL_FRACTION = 0.2


CALTECH_TRAIN_PER_CLASS = 30


SUN397_PER_CLASS = 50


VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")


@dataclass(frozen=True)
class TransferDataset:
    """How one transfer dataset is scored and split."""

    name: str
    metric: Metric
    own_val: bool  # a predefined validation split (else a seeded 20% of train)
    source: str  # "torchvision" or "gsg"


TRANSFER_DATASETS: dict[str, TransferDataset] = {
    d.name: d for d in (
        TransferDataset("cifar10", "top1", False, "torchvision"),
        TransferDataset("cifar100", "top1", False, "torchvision"),
        TransferDataset("aircraft", "mean_per_class", True, "torchvision"),
        TransferDataset("caltech101", "mean_per_class", False, "torchvision"),
        TransferDataset("cars", "top1", False, "torchvision"),
        TransferDataset("dtd", "top1", True, "torchvision"),
        TransferDataset("flowers", "mean_per_class", True, "torchvision"),
        TransferDataset("food", "top1", False, "torchvision"),
        TransferDataset("pets", "mean_per_class", False, "torchvision"),
        TransferDataset("sun397", "top1", False, "torchvision"),
        TransferDataset("voc2007", "voc11_map", True, "torchvision"),
        TransferDataset("mnist", "top1", False, "gsg"),
        TransferDataset("fashion-mnist", "top1", False, "gsg"),
        TransferDataset("synthetic", "top1", False, "gsg"),
        TransferDataset("imagefolder", "top1", True, "gsg"),
    )
}


_ALIASES = {"cifar-10": "cifar10", "cifar-100": "cifar100", "fgvc-aircraft": "aircraft",
            "caltech": "caltech101",
            "stanfordcars": "cars", "stanford-cars": "cars", "flowers102": "flowers", "food101": "food",
            "oxford-pets": "pets", "oxfordiiitpet": "pets", "voc": "voc2007", "fmnist": "fashion-mnist",
            "folder": "imagefolder"}


def resolve_dataset(name: str) -> TransferDataset:
    """The dataset spec of a (case-insensitive, alias-aware) name."""
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in TRANSFER_DATASETS:
        import difflib

        close = difflib.get_close_matches(key, list(TRANSFER_DATASETS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown transfer dataset {name!r}; {hint}choose one of "
                          f"{', '.join(TRANSFER_DATASETS)}")
    return TRANSFER_DATASETS[key]


def random_val_split(n: int, fraction: float = VAL_FRACTION, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(train_idx, val_idx): a seeded permutation of range(n), its first ⌊fraction · n⌋ as validation."""
    if not 0 < fraction < 1:
        raise ConfigError(f"the validation fraction must be in (0, 1), got {fraction}")
    n_val = int(np.floor(fraction * n))
    if n_val < 1 or n_val >= n:
        raise DataError(f"a split of {n} images is too small to hold out {fraction:.0%} for validation")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def per_class_split(labels: Sequence[int], per_class_train: int, seed: int, per_class_test: int | None = None
                    ) -> tuple[Tensor, Tensor]:
    """Seeded ``per_class_train`` images per class for training; the rest (or ``per_class_test``) for test."""
    y = torch.as_tensor(list(labels), dtype=torch.int64)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=g)
    ys = y[order]
    # Rank of each permuted item within its class: stable sort by class keeps the random order inside.
    by_class = torch.sort(ys, stable=True)
    sorted_y = by_class.values
    first = torch.searchsorted(sorted_y, sorted_y, right=False)
    rank = torch.empty_like(ys)
    rank[by_class.indices] = torch.arange(len(ys)) - first
    train = order[rank < per_class_train]
    test_mask = rank >= per_class_train
    if per_class_test is not None:
        test_mask &= rank < per_class_train + per_class_test
    return train.sort().values, order[test_mask].sort().values


class _PILToUint8:
    """PIL image → RGB, shorter side to ``size`` (bicubic), centre crop, uint8 (3, size, size) tensor."""

    def __init__(self, size: int) -> None:
        from torchvision import transforms as T

        self.size = size
        self.resize = T.Resize(size, interpolation=T.InterpolationMode.BICUBIC)
        self.crop = T.CenterCrop(size)
        self.to_tensor = T.PILToTensor()

    def __call__(self, img: Any) -> Tensor:
        return self.to_tensor(self.crop(self.resize(img.convert("RGB"))))


class _VOCTarget:
    """VOC annotation dict → int8 (2, 20): row 0 positive labels, row 1 "difficult only" flags."""

    def __call__(self, target: dict[str, Any]) -> Tensor:
        objects = target["annotation"].get("object", [])
        if isinstance(objects, dict):
            objects = [objects]
        pos = torch.zeros(len(VOC_CLASSES), dtype=torch.int8)
        hard = torch.zeros(len(VOC_CLASSES), dtype=torch.int8)
        for obj in objects:
            c = VOC_CLASSES.index(obj["name"])
            if str(obj.get("difficult", "0")).strip() == "1":
                hard[c] = 1
            else:
                pos[c] = 1
        return torch.stack([pos, hard & (1 - pos)])


def _torchvision_split(name: str, split: str, root: Path, download: bool, size: int, seed: int) -> Any:
    """The torchvision dataset (with the protocol transform) behind a source split of a transfer dataset."""
    from torch.utils.data import Subset
    from torchvision import datasets as D

    tf = _PILToUint8(size)
    kw: dict[str, Any] = {"transform": tf, "download": download}
    if name in ("cifar10", "cifar100"):
        cls = D.CIFAR10 if name == "cifar10" else D.CIFAR100
        return cls(root, train=split == "train", **kw)
    if name == "aircraft":
        return D.FGVCAircraft(root, split=split, annotation_level="variant", **kw)
    if name == "cars":
        return D.StanfordCars(root, split=split, **kw)
    if name == "dtd":
        return D.DTD(root, split=split, partition=1, **kw)
    if name == "flowers":
        return D.Flowers102(root, split=split, **kw)
    if name == "food":
        return D.Food101(root, split=split, **kw)
    if name == "pets":
        return D.OxfordIIITPet(root, split="trainval" if split == "train" else "test",
                               target_types="category", **kw)
    if name == "voc2007":
        return D.VOCDetection(root, year="2007", image_set=split, target_transform=_VOCTarget(), **kw)
    if name == "caltech101":
        ds = D.Caltech101(root, target_type="category", **kw)
        train, test = per_class_split(ds.y, CALTECH_TRAIN_PER_CLASS, seed)
        return Subset(ds, (train if split == "train" else test).tolist())
    if name == "sun397":
        ds = D.SUN397(root, **kw)
        # rglob order depends on the file system: sort by path so the seeded split is reproducible.
        by_path = sorted(range(len(ds._image_files)), key=lambda i: str(ds._image_files[i]))
        labels = [ds._labels[i] for i in by_path]
        train, test = per_class_split(labels, SUN397_PER_CLASS, seed, per_class_test=SUN397_PER_CLASS)
        chosen = train if split == "train" else test
        return Subset(ds, [by_path[i] for i in chosen.tolist()])
    raise ConfigError(f"{name} is not a torchvision transfer dataset")


def source_splits(spec: TransferDataset, data_dir: Path | None) -> list[str]:
    if spec.name == "imagefolder":
        assert data_dir is not None
        has_val = (data_dir / "val").is_dir()
        return ["train", "val", "test"] if has_val else ["train", "test"]
    return ["train", "val", "test"] if spec.own_val else ["train", "test"]


def load_gsg_split(name: str, split: str, root: Path | None, download: bool, image_size: int) -> Any:
    ds = load_dataset(name, split, data_dir=root, download=download,
                      image_size=image_size if name == "imagefolder" else None)
    if isinstance(ds, FolderImageDataset):  # the protocol's view: the whole shorter side, not Resize(256)
        ds.resize = ds.image_size
    if int(ds.labels.min()) < 0:
        raise DataError(f"the {split} split of {name} has unlabelled images; transfer needs labels in "
                        "every split")
    return ds


def open_torchvision_split(name: str, split: str, root: Path, download: bool, size: int, seed: int) -> Any:
    try:
        return _torchvision_split(name, split, root, download, size, seed)
    except (RuntimeError, FileNotFoundError, OSError) as exc:
        if download:
            how = f"download failed; check the network, or place the files in {root}"
        else:
            how = f"rerun with download allowed (--download), or place its torchvision layout in {root}"
        if name == "cars":
            how += " (StanfordCars is no longer downloadable through torchvision: fetch it by hand)"
        raise DataError(f"{name} ({split}) is not available in {root}: {exc}. Fix: {how}") from exc
