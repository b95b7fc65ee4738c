"""Augmentation recipes: the ``Recipe`` parameter set, its validation and the named recipes (paper Appendix B).

A recipe is data only; ``gsg.data.views.BatchAugment`` runs it.
"""

from __future__ import annotations

from dataclasses import dataclass

from gsg.errors import ConfigError

__all__ = ["RECIPES", "Recipe", "blur_kernel_size", "make_recipe"]

RECIPES: tuple[str, ...] = ("imagenet", "cifar", "grayscale", "linear")


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
