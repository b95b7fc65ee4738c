"""The standard datasets (Fashion-MNIST, MNIST, CIFAR-10/100, STL-10) on disk: find, download, read.

Resolution order (``gsg.data.datasets.load_dataset``):
  1. ``data_dir`` (or ``~/.cache/gsg/data`` without one), in the torchvision layouts
     (``FashionMNIST/raw``, ``MNIST/raw``, ``cifar-10-batches-py``, ``cifar-100-python``, ``stl10_binary``),
     a lower-case folder named after the dataset, or the files lying directly in the folder;
  2. well-known system locations, ``SYSTEM_DATA_DIRS`` (Debian's ``dataset-fashion-mnist`` package);
  3. with ``download=True``, torchvision's downloader into that folder; any failure (offline) falls through to
  4. a DataError listing the files looked for, where, and how to get them.

The files are then read with ``gsg.data.formats`` into uint8 arrays with labels and class names. Tests
patch ``SYSTEM_DATA_DIRS``, ``DEFAULT_DATA_DIR`` and ``_download`` here, where they are looked up.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from gsg.data import formats
from gsg.data.collective import _rank0_first
from gsg.errors import DataError

__all__ = ["CIFAR10_CLASSES", "DEFAULT_DATA_DIR", "FASHION_MNIST_CLASSES", "STL10_CLASSES", "SYSTEM_DATA_DIRS"]

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path.home() / ".cache" / "gsg" / "data"
# System-wide installs searched after data_dir; a module constant so that tests can point it elsewhere.
SYSTEM_DATA_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


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
