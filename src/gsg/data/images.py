"""Image folders (torchvision's ImageFolder convention): listing the files of a split, checking and decoding them
with PIL, and cropping several resized views out of one decoded image. Pure functions over paths returning uint8
numpy arrays (C, H, W); every failure raises :class:`gsg.errors.DataError` naming the file and what to do.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from gsg.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
SPLIT_FOLDERS = ("train", "val", "test")
BAD_FILE_MODES = ("skip", "error")
CHECK_MODES = ("auto", "full", "header", "none")
# Above this many files "auto" checks only headers: decoding every image of an ImageNet-size folder at
# start-up would take minutes; truncation found later, in get(), is still handled per on_bad_file.
AUTO_FULL_CHECK_MAX_FILES = 50_000


def is_image_file(name: str | Path) -> bool:
    """True for the extensions we decode (case-insensitive); hidden files (".x") are never images."""
    name = str(name)
    return not os.path.basename(name).startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _images_under(folder: Path) -> list[Path]:
    """All image files below folder, recursively, sorted, skipping hidden folders."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if is_image_file(f))
    return found


def image_folder_split(root: str | Path, split: str) -> Path:
    """The folder holding ``split``: ``root/<split>`` when it exists, else root itself for train/pretrain.

    "pretrain" uses ``root/train`` when there is one; the whole root serves train/pretrain only when it has no
    split subfolders at all. A "val" or "test" split needs its subfolder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a directory; pass --data-dir pointing "
                        f"to a folder of images (class subfolders optional)")
    sub = "train" if split == "pretrain" else split
    if (root / sub).is_dir():
        return root / sub
    present = [s for s in SPLIT_FOLDERS if (root / s).is_dir()]
    if sub == "train" and not present:
        return root
    raise DataError(f"image folder {root} has no '{sub}/' subfolder for split '{split}' (split folders "
                    f"present: {present or 'none'}); add {root / sub}/ or use split 'train'/'pretrain'")


@dataclass
class FolderListing:
    """Files of an image folder: labels index into classes, or are all -1 for an unlabelled folder."""

    root: Path
    files: list[Path]
    labels: np.ndarray
    classes: list[str]
    bad_files: list[tuple[Path, str]] = field(default_factory=list)  # (file, reason), skipped


def check_image(path: str | Path, full: bool = True) -> str | None:
    """None if PIL can read the file, else the reason. full=False only parses headers (PNG: also chunk CRCs).

    The full check decodes in JPEG draft mode (DCT scaled down by up to 8x): it still reads the whole entropy
    stream, so truncation is caught, at a fraction of the decoding cost.
    """
    try:
        with Image.open(path) as img:
            if full:
                img.draft(img.mode, (1, 1))
                img.load()
            else:
                img.verify()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError,
            Image.DecompressionBombError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def report_bad_files(where: Path, bad: Sequence[tuple[Path, str]], on_bad_file: str, limit: int = 20) -> None:
    """Raise DataError naming the first bad file ("error"), or log one warning listing them ("skip")."""
    if not bad:
        return
    if on_bad_file == "error":
        path, reason = bad[0]
        raise DataError(f"unreadable image file {path} ({reason}); delete or replace it, or pass "
                        f"on_bad_file='skip' to skip unreadable files")
    names = ", ".join(f"{p.relative_to(where) if p.is_relative_to(where) else p} ({r})"
                      for p, r in bad[:limit])
    more = f" and {len(bad) - limit} more" if len(bad) > limit else ""
    log.warning("skipped %d unreadable image file(s) in %s: %s%s", len(bad), where, names, more)


def list_image_folder(root: str | Path, *, on_bad_file: str = "skip", check: str = "auto",
                      threads: int | None = None) -> FolderListing:
    """List a folder of images, labelled or not (torchvision ImageFolder convention).

    - subfolders containing images (at any depth) -> one class per subfolder, classes sorted by name;
      image files lying directly in root are then ignored (logged), as ImageFolder does;
    - only image files directly in root -> unlabelled: every label is -1 (not one class per image).
    check: "full" decodes every file, "header" only opens it, "none" trusts the extension, "auto" is "full"
    up to AUTO_FULL_CHECK_MAX_FILES files and "header" above. Unreadable files are skipped with one warning
    listing them, or raise DataError naming the file with on_bad_file="error".
    """
    root = Path(root)
    if on_bad_file not in BAD_FILE_MODES:
        raise DataError(f"on_bad_file must be one of {BAD_FILE_MODES}, got {on_bad_file!r}")
    if check not in CHECK_MODES:
        raise DataError(f"check must be one of {CHECK_MODES}, got {check!r}")
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a directory")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    loose = [p for p in entries if p.is_file() and is_image_file(p.name)]
    class_files = {p.name: _images_under(p) for p in entries if p.is_dir()}
    class_files = {c: fs for c, fs in class_files.items() if fs}
    if class_files:
        if loose:
            log.warning("%s: ignoring %d image file(s) lying next to the class subfolders (e.g. %s); "
                        "move them into a class folder", root, len(loose), loose[0].name)
        classes = sorted(class_files)
        files = [f for c in classes for f in class_files[c]]
        labels = np.concatenate([np.full(len(class_files[c]), i, dtype=np.int64)
                                 for i, c in enumerate(classes)])
    elif loose:
        classes, files, labels = [], loose, np.full(len(loose), -1, dtype=np.int64)
    else:
        exts = " ".join(e[1:] for e in IMAGE_EXTENSIONS)
        raise DataError(f"no image files in {root} (extensions: {exts}). "
                        f"Expected either images directly in the folder (unlabelled) or one subfolder per "
                        f"class, root/<class>/<image> (labelled), optionally under train/, val/, test/")
    if check == "auto":
        check = "full" if len(files) <= AUTO_FULL_CHECK_MAX_FILES else "header"
    bad: list[tuple[Path, str]] = []
    if check != "none":
        workers = threads or min(32, 4 * (os.cpu_count() or 1))  # I/O-bound and PIL releases the GIL
        with ThreadPoolExecutor(workers) as pool:
            reasons = list(pool.map(lambda f: check_image(f, full=check == "full"), files, chunksize=64))
        bad = [(f, r) for f, r in zip(files, reasons, strict=True) if r is not None]
        report_bad_files(root, bad, on_bad_file)
        if bad:
            keep = np.array([r is None for r in reasons])
            files = [f for f, k in zip(files, keep, strict=True) if k]
            labels = labels[keep]
    if not files:
        raise DataError(f"every image file in {root} is unreadable ({len(bad)} file(s), e.g. {bad[0][0]}); "
                        f"check that the files are images of a supported format")
    return FolderListing(root, files, labels, classes, bad)


def _to_8bit(img: Image.Image, channels: int) -> Image.Image:
    """Any PIL mode -> "L" (channels=1) or "RGB" (channels=3), 8 bits per channel.

    16-bit greyscale is scaled by 255/65535 (PIL's own I;16 -> L conversion clips at 255 instead); palette
    images go through RGBA so a transparency index is honoured; alpha is then dropped, as torchvision does.
    """
    mode = img.mode
    if mode.startswith("I"):  # "I;16", "I;16B", "I" (32-bit int, used by PIL for 16-bit PNGs)
        arr = np.asarray(img).astype(np.float64)
        img = Image.fromarray(np.rint(np.clip(arr, 0, 65535) / 257.0).astype(np.uint8), mode="L")
    elif mode == "F":  # float TIFFs: [0, 1] if they fit, else taken as 0..255
        arr = np.asarray(img, dtype=np.float64)
        arr = arr * 255.0 if np.nanmax(arr, initial=0.0) <= 1.0 else arr
        img = Image.fromarray(np.rint(np.clip(np.nan_to_num(arr), 0, 255)).astype(np.uint8), mode="L")
    elif mode in ("P", "PA"):
        img = img.convert("RGBA")
    target = "L" if channels == 1 else "RGB"
    return img if img.mode == target else img.convert(target)


def open_image(path: str | Path, channels: int = 3) -> Image.Image:
    """Decode one image file at full resolution into a loaded PIL image, "L" (channels=1) or "RGB" (3).

    Raises the PIL/OS error on an unreadable file.
    """
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    with Image.open(path) as img:
        img.load()
        return _to_8bit(img, channels)


def _to_array(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None].copy() if arr.ndim == 2 else arr.transpose(2, 0, 1).copy()


def decode_image(path: str | Path, channels: int = 3, size: int | None = None,
                 resize: int | None = None) -> np.ndarray:
    """Decode one image file -> uint8 (C, H, W); with size, shorter side resized to ``resize`` (default
    size) and the centre size x size crop taken (torchvision's Resize(resize) + CenterCrop(size)).

    Resizing is bilinear with antialiasing (PIL's filter widens with the scale factor), torchvision's default
    for Resize: bicubic overshoots at edges (clipped values, ringing) and costs more, for no gain at the
    downscaling factors of SSL pipelines. Raises the PIL/OS error on an unreadable file.
    """
    import torchvision.transforms.functional as TF  # deferred: importing torchvision is slow
    from torchvision.transforms import InterpolationMode

    img = open_image(path, channels)
    if size is not None:
        if resize is not None and resize < size:
            raise DataError(f"the resize side {resize} is smaller than the crop {size}")
        img = TF.resize(img, resize or size, interpolation=InterpolationMode.BILINEAR, antialias=True)
        img = TF.center_crop(img, [size, size])
    return _to_array(img)


def resized_crops(img: Image.Image, boxes: np.ndarray, size: int) -> np.ndarray:
    """Crops (top, left, height, width) of one image, each resized to size x size -> uint8 (V, C, size, size).

    Exactly torchvision's ``resized_crop(img, top, left, h, w, [size, size], BILINEAR, antialias=True)`` on a
    PIL image, i.e. what RandomResizedCrop does once it has drawn its box: crop, then PIL's bilinear resize,
    whose filter support widens with the downscaling factor (antialiased).
    """
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    out = []
    for top, left, h, w in np.asarray(boxes, dtype=np.int64).tolist():  # a few views of one image
        crop = TF.resized_crop(img, top, left, h, w, [size, size], interpolation=InterpolationMode.BILINEAR,
                               antialias=True)
        out.append(_to_array(crop))
    return np.stack(out)
