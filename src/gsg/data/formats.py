"""Readers of the datasets' own on-disk formats: pure functions returning uint8 numpy arrays (N, C, H, W).

- IDX (MNIST, Fashion-MNIST): big-endian header ``0 0 <type> <ndim>`` then ndim int32 sizes, then the data.
- CIFAR-10/100 "python version": pickled dicts with ``data`` (N, 3072) uint8 rows (R plane, G plane, B plane,
  each 32x32 row-major) and ``labels`` / ``fine_labels``.
- STL-10 binary: uint8 images 3x96x96, each channel stored column-major; labels uint8 1..10.
- Image folders (torchvision ImageFolder convention) are listed and decoded in :mod:`gsg.data.images`; their
  names are re-exported here.

Every failure to read raises :class:`gsg.errors.DataError` naming the file and what to do about it.
"""

from __future__ import annotations

import gzip
import pickle
import zlib
from pathlib import Path
from typing import BinaryIO, ClassVar

import numpy as np

from gsg.data.images import AUTO_FULL_CHECK_MAX_FILES as AUTO_FULL_CHECK_MAX_FILES
from gsg.data.images import BAD_FILE_MODES as BAD_FILE_MODES
from gsg.data.images import CHECK_MODES as CHECK_MODES
from gsg.data.images import IMAGE_EXTENSIONS as IMAGE_EXTENSIONS
from gsg.data.images import SPLIT_FOLDERS as SPLIT_FOLDERS
from gsg.data.images import FolderListing as FolderListing
from gsg.data.images import check_image as check_image
from gsg.data.images import decode_image as decode_image
from gsg.data.images import image_folder_split as image_folder_split
from gsg.data.images import is_image_file as is_image_file
from gsg.data.images import list_image_folder as list_image_folder
from gsg.data.images import open_image as open_image
from gsg.data.images import report_bad_files as report_bad_files
from gsg.data.images import resized_crops as resized_crops
from gsg.errors import DataError

# --------------------------------------------------------------------------------------------------- IDX

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_REDOWNLOAD = "delete it and download it again"


def _open_maybe_gzip(path: Path) -> BinaryIO:
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")  # the caller closes it


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed, detected from the content) into an array of its shape."""
    path = Path(path)
    try:
        with _open_maybe_gzip(path) as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (EOFError, OSError, zlib.error) as e:  # truncated or corrupt gzip stream
        raise DataError(f"{path}: cannot decompress ({e}); the file is truncated or corrupt: "
                        f"{_REDOWNLOAD}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'}); "
                        f"expected an MNIST-format file such as train-images-idx3-ubyte[.gz]")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes): {_REDOWNLOAD}")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(f"{path}: file is {what}: header gives shape {shape} = {expected} bytes, "
                        f"file has {len(raw)}: {_REDOWNLOAD}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def read_idx_images(path: str | Path) -> np.ndarray:
    """IDX image file (magic 0x00000803: uint8, 3 dims) -> uint8 (N, 1, H, W)."""
    arr = read_idx(path)
    if arr.dtype != np.uint8 or arr.ndim != 3:
        raise DataError(f"{path}: expected an IDX image file (uint8, 3 dimensions, magic 2051), "
                        f"got {arr.dtype} with {arr.ndim} dimensions; is it a label file?")
    return arr[:, None].copy()


def read_idx_labels(path: str | Path) -> np.ndarray:
    """IDX label file (magic 0x00000801: uint8, 1 dim) -> int64 (N,)."""
    arr = read_idx(path)
    if arr.dtype != np.uint8 or arr.ndim != 1:
        raise DataError(f"{path}: expected an IDX label file (uint8, 1 dimension, magic 2049), "
                        f"got {arr.dtype} with {arr.ndim} dimensions; is it an image file?")
    return arr.astype(np.int64)


# ------------------------------------------------------------------------------------------------- CIFAR


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that only builds numpy arrays: a CIFAR batch holds nothing else.

    Pickle is the CIFAR datasets' own official format, so we must unpickle; we do it only for files with the
    dataset's well-known names in the user's data directory, and refuse any other global, so that a tampered
    file cannot run code.
    """

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes at protocol 2 (batches re-saved by Python 3)
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of the CIFAR format")
        return super().find_class(module, name)


def _load_cifar_pickle(path: Path) -> dict[str, object]:
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            ImportError, OSError) as e:
        raise DataError(f"{path}: not a readable CIFAR python batch ({e}); the file is truncated, corrupt "
                        f"or of another format: {_REDOWNLOAD}") from e
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict (CIFAR python batch), got {type(obj).__name__}")
    # Python-2 pickles load with bytes keys under encoding="bytes"; accept str keys too.
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def read_cifar_batch(path: str | Path, label_key: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python batch -> (uint8 (N, 3, 32, 32), int64 (N,)); label_key "labels" or "fine_labels"."""
    path = Path(path)
    d = _load_cifar_pickle(path)
    if "data" not in d or label_key not in d:
        raise DataError(f"{path}: CIFAR batch without 'data' or '{label_key}' (keys: {sorted(d)}); "
                        f"CIFAR-10 batches have 'labels', CIFAR-100 files 'fine_labels'")
    data, labels = np.asarray(d["data"]), np.asarray(d[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(f"{path}: malformed CIFAR batch: data {data.dtype}{tuple(data.shape)}, "
                        f"{len(labels)} labels (expected uint8 (N, 3072) and N labels): {_REDOWNLOAD}")
    return data.reshape(-1, 3, 32, 32).copy(), labels


def read_cifar_meta(path: str | Path, key: str) -> list[str]:
    """Class names from ``batches.meta`` (key "label_names") or CIFAR-100 ``meta`` ("fine_label_names")."""
    d = _load_cifar_pickle(Path(path))
    if key not in d:
        raise DataError(f"{path}: CIFAR meta file without '{key}' (keys: {sorted(d)})")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in d[key]]  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------------ STL-10

STL10_SIDE = 96
_STL10_IMAGE_BYTES = 3 * STL10_SIDE * STL10_SIDE


def read_stl10_images(path: str | Path, chunk: int = 4096) -> np.ndarray:
    """STL-10 ``*_X.bin`` -> uint8 (N, 3, 96, 96) in (c, y, x) order.

    Each channel is stored column-major: the byte at offset x*96 + y is pixel (y, x), so a plain reshape gives
    (N, 3, x, y) and the last two axes are swapped. Done through a memory map in chunks so
    the 2.7 GB unlabeled file is not held twice.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    if size == 0 or size % _STL10_IMAGE_BYTES:
        raise DataError(f"{path}: {size} bytes is not a whole number of STL-10 images ({_STL10_IMAGE_BYTES} "
                        f"bytes each); the file is truncated or not an STL-10 *_X.bin file: {_REDOWNLOAD}")
    raw = np.memmap(path, dtype=np.uint8, mode="r").reshape(-1, 3, STL10_SIDE, STL10_SIDE)
    out = np.empty_like(raw)
    for i in range(0, len(raw), chunk):
        out[i:i + chunk] = raw[i:i + chunk].transpose(0, 1, 3, 2)
    del raw
    return out


def read_stl10_labels(path: str | Path) -> np.ndarray:
    """STL-10 ``*_y.bin`` (uint8 1..10) -> int64 (N,) in 0..9."""
    path = Path(path)
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    if raw.size == 0 or raw.min() < 1 or raw.max() > 10:
        raise DataError(f"{path}: not an STL-10 label file (labels must be 1..10, found "
                        f"{'none' if raw.size == 0 else f'{raw.min()}..{raw.max()}'}): {_REDOWNLOAD}")
    return raw.astype(np.int64) - 1
