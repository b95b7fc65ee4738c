"""Checking a whole config: choices, ranges, and the combinations that are undefined or do nothing."""

from __future__ import annotations

import difflib

from gsg.config.schema import (
    _CONTRASTIVE_FIXED,
    CHOICES,
    CONTRASTIVE_METHODS,
    TIMM_PREFIX,
    Config,
    ModelConfig,
    SSLConfig,
)
from gsg.errors import ConfigError

POSITIVE = {("optim", "epochs"), ("optim", "batch_size"), ("model", "proj_dim"), ("model", "pred_hidden"),
            ("model", "width"), ("run", "checkpoint_every"), ("run", "knn_k"), ("run", "knn_t"),
            ("model", "directpred_freq"), ("run", "log_every"), ("optim", "lr"), ("optim", "base_lr"),
            ("model", "proj_layers"), ("model", "proj_hidden"), ("data", "image_size"), ("run", "limit_batches"),
            ("data", "crop_min_scale"),
            ("optim", "adam_eps"), ("run", "probe_lr")}
NON_NEGATIVE = {("optim", "momentum"), ("optim", "weight_decay"), ("optim", "warmup_epochs"), ("data", "workers"),
                ("model", "directpred_eps")}
UNIT_INTERVAL = {("ssl", "ema_momentum"), ("ssl", "moco_momentum"), ("model", "directpred_rho"),
                 ("optim", "adam_beta1"), ("optim", "adam_beta2"), ("data", "crop_min_scale")}


def validate(config: Config) -> None:
    for (section, key), choices in CHOICES.items():
        value = getattr(getattr(config, section), key)
        if (section, key) == ("model", "backbone") and isinstance(value, str) and value.startswith(TIMM_PREFIX):
            _validate_timm(config.model)
            continue
        if value is not None and value not in choices:
            close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            more = ", or timm:NAME for any timm model" if (section, key) == ("model", "backbone") else ""
            raise ConfigError(f"{section}.{key} = {value!r} is not valid{hint}; choose one of "
                              f"{', '.join(choices)}{more}")
    if config.model.timm_kwargs and not config.model.backbone.startswith(TIMM_PREFIX):
        raise ConfigError(f"model.timm_kwargs is set but model.backbone = {config.model.backbone!r} is not a timm "
                          "model; use model.backbone = 'timm:NAME' or leave model.timm_kwargs empty")
    for section, key in POSITIVE:
        value = getattr(getattr(config, section), key)
        if value is not None and value <= 0:
            raise ConfigError(f"{section}.{key} must be positive, got {value}")
    for section, key in NON_NEGATIVE:
        value = getattr(getattr(config, section), key)
        if value is not None and value < 0:
            raise ConfigError(f"{section}.{key} must be zero or more, got {value}")
    for section, key in UNIT_INTERVAL:
        value = getattr(getattr(config, section), key)
        if value is not None and not 0 <= value <= 1:
            raise ConfigError(f"{section}.{key} must be between 0 and 1, got {value}")
    _validate_contrastive(config)
    if config.data.subset is not None and config.data.subset < 2:
        raise ConfigError(f"data.subset must be at least 2 images, got {config.data.subset}")
    if config.ssl.views == "fresh" and config.ssl.pairing == "matching":
        raise ConfigError(
            "ssl.pairing = 'matching' splits the batch into disjoint pairs that reuse each image's two crops, so it "
            "needs ssl.views = 'reuse'; views = 'fresh' (four crops, the authors' code) pairs the batch with its "
            "shuffle: set ssl.pairing = 'cycle' or leave it unset"
        )
    _check_decomposition_options(config)
    if config.ssl.stop_gradient not in ("symmetric", "none") and config.optim.batch_size < 2:
        raise ConfigError(
            f"the {config.ssl.stop_gradient} stop-gradient pairs images within a batch, so optim.batch_size "
            f"must be at least 2 (got {config.optim.batch_size})"
        )


def _check_decomposition_options(config: Config) -> None:
    """Zhang et al.'s architectures, toy losses and gradient surgery (docs/decomposition.md): refuse combinations
    that are undefined or do nothing."""
    m, s = config.model, config.ssl
    if m.predictor in ("symmetric", "inverse") and s.method != "simsiam":
        raise ConfigError(f"model.predictor = {m.predictor!r} puts a head on the SimSiam target branch; BYOL's target "
                          "is the EMA encoder. Use ssl.method = 'simsiam'")
    if s.loss != "cosine":
        if s.stop_gradient != "symmetric" or s.views != "reuse":
            raise ConfigError(f"ssl.loss = {s.loss!r} (a Conjecture 1 toy loss) replaces the pairwise loss: it needs "
                              "ssl.stop_gradient = 'symmetric' and ssl.views = 'reuse'")
        if m.predictor in ("symmetric", "inverse"):
            raise ConfigError(f"ssl.loss = {s.loss!r} builds its targets from the projections; model.predictor = "
                              f"{m.predictor!r} changes the target side: use predictor none (the paper's setting)")
    if s.grad_surgery != "none":
        if s.loss != "cosine":
            raise ConfigError(f"ssl.grad_surgery = {s.grad_surgery!r} edits the extra gradient of the cosine loss; it "
                              f"cannot be combined with ssl.loss = {s.loss!r}")
        if m.predictor in ("none", "symmetric") and s.method == "simsiam":
            raise ConfigError(f"ssl.grad_surgery = {s.grad_surgery!r} with model.predictor = {m.predictor!r}: the "
                              "SimSiam target is then the other crop's own output, so the extra gradient is 0 and "
                              "there is nothing to edit. Use a predictor (mlp, linear, bias, ...)")


def _validate_timm(model: ModelConfig) -> None:
    """``timm:NAME``: the ResNet-only keys keep their defaults and NAME is a timm model (checked by timm)."""
    if model.width != 1.0:
        raise ConfigError(f"model.width = {model.width} multiplies ResNet stages and does not apply to "
                          f"{model.backbone}; leave it at 1 and size the timm model through model.timm_kwargs "
                          "(e.g. \"embed_dim=96,depth=4\" for a ViT, \"dims=[16,32,64,128]\" for a ConvNeXt)")
    if model.cifar_stem:
        raise ConfigError(f"model.cifar_stem is a ResNet stem and does not apply to {model.backbone}; leave it "
                          "unset (for a ViT at 32 px set a small patch: model.timm_kwargs = \"patch_size=4\")")
    if model.zero_init_residual:
        raise ConfigError(f"model.zero_init_residual applies to gsg's ResNets, not {model.backbone}; leave it false "
                          "(timm models initialise themselves)")
    from gsg.models.timm_backbone import check_timm_name

    check_timm_name(model.backbone[len(TIMM_PREFIX):])


def _validate_contrastive(config: Config) -> None:
    ssl, method = config.ssl, config.ssl.method
    if method not in CONTRASTIVE_METHODS:
        if ssl.stop_gradient == "none":
            raise ConfigError(f"ssl.stop_gradient = 'none' is for the contrastive methods (simclr, moco); {method} "
                              "needs a policy: symmetric (its own loss) or guided (GSG)")
        return
    if ssl.temperature is not None and not ssl.temperature > 0:
        raise ConfigError(f"ssl.temperature must be positive (the similarities are divided by it), got "
                          f"{ssl.temperature}; leave it unset for the method's default (SimCLR 0.5 at CIFAR size, 0.1 "
                          "at ImageNet size; MoCo v2 0.2)")
    for section, key in _CONTRASTIVE_FIXED:
        value = getattr(getattr(config, section), key)
        if value != "none":
            raise ConfigError(f"{section}.{key} = {value!r} does not apply to ssl.method = {method!r} (no "
                              f"stop-gradient policy, no predictor): set {section}.{key} = 'none'")
    if ssl.loss != "cosine" or ssl.grad_surgery != "none":
        raise ConfigError(f"{method} applies its own contrastive loss: ssl.loss = {ssl.loss!r} / ssl.grad_surgery = "
                          f"{ssl.grad_surgery!r} are for the cosine loss of simsiam/byol; leave them unset")
    if ssl.views != "reuse" or ssl.pairing is not None:
        raise ConfigError(f"{method} contrasts the two crops of each image (ssl.views = 'reuse'); ssl.views = "
                          f"{ssl.views!r} / ssl.pairing = {ssl.pairing!r} are GSG settings: leave them unset")
    if config.optim.batch_size < 2:
        raise ConfigError(f"{method} takes its negatives from other images, so optim.batch_size must be at least 2 "
                          f"(got {config.optim.batch_size}); SimCLR's accuracy grows with the batch (256 or more)")
    if method == "moco" and ssl.queue_size is not None:
        check_queue_size(ssl, ssl.queue_size, config.optim.batch_size)


def check_queue_size(ssl: SSLConfig, queue_size: int, global_batch: int, *, default: bool = False) -> None:
    """MoCo enqueues ``global_batch`` keys a step (twice that with ``moco_symmetric``): the queue must hold a
    whole number of those, as MoCo's official code asserts."""
    per_step = global_batch * (2 if ssl.moco_symmetric else 1)
    where = f"ssl.queue_size = {queue_size}" + (" (the default at this image size)" if default else "")
    if queue_size < 1:
        raise ConfigError(f"{where} must be positive")
    if queue_size % per_step:
        what = f"2 × the global batch {global_batch} (moco_symmetric enqueues both views)" if ssl.moco_symmetric \
            else f"the global batch {global_batch}"
        lower = max(per_step, queue_size - queue_size % per_step)
        raise ConfigError(f"{where} must be a multiple of {what}, the keys enqueued per step; set "
                          f"--set ssl.queue_size={lower} or a --batch-size that divides {queue_size}")
