"""Build the Siamese model a config describes."""

from __future__ import annotations

from gsg.config import ModelConfig, SSLConfig, resolved_queue_size
from gsg.errors import ConfigError
from gsg.models.backbones import backbone_spec as _backbone_spec
from gsg.models.backbones import build_backbone
from gsg.models.heads import predictor, projector
from gsg.ssl.queue import KeyQueue
from gsg.ssl.siamese import Siamese


def build_model(cfg: ModelConfig, method: str, *, in_channels: int, image_size: int,
                ssl: SSLConfig | None = None) -> Siamese:
    """The model; ``ssl`` (the run's ssl section) is needed for moco, whose queue size it gives."""
    backbone = build_backbone(cfg.backbone, width=cfg.width, in_channels=in_channels, image_size=image_size,
                              cifar_stem=cfg.cifar_stem, zero_init_residual=cfg.zero_init_residual,
                              timm_kwargs=cfg.timm_kwargs)
    # the projector reads the backbone's pooled feature: out_dim (a timm model's num_features)
    proj = projector(backbone.out_dim, cfg.proj_dim, layers=cfg.proj_layers, hidden=cfg.proj_hidden,
                     last_bn=cfg.proj_last_bn)  # type: ignore[arg-type]
    pred = predictor(cfg.predictor, cfg.proj_dim, hidden=cfg.pred_hidden, directpred_rho=cfg.directpred_rho,
                     directpred_eps=cfg.directpred_eps, directpred_freq=cfg.directpred_freq)
    queue = None
    if method == "moco":
        if ssl is None:
            raise ConfigError("build_model: moco's queue size comes from the ssl config; pass ssl=cfg.ssl")
        queue = KeyQueue(resolved_queue_size(ssl, image_size), cfg.proj_dim)
    return Siamese(backbone, proj, pred, method, queue=queue)  # type: ignore[arg-type]


def backbone_spec(model: Siamese, image_size: int) -> dict[str, object]:
    """What a checkpoint records to rebuild the backbone for evaluation (ResNet or timm)."""
    return _backbone_spec(model.backbone, image_size)
