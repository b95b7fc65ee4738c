"""Any timm model as a backbone: ``model.backbone = "timm:NAME"``.

The model is ``timm.create_model(NAME, pretrained=False, num_classes=0, in_chans=C, **kwargs)``: random
initialisation (nothing is downloaded) and no classifier, so its output is the pooled feature
(``model.num_features`` wide) that the projector reads and evaluation uses. ``kwargs`` are

- ``img_size``: the run's image size, for the models whose constructor takes it (ViT, Swin, DeiT, ...),
  unless ``model.timm_kwargs`` sets it;
- ``model.timm_kwargs``: anything else timm's constructor takes, e.g. ``patch_size=4`` for a ViT at 32 px
  (a 16-px patch leaves a 2x2 grid) or ``depth=6``, ``dims=[16,32,64,128]`` to make a model smaller.

The module returned *is* the timm model, so its state-dict keys are timm's and a checkpoint's backbone loads
strictly into the same ``create_model`` call (``gsg export --format timm``). gsg reads four attributes set on
it: ``arch`` (``"timm:NAME"``), ``out_dim`` (``num_features``), ``in_channels`` and ``timm_kwargs`` (the full
keyword arguments, recorded in checkpoints to rebuild it).

Example:
    >>> import torch
    >>> net = build_timm_backbone("vit_tiny_patch16_224", in_channels=1, image_size=16,
    ...                           kwargs={"patch_size": 4, "depth": 1})
    >>> net(torch.zeros(2, 1, 16, 16)).shape, net.out_dim
    (torch.Size([2, 192]), 192)
"""

from __future__ import annotations

import difflib
import logging
import math
from typing import Any

from torch import nn

from gsg.config import TIMM_PREFIX
from gsg.errors import ConfigError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'gsg-ssl[timm]'"
# Set by gsg from the run, or fixed: a backbone is randomly initialised and has no classifier.
RESERVED = {"pretrained": "gsg never downloads weights: timm backbones start from random initialisation",
            "num_classes": "the backbone has no classifier (num_classes=0): its pooled feature is what gsg uses",
            "in_chans": "the input channels follow the dataset (data.dataset, and gray or RGB images)"}
SMALL_GRID = 4  # patches per side below which a ViT sees too little of the image


def is_timm(arch: str) -> bool:
    return arch.startswith(TIMM_PREFIX)


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise ConfigError(f"model.backbone = 'timm:...' needs the timm package: {INSTALL_HINT}") from None
    return timm


def check_timm_name(name: str) -> None:
    """A ConfigError naming the nearest timm models unless ``name`` is one."""
    timm = _timm()
    if name and timm.is_model(name):
        return
    names = timm.list_models()
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f"nearest names: {', '.join(close)}; " if close else ""
    raise ConfigError(f"model.backbone = 'timm:{name}': {name!r} is not a timm model; {hint}list them with "
                      "python -c 'import timm; print(timm.list_models(\"vit_*\"))' and set e.g. "
                      "--backbone timm:vit_tiny_patch16_224")


def create_kwargs(name: str, *, in_channels: int, image_size: int, kwargs: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """The keyword arguments (besides ``pretrained=False, num_classes=0``) that build the backbone."""
    kwargs = dict(kwargs or {})
    for key, why in RESERVED.items():
        if key in kwargs:
            raise ConfigError(f"model.timm_kwargs sets {key!r}, which gsg sets itself: {why}; remove it")
    given = kwargs.get("img_size")
    if given is not None and not kwargs.get("dynamic_img_size") and given not in (image_size, [image_size] * 2):
        raise ConfigError(f"model.timm_kwargs sets img_size={given} but the run's images are {image_size} px; leave "
                          "img_size out (gsg sets it to the image size) or set data.image_size to match")
    out: dict[str, Any] = {"in_chans": in_channels}
    if "img_size" not in kwargs and _takes_img_size(name):
        out["img_size"] = image_size
    out.update(kwargs)
    return out


def _takes_img_size(name: str) -> bool:
    """Whether the model's constructor takes ``img_size`` (ViT-like models) — probed on its default config."""
    timm = _timm()
    cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=True)
    return bool(cfg is not None and getattr(cfg, "fixed_input_size", False))


def build_timm_backbone(name: str, *, in_channels: int = 3, image_size: int = 224,
                        kwargs: dict[str, Any] | None = None) -> nn.Module:
    """``timm.create_model(name, pretrained=False, num_classes=0, ...)`` annotated for gsg (module docstring)."""
    timm = _timm()
    check_timm_name(name)
    full = create_kwargs(name, in_channels=in_channels, image_size=image_size, kwargs=kwargs)
    try:
        net = timm.create_model(name, pretrained=False, num_classes=0, **full)
    except TypeError as exc:  # an argument this model's constructor does not take
        if "img_size" not in str(exc) or "img_size" in (kwargs or {}):
            raise ConfigError(f"timm could not build {name!r} with {full}: {exc}; fix model.timm_kwargs") from exc
        full.pop("img_size")  # a fixed-size model that takes no img_size: build it as it is
        net = timm.create_model(name, pretrained=False, num_classes=0, **full)
    _check_patches(name, net, image_size)
    net.arch = TIMM_PREFIX + name
    net.out_dim = int(net.num_features)
    net.in_channels = in_channels
    net.timm_kwargs = full
    net.width, net.cifar_stem = 1.0, False  # the ResNet-only settings, fixed, so every spec has the same keys
    return net


def _check_patches(name: str, net: nn.Module, image_size: int) -> None:
    """Patches that tile the image (ViTs) and a total stride no larger than it (convolutional stages)."""
    info = getattr(net, "feature_info", None)
    strides = [f.get("reduction") for f in info if isinstance(f, dict)] if isinstance(info, list) else []
    stride = max((int(r) for r in strides if r), default=1)
    if stride > image_size:
        raise ConfigError(f"{name} downsamples by {stride} in total, more than the {image_size}-px images; use "
                          f"data.image_size >= {stride}, or fewer or smaller stages through model.timm_kwargs")
    pe = getattr(net, "patch_embed", None)
    patch = getattr(pe, "patch_size", None)
    if patch is None:
        return
    p = int(patch[0] if isinstance(patch, tuple | list) else patch)
    if image_size % p:
        raise ConfigError(f"{name} cuts {image_size}-px images into {p}-px patches, which do not tile them; set "
                          f"model.timm_kwargs = \"patch_size=P\" with P dividing {image_size} (e.g. "
                          f"{_divisor(image_size)})")
    if image_size // p < SMALL_GRID:
        log.warning("%s sees a %dx%d grid of %d-px patches on %d-px images; for small images set a smaller "
                    "patch, e.g. --set model.timm_kwargs=patch_size=%d", name, image_size // p, image_size // p, p,
                    image_size, _divisor(image_size))


def _divisor(size: int) -> int:
    """The divisor of ``size`` closest (in ratio) to size / 8: about 8 patches per side, e.g. 4 for 28 and 32."""
    return min((d for d in range(1, size + 1) if size % d == 0), key=lambda d: abs(math.log(d * 8 / size)))
