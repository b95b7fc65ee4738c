"""ResNet backbones built from torchvision's blocks.

The module names match torchvision's ResNet exactly (``conv1``, ``bn1``, ``layer1.0.conv1``, ...), so a
width-1 backbone's state dict loads into ``torchvision.models.resnetXX()`` with ``strict=True`` once
``fc`` is added back. ``fc`` is an ``nn.Identity``: the backbone returns the pooled representation that
evaluation uses.

Two changes from torchvision, both needed for small CPU runs and small images:

- ``width``: multiplies every stage's channel count (64·w, 128·w, 256·w, 512·w), so a width-0.25
  ResNet-18 trains on two CPU cores in minutes;
- ``cifar_stem``: the 3×3 stride-1 first convolution without max-pool used for 32-px inputs (chosen
  automatically for inputs up to 64 px: a 7×7 stride-2 stem plus max-pool leaves a 32-px image 8 px
  wide before the first residual stage, which is why CIFAR accuracy collapses with the ImageNet stem).

``build_backbone("timm:NAME", ...)`` builds any timm model instead (:mod:`gsg.models.timm_backbone`);
:func:`backbone_spec` / :func:`backbone_from_spec` record and rebuild either kind for evaluation.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from gsg.errors import ConfigError
from gsg.models.timm_backbone import TIMM_PREFIX, build_timm_backbone, is_timm

ARCHS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}
BACKBONES = tuple(ARCHS)


def stage_widths(width: float) -> list[int]:
    """Channels of the stem and the four stages at a width multiplier: 64·w, 128·w, 256·w, 512·w."""
    return [max(1, round(c * width)) for c in (64, 128, 256, 512)]
CIFAR_STEM_MAX_SIZE = 64


class Backbone(ResNet):
    """A torchvision ResNet with a width multiplier, optional CIFAR stem and no classifier.

    Example:
        >>> import torch
        >>> net = Backbone("resnet18", width=0.25, in_channels=1, cifar_stem=True)
        >>> net(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 128])
    """

    def __init__(
        self,
        arch: str = "resnet18",
        *,
        width: float = 1.0,
        in_channels: int = 3,
        cifar_stem: bool = False,
        zero_init_residual: bool = False,
    ) -> None:
        if arch not in ARCHS:
            raise ConfigError(f"unknown backbone {arch!r}; choose one of {', '.join(BACKBONES)}")
        if width <= 0:
            raise ConfigError(f"backbone width must be positive, got {width}")
        if in_channels < 1:
            raise ConfigError(f"in_channels must be at least 1, got {in_channels}")
        block, layers = ARCHS[arch]
        nn.Module.__init__(self)  # ResNet.__init__ hard-codes 64 channels and 3 inputs; we build it here.
        widths = stage_widths(width)
        self.arch, self.width, self.in_channels, self.cifar_stem = arch, width, in_channels, cifar_stem
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = widths[0]
        self.dilation = 1
        self.groups = 1
        self.base_width = 64
        if cifar_stem:
            self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Identity()
        self.out_dim = widths[3] * block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:  # as torchvision's flag: each residual branch starts as the identity
            for m in self.modules():
                if isinstance(m, Bottleneck) and m.bn3.weight is not None:
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock) and m.bn2.weight is not None:
                    nn.init.constant_(m.bn2.weight, 0)

    def forward(self, x: Tensor) -> Tensor:
        return self._forward_impl(x)


def build_backbone(
    arch: str, *, width: float = 1.0, in_channels: int = 3, image_size: int = 224, cifar_stem: bool | None = None,
    zero_init_residual: bool = False, timm_kwargs: dict[str, Any] | None = None,
) -> Backbone:
    """Build a backbone; ``cifar_stem=None`` picks the CIFAR stem for inputs up to 64 px.

    ``arch = "timm:NAME"`` builds a timm model instead (:mod:`gsg.models.timm_backbone`), with ``timm_kwargs``;
    the ResNet-only settings (width, stem, zero-init) must then keep their defaults.
    """
    if is_timm(arch):
        if width != 1.0 or cifar_stem or zero_init_residual:
            raise ConfigError(f"width, cifar_stem and zero_init_residual are ResNet settings; {arch} takes its "
                              "shape from timm_kwargs")
        return build_timm_backbone(arch[len(TIMM_PREFIX):], in_channels=in_channels,  # type: ignore[return-value]
                                   image_size=image_size, kwargs=timm_kwargs)
    if timm_kwargs:
        raise ConfigError(f"timm_kwargs are for timm:NAME backbones, not {arch!r}")
    if cifar_stem is None:
        cifar_stem = image_size <= CIFAR_STEM_MAX_SIZE
    return Backbone(arch, width=width, in_channels=in_channels, cifar_stem=cifar_stem,
                    zero_init_residual=zero_init_residual)


def backbone_spec(backbone: nn.Module, image_size: int) -> dict[str, Any]:
    """What a checkpoint records to rebuild ``backbone`` for evaluation (:func:`backbone_from_spec`)."""
    b: Any = backbone
    spec = {"arch": b.arch, "width": b.width, "in_channels": b.in_channels, "cifar_stem": b.cifar_stem,
            "image_size": image_size}
    if is_timm(b.arch):
        spec["timm_kwargs"] = dict(b.timm_kwargs)
    return spec


def backbone_from_spec(spec: dict[str, Any]) -> nn.Module:
    """An untrained backbone of the shape a checkpoint's ``backbone`` spec records (ResNet or timm)."""
    if is_timm(str(spec["arch"])):
        kwargs = dict(spec.get("timm_kwargs") or {})
        in_channels = int(kwargs.pop("in_chans", spec["in_channels"]))
        return build_timm_backbone(str(spec["arch"])[len(TIMM_PREFIX):], in_channels=in_channels,
                                   image_size=int(kwargs.get("img_size", spec.get("image_size") or 224)),
                                   kwargs=kwargs)
    return Backbone(spec["arch"], width=spec["width"], in_channels=spec["in_channels"], cifar_stem=spec["cifar_stem"])

