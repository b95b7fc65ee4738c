"""Process-group set-up for torchrun (DistributedDataParallel, one process per device)."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device_kind: str) -> DistInfo:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK).

    NCCL for CUDA, gloo for CPU. Without those variables this is a single process and nothing is set up.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if device_kind == "cuda":
            # modulo: launchers that give each task one visible GPU (SLURM --gpus-per-task=1) set LOCAL_RANK
            # to the task's index on the node, which is not a valid ordinal when only one GPU is visible.
            torch.cuda.set_device(local % max(torch.cuda.device_count(), 1))
        timeout = datetime.timedelta(minutes=30)
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
        if restart is not None and "MASTER_ADDR" in os.environ:
            # torchrun keeps one store for every restart round: without a per-round prefix, restarted workers
            # read the dead workers' gloo addresses (connectFullMesh: "Connection refused").
            agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
            store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                                  is_master=rank == 0 and not agent_store, timeout=timeout)
            dist.init_process_group(backend=backend, store=dist.PrefixStore(f"gsg/round_{restart}", store),
                                    rank=rank, world_size=world, timeout=timeout)
        else:
            dist.init_process_group(backend=backend, timeout=timeout)
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def wrap_ddp(model: nn.Module, device: torch.device, info: DistInfo) -> tuple[nn.Module, bool]:
    """``model`` in DistributedDataParallel for a multi-process run; returns (module to call, SyncBatchNorm?).

    CUDA: BatchNorm becomes SyncBatchNorm (statistics over the global batch, as the papers train) and
    ``broadcast_buffers=False``. Every buffer is then equal on all ranks without a broadcast: SyncBN's running
    statistics come from the all-reduced batch statistics; BYOL's target (parameters and its SyncBN buffers) is
    an EMA of equal online parameters and sees equal statistics; DirectPred's F̂ is all-reduced in ``observe``
    and W_p computed from it. The default (True) would re-send every buffer, DirectPred's two d x d matrices
    included (32 MB at d = 2048), from rank 0 before every forward.
    CPU (gloo): SyncBatchNorm has no CPU kernels, so BatchNorm stays per process and the buffers are broadcast
    as DDP does by default (the checkpoint and the kNN monitor use rank 0's).
    """
    if not info.enabled:
        return model, False
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        module = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(module, device_ids=[device.index], broadcast_buffers=False), True
    return DistributedDataParallel(model), False


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``t`` over processes (returns ``t`` itself for a single process)."""
    if not info.enabled:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / info.world_size


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (any picklable object; the others' ``obj`` is ignored)."""
    if not info.enabled:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flag: bool | torch.Tensor, info: DistInfo, device: torch.device | None = None) -> torch.Tensor:
    """A 0-d bool tensor: whether ``flag`` is true on any rank (``flag`` itself for a single process)."""
    t = flag if isinstance(flag, torch.Tensor) else torch.tensor(bool(flag), device=device)
    if not info.enabled:
        return t.bool()
    t = t.to(torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.bool()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
