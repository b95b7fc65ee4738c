"""SimCLR's and MoCo's cross-process parts with 2 real gloo processes: they compute what one process computes on
the concatenated batch (SimCLR: loss and DDP-averaged gradient; MoCo: loss and queue)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from gsg.ssl.methods import moco_loss, simclr_loss
from gsg.ssl.queue import KeyQueue
from gsg.ssl.siamese import SiameseOutput
from gsg.train.distributed import DistInfo

WORLD, LOCAL, DIM, K = 2, 4, 5, 16


def _data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n = WORLD * LOCAL
    return {name: torch.randn(n, DIM, generator=g) for name in ("za", "zb", "q1", "k1", "q2", "k2")}


def _out(za: torch.Tensor, zb: torch.Tensor, ka: torch.Tensor | None = None,
         kb: torch.Tensor | None = None) -> SiameseOutput:
    t = [ka if ka is not None else za.detach(), kb if kb is not None else zb.detach()]
    return SiameseOutput(z=[za, zb], p=[za, zb], t=t)


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    info = DistInfo(rank=rank, world_size=WORLD)
    d = _data()
    rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
    za, zb = d["za"][rows].clone().requires_grad_(), d["zb"][rows].clone().requires_grad_()
    res = simclr_loss(_out(za, zb), 0.5, info)
    res.loss.backward()
    queue = KeyQueue(K, DIM, generator=torch.Generator().manual_seed(1))
    moco = []
    for step in ("1", "2"):
        # view 1 of the queries, view 2 of the keys: the asymmetric MoCo v2 loss q1 -> k2
        q = d["q" + step][rows].clone().requires_grad_()
        moco.append(float(moco_loss(_out(q, q.detach(), kb=d["k" + step][rows]), queue, 0.2, dist=info).loss))
    torch.save({"simclr_loss": float(res.loss), "grad_a": za.grad, "grad_b": zb.grad, "moco": moco,
                "keys": queue.keys, "ptr": queue.ptr}, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, object]]:
    tmp = tmp_path_factory.mktemp("gloo")
    # fork: the workers need no fresh interpreter (spawn re-imports torch and gsg, ~15 s a process here)
    mp.start_processes(_worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD, join=True, start_method="fork")
    return [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD)]


def test_simclr_over_two_processes_equals_one_process_on_the_whole_batch(ranks: list[dict[str, object]]) -> None:
    d = _data()
    za, zb = d["za"].clone().requires_grad_(), d["zb"].clone().requires_grad_()
    single = simclr_loss(_out(za, zb), 0.5)
    single.loss.backward()
    # each process's loss is the mean over its own anchors against the whole batch's negatives
    losses = [r["simclr_loss"] for r in ranks]
    assert sum(losses) / WORLD == pytest.approx(float(single.loss.detach()), abs=1e-6)  # type: ignore[arg-type]
    assert losses[0] != pytest.approx(losses[1])
    # and the gradient reaches each process's part from both processes' losses: averaged over processes (DDP)
    # it is exactly the single-process gradient, negatives held by the other process included
    for r, res in enumerate(ranks):
        rows = slice(r * LOCAL, (r + 1) * LOCAL)
        torch.testing.assert_close(res["grad_a"] / WORLD, za.grad[rows])  # type: ignore[operator]
        torch.testing.assert_close(res["grad_b"] / WORLD, zb.grad[rows])  # type: ignore[operator]


def test_moco_queues_are_identical_and_hold_both_processes_keys(ranks: list[dict[str, object]]) -> None:
    d = _data()
    assert torch.equal(ranks[0]["keys"], ranks[1]["keys"])  # type: ignore[arg-type]
    assert int(ranks[0]["ptr"]) == int(ranks[1]["ptr"]) == (2 * WORLD * LOCAL) % K  # type: ignore[call-overload]
    keys = ranks[0]["keys"]
    # step 1's keys of rank 0 then rank 1 (the global batch), then step 2's
    torch.testing.assert_close(keys[:WORLD * LOCAL], F.normalize(d["k1"], dim=1))  # type: ignore[index]
    torch.testing.assert_close(keys[WORLD * LOCAL:], F.normalize(d["k2"], dim=1))  # type: ignore[index]
    # one process on the concatenated batch: the same queue and the same (mean) loss at every step
    queue = KeyQueue(K, DIM, generator=torch.Generator().manual_seed(1))
    for i, step in enumerate(("1", "2")):
        q = d["q" + step]
        single = float(moco_loss(_out(q, q, kb=d["k" + step]), queue, 0.2).loss)
        mean = sum(r["moco"][i] for r in ranks) / WORLD  # type: ignore[index]
        assert mean == pytest.approx(single, abs=1e-6)
    torch.testing.assert_close(queue.keys, keys)
