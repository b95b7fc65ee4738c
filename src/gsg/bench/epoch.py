"""Seconds per epoch of CIFAR-10-scale pretraining: gsg's GPU-resident path against a per-image DataLoader.

gsg's path is the library's own loop, ``Trainer.fit`` (``gsg.train.loop``): the whole dataset held on the
device (``data.on_device``), ``BatchAugment`` on the device, SimSiam + guided stop-gradient, bf16 autocast,
channels-last and ``torch.compile``. Online kNN is off, so ``epoch_time_s`` of the history is training alone.

The reference is the pipeline of the official scripts: a ``torch.utils.data.DataLoader`` whose workers
turn each image into a PIL image and apply torchvision's CIFAR transform (``datapath.torchvision_transform``)
2 or 4 times (four crops: the GSG authors' code), pinned memory, non-blocking copies; then the same
``Siamese`` model, ``policy_loss`` and SGD, by default as those scripts run it: float32, NCHW, not compiled.

Timing data: CIFAR-10 files are not needed. By default ``n_images`` uint8 tensors of CIFAR's shape
(3 x 32 x 32) with random pixels stand in for the dataset (the compute of every op is independent of the
pixel values); ``dataset="cifar10"`` uses the real files instead.

The first ``warmup_epochs`` epochs (torch.compile's compilation, cuDNN autotuning, allocator growth) are
reported but not counted; the number is the median of the remaining ``epochs``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from gsg.bench.datapath import random_images, torchvision_transform
from gsg.bench.report import finish, machine_info, resolve_device, synchronize, usable_cores
from gsg.config import Config, crops_per_image, load_config
from gsg.data.datasets import CIFAR10_CLASSES, IMAGENET_MEAN, IMAGENET_STD, TensorImageDataset
from gsg.ssl.stopgrad import derangement, policy_loss
from gsg.train import loop

log = logging.getLogger("gsg.bench")

TARGET_S_PER_EPOCH_H100 = 5.0  # the target for CIFAR-10 ResNet-18 SimSiam+GSG on one H100


def synthetic_cifar(n: int, image_size: int = 32, seed: int = 0) -> TensorImageDataset:
    """``n`` random uint8 images of CIFAR-10's shape with random labels and CIFAR's normalisation."""
    images = random_images(n, image_size, 3, seed=seed)
    labels = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(seed + 1))
    return TensorImageDataset("cifar10-shaped random", images, labels, CIFAR10_CLASSES, IMAGENET_MEAN,
                              IMAGENET_STD)


@contextlib.contextmanager
def dataset_override(ds: TensorImageDataset | None) -> Iterator[None]:
    """Make ``Trainer`` load ``ds`` as its pretraining set (None: leave dataset loading alone).

    The Trainer then runs unchanged: it moves the dataset to the GPU, builds its loader and augmentation.
    """
    if ds is None:
        yield
        return

    def fake_load(name: str, split: str = "train", **kwargs: Any) -> TensorImageDataset:
        return ds

    with mock.patch.object(loop, "load_dataset", fake_load):
        yield


def epoch_config(out: Path, *, device: torch.device, dataset: str, data_dir: str | None, batch_size: int,
                 epochs: int, width: float, proj_dim: int, pred_hidden: int, amp: str, channels_last: bool,
                 compile: bool, views: str, limit_batches: int | None, image_size: int | None) -> Config:
    """The paper's CIFAR-10 setting (cifar10 preset: CIFAR ResNet-18, lr 0.06, constant) with run options."""
    data: dict[str, Any] = {"dataset": dataset, "recipe": "cifar", "on_device": True, "download": False}
    if data_dir:
        data["data_dir"] = data_dir
    if image_size:
        data["image_size"] = image_size
    return load_config(preset="cifar10", overrides={
        "data": data,
        "model": {"width": width, "proj_dim": proj_dim, "pred_hidden": pred_hidden},
        "ssl": {"method": "simsiam", "stop_gradient": "guided", "views": views},
        "optim": {"epochs": epochs, "batch_size": batch_size},
        "run": {"out": str(out), "device": str(device), "amp": amp, "channels_last": channels_last,
                "compile": compile, "knn_every": 0, "checkpoint_every": epochs, "progress": False,
                "tensorboard": False, "log_every": 50, "limit_batches": limit_batches},
    })


class MultiViewPIL(Dataset[tuple[Tensor, ...]]):
    """uint8 HWC arrays -> PIL per item -> ``views`` independently augmented views."""

    def __init__(self, images_hwc: np.ndarray, transform: Any, views: int) -> None:
        self.images, self.transform, self.views = images_hwc, transform, views

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, ...]:
        from PIL import Image

        img = Image.fromarray(self.images[i])
        return tuple(self.transform(img) for _ in range(self.views))


def reference_step(trainer: loop.Trainer, views: list[Tensor]) -> Tensor:
    """One step of the per-image pipeline's loop on already augmented views (2, or 4 = fresh partner crops).

    Same model, policy loss and optimizer as the Trainer; only where the views come from differs: with four
    views per image, the partner's fresh crops are views 3 and 4 of the partner image.
    """
    b = views[0].shape[0]
    partner = derangement(b, generator=trainer.aug_gen, device=trainer.device)
    batch = views[:2] + ([v[partner] for v in views[2:4]] if len(views) == 4 else [])
    if trainer.channels_last:
        batch = [v.contiguous(memory_format=torch.channels_last) for v in batch]
    with torch.autocast(trainer.device.type, dtype=trainer.amp or torch.float32, enabled=trainer.amp is not None):
        out = trainer.forward(batch)
    p, t = out.p, out.t
    if len(views) == 4:
        res = policy_loss("guided", p1=(p[0], p[1]), t1=(t[0], t[1]), p2=(p[2], p[3]), t2=(t[2], t[3]))
    else:
        res = policy_loss("guided", p1=(p[0], p[1]), t1=(t[0], t[1]), partner=partner)
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.scaler.scale(res.loss).backward()
    trainer.scaler.step(trainer.optimizer)
    trainer.scaler.update()
    return res.loss.detach()


def reference_epochs(trainer: loop.Trainer, images: Tensor, *, views: int, workers: int, epochs: int,
                     warmup_batches: int, limit_batches: int | None) -> dict[str, Any]:
    """Seconds per epoch of the per-image DataLoader pipeline feeding ``trainer``'s model."""
    dev = trainer.device
    hwc = images.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    ds = MultiViewPIL(hwc, torchvision_transform("cifar", int(images.shape[-1])), views)
    loader = DataLoader(ds, batch_size=trainer.local_batch, shuffle=True, drop_last=True, num_workers=workers,
                        pin_memory=dev.type == "cuda", persistent_workers=workers > 0,
                        prefetch_factor=4 if workers > 0 else None)
    steps = len(loader) if limit_batches is None else min(limit_batches, len(loader))
    trainer.model.train()
    times = []
    for epoch in range(epochs + 1):  # epoch 0: warm-up, cut to warmup_batches
        n_steps = min(warmup_batches, steps) if epoch == 0 else steps
        synchronize(dev)
        t0 = time.perf_counter()
        for i, batch in enumerate(loader):
            if i >= n_steps:
                break
            reference_step(trainer, [v.to(dev, non_blocking=True) for v in batch])
        synchronize(dev)
        if epoch > 0:
            times.append(time.perf_counter() - t0)
    return {"epoch_times_s": times, "steps_per_epoch": steps, "full_steps_per_epoch": len(loader)}


def run(*, device: str = "auto", quick: bool = False, n_images: int = 50000, batch_size: int = 512,
        epochs: int = 3, warmup_epochs: int = 1, width: float = 1.0, proj_dim: int = 2048, pred_hidden: int = 512,
        amp: str = "bf16", channels_last: bool = True, compile: bool = True, views: str = "reuse",
        dataset: str | None = None, data_dir: str | None = None, limit_batches: int | None = None,
        baseline: bool = True, baseline_workers: int | None = None, baseline_epochs: int = 1,
        baseline_views: str = "fresh", baseline_amp: str = "off", baseline_channels_last: bool = False,
        baseline_warmup_batches: int = 5) -> dict[str, Any]:
    """gsg's GPU-resident SimSiam + GSG epoch against the per-image DataLoader pipeline, same device and model.

    ``dataset=None``: ``n_images`` random CIFAR-shaped tensors; a name (e.g. "cifar10") loads real data.
    ``limit_batches``: time only that many steps per epoch; seconds per epoch are then extrapolated to the
    full epoch (reported as such); on a CPU without ``quick`` it defaults to 3 steps, since a full-width epoch
    takes hours there. ``quick``: two steps of each path with a tiny model at 16 px on the CPU-sized
    settings, compile off (what the test suite runs). ``baseline_views``: "fresh" = four crops per image, as
    the GSG authors' code; "reuse" = two. ``baseline_workers``: DataLoader workers (None: the usable cores).
    """
    dev = resolve_device(device)
    image_size: int | None = None
    if quick:
        n_images, batch_size, epochs, warmup_epochs = 64, 16, 1, 1
        width, proj_dim, pred_hidden, image_size, compile = 0.125, 32, 16, 16, False
        limit_batches, baseline_epochs, baseline_warmup_batches = 2, 1, 1
        baseline_workers = 0 if baseline_workers is None else baseline_workers
    if dev.type == "cpu" and not quick and limit_batches is None:
        # A full-width ResNet-18 epoch of 50k images takes hours on a CPU: time a few steps and extrapolate.
        log.warning("gsg bench epoch on a CPU: timing 3 steps per epoch and extrapolating (use a GPU for the "
                    "real number)")
        limit_batches = 3
    workers = usable_cores() if baseline_workers is None else baseline_workers
    options = {"device": str(dev), "quick": quick, "dataset": dataset or f"random CIFAR-shaped x{n_images}",
               "batch_size": batch_size, "epochs": epochs, "warmup_epochs": warmup_epochs, "width": width,
               "proj_dim": proj_dim, "pred_hidden": pred_hidden, "amp": amp, "channels_last": channels_last,
               "compile": compile, "views": views, "limit_batches": limit_batches, "baseline": baseline,
               "baseline_workers": workers, "baseline_epochs": baseline_epochs, "baseline_views": baseline_views,
               "baseline_amp": baseline_amp, "baseline_channels_last": baseline_channels_last}
    result: dict[str, Any] = {"machine": machine_info(dev), "options": options}
    ds = None
    if dataset is None:
        ds = synthetic_cifar(n_images, image_size or 32)
    with tempfile.TemporaryDirectory(prefix="gsg-bench-epoch-") as tmp:
        common = {"device": dev, "dataset": dataset or "synthetic", "data_dir": data_dir, "batch_size": batch_size,
                  "width": width, "proj_dim": proj_dim, "pred_hidden": pred_hidden, "limit_batches": limit_batches,
                  "image_size": image_size if dataset is None else None}
        cfg = epoch_config(Path(tmp) / "gsg", epochs=warmup_epochs + epochs, amp=amp, channels_last=channels_last,
                           compile=compile, views=views, **common)
        with dataset_override(ds):
            trainer = loop.Trainer(cfg)
        full_steps = len(trainer.loader)
        fit = trainer.fit()
        ep = [h["epoch_time_s"] for h in fit["history"]]
        timed = ep[warmup_epochs:]
        scale = full_steps / trainer.steps_per_epoch  # 1 unless limit_batches cut the epoch
        ours = statistics.median(timed) * scale
        rows = [{"pipeline": "gsg: data on device, batched augmentation, "
                 f"{amp} autocast, channels-last={channels_last}, compile={compile}, views={views}",
                 "s/epoch": ours, "first epoch s (warm-up)": ep[0] * scale, "steps timed per epoch":
                 trainer.steps_per_epoch, "steps per full epoch": full_steps,
                 "images/s": full_steps * trainer.local_batch / ours}]
        result["gsg_s_per_epoch"] = ours
        result["gsg_epoch_times_s"] = ep
        result["extrapolated"] = scale != 1
        del trainer
        if baseline:
            bcfg = epoch_config(Path(tmp) / "reference", epochs=1, amp=baseline_amp,
                                channels_last=baseline_channels_last, compile=False, views=baseline_views, **common)
            with dataset_override(ds):
                btrainer = loop.Trainer(bcfg)
            images = btrainer.train_ds.images if ds is None else ds.images  # type: ignore[attr-defined]
            ref = reference_epochs(btrainer, images, views=crops_per_image(baseline_views), workers=workers,
                                   epochs=baseline_epochs, warmup_batches=baseline_warmup_batches,
                                   limit_batches=limit_batches)
            bscale = ref["full_steps_per_epoch"] / ref["steps_per_epoch"]
            theirs = statistics.median(ref["epoch_times_s"]) * bscale
            rows.append({"pipeline": f"reference: per-image PIL DataLoader (workers={workers}), "
                         f"{'4' if baseline_views == 'fresh' else '2'} crops per image, amp={baseline_amp}, "
                         f"channels-last={baseline_channels_last}, not compiled", "s/epoch": theirs,
                         "first epoch s (warm-up)": None, "steps timed per epoch": ref["steps_per_epoch"],
                         "steps per full epoch": ref["full_steps_per_epoch"],
                         "images/s": ref["full_steps_per_epoch"] * btrainer.local_batch / theirs})
            result["reference_s_per_epoch"] = theirs
            result["reference_epoch_times_s"] = ref["epoch_times_s"]
            result["speedup_vs_reference"] = theirs / ours
        for row in rows:
            row["ratio to gsg"] = row["s/epoch"] / ours
        result["tables"] = {"Seconds per epoch (training only, no evaluation)": rows}
        if dev.type == "cuda":
            result["meets_target_5s_h100"] = ours <= TARGET_S_PER_EPOCH_H100 if "H100" in str(
                torch.cuda.get_device_name(dev)) else None
        result["full_epoch_images"] = full_steps * batch_size
        result["epochs_per_hour"] = 3600.0 / ours if ours > 0 else math.inf
    return finish(result)
