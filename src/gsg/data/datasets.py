"""Dataset registry: find the data offline first, load it as uint8 images, and say how to get it when missing.

Resolution order for the torchvision-format datasets (``load_dataset``):
  1. ``data_dir`` (or ``~/.cache/gsg/data`` without one), in the torchvision layouts
     (``FashionMNIST/raw``, ``MNIST/raw``, ``cifar-10-batches-py``, ``cifar-100-python``, ``stl10_binary``),
     a lower-case folder named after the dataset, or the files lying directly in the folder;
  2. well-known system locations, ``SYSTEM_DATA_DIRS`` (Debian's ``dataset-fashion-mnist`` package);
  3. with ``download=True``, torchvision's downloader into that folder; any failure (offline) falls through to
  4. a DataError listing the files looked for, where, and how to get them.
"""

from __future__ import annotations

import difflib
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image

from gsg.data import formats
from gsg.data.views import sample_crop_boxes
from gsg.errors import ConfigError, DataError

log = logging.getLogger(__name__)
_T = TypeVar("_T")

DATASETS = ("fashion-mnist", "mnist", "cifar10", "cifar100", "stl10", "imagefolder", "synthetic")
SPLITS = ("train", "test", "pretrain", "val")
_ALIASES = {"fmnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "cifar-10": "cifar10",
            "cifar-100": "cifar100", "stl-10": "stl10", "folder": "imagefolder",
            "image-folder": "imagefolder"}

DEFAULT_DATA_DIR = Path.home() / ".cache" / "gsg" / "data"
# System-wide installs searched after data_dir; a module constant so that tests can point it elsewhere.
SYSTEM_DATA_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the GSG paper's Appendix B normalisation, also used for CIFAR/STL
IMAGENET_STD = (0.229, 0.224, 0.225)
_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": (IMAGENET_MEAN, IMAGENET_STD),
    "cifar100": (IMAGENET_MEAN, IMAGENET_STD),
    "stl10": (IMAGENET_MEAN, IMAGENET_STD),
    "imagefolder": (IMAGENET_MEAN, IMAGENET_STD),
}
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert("L")

FOLDER_DEFAULT_IMAGE_SIZE = 224
FOLDER_EVAL_CROP_RATIO = 0.875  # 224 / 256: torchvision's Resize(256) + CenterCrop(224) evaluation view
FOLDER_SMALL_MAX = 64  # up to this side, folders are evaluated on the whole shorter side (CIFAR-style)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
SYNTHETIC_DEFAULT_SIZE = {"train": 512, "pretrain": 512, "test": 256}
SYNTHETIC_IMAGE_SIZE = 32
SYNTHETIC_CLASSES = 10
DISTRACTOR, NOISE = 1.0, 0.35  # synthetic nuisance strengths, relative to the class templates' pixel std

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


# ------------------------------------------------------------------------------------------ dataset types


class ImageDataset(ABC):
    """Images as uint8 (C, S, S) squares with int64 labels (-1 where unlabelled), plus normalisation stats."""

    name: str
    channels: int
    image_size: int
    classes: list[str]
    labels: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_memory: bool = False

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @abstractmethod
    def get(self, indices: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, S, S) images at the given indices, on the dataset's device."""

    @abstractmethod
    def take(self, indices: torch.Tensor) -> ImageDataset:
        """A new dataset of the given items, in that order."""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, n={len(self)}, channels={self.channels}, "
                f"image_size={self.image_size}, classes={self.num_classes})")


class TensorImageDataset(ImageDataset):
    """All images in one uint8 tensor (N, C, S, S); ``to(device)`` keeps them on an accelerator."""

    in_memory = True

    def __init__(self, name: str, images: torch.Tensor, labels: torch.Tensor, classes: list[str],
                 mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != images.shape[-2]:
            raise ValueError(f"images must be uint8 (N, C, S, S), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels {tuple(labels.shape)} do not match {images.shape[0]} images")
        self.name, self.images, self.labels = name, images, labels.to(torch.int64)
        self.classes, self.mean, self.std = list(classes), tuple(mean), tuple(std)
        self.channels, self.image_size = int(images.shape[1]), int(images.shape[-1])

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: str | torch.device) -> TensorImageDataset:
        """Move images and labels to device, in place (a dataset may be GBs: no second copy); returns self."""
        self.images, self.labels = self.images.to(device), self.labels.to(device)
        return self

    def get(self, indices: torch.Tensor) -> torch.Tensor:
        return self.images[indices.to(self.images.device)]

    def take(self, indices: torch.Tensor) -> TensorImageDataset:
        idx = indices.to(self.images.device)
        return TensorImageDataset(self.name, self.images[idx], self.labels[idx], self.classes, self.mean,
                                  self.std)


def folder_eval_resize(image_size: int) -> int:
    """Shorter side an image folder is resized to before its centre image_size crop (the evaluation view).

    ImageNet-size images (> 64 px, where the imagenet recipe and linear protocol apply): image_size / 0.875,
    i.e. torchvision's Resize(256) + CenterCrop(224), the view of SimSiam's and the GSG authors' linear probe
    (main_lincls.py). Smaller images: the whole shorter side (CIFAR-style, no border dropped).
    """
    return round(image_size / FOLDER_EVAL_CROP_RATIO) if image_size > FOLDER_SMALL_MAX else image_size


class FolderImageDataset(ImageDataset):
    """Image files decoded on demand with PIL.

    ``get`` gives the evaluation view: shorter side resized to ``resize`` (default
    ``folder_eval_resize(image_size)``: 256 for 224), then the centre image_size square. ``get_crops`` gives
    training views: RandomResizedCrop boxes on the full-resolution image, resized to a given size.

    Holds only paths and labels, so it pickles cheaply into DataLoader worker processes. A file that fails to
    decode (e.g. changed since it was listed) raises DataError with on_bad_file="error"; with "skip"
    it is logged once and returned as a black image, because a batch cannot shrink.
    """

    def __init__(self, files: list[str | Path], labels: torch.Tensor, classes: list[str], *,
                 channels: int = 3, image_size: int = FOLDER_DEFAULT_IMAGE_SIZE,
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
                 name: str = "imagefolder", on_bad_file: str = "skip",
                 root: str | Path | None = None, bad_files: list[str] | None = None,
                 resize: int | None = None) -> None:
        if channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3 for image folders, got {channels}")
        if len(files) != labels.shape[0]:
            raise ValueError(f"{len(files)} files but {labels.shape[0]} labels")
        self.files = [str(f) for f in files]
        self.labels = labels.to(torch.int64).cpu()
        self.classes, self.channels, self.image_size = list(classes), channels, int(image_size)
        self.resize = int(resize) if resize is not None else folder_eval_resize(self.image_size)
        if self.resize < self.image_size:
            raise ConfigError(f"resize ({self.resize}) must be at least image_size ({self.image_size})")
        self.mean, self.std, self.name, self.on_bad_file = tuple(mean), tuple(std), name, on_bad_file
        self.root = None if root is None else str(root)
        self.bad_files = list(bad_files or [])  # files skipped when the folder was listed
        self._warned: set[str] = set()

    def _unreadable(self, path: str, e: Exception) -> None:
        """Raise (on_bad_file="error") or warn once (the caller then uses a black stand-in)."""
        if self.on_bad_file == "error":
            raise DataError(f"unreadable image file {path} ({type(e).__name__}: {e}); delete or replace "
                            f"it, or use on_bad_file='skip'") from e
        if path not in self._warned:
            self._warned.add(path)
            log.warning("unreadable image file %s (%s); using a black image in its place", path, e)

    def _decode(self, path: str) -> np.ndarray:
        try:
            return formats.decode_image(path, self.channels, self.image_size, self.resize)
        except _DECODE_ERRORS as e:
            self._unreadable(path, e)
            return np.zeros((self.channels, self.image_size, self.image_size), dtype=np.uint8)

    def get(self, indices: torch.Tensor) -> torch.Tensor:
        idx = indices.reshape(-1).tolist()
        if not idx:
            return torch.empty(0, self.channels, self.image_size, self.image_size, dtype=torch.uint8)
        return torch.from_numpy(np.stack([self._decode(self.files[i]) for i in idx]))

    def get_crops(self, indices: torch.Tensor, uniforms: torch.Tensor, size: int, scale: tuple[float, float],
                  ratio: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
        """Random resized crops of the full-resolution images: (uint8 (V, B, C, size, size), boxes (V, B, 4)).

        ``uniforms`` (V, B, 2 * CROP_TRIES + 2) drive torchvision's RandomResizedCrop draw
        (``views.sample_crop_boxes``: 10 (area, log-ratio) tries on the image's own height x width, area
        scale of the full image, then the fallback) for view v of image b; each file is decoded once for its
        V views. Boxes are (top, left, height, width) in source pixels; an unreadable file ("skip") gives
        black views and zero boxes.
        """
        idx = indices.reshape(-1).tolist()
        if uniforms.ndim != 3 or uniforms.shape[1] != len(idx):
            raise ValueError(f"uniforms must be (views, {len(idx)}, draws), got {tuple(uniforms.shape)}")
        v = uniforms.shape[0]
        images = np.zeros((v, len(idx), self.channels, size, size), dtype=np.uint8)
        boxes = torch.zeros(v, len(idx), 4)
        for j, i in enumerate(idx):  # per-image decoding is inherent; an image's V boxes are drawn at once
            path = self.files[i]
            try:
                img = formats.open_image(path, self.channels)
            except _DECODE_ERRORS as e:
                self._unreadable(path, e)
                continue
            boxes[:, j] = sample_crop_boxes(uniforms[:, j].float(), img.height, img.width, scale, ratio)
            images[:, j] = formats.resized_crops(img, boxes[:, j].numpy(), size)
        return torch.from_numpy(images), boxes

    def take(self, indices: torch.Tensor) -> FolderImageDataset:
        idx = indices.reshape(-1).tolist()
        return FolderImageDataset([self.files[i] for i in idx], self.labels[idx], self.classes,
                                  channels=self.channels, image_size=self.image_size, mean=self.mean,
                                  std=self.std, name=self.name, on_bad_file=self.on_bad_file, root=self.root,
                                  bad_files=self.bad_files, resize=self.resize)

    def to_memory(self, chunk: int = 512) -> TensorImageDataset:
        """Decode every image once into a TensorImageDataset (for folders that fit in memory)."""
        n = len(self)
        images = torch.empty(n, self.channels, self.image_size, self.image_size, dtype=torch.uint8)
        for i in range(0, n, chunk):
            images[i:i + chunk] = self.get(torch.arange(i, min(i + chunk, n)))
        return TensorImageDataset(self.name, images, self.labels.clone(), self.classes, self.mean, self.std)

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["_warned"] = set()
        return state


# ------------------------------------------------------------------------------------ on-disk resolution

# Per dataset and split: groups of alternative file names, all groups needed, found in one folder.
_IDX_FILES = {
    "train": [("train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"),
              ("train-labels-idx1-ubyte", "train-labels-idx1-ubyte.gz")],
    "test": [("t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"),
             ("t10k-labels-idx1-ubyte", "t10k-labels-idx1-ubyte.gz")],
}
_FILES: dict[str, dict[str, list[tuple[str, ...]]]] = {
    "fashion-mnist": _IDX_FILES,
    "mnist": _IDX_FILES,
    "cifar10": {"train": [(f"data_batch_{i}",) for i in range(1, 6)], "test": [("test_batch",)]},
    "cifar100": {"train": [("train",)], "test": [("test",)]},
    "stl10": {"train": [("train_X.bin",), ("train_y.bin",)], "test": [("test_X.bin",), ("test_y.bin",)],
              "pretrain": [("train_X.bin",), ("train_y.bin",), ("unlabeled_X.bin",)]},
}
_SUBDIRS = {
    "fashion-mnist": ("FashionMNIST/raw", "fashion-mnist", "fashion_mnist", "FashionMNIST", ""),
    "mnist": ("MNIST/raw", "mnist", "MNIST", ""),
    "cifar10": ("cifar-10-batches-py", "cifar10", ""),
    "cifar100": ("cifar-100-python", "cifar100", ""),
    "stl10": ("stl10_binary", "stl10", ""),
}
_TITLES = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100",
           "stl10": "STL-10"}
_HOWTO = {
    "fashion-mnist": "install Debian's package: `sudo apt-get install dataset-fashion-mnist` (files go "
                     "to /usr/share/datasets/fashion-mnist, found automatically), or download the four .gz "
                     "files from http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ into a folder "
                     "and pass it with --data-dir",
    "mnist": "download the four .gz files from https://ossci-datasets.s3.amazonaws.com/mnist/ (mirror of "
             "http://yann.lecun.com/exdb/mnist/) into a folder and pass it with --data-dir",
    "cifar10": "download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, extract it (it creates "
               "cifar-10-batches-py/) into a folder and pass that folder with --data-dir",
    "cifar100": "download https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz, extract it (it creates "
                "cifar-100-python/) into a folder and pass that folder with --data-dir",
    "stl10": "download http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz (2.5 GB), extract it (it "
             "creates stl10_binary/) into a folder and pass that folder with --data-dir",
}


def _candidate_dirs(name: str, roots: list[Path]) -> list[Path]:
    dirs: list[Path] = []
    for root in [*roots, *SYSTEM_DATA_DIRS.get(name, ())]:
        for sub in _SUBDIRS[name]:
            d = root / sub if sub else root
            if d not in dirs:
                dirs.append(d)
    return dirs


def _find(name: str, split: str, dirs: list[Path]) -> tuple[Path, list[Path]] | None:
    """The first folder holding every file group of the split, and the chosen file of each group."""
    groups = _FILES[name].get(split, _FILES[name]["train"])
    for d in dirs:
        chosen = [next((d / f for f in group if (d / f).is_file()), None) for group in groups]
        if all(c is not None for c in chosen):
            return d, chosen  # type: ignore[return-value]
    return None


def _download(name: str, root: Path) -> None:
    """Fetch a dataset with torchvision's downloader into root (creating the layout _SUBDIRS looks for)."""
    import torchvision.datasets as tvd

    root.mkdir(parents=True, exist_ok=True)
    if name == "fashion-mnist":
        tvd.FashionMNIST(str(root), train=True, download=True)
    elif name == "mnist":
        tvd.MNIST(str(root), train=True, download=True)
    elif name == "cifar10":
        tvd.CIFAR10(str(root), train=True, download=True)
    elif name == "cifar100":
        tvd.CIFAR100(str(root), train=True, download=True)
    elif name == "stl10":
        tvd.STL10(str(root), split="train+unlabeled", download=True)
    else:  # pragma: no cover - guarded by the caller
        raise ValueError(name)


def _missing(name: str, split: str, dirs: list[Path], download: bool, failure: str | None) -> DataError:
    groups = _FILES[name].get(split, _FILES[name]["train"])
    wanted = ", ".join(g[0] + ("[.gz]" if len(g) > 1 else "") for g in groups)
    where = "\n  ".join(str(d) for d in dirs)
    if not download:
        tried = "Downloading was disabled (download=False)."
    else:
        tried = f"The download failed: {failure}."
    return DataError(f"{_TITLES[name]} ({split} split) not found. Looked for {wanted} in:\n  {where}\n"
                     f"{tried}\nTo get it: {_HOWTO[name]}; or run once with downloading enabled on a "
                     f"machine with network access.")


def _locate(name: str, split: str, data_dir: Path | None, download: bool) -> tuple[Path, list[Path]]:
    roots = [data_dir if data_dir is not None else DEFAULT_DATA_DIR]
    dirs = _candidate_dirs(name, roots)
    found = _find(name, split, dirs)
    failure = None
    if found is None and download:
        try:
            _download(name, roots[0])
        except Exception as e:  # offline, DNS, HTTP, checksum, disk: all mean "not available", reported below
            failure = f"{type(e).__name__}: {e}"
            log.info("download of %s into %s failed: %s", name, roots[0], failure)
        found = _find(name, split, dirs)
        if found is None and failure is None:
            failure = f"torchvision finished but the files are not in {roots[0]}"
    if found is None:
        raise _missing(name, split, dirs, download, failure)
    log.info("%s %s: reading %s", name, split, found[0])
    return found


# ------------------------------------------------------------------------------------------ format loaders


def _load_idx(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = formats.read_idx_images(files[0]), formats.read_idx_labels(files[1])
    if len(images) != len(labels):
        raise DataError(f"{files[0]} holds {len(images)} images but {files[1]} {len(labels)} labels; "
                        f"the files come from different splits or one is damaged: download them again")
    return images, labels


def _load_cifar10(folder: Path, files: list[Path]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    parts = [formats.read_cifar_batch(f, "labels") for f in files]
    meta = folder / "batches.meta"
    classes = formats.read_cifar_meta(meta, "label_names") if meta.is_file() else CIFAR10_CLASSES
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), classes


def _load_cifar100(folder: Path, files: list[Path]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    images, labels = formats.read_cifar_batch(files[0], "fine_labels")
    meta = folder / "meta"
    classes = [str(i) for i in range(100)]
    if meta.is_file():
        classes = formats.read_cifar_meta(meta, "fine_label_names")
    return images, labels, classes


def _load_stl10(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = formats.read_stl10_images(files[0]), formats.read_stl10_labels(files[1])
    if len(images) != len(labels):
        raise DataError(f"{files[0]} holds {len(images)} images but {files[1]} {len(labels)} labels: "
                        f"download STL-10 again")
    if len(files) == 3:  # pretrain: + the 100k unlabeled images, label -1
        extra = formats.read_stl10_images(files[2])
        images = np.concatenate([images, extra])
        labels = np.concatenate([labels, np.full(len(extra), -1, dtype=np.int64)])
    return images, labels


def _load_torchvision_format(name: str, split: str, data_dir: Path | None, download: bool,
                             collective: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
    def locate(first: bool, shared: object = None) -> tuple[Path, list[Path]]:
        # The other ranks look again once rank 0 is done: its download is complete by then.
        return _locate(name, split, data_dir, download and first)

    folder, files = _rank0_first(locate, collective)
    if name in ("fashion-mnist", "mnist"):
        images, labels = _load_idx(files)
        classes = FASHION_MNIST_CLASSES if name == "fashion-mnist" else [str(i) for i in range(10)]
        return images, labels, classes
    if name == "cifar10":
        return _load_cifar10(folder, files)
    if name == "cifar100":
        return _load_cifar100(folder, files)
    images, labels = _load_stl10(files)
    names_file = folder / "class_names.txt"
    classes = names_file.read_text().split() if names_file.is_file() else STL10_CLASSES
    return images, labels, classes if len(classes) == 10 else STL10_CLASSES


# --------------------------------------------------------------------------------------------- synthetic

_SYNTHETIC_TEMPLATE_SEED = 20231  # class patterns are shared by every split; only the samples differ
_SYNTHETIC_SPLIT_SEED = {"train": 1, "pretrain": 1, "test": 2}


def _waves(freqs: torch.Tensor, phase: torch.Tensor, amp: torch.Tensor, shift: torch.Tensor,
           coord: torch.Tensor) -> torch.Tensor:
    """Σ_m amp[b,m,c] cos(2π f[b,m]·((y, x) - shift[b]) + phase[b,m]) -> (B, C, S, S)."""
    y = coord[None, None, :, None] - shift[:, None, 0, None, None]  # (B, 1, S, 1)
    x = coord[None, None, None, :] - shift[:, None, 1, None, None]  # (B, 1, 1, S)
    ang = 2 * math.pi * (freqs[..., 0, None, None] * y + freqs[..., 1, None, None] * x)
    return torch.einsum("bmyx,bmc->bcyx", torch.cos(ang + phase[..., None, None]), amp)


def _blob(centre: torch.Tensor, amp: torch.Tensor, shift: torch.Tensor, coord: torch.Tensor,
          sigma: float = 0.15) -> torch.Tensor:
    """amp[b,c] exp(-|(y, x) - centre[b] - shift[b]|² / 2σ²), distance wrapped on the unit torus."""
    dy = coord[None, :] - shift[:, 0, None] - centre[:, 0, None]
    dx = coord[None, :] - shift[:, 1, None] - centre[:, 1, None]
    dy, dx = dy - dy.round(), dx - dx.round()
    g = torch.exp(-(dy[:, :, None] ** 2 + dx[:, None, :] ** 2) / (2 * sigma**2))
    return amp[:, :, None, None] * g[:, None]


def _random_freqs(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """Integer frequencies in [-3, 3]², not (0, 0); periodic on [0, 1)², so shifts wrap."""
    f = torch.randint(-3, 4, (*shape, 2), generator=g).double()
    f[(f == 0).all(-1)] = 1.0
    return f


def synthetic_images(n: int, *, channels: int = 3, image_size: int = SYNTHETIC_IMAGE_SIZE,
                     num_classes: int = SYNTHETIC_CLASSES, sample_seed: int = 1,
                     distractor: float = DISTRACTOR, noise: float = NOISE,
                     chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic labelled images: each class a smooth periodic pattern, each image a disturbed copy.

    Class k: t_k(c, p) = Σ_{m<3} a_kmc cos(2π f_km·p + φ_km) + b_kc exp(-|p - μ_k|²_wrap / 2σ²), p = (y, x)
    in [0, 1)², integer f_km ∈ [-3, 3]², σ = 0.15. Image i of class k:
        x_i(c, p) = g_ic s_i t_k(c, p - δ_i) + λ d_i(c, p) + ε,
    shift δ_i ~ U[-1/4, 1/4]², contrast s_i ~ U[0.7, 1.3], colour gain g_ic ~ U[0.7, 1.3], a class-free
    distractor d_i (2 random waves, like a template's) of weight λ = distractor, and ε ~ N(0, noise²), all in
    units of the templates' pixel std σ_t; stored as uint8 255·clip(0.5 + 0.2 x/σ_t, 0, 1) (pixel mean ≈ 0.5,
    std ≈ 0.27). Raw-pixel 1-NN accuracy (512 train, 256 test, 32 px): 89% with 3 channels, 71% with 1.
    Shifts, colour and contrast are what the augmentations of SSL recipes are invariant to.
    Returns (uint8 (n, C, S, S), int64 (n,) labels, balanced).
    """
    k_cls, coord = num_classes, torch.arange(image_size, dtype=torch.float64) / image_size
    gt = torch.Generator().manual_seed(_SYNTHETIC_TEMPLATE_SEED)
    t_freqs, t_phase = _random_freqs((k_cls, 3), gt), torch.rand(k_cls, 3, generator=gt, dtype=torch.float64)
    t_amp = torch.randn(k_cls, 3, channels, generator=gt, dtype=torch.float64)
    t_centre = torch.rand(k_cls, 2, generator=gt, dtype=torch.float64)
    t_blob = 1.5 * torch.randn(k_cls, channels, generator=gt, dtype=torch.float64)
    t_phase = t_phase * 2 * math.pi

    def template(lab: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        return (_waves(t_freqs[lab], t_phase[lab], t_amp[lab], shift, coord)
                + _blob(t_centre[lab], t_blob[lab], shift, coord))

    scale = template(torch.arange(k_cls), torch.zeros(k_cls, 2, dtype=torch.float64)).std().item()

    gs = torch.Generator().manual_seed(sample_seed)
    labels = (torch.arange(n) % k_cls)[torch.randperm(n, generator=gs)]
    shift = (torch.rand(n, 2, generator=gs, dtype=torch.float64) - 0.5) / 2
    gain = (0.7 + 0.6 * torch.rand(n, 1, generator=gs, dtype=torch.float64)) * (
        0.7 + 0.6 * torch.rand(n, channels, generator=gs, dtype=torch.float64))
    d_freqs = _random_freqs((n, 2), gs)
    d_phase = 2 * math.pi * torch.rand(n, 2, generator=gs, dtype=torch.float64)
    d_amp = torch.randn(n, 2, channels, generator=gs, dtype=torch.float64)
    eps = torch.randn(n, channels, image_size, image_size, generator=gs, dtype=torch.float32)

    out = torch.empty(n, channels, image_size, image_size, dtype=torch.uint8)
    for i in range(0, n, chunk):
        sl = slice(i, min(i + chunk, n))
        x = gain[sl, :, None, None] * template(labels[sl], shift[sl])
        still = torch.zeros_like(shift[sl])
        x = x + distractor * scale * _waves(d_freqs[sl], d_phase[sl], d_amp[sl], still, coord)
        x = x + noise * scale * eps[sl]
        out[sl] = torch.round(255 * (0.5 + 0.2 * x / scale).clamp(0, 1)).to(torch.uint8)
    return out, labels


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
    256 test). check_images: how image-folder files are checked up front, see formats.list_image_folder.
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
    if on_bad_file not in formats.BAD_FILE_MODES:
        raise ConfigError(f"on_bad_file must be one of {formats.BAD_FILE_MODES}, got {on_bad_file!r}")
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
    def listing_of(first: bool, shared: object = None) -> formats.FolderListing:
        if not first:
            return shared  # type: ignore[return-value]
        return formats.list_image_folder(formats.image_folder_split(data_dir, split), on_bad_file=on_bad_file,
                                         check=check_images)

    listing = _rank0_first(listing_of, collective)
    folder = listing.root
    mean, std = _convert_stats(IMAGENET_MEAN, IMAGENET_STD, channels)
    ds = FolderImageDataset(listing.files, torch.from_numpy(listing.labels), listing.classes,
                            channels=channels, image_size=image_size or FOLDER_DEFAULT_IMAGE_SIZE, mean=mean,
                            std=std, on_bad_file=on_bad_file, root=folder,
                            bad_files=[str(p) for p, _ in listing.bad_files])
    return ds.take(_subset_indices(len(ds), subset, seed)) if subset is not None else ds

