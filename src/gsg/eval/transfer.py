"""Transfer to other image-recognition datasets (GSG Table 2; protocol of Ericsson et al. 2021, App. D.1).

Protocol, per dataset:

1. Frozen features of every image: shorter side resized to 224 (bicubic), centre crop 224 × 224,
   normalised with the backbone's own training statistics (ImageNet's for an ImageNet backbone, as in
   ssl-transfer), backbone in eval mode.
2. L2-regularised logistic regression (``gsg.eval.logreg``: sklearn L-BFGS, C = 1/wd), wd chosen on the
   validation split among 45 log-spaced values in [1e-6, 1e5].
3. Refit on train + validation with that wd, score the test split with the dataset's metric.

The datasets, their metrics and splits, and the deviations that offline sources force:
:mod:`gsg.eval.transfer_sources`.

Features are cached in ``cache_dir`` as ``.pt`` files of plain tensors (loadable with
``torch.load(weights_only=True)``), one per (checkpoint SHA-256, dataset, split, size), so reruns and the
sweep do not re-embed. Nothing is downloaded unless ``download=True``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gsg.checkpoint import file_sha256, load_backbone, save_atomic
from gsg.data.datasets import DEFAULT_DATA_DIR
from gsg.data.views import normalize
from gsg.errors import CheckpointError, ConfigError, DataError
from gsg.eval.logreg import DEFAULT_VALUES, Labels, LogRegClassifier, Metric, MultiLabel, sweep_regularization
from gsg.eval.results import write_result
from gsg.eval.transfer_sources import (
    VAL_FRACTION,
    load_gsg_split,
    open_torchvision_split,
    random_val_split,
    resolve_dataset,
    source_splits,
)
from gsg.models.embed import (
    backbone_in_channels,
    embed,
    eval_mode,
    forward_features,
    match_channels,
    module_device,
    resolve_device,
)

log = logging.getLogger(__name__)

PROTOCOL_SIZE = 224
CACHE_FORMAT = 1
VOC_DIFFICULT = ("negative", "ignore")  # VOC "difficult only" entries: ssl-transfer's negatives | left out


# ------------------------------------------------------------------------------------------ features


@dataclass
class FeatureSplit:
    """Frozen features of one split: ``labels`` (N,) int64, or (N, C) {0,1} with ``difficult`` for VOC."""

    features: Tensor
    labels: Tensor
    difficult: Tensor | None = None

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def take(self, idx: Tensor) -> FeatureSplit:
        return FeatureSplit(self.features[idx], self.labels[idx],
                            None if self.difficult is None else self.difficult[idx])

    @staticmethod
    def concat(a: FeatureSplit, b: FeatureSplit) -> FeatureSplit:
        diff = None if a.difficult is None or b.difficult is None else torch.cat([a.difficult, b.difficult])
        return FeatureSplit(torch.cat([a.features, b.features]), torch.cat([a.labels, b.labels]), diff)

    def targets(self, voc_difficult: str = "negative") -> Labels:
        """Labels in the form ``gsg.eval.logreg`` takes (numpy, or a MultiLabel).

        Multi-label (VOC): ``voc_difficult="negative"`` (ssl-transfer) keeps the "difficult only" entries
        as the negatives they are in ``labels``; ``"ignore"`` marks them for logreg to leave out.
        """
        if voc_difficult not in VOC_DIFFICULT:
            raise ConfigError(f"voc_difficult must be one of {VOC_DIFFICULT}, got {voc_difficult!r}")
        if self.labels.ndim == 2:
            ignore = self.difficult is not None and voc_difficult == "ignore"
            diff = self.difficult.numpy().astype(bool) if ignore else None  # type: ignore[union-attr]
            return MultiLabel(self.labels.numpy().astype(np.int64), diff)
        return self.labels.numpy()

    def to_dict(self) -> dict[str, Tensor]:
        out = {"features": self.features, "labels": self.labels}
        if self.difficult is not None:
            out["difficult"] = self.difficult
        return out


@torch.no_grad()
def embed_pil_dataset(backbone: nn.Module, dataset: Any, *, size: int, mean: Sequence[float],
                      std: Sequence[float], batch_size: int = 64, device: str | torch.device = "cpu",
                      workers: int = 0, channels_last: bool = False, amp_dtype: torch.dtype | None = None
                      ) -> FeatureSplit:
    """Features of a torch dataset of (PIL image, target): bicubic resize + centre crop (``_PILToUint8``).

    ``dataset`` must already have its transform set to produce uint8 tensors (``prepare_pil_dataset``).
    Targets: int class indices, or VOC's (2, C) tensors (positive, difficult).
    """
    from torch.utils.data import DataLoader

    device = torch.device(device)
    channels = backbone_in_channels(backbone)
    mean, std = tuple(map(float, mean)), tuple(map(float, std))
    if len(mean) != channels:
        raise ConfigError(f"mean/std have {len(mean)} entries but the backbone takes {channels} channel(s)")
    if module_device(backbone).type != device.type:
        raise ConfigError(f"the backbone is on {module_device(backbone)}, not {device}; move it first")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda")
    feats: list[Tensor] = []
    targets: list[Tensor] = []
    with eval_mode(backbone):
        for images, target in loader:
            x = match_channels(images.to(device, non_blocking=True), channels).float().div_(255.0)
            x = normalize(x, mean, std)
            f = forward_features(backbone, x, channels_last=channels_last, amp_dtype=amp_dtype)
            feats.append(f.cpu())
            targets.append(torch.as_tensor(target))
    if not feats:
        raise DataError("the dataset split is empty")
    f, t = torch.cat(feats), torch.cat(targets)
    if not torch.isfinite(f).all():
        raise DataError("the backbone produced NaN or infinite features; the checkpoint is diverged or "
                        "corrupt")
    if t.ndim == 3:  # VOC: (N, 2, C)
        return FeatureSplit(f, t[:, 0].to(torch.int64), t[:, 1].bool())
    return FeatureSplit(f, t.to(torch.int64))


def cache_path(cache_dir: Path, sha256: str, dataset: str, split: str, size: int, *, target: bool = False,
               seed: int | None = None, data_dir: Path | None = None) -> Path:
    """``<cache_dir>/<sha[:16]>-<dataset>-<split>-<size>px[-s<seed>][-target].pt``.

    Image folders add a hash of their absolute path (two folders must not share features); datasets whose
    train/test split is drawn (Caltech101, SUN397) add the seed.
    """
    ds = dataset
    if data_dir is not None and dataset == "imagefolder":
        digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]
        ds = f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', data_dir.resolve().name)}-{digest}"
    parts = [sha256[:16], ds, split, f"{size}px"]
    if seed is not None:
        parts.append(f"s{seed}")
    if target:
        parts.append("target")
    return cache_dir / ("-".join(parts) + ".pt")


def load_cached(path: Path) -> FeatureSplit | None:
    """A cached FeatureSplit, or None when absent or unreadable (it is then recomputed)."""
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        return FeatureSplit(obj["features"], obj["labels"], obj.get("difficult"))
    except Exception as exc:  # a truncated or foreign file: recompute rather than fail the evaluation
        log.warning("ignoring unreadable feature cache %s (%s); recomputing", path, exc)
        return None


def extract_features(backbone: nn.Module, dataset: str, *, mean: Sequence[float], std: Sequence[float],
                     data_dir: str | os.PathLike[str] | None = None, download: bool = False,
                     image_size: int = PROTOCOL_SIZE, batch_size: int = 64,
                     device: str | torch.device = "cpu",
                     workers: int = 0, seed: int = 0, cache_dir: str | os.PathLike[str] | None = None,
                     cache_key: str | None = None, target: bool = False, channels_last: bool = False,
                     amp_dtype: torch.dtype | None = None) -> dict[str, FeatureSplit]:
    """Features of each source split of ``dataset`` (``train``, ``test`` and, when predefined, ``val``).

    With ``cache_dir`` and ``cache_key`` (the checkpoint's SHA-256), each split is read from / written to
    the cache. ``mean``/``std``: the backbone's normalisation.
    """
    spec = resolve_dataset(dataset)
    root = Path(data_dir).expanduser() if data_dir is not None else None
    if spec.name == "imagefolder" and root is None:
        raise ConfigError("transfer to 'imagefolder' needs data_dir: a folder with train/ and test/ (and "
                          "optionally val/) subfolders, one subfolder per class in each")
    drawn = spec.name in ("caltech101", "sun397")
    out: dict[str, FeatureSplit] = {}
    for split in source_splits(spec, root):
        path = None
        if cache_dir is not None and cache_key is not None:
            path = cache_path(Path(cache_dir), cache_key, spec.name, split, image_size, target=target,
                              seed=seed if drawn else None, data_dir=root)
            cached = load_cached(path)
            if cached is not None:
                log.info("transfer: %s/%s features from cache %s", spec.name, split, path)
                out[split] = cached
                continue
        log.info("transfer: embedding %s/%s at %d px", spec.name, split, image_size)
        if spec.source == "gsg":
            ds = load_gsg_split(spec.name, split, root, download, image_size)
            f, y = embed(backbone, ds, batch_size=batch_size, device=device, size=image_size, mean=mean,
                         std=std, resize=image_size, channels_last=channels_last, amp_dtype=amp_dtype,
                         workers=workers)
            feat = FeatureSplit(f, y)
        else:
            tv = open_torchvision_split(spec.name, split, root or DEFAULT_DATA_DIR, download, image_size, seed)
            feat = embed_pil_dataset(backbone, tv, size=image_size, mean=mean, std=std, batch_size=batch_size,
                                     device=device, workers=workers, channels_last=channels_last,
                                     amp_dtype=amp_dtype)
        if path is not None:
            save_atomic({**feat.to_dict(), "format": CACHE_FORMAT, "checkpoint_sha256": cache_key,
                         "dataset": spec.name, "split": split, "image_size": image_size}, path)
        out[split] = feat
    return out


# ------------------------------------------------------------------------------------------ protocol


def evaluate_splits(splits: dict[str, FeatureSplit], metric: Metric, *, values: Sequence[float] | np.ndarray =
                    DEFAULT_VALUES, seed: int = 0, val_fraction: float = VAL_FRACTION, max_iter: int = 100,
                    voc_difficult: str = "negative") -> dict[str, Any]:
    """Sweep wd on train → val, refit on train + val, score test. ``splits`` has train, test[, val].

    Without a ``val`` split, a seeded ``val_fraction`` of train is held out for the sweep and the refit
    uses all of train (ssl-transfer's ``trainval``). ``voc_difficult``: see :meth:`FeatureSplit.targets`.
    """
    train, test = splits["train"], splits["test"]
    if "val" in splits:
        fit, val, trainval = train, splits["val"], FeatureSplit.concat(train, splits["val"])
        val_source = "predefined"
    else:
        tr_idx, va_idx = random_val_split(len(train), val_fraction, seed)
        fit, val, trainval = train.take(tr_idx), train.take(va_idx), train
        val_source = f"random {val_fraction:.0%} of train (seed {seed})"
    Xf, Xv = fit.features.numpy(), val.features.numpy()
    vd = voc_difficult
    best_wd, scores = sweep_regularization(Xf, fit.targets(vd), Xv, val.targets(vd), values=values, metric=metric,
                                           max_iter=max_iter)
    clf = LogRegClassifier(metric, max_iter=max_iter)
    clf.fit(trainval.features.numpy(), trainval.targets(vd), best_wd)
    value = clf.score(test.features.numpy(), test.targets(vd))
    log.info("transfer: test %s = %.2f (wd %.3g)", metric, value, best_wd)
    values_list = [float(v) for v in np.asarray(values).reshape(-1)]
    return {
        "metric": metric,
        "value": value,
        "best_wd": best_wd,
        "best_C": 1.0 / best_wd,
        "val_score": max(scores),
        "sweep": [{"wd": v, "val": s} for v, s in zip(values_list, scores, strict=True)],
        "val_split": val_source,
        "sizes": {"train": len(fit), "val": len(val), "trainval": len(trainval), "test": len(test)},
        "feature_dim": int(train.features.shape[1]),
        **({"voc_difficult": vd} if train.labels.ndim == 2 else {}),
    }


def transfer(ckpt_path: str | os.PathLike[str], dataset: str, *,
             data_dir: str | os.PathLike[str] | None = None,
             download: bool = False, image_size: int = PROTOCOL_SIZE, batch_size: int = 64,
             device: str | torch.device = "cpu", workers: int = 0,
             cache_dir: str | os.PathLike[str] | None = None, seed: int = 0,
             values: Sequence[float] | np.ndarray = DEFAULT_VALUES, max_iter: int = 100, target: bool = False,
             val_fraction: float = VAL_FRACTION, channels_last: bool = False,
             amp_dtype: torch.dtype | None = None, voc_difficult: str = "negative") -> dict[str, Any]:
    """Run the transfer protocol (module docstring) for a checkpoint's backbone on ``dataset``.

    ``cache_dir`` default: ``<checkpoint dir>/features``. ``target=True`` evaluates BYOL's EMA backbone.
    ``voc_difficult`` (VOC2007): "negative" (ssl-transfer, default) or "ignore" (module docstring).
    Returns :func:`evaluate_splits`'s dict plus ``dataset``, ``image_size``, ``checkpoint_sha256`` and
    ``num_classes``.
    """
    spec = resolve_dataset(dataset)
    if image_size < 1:
        raise ConfigError(f"image_size must be positive, got {image_size}")
    if voc_difficult not in VOC_DIFFICULT:
        raise ConfigError(f"voc_difficult must be one of {VOC_DIFFICULT}, got {voc_difficult!r}")
    device = resolve_device(device)
    backbone, ckpt = load_backbone(ckpt_path, "cpu", target=target)
    backbone = backbone.to(device)
    data = ckpt.get("data") or {}
    if "mean" not in data or "std" not in data:
        raise CheckpointError(f"{ckpt_path} records no normalisation (data.mean/std); it was not written by "
                              "`gsg pretrain`")
    sha = file_sha256(ckpt_path)
    cache = Path(cache_dir) if cache_dir is not None else Path(ckpt_path).parent / "features"
    splits = extract_features(backbone, spec.name, mean=data["mean"], std=data["std"], data_dir=data_dir,
                              download=download, image_size=image_size, batch_size=batch_size, device=device,
                              workers=workers, seed=seed, cache_dir=cache, cache_key=sha, target=target,
                              channels_last=channels_last, amp_dtype=amp_dtype)
    result = evaluate_splits(splits, spec.metric, values=values, seed=seed, val_fraction=val_fraction,
                             max_iter=max_iter, voc_difficult=voc_difficult)
    labels = splits["train"].labels
    result.update({
        "dataset": spec.name if spec.name != "imagefolder" else str(data_dir),
        "image_size": image_size,
        "checkpoint_sha256": sha,
        "target_backbone": target,
        "num_classes": int(labels.shape[1]) if labels.ndim == 2 else int(labels.max()) + 1,
        "cache_dir": str(cache),
    })
    return result


def transfer_evaluate(checkpoint: str | os.PathLike[str], dataset: str, *, command: str = "",
                      device: str | torch.device = "auto", **kwargs: Any) -> dict[str, Any]:
    """:func:`transfer` (same keyword arguments; ``device="auto"`` picks CUDA when present) plus the result
    JSON next to the checkpoint; adds ``result_file`` to the returned dict."""
    res = transfer(checkpoint, dataset, device=resolve_device(device), **kwargs)
    extra = {k: v for k, v in res.items() if k not in ("metric", "value", "dataset")}
    res["result_file"] = str(write_result(checkpoint, "transfer", res["dataset"], res["metric"], res["value"],
                                          extra, command))
    return res
