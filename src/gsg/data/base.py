"""The dataset interface: ``ImageDataset`` (uint8 squares, labels, normalisation stats) and its in-memory kind.

Every loader of ``gsg.data`` returns one of these: ``TensorImageDataset`` (all images in one tensor) or
``gsg.data.folder.FolderImageDataset`` (files decoded on demand).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

__all__ = ["ImageDataset", "TensorImageDataset"]


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
