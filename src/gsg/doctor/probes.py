"""Measurements the doctor reports: host reads per training step, and how often bf16 flips GSG's choice."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from gsg.config import load_config
from gsg.data.datasets import synthetic_images
from gsg.data.views import BatchAugment, make_recipe
from gsg.ssl.build import build_model
from gsg.ssl.stopgrad import derangement, pair_distances, select_cases
from gsg.train.precision import float32_heads

HOST_READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero")


class HostReads(TorchFunctionMode):
    """Counts tensor → Python conversions (``.item()``, ``bool(t)``, ...): each waits for the GPU on CUDA.

    A CPU stand-in for CUDA's sync-debug mode: it sees the loop's own reads, not syncs inside kernels (eigh's
    error check, ``nonzero``'s size), which only ``torch.cuda.set_sync_debug_mode`` reports.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def gsg_flip_rates(device: torch.device, *, batch: int = 512, image_size: int = 32, width: float = 0.25,
                   proj_dim: int = 512, seed: int = 0, common: float = 10.0) -> dict[str, dict[str, float]]:
    """Share of pairs whose GSG case differs from the float32 decision, per precision scheme (F12).

    A SimSiam ResNet-18 (random init, train-mode BatchNorm, as in a training step) embeds two augmented views
    of ``batch`` synthetic images; pairs come from a derangement, GSG's case is the argmin of the four
    projection distances (``select_cases("guided")``). Schemes: ``full_autocast`` (everything under bf16
    autocast: the projections arrive rounded to bf16), ``backbone_bf16`` (bf16 backbone, float32 heads, what
    training does since F12) and, on CUDA, ``tf32`` (float32 with TF32 matmuls, what ``amp=off`` gets). For
    ``proj_last_bn`` "plain" (BN-standardised projections; BatchNorm runs in float32 under autocast, so
    they arrive in float32 either way) and "none" (a Linear last: bf16 projections under full autocast);
    and "common": the "none" projections plus a shared vector, ``common`` times their spread (as near
    collapse, when every projection carries a large common component): under full autocast the head emits
    that sum in bf16, rounded at the common component's scale, so the small differences between pairs are
    lost; with float32 heads it is not rounded.
    """
    out: dict[str, dict[str, float]] = {}
    images, _ = synthetic_images(batch, image_size=image_size, sample_seed=seed + 5)
    images = images.to(device)
    recipe = make_recipe("cifar", size=image_size, mean=(0.5,) * 3, std=(0.25,) * 3)
    augment = BatchAugment(recipe)
    gen = torch.Generator(device=device).manual_seed(seed)
    views = [augment(images, gen), augment(images, gen)]
    partner = derangement(batch, generator=gen, device=device)
    shift: torch.Tensor | None = None
    for last_bn in ("plain", "none", "common"):
        cfg = load_config(overrides={"model": {"width": width, "proj_dim": proj_dim,
                                               "proj_last_bn": "plain" if last_bn == "plain" else "none"}})
        torch.manual_seed(seed)
        plain = build_model(cfg.model, "simsiam", in_channels=3, image_size=image_size).to(device).train()
        heads32 = copy.deepcopy(plain)
        float32_heads(heads32)

        def cases(model: torch.nn.Module, dtype: torch.dtype | None, last_bn: str = last_bn) -> torch.Tensor:
            nonlocal shift
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                t = [model.project(v) for v in views]  # type: ignore[operator]
                if last_bn == "common":
                    if shift is None:  # fixed by the first (float32) call
                        spread = (t[0].float() - t[0].float().mean(0)).norm(dim=1).mean()
                        u = torch.randn(t[0].shape[1], generator=torch.Generator().manual_seed(seed)).to(device)
                        shift = common * spread * u / u.norm()
                    t = [(ti.float() + shift).to(ti.dtype) for ti in t]  # a bf16 head rounds the sum
            return select_cases("guided", pair_distances((t[0], t[1]), (t[0][partner], t[1][partner])))

        with _no_tf32():
            ref = cases(plain, None)
        rates = {"full_autocast": float((cases(plain, torch.bfloat16) != ref).float().mean()),
                 "backbone_bf16": float((cases(heads32, torch.bfloat16) != ref).float().mean())}
        if device.type == "cuda":
            saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
            try:
                rates["tf32"] = float((cases(plain, None) != ref).float().mean())
            finally:
                torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
        out[last_bn] = rates
    return out
