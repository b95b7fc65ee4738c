"""Data faults, for real: `gsg pretrain` on an image folder holding truncated and corrupt files, non-images,
an empty file, a decompression bomb, and grayscale, RGBA, 16-bit, palette, CMYK, 1-bit and 1x1 images;
empty folders and folders with nothing readable. Each is converted, skipped with a count and the file names
listed, or refused naming the file; never a traceback.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gsg.checkpoint import load_checkpoint
from gsg.cli import main
from gsg.data.datasets import load_dataset

BAD = {  # file -> what is wrong with it
    "cats/truncated.jpg": "a JPEG cut in half",
    "cats/notimage.jpg": "a text file with an image extension",
    "dogs/corrupt.png": "a PNG signature followed by garbage",
    "dogs/empty.png": "0 bytes",
    "dogs/truncated.png": "a PNG cut in half",
    "dogs/bomb.png": "a 20000x20000 header (decompression bomb)",
}
CONVERTED = {  # file -> pixel (R, G, B) expected everywhere in the decoded 16x16 image
    "cats/gray.png": (77, 77, 77),
    "cats/rgba.png": (10, 20, 30),  # alpha 0 is dropped, not blended
    "cats/sixteen_bit.png": (200, 200, 200),  # 16-bit 200*257 scaled to 8 bits, not clipped to 255
    "cats/tiny.png": (5, 250, 128),  # 1x1, upscaled
    "dogs/palette.gif": (200, 100, 50),
    "dogs/cmyk.jpg": None,  # JPEG in CMYK: decoded to RGB
    "dogs/gray_alpha.png": (90, 90, 90),
    "dogs/one_bit.bmp": (255, 255, 255),
}
IGNORED = ["cats/notes.txt", "cats/.hidden.png", "empty_class/readme.md"]


def _png(arr: np.ndarray, **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, **kw).save(buf, "PNG")  # type: ignore[arg-type]
    return buf.getvalue()


def _bomb_png(side: int = 20000) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def make_messy_folder(root: Path, good_per_class: int = 7) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (root / cls).mkdir(parents=True)
        for i in range(good_per_class):
            arr = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            img = Image.fromarray(arr)
            img.save(root / cls / (f"good{i}.jpg" if i % 3 == 0 else f"good{i}.png"))
    jpeg = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    png = _png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    (root / "cats/truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (root / "cats/notimage.jpg").write_text("this is a text file\n")
    (root / "dogs/corrupt.png").write_bytes(png[:8] + bytes(rng.integers(0, 256, 500, dtype=np.uint8)))
    (root / "dogs/empty.png").write_bytes(b"")
    (root / "dogs/truncated.png").write_bytes(png[: len(png) // 2])
    (root / "dogs/bomb.png").write_bytes(_bomb_png())

    Image.fromarray(np.full((8, 8), 77, np.uint8), mode="L").save(root / "cats/gray.png")
    Image.fromarray(np.tile(np.array([10, 20, 30, 0], np.uint8), (8, 8, 1)), mode="RGBA").save(root / "cats/rgba.png")
    Image.fromarray(np.full((8, 8), 200 * 257, np.uint16)).save(root / "cats/sixteen_bit.png")
    Image.fromarray(np.array([[[5, 250, 128]]], np.uint8)).save(root / "cats/tiny.png")
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    pal.save(root / "dogs/palette.gif")
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(root / "dogs/cmyk.jpg")
    Image.fromarray(np.tile(np.array([90, 255], np.uint8), (8, 8, 1)), mode="LA").save(root / "dogs/gray_alpha.png")
    Image.new("1", (8, 8), 1).save(root / "dogs/one_bit.bmp")

    (root / "cats/notes.txt").write_text("not an image, ignored by extension")
    (root / "cats/.hidden.png").write_bytes(b"garbage, ignored because hidden")
    (root / "empty_class").mkdir()
    (root / "empty_class/readme.md").write_text("a folder without images is not a class")
    return root


PRETRAIN_FLAGS = ["--epochs", "1", "--batch-size", "8", "--width", "0.125", "--device", "cpu",
                  "--set", "data.image_size=16", "--set", "data.workers=0", "--set", "model.proj_dim=32",
                  "--set", "model.pred_hidden=16", "--set", "run.knn_every=0", "--set", "run.progress=false",
                  "--set", "run.tensorboard=false", "--set", "run.log_every=1"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_pretrain_on_a_messy_folder_skips_and_lists_bad_files_and_converts_the_rest(tmp_path: Path) -> None:
    root = make_messy_folder(tmp_path / "images")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "gsg", "pretrain", "--dataset", "imagefolder", "--data-dir",
                           str(root), "--out", str(out), *PRETRAIN_FLAGS], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    warning = next(line for line in proc.stderr.splitlines() if "unreadable image file(s)" in line)
    assert f"skipped {len(BAD)} unreadable image file(s) in {root}" in warning
    for name in BAD:
        assert name in warning, name
    for name in [*CONVERTED, *IGNORED]:
        assert name not in warning, name
    ckpt = load_checkpoint(out / "checkpoint.pt")
    good = 2 * 7 + len(CONVERTED)
    assert ckpt["train_state"]["step"] == good // 8 and ckpt["data"]["channels"] == 3


def test_every_readable_mode_is_converted_to_8_bit_rgb(tmp_path: Path) -> None:
    root = make_messy_folder(tmp_path / "images")
    ds = load_dataset("imagefolder", data_dir=root, image_size=16)
    names = [str(Path(f).relative_to(root)) for f in ds.files]
    assert sorted(str(Path(f).relative_to(root)) for f in ds.bad_files) == sorted(BAD)
    assert len(ds) == 2 * 7 + len(CONVERTED) and ds.classes == ["cats", "dogs"]
    for name, rgb in CONVERTED.items():
        img = ds.get(torch.tensor([names.index(name)]))[0]
        assert img.shape == (3, 16, 16) and img.dtype == torch.uint8
        if rgb is not None:
            assert torch.all(img == torch.tensor(rgb, dtype=torch.uint8)[:, None, None]), (name, img[:, 0, 0])
    cmyk = ds.get(torch.tensor([names.index("dogs/cmyk.jpg")]))[0]
    assert cmyk.float().mean(dim=(1, 2)).tolist()[0] > 200  # (C, M, Y, K) = (0, 255, 255, 0) is red
    assert cmyk.float().mean(dim=(1, 2)).tolist()[1] < 60


def test_refusing_bad_files_is_an_option_that_names_the_file(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    root = make_messy_folder(tmp_path / "images")
    code = main(["pretrain", "--dataset", "imagefolder", "--data-dir", str(root), "--out", str(tmp_path / "run"),
                 *PRETRAIN_FLAGS, "--set", "data.on_bad_file=error"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "gsg: error: unreadable image file" in err and any(str(root / name) in err for name in BAD)


def test_folders_with_nothing_to_train_on_are_clear_errors(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    (empty / "class_a").mkdir(parents=True)
    (empty / "notes.txt").write_text("no images")
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    for i in range(3):
        (unreadable / f"x{i}.png").write_text("not a png")
    few = tmp_path / "few"
    few.mkdir()
    for i in range(3):
        Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(few / f"{i}.png")
    expected = {empty: f"no image files in {empty}", unreadable: f"every image file in {unreadable} is unreadable",
                few: "batch size 8 is larger than dataset"}
    for folder, message in expected.items():
        code = main(["pretrain", "--dataset", "imagefolder", "--data-dir", str(folder), "--out",
                     str(tmp_path / "run"), *PRETRAIN_FLAGS])
        err = capsys.readouterr().err
        assert code == 2 and "gsg: error: " in err and message in err, err
        assert "Traceback" not in err
