"""The baselines every learned number stands beside: raw pixels and a randomly initialised backbone.

A kNN or linear-probe accuracy means little alone: on Fashion-MNIST raw pixels already give ~79% (kNN k=200) and
an untrained ResNet ~70%. :func:`evaluate_baselines` measures both **under exactly the protocol of the learned
result**: the same train bank and test set (and subsets), the same resolution, normalisation, kNN (k, T) and
linear-probe settings, because it calls the same functions (:func:`gsg.models.embed.embed`,
:func:`gsg.analysis.knn.knn_accuracy`, :func:`gsg.eval.linear.linear_probe`) with a different "backbone":

- ``raw_pixels``: the normalised image itself, flattened (:class:`RawPixels`); kNN then uses the cosine of
  pixel vectors, the probe is multinomial logistic regression on pixels;
- ``random_init``: the run's architecture (same arch, width, stem, channels) with its initialisation and no
  training, in eval mode, so BatchNorm uses its default running statistics (mean 0, variance 1), as a trained
  backbone's evaluation uses its own. One network per seed; the mean and std over seeds are reported.

``gsg baselines CHECKPOINT`` (or ``--dataset`` with an architecture) runs it from the command line; the
reproduction tables and the quickstart print these rows beside their learned numbers.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gsg.analysis.knn import knn_accuracy
from gsg.data.datasets import ImageDataset, load_dataset
from gsg.errors import ConfigError, DataError
from gsg.models.backbones import Backbone
from gsg.models.embed import embed, resolve_device

BASELINES: tuple[str, ...] = ("raw_pixels", "random_init")
LABELS = {"raw_pixels": "raw pixels", "random_init": "random-init backbone"}


class RawPixels(nn.Module):
    """The identity "backbone": the normalised image flattened to a vector (C·H·W features)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels

    def forward(self, x: Tensor) -> Tensor:
        return x.float().flatten(1)


@dataclass
class Protocol:
    """Everything an evaluation's number depends on besides the weights."""

    dataset: str
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    backbone: dict[str, Any]  # arch, width, in_channels, cifar_stem (a checkpoint's "backbone" section)
    data_dir: str | None = None
    train_subset: int | None = None  # kNN bank (and probe training set); None: the whole train split
    test_subset: int | None = None
    k: int = 200
    temperature: float = 0.1
    linear: bool = True
    linear_epochs: int = 90
    linear_lr: float | None = None  # None: the probe protocol's (gsg.eval.linear.PROTOCOL_DEFAULTS)
    linear_train_subset: int | None = None
    seed: int = 0  # subsets and the probe's initialisation and order
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], **overrides: Any) -> Protocol:
        """The protocol of ``gsg knn`` / ``gsg linear`` on a checkpoint's own dataset."""
        data = ckpt["data"]
        spec = {k: ckpt["backbone"][k] for k in ("arch", "width", "in_channels", "cifar_stem")}
        base = {"dataset": data["dataset"], "image_size": int(data["image_size"]), "mean": tuple(data["mean"]),
                "std": tuple(data["std"]), "backbone": spec,
                "data_dir": (ckpt.get("config") or {}).get("data", {}).get("data_dir")}
        return cls(**{**base, **overrides})


def random_backbone(spec: dict[str, Any], seed: int) -> Backbone:
    """The architecture of ``spec`` with its default initialisation under ``torch.manual_seed(seed)``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            net = Backbone(spec["arch"], width=spec["width"], in_channels=spec["in_channels"],
                           cifar_stem=spec["cifar_stem"])
        except KeyError as exc:
            raise ConfigError(f"backbone spec {spec} lacks {exc}: give arch, width, in_channels, cifar_stem") from exc
    return net.eval()


def protocol_splits(p: Protocol) -> tuple[ImageDataset, ImageDataset]:
    train = load_dataset(p.dataset, "train", data_dir=p.data_dir, download=False, image_size=p.image_size,
                         subset=p.train_subset, seed=p.seed)
    test = load_dataset(p.dataset, "test", data_dir=p.data_dir, download=False, image_size=p.image_size,
                        subset=p.test_subset, seed=p.seed)
    if train.num_classes == 0 or test.num_classes == 0:
        raise DataError(f"{p.dataset} has no labels, so there is nothing to evaluate baselines on; use a labelled "
                        "dataset (for an unlabelled image folder, a separate labelled folder)")
    return train, test


def evaluate_backbone(net: nn.Module, p: Protocol, train: ImageDataset, test: ImageDataset, *,
                      device: torch.device, batch_size: int = 512) -> dict[str, float]:
    """kNN (k, 1) and, if ``p.linear``, the feature-mode linear probe of one frozen network under ``p``."""
    from gsg.eval.linear import linear_probe  # linear imports heavy modules; keep this module light

    net = net.to(device).eval()
    kw = {"batch_size": batch_size, "device": device, "size": p.image_size, "mean": p.mean, "std": p.std}
    ftr, ltr = embed(net, train, **kw)
    fte, lte = embed(net, test, **kw)
    out = knn_accuracy(ftr.to(device), ltr.to(device), fte.to(device), lte.to(device), train.num_classes,
                       ks=(p.k, 1), temperature=p.temperature)
    if p.linear:
        probe_train = train
        if p.linear_train_subset is not None and p.linear_train_subset != p.train_subset:
            probe_train = load_dataset(p.dataset, "train", data_dir=p.data_dir, download=False,
                                       image_size=p.image_size, subset=p.linear_train_subset, seed=p.seed)
        res = linear_probe(net, probe_train, test, epochs=p.linear_epochs, mode="features", lr=p.linear_lr,
                           device=device, seed=p.seed, size=p.image_size, mean=p.mean, std=p.std)
        out["linear_top1"] = float(res["top1"])
    return {k: float(v) for k, v in out.items()}


def evaluate_baselines(p: Protocol, *, seeds: Sequence[int] = (0,), which: Sequence[str] = BASELINES,
                       device: str = "auto", batch_size: int = 512) -> dict[str, dict[str, Any]]:
    """Raw-pixel and random-init numbers under protocol ``p``.

    Returns ``{name: {"label", "seeds", <metric>: mean, <metric>_std: std over seeds, "per_seed": [...]}}``
    with metrics ``knn_k<k>``, ``knn_k1`` and ``linear_top1``. Raw pixels have no seed (one evaluation).
    """
    unknown = [w for w in which if w not in BASELINES]
    if unknown:
        raise ConfigError(f"unknown baseline {unknown[0]!r}; choose from {', '.join(BASELINES)}")
    if not seeds:
        raise ConfigError("evaluate_baselines needs at least one seed for the random-init backbone")
    dev = resolve_device(device)
    train, test = protocol_splits(p)
    results: dict[str, dict[str, Any]] = {}
    for name in which:
        nets: list[tuple[int | None, nn.Module]]
        if name == "raw_pixels":
            nets = [(None, RawPixels(p.backbone["in_channels"]))]
        else:
            nets = [(s, random_backbone(p.backbone, s)) for s in seeds]
        per_seed = [{"seed": s, **evaluate_backbone(net, p, train, test, device=dev, batch_size=batch_size)}
                    for s, net in nets]
        summary: dict[str, Any] = {"label": LABELS[name], "seeds": [s for s, _ in nets if s is not None],
                                   "per_seed": per_seed}
        for metric in (k for k in per_seed[0] if k != "seed"):
            values = [r[metric] for r in per_seed]
            summary[metric] = statistics.fmean(values)
            summary[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        results[name] = summary
    return results


def compare_checkpoint(checkpoint: str | Path, *, seeds: Sequence[int] = (0, 1, 2), device: str = "auto",
                       **protocol: Any) -> tuple[dict[str, float], dict[str, dict[str, Any]], Protocol]:
    """A checkpoint's kNN (and probe) beside the baselines, all under the protocol of its own dataset.

    ``protocol``: :class:`Protocol` fields to change (subsets, k, temperature, linear, ...).
    Returns ``(learned, baselines, protocol)``.
    """
    from gsg.checkpoint import load_backbone

    backbone, ckpt = load_backbone(checkpoint)
    proto = Protocol.from_checkpoint(ckpt, **protocol)
    dev = resolve_device(device)
    train, test = protocol_splits(proto)
    learned = evaluate_backbone(backbone, proto, train, test, device=dev)
    return learned, evaluate_baselines(proto, seeds=seeds, device=device), proto


def gains(learned: dict[str, float], baselines: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Learned minus each baseline, per metric the two share: ``{baseline: {metric: points}}``."""
    return {name: {m: float(learned[m]) - float(b[m]) for m in learned if m in b and isinstance(b[m], float)}
            for name, b in baselines.items()}


def format_rows(learned: dict[str, float] | None, baselines: dict[str, dict[str, Any]],
                metrics: Sequence[str]) -> list[str]:
    """Markdown table rows: the learned numbers (if given), each baseline, and the learned gain over each."""
    head = "| | " + " | ".join(metrics) + " |"
    rows = [head, "|---|" + "---|" * len(metrics)]

    def cell(d: dict[str, Any], m: str) -> str:
        if m not in d:
            return "—"
        std = d.get(f"{m}_std")
        return f"{d[m]:.2f}" + (f" ± {std:.2f}" if std else "")

    if learned is not None:
        rows.append("| learned | " + " | ".join(cell(learned, m) for m in metrics) + " |")
    for b in baselines.values():
        n = len(b.get("seeds") or [])
        label = b["label"] + (f" ({n} seeds)" if n > 1 else "")
        rows.append(f"| {label} | " + " | ".join(cell(b, m) for m in metrics) + " |")
    if learned is not None:
        for name, g in gains(learned, baselines).items():
            rows.append(f"| gain over {LABELS[name]} | " + " | ".join(
                f"{g[m]:+.2f}" if m in g else "—" for m in metrics) + " |")
    return rows


__all__ = ["BASELINES", "Protocol", "RawPixels", "compare_checkpoint", "evaluate_backbone", "evaluate_baselines",
           "format_rows", "gains", "protocol_splits", "random_backbone"]
