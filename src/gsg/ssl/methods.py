"""What each method does with the model's outputs: the seam between the Siamese model and the loop.

A method is where its targets come from (gsg.ssl.siamese) plus which loss it applies:

| method  | targets                            | loss                                                     |
|---------|------------------------------------|----------------------------------------------------------|
| simsiam | the online projections, detached   | a stop-gradient policy (gsg.ssl.stopgrad; GSG: guided)   |
| byol    | an EMA encoder                     | a stop-gradient policy                                   |
| simclr  | the online projections (no target) | NT-Xent over the 2B views of the batch (ssl.contrastive) |
| moco    | an EMA encoder + a queue of keys   | InfoNCE of each query against its key and the queue      |

The non-contrastive methods' loss is applied by the loop (its stop-gradient policy needs the pairing);
:func:`contrastive_loss` is the explicit contrastive one. Under DDP, SimCLR's negatives are the global batch
(gathered, with gradients to every process's part) and MoCo enqueues every process's keys, so a
2-process run computes what one process would on the concatenated batch.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import Tensor

from gsg.config import (
    CONTRASTIVE_METHODS,
    Config,
    SSLConfig,
    check_queue_size,
    resolved_queue_size,
    resolved_temperature,
    validate,
)
from gsg.errors import ConfigError
from gsg.ssl.contrastive import info_nce_queue, nt_xent
from gsg.ssl.ema import momentum_at
from gsg.ssl.queue import KeyQueue
from gsg.ssl.siamese import SiameseOutput
from gsg.ssl.stopgrad import POLICIES, PolicyOutput
from gsg.train.distributed import DistInfo

log = logging.getLogger("gsg.ssl")


def is_contrastive(method: str) -> bool:
    return method in CONTRASTIVE_METHODS


def check_method(cfg: Config, *, world_size: int, image_size: int, n_images: int) -> None:
    """The checks a run makes once its data (image size, number of images) and processes are known."""
    ssl = cfg.ssl
    if not is_contrastive(ssl.method):
        if ssl.stop_gradient not in POLICIES:
            raise ConfigError(f"unknown stop-gradient {ssl.stop_gradient!r}; choose one of {', '.join(POLICIES)}")
        return
    validate(cfg)  # a config built in code, not through load_config, still gets the contrastive rules
    local = cfg.optim.batch_size // world_size
    if local < 2:
        raise ConfigError(f"{ssl.method} with a global batch of {cfg.optim.batch_size} over {world_size} processes "
                          f"gives {local} image(s) per process, and BatchNorm needs at least 2: use a global batch of "
                          f"at least {2 * world_size}")
    if ssl.method == "moco":
        k = resolved_queue_size(ssl, image_size)
        check_queue_size(ssl, k, cfg.optim.batch_size, default=ssl.queue_size is None)
        if k >= n_images:
            log.warning("the MoCo queue (%d keys) is not smaller than the data set (%d images): its negatives "
                        "include older keys of the query's own image; set ssl.queue_size below %d", k, n_images,
                        n_images)


def target_momentum(ssl: SSLConfig, step: int, total_steps: int) -> float:
    """The EMA momentum after ``step``: MoCo v2's constant ``moco_momentum``, BYOL's ``ema_momentum`` schedule."""
    if ssl.method == "moco":
        return momentum_at(step, total_steps, ssl.moco_momentum, "constant")
    return momentum_at(step, total_steps, ssl.ema_momentum, ssl.ema_schedule)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums the gradients of every process and returns this process's
    slice, so that each process's part gets the gradient of every process's loss (as SimCLR's cross-replica
    concatenation, whose gradient is a cross-replica sum). With DDP's gradient average this is exactly the
    gradient of the loss on the concatenated batch."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        world, rank = torch_dist.get_world_size(), torch_dist.get_rank()
        parts = [torch.empty_like(x) for _ in range(world)]
        torch_dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.n = rank, x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        torch_dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def gather_with_grad(x: Tensor, dist: DistInfo | None) -> Tensor:
    """Every process's ``x`` concatenated in rank order, differentiable (see :class:`_GatherWithGrad`)."""
    if dist is None or not dist.enabled:
        return x
    return _GatherWithGrad.apply(x)  # type: ignore[no-any-return]


@torch.no_grad()
def gather(x: Tensor, dist: DistInfo | None) -> Tensor:
    """Every process's ``x`` concatenated in rank order, without gradient (MoCo's keys)."""
    if dist is None or not dist.enabled:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.world_size)]
    torch_dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def simclr_loss(out: SiameseOutput, temperature: float, dist: DistInfo | None = None) -> PolicyOutput:
    """NT-Xent of this process's 2b views against the 2B views of the global batch."""
    z_a, z_b = out.z[0], out.z[1]
    b = z_a.shape[0]
    rows = None
    if dist is not None and dist.enabled:
        both = gather_with_grad(torch.cat([z_a, z_b], dim=1), dist)  # one collective for both views
        z_a, z_b = both[:, :z_a.shape[1]], both[:, z_a.shape[1]:]
        rows = slice(dist.rank * b, (dist.rank + 1) * b)
    per = nt_xent(z_a, z_b, temperature, rows=rows)
    return PolicyOutput(loss=per.mean(), per_sample=per)


def moco_loss(out: SiameseOutput, queue: KeyQueue, temperature: float, *, symmetric: bool = False,
              dist: DistInfo | None = None) -> PolicyOutput:
    """InfoNCE of the queries q1 (view 1, online) against their keys k2 (view 2, key encoder) and the queue;
    ``symmetric`` also q2 → k1 and averages the two. Then enqueues this step's keys of every process.

    The logits use a copy of the queue, so that enqueueing before the backward pass is safe (MoCo's official
    code also enqueues in its forward).
    """
    negatives = queue.keys.clone()
    per = info_nce_queue(out.z[0], out.t[1], negatives, temperature)
    keys = [out.t[1]]
    if symmetric:
        per = 0.5 * (per + info_nce_queue(out.z[1], out.t[0], negatives, temperature))
        keys.append(out.t[0])
    queue.enqueue(torch.cat([gather(k.detach(), dist) for k in keys]))  # [global k2 (, global k1)]
    return PolicyOutput(loss=per.mean(), per_sample=per, negatives=negatives)


def contrastive_loss(out: SiameseOutput, ssl: SSLConfig, *, image_size: int, queue: KeyQueue | None,
                     dist: DistInfo | None = None) -> PolicyOutput:
    """The loss of an explicit contrastive method (simclr, moco) on one step's model outputs."""
    temperature = resolved_temperature(ssl, image_size)
    if ssl.method == "simclr":
        return simclr_loss(out, temperature, dist)
    if ssl.method == "moco":
        if queue is None:
            raise ConfigError("moco needs the model's key queue (build the model with build_model(..., ssl=cfg.ssl))")
        return moco_loss(out, queue, temperature, symmetric=ssl.moco_symmetric, dist=dist)
    raise ConfigError(f"{ssl.method!r} is not a contrastive method; choose one of {', '.join(CONTRASTIVE_METHODS)}")


__all__ = ["check_method", "contrastive_loss", "gather", "gather_with_grad", "is_contrastive", "moco_loss",
           "simclr_loss", "target_momentum"]
