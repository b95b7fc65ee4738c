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
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from gsg.data.datasets import ImageDataset
from gsg.errors import ConfigError, DataError

_SEED_STRIDE = 1000003  # prime: (seed, epoch) pairs map to distinct generator seeds for epoch < 1000003


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


class _IndexBatches(Sampler[list[int]]):
    """Yields the index lists the loader set for the current pass (read in the main process at each iter)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(list(self.batches))

    def __len__(self) -> int:
        return len(self.batches)


class _BatchFetch(Dataset[tuple[Tensor, Tensor, Tensor]]):
    """Maps one list of indices to a whole batch, so each worker decodes a full batch."""

    def __init__(self, dataset: ImageDataset) -> None:
        self.dataset = dataset

    def __getitem__(self, batch: list[int]) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        idx = torch.tensor(batch, dtype=torch.int64)
        return self.dataset.get(idx), self.dataset.labels[idx], idx

    def __len__(self) -> int:
        return len(self.dataset)


class BatchLoader:
    """Batches of (images uint8 (B, C, S, S) on device, labels int64 on device, dataset indices int64 on CPU).

    In-memory datasets are indexed directly (no copy when the dataset already lives on ``device``) and
    ``workers`` is ignored; file-backed datasets go through a ``torch.utils.data.DataLoader`` with
    ``workers`` persistent processes, each decoding whole batches, pinned memory for CUDA and non-blocking
    copies.
    """

    def __init__(self, dataset: ImageDataset, batch_size: int, *, shuffle: bool, drop_last: bool,
                 seed: int = 0, rank: int = 0, world_size: int = 1, device: str | torch.device = "cpu",
                 workers: int = 0) -> None:
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
        self._sampler: _IndexBatches | None = None
        self._loader: DataLoader | None = None

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
            yield from self._iterate_workers(batches)

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

    def _iterate_workers(self, batches: list[Tensor]) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        if self._loader is None:  # built once: persistent workers survive across epochs
            self._sampler = _IndexBatches()
            self._loader = DataLoader(_BatchFetch(self.dataset), batch_size=None, sampler=self._sampler,
                                      num_workers=self.workers, pin_memory=self.device.type == "cuda",
                                      persistent_workers=self.workers > 0)
        assert self._sampler is not None
        self._sampler.batches = [b.tolist() for b in batches]  # read when the DataLoader iterator starts
        for images, labels, idx in self._loader:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True), idx
