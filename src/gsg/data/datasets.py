"""Dataset registry: ``load_dataset`` turns a dataset name and split into an ``ImageDataset`` of uint8 images.

It checks the name, split and options, dispatches to the kind of dataset (``gsg.data.standard`` finds and
reads the torchvision-format ones offline first, ``gsg.data.folder`` image folders, ``gsg.data.synthetic``
the synthetic one), then takes the fixed random subset and converts channels and size. The dataset types and
constants of those modules are re-exported here, where callers import them from; patch
the file lookup (``SYSTEM_DATA_DIRS``, ``DEFAULT_DATA_DIR``, ``_download``) in ``gsg.data.standard``.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import torch

from gsg.data import images as image_files
from gsg.data.base import ImageDataset as ImageDataset
from gsg.data.base import TensorImageDataset as TensorImageDataset
from gsg.data.collective import _rank0_first
from gsg.data.folder import FOLDER_DEFAULT_IMAGE_SIZE as FOLDER_DEFAULT_IMAGE_SIZE
from gsg.data.folder import FOLDER_EVAL_CROP_RATIO as FOLDER_EVAL_CROP_RATIO
from gsg.data.folder import FOLDER_SMALL_MAX as FOLDER_SMALL_MAX
from gsg.data.folder import IMAGENET_MEAN as IMAGENET_MEAN
from gsg.data.folder import IMAGENET_STD as IMAGENET_STD
from gsg.data.folder import FolderImageDataset as FolderImageDataset
from gsg.data.folder import folder_eval_resize as folder_eval_resize
from gsg.data.standard import CIFAR10_CLASSES as CIFAR10_CLASSES
from gsg.data.standard import DEFAULT_DATA_DIR as DEFAULT_DATA_DIR
from gsg.data.standard import FASHION_MNIST_CLASSES as FASHION_MNIST_CLASSES
from gsg.data.standard import STL10_CLASSES as STL10_CLASSES
from gsg.data.standard import SYSTEM_DATA_DIRS as SYSTEM_DATA_DIRS
from gsg.data.standard import _load_torchvision_format
from gsg.data.synthetic import _SYNTHETIC_SPLIT_SEED
from gsg.data.synthetic import DISTRACTOR as DISTRACTOR
from gsg.data.synthetic import NOISE as NOISE
from gsg.data.synthetic import SYNTHETIC_CLASSES as SYNTHETIC_CLASSES
from gsg.data.synthetic import SYNTHETIC_DEFAULT_SIZE as SYNTHETIC_DEFAULT_SIZE
from gsg.data.synthetic import SYNTHETIC_IMAGE_SIZE as SYNTHETIC_IMAGE_SIZE
from gsg.data.synthetic import synthetic_images as synthetic_images
from gsg.errors import ConfigError, DataError

DATASETS = ("fashion-mnist", "mnist", "cifar10", "cifar100", "stl10", "imagefolder", "synthetic")
SPLITS = ("train", "test", "pretrain", "val")
_ALIASES = {"fmnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "cifar-10": "cifar10",
            "cifar-100": "cifar100", "stl-10": "stl10", "folder": "imagefolder",
            "image-folder": "imagefolder"}

_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": (IMAGENET_MEAN, IMAGENET_STD),
    "cifar100": (IMAGENET_MEAN, IMAGENET_STD),
    "stl10": (IMAGENET_MEAN, IMAGENET_STD),
    "imagefolder": (IMAGENET_MEAN, IMAGENET_STD),
}
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert("L")


# ------------------------------------------------------------------------------------- transformations


def _subset_indices(n: int, subset: int, seed: int) -> torch.Tensor:
    """A fixed random subset of size `subset`, the same for the same (n, seed), in ascending order."""
    if subset <= 0:
        raise ConfigError(f"subset must be a positive number of images, got {subset}")
    if subset > n:
        raise DataError(f"subset={subset} is larger than the dataset ({n} images); use subset <= {n} or none")
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:subset].sort().values


def _convert_channels(images: torch.Tensor, channels: int, chunk: int = 8192) -> torch.Tensor:
    """1 -> 3 by repetition; 3 -> 1 by PIL's integer luma (R·19595 + G·38470 + B·7471 + 2¹⁵) >> 16."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        w = torch.tensor([19595, 38470, 7471], dtype=torch.int32).view(1, 3, 1, 1)
        out = torch.empty(images.shape[0], 1, *images.shape[2:], dtype=torch.uint8)
        for i in range(0, images.shape[0], chunk):
            part = (images[i:i + chunk].to(torch.int32) * w).sum(1, keepdim=True)
            out[i:i + chunk] = ((part + 32768) >> 16).to(torch.uint8)
        return out
    raise ConfigError(f"channels must be 1 or 3, got {channels}")


def _convert_stats(mean: tuple[float, ...], std: tuple[float, ...],
                   channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Stats after a channel conversion; for 3 -> 1 the luma-weighted sums (exact for the mean; for the std an
    upper bound reached when channels are perfectly correlated, close for natural images)."""
    if len(mean) == channels:
        return mean, std
    if channels == 3:
        return mean * 3, std * 3
    return (sum(w * m for w, m in zip(_LUMA, mean, strict=True)),), (
        sum(w * s for w, s in zip(_LUMA, std, strict=True)),)


def _resize_square(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Resize square uint8 images to size x size, bilinear with antialiasing (as torchvision's Resize)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = torch.empty(*images.shape[:2], size, size, dtype=torch.uint8)
    for i in range(0, images.shape[0], chunk):
        x = torch.nn.functional.interpolate(images[i:i + chunk].float(), size=(size, size), mode="bilinear",
                                            antialias=True, align_corners=False)
        out[i:i + chunk] = x.round().clamp(0, 255).to(torch.uint8)
    return out


# ---------------------------------------------------------------------------------------------- registry


def _canonical(name: str) -> str:
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        close = difflib.get_close_matches(key, DATASETS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown dataset {name!r}; {hint}choose one of {', '.join(DATASETS)} "
                          f"(ImageNet and your own images: 'imagefolder' with --data-dir)")
    return key


def held_out_split(name: str, data_dir: str | Path | None) -> str:
    """The split evaluations test on: ``"test"``, or ``"val"`` for an image folder with ``val/`` but no
    ``test/`` (ImageNet's layout). The one rule for the kNN monitor, ``gsg knn``/``tsne``/``linear``."""
    if _canonical(name) == "imagefolder" and data_dir is not None:
        root = Path(data_dir).expanduser()
        if not (root / "test").is_dir() and (root / "val").is_dir():
            return "val"
    return "test"


def fixed_subset(ds: ImageDataset, subset: int | None, seed: int) -> ImageDataset:
    """``load_dataset(..., subset=subset, seed=seed)``'s images from an already loaded ``ds``; the whole of
    ``ds`` when ``subset`` is None or not smaller than it (where load_dataset would refuse)."""
    if subset is None or subset >= len(ds):
        return ds
    return ds.take(_subset_indices(len(ds), subset, seed))


def load_dataset(name: str, split: str = "train", *, data_dir: str | Path | None = None,
                 download: bool = True, image_size: int | None = None, subset: int | None = None,
                 seed: int = 0, on_bad_file: str = "skip", channels: int | None = None,
                 synthetic_size: int | None = None, check_images: str = "auto",
                 collective: bool = False) -> ImageDataset:
    """Load a dataset split as an ImageDataset (see the module docstring for where files are looked for).

    split: "train", "test", "pretrain" (= train; STL-10: train + 100k unlabeled with label -1), "val"
    (image folders only). image_size: side of the square images (default: native size; folders 224;
    synthetic 32), tensor datasets are resized once, bilinear + antialias. subset: a fixed random subset of
    that many images chosen with seed. channels: 1 or 3 (default: native; folders and synthetic 3); converting
    a dataset changes its mean/std accordingly. synthetic_size: number of synthetic images (default 512 train,
    256 test). check_images: how image-folder files are checked up front, see gsg.data.images.list_image_folder.
    collective: every process of an initialised torch.distributed group calls this together; rank 0 alone
    downloads missing files and lists (and checks) an image folder, the others wait and reuse its work (a
    download by every rank into one shared folder corrupts it; every rank opening 1.28M ImageNet files at
    start-up is slow). Without a process group it changes nothing.
    """
    key = _canonical(name)
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if split == "val" and key != "imagefolder":
        raise ConfigError(f"split 'val' exists only for image folders; {key} has 'train', 'test', 'pretrain'")
    if on_bad_file not in image_files.BAD_FILE_MODES:
        raise ConfigError(f"on_bad_file must be one of {image_files.BAD_FILE_MODES}, got {on_bad_file!r}")
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {channels}")
    if image_size is not None and image_size < 1:
        raise ConfigError(f"image_size must be positive, got {image_size}")
    data_dir = None if data_dir is None else Path(data_dir).expanduser()

    if key == "imagefolder":
        return _load_folder(split, data_dir, image_size, subset, seed, on_bad_file, channels or 3,
                            check_images, collective)

    if key == "synthetic":
        n = synthetic_size if synthetic_size is not None else SYNTHETIC_DEFAULT_SIZE[split]
        c = channels or 3
        images, labels = synthetic_images(n, channels=c, image_size=image_size or SYNTHETIC_IMAGE_SIZE,
                                          sample_seed=_SYNTHETIC_SPLIT_SEED[split])
        classes = [f"class_{k}" for k in range(SYNTHETIC_CLASSES)]
        ds = TensorImageDataset("synthetic", images, labels, classes, (0.5,) * c, (0.25,) * c)
        return ds.take(_subset_indices(len(ds), subset, seed)) if subset is not None else ds

    images_np, labels_np, classes = _load_torchvision_format(key, split, data_dir, download, collective)
    images, labels = torch.from_numpy(images_np), torch.from_numpy(labels_np)
    if subset is not None:
        idx = _subset_indices(len(labels), subset, seed)
        images, labels = images[idx], labels[idx]
    mean, std = _STATS[key]
    if channels is not None:
        images, (mean, std) = _convert_channels(images, channels), _convert_stats(mean, std, channels)
    if image_size is not None:
        images = _resize_square(images, image_size)
    return TensorImageDataset(key, images.contiguous(), labels, classes, mean, std)


def _load_folder(split: str, data_dir: Path | None, image_size: int | None, subset: int | None, seed: int,
                 on_bad_file: str, channels: int, check_images: str,
                 collective: bool = False) -> FolderImageDataset:
    if data_dir is None:
        raise ConfigError("dataset 'imagefolder' needs the folder: pass --data-dir (data_dir=) pointing to a "
                          "folder of images, with one subfolder per class if labelled (ImageNet: its root, "
                          "holding train/ and val/)")
    def listing_of(first: bool, shared: object = None) -> image_files.FolderListing:
        if not first:
            return shared  # type: ignore[return-value]
        return image_files.list_image_folder(image_files.image_folder_split(data_dir, split), on_bad_file=on_bad_file,
                                         check=check_images)

    listing = _rank0_first(listing_of, collective)
    folder = listing.root
    mean, std = _convert_stats(IMAGENET_MEAN, IMAGENET_STD, channels)
    ds = FolderImageDataset(listing.files, torch.from_numpy(listing.labels), listing.classes,
                            channels=channels, image_size=image_size or FOLDER_DEFAULT_IMAGE_SIZE, mean=mean,
                            std=std, on_bad_file=on_bad_file, root=folder,
                            bad_files=[str(p) for p, _ in listing.bad_files])
    return ds.take(_subset_indices(len(ds), subset, seed)) if subset is not None else ds
