"""RandomResizedCrop, batched: crop boxes from uniforms (torchvision's algorithm) and the crop+flip+resize.

``sample_crop_boxes`` also draws the boxes of image folders, on each file's own size, in the loader's workers
(``gsg.data.folder``); ``resized_crop`` is the in-memory path of ``gsg.data.views.BatchAugment``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["CROP_TRIES", "resized_crop", "sample_crop_boxes"]

# torchvision's RandomResizedCrop tries this many (area, ratio) candidates before falling back.
CROP_TRIES = 10
# Columns of a crop's uniforms ``u`` (the first 2 * CROP_TRIES + 2 columns of BatchAugment.sample's draw,
# all the columns of the loader's crop_uniforms).
_C_AREA = slice(0, CROP_TRIES)
_C_LOGR = slice(CROP_TRIES, 2 * CROP_TRIES)
_C_TOP, _C_LEFT = 20, 21


def _fallback_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """torchvision's fallback after 10 failed tries: the central crop with the ratio clamped to range."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = round(w / min(ratio))
    elif in_ratio > max(ratio):
        h = height
        w = round(h * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def sample_crop_boxes(
    u: Tensor, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> Tensor:
    """RandomResizedCrop boxes from uniforms ``u`` (B, 2*CROP_TRIES + 2) -> (B,4) float (top, left, h, w).

    As torchvision's ``RandomResizedCrop.get_params``, vectorised over samples and tries: candidate t has
    area a_t = H W U[scale], ratio r_t = exp(U[log ratio]), w = round(sqrt(a r)), h = round(sqrt(a / r));
    take the first t with 0 < w <= W and 0 < h <= H, then top ~ U{0..H-h}, left ~ U{0..W-w};
    samples with no valid try get the central fallback crop.
    """
    u_area, u_logr = u[:, _C_AREA], u[:, _C_LOGR]
    area = float(height * width)
    target = area * (scale[0] + (scale[1] - scale[0]) * u_area)
    lr0, lr1 = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lr0 + (lr1 - lr0) * u_logr)
    w = torch.round(torch.sqrt(target * aspect))  # round half to even, like Python's round()
    h = torch.round(torch.sqrt(target / aspect))
    valid = (w >= 1) & (w <= width) & (h >= 1) & (h <= height)
    tries = torch.arange(CROP_TRIES, device=u.device)
    first = torch.where(valid, tries, CROP_TRIES).amin(dim=1, keepdim=True)
    found = first.squeeze(1) < CROP_TRIES
    first = first.clamp_max(CROP_TRIES - 1)
    fi, fj, fh, fw = _fallback_box(height, width, ratio)
    h = torch.where(found, h.gather(1, first).squeeze(1), float(fh))
    w = torch.where(found, w.gather(1, first).squeeze(1), float(fw))
    # floor(u * n) is uniform on {0..n-1}; the clamp guards float32 rounding of u*n up to n.
    top = torch.minimum(torch.floor(u[:, _C_TOP] * (height - h + 1)), height - h)
    left = torch.minimum(torch.floor(u[:, _C_LEFT] * (width - w + 1)), width - w)
    top = torch.where(found, top, float(fi))
    left = torch.where(found, left, float(fj))
    return torch.stack((top, left, h, w), dim=1)


def _crop_axis(start: Tensor, length: Tensor, size: int, full: int) -> Tensor:
    """Normalised sample coordinates (B, size) along one axis of a crop [start, start + length).

    Output pixel u reads source coordinate p = start + (u + 1/2) length / size - 1/2, clamped to
    [start, start + length - 1]; grid_sample's normalised coordinate is g = (2p + 1) / full - 1.
    """
    u = torch.arange(size, device=start.device, dtype=torch.float32) + 0.5
    p = start[:, None] + u[None, :] * (length / size)[:, None] - 0.5
    p = torch.minimum(torch.maximum(p, start[:, None]), (start + length - 1)[:, None])
    return (2 * p + 1) / full - 1


def resized_crop(x: Tensor, boxes: Tensor, size: int, flip: Tensor | None = None) -> Tensor:
    """Crop box (top, left, h, w) of each sample, resize to size x size (bilinear), mirror where flip.

    Same sample points as torchvision's ``resized_crop(..., antialias=False)``: output pixel u reads
    source column left + (u + 1/2) w / size - 1/2, clamped to the crop (torchvision crops first, so
    interpolation replicates the crop's edge pixels; PIL does the same). The clamp is why the grid is
    built per axis here rather than with ``F.affine_grid``: an affine grid would read the true
    neighbours outside the crop when upscaling, which for 10-px crops of a 32-px image touches ~20%
    of output pixels and measurably lowers pixel variance. A flip reverses the column coordinates.
    One ``grid_sample`` (bilinear, align_corners=False) does crop, flip and resize for the batch.
    """
    b, _, hh, ww = x.shape
    top, left, h, w = boxes.to(device=x.device, dtype=torch.float32).unbind(dim=1)
    gx = _crop_axis(left, w, size, ww)
    if flip is not None:
        gx = torch.where(flip.view(-1, 1), gx.flip(1), gx)
    gy = _crop_axis(top, h, size, hh)
    grid = torch.stack((gx[:, None, :].expand(b, size, size), gy[:, :, None].expand(b, size, size)), dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
