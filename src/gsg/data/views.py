"""Batched, per-sample random augmentation on the training device (GSG paper, Appendix B).

The reference pipelines (SimSiam / MoCo v2 / the GSG authors' code) run torchvision/PIL transforms
per image in DataLoader workers. Here the same recipes run batch-wise on the training device (GPU in
production, CPU in tests), with every random parameter drawn independently *per sample*
(torchvision's v2 transforms draw one set of parameters per call, i.e. per batch, which would give
every image of a batch the same crop and colours).

Why our own batched ops rather than kornia:

- all randomness comes from ONE explicit ``torch.Generator`` (a single ``torch.rand`` of shape
  ``(B, N_DRAWS)`` per call), so a run is exact and resumable from the generator state;
- the pipeline is a handful of batched kernels: one ``grid_sample`` on per-sample sampling grids
  does crop, horizontal flip and resize at once; colour jitter is a fixed number of elementwise
  rounds whatever the per-sample op orders; blur is two grouped convolutions with per-sample
  kernels; there is no Python loop over samples and no host-device synchronisation (no ``.item()``,
  no boolean indexing), so it runs asynchronously on CUDA;
- no extra dependency.

Pipeline of one call (each step independent per sample; ``u ~ U[0,1)``)::

    crop+flip+resize  RandomResizedCrop(size, scale, ratio), flipped where u < flip_p
    colour jitter     where u < jitter_p: brightness, contrast, saturation, hue in a random order
    grayscale         where u < gray_p (3-channel images only)
    gaussian blur     where u < blur_p, sigma ~ U[blur_sigma]
    normalise         (x - mean) / std

The horizontal flip is folded into the crop even though the reference recipes flip last: flipping
commutes with every later op (colour ops are per pixel or use global statistics; the Gaussian kernel
is symmetric), so the distribution of the output is unchanged.

Image folders (ImageNet) are the exception to the batched crop: RandomResizedCrop needs the full-resolution
file, so the loader's worker processes decode each image, crop it and resize it to ``size`` (PIL, bilinear
with antialiasing, as torchvision) from uniforms drawn in the main process (``gsg.data.loader``); those views
then go through ``BatchAugment(..., cropped=True)``, which skips the crop and keeps the flip and every later
step here, batched.

Known deviations from the per-image PIL pipeline, all small:

- ``grid_sample`` does not antialias; PIL antialiases on downscaling. The training loop crops in-memory
  images here at their own size (CIFAR, Fashion-MNIST), so a crop is never larger than the output and is
  only upscaled; image folders, whose crops are mostly downscaled, are cropped with PIL in the workers.
- Everything is computed in float32 without PIL's uint8 rounding between ops. PIL's blends
  (ImageEnhance) truncate to uint8, so its jittered images are ~0.45/255 darker per op; ours equal
  torchvision's tensor ops instead.
- Grayscale/contrast/saturation use torchvision's tensor weights (0.2989, 0.587, 0.114), so the
  helpers below equal ``torchvision.transforms.functional`` on tensors to float precision.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gsg.errors import ConfigError

__all__ = [
    "RECIPES",
    "AugParams",
    "BatchAugment",
    "Recipe",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "blur_kernel_size",
    "color_jitter",
    "eval_transform",
    "gaussian_blur",
    "make_recipe",
    "normalize",
    "resized_crop",
    "rgb_to_grayscale",
    "sample_crop_boxes",
    "to_float_images",
]

RECIPES: tuple[str, ...] = ("imagenet", "cifar", "grayscale", "linear")

# torchvision's RandomResizedCrop tries this many (area, ratio) candidates before falling back.
CROP_TRIES = 10
# Columns of the single uniform draw per call (see BatchAugment.sample).
_C_AREA = slice(0, CROP_TRIES)
_C_LOGR = slice(CROP_TRIES, 2 * CROP_TRIES)
_C_TOP, _C_LEFT, _C_FLIP, _C_JIT = 20, 21, 22, 23
_C_FACT = slice(24, 28)
_C_ORDER = slice(28, 32)
_C_GRAY, _C_BLUR, _C_SIGMA = 32, 33, 34
N_DRAWS = 35

# Luma weights of torchvision's tensor rgb_to_grayscale (ITU-R 601 with 0.299 written as 0.2989).
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)

# Device types on which torch.autocast exists (elsewhere there is nothing to disable).
_AUTOCAST_DEVICES = ("cpu", "cuda", "mps", "xpu")

# Colour-jitter op codes, in the column order of AugParams.factors.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


def _check_pair(name: str, pair: tuple[float, float], lo: float, hi: float) -> None:
    if len(pair) != 2 or not (lo <= pair[0] <= pair[1] <= hi):
        raise ConfigError(
            f"Recipe.{name} = {pair!r} is invalid: give (low, high) with {lo} <= low <= high <= {hi}."
        )


@dataclass(frozen=True)
class Recipe:
    """One augmentation recipe; see ``make_recipe`` for the named ones (paper Appendix B).

    Probabilities are per sample. Jitter factors follow torchvision's ColorJitter: brightness,
    contrast and saturation factors ~ U[max(0, 1-s), 1+s], hue shift ~ U[-h, h] (fraction of a turn).
    ``len(mean) == len(std)`` is the channel count the recipe expects (1 or 3).
    """

    name: str
    size: int
    crop_scale: tuple[float, float]
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    gray_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 1:
            raise ConfigError(f"Recipe.size = {self.size!r} is invalid: give a positive integer side in px.")
        _check_pair("crop_scale", self.crop_scale, 0.0, 1.0)
        if self.crop_scale[1] <= 0:
            raise ConfigError(
                f"Recipe.crop_scale = {self.crop_scale!r}: the upper area fraction must be > 0."
            )
        _check_pair("crop_ratio", self.crop_ratio, 1e-6, 1e6)
        _check_pair("blur_sigma", self.blur_sigma, 1e-6, 1e6)
        for p in ("flip_p", "jitter_p", "gray_p", "blur_p"):
            v = getattr(self, p)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"Recipe.{p} = {v!r} is not a probability: give a value in [0, 1].")
        for s in ("brightness", "contrast", "saturation"):
            v = getattr(self, s)
            if v < 0:
                raise ConfigError(f"Recipe.{s} = {v!r} is negative: give a jitter strength >= 0.")
        if not 0.0 <= self.hue <= 0.5:
            raise ConfigError(f"Recipe.hue = {self.hue!r} is invalid: give a hue shift in [0, 0.5].")
        if len(self.mean) != len(self.std) or len(self.mean) not in (1, 3):
            raise ConfigError(
                f"Recipe mean {self.mean!r} and std {self.std!r} must both have 1 (grayscale) "
                "or 3 (RGB) entries, one per image channel."
            )
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"Recipe.std = {self.std!r} has a non-positive entry: give std > 0.")

    @property
    def channels(self) -> int:
        """Number of image channels the recipe expects (= len(mean))."""
        return len(self.mean)


def make_recipe(name: str, *, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> Recipe:
    """Named recipe. ``len(mean)`` (= ``len(std)``) sets the channel count, 1 or 3.

    - ``imagenet`` (Appendix B.1, SimSiam/MoCo v2): RandomResizedCrop scale (0.2, 1), ColorJitter
      (0.4, 0.4, 0.4, 0.1) with p=0.8, grayscale p=0.2, Gaussian blur p=0.5 with sigma ~ U[0.1, 2]
      (kernel ~10% of the side, odd: 23 px at 224), flip p=0.5.
    - ``cifar`` (Appendix B.2): RandomResizedCrop scale (0.08, 1), flip 0.5, ColorJitter
      (0.4, 0.4, 0.4, 0.1) p=0.8, grayscale 0.2, no blur.
    - ``grayscale`` (small 1-channel images such as 28-px Fashion-MNIST): RandomResizedCrop scale
      (0.2, 1), flip 0.5, brightness/contrast jitter 0.4 with p=0.8, no blur. Saturation, hue and
      grayscale conversion are undefined for one channel (torchvision also leaves such images
      unchanged), so they are 0. The crop keeps >= 20% of the area, as for ImageNet, rather than
      CIFAR's 8%: an 8% crop of a 28-px image is ~8x8 px and usually loses the object. No blur:
      at 28 px the blur kernel would be 3 px and mostly erases thin strokes.
    - ``linear`` (train-time augmentation of the linear probe, SimSiam/GSG protocol):
      RandomResizedCrop scale (0.08, 1) + flip only.
    """
    mean_t = tuple(float(m) for m in mean)
    std_t = tuple(float(s) for s in std)
    common = {"size": size, "mean": mean_t, "std": std_t}
    if name == "imagenet":
        return Recipe(name=name, crop_scale=(0.2, 1.0), blur_p=0.5, blur_sigma=(0.1, 2.0), **common)
    if name == "cifar":
        return Recipe(name=name, crop_scale=(0.08, 1.0), **common)
    if name == "grayscale":
        return Recipe(name=name, crop_scale=(0.2, 1.0), saturation=0.0, hue=0.0, gray_p=0.0, **common)
    if name == "linear":
        return Recipe(
            name=name, crop_scale=(0.08, 1.0), jitter_p=0.0, brightness=0.0, contrast=0.0,
            saturation=0.0, hue=0.0, gray_p=0.0, **common,
        )
    raise ConfigError(f"Unknown augmentation recipe {name!r}: choose one of {', '.join(RECIPES)}.")


def blur_kernel_size(size: int) -> int:
    """Gaussian kernel side: ~10% of the image side, made odd, at least 3 (23 at 224 px, 3 at 32 px)."""
    k = int(0.1 * size)
    k = k if k % 2 == 1 else k + 1
    return max(k, 3)


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


# ---------------------------------------------------------------------------------------------
# RandomResizedCrop
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# The batched pipeline
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AugParams:
    """Per-sample random parameters of one BatchAugment call (all tensors on the images' device)."""

    boxes: Tensor  # (B,4) float: top, left, height, width of the crop in source pixels
    flip: Tensor  # (B,) bool
    jitter: Tensor  # (B,) bool: colour jitter applied
    factors: Tensor  # (B,4): brightness, contrast, saturation factors and hue shift
    order: Tensor  # (B,4) long: order[:, k] is the jitter op applied in round k
    gray: Tensor  # (B,) bool
    blur: Tensor  # (B,) bool
    sigma: Tensor  # (B,) blur sigma

    def slice(self, start: int, stop: int) -> AugParams:
        """The parameters of images start..stop-1 (every field has the batch first)."""
        return AugParams(**{f.name: getattr(self, f.name)[start:stop] for f in dataclasses.fields(self)})


def _check_device(generator: torch.Generator | None, device: torch.device) -> None:
    if generator is None:
        return
    gd = generator.device
    same = gd.type == device.type and (gd.index is None or device.index is None or gd.index == device.index)
    if not same:
        raise ConfigError(
            f"The augmentation generator is on {gd} but the images are on {device}: "
            f"create it with torch.Generator(device={str(device)!r})."
        )


class BatchAugment:
    """Random augmentation of a batch with independent parameters per sample (see module docstring).

    ``aug(images, generator)`` = ``aug.apply(images, aug.sample(B, H, W, device, generator))``.
    Every random draw is one ``torch.rand((B, N_DRAWS), generator=generator)``: the output is a
    function of the images and the generator state only.

    ``cpu_chunk``: on the CPU, ``apply`` runs on slices of this many images (parameters still drawn once for
    the whole batch), which keeps each op's intermediates in the cache: 1.73× faster at batch 512, 32 px
    (docs/performance.md, section 2). The output equals the whole-batch one up to float rounding
    (≤ 1e-5). 0 applies the whole batch at once; GPUs always do.
    """

    def __init__(self, recipe: Recipe, *, cpu_chunk: int = 128) -> None:
        if cpu_chunk < 0:
            raise ConfigError(f"cpu_chunk must be 0 (off) or a positive number of images, got {cpu_chunk}")
        self.recipe = recipe
        self.cpu_chunk = cpu_chunk
        self.blur_kernel = blur_kernel_size(recipe.size)
        r = recipe
        # Static skips (no data-dependent branching): ops that can never change a sample cost nothing.
        any_jitter = r.brightness > 0 or r.contrast > 0 or r.saturation > 0 or r.hue > 0
        self._do_jitter = r.jitter_p > 0 and any_jitter
        self._do_gray = r.gray_p > 0 and r.channels == 3
        self._do_blur = r.blur_p > 0

    def __repr__(self) -> str:
        return f"BatchAugment({self.recipe!r})"

    def sample(
        self,
        batch: int,
        height: int,
        width: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> AugParams:
        """Draw per-sample parameters for a batch of ``batch`` images of height x width."""
        r = self.recipe
        device = torch.device(device)
        _check_device(generator, device)
        u = torch.rand((batch, N_DRAWS), generator=generator, device=device)
        boxes = sample_crop_boxes(u, height, width, r.crop_scale, r.crop_ratio)
        lo = _const([max(0.0, 1 - r.brightness), max(0.0, 1 - r.contrast), max(0.0, 1 - r.saturation), -r.hue], u)
        hi = _const([1 + r.brightness, 1 + r.contrast, 1 + r.saturation, r.hue], u)
        factors = lo + (hi - lo) * u[:, _C_FACT]
        # argsort of i.i.d. uniforms is a uniformly random permutation per row.
        order = torch.argsort(u[:, _C_ORDER], dim=1)
        s0, s1 = r.blur_sigma
        return AugParams(
            boxes=boxes,
            flip=u[:, _C_FLIP] < r.flip_p,
            jitter=u[:, _C_JIT] < r.jitter_p,
            factors=factors,
            order=order,
            gray=u[:, _C_GRAY] < r.gray_p,
            blur=u[:, _C_BLUR] < r.blur_p,
            sigma=s0 + (s1 - s0) * u[:, _C_SIGMA],
        )

    def _check_images(self, images: Tensor) -> None:
        if images.ndim != 4:
            raise ConfigError(
                f"Expected an image batch of shape (B, C, H, W), got shape {tuple(images.shape)}."
            )
        if images.shape[1] != self.recipe.channels:
            raise ConfigError(
                f"Images have {images.shape[1]} channels but recipe {self.recipe.name!r} has "
                f"{self.recipe.channels}-entry mean/std: pass mean/std with one entry per channel."
            )

    @torch.no_grad()
    def apply(self, images: Tensor, params: AugParams, *, cropped: bool = False) -> Tensor:
        """Deterministic part: crop+flip+resize, jitter, grayscale, blur, normalise with given params.

        ``cropped=True``: the images are views already cropped and resized to ``recipe.size`` (image folders:
        RandomResizedCrop on the full file in the loader's workers), so the crop step is skipped
        (``params.boxes`` is unused) and only the flip is applied before the colour ops.
        """
        self._check_images(images)
        r = self.recipe
        if cropped and tuple(images.shape[-2:]) != (r.size, r.size):
            raise ConfigError(
                f"Pre-cropped views must be {r.size}x{r.size} (the recipe's size), got "
                f"{images.shape[-2]}x{images.shape[-1]}."
            )
        # Autocast would run the blur convolutions in half precision; the pipeline is float32 throughout.
        dev_type = images.device.type
        no_autocast = (
            torch.autocast(dev_type, enabled=False) if dev_type in _AUTOCAST_DEVICES else contextlib.nullcontext()
        )
        with no_autocast:
            if cropped:
                x = to_float_images(images)
                x = torch.where(params.flip.view(-1, 1, 1, 1), x.flip(-1), x)
            elif images.dtype == torch.uint8:
                # Bilinear sampling is linear, so dividing by 255 after it equals converting before it,
                # and the output is usually smaller than the input.
                x = resized_crop(images.float(), params.boxes, r.size, params.flip) / 255.0
            elif images.is_floating_point():
                x = resized_crop(images.float(), params.boxes, r.size, params.flip)
            else:
                raise ConfigError(f"Images must be uint8 or float in [0, 1], got dtype {images.dtype}.")
            if self._do_jitter:
                x = color_jitter(x, params.factors, params.order, params.jitter, use_hue=r.hue > 0)
            if self._do_gray:
                x = torch.where(params.gray.view(-1, 1, 1, 1), rgb_to_grayscale(x).expand_as(x), x)
            if self._do_blur:
                blurred = gaussian_blur(x, params.sigma, self.blur_kernel)
                x = torch.where(params.blur.view(-1, 1, 1, 1), blurred, x)
            return normalize(x, r.mean, r.std)

    def __call__(
        self, images: Tensor, generator: torch.Generator | None = None, *, cropped: bool = False
    ) -> Tensor:
        """images: uint8 (B,C,H,W) or float in [0,1], any device/memory format -> float32 (B,C,size,size).

        ``generator`` must live on images.device; None uses that device's default generator.
        ``cropped``: the views are already cropped to size x size (see ``apply``); the same single draw is
        made, so the generator advances exactly as for uncropped images.
        """
        self._check_images(images)
        b, _, hh, ww = images.shape
        params = self.sample(b, hh, ww, images.device, generator)
        n = self.cpu_chunk
        if images.device.type == "cpu" and 0 < n < b:
            return torch.cat([self.apply(images[i:i + n], params.slice(i, i + n), cropped=cropped)
                              for i in range(0, b, n)])
        return self.apply(images, params, cropped=cropped)


def eval_transform(
    images: Tensor,
    *,
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    resize: int | None = None,
) -> Tensor:
    """Clean evaluation view -> float32 (B,C,size,size), normalised.

    With ``resize``: shorter side -> resize (longer side int(resize * long / short), bilinear with
    antialias, as torchvision's Resize), then the centre size x size crop (top = round((H' - size)/2)).
    Without: images already size x size are only converted and normalised; other sizes are treated as
    ``resize=size`` (shorter side to size, centre crop).
    """
    if len(mean) != len(std) or len(mean) not in (1, 3):
        raise ConfigError(f"mean {mean!r} and std {std!r} must both have 1 or 3 entries, one per channel.")
    if images.ndim != 4 or images.shape[1] != len(mean):
        raise ConfigError(
            f"Images of shape {tuple(images.shape)} do not match mean/std with {len(mean)} entries: "
            "pass a (B, C, H, W) batch and one mean/std entry per channel."
        )
    if size < 1 or (resize is not None and resize < size):
        raise ConfigError(f"eval_transform needs 1 <= size <= resize, got size={size}, resize={resize}.")
    x = to_float_images(images)
    hh, ww = x.shape[-2:]
    if resize is None:
        if hh == size and ww == size:
            return normalize(x, mean, std)
        resize = size
    short, long = (hh, ww) if hh <= ww else (ww, hh)
    new_long = int(resize * long / short)
    nh, nw = (resize, new_long) if hh <= ww else (new_long, resize)
    if (nh, nw) != (hh, ww):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    top = round((nh - size) / 2.0)
    left = round((nw - size) / 2.0)
    return normalize(x[:, :, top : top + size, left : left + size], mean, std)
