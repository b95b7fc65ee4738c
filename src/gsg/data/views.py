"""Batched, per-sample random augmentation on the training device (GSG paper, Appendix B).

This module runs the pipeline: ``BatchAugment`` (random training views) and ``eval_transform`` (the clean
evaluation view). Its parts: the recipes in ``gsg.data.recipes``, the crop in ``gsg.data.crops``, the
colour jitter, grayscale, blur and normalisation in ``gsg.data.color``; their names are re-exported here.

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
  helpers of ``gsg.data.color`` equal ``torchvision.transforms.functional`` on tensors to float precision.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# The parts of the pipeline. Those not called here (the op codes, CROP_TRIES, adjust_*, make_recipe, RECIPES)
# are re-exported: callers import them from this module.
from gsg.data.color import BRIGHTNESS as BRIGHTNESS
from gsg.data.color import CONTRAST as CONTRAST
from gsg.data.color import HUE as HUE
from gsg.data.color import SATURATION as SATURATION
from gsg.data.color import (
    _const,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    gaussian_blur,
    normalize,
    rgb_to_grayscale,
    to_float_images,
)
from gsg.data.crops import CROP_TRIES as CROP_TRIES
from gsg.data.crops import resized_crop, sample_crop_boxes
from gsg.data.recipes import RECIPES, Recipe, blur_kernel_size, make_recipe
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

# Columns of the single uniform draw per call (see BatchAugment.sample); columns 0..21 are the crop's
# (gsg.data.crops: CROP_TRIES areas, CROP_TRIES log-ratios, top, left).
_C_FLIP, _C_JIT = 22, 23
_C_FACT = slice(24, 28)
_C_ORDER = slice(28, 32)
_C_GRAY, _C_BLUR, _C_SIGMA = 32, 33, 34
N_DRAWS = 35

# Device types on which torch.autocast exists (elsewhere there is nothing to disable).
_AUTOCAST_DEVICES = ("cpu", "cuda", "mps", "xpu")


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
