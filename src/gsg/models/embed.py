"""Frozen features of a whole dataset: the input of kNN, the linear probe's fast mode, transfer and t-SNE.

``embed`` runs the backbone in eval mode (BatchNorm uses its running statistics, so a feature does not
depend on the other images of its batch) without gradients, on clean views: ``eval_transform`` (optional
resize of the shorter side, centre crop to ``size``, normalisation). It restores the module's previous
train/eval mode afterwards, so the training loop's online kNN monitor can call it mid-training.

Channel mismatch (transfer from a 1-channel Fashion-MNIST backbone to RGB data, or the reverse):
``match_channels`` converts the uint8 images to the backbone's input channels *before* normalisation,

    1 → 3: the gray channel is repeated (R = G = B);
    3 → 1: PIL's integer luma  L = (19595 R + 38470 G + 7471 B + 2¹⁵) >> 16  (≈ 0.299 R + 0.587 G + 0.114 B),

the same conversions ``gsg.data`` uses, so an RGB image seen by a gray backbone is exactly what the
backbone would see had the dataset been loaded with ``channels=1``. ``mean``/``std`` are the backbone's
normalisation (one entry per backbone input channel, as stored in the checkpoint's ``data`` section).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from gsg.data.datasets import ImageDataset
from gsg.data.loader import BatchLoader
from gsg.data.views import eval_transform
from gsg.errors import ConfigError, DataError

log = logging.getLogger(__name__)

_LUMA_INT = (19595, 38470, 7471)  # PIL's fixed-point ITU-R 601 luma weights (sum 65536)
_LUMA = (0.299, 0.587, 0.114)


def backbone_in_channels(backbone: nn.Module) -> int:
    """Input channels of a backbone: its ``in_channels`` attribute, else its first Conv2d's."""
    c = getattr(backbone, "in_channels", None)
    if isinstance(c, int):
        return c
    for m in backbone.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise ConfigError(f"cannot tell how many input channels {type(backbone).__name__} takes; give it an "
                      "`in_channels` attribute")


def match_channels(images: Tensor, channels: int) -> Tensor:
    """uint8 (B, C, H, W) images converted to ``channels`` (1 or 3): repeat gray, or PIL luma of RGB."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1)
    if c == 3 and channels == 1:
        if images.dtype != torch.uint8:
            w = torch.tensor(_LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
            return (images * w).sum(dim=1, keepdim=True)
        w = torch.tensor(_LUMA_INT, dtype=torch.int32, device=images.device).view(1, 3, 1, 1)
        return (((images.to(torch.int32) * w).sum(dim=1, keepdim=True) + 32768) >> 16).to(torch.uint8)
    raise DataError(f"cannot convert {c}-channel images to {channels} channels; only 1 <-> 3 is supported")


def stats_for_channels(mean: Sequence[float], std: Sequence[float], channels: int
                       ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation stats converted to ``channels`` like the images: repeated, or luma-weighted sums."""
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) == channels:
        return mean, std
    if len(mean) == 1 and channels == 3:
        return mean * 3, std * 3
    if len(mean) == 3 and channels == 1:
        return (sum(w * m for w, m in zip(_LUMA, mean, strict=True)),), (
            sum(w * s for w, s in zip(_LUMA, std, strict=True)),)
    raise ConfigError(f"mean/std with {len(mean)} entries cannot be converted to {channels} channels")


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else as ``torch.device``."""
    if isinstance(name, str) and name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for a module without any)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(module: nn.Module):  # type: ignore[no-untyped-def]
    """Put ``module`` in eval mode for the block and restore each submodule's previous mode after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


def forward_features(backbone: nn.Module, images: Tensor, *, channels_last: bool = False,
                     amp_dtype: torch.dtype | None = None) -> Tensor:
    """Backbone output of a normalised float batch as float32, under autocast when ``amp_dtype`` is set."""
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    ctx = (torch.autocast(images.device.type, dtype=amp_dtype) if amp_dtype is not None
           else contextlib.nullcontext())
    with ctx:
        out = backbone(images)
    return out.float().flatten(1)


@torch.no_grad()
def embed(backbone: nn.Module, dataset: ImageDataset, *, batch_size: int = 512,
          device: str | torch.device = "cpu", size: int | None = None, mean: Sequence[float] | None = None,
          std: Sequence[float] | None = None, resize: int | None = None, channels_last: bool = False,
          amp_dtype: torch.dtype | None = None, workers: int = 0, check_finite: bool = True
          ) -> tuple[Tensor, Tensor]:
    """Features (N, D) float32 and labels (N,) int64, both on the CPU, of every image of ``dataset``.

    Row i is ``backbone(normalise(crop(match_channels(dataset[i]))))`` in eval mode, no grad. ``size``
    defaults to the dataset's image size; ``mean``/``std`` to the dataset's statistics converted to the
    backbone's channels (pass the backbone's own training statistics for a frozen-backbone protocol).
    ``resize``: shorter side resized to it before the centre crop (e.g. 256 → 224 for ImageNet). The
    backbone must already be on ``device``. ``check_finite``: raise ``DataError`` on NaN/inf features
    (a diverged backbone) instead of returning them.
    """
    device = torch.device(device)
    if module_device(backbone).type != device.type:
        raise ConfigError(f"the backbone is on {module_device(backbone)} but embed was asked to run on "
                          f"{device}; move it with backbone.to({str(device)!r})")
    channels = backbone_in_channels(backbone)
    size = int(size or dataset.image_size)
    if mean is None or std is None:
        mean, std = stats_for_channels(dataset.mean, dataset.std, channels)
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) != channels or len(std) != channels:
        raise ConfigError(f"mean/std have {len(mean)}/{len(std)} entries but the backbone takes {channels} "
                          "channel(s); pass the backbone's normalisation (the checkpoint's data.mean/std)")
    if dataset.channels != channels:
        log.info("embedding %d-channel %s images with a %d-channel backbone (converted: %s)",
                 dataset.channels, dataset.name, channels,
                 "gray repeated" if channels == 3 else "PIL luma")
    loader = BatchLoader(dataset, batch_size, shuffle=False, drop_last=False, device=device, workers=workers)
    n = len(dataset)
    feats: Tensor | None = None
    labels = torch.empty(n, dtype=torch.int64)
    with eval_mode(backbone):
        for images, lab, idx in loader:
            x = eval_transform(match_channels(images, channels), size=size, mean=mean, std=std, resize=resize)
            f = forward_features(backbone, x, channels_last=channels_last, amp_dtype=amp_dtype).cpu()
            if feats is None:
                feats = torch.empty(n, f.shape[1], dtype=torch.float32)
            feats[idx] = f
            labels[idx] = lab.cpu()
    assert feats is not None  # BatchLoader refuses an empty dataset
    if check_finite and not torch.isfinite(feats).all():
        raise DataError("the backbone produced NaN or infinite features: its weights diverged or the "
                        "checkpoint is corrupt (check the training log); with amp_dtype=float16 it can "
                        "also be an overflow, so embed without amp")
    return feats, labels
