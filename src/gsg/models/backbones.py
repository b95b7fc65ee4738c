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
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from gsg.errors import ConfigError

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
    zero_init_residual: bool = False,
) -> Backbone:
    """Build a backbone; ``cifar_stem=None`` picks the CIFAR stem for inputs up to 64 px."""
    if cifar_stem is None:
        cifar_stem = image_size <= CIFAR_STEM_MAX_SIZE
    return Backbone(arch, width=width, in_channels=in_channels, cifar_stem=cifar_stem,
                    zero_init_residual=zero_init_residual)
