"""Data path: gsg's batched augmentation against torchvision's per-image PIL pipeline; augmentation's share of a step.

Reference pipeline (what SimSiam's, MoCo v2's and the GSG authors' scripts run): a Dataset that turns each
uint8 array into a PIL image (as ``torchvision.datasets.CIFAR10.__getitem__`` does) and applies a
torchvision.transforms v1 ``Compose`` twice (two views), in a ``torch.utils.data.DataLoader`` with worker
processes and the default collate. Recipes as the paper's Appendix B:

- CIFAR: RandomResizedCrop(32, scale=(0.08, 1)), RandomHorizontalFlip, RandomApply([ColorJitter(0.4, 0.4, 0.4,
  0.1)], p=0.8), RandomGrayscale(0.2), ToTensor, Normalize;
- ImageNet: RandomResizedCrop(224, scale=(0.2, 1)), RandomApply([ColorJitter(...)], p=0.8), RandomGrayscale(0.2),
  RandomApply([GaussianBlur(23, (0.1, 2))], p=0.5), RandomHorizontalFlip, ToTensor, Normalize.

Ours: ``gsg.data.views.BatchAugment`` on a uint8 batch, the call ``Trainer.views_and_loss`` makes (twice per
step). Both start from decoded uint8 images held in memory (JPEG decoding is the same PIL work in both
pipelines and is left out). The ImageNet source images are ``imagenet_source`` px squares: gsg's image-folder
loader decodes each file to a ``data.image_size`` square before augmenting.

"Images per second per core" counts augmented views. Ours runs in the main process with ``threads`` torch
threads; the reference with ``workers`` = 0 (main process, one core) and with ``workers`` processes, each
single-threaded as DataLoader workers are. Per core = images/s divided by the cores used.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from gsg.bench.report import (
    finish,
    interleaved_times,
    machine_info,
    resolve_device,
    summarize_times,
    synchronize,
    usable_cores,
)
from gsg.bench.steps import bench_config, first_batch, model_defaults, profile_step, train_step
from gsg.data.datasets import IMAGENET_MEAN, IMAGENET_STD
from gsg.data.views import BatchAugment, blur_kernel_size, make_recipe
from gsg.train.loop import Trainer

TARGET_AUG_SHARE = 0.10  # the target: augmentation at most 10% of a training step


def torchvision_transform(recipe: str, size: int, mean: tuple[float, ...] = IMAGENET_MEAN,
                          std: tuple[float, ...] = IMAGENET_STD) -> Any:
    """The reference per-image transform (torchvision.transforms v1) of a recipe, as the official scripts."""
    import torchvision.transforms as T

    jitter = T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)
    if recipe == "cifar":
        ops = [T.RandomResizedCrop(size, scale=(0.08, 1.0)), T.RandomHorizontalFlip(), jitter,
               T.RandomGrayscale(p=0.2)]
    elif recipe == "imagenet":
        k = blur_kernel_size(size)  # the kernel gsg uses (23 px at 224), as SimSiam's ~10% of the side
        ops = [T.RandomResizedCrop(size, scale=(0.2, 1.0)), jitter, T.RandomGrayscale(p=0.2),
               T.RandomApply([T.GaussianBlur(k, sigma=(0.1, 2.0))], p=0.5), T.RandomHorizontalFlip()]
    else:
        raise ValueError(f"no reference pipeline for recipe {recipe!r}; use cifar or imagenet")
    return T.Compose([*ops, T.ToTensor(), T.Normalize(mean, std)])


class TwoViewPIL(Dataset[tuple[Tensor, Tensor]]):
    """uint8 HWC arrays -> PIL per item -> two independently augmented views (SimSiam's TwoCropsTransform)."""

    def __init__(self, images_hwc: np.ndarray, transform: Any) -> None:
        self.images, self.transform = images_hwc, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        from PIL import Image

        img = Image.fromarray(self.images[i])
        return self.transform(img), self.transform(img)


def random_images(n: int, size: int, channels: int = 3, seed: int = 0) -> Tensor:
    """uint8 (n, C, size, size) noise. Augmentation cost does not depend on pixel values (no data-dependent
    branches in either pipeline), so noise times the same work as photographs."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)


def reference_throughput(images: Tensor, recipe: str, size: int, *, batch_size: int, workers: int,
                         batches: int, warmup_batches: int = 1) -> dict[str, float]:
    """Views per second of the torchvision DataLoader pipeline over ``batches`` batches (after warm-up)."""
    hwc = images.permute(0, 2, 3, 1).contiguous().numpy()
    ds = TwoViewPIL(hwc, torchvision_transform(recipe, size))
    need = (batches + warmup_batches) * batch_size
    if len(ds) < need:  # cycle the images so that every batch is full
        reps = math.ceil(need / len(ds))
        ds = TwoViewPIL(np.concatenate([hwc] * reps), ds.transform)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                        persistent_workers=False)
    it = iter(loader)
    for _ in range(warmup_batches):  # worker start-up and the first batch's latency are not throughput
        next(it)
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        v1, v2 = next(it)
        n += v1.shape[0] + v2.shape[0]
    elapsed = time.perf_counter() - t0
    del it
    return {"views": n, "seconds": elapsed, "images_per_s": n / elapsed}


def _with_threads(threads: int, fn: Callable[[], object]) -> Callable[[], object]:
    def call() -> object:
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return fn()
        finally:
            torch.set_num_threads(old)

    return call


def run(*, device: str = "auto", quick: bool = False, recipes: tuple[str, ...] = ("cifar", "imagenet"),
        cifar_batch: int = 512, imagenet_batch: int = 64, imagenet_source: int = 224, threads: int = 1,
        workers: int | None = None, repeats: int = 7, reference_batches: int = 6, step_share: bool = True,
        step_repeats: int = 9, compile_augment: bool = False, chunk: int = 0,
        profile: bool = True) -> dict[str, Any]:
    """Augmentation throughput (ours vs torchvision per image) per recipe, and augmentation's share of a step.

    ``threads``: torch threads for our CPU augmentation (1 = per-core number); ``workers``: DataLoader workers
    of the reference's multi-process run (None: the usable cores). ``compile_augment``: also time
    ``torch.compile(BatchAugment.apply)`` (one-off compile time excluded). ``step_share``: time two
    ``BatchAugment`` calls (one step's views) against a whole ``train_step`` of the steps benchmark's
    SimSiam + GSG (reuse) model, round-robin. ``chunk`` > 0: also time ours with the parameters drawn for the
    whole batch but ``BatchAugment.apply`` run on slices of ``chunk`` images (the same output; on a CPU the
    slices' intermediates stay in cache). ``profile``: also list the top ops of one call of ours per recipe.
    """
    dev = resolve_device(device)
    cores = usable_cores()
    workers = cores if workers is None else workers
    if quick:
        cifar_batch, imagenet_batch, imagenet_source = 16, 4, 64
        repeats, reference_batches, step_repeats = 2, 1, 2
        workers = min(workers, 1)
    options = {"device": str(dev), "quick": quick, "recipes": list(recipes), "cifar_batch": cifar_batch,
               "imagenet_batch": imagenet_batch, "imagenet_source": imagenet_source, "threads": threads,
               "workers": workers, "repeats": repeats, "reference_batches": reference_batches,
               "step_share": step_share, "step_repeats": step_repeats, "compile_augment": compile_augment,
               "chunk": chunk, "profile": profile}
    result: dict[str, Any] = {"machine": machine_info(dev), "options": options}
    rows: list[dict[str, Any]] = []
    numbers: dict[str, Any] = {}
    profiles: dict[str, list[dict[str, Any]]] = {}
    for recipe in recipes:
        size, batch, source = (32, cifar_batch, 32) if recipe == "cifar" else (
            64 if quick else 224, imagenet_batch, imagenet_source)
        images_cpu = random_images(max(batch, 256 if not quick else batch), source)
        images = images_cpu[:batch].to(dev)
        # cpu_chunk=0: "ours" is the whole-batch apply; the chunked path is timed apart ("chunks of N")
        aug = BatchAugment(make_recipe(recipe, size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD), cpu_chunk=0)
        gen = torch.Generator(device=dev).manual_seed(0)

        def ours(aug: BatchAugment = aug, images: Tensor = images, gen: torch.Generator = gen) -> object:
            # Two views, as one training step draws them.
            return aug(images, gen), aug(images, gen)

        fns: dict[str, Callable[[], object]] = {"ours": _with_threads(threads, ours) if dev.type == "cpu" else ours}
        if compile_augment:
            compiled_apply = torch.compile(aug.apply)

            def ours_compiled(aug: BatchAugment = aug, images: Tensor = images, gen: torch.Generator = gen,
                              fn: Callable[..., Tensor] = compiled_apply) -> object:
                b, _, h, w = images.shape
                return (fn(images, aug.sample(b, h, w, images.device, gen)),
                        fn(images, aug.sample(b, h, w, images.device, gen)))

            fns["ours (compiled)"] = (_with_threads(threads, ours_compiled) if dev.type == "cpu"
                                      else ours_compiled)
        if chunk > 0:

            def ours_chunked(aug: BatchAugment = aug, images: Tensor = images, gen: torch.Generator = gen) -> object:
                b, _, h, w = images.shape
                views = []
                for _ in range(2):
                    p = aug.sample(b, h, w, images.device, gen)
                    views.append(torch.cat([aug.apply(images[i:i + chunk], p.slice(i, i + chunk))
                                            for i in range(0, b, chunk)]))
                return views

            fns[f"ours (chunks of {chunk})"] = (_with_threads(threads, ours_chunked) if dev.type == "cpu"
                                                else ours_chunked)
        if dev.type == "cpu":
            # The one-core reference runs in this process: interleave it with ours, batch for batch.
            hwc = images_cpu.permute(0, 2, 3, 1).contiguous().numpy()
            ref_ds = TwoViewPIL(hwc, torchvision_transform(recipe, size))
            idx = list(range(batch))

            def reference_one_core(ds: TwoViewPIL = ref_ds, idx: list[int] = idx) -> object:
                pairs = [ds[i % len(ds)] for i in idx]
                return torch.utils.data.default_collate(pairs)

            fns["torchvision, 1 core (workers=0)"] = _with_threads(1, reference_one_core)
        times = interleaved_times(fns, repeats=repeats, warmup=1, device=dev)
        if profile:
            profiles[f"Profile of one call of ours (two views), {recipe} (top ops by self time)"] = profile_step(
                fns["ours"], dev, top=8)
        for name, ts in times.items():
            med = summarize_times(ts)["median_s"]
            ips = 2 * batch / med
            used = threads if name.startswith("ours") and dev.type == "cpu" else 1
            per_core: float | None = ips / used if dev.type == "cpu" or not name.startswith("ours") else None
            rows.append({"recipe": recipe, "pipeline": name, "batch": batch, "views/s": ips,
                         "views/s per core": per_core, "median ms per 2 views of a batch": 1000 * med})
            numbers[f"{recipe}.{name}.views_per_s"] = ips
        if workers > 0:
            ref = reference_throughput(images_cpu, recipe, size, batch_size=batch, workers=workers,
                                       batches=reference_batches)
            rows.append({"recipe": recipe, "pipeline": f"torchvision DataLoader, workers={workers}", "batch": batch,
                         "views/s": ref["images_per_s"], "views/s per core": ref["images_per_s"] / workers,
                         "median ms per 2 views of a batch": 1000 * 2 * batch / ref["images_per_s"]})
            numbers[f"{recipe}.torchvision_workers{workers}.views_per_s"] = ref["images_per_s"]
        ours_pc = next(r["views/s per core"] for r in rows if r["recipe"] == recipe and r["pipeline"] == "ours")
        ref_pc = next((r["views/s per core"] for r in rows if r["recipe"] == recipe
                       and r["pipeline"].startswith("torchvision, 1 core")), None)
        if ours_pc is not None and ref_pc:
            numbers[f"{recipe}.ours_over_torchvision_per_core"] = ours_pc / ref_pc
    result["tables"] = {"Augmentation throughput (two views per image)": rows, **profiles}
    result["throughput"] = numbers
    if step_share:
        result.update(_step_share(dev, quick, step_repeats))
        result["tables"]["Augmentation share of a training step"] = result.pop("share_rows")
    return finish(result)


def _step_share(dev: torch.device, quick: bool, repeats: int) -> dict[str, Any]:
    """Two BatchAugment calls vs a whole SimSiam + GSG (reuse) step of the steps benchmark's model."""
    sizes = model_defaults(dev, quick)
    with tempfile.TemporaryDirectory(prefix="gsg-bench-datapath-") as tmp:
        cfg = bench_config(Path(tmp), method="simsiam", stop_gradient="guided", views="reuse", device=dev, **sizes)
        trainer = Trainer(cfg)
        images = first_batch(trainer)
        step = train_step(trainer)
        gen = torch.Generator(device=dev).manual_seed(1)

        def augment() -> object:
            return trainer.augment(images, gen), trainer.augment(images, gen)

        step(images)
        synchronize(dev)
        times = interleaved_times({"augmentation (2 views)": augment, "whole step": lambda: step(images)},
                                  repeats=repeats, warmup=1, device=dev)
    med = {k: summarize_times(v)["median_s"] for k, v in times.items()}
    share = med["augmentation (2 views)"] / med["whole step"]
    rows = [{"part": k, "median ms": 1000 * v, "share of step": v / med["whole step"]} for k, v in med.items()]
    return {"share_rows": rows, "augmentation_share": share, "augmentation_share_meets_target_0.10":
            share <= TARGET_AUG_SHARE, "share_model": {k: v for k, v in sizes.items()}}
