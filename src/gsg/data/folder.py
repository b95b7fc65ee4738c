"""Image folders as a dataset: ``FolderImageDataset`` decodes files on demand, as evaluation views or crops.

``gsg.data.images`` lists the folder and decodes its files; this module wraps them in the ``ImageDataset``
interface, with ImageNet's evaluation view (``folder_eval_resize``) and per-file RandomResizedCrop training
views (``get_crops``, run in the loader's workers).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gsg.data import images as image_files
from gsg.data.base import ImageDataset, TensorImageDataset
from gsg.data.crops import sample_crop_boxes
from gsg.errors import ConfigError, DataError

__all__ = [
    "FOLDER_DEFAULT_IMAGE_SIZE",
    "FOLDER_EVAL_CROP_RATIO",
    "FOLDER_SMALL_MAX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FolderImageDataset",
    "folder_eval_resize",
]

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the GSG paper's Appendix B normalisation, also used for CIFAR/STL
IMAGENET_STD = (0.229, 0.224, 0.225)

FOLDER_DEFAULT_IMAGE_SIZE = 224
FOLDER_EVAL_CROP_RATIO = 0.875  # 224 / 256: torchvision's Resize(256) + CenterCrop(224) evaluation view
FOLDER_SMALL_MAX = 64  # up to this side, folders are evaluated on the whole shorter side (CIFAR-style)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


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
            return image_files.decode_image(path, self.channels, self.image_size, self.resize)
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
        (``crops.sample_crop_boxes``: 10 (area, log-ratio) tries on the image's own height x width, area
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
                img = image_files.open_image(path, self.channels)
            except _DECODE_ERRORS as e:
                self._unreadable(path, e)
                continue
            boxes[:, j] = sample_crop_boxes(uniforms[:, j].float(), img.height, img.width, scale, ratio)
            images[:, j] = image_files.resized_crops(img, boxes[:, j].numpy(), size)
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
