"""Batched per-sample photometric ops on float image batches: colour jitter, grayscale, blur, normalise.

Each op takes (B, C, H, W) float images in [0, 1] and a factor that is a float or a (B,) tensor (one value per
sample). They equal ``torchvision.transforms.functional`` on tensors to float precision: grayscale, contrast and
saturation use torchvision's tensor luma weights (0.2989, 0.587, 0.114), and each op clamps to [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from gsg.errors import ConfigError

__all__ = [
    "BRIGHTNESS",
    "CONTRAST",
    "HUE",
    "SATURATION",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "color_jitter",
    "gaussian_blur",
    "normalize",
    "rgb_to_grayscale",
    "to_float_images",
]

# Luma weights of torchvision's tensor rgb_to_grayscale (ITU-R 601 with 0.299 written as 0.2989).
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)

# Colour-jitter op codes, in the column order of AugParams.factors.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


# ---------------------------------------------------------------------------------------------
# Small batched functional ops. Factors are a float or a (B,) tensor (one value per sample).
# ---------------------------------------------------------------------------------------------


def _const(values: Sequence[float], like: Tensor) -> Tensor:
    """1-D tensor of `values` on like's device, built with fill kernels.

    ``torch.tensor(list, device="cuda")`` is a blocking host-to-device copy (a stream sync per call);
    scalar fills are ordinary asynchronous kernel launches.
    """
    return torch.stack([torch.full((), float(v), dtype=like.dtype, device=like.device) for v in values])


def _per_sample(factor: Tensor | float, x: Tensor) -> Tensor | float:
    """A (B,) tensor -> broadcastable (B,1,1,1); a Python number stays a number (no device copy)."""
    if isinstance(factor, Tensor):
        return factor.to(device=x.device, dtype=x.dtype).reshape(-1, 1, 1, 1)
    return float(factor)


def to_float_images(images: Tensor) -> Tensor:
    """uint8 (B,C,H,W) -> float32 in [0,1] (x / 255); float input -> float32 unchanged (assumed in [0,1])."""
    if images.ndim != 4:
        raise ConfigError(f"Expected an image batch of shape (B, C, H, W), got shape {tuple(images.shape)}.")
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        raise ConfigError(f"Images must be uint8 or float in [0, 1], got dtype {images.dtype}.")
    return images.float()


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """Luma L = 0.2989 R + 0.587 G + 0.114 B of (B,3,H,W) -> (B,1,H,W); 1-channel input is returned as is."""
    if x.shape[1] == 1:
        return x
    wr, wg, wb = _GRAY_WEIGHTS
    return wr * x[:, 0:1] + wg * x[:, 1:2] + wb * x[:, 2:3]


def _blend(x: Tensor, target: Tensor | float, f: Tensor | float) -> Tensor:
    """clamp(f x + (1 - f) target, 0, 1): the form of every torchvision brightness/contrast/saturation op."""
    return (f * x + (1.0 - f) * target).clamp(0.0, 1.0)


def adjust_brightness(x: Tensor, factor: Tensor | float) -> Tensor:
    """clamp(f x, 0, 1) per sample (torchvision adjust_brightness on float images)."""
    return _blend(x, 0.0, _per_sample(factor, x))


def adjust_contrast(x: Tensor, factor: Tensor | float) -> Tensor:
    """clamp(f x + (1 - f) m, 0, 1), m = mean of the sample's grayscale image (per sample)."""
    m = rgb_to_grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, m, _per_sample(factor, x))


def adjust_saturation(x: Tensor, factor: Tensor | float) -> Tensor:
    """clamp(f x + (1 - f) L, 0, 1), L = grayscale of x per pixel; 1-channel images are unchanged."""
    if x.shape[1] == 1:
        return x
    return _blend(x, rgb_to_grayscale(x), _per_sample(factor, x))


def _rgb_to_hsv(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(B,3,H,W) RGB in [0,1] -> h in [0,1), s, v, each (B,1,H,W).

    v = max, s = (max - min) / max, h = sector / 6 with sector = ((G-B)/d mod 6 | (B-R)/d + 2 |
    (R-G)/d + 4) for max = R | G | B, d = max - min; h = s = 0 where undefined (d = 0 or v = 0).
    """
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    maxc = x.amax(dim=1, keepdim=True)
    minc = x.amin(dim=1, keepdim=True)
    delta = maxc - minc
    has_chroma = delta > 0
    # Safe denominators avoid 0/0 = NaN, which torch.where would still propagate into gradients/values.
    d = torch.where(has_chroma, delta, torch.ones_like(delta))
    safe_max = torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    s = torch.where(maxc > 0, delta / safe_max, torch.zeros_like(maxc))
    h_r = torch.remainder((g - b) / d, 6.0)
    h_g = (b - r) / d + 2.0
    h_b = (r - g) / d + 4.0
    h = torch.where(maxc == r, h_r, torch.where(maxc == g, h_g, h_b))
    h = torch.where(has_chroma, h / 6.0, torch.zeros_like(h))
    return h, s, maxc


# Offsets n of the closed-form HSV->RGB channel formula, for R, G, B.
_HSV_OFFSETS = (5.0, 3.0, 1.0)


def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """Closed form: channel_n = v - v s clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6, n = 5, 3, 1."""
    n = _const(_HSV_OFFSETS, h).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * h, 6.0)
    return v - v * s * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


def adjust_hue(x: Tensor, factor: Tensor | float) -> Tensor:
    """Rotate hue by `factor` turns per sample: RGB -> HSV, h <- (h + f) mod 1, -> RGB (1 channel: as is)."""
    if x.shape[1] == 1:
        return x
    h, s, v = _rgb_to_hsv(x)
    h = torch.remainder(h + _per_sample(factor, x), 1.0)
    return _hsv_to_rgb(h, s, v).clamp(0.0, 1.0)


def _blend_round(x: Tensor, op: Tensor, f: Tensor) -> Tensor:
    """One brightness / contrast / saturation op per sample, as a single blend clamp(f x + (1-f) t, 0, 1).

    op: (B,) codes in {BRIGHTNESS, CONTRAST, SATURATION}; the target t is 0, the mean of the sample's
    grayscale image, or its per-pixel grayscale respectively. f = 1 makes the round an exact identity.
    """
    op = op.view(-1, 1, 1, 1)
    gray = rgb_to_grayscale(x)
    mean = gray.mean(dim=(1, 2, 3), keepdim=True)
    target = torch.where(op == BRIGHTNESS, 0.0, torch.where(op == CONTRAST, mean, gray))
    return _blend(x, target, f.view(-1, 1, 1, 1))


def color_jitter(
    x: Tensor, factors: Tensor, order: Tensor, apply: Tensor | None = None, *, use_hue: bool = True
) -> Tensor:
    """Brightness, contrast, saturation and hue per sample, in a per-sample order (torchvision ColorJitter).

    factors: (B,4) = (brightness, contrast, saturation factor, hue shift); order: (B,4) long, one
    permutation of (BRIGHTNESS, CONTRAST, SATURATION, HUE) per row, applied left to right; apply: (B,)
    bool, samples to jitter (others are returned unchanged; None = all). ``use_hue=False`` skips the
    HSV round trip; valid when every hue shift is 0. Each op clamps to [0, 1] as torchvision does.

    Cost: the hue op (an RGB->HSV->RGB round trip) is several times dearer than a blend, so it runs
    once: with p = position of hue in a sample's order, its p earlier blend ops are right-aligned in
    3 "pre" rounds, all samples take the hue round, and its 3 - p later ops are left-aligned in 3
    "post" rounds; unused slots are identity blends (f = 1). That is 6 blend rounds + 1 hue round,
    versus 4 of each for a naive round-by-round evaluation.
    """
    is_hue = order == HUE
    # The three blend ops in their sampled order: sort keys put hue last and keep the rest in order.
    slots = torch.arange(4, device=order.device).expand_as(order)
    keep = torch.argsort(torch.where(is_hue, 4, slots), dim=1)[:, :3]
    seq = order.gather(1, keep)
    f_seq = factors.gather(1, seq)
    if x.shape[1] == 1:
        # torchvision leaves 1-channel images unchanged under saturation; f=1 makes the blend exact.
        f_seq = torch.where(seq == SATURATION, 1.0, f_seq)
    if apply is not None:
        f_seq = torch.where(apply.view(-1, 1), f_seq, 1.0)
    if not use_hue or x.shape[1] == 1:
        for r in range(3):  # rounds of the random order, not samples
            x = _blend_round(x, seq[:, r], f_seq[:, r])
        return x
    pos = torch.argsort(order, dim=1)[:, HUE]  # number of blend ops before hue
    identity_op = torch.full_like(pos, BRIGHTNESS)
    for r in range(3):  # pre-hue rounds
        j = r - 3 + pos
        active = j >= 0
        jc = j.clamp(min=0).view(-1, 1)
        op = torch.where(active, seq.gather(1, jc).squeeze(1), identity_op)
        x = _blend_round(x, op, torch.where(active, f_seq.gather(1, jc).squeeze(1), 1.0))
    hued = adjust_hue(x, factors[:, HUE])
    x = hued if apply is None else torch.where(apply.view(-1, 1, 1, 1), hued, x)
    for r in range(3):  # post-hue rounds
        j = pos + r
        active = j <= 2
        jc = j.clamp(max=2).view(-1, 1)
        op = torch.where(active, seq.gather(1, jc).squeeze(1), identity_op)
        x = _blend_round(x, op, torch.where(active, f_seq.gather(1, jc).squeeze(1), 1.0))
    return x


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Per-sample separable Gaussian blur with reflect padding (torchvision gaussian_blur, per sample).

    Kernel g_b(t) = exp(-t^2 / (2 sigma_b^2)) / sum, t = -(k-1)/2 .. (k-1)/2. The batch is folded into
    the channel axis so both 1-D passes are single grouped convolutions with one kernel per (sample,
    channel).
    """
    b, c, hh, ww = x.shape
    pad = kernel_size // 2
    if pad >= min(hh, ww):
        raise ConfigError(
            f"Blur kernel {kernel_size} is too large for {hh}x{ww} images: "
            "use a larger image size or blur_p=0."
        )
    half = (kernel_size - 1) * 0.5
    t = torch.linspace(-half, half, kernel_size, dtype=x.dtype, device=x.device)
    kern = torch.exp(-0.5 * (t / sigma.to(x.dtype).view(-1, 1)) ** 2)
    kern = kern / kern.sum(dim=1, keepdim=True)
    kern = kern.repeat_interleave(c, dim=0)  # (B*C, k), row b*C + ch belongs to sample b
    y = F.pad(x.reshape(1, b * c, hh, ww), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, kern.view(b * c, 1, 1, kernel_size), groups=b * c)
    y = F.conv2d(y, kern.view(b * c, 1, kernel_size, 1), groups=b * c)
    return y.view(b, c, hh, ww)


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """(x - mean_c) / std_c per channel."""
    m = _const(mean, x).view(1, -1, 1, 1)
    s = _const(std, x).view(1, -1, 1, 1)
    return (x - m) / s
