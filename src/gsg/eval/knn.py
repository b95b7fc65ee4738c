"""`gsg knn` and `gsg tsne`: kNN accuracy and t-SNE of a checkpoint's frozen backbone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gsg.analysis.knn import knn_accuracy
from gsg.checkpoint import load_backbone
from gsg.data.datasets import ImageDataset, held_out_split, load_dataset
from gsg.errors import DataError
from gsg.eval.results import write_result
from gsg.eval.tsne import tsne_plot
from gsg.models.embed import embed, resolve_device


@dataclass
class EmbeddedSplits:
    """Clean (un-augmented) backbone features of a labelled train and test split."""

    name: str
    train: ImageDataset
    test: ImageDataset
    train_features: Tensor
    train_labels: Tensor
    test_features: Tensor
    test_labels: Tensor


def embed_splits(checkpoint: str | Path, *, dataset: str | None = None, data_dir: str | None = None,
                 batch_size: int = 512, device: str = "auto", train_subset: int | None = None,
                 test_subset: int | None = None, target: bool = False, workers: int = 0,
                 channels_last: bool = False, amp_dtype: torch.dtype | None = None,
                 features_on_device: bool = False) -> EmbeddedSplits:
    """Embed the train and test splits of ``dataset`` (default: the pretraining dataset) with a checkpoint.

    On the pretraining dataset the images keep the pretraining size and normalisation. On another dataset
    they keep their own size and are converted to the backbone's channels, with statistics to match. The
    test split is ``val/`` for an image folder without ``test/`` (``held_out_split``). ``workers``: decoding
    processes for image folders; ``channels_last``/``amp_dtype``: the backbone's layout and autocast dtype.
    ``features_on_device``: leave the features on ``device`` (for a search there) rather than on the CPU.
    """
    dev = resolve_device(device)
    backbone, ckpt = load_backbone(checkpoint, map_location="cpu", target=target)
    backbone = backbone.to(dev)
    data = ckpt["data"]
    name = dataset or data["dataset"]
    data_dir = data_dir or ckpt["config"].get("data", {}).get("data_dir")
    same = name == data["dataset"]
    size = data["image_size"] if same else None
    train = load_dataset(name, "train", data_dir=data_dir, subset=train_subset, image_size=size)
    test = load_dataset(name, held_out_split(name, data_dir), data_dir=data_dir, subset=test_subset,
                        image_size=size)
    if train.num_classes == 0 or test.num_classes == 0:
        raise DataError(f"{name} has no labels, so it cannot be used for kNN or t-SNE; use a labelled dataset")
    kw: dict[str, Any] = {"batch_size": batch_size, "device": dev, "size": size, "workers": workers,
                          "channels_last": channels_last, "amp_dtype": amp_dtype}
    if same:
        kw.update(mean=tuple(data["mean"]), std=tuple(data["std"]))  # the backbone's own normalisation
    ftr, ltr = embed(backbone, train, **kw)
    fte, lte = embed(backbone, test, **kw)
    if features_on_device:
        ftr, ltr, fte, lte = (t.to(dev) for t in (ftr, ltr, fte, lte))
    return EmbeddedSplits(name, train, test, ftr, ltr, fte, lte)


def knn_evaluate(checkpoint: str | Path, *, dataset: str | None = None, data_dir: str | None = None,
                 k: int = 200, temperature: float = 0.1, batch_size: int = 512, device: str = "auto",
                 train_subset: int | None = None, target: bool = False, workers: int = 0,
                 channels_last: bool = False, amp_dtype: torch.dtype | None = None,
                 command: str = "") -> dict[str, Any]:
    """Weighted kNN (k, T) and k=1 on L2-normalised backbone features; writes a JSON result next to the
    checkpoint and returns ``{dataset, train_size, test_size, knn_k<k>, knn_k1, result_file}``.

    The neighbour search runs on ``device`` (a GPU when there is one), as the training loop's monitor does.
    """
    s = embed_splits(checkpoint, dataset=dataset, data_dir=data_dir, batch_size=batch_size, device=device,
                     train_subset=train_subset, target=target, workers=workers, channels_last=channels_last,
                     amp_dtype=amp_dtype, features_on_device=True)
    acc = knn_accuracy(s.train_features, s.train_labels, s.test_features, s.test_labels, s.train.num_classes,
                       ks=(k, 1), temperature=temperature)
    result: dict[str, Any] = {"dataset": s.name, "train_size": len(s.train), "test_size": len(s.test), **acc}
    path = write_result(checkpoint, "knn", s.name, f"knn_k{k}", acc[f"knn_k{k}"],
                        {**acc, "k": k, "temperature": temperature, "target": target}, command)
    result["result_file"] = str(path)
    return result


def tsne_evaluate(checkpoint: str | Path, out: str | Path, *, dataset: str | None = None,
                  data_dir: str | None = None, max_points: int = 5000, batch_size: int = 512,
                  device: str = "auto", train_subset: int | None = None, seed: int = 0,
                  title: str | None = None, target: bool = False) -> dict[str, Any]:
    """t-SNE of the test-set representations coloured by class, with the kNN accuracy in the title
    (Appendix E). Returns ``{png, knn_k200, knn_k1, points}``."""
    s = embed_splits(checkpoint, dataset=dataset, data_dir=data_dir, batch_size=batch_size, device=device,
                     train_subset=train_subset, target=target, features_on_device=True)
    acc = knn_accuracy(s.train_features, s.train_labels, s.test_features, s.test_labels, s.train.num_classes,
                       ks=(200, 1))
    label = title or Path(checkpoint).parent.name
    full_title = f"{label}: {s.name} test set, kNN k=200 {acc['knn_k200']:.1f}%, k=1 {acc['knn_k1']:.1f}%"
    png = tsne_plot(s.test_features, s.test_labels, s.test.classes or None, out, full_title,
                    max_points=max_points, seed=seed)
    return {"png": str(png), **acc, "points": min(max_points, len(s.test))}
