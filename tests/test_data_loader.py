"""BatchLoader: deterministic (seed, epoch) order, exact resume, disjoint shards, worker path == get()."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gsg.data.datasets import FolderImageDataset, TensorImageDataset, load_dataset
from gsg.data.loader import BatchLoader, epoch_order, shard
from gsg.errors import DataError


def tiny(n: int = 23) -> TensorImageDataset:
    """Image i is filled with the value i, so images identify their index."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    return TensorImageDataset("tiny", images, torch.arange(n) % 3, ["a", "b", "c"], (0.5,), (0.25,))


def indices(loader: BatchLoader, start: int = 0) -> list[int]:
    return [i for _, _, idx in loader.iterate(start) for i in idx.tolist()]


def test_every_index_once_and_batches_consistent() -> None:
    ds = tiny(23)
    loader = BatchLoader(ds, 5, shuffle=True, drop_last=False, seed=3)
    seen = []
    for images, labels, idx in loader:
        assert images.dtype == torch.uint8 and labels.dtype == torch.int64 and idx.dtype == torch.int64
        assert torch.equal(images[:, 0, 0, 0].long(), idx) and torch.equal(labels, idx % 3)
        seen += idx.tolist()
    assert sorted(seen) == list(range(23)) and len(loader) == 5
    assert seen != list(range(23))  # shuffled
    dropped = BatchLoader(ds, 5, shuffle=True, drop_last=True, seed=3)
    sizes = [len(idx) for _, _, idx in dropped]
    assert sizes == [5, 5, 5, 5] and len(dropped) == 4
    ordered = BatchLoader(ds, 5, shuffle=False, drop_last=False)
    assert indices(ordered) == list(range(23))


def test_order_is_a_function_of_seed_and_epoch() -> None:
    ds = tiny(40)
    a, b = (BatchLoader(ds, 8, shuffle=True, drop_last=True, seed=1) for _ in range(2))
    state = torch.get_rng_state()
    e0 = indices(a)
    a.set_epoch(1)
    e1 = indices(a)
    b.set_epoch(1)
    assert indices(b) == e1 and e0 != e1
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    other_seed = BatchLoader(ds, 8, shuffle=True, drop_last=True, seed=2)
    assert indices(other_seed) != e0
    g = torch.Generator().manual_seed(1 * 1000003 + 1)
    assert e1 == torch.randperm(40, generator=g).tolist()
    assert torch.equal(epoch_order(40, 1, 1), torch.tensor(e1))


@pytest.mark.parametrize("drop_last", [True, False])
def test_resume_equals_tail(drop_last: bool) -> None:
    loader = BatchLoader(tiny(23), 4, shuffle=True, drop_last=drop_last, seed=5)
    loader.set_epoch(7)
    full = [idx.tolist() for _, _, idx in loader.iterate()]
    for k in (0, 2, len(full)):
        fresh = BatchLoader(tiny(23), 4, shuffle=True, drop_last=drop_last, seed=5)
        fresh.set_epoch(7)
        assert [idx.tolist() for _, _, idx in fresh.iterate(start_batch=k)] == full[k:]


def test_two_ranks_disjoint_and_covering() -> None:
    ds = tiny(20)
    shards = [indices(BatchLoader(ds, 3, shuffle=True, drop_last=False, seed=0, rank=r, world_size=2))
              for r in range(2)]
    assert set(shards[0]).isdisjoint(shards[1]) and sorted(shards[0] + shards[1]) == list(range(20))
    odd = tiny(21)
    dropped = [BatchLoader(odd, 2, shuffle=True, drop_last=True, rank=r, world_size=2) for r in range(2)]
    got = [indices(d) for d in dropped]
    assert len(dropped[0]) == len(dropped[1]) == 5 and set(got[0]).isdisjoint(got[1])
    padded = [BatchLoader(odd, 4, shuffle=True, drop_last=False, rank=r, world_size=2) for r in range(2)]
    got = [indices(p) for p in padded]
    assert len(got[0]) == len(got[1]) == 11 and set(got[0]) | set(got[1]) == set(range(21))
    order = epoch_order(21, 0, 0)
    assert got[1][-1] == order[0].item()  # padding repeats the start of the order, as DistributedSampler


def test_shard_matches_distributed_sampler() -> None:
    from torch.utils.data.distributed import DistributedSampler

    for n, world, drop in ((10, 3, False), (10, 3, True), (2, 3, False)):
        for rank in range(world):
            ref = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False, drop_last=drop)
            assert shard(torch.arange(n), rank, world, drop).tolist() == list(ref)


def test_batch_larger_than_dataset() -> None:
    with pytest.raises(DataError, match=r"23 images.*--batch-size 23 or smaller"):
        BatchLoader(tiny(23), 64, shuffle=True, drop_last=True)
    with pytest.raises(DataError, match=r"11 per process over 2.*--batch-size 11"):
        BatchLoader(tiny(23), 16, shuffle=True, drop_last=True, rank=1, world_size=2)
    assert len(BatchLoader(tiny(23), 64, shuffle=True, drop_last=False)) == 1


def test_folder_dataset_through_workers_matches_get(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(10):
        arr = rng.integers(0, 256, (6 + i % 3, 7, 3), dtype=np.uint8)  # mixed sizes: resize + crop
        folder = tmp_path / f"class{i % 2}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(arr).save(folder / f"{i}.png")
    ds = load_dataset("imagefolder", data_dir=tmp_path, image_size=5)
    assert isinstance(ds, FolderImageDataset)
    loader = BatchLoader(ds, 4, shuffle=True, drop_last=False, seed=2, workers=2)
    for epoch in (0, 1):  # persistent workers see the new epoch's order
        loader.set_epoch(epoch)
        expected = loader.epoch_batches()
        got = list(loader)
        assert [idx.tolist() for _, _, idx in got] == [b.tolist() for b in expected]
        for images, labels, idx in got:
            assert torch.equal(images, ds.get(idx)) and torch.equal(labels, ds.labels[idx])
    tail = [idx.tolist() for _, _, idx in loader.iterate(start_batch=2)]
    assert tail == [b.tolist() for b in loader.epoch_batches()[2:]]
