"""Export a checkpoint's backbone for detection and segmentation frameworks (Table 3).

Two formats:

- ``torchvision`` (``.pth``): ``torch.save`` of a plain state dict with torchvision's ResNet key names
  (``conv1.weight``, ``bn1.*``, ``layer1.0.conv1.weight``, …) plus ``fc.weight`` (1000 × out_dim) and
  ``fc.bias`` (1000), both **zero**: torchvision's ``resnetXX()`` has a 1000-class ``fc``, so including
  one lets ``load_state_dict(strict=True)`` succeed, and zeros make it impossible to mistake for a trained
  classifier (every downstream use replaces it). Loads with ``torch.load(weights_only=True)``.
  A width-1, ImageNet-stem, RGB backbone loads into ``torchvision.models.resnetXX()`` as it is. Any other
  backbone (CIFAR stem: 3×3 stride-1 ``conv1`` and no max-pool; 1 input channel; a width multiplier such as
  the quickstart's ¼) loads into the torchvision ``ResNet`` that :func:`torchvision_resnet` builds from the
  side file, with torchvision's own classes and ``_make_layer``::

      m = torchvision_resnet(**json.load(open("backbone.pth.json"))["build"])
      m.load_state_dict(torch.load("backbone.pth", weights_only=True))   # strict

  A JSON side file (``<out>.json``) records arch, width, stem, input channels, normalisation, the build
  arguments and the source checkpoint's SHA-256.
- ``detectron2`` (``.pkl``): ``pickle`` of ``{"model": {name: numpy array}, "__author__": "gsg",
  "matching_heuristics": True}``, the format Detectron2's ``DetectionCheckpointer`` reads for non-Detectron2
  weights (MoCo's and ssl-transfer's conversion scripts write the same). Names are renamed to
  Detectron2's ResNet: ``conv1`` → ``stem.conv1``, ``bn1`` → ``stem.conv1.norm``, ``layerN`` →
  ``res{N+1}``, ``bnK`` → ``convK.norm``, ``downsample.0`` → ``shortcut``, ``downsample.1`` →
  ``shortcut.norm``. BatchNorm's ``num_batches_tracked`` counters are dropped (Detectron2's norms do not
  use them). Detectron2's ResNet has only the ImageNet stem and 3 input channels, so CIFAR-stem and
  1-channel backbones are refused.

Detectron2's ResNet has only widths with 64 stem channels (R18/R34 must keep ``RES2_OUT_CHANNELS`` 64), so
the Detectron2 format refuses other widths.

- ``timm`` (``.pth``): ``torch.save`` of a plain state dict that loads with ``strict=True`` into
  ``timm.create_model(NAME, pretrained=False, num_classes=0, **kwargs)``, the model without its classifier
  whose output is the pooled feature gsg trained. For a ``timm:NAME`` backbone the keys are the timm model's
  own and ``kwargs`` are those it was built with (``in_chans``, ``img_size``, ``model.timm_kwargs``). A gsg
  ResNet of width 1 with the ImageNet stem exports as timm's ``resnet18/34/50`` (the same key names);
  other ResNets are refused (timm's ResNet has no CIFAR stem): use the torchvision format. The side file's
  ``build`` holds ``model_name`` and the kwargs; :func:`timm_create_line` writes the call, and
  ``gsg export --format timm`` prints it.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torchvision
from torch import Tensor, nn

from gsg.checkpoint import backbone_from_checkpoint, file_sha256, load_checkpoint
from gsg.errors import CheckpointError, ConfigError
from gsg.models.backbones import ARCHS, stage_widths
from gsg.models.timm_backbone import TIMM_PREFIX, is_timm

FORMATS = ("torchvision", "detectron2", "timm")
TORCHVISION_FC_CLASSES = 1000


def torchvision_resnet(arch: str = "resnet18", width: float = 1.0, in_channels: int = 3, cifar_stem: bool = False,
                       num_classes: int = TORCHVISION_FC_CLASSES) -> torchvision.models.ResNet:
    """A ``torchvision.models.ResNet`` shaped like a gsg backbone, for loading a torchvision export.

    Width 1, ImageNet stem, 3 channels: exactly ``torchvision.models.resnetXX(num_classes=...)``. Otherwise the
    stem and stages are rebuilt with torchvision's blocks and ``ResNet._make_layer`` at the scaled widths
    (64·w, 128·w, 256·w, 512·w, as :class:`gsg.models.backbones.Backbone`), so the module tree, key names and
    forward are torchvision's."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown backbone {arch!r}; choose one of {', '.join(ARCHS)}")
    if width <= 0 or in_channels < 1:
        raise ConfigError(f"width must be positive and in_channels at least 1, got {width} and {in_channels}")
    block, layers = ARCHS[arch]  # torchvision's BasicBlock / Bottleneck, as gsg's Backbone
    m = getattr(torchvision.models, arch)(num_classes=num_classes)
    if width == 1.0 and in_channels == 3 and not cifar_stem:
        return m
    widths = stage_widths(width)
    if cifar_stem:
        m.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        m.maxpool = nn.Identity()
    else:
        m.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
    m.bn1 = nn.BatchNorm2d(widths[0])
    m.inplanes = widths[0]  # _make_layer reads and advances it, as in ResNet.__init__
    m.layer1 = m._make_layer(block, widths[0], layers[0])
    m.layer2 = m._make_layer(block, widths[1], layers[1], stride=2)
    m.layer3 = m._make_layer(block, widths[2], layers[2], stride=2)
    m.layer4 = m._make_layer(block, widths[3], layers[3], stride=2)
    m.fc = nn.Linear(widths[3] * block.expansion, num_classes)
    return m


def torchvision_state_dict(ckpt: dict[str, Any], *, target: bool = False) -> dict[str, Tensor]:
    """The backbone of a loaded checkpoint as a torchvision ResNet state dict, with a zero 1000-class fc.

    It loads with ``strict=True`` into :func:`torchvision_resnet` called with the checkpoint's arch, width,
    input channels and stem (for width 1, ImageNet stem and RGB: into ``torchvision.models.resnetXX()``)."""
    _refuse_timm(ckpt, "torchvision")
    net = backbone_from_checkpoint(ckpt, target=target)
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items() if not k.startswith("fc.")}
    state["fc.weight"] = torch.zeros(TORCHVISION_FC_CLASSES, net.out_dim)
    state["fc.bias"] = torch.zeros(TORCHVISION_FC_CLASSES)
    return state


def detectron2_state_dict(torchvision_state: dict[str, Tensor]) -> dict[str, np.ndarray]:
    """Rename torchvision ResNet keys to Detectron2's (see the module docstring); drops fc and counters."""
    out: dict[str, np.ndarray] = {}
    for key, value in torchvision_state.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        k = key if key.startswith("layer") else "stem." + key
        k = re.sub(r"^layer(\d)", lambda m: f"res{int(m.group(1)) + 1}", k)
        k = re.sub(r"(^|\.)bn(\d)\.", r"\1conv\2.norm.", k)
        k = k.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")
        out[k] = value.detach().cpu().numpy()
    return out


def export_torchvision(ckpt_path: str | os.PathLike[str], out: str | os.PathLike[str], *,
                       target: bool = False) -> Path:
    """Write the backbone as a torchvision ResNet ``.pth`` state dict (+ ``<out>.json``); returns ``out``."""
    return _export_state_dict(ckpt_path, out, "torchvision", torchvision_state_dict, target)


def export_detectron2(ckpt_path: str | os.PathLike[str], out: str | os.PathLike[str], *,
                      target: bool = False) -> Path:
    """Write the backbone as a Detectron2 ``.pkl`` (``MODEL.WEIGHTS``) (+ ``<out>.json``); returns ``out``."""
    ckpt = load_checkpoint(ckpt_path)
    spec = ckpt["backbone"]
    _refuse_timm(ckpt, "detectron2")
    if float(spec["width"]) != 1.0:
        raise ConfigError(f"this backbone has width {spec['width']}; Detectron2's ResNets have width 1 only "
                          "(64 stem channels). Export it with format 'torchvision' and load it with "
                          "gsg.eval.export.torchvision_resnet, or pretrain with model.width=1")
    if spec["cifar_stem"]:
        raise ConfigError("this backbone has the CIFAR stem (3x3 conv1, no max-pool), which Detectron2's "
                          "ResNet cannot build; export it with format 'torchvision' instead")
    if int(spec["in_channels"]) != 3:
        raise ConfigError(f"this backbone takes {spec['in_channels']} input channel(s); Detectron2 expects "
                          "RGB. Export it with format 'torchvision' instead")
    model = detectron2_state_dict(torchvision_state_dict(ckpt, target=target))
    payload = {"model": model, "__author__": "gsg", "matching_heuristics": True}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(out, lambda f: pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL))
    _write_sidecar(out, ckpt, ckpt_path, "detectron2", target)
    return out


def _refuse_timm(ckpt: dict[str, Any], fmt: str) -> None:
    arch = str(ckpt["backbone"]["arch"])
    if is_timm(arch):
        raise ConfigError(f"this backbone is {arch}, not a ResNet, so it has no {fmt} ResNet form; export it with "
                          "--format timm (it loads into timm.create_model)")


def timm_build(ckpt: dict[str, Any]) -> dict[str, Any]:
    """``model_name`` and the ``timm.create_model`` keyword arguments the checkpoint's backbone loads into."""
    spec = ckpt["backbone"]
    arch = str(spec["arch"])
    if is_timm(arch):
        return {"model_name": arch[len(TIMM_PREFIX):], "pretrained": False, "num_classes": 0,
                **dict(spec.get("timm_kwargs") or {})}
    if float(spec["width"]) != 1.0 or spec["cifar_stem"]:
        stem = "CIFAR" if spec["cifar_stem"] else "ImageNet"
        raise ConfigError(f"this {arch} has width {spec['width']} and the {stem} "
                          "stem; timm's ResNets have width 1 and the ImageNet stem only. Export it with --format "
                          "torchvision (gsg.eval.export.torchvision_resnet builds the matching model)")
    return {"model_name": arch, "pretrained": False, "num_classes": 0, "in_chans": int(spec["in_channels"])}


def timm_create_line(build: dict[str, Any]) -> str:
    """``timm.create_model('NAME', pretrained=False, num_classes=0, ...)`` for a side file's ``build``."""
    kw = {k: v for k, v in build.items() if k != "model_name"}
    return f"timm.create_model({build['model_name']!r}, " + ", ".join(f"{k}={v!r}" for k, v in kw.items()) + ")"


def timm_state_dict(ckpt: dict[str, Any], *, target: bool = False) -> dict[str, Tensor]:
    """The backbone's state dict with timm's key names; loads strictly into ``timm.create_model(**timm_build)``."""
    timm_build(ckpt)  # refuses what timm cannot build
    net = backbone_from_checkpoint(ckpt, target=target)
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items() if not k.startswith("fc.")}


def export_timm(ckpt_path: str | os.PathLike[str], out: str | os.PathLike[str], *, target: bool = False) -> Path:
    """Write the backbone as a timm state dict ``.pth`` (+ ``<out>.json`` with the create_model kwargs)."""
    return _export_state_dict(ckpt_path, out, "timm", timm_state_dict, target)


def _export_state_dict(ckpt_path: str | os.PathLike[str], out: str | os.PathLike[str], fmt: str,
                       state_dict: Callable[..., dict[str, Tensor]], target: bool) -> Path:
    """Save ``state_dict(ckpt, target=...)`` with ``torch.save`` atomically, and its ``<out>.json`` sidecar."""
    ckpt = load_checkpoint(ckpt_path)
    state = state_dict(ckpt, target=target)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(out, lambda f: torch.save(state, f))
    _write_sidecar(out, ckpt, ckpt_path, fmt, target)
    return out


def export_backbone(ckpt_path: str | os.PathLike[str], out: str | os.PathLike[str], *,
                    format: Literal["torchvision", "detectron2", "timm"] = "torchvision",
                    target: bool = False) -> Path:
    """Dispatch to :func:`export_torchvision` (``.pth``), :func:`export_detectron2` (``.pkl``) or
    :func:`export_timm` (``.pth``)."""
    if format == "torchvision":
        return export_torchvision(ckpt_path, out, target=target)
    if format == "detectron2":
        return export_detectron2(ckpt_path, out, target=target)
    if format == "timm":
        return export_timm(ckpt_path, out, target=target)
    raise ConfigError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")


def _write_sidecar(out: Path, ckpt: dict[str, Any], ckpt_path: str | os.PathLike[str], fmt: str,
                   target: bool) -> None:
    spec, data = ckpt["backbone"], ckpt.get("data", {})
    meta = {
        "format": fmt,
        "arch": spec["arch"],
        "width": float(spec["width"]),
        "cifar_stem": bool(spec["cifar_stem"]),
        "in_channels": int(spec["in_channels"]),
        # keyword arguments of the model this state dict loads into: gsg.eval.export.torchvision_resnet, or
        # timm.create_model for the timm format
        "build": timm_build(ckpt) if fmt == "timm" else {
            "arch": spec["arch"], "width": float(spec["width"]), "in_channels": int(spec["in_channels"]),
            "cifar_stem": bool(spec["cifar_stem"])},
        "image_size": spec.get("image_size"),
        "mean": list(map(float, data.get("mean", []))),
        "std": list(map(float, data.get("std", []))),
        "pretrain_dataset": data.get("dataset"),
        "target_backbone": target,
        "fc": "zero-initialised 1000-class placeholder" if fmt == "torchvision" else None,
        "timm_create_model": timm_create_line(timm_build(ckpt)) if fmt == "timm" else None,
        "source_checkpoint": str(Path(ckpt_path).resolve()),
        "source_sha256": file_sha256(ckpt_path),
    }
    side = out.with_name(out.name + ".json")
    _atomic_write(side, lambda f: f.write(json.dumps(meta, indent=2).encode() + b"\n"))


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not write {path}: {exc.strerror or exc}; check the path and free space"
                              ) from exc
