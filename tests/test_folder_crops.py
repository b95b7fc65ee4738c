"""Image folders: RandomResizedCrop on the full decoded image, in the loader's workers (audit #14).

The crops must reach the image's borders, follow scale (0.2, 1) of the *full* image area, be exactly
torchvision's resized crop of the drawn box, not depend on the number of workers, and resume exactly.
The evaluation view of ImageNet-size folders is Resize(256) + CenterCrop(224).
"""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

from conftest import tiny_config
from gsg.checkpoint import load_checkpoint
from gsg.data.datasets import FolderImageDataset, load_dataset
from gsg.data.loader import CROP_DRAWS, BatchLoader, CropSpec, crop_uniforms
from gsg.data.views import BatchAugment, make_recipe, sample_crop_boxes
from gsg.train import loop as loop_mod
from gsg.train.loop import Trainer, pretrain

pytestmark = pytest.mark.usefixtures("one_thread")

W, H = 400, 300  # landscape: the old 224-px centre square dropped x < 50 and x >= 350
MARKER = 40  # columns x < MARKER are pure red, outside any centre square
SCALE = (0.2, 1.0)
RATIO = (3 / 4, 4 / 3)


def marker_folder(root: Path, n: int = 8) -> Path:
    """n noisy grey 400x300 images (2 classes) with a red band in the left border."""
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = rng.integers(90, 160, (H, W, 3), dtype=np.uint8)
        arr[:, :MARKER] = (255, 0, 0)
        folder = root / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(folder / f"{i}.png")
    return root


def has_marker(views: torch.Tensor) -> torch.Tensor:
    """(..., 3, S, S) uint8 -> (...) bool: some pixel is clearly red (grey pixels have R - G < 70)."""
    red = views[..., 0, :, :].int() - views[..., 1, :, :].int()
    return (red > 120).flatten(-2).any(-1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return marker_folder(tmp_path_factory.mktemp("markers"))


def test_crops_see_the_border_that_the_centre_view_drops(folder: Path) -> None:
    ds = load_dataset("imagefolder", "pretrain", data_dir=folder, image_size=32)
    loader = BatchLoader(ds, 4, shuffle=True, drop_last=True, seed=0,
                         crops=CropSpec(views=2, size=32, scale=SCALE, ratio=RATIO))
    seen = []
    for epoch in range(4):
        loader.set_epoch(epoch)
        for views, _, _ in loader:
            assert views.shape == (2, 4, 3, 32, 32) and views.dtype == torch.uint8
            seen.append(has_marker(views).flatten())
    share = torch.cat(seen).float().mean().item()
    # P(left edge of the box < 40 px) is about a third for these boxes; 64 crops
    assert 0.1 < share < 0.7
    assert not has_marker(ds.get(torch.arange(len(ds)))).any()  # the centre view never shows it


def test_views_are_torchvisions_resized_crop_of_the_drawn_box(folder: Path) -> None:
    ds = load_dataset("imagefolder", "pretrain", data_dir=folder, image_size=32)
    assert isinstance(ds, FolderImageDataset)
    u = crop_uniforms(5, 0, 0, 0, 3, 2)
    views, boxes = ds.get_crops(torch.tensor([1, 6]), u, 48, SCALE, RATIO)
    assert views.shape == (3, 2, 3, 48, 48) and boxes.shape == (3, 2, 4)
    for j, i in enumerate([1, 6]):
        img = Image.open(ds.files[i]).convert("RGB")
        assert torch.equal(boxes[:, j], sample_crop_boxes(u[:, j], H, W, SCALE, RATIO))  # on 300 x 400
        for v in range(3):
            top, left, h, w = (int(x) for x in boxes[v, j])
            ref = TF.resized_crop(img, top, left, h, w, [48, 48], interpolation=T.InterpolationMode.BILINEAR,
                                  antialias=True)
            assert torch.equal(views[v, j], TF.pil_to_tensor(ref))


def test_box_areas_follow_the_scale_of_the_full_image(folder: Path) -> None:
    ds = load_dataset("imagefolder", "pretrain", data_dir=folder, image_size=32)
    n = 256
    u = crop_uniforms(0, 0, 0, 0, 1, n)
    _, boxes = ds.get_crops(torch.zeros(n, dtype=torch.int64), u, 8, SCALE, RATIO)
    top, left, h, w = boxes[0].unbind(1)
    area = h * w / (H * W)
    assert bool((top >= 0).all() and (left >= 0).all() and (top + h <= H).all() and (left + w <= W).all())
    assert area.min() >= 0.2 - 0.01 and area.max() <= 1.0  # rounding of w, h moves an area by < 1%
    assert bool((w / h >= 0.75 - 0.01).all() and (w / h <= 4 / 3 + 0.01).all())
    assert (area > H * H / (H * W)).any()  # wider than the old 300 x 300 centre square: the full image
    # The same distribution as torchvision's RandomResizedCrop.get_params on a 300 x 400 image.
    torch.manual_seed(0)
    ref = torch.tensor([float(np.prod(T.RandomResizedCrop.get_params(torch.empty(3, H, W), list(SCALE),
                                                                     list(RATIO))[2:])) for _ in range(4000)])
    ref = ref / (H * W)
    # Both ≈ 0.50 (below 0.6: large boxes of an extreme ratio do not fit and are redrawn); std 0.185.
    assert abs(area.mean().item() - ref.mean().item()) < 0.035  # 3 standard errors at n = 256
    assert 0.46 < ref.mean().item() < 0.54
    ours = sample_crop_boxes(crop_uniforms(1, 0, 0, 0, 1, 4000)[0], H, W, SCALE, RATIO)
    assert abs((ours[:, 2] * ours[:, 3]).mean().item() / (H * W) - ref.mean().item()) < 0.013


def test_worker_count_does_not_change_the_views_and_start_batch_resumes(folder: Path) -> None:
    ds = load_dataset("imagefolder", "pretrain", data_dir=folder, image_size=32)
    spec = CropSpec(views=4, size=24, scale=SCALE, ratio=RATIO)
    runs = {}
    for workers in (0, 2):
        loader = BatchLoader(ds, 3, shuffle=True, drop_last=False, seed=7, workers=workers, crops=spec)
        assert loader.precropped
        out = []
        for epoch in (0, 1):
            loader.set_epoch(epoch)
            out.append(list(loader))
        runs[workers] = out
        loader.set_epoch(1)
        tail = list(loader.iterate(start_batch=1))
        for (a, la, ia), (b, lb, ib) in zip(out[1][1:], tail, strict=True):
            assert torch.equal(a, b) and torch.equal(la, lb) and torch.equal(ia, ib)
    for e0, e1 in zip(runs[0], runs[2], strict=True):
        assert len(e0) == len(e1) == 3
        for (a, la, ia), (b, lb, ib) in zip(e0, e1, strict=True):
            assert torch.equal(a, b) and torch.equal(la, lb) and torch.equal(ia, ib)
    assert not torch.equal(runs[0][0][0][0], runs[0][1][0][0])  # a new epoch draws new crops
    assert not torch.equal(runs[0][0][0][0][0], runs[0][0][0][0][1])  # views of an image differ


def test_uniforms_are_a_function_of_seed_rank_epoch_and_batch() -> None:
    a = crop_uniforms(3, 0, 1, 2, 2, 5)
    assert a.shape == (2, 5, CROP_DRAWS) and torch.equal(a, crop_uniforms(3, 0, 1, 2, 2, 5))
    for other in (crop_uniforms(4, 0, 1, 2, 2, 5), crop_uniforms(3, 1, 1, 2, 2, 5),
                  crop_uniforms(3, 0, 2, 2, 2, 5), crop_uniforms(3, 0, 1, 3, 2, 5)):
        assert not torch.equal(a, other)


def test_in_memory_datasets_ignore_the_crop_spec() -> None:
    ds = load_dataset("synthetic", "train", synthetic_size=16, image_size=8)
    plain = BatchLoader(ds, 4, shuffle=True, drop_last=True, seed=1)
    spec = BatchLoader(ds, 4, shuffle=True, drop_last=True, seed=1, crops=CropSpec(2, 8, SCALE))
    assert not spec.precropped
    for (a, _, _), (b, _, _) in zip(plain, spec, strict=True):
        assert a.shape == (4, 3, 8, 8) and torch.equal(a, b)


def test_cropped_augment_skips_only_the_crop() -> None:
    recipe = make_recipe("imagenet", size=32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))
    aug = BatchAugment(recipe, cpu_chunk=0)
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    params = aug.sample(6, 32, 32, generator=torch.Generator().manual_seed(1))
    full = torch.tensor([[0.0, 0.0, 32.0, 32.0]]).expand(6, 4)  # the whole image: crop + resize is identity
    whole = aug.apply(x, dataclasses.replace(params, boxes=full))
    cropped = aug.apply(x, params, cropped=True)  # params.boxes is ignored
    assert params.flip.any() and not params.flip.all()
    torch.testing.assert_close(cropped, whole, atol=2e-5, rtol=0)
    g1, g2 = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    aug(x, g1), aug(x, g2, cropped=True)
    assert torch.equal(g1.get_state(), g2.get_state())  # the same draws: resume and streams are unchanged
    with pytest.raises(Exception, match="32x32"):
        aug(torch.zeros(2, 3, 40, 40, dtype=torch.uint8), cropped=True)


def test_eval_view_of_imagenet_size_folders_is_resize_256_centre_224(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    (tmp_path / "a").mkdir()
    Image.fromarray(arr).save(tmp_path / "a" / "x.png")
    ds = load_dataset("imagefolder", "train", data_dir=tmp_path)
    assert isinstance(ds, FolderImageDataset) and ds.image_size == 224 and ds.resize == 256
    ref = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
                     T.CenterCrop(224), T.PILToTensor()])(Image.fromarray(arr))
    assert torch.equal(ds.get(torch.tensor([0]))[0], ref)
    assert ds.take(torch.tensor([0])).resize == 256
    small = load_dataset("imagefolder", "train", data_dir=tmp_path, image_size=32)
    assert small.resize == 32  # small images: the whole shorter side, as before


# ------------------------------------------------------------------------------- through the training loop


def folder_config(out: Path, root: Path, **extra: dict) -> object:  # type: ignore[type-arg]
    sections = {"data": {"dataset": "imagefolder", "data_dir": str(root), "image_size": 16, "subset": None,
                         "workers": 0, "recipe": "imagenet"},
                "optim": {"epochs": 2, "batch_size": 4, "lr": 0.05}}
    for k, v in extra.items():
        sections[k] = {**sections.get(k, {}), **v}
    return tiny_config(out, **sections)


def weights(cfg) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    return load_checkpoint(Path(cfg.run.out) / "checkpoint.pt")["model"]


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("views", ["reuse", "fresh"])
def test_training_on_folder_crops_is_worker_independent_and_resumes_exactly(folder: Path, tmp_path: Path,
                                                                            views: str) -> None:
    ssl = {"ssl": {"views": views, "stop_gradient": "guided"}}
    full = folder_config(tmp_path / "full", folder, **ssl)
    trainer = Trainer(full)
    assert trainer.loader.precropped and trainer.loader.crops.views == (4 if views == "fresh" else 2)
    seen: list[tuple[int, ...]] = []
    original = trainer.views_and_loss

    def record(images):  # type: ignore[no-untyped-def]
        seen.append(tuple(images.shape))
        return original(images)

    trainer.views_and_loss = record  # type: ignore[method-assign]
    trainer.fit()
    assert seen[0] == (trainer.loader.crops.views, 4, 3, 16, 16) and len(seen) == 4

    workers = folder_config(tmp_path / "workers", folder, data={"workers": 2}, **ssl)
    pretrain(workers)
    assert_same(weights(full), weights(workers))

    part = folder_config(tmp_path / "part", folder, **ssl)
    trainer = Trainer(part)
    original = trainer.views_and_loss
    count = {"n": 0}

    def signal_on_third_step(images):  # type: ignore[no-untyped-def]
        count["n"] += 1
        if count["n"] == 3:  # mid-epoch 2 (2 batches per epoch)
            os.kill(os.getpid(), signal.SIGTERM)
        return original(images)

    trainer.views_and_loss = signal_on_third_step  # type: ignore[method-assign]
    with pytest.raises(loop_mod.Interrupted):
        trainer.fit()
    ts = load_checkpoint(Path(part.run.out) / "checkpoint.pt")["train_state"]
    assert (ts["epoch"], ts["batch_in_epoch"]) == (1, 1)
    pretrain(part, resume=True)
    assert_same(weights(full), weights(part))


def test_linear_probe_on_folders_crops_full_images_and_resizes_the_test_view_once(folder: Path,
                                                                                  monkeypatch) -> None:
    import gsg.eval.linear as linear
    from gsg.models.backbones import Backbone

    train = load_dataset("imagefolder", "train", data_dir=folder, image_size=72)
    test = load_dataset("imagefolder", "train", data_dir=folder, image_size=72)
    assert train.resize == 82  # round(72 / 0.875): an ImageNet-size folder
    resizes: list[object] = []
    shapes: list[tuple[int, ...]] = []
    embed, augment = linear.embed, linear.BatchAugment.__call__

    def spy_embed(*args, **kwargs):  # type: ignore[no-untyped-def]
        resizes.append(kwargs.get("resize"))
        return embed(*args, **kwargs)

    def spy_augment(self, images, generator=None, *, cropped=False):  # type: ignore[no-untyped-def]
        shapes.append((*images.shape, cropped))
        return augment(self, images, generator, cropped=cropped)

    monkeypatch.setattr(linear, "embed", spy_embed)
    monkeypatch.setattr(linear.BatchAugment, "__call__", spy_augment)
    net = Backbone("resnet18", width=0.125, in_channels=3, cifar_stem=False)
    res = linear.linear_probe(net, train, test, epochs=1, protocol="imagenet", batch_size=4)
    assert resizes == [None] and res["resize"] == 82 and res["size"] == 72  # the dataset's Resize(82) only
    assert shapes == [(4, 3, 72, 72, True)] * 2  # crops of the full files, made by the loader


def test_transfer_keeps_the_protocols_whole_shorter_side_view_for_folders(tmp_path: Path) -> None:
    from gsg.eval.transfer_sources import load_gsg_split

    arr = np.random.default_rng(2).integers(0, 256, (H, W, 3), dtype=np.uint8)
    (tmp_path / "train" / "a").mkdir(parents=True)
    Image.fromarray(arr).save(tmp_path / "train" / "a" / "x.png")
    ds = load_gsg_split("imagefolder", "train", tmp_path, False, 96)
    assert ds.resize == 96  # Ericsson et al.: shorter side to the size, centre crop (no 256/224 margin)
    ref = TF.center_crop(TF.resize(Image.fromarray(arr), 96, antialias=True), [96, 96])
    assert torch.equal(ds.get(torch.tensor([0]))[0], TF.pil_to_tensor(ref))
