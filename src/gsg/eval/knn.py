"""`gsg knn`: kNN accuracy of a checkpoint's frozen backbone (weighted k=200, T=0.1, and plain k=1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gsg.analysis.knn import knn_accuracy
from gsg.checkpoint import load_backbone
from gsg.data.datasets import load_dataset
from gsg.errors import DataError
from gsg.eval.results import write_result
from gsg.models.embed import embed


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def knn_evaluate(checkpoint: str | Path, *, dataset: str | None = None, data_dir: str | None = None,
                 k: int = 200, temperature: float = 0.1, batch_size: int = 512, device: str = "auto",
                 train_subset: int | None = None, target: bool = False, command: str = "") -> dict[str, Any]:
    """Embed the clean train and test sets with the backbone and classify the test set by kNN.

    The bank is the labelled train split (un-augmented), features are L2-normalised inside
    :func:`gsg.analysis.knn.knn_predict`. The result is also written as JSON next to the checkpoint.
    """
    dev = pick_device(device)
    backbone, ckpt = load_backbone(checkpoint, map_location="cpu", target=target)
    backbone = backbone.to(dev)
    data = ckpt["data"]
    name = dataset or data["dataset"]
    cfg_data = ckpt["config"].get("data", {})
    data_dir = data_dir or cfg_data.get("data_dir")
    size = data["image_size"]
    train = load_dataset(name, "train", data_dir=data_dir, subset=train_subset,
                         image_size=size if name == data["dataset"] else None)
    test = load_dataset(name, "test", data_dir=data_dir, image_size=size if name == data["dataset"] else None)
    if train.num_classes == 0:
        raise DataError(f"{name} has no labels, so kNN accuracy cannot be measured; use a labelled dataset")
    same = name == data["dataset"]
    mean, std = (tuple(data["mean"]), tuple(data["std"])) if same else (train.mean, train.std)
    kw: dict[str, Any] = {"batch_size": batch_size, "device": dev, "size": size if same else train.image_size,
                          "mean": mean, "std": std}
    fb, lb = embed(backbone, train, **kw)
    ft, lt = embed(backbone, test, **kw)
    acc = knn_accuracy(fb, lb, ft, lt, train.num_classes, ks=(k, 1), temperature=temperature)
    result: dict[str, Any] = {"dataset": name, "train_size": len(train), "test_size": len(test), **acc}
    path = write_result(checkpoint, "knn", name, f"knn_k{k}", acc[f"knn_k{k}"],
                        {**acc, "k": k, "temperature": temperature, "target": target}, command)
    result["result_file"] = str(path)
    return result
