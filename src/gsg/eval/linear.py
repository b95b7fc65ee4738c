"""Linear probe: a linear classifier trained on the frozen backbone (GSG paper §5.1).

The backbone stays in eval mode throughout (BatchNorm keeps its running statistics: the SimSiam linear
code notes that letting BN update them would change the frozen model). The classifier is
``nn.Linear(out_dim, num_classes)`` with weights ~ N(0, 0.01²) and zero bias (SimSiam), trained with
cross-entropy for ``epochs`` epochs with a per-epoch cosine schedule

    lr_e = lr · ½ (1 + cos(π e / epochs)),     lr = base_lr · batch / 256.

Protocols (``protocol="auto"`` picks ``cifar`` for images up to 64 px, ``imagenet`` above):

=========  =========================================  =====  =======  ===  =========================
protocol   optimizer                                  batch  base_lr  wd   test view
=========  =========================================  =====  =======  ===  =========================
cifar      SGD, momentum 0.9                          256    30       0    the image as it is
imagenet   LARS (η = 0.001, 1-d params excluded),     4096   0.1      0    resize 256 → centre 224
           momentum 0.9
=========  =========================================  =====  =======  ===  =========================

CIFAR is the paper's setting (SGD, lr 30, batch 256, cosine). For ImageNet the paper gives only "LARS,
batch 4096"; we use the official SimSiam ``main_lincls.py`` defaults that its README command runs:
base lr 0.1 (so lr = 0.1 × 4096/256 = 1.6), wd 0, momentum 0.9, LARS trust coefficient 0.001. (The
SimSiam paper's text says base lr 0.02; the code's 0.1 is what produced its released numbers.)

Training views (``mode="augment"``, the protocol): per-sample RandomResizedCrop(scale 0.08–1) + flip (the
``linear`` recipe of ``gsg.data.views``), applied batch-wise on the device, then the frozen backbone.
``mode="features"`` (fast, for CPU runs): features of the clean train images are computed once and the
classifier is trained on them; no augmentation, so usually a point or two below the augmented probe.

In-memory datasets are cropped as the dataset holds them. Image folders are cropped on the full-resolution
files in the loader's workers (torchvision's RandomResizedCrop, ``gsg.data.loader.CropSpec``), and their
test view is the dataset's own (``FolderImageDataset.get``: shorter side 256, centre 224, from the file), so
no second resize is applied to them.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gsg.checkpoint import load_backbone, save_atomic
from gsg.data.datasets import ImageDataset, held_out_split, load_dataset
from gsg.data.loader import BatchLoader, CropSpec
from gsg.data.views import BatchAugment, make_recipe
from gsg.errors import ConfigError, DataError
from gsg.eval.lars import LARS
from gsg.eval.metrics import topk_accuracy
from gsg.eval.results import result_path, write_result
from gsg.models.embed import (
    backbone_in_channels,
    embed,
    eval_mode,
    forward_features,
    match_channels,
    module_device,
    resolve_device,
    stats_for_channels,
)

log = logging.getLogger(__name__)

PROTOCOLS = ("auto", "cifar", "imagenet")
MODES = ("augment", "features")
CIFAR_MAX_SIZE = 64  # the CIFAR stem's threshold too (gsg.models.backbones.CIFAR_STEM_MAX_SIZE)
PROTOCOL_DEFAULTS: dict[str, dict[str, Any]] = {
    "cifar": {"optimizer": "sgd", "batch_size": 256, "base_lr": 30.0, "weight_decay": 0.0},
    "imagenet": {"optimizer": "lars", "batch_size": 4096, "base_lr": 0.1, "weight_decay": 0.0},
}
IMAGENET_CROP_RATIO = 224 / 256  # test view: shorter side to size / 0.875, centre crop size


def resolve_protocol(protocol: str, image_size: int) -> str:
    """``auto`` → ``cifar`` for images up to 64 px, else ``imagenet``."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown linear protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if protocol == "auto":
        return "cifar" if image_size <= CIFAR_MAX_SIZE else "imagenet"
    return protocol


def make_classifier(in_dim: int, num_classes: int, *, seed: int = 0) -> nn.Linear:
    """``nn.Linear`` with weight ~ N(0, 0.01²) (seeded) and bias 0, as in SimSiam's linear probe."""
    clf = nn.Linear(in_dim, num_classes)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        clf.weight.copy_(torch.randn(num_classes, in_dim, generator=g) * 0.01)
        clf.bias.zero_()
    return clf


def cosine_lr(base: float, epoch: int, epochs: int) -> float:
    """``base · ½ (1 + cos(π epoch / epochs))`` (SimSiam's per-epoch schedule)."""
    return base * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def _check_labels(ds: ImageDataset, what: str, num_classes: int) -> None:
    labels = ds.labels
    if len(ds) == 0:
        raise DataError(f"the {what} split of {ds.name!r} is empty")
    if int(labels.min()) < 0:
        raise DataError(f"the {what} split of {ds.name!r} has unlabelled images (label -1); the linear probe "
                        "needs labels: use the labelled 'train'/'test' splits (STL-10: not 'pretrain')")
    if int(labels.max()) >= num_classes:
        raise DataError(f"the {what} split of {ds.name!r} has label {int(labels.max())} but the training "
                        f"split has {num_classes} classes; train and test must share one class list")


def linear_probe(
    backbone: nn.Module,
    train_ds: ImageDataset,
    test_ds: ImageDataset,
    *,
    epochs: int = 90,
    protocol: Literal["auto", "cifar", "imagenet"] = "auto",
    batch_size: int | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    momentum: float = 0.9,
    mode: Literal["augment", "features"] = "augment",
    device: str | torch.device = "cpu",
    seed: int = 0,
    size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    resize: int | None = None,
    eval_batch_size: int = 512,
    workers: int = 0,
    channels_last: bool = False,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Train a linear classifier on the frozen ``backbone`` and report test top-1 (and top-5) in percent.

    ``lr`` is the *base* learning rate, scaled by ``batch_size / 256`` (SimSiam's rule); ``None`` takes
    the protocol's (table in the module docstring), as do ``batch_size`` and ``weight_decay``. ``size``:
    the side the backbone sees (default: the training images' side, at most 224 for ``imagenet``);
    ``resize``: the test view's shorter side before the centre crop (default: ``size / 0.875`` for
    ``imagenet``, none for ``cifar``). ``mean``/``std``: the backbone's normalisation (the checkpoint's
    ``data.mean/std``); default: the training set's, converted to the backbone's channels.

    Returns a dict with ``top1``, ``top5`` (``None`` for 10 classes or fewer), the resolved settings,
    per-epoch ``history`` (loss, train top-1) and ``state_dict`` (the classifier's weight and bias, CPU).
    """
    if epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}")
    if mode not in MODES:
        raise ConfigError(f"unknown linear-probe mode {mode!r}; choose one of {', '.join(MODES)}")
    device = torch.device(device)
    backbone = backbone.to(device)
    proto = resolve_protocol(protocol, size or train_ds.image_size)
    d = PROTOCOL_DEFAULTS[proto]
    batch_size = int(batch_size or d["batch_size"])
    base_lr = float(d["base_lr"] if lr is None else lr)
    weight_decay = float(d["weight_decay"] if weight_decay is None else weight_decay)
    if batch_size < 1 or base_lr <= 0 or weight_decay < 0:
        raise ConfigError(f"need batch_size >= 1, lr > 0, weight_decay >= 0; got {batch_size}, {base_lr}, "
                          f"{weight_decay}")
    peak_lr = base_lr * batch_size / 256
    size = int(size or (min(train_ds.image_size, 224) if proto == "imagenet" else train_ds.image_size))
    if resize is None and proto == "imagenet" and test_ds.in_memory:  # folders: the dataset's view is already it
        resize = round(size / IMAGENET_CROP_RATIO)
    channels = backbone_in_channels(backbone)
    if mean is None or std is None:
        mean, std = stats_for_channels(train_ds.mean, train_ds.std, channels)
    mean, std = tuple(map(float, mean)), tuple(map(float, std))
    num_classes = train_ds.num_classes
    if num_classes < 2:
        raise DataError(f"{train_ds.name!r} has {num_classes} class(es); a classifier needs at least 2")
    _check_labels(train_ds, "training", num_classes)
    _check_labels(test_ds, "test", num_classes)
    batch_size = min(batch_size, len(train_ds))  # a tiny set: one full batch rather than none

    emb = {"device": device, "size": size, "mean": mean, "std": std, "channels_last": channels_last,
           "amp_dtype": amp_dtype, "workers": workers}
    test_x, test_y = embed(backbone, test_ds, batch_size=eval_batch_size, resize=resize, **emb)
    out_dim = test_x.shape[1]
    clf = make_classifier(out_dim, num_classes, seed=seed).to(device)
    if proto == "imagenet":
        opt: torch.optim.Optimizer = LARS(clf.parameters(), lr=peak_lr, momentum=momentum,
                                          weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(clf.parameters(), lr=peak_lr, momentum=momentum, weight_decay=weight_decay)
    log.info("linear probe (%s, %s): %d epochs, batch %d, lr %.4g (base %.4g), wd %g, %d classes, %d-d",
             proto, mode, epochs, batch_size, peak_lr, base_lr, weight_decay, num_classes, out_dim)

    if mode == "features":  # the clean test view for the training images too
        train_x, train_y = embed(backbone, train_ds, batch_size=eval_batch_size, resize=resize, **emb)
        batches = _feature_batches(train_x, train_y, batch_size, seed, device)
    else:
        batches = _augmented_batches(backbone, train_ds, batch_size, seed, device, size, mean, std, workers,
                                     channels_last, amp_dtype)
    history: list[dict[str, float]] = []
    for epoch in range(epochs):
        lr_e = cosine_lr(peak_lr, epoch, epochs)
        for group in opt.param_groups:
            group["lr"] = lr_e
        # Sums on the device, read once per epoch: a .item() per step would wait for the GPU every step.
        loss_acc = torch.zeros((), device=device)
        correct_acc = torch.zeros((), dtype=torch.long, device=device)
        seen = 0
        clf.train()
        for feats, labels in batches(epoch):
            logits = clf(feats)
            loss = F.cross_entropy(logits, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_acc += loss.detach() * labels.shape[0]
            correct_acc += (logits.detach().argmax(1) == labels).sum()
            seen += labels.shape[0]
        loss_sum, correct = float(loss_acc), int(correct_acc)
        if not math.isfinite(loss_sum):
            raise DataError(f"the linear probe's loss became non-finite in epoch {epoch + 1}; lower the "
                            f"learning rate (now base {base_lr}) or check the features for NaN")
        history.append({"epoch": epoch + 1, "lr": lr_e, "loss": loss_sum / seen,
                        "train_top1": 100 * correct / seen})
        log.info("linear epoch %d/%d: loss %.4f, train top-1 %.2f", epoch + 1, epochs, loss_sum / seen,
                 100 * correct / seen)

    clf.eval()
    with torch.no_grad():
        logits = torch.cat([clf(chunk.to(device)).cpu() for chunk in test_x.split(eval_batch_size)])
    acc = topk_accuracy(logits, test_y, ks=(1, 5))
    top5 = acc[5] if num_classes > 10 else None
    log.info("linear probe: test top-1 %.2f%s", acc[1], "" if top5 is None else f", top-5 {top5:.2f}")
    return {
        "top1": acc[1],
        "top5": top5,
        "protocol": proto,
        "mode": mode,
        "epochs": epochs,
        "optimizer": d["optimizer"],
        "batch_size": batch_size,
        "base_lr": base_lr,
        "lr": peak_lr,
        "weight_decay": weight_decay,
        "momentum": momentum,
        "size": size,
        "resize": resize if resize is not None else getattr(test_ds, "resize", None),  # folders: their own
        "num_classes": num_classes,
        "feature_dim": out_dim,
        "train_size": len(train_ds),
        "test_size": len(test_ds),
        "seed": seed,
        "history": history,
        "state_dict": {k: v.detach().cpu().clone() for k, v in clf.state_dict().items()},
    }


def _feature_batches(x: Tensor, y: Tensor, batch_size: int, seed: int, device: torch.device):  # type: ignore[no-untyped-def]
    """Epoch → iterator over shuffled (features, labels) mini-batches of precomputed features."""
    x, y = x.to(device), y.to(device)

    def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        g = torch.Generator().manual_seed(seed * 1000003 + epoch)
        order = torch.randperm(len(y), generator=g).to(device)
        for idx in order.split(batch_size):
            yield x[idx], y[idx]

    return batches


def _augmented_batches(backbone: nn.Module, ds: ImageDataset, batch_size: int, seed: int,  # type: ignore[no-untyped-def]
                       device: torch.device, size: int, mean: tuple[float, ...], std: tuple[float, ...],
                       workers: int, channels_last: bool, amp_dtype: torch.dtype | None):
    """Epoch → iterator over (frozen features of augmented views, labels) for a shuffled epoch."""
    channels = backbone_in_channels(backbone)
    recipe = make_recipe("linear", size=size, mean=mean, std=std)
    augment = BatchAugment(recipe)
    loader = BatchLoader(ds, batch_size, shuffle=True, drop_last=False, seed=seed, device=device,
                         workers=workers, crops=CropSpec.from_recipe(recipe, 1))  # folders: crops in the workers
    gen = torch.Generator(device=device).manual_seed(seed)
    if module_device(backbone).type != device.type:
        raise ConfigError(f"the backbone is on {module_device(backbone)}, not {device}")

    def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        loader.set_epoch(epoch)
        for images, labels, _ in loader:
            pre = images.ndim == 5  # (1, B, C, size, size): cropped by the loader
            with torch.no_grad(), eval_mode(backbone):
                views = augment(match_channels(images[0] if pre else images, channels), generator=gen, cropped=pre)
                feats = forward_features(backbone, views, channels_last=channels_last, amp_dtype=amp_dtype)
            yield feats, labels

    return batches


def linear_evaluate(checkpoint: str | os.PathLike[str], *, dataset: str | None = None,
                    data_dir: str | os.PathLike[str] | None = None, epochs: int = 90,
                    protocol: Literal["auto", "cifar", "imagenet"] = "auto", batch_size: int | None = None,
                    lr: float | None = None, weight_decay: float | None = None,
                    mode: Literal["augment", "features"] = "augment", device: str = "auto", seed: int = 0,
                    workers: int = 0, train_subset: int | None = None, target: bool = False,
                    download: bool = False, channels_last: bool = False, amp_dtype: torch.dtype | None = None,
                    command: str = "") -> dict[str, Any]:
    """Linear probe of a checkpoint's backbone; writes the result JSON and the classifier next to it.

    ``dataset`` defaults to the pretraining dataset (then at the pretraining image size); the backbone's
    own normalisation (checkpoint ``data.mean/std``) is used in every case. Image folders are evaluated on
    ``test/``, or on ``val/`` when there is no ``test/`` (ImageNet's layout). Returns
    :func:`linear_probe`'s dict without ``state_dict``, plus ``dataset``, ``result_file`` and
    ``classifier_file`` (a ``torch.save`` of the classifier's state dict, weights-only loadable).
    """
    dev = resolve_device(device)
    backbone, ckpt = load_backbone(checkpoint, map_location="cpu", target=target)
    data = ckpt["data"]
    name = dataset or data["dataset"]
    same = name == data["dataset"]
    data_dir = data_dir or (ckpt.get("config") or {}).get("data", {}).get("data_dir")
    size = int(data["image_size"]) if same else None
    test_split = held_out_split(name, data_dir)
    train = load_dataset(name, "train", data_dir=data_dir, download=download, image_size=size,
                         subset=train_subset, seed=seed)
    test = load_dataset(name, test_split, data_dir=data_dir, download=download, image_size=size)
    res = linear_probe(backbone, train, test, epochs=epochs, protocol=protocol, batch_size=batch_size, lr=lr,
                       weight_decay=weight_decay, mode=mode, device=dev, seed=seed, mean=data["mean"],
                       std=data["std"], workers=workers, channels_last=channels_last, amp_dtype=amp_dtype)
    state = res.pop("state_dict")
    label = train.name if name not in ("imagefolder", "folder") else str(data_dir)
    clf_file = result_path(checkpoint, "linear", label).with_suffix(".classifier.pt")
    save_atomic(state, clf_file)
    extra = {k: v for k, v in res.items() if k != "top1"}
    extra.update({"target": target, "test_split": test_split, "classifier_file": str(clf_file)})
    res["result_file"] = str(write_result(checkpoint, "linear", label, "top1", res["top1"], extra, command))
    res.update({"dataset": label, "classifier_file": str(clf_file)})
    return res
