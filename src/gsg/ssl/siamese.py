"""SimSiam, BYOL, SimCLR and MoCo as one model: online encoder + predictor, and a target that is shared or an EMA.

A method here is only where the target projections come from:
- SimSiam, SimCLR: the online projections themselves, detached (SimSiam with Zhang et al.'s symmetric or inverse
  predictor: the predictor's ``target_side(z, p)``, gsg.models.heads);
- BYOL, MoCo: an EMA copy of the online backbone + projector (MoCo's key encoder), run without gradient;
  MoCo also holds a queue of past keys (gsg.ssl.queue), given by the builder.

Which loss is applied to them is gsg.ssl.methods' business (stop-gradient policy or contrastive loss).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from gsg.errors import ConfigError
from gsg.models.backbones import Backbone
from gsg.ssl.ema import ema_update
from gsg.ssl.queue import KeyQueue

METHODS = ("simsiam", "byol", "simclr", "moco")
Method = Literal["simsiam", "byol", "simclr", "moco"]
EMA_TARGET = ("byol", "moco")  # methods whose targets come from a momentum (EMA) encoder


@dataclass
class SiameseOutput:
    """Per-view online projections z, predictions p and target projections t (each a list of (B, d))."""

    z: list[Tensor]
    p: list[Tensor]
    t: list[Tensor]


class Siamese(nn.Module):
    """Online backbone → projector → predictor, plus the target branch.

    ``forward`` takes every view of the step in one call (as SimSiam's official code does), so that
    DistributedDataParallel sees one forward per backward, and runs each view as its own batch: BatchNorm
    statistics are per view, as in the official implementations.
    """

    def __init__(self, backbone: Backbone, projector: nn.Module, predictor: nn.Module,
                 method: Method = "simsiam", *, queue: KeyQueue | None = None) -> None:
        super().__init__()
        if method not in METHODS:
            raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        if (queue is not None) != (method == "moco"):
            raise ConfigError(f"a key queue belongs to moco and moco needs one (method {method!r}, queue "
                              f"{'given' if queue is not None else 'missing'})")
        self.method = method
        self.backbone = backbone
        self.projector = projector
        self.predictor = predictor
        self.queue = queue  # registered as a submodule: its buffers are in the state dict (exact resume)
        self.target: nn.ModuleDict | None = None
        if method == "byol" and hasattr(predictor, "target_side"):
            raise ConfigError("a predictor on the target side (model.predictor = symmetric or inverse) is defined for "
                              "SimSiam; BYOL's target is the EMA encoder: use method simsiam")
        if method in EMA_TARGET:
            self.target = nn.ModuleDict({"backbone": copy.deepcopy(backbone),
                                         "projector": copy.deepcopy(projector)})
            self.target.requires_grad_(False)

    def online_encoder(self) -> nn.ModuleDict:
        return nn.ModuleDict({"backbone": self.backbone, "projector": self.projector})

    def project(self, x: Tensor) -> Tensor:
        return self.projector(self.backbone(x))

    def forward(self, views: list[Tensor]) -> SiameseOutput:
        z = [self.project(v) for v in views]
        p = [self.predictor(zi) for zi in z]
        target_side = getattr(self.predictor, "target_side", None)  # Zhang et al.'s symmetric / inverse predictor
        if self.target is None:
            t = [zi.detach() if target_side is None else target_side(zi, pi) for zi, pi in zip(z, p, strict=True)]
        else:
            with torch.no_grad():
                t = [self.target["projector"](self.target["backbone"](v)) for v in views]
        return SiameseOutput(z=z, p=p, t=t)

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """BYOL, MoCo: move the target towards the online encoder; no-op for SimSiam and SimCLR."""
        if self.target is not None:
            ema_update(self.target, self.online_encoder(), momentum)
