"""Readers of the on-disk formats and dataset resolution, on tiny files written here in the real formats."""

from __future__ import annotations

import gzip
import io
import logging
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gsg.data import datasets, formats, images, standard
from gsg.data.datasets import FolderImageDataset, TensorImageDataset, load_dataset
from gsg.errors import ConfigError, DataError

# ------------------------------------------------------------------------------------------------ writers


def write_idx(path: Path, arr: np.ndarray, gz: bool) -> Path:
    """IDX: 0x00 0x00 0x08 (uint8) ndim, big-endian int32 sizes, then the bytes."""
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw = header + arr.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)
    return path


def write_mnist(folder: Path, n_train: int = 6, n_test: int = 4, gz: bool = True, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz)
        out[prefix] = (images, labels)
    return out


def write_cifar_batch(path: Path, images: np.ndarray, labels: np.ndarray, label_key: bytes) -> None:
    """As the official python-2 pickles: bytes keys, data rows = R plane, G plane, B plane (row-major)."""
    d = {b"batch_label": b"batch", label_key: [int(v) for v in labels],
         b"data": images.reshape(len(images), -1), b"filenames": [b"x.png"] * len(images)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(d, protocol=2))


def write_stl_images(path: Path, images: np.ndarray) -> None:
    """STL-10 *_X.bin: per image and channel, column-major: byte x*96 + y holds pixel (y, x)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes())


def save_png(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


@pytest.fixture(autouse=True)
def no_system_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never see data installed on this machine nor the user's cache, and never download."""
    monkeypatch.setattr(standard, "SYSTEM_DATA_DIRS", {})
    monkeypatch.setattr(standard, "DEFAULT_DATA_DIR", tmp_path / "no-cache")

    def no_network(name: str, root: Path) -> None:
        raise AssertionError("a test tried to download")

    monkeypatch.setattr(standard, "_download", no_network)


# -------------------------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    written = write_mnist(tmp_path, gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ds = load_dataset("mnist", split, data_dir=tmp_path, download=False)
        images, labels = written[prefix]
        assert isinstance(ds, TensorImageDataset) and ds.images.dtype == torch.uint8
        assert ds.images.shape == (len(images), 1, 28, 28) and ds.channels == 1 and ds.image_size == 28
        assert np.array_equal(ds.images[:, 0].numpy(), images)
        assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == labels.tolist()
        assert ds.mean == (0.1307,) and ds.std == (0.3081,) and ds.num_classes == 10


def test_idx_reader_known_bytes(tmp_path: Path) -> None:
    # 2 images of 2x3, bytes 0..11: image 1 row 0 is (6, 7, 8).
    p = tmp_path / "x-images-idx3-ubyte"
    p.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3, *range(12)]))
    arr = formats.read_idx_images(p)
    assert arr.shape == (2, 1, 2, 3) and arr[1, 0, 0].tolist() == [6, 7, 8]


@pytest.mark.parametrize("gz", [True, False])
def test_idx_truncated_names_file(tmp_path: Path, gz: bool) -> None:
    p = write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((5, 28, 28), np.uint8), gz=False)
    data = p.read_bytes()[:-100]
    if gz:
        full = gzip.compress(p.read_bytes())
        p.unlink()
        p = tmp_path / "train-images-idx3-ubyte.gz"
        p.write_bytes(full[: len(full) // 2])  # a cut-off download
    else:
        p.write_bytes(data)
    with pytest.raises(DataError, match="train-images-idx3-ubyte") as e:
        formats.read_idx_images(p)
    assert "truncated" in str(e.value)


def test_idx_bad_magic_and_swapped_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x12\x34\x56\x78rest")
    with pytest.raises(DataError, match="not an IDX file"):
        formats.read_idx(bad)
    labels = write_idx(tmp_path / "l-labels-idx1-ubyte", np.arange(3, dtype=np.uint8), gz=False)
    with pytest.raises(DataError, match="label file"):
        formats.read_idx_images(labels)
    labels.write_bytes(labels.read_bytes() + b"\0")
    with pytest.raises(DataError, match="longer than"):
        formats.read_idx(labels)


def test_idx_image_label_count_mismatch(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, np.uint8), gz=True)
    with pytest.raises(DataError, match="6 images but"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


# ------------------------------------------------------------------------------------------------ CIFAR


def test_cifar10_batches(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    per = [rng.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8) for _ in range(5)]
    labs = [rng.integers(0, 10, 3) for _ in range(5)]
    per[1][2, 1, 5, 7] = 201  # a known pixel: image 5 (batch 2, row 2), green, y=5, x=7
    per[1][2, 1, 7, 5] = 13
    for i in range(5):
        write_cifar_batch(folder / f"data_batch_{i + 1}", per[i], labs[i], b"labels")
    test_images = rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
    write_cifar_batch(folder / "test_batch", test_images, np.array([4, 9]), b"labels")
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"c%d" % i for i in range(10)]}, 2))

    ds = load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert ds.images.shape == (15, 3, 32, 32)
    assert np.array_equal(ds.images.numpy(), np.concatenate(per))
    assert ds.labels.tolist() == np.concatenate(labs).tolist()
    # Row layout: byte c*1024 + y*32 + x of the flat row is pixel (c, y, x).
    row = per[1][2].reshape(-1)
    assert row[1 * 1024 + 5 * 32 + 7] == 201 and ds.images[5, 1, 5, 7] == 201 and ds.images[5, 1, 7, 5] == 13
    assert ds.classes == [f"c{i}" for i in range(10)]
    assert ds.mean == datasets.IMAGENET_MEAN and ds.std == datasets.IMAGENET_STD
    test = load_dataset("cifar10", "test", data_dir=folder, download=False)  # files directly in data_dir
    assert np.array_equal(test.images.numpy(), test_images) and test.labels.tolist() == [4, 9]


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar-100-python"
    images = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    d = {b"data": images.reshape(4, -1), b"fine_labels": [99, 0, 42, 7], b"coarse_labels": [1, 2, 3, 4]}
    folder.mkdir()
    (folder / "train").write_bytes(pickle.dumps(d, protocol=2))
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [b"n%d" % i for i in range(100)]}, 2))
    ds = load_dataset("cifar100", "pretrain", data_dir=tmp_path, download=False)
    assert np.array_equal(ds.images.numpy(), images) and ds.labels.tolist() == [99, 0, 42, 7]
    assert ds.num_classes == 100 and ds.classes[42] == "n42"


def test_cifar_batch_with_numpy1_module_path(tmp_path: Path) -> None:
    # The official files (pickled by Python 2 / numpy 1) name numpy.core.multiarray._reconstruct.
    images = np.random.default_rng(5).integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
    raw = pickle.dumps({b"data": images.reshape(2, -1), b"labels": [7, 1]}, protocol=2)
    p = tmp_path / "test_batch"
    p.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert b"numpy.core.multiarray" in p.read_bytes()
    got, labels = formats.read_cifar_batch(p)
    assert np.array_equal(got, images) and labels.tolist() == [7, 1]


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("pwned",))


def test_cifar_pickle_with_code_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "test_batch"
    p.write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [_Evil()]}, protocol=2))
    with pytest.raises(DataError, match=r"test_batch.*refusing to load (__builtin__|builtins)\.print"):
        formats.read_cifar_batch(p)
    assert "pwned" not in capsys.readouterr().out


def test_cifar_truncated_and_malformed(tmp_path: Path) -> None:
    p = tmp_path / "data_batch_1"
    write_cifar_batch(p, np.zeros((2, 3, 32, 32), np.uint8), np.array([1, 2]), b"labels")
    p.write_bytes(p.read_bytes()[:300])
    with pytest.raises(DataError, match="data_batch_1"):
        formats.read_cifar_batch(p)
    p.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]}, 2))
    with pytest.raises(DataError, match="malformed"):
        formats.read_cifar_batch(p)


# ----------------------------------------------------------------------------------------------- STL-10


def test_stl10_column_major_known_pixel(tmp_path: Path) -> None:
    raw = np.zeros((2, 3, 96, 96), np.uint8).reshape(2, -1)
    c, y, x = 2, 10, 70
    raw[1, c * 96 * 96 + x * 96 + y] = 250  # the format's byte offset of pixel (c, y, x)
    p = tmp_path / "train_X.bin"
    p.write_bytes(raw.tobytes())
    arr = formats.read_stl10_images(p, chunk=1)
    assert arr.shape == (2, 3, 96, 96) and arr[1, c, y, x] == 250 and arr.sum() == 250


def test_stl10_splits(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    folder = tmp_path / "stl10_binary"
    tr, te, un = (rng.integers(0, 256, (k, 3, 96, 96), dtype=np.uint8) for k in (3, 2, 4))
    write_stl_images(folder / "train_X.bin", tr)
    write_stl_images(folder / "test_X.bin", te)
    write_stl_images(folder / "unlabeled_X.bin", un)
    (folder / "train_y.bin").write_bytes(bytes([1, 10, 5]))
    (folder / "test_y.bin").write_bytes(bytes([2, 3]))
    train = load_dataset("stl10", "train", data_dir=tmp_path, download=False)
    assert np.array_equal(train.images.numpy(), tr) and train.labels.tolist() == [0, 9, 4]
    assert train.classes == datasets.STL10_CLASSES and train.image_size == 96
    test = load_dataset("stl10", "test", data_dir=tmp_path, download=False)
    assert np.array_equal(test.images.numpy(), te) and test.labels.tolist() == [1, 2]
    pre = load_dataset("stl10", "pretrain", data_dir=tmp_path, download=False, image_size=48)
    assert pre.images.shape == (7, 3, 48, 48) and pre.labels.tolist() == [0, 9, 4, -1, -1, -1, -1]
    (folder / "unlabeled_X.bin").write_bytes(b"\0" * 1000)
    with pytest.raises(DataError, match=r"unlabeled_X\.bin"):
        load_dataset("stl10", "pretrain", data_dir=tmp_path, download=False)
    (folder / "train_y.bin").write_bytes(bytes([0, 1, 2]))
    with pytest.raises(DataError, match=r"1\.\.10"):
        load_dataset("stl10", "train", data_dir=tmp_path, download=False)


# ----------------------------------------------------------------------------------------- image folders


def test_image_folder_labelled_exact_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    a0 = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    b0 = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    b1 = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    save_png(tmp_path / "cat" / "a0.png", a0)
    save_png(tmp_path / "dog" / "deeper" / "b1.PNG", b1)  # nested and upper-case extension
    save_png(tmp_path / "dog" / "b0.png", b0)
    (tmp_path / "dog" / "notes.txt").write_text("not an image, ignored")
    ds = load_dataset("imagefolder", data_dir=tmp_path, image_size=8)
    assert isinstance(ds, FolderImageDataset) and ds.classes == ["cat", "dog"]
    assert ds.labels.tolist() == [0, 1, 1] and len(ds) == 3 and ds.bad_files == []
    got = ds.get(torch.tensor([2, 0, 1]))
    assert got.dtype == torch.uint8 and got.shape == (3, 3, 8, 8)
    # files are sorted within a class folder, walking subfolders: b0.png, then deeper/b1.PNG
    for img, ref in zip(got, [b1, a0, b0], strict=True):
        assert np.array_equal(img.numpy(), ref.transpose(2, 0, 1))
    mem = ds.to_memory()
    assert torch.equal(mem.images, ds.get(torch.arange(3))) and torch.equal(mem.labels, ds.labels)


def test_image_folder_unlabelled_is_not_one_class_per_image(tmp_path: Path) -> None:
    for i in range(4):
        save_png(tmp_path / f"img{i}.png", np.full((5, 5, 3), i, np.uint8))
    ds = load_dataset("imagefolder", "pretrain", data_dir=tmp_path, image_size=4)
    assert ds.labels.tolist() == [-1] * 4 and ds.num_classes == 0 and ds.classes == []
    assert ds.get(torch.tensor([3])).unique().tolist() == [3]


def test_image_folder_splits(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            save_png(tmp_path / split / f"c{i % 2}" / f"{i}.png", np.full((4, 4, 3), 10 * i, np.uint8))
    assert len(load_dataset("imagefolder", "train", data_dir=tmp_path, image_size=4)) == 3
    assert len(load_dataset("imagefolder", "pretrain", data_dir=tmp_path, image_size=4)) == 3
    val = load_dataset("imagefolder", "val", data_dir=tmp_path, image_size=4)
    assert len(val) == 2 and val.classes == ["c0", "c1"]
    with pytest.raises(DataError, match="no 'test/' subfolder"):
        load_dataset("imagefolder", "test", data_dir=tmp_path, image_size=4)
    flat = tmp_path / "flat"
    save_png(flat / "x.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match="test"):
        load_dataset("imagefolder", "test", data_dir=flat, image_size=4)


def _truncated_png(path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
    path.write_bytes(buf.getvalue()[:400])


def test_corrupt_files_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    save_png(tmp_path / "a" / "good.png", np.zeros((4, 4, 3), np.uint8))
    save_png(tmp_path / "b" / "good.jpg", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "a" / "fake.png").write_text("this is not a PNG")
    _truncated_png(tmp_path / "b" / "cut.png")
    with caplog.at_level(logging.WARNING, logger="gsg.data.images"):
        ds = load_dataset("imagefolder", data_dir=tmp_path, image_size=4)
    assert len(ds) == 2 and ds.labels.tolist() == [0, 1]
    assert sorted(Path(f).name for f in ds.bad_files) == ["cut.png", "fake.png"]
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "skipped 2 unreadable" in msg and "fake.png" in msg and "cut.png" in msg
    with pytest.raises(DataError, match=r"fake\.png"):
        load_dataset("imagefolder", data_dir=tmp_path, image_size=4, on_bad_file="error")


def test_bad_file_found_at_decode_time(tmp_path: Path) -> None:
    p = save_png(tmp_path / "x.png", np.full((4, 4, 3), 7, np.uint8))
    ds = load_dataset("imagefolder", data_dir=tmp_path, image_size=4, check_images="none")
    p.write_text("replaced by garbage after listing")
    assert ds.get(torch.tensor([0])).sum() == 0  # skip mode: a black stand-in
    strict = FolderImageDataset([p], torch.tensor([-1]), [], image_size=4, on_bad_file="error")
    with pytest.raises(DataError, match=r"x\.png"):
        strict.get(torch.tensor([0]))


def test_pil_modes_decode(tmp_path: Path) -> None:
    gray = save_png(tmp_path / "g.png", np.array([[0, 128], [255, 7]], np.uint8))
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.array([[[10, 20, 30, 0]]], np.uint8), mode="RGBA").save(rgba)
    pal = Image.new("P", (2, 2))
    pal.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.save(tmp_path / "p.png")
    i16 = tmp_path / "i16.png"
    Image.fromarray(np.array([[0, 257 * 100, 65535]], np.uint16)).save(i16)
    tiny = save_png(tmp_path / "tiny.png", np.arange(18, dtype=np.uint8).reshape(2, 3, 3))  # 3 wide, 2 high

    assert images.decode_image(gray, 1).tolist() == [[[0, 128], [255, 7]]]
    assert images.decode_image(gray, 3).shape == (3, 2, 2)
    assert images.decode_image(rgba, 3)[:, 0, 0].tolist() == [10, 20, 30]
    p = images.decode_image(tmp_path / "p.png", 3)
    assert p.shape == (3, 2, 2) and p[:, 0, 1].tolist() == [200, 100, 50] and p[:, 0, 0].tolist() == [0, 0, 0]
    assert images.decode_image(i16, 1).tolist() == [[[0, 100, 255]]]  # scaled, not clipped at 255
    assert images.decode_image(i16, 3).shape == (3, 1, 3)
    for channels in (1, 3):
        assert images.decode_image(tiny, channels, size=5).shape == (channels, 5, 5)
    # 2x3 -> shorter side 4 -> 4x6 -> center crop columns 1..4; a constant image stays constant
    const = save_png(tmp_path / "const.png", np.full((2, 3, 3), 90, np.uint8))
    assert np.all(images.decode_image(const, 3, size=4) == 90)


def test_center_crop_takes_the_middle(tmp_path: Path) -> None:
    arr = np.zeros((4, 8), np.uint8)
    arr[:, 2:6] = 255  # a bright middle band: the 4x4 center crop sees only it
    p = save_png(tmp_path / "band.png", arr)
    assert np.all(images.decode_image(p, 1, size=4) == 255)


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="no image files") as e:
        load_dataset("imagefolder", data_dir=tmp_path)
    assert str(tmp_path) in str(e.value) and "subfolder per class" in str(e.value)
    with pytest.raises(ConfigError, match="--data-dir"):
        load_dataset("imagefolder")


def test_folder_dataset_pickles(tmp_path: Path) -> None:
    save_png(tmp_path / "a" / "x.png", np.full((4, 4, 3), 5, np.uint8))
    ds = load_dataset("imagefolder", data_dir=tmp_path, image_size=4, channels=1)
    back = pickle.loads(pickle.dumps(ds))
    assert torch.equal(back.get(torch.tensor([0])), ds.get(torch.tensor([0])))
    assert back.channels == 1 and len(back.mean) == 1


# ------------------------------------------------------------------------------------------- resolution


def test_missing_data_error_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", data_dir=tmp_path, download=False)
    msg = str(e.value)
    assert "Fashion-MNIST" in msg and "apt-get install dataset-fashion-mnist" in msg
    assert "train-images-idx3-ubyte[.gz]" in msg and str(tmp_path / "FashionMNIST" / "raw") in msg
    assert "download=False" in msg and "--data-dir" in msg
    with pytest.raises(DataError, match=r"(?s)CIFAR-10 .*cifar-10-python\.tar\.gz"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)


def test_failed_download_falls_through_to_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def offline(name: str, root: Path) -> None:
        calls.append((name, root))
        raise OSError("Network is unreachable")

    monkeypatch.setattr(standard, "_download", offline)
    with pytest.raises(DataError, match="download failed: OSError: Network is unreachable"):
        load_dataset("stl10", data_dir=tmp_path)
    assert calls == [("stl10", tmp_path)]


def test_download_result_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(standard, "_download", lambda name, root: write_mnist(root / "FashionMNIST" / "raw"))
    ds = load_dataset("fashion-mnist", download=True)  # no data_dir: the (patched) cache folder
    assert len(ds) == 6 and ds.classes[0] == "T-shirt/top" and ds.mean == (0.2860,)


def test_system_location_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    written = write_mnist(system, gz=True)
    monkeypatch.setattr(standard, "SYSTEM_DATA_DIRS", {"fashion-mnist": (system,)})
    ds = load_dataset("fashion-mnist", "test", data_dir=tmp_path / "empty", download=False)
    assert np.array_equal(ds.images[:, 0].numpy(), written["t10k"][0])
    with pytest.raises(DataError):  # the system location is for Fashion-MNIST only
        load_dataset("mnist", data_dir=tmp_path / "empty", download=False)


@pytest.mark.parametrize("layout", ["FashionMNIST/raw", "fashion-mnist", ""])
def test_torchvision_and_plain_layouts(tmp_path: Path, layout: str) -> None:
    write_mnist(tmp_path / layout if layout else tmp_path, gz=False)
    assert len(load_dataset("fashion-mnist", data_dir=tmp_path, download=False)) == 6


# ------------------------------------------------------------------------------------- subset, synthetic


def test_subset_fixed_and_seeded(tmp_path: Path) -> None:
    write_mnist(tmp_path, n_train=40)
    full = load_dataset("mnist", data_dir=tmp_path, download=False)
    a = load_dataset("mnist", data_dir=tmp_path, download=False, subset=10, seed=0)
    b = load_dataset("mnist", data_dir=tmp_path, download=False, subset=10, seed=0)
    c = load_dataset("mnist", data_dir=tmp_path, download=False, subset=10, seed=1)
    assert len(a) == 10 and torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    idx = datasets._subset_indices(40, 10, 0)
    assert torch.equal(a.images, full.images[idx]) and torch.equal(a.labels, full.labels[idx])
    with pytest.raises(DataError, match="larger than the dataset"):
        load_dataset("mnist", data_dir=tmp_path, download=False, subset=41)


def test_synthetic_deterministic_and_learnable() -> None:
    train, train2 = load_dataset("synthetic"), load_dataset("synthetic", "pretrain")
    test = load_dataset("synthetic", "test")
    assert len(train) == 512 and len(test) == 256 and train.images.shape == (512, 3, 32, 32)
    assert torch.equal(train.images, train2.images) and not torch.equal(train.images[:256], test.images)
    assert train.labels.bincount().tolist() == [52, 52] + [51] * 8 and train.num_classes == 10
    assert train.mean == (0.5,) * 3 and train.std == (0.25,) * 3
    d = torch.cdist(test.images.flatten(1).float(), train.images.flatten(1).float())
    knn1 = (train.labels[d.argmin(1)] == test.labels).float().mean().item()
    assert 0.5 < knn1 < 1.0  # well above chance (0.1), but not solved by raw pixels
    small = load_dataset("synthetic", image_size=16, channels=1, synthetic_size=20)
    assert small.images.shape == (20, 1, 16, 16) and small.mean == (0.5,)


def test_channel_conversion_and_resize(tmp_path: Path) -> None:
    written = write_mnist(tmp_path)
    rgb = load_dataset("mnist", data_dir=tmp_path, download=False, channels=3)
    assert rgb.images.shape == (6, 3, 28, 28) and rgb.mean == (0.1307,) * 3
    assert torch.equal(rgb.images[:, 2], torch.from_numpy(written["train"][0]))
    # 3 -> 1 matches PIL's convert("L") bit for bit
    synth = load_dataset("synthetic", synthetic_size=4)
    gray = datasets._convert_channels(synth.images, 1)
    ref = np.asarray(Image.fromarray(synth.images[1].permute(1, 2, 0).numpy()).convert("L"))
    assert np.array_equal(gray[1, 0].numpy(), ref)
    # resizing a constant image keeps it constant
    const = datasets._resize_square(torch.full((2, 1, 28, 28), 77, dtype=torch.uint8), 32)
    assert const.shape == (2, 1, 32, 32) and const.unique().tolist() == [77]


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="did you mean 'cifar10'"):
        load_dataset("cifar1O")
    with pytest.raises(ConfigError, match="split"):
        load_dataset("synthetic", "validation")
    with pytest.raises(ConfigError, match="on_bad_file"):
        load_dataset("synthetic", on_bad_file="ignore")
    assert datasets._canonical("CIFAR_10") == "cifar10" and datasets._canonical("FMNIST") == "fashion-mnist"
