"""File work done once under torch.distributed: rank 0 does it first, the other ranks reuse its result.

Used by ``gsg.data.datasets.load_dataset(..., collective=True)`` for downloads and image-folder listings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from gsg.errors import DataError

_T = TypeVar("_T")


def _process_group() -> tuple[int, int] | None:
    """(rank, world size) of an initialised multi-process group, else None."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank(), dist.get_world_size()
    return None


def _rank0_first(work: Callable[..., _T], collective: bool) -> _T:
    """Run ``work(first=True)`` on rank 0 only, then ``work(first=False)`` on the other ranks with rank 0's
    result (a DataError on rank 0 is raised on every rank). Without a process group: ``work(first=True)``."""
    group = _process_group() if collective else None
    if group is None:
        return work(first=True)
    import torch.distributed as dist

    box: list[object] = [None]
    if group[0] == 0:
        try:
            box[0] = ("ok", work(first=True))
        except DataError as exc:
            box[0] = ("error", str(exc))
            dist.broadcast_object_list(box, src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]  # type: ignore[misc]
    if kind == "error":
        raise DataError(f"{value} (reported by rank 0)")
    return value if group[0] == 0 else work(first=False, shared=value)  # type: ignore[no-any-return]
