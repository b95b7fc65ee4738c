"""Deterministic, resumable, shardable batches of (uint8 images, labels, indices) on the training device.

The order of an epoch is a pure function of (seed, epoch): a local ``torch.Generator`` seeded with
``seed * 1000003 + epoch`` permutes the indices (global RNG is never touched), so a resumed run that skips
``start_batch`` batches sees exactly the batches the interrupted run had left.

Distributed sharding, as ``torch.utils.data.DistributedSampler`` does it: the permuted order of the whole
dataset is cut to a multiple of ``world_size`` and rank r takes positions r, r + W, r + 2W, ... .
With ``drop_last`` the order is cut down (the last ``n mod W`` images of the permutation are left out this
epoch) and the last incomplete batch of each rank is dropped; without it the order is padded by repeating its
first images, so a few images appear twice in an epoch, and the last batch may be smaller. Every rank
therefore has the same number of batches, which DistributedDataParallel needs.

Crops made in the workers (``crops=CropSpec(...)``, file-backed datasets: image folders, ImageNet).
RandomResizedCrop must see the full-resolution image, which only the worker that decodes the file has, so
the loader yields V views per image, uint8 (V, B, C, size, size), already cropped and resized; the training
loop then applies the rest of the recipe batched on the device (``BatchAugment(..., cropped=True)``). The
random numbers of every box are drawn in the main process, as the batch's indices are handed to the workers,
from a generator seeded by (seed, rank, epoch, batch number) alone (:func:`crop_uniforms`): not from the
training's augmentation generator, because the DataLoader fetches batches ahead of the step by an amount
that depends on the number of workers. So the views are the same for any ``workers``, and a run resumed at
batch k of an epoch gets exactly the crops the interrupted run would have had. The worker turns each view's
uniforms into a box on the image's own height and width (torchvision's algorithm,
``crops.sample_crop_boxes``) and crops + resizes with PIL (bilinear, antialiased), as torchvision's
RandomResizedCrop does per image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from gsg.data.base import ImageDataset
from gsg.data.crops import CROP_TRIES
from gsg.data.folder import FolderImageDataset
from gsg.data.recipes import Recipe
from gsg.errors import ConfigError, DataError

_SEED_STRIDE = 1000003  # prime: (seed, epoch) pairs map to distinct generator seeds for epoch < 1000003
CROP_DRAWS = 2 * CROP_TRIES + 2  # uniforms per box: CROP_TRIES areas, CROP_TRIES log-ratios, top, left
_CROP_STREAM = 0x63726F70  # "crop": keeps the crop stream apart from other streams derived from the seed


@dataclass(frozen=True)
class CropSpec:
    """RandomResizedCrop(size, scale, ratio) made in the loader's workers, ``views`` crops per image."""

    views: int
    size: int
    scale: tuple[float, float]
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __post_init__(self) -> None:
        if self.views < 1 or self.size < 1:
            raise ConfigError(f"CropSpec needs views >= 1 and size >= 1, got {self.views} and {self.size}")

    @classmethod
    def from_recipe(cls, recipe: Recipe, views: int) -> CropSpec:
        """The crop of an augmentation recipe (its size, scale and ratio), ``views`` times per image."""
        return cls(views=views, size=recipe.size, scale=recipe.crop_scale, ratio=recipe.crop_ratio)


def crop_uniforms(seed: int, rank: int, epoch: int, batch: int, views: int, n: int) -> Tensor:
    """The uniforms (views, n, CROP_DRAWS) of batch number ``batch`` of an epoch: a pure function of its args.

    A CPU ``torch.Generator`` seeded through numpy's SeedSequence of (stream tag, seed, rank, epoch, batch),
    so batches, epochs, ranks and seeds get independent streams.
    """
    entropy = [_CROP_STREAM, seed % 2**64, rank, epoch, batch]
    hi, lo = np.random.SeedSequence(entropy).generate_state(2, np.uint32).tolist()
    g = torch.Generator().manual_seed((hi << 32) | lo)
    return torch.rand((views, n, CROP_DRAWS), generator=g)


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> Tensor:
    """The permutation of range(n) for an epoch: randperm under Generator(seed * 1000003 + epoch)."""
    if not shuffle:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed * _SEED_STRIDE + epoch)
    return torch.randperm(n, generator=g)


def shard(order: Tensor, rank: int, world_size: int, drop_last: bool) -> Tensor:
    """Rank's share: order[rank::W], the order first cut (drop_last) or padded to a multiple of W."""
    n = order.numel()
    if drop_last:
        order = order[: (n // world_size) * world_size]
    else:
        total = math.ceil(n / world_size) * world_size
        if total > n:  # repeat the order as often as needed (only more than once when W > n)
            order = order.repeat(math.ceil(total / n))[:total]
    return order[rank::world_size]


class _IndexBatches(Sampler[Any]):
    """Yields the index lists the loader set for the current pass (read in the main process at each iter).

    With ``uniforms`` set, each item is (indices, uniforms(batch number, len(indices))), computed here, in the
    main process, as the DataLoader hands the batch to a worker; ``first`` is the first batch's number.
    """

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.first = 0
        self.uniforms: Callable[[int, int], Tensor] | None = None

    def __iter__(self) -> Iterator[Any]:
        batches, first, uniforms = list(self.batches), self.first, self.uniforms
        if uniforms is None:
            return iter(batches)
        return ((b, uniforms(first + k, len(b))) for k, b in enumerate(batches))

    def __len__(self) -> int:
        return len(self.batches)


class _BatchFetch(Dataset[tuple[Tensor, Tensor, Tensor]]):
    """Maps one list of indices (and, with crops, the batch's crop uniforms) to a whole batch, so each worker
    decodes a full batch."""

    def __init__(self, dataset: ImageDataset, crops: CropSpec | None = None) -> None:
        self.dataset, self.crops = dataset, crops

    def __getitem__(self, item: Any) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        if self.crops is None:
            idx = torch.tensor(item, dtype=torch.int64)
            return self.dataset.get(idx), self.dataset.labels[idx], idx
        batch, u = item
        idx = torch.tensor(batch, dtype=torch.int64)
        c = self.crops
        views, _ = self.dataset.get_crops(idx, u, c.size, c.scale, c.ratio)  # type: ignore[attr-defined]
        return views, self.dataset.labels[idx], idx

    def __len__(self) -> int:
        return len(self.dataset)


class BatchLoader:
    """Batches of (images uint8 (B, C, S, S) on device, labels int64 on device, dataset indices int64 on CPU).

    In-memory datasets are indexed directly (no copy when the dataset already lives on ``device``) and
    ``workers`` is ignored; file-backed datasets go through a ``torch.utils.data.DataLoader`` with
    ``workers`` persistent processes, each decoding whole batches, pinned memory for CUDA and non-blocking
    copies.

    ``crops``: for file-backed datasets (image folders), the images are instead ``crops.views`` random
    resized crops per image made in the workers, uint8 (V, B, C, size, size) (module docstring);
    in-memory datasets ignore it (their crops are made batched on the device) and ``precropped`` is False.
    """

    def __init__(self, dataset: ImageDataset, batch_size: int, *, shuffle: bool, drop_last: bool,
                 seed: int = 0, rank: int = 0, world_size: int = 1, device: str | torch.device = "cpu",
                 workers: int = 0, crops: CropSpec | None = None) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if workers < 0:
            raise ConfigError(f"workers must be >= 0, got {workers}")
        n = len(dataset)
        if n == 0:
            raise DataError(f"dataset {dataset.name!r} is empty; check --data-dir and the split")
        self.dataset, self.batch_size, self.shuffle, self.drop_last = dataset, batch_size, shuffle, drop_last
        self.seed, self.rank, self.world_size, self.workers = seed, rank, world_size, workers
        self.device = torch.device(device)
        self.epoch = 0
        self.samples_per_rank = n // world_size if drop_last else math.ceil(n / world_size)
        if drop_last and self.samples_per_rank < batch_size:
            per = f" ({self.samples_per_rank} per process over {world_size})" if world_size > 1 else ""
            raise DataError(f"batch size {batch_size} is larger than dataset {dataset.name!r} with {n} "
                            f"images{per}, so dropping incomplete batches leaves none: use --batch-size "
                            f"{self.samples_per_rank} or smaller")
        self.crops = None if dataset.in_memory else crops
        if self.crops is not None and not isinstance(dataset, FolderImageDataset):
            raise ConfigError(f"crops in the loader need an image folder, got {type(dataset).__name__}")
        self._sampler: _IndexBatches | None = None
        self._loader: DataLoader | None = None

    @property
    def precropped(self) -> bool:
        """True when batches hold the views cropped in the workers, (V, B, C, size, size)."""
        return self.crops is not None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration follows."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.drop_last:
            return self.samples_per_rank // self.batch_size
        return math.ceil(self.samples_per_rank / self.batch_size)

    def epoch_batches(self) -> list[Tensor]:
        """This rank's index batches for the current epoch (CPU int64 tensors)."""
        order = epoch_order(len(self.dataset), self.seed, self.epoch, self.shuffle)
        mine = shard(order, self.rank, self.world_size, self.drop_last)
        batches = list(torch.split(mine, self.batch_size))
        return batches[: len(self)]

    def iterate(self, start_batch: int = 0) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """The current epoch's batches from batch number start_batch on (to resume an interrupted epoch)."""
        if not 0 <= start_batch <= len(self):
            raise ConfigError(f"start_batch must be in [0, {len(self)}], got {start_batch}")
        batches = self.epoch_batches()[start_batch:]
        if self.dataset.in_memory:
            yield from self._iterate_memory(batches)
        else:
            yield from self._iterate_workers(batches, start_batch)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        return self.iterate(0)

    def _iterate_memory(self, batches: list[Tensor]) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        labels_all = self.dataset.labels
        # The epoch's order goes to the data's device in one copy, not two blocking copies per batch
        # (a host-device sync per batch when the dataset lives on the GPU).
        store = labels_all.device
        on_store = torch.cat(batches).to(store).split([len(b) for b in batches]) if batches else ()
        for idx, idx_store in zip(batches, on_store, strict=True):
            images = self.dataset.get(idx_store).to(self.device, non_blocking=True)
            labels = labels_all[idx_store].to(self.device, non_blocking=True)
            yield images, labels, idx

    def crop_uniforms(self, batch: int, n: int) -> Tensor:
        """The crop uniforms of batch number ``batch`` of the current epoch (see :func:`crop_uniforms`)."""
        assert self.crops is not None
        return crop_uniforms(self.seed, self.rank, self.epoch, batch, self.crops.views, n)

    def _iterate_workers(self, batches: list[Tensor], first: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        if self._loader is None:  # built once: persistent workers survive across epochs
            self._sampler = _IndexBatches()
            self._loader = DataLoader(_BatchFetch(self.dataset, self.crops), batch_size=None,
                                      sampler=self._sampler, num_workers=self.workers,
                                      pin_memory=self.device.type == "cuda", persistent_workers=self.workers > 0)
        assert self._sampler is not None
        # Read when the DataLoader iterator starts; the uniforms are a function of this epoch and batch number.
        self._sampler.batches = [b.tolist() for b in batches]
        self._sampler.first = first
        if self.crops is not None:
            epoch, views = self.epoch, self.crops.views
            self._sampler.uniforms = lambda k, n: crop_uniforms(self.seed, self.rank, epoch, k, views, n)
        for images, labels, idx in self._loader:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True), idx
