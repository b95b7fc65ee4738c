"""One typed configuration schema; every default lives here.

A config is built as: schema defaults ← preset (``src/gsg/presets/NAME.toml``) ← ``--config FILE``
(TOML or JSON) ← command-line flags. Unknown sections or keys are errors that name the nearest valid
key, so a typo never trains silently with the default.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from gsg.errors import ConfigError


@dataclass
class DataConfig:
    dataset: str = "fashion-mnist"
    data_dir: str | None = None  # where dataset files are looked for first
    subset: int | None = None  # train on a fixed random subset of N images
    image_size: int | None = None  # None: the dataset's own size (image folders: 224)
    recipe: str | None = None  # augmentation; None: grayscale / cifar / imagenet by channels and size
    crop_min_scale: float | None = None  # RandomResizedCrop's smallest area fraction; None: the recipe's
    workers: int = 4  # decoding processes for image folders
    on_device: bool = True  # hold in-memory datasets on the training device (GPU-resident CIFAR)
    download: bool = True  # try torchvision's download when the files are not found locally
    on_bad_file: str = "skip"  # image folders: skip unreadable files (listed in one warning) | error (name the file)


@dataclass
class ModelConfig:
    backbone: str = "resnet18"  # or timm:NAME, any timm model without its classifier, randomly initialised
    timm_kwargs: dict[str, Any] = field(default_factory=dict)  # kwargs for timm:NAME, a table or "patch_size=4,depth=2"
    width: float = 1.0  # channel multiplier of every ResNet stage (0.25 for CPU runs); ResNets only
    cifar_stem: bool | None = None  # None: automatic for inputs up to 64 px; ResNets only
    zero_init_residual: bool = False  # last BN of each residual branch starts at 0 (the authors' ImageNet ResNet-50)
    proj_layers: int = 2  # 2: CIFAR projector, 3: ImageNet projector (Appendix C)
    proj_dim: int = 2048  # projector output (and predictor input/output) dimension
    proj_hidden: int | None = None  # None: proj_dim
    proj_last_bn: str = "plain"  # affine (lightly's CIFAR head) | plain (official ImageNet code) | none
    predictor: str = "mlp"  # mlp | linear | none | directpred | directcopy | symmetric | inverse | bias
    pred_hidden: int = 512  # the MLP predictor's bottleneck
    directpred_rho: float = 0.3  # EMA rate of the correlation matrix F̂ (Tian et al.)
    directpred_eps: float = 0.1  # boost of small eigenvalues, relative to the largest
    directpred_freq: int = 1  # recompute W_p every N steps


@dataclass
class SSLConfig:
    method: str = "simsiam"  # simsiam | byol | simclr | moco (explicit contrastive baselines, docs/methods.md)
    stop_gradient: str = "guided"  # symmetric | guided | random | reverse; none (set for simclr/moco: no policy)
    views: str = "reuse"  # reuse: 2 crops per image, pairs use existing views; fresh: 4 crops (authors' code)
    pairing: str | None = None  # matching (disjoint pairs) | cycle; None: matching for reuse, cycle for fresh
    ema_momentum: float = 0.99  # BYOL target momentum (base value of the cosine schedule)
    ema_schedule: str = "cosine"  # cosine (to 1) | constant
    temperature: float | None = None  # simclr/moco τ; None: SimCLR 0.5 up to 64 px, 0.1 above; MoCo v2 0.2
    queue_size: int | None = None  # moco: K keys, a multiple of the global batch; None: 4096 up to 64 px, else 65536
    moco_momentum: float = 0.999  # moco: constant momentum of the key encoder (MoCo v2)
    moco_symmetric: bool = False  # moco: also q2→k1 and enqueue both views' keys (MoCo v2 is asymmetric, q1→k2)
    loss: str = "cosine"  # cosine (the policy's) / center: -Z_a·sg(o_z) / residual: -Z_a·sg(r_a) (Conjecture 1)
    grad_surgery: str = "none"  # keep basic + nothing (basic) / o_e (center) / r_e (residual) / G_e (full) of -dL/dP


@dataclass
class OptimConfig:
    epochs: int = 200  # pretraining epochs
    optimizer: str = "sgd"  # sgd (the paper's; ResNets) | adamw (ViTs; no decay on biases, norms, pos-embed)
    batch_size: int = 512  # global; under torchrun each process takes batch_size / world_size and GSG pairs within it
    base_lr: float = 0.05  # lr = base_lr × global batch / 256
    lr: float | None = None  # absolute lr; overrides base_lr scaling
    schedule: str = "cosine"  # cosine | constant
    warmup_epochs: int = 0  # linear lr warm-up
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # SGD: L2 on all parameters; AdamW: decoupled, weights only (ViTs: e.g. 0.05)
    adam_beta1: float = 0.9  # AdamW beta1
    adam_beta2: float = 0.999  # AdamW beta2
    adam_eps: float = 1e-8  # AdamW epsilon
    fix_pred_lr: bool = False  # SimSiam: keep the predictor's lr constant


@dataclass
class RunConfig:
    seed: int = 0  # seeds the subset, batch order, augmentation, pairing and weights
    out: str = "runs/gsg"  # run directory: checkpoint.pt, metrics.jsonl, tb/, config.json
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto: bf16 on CUDA with native bf16, else fp16, off on CPU; native: bf16 where native, CPUs too
    channels_last: bool | None = None  # None: on for ResNets (faster on CUDA and on CPU), off for timm models
    compile: bool = False  # torch.compile the model
    checkpoint_every: int = 1  # epochs
    knn_every: int = 1  # epochs; 0 disables the online kNN monitor
    knn_k: int = 200  # weighted kNN monitor (InstDisc); k=1 is also reported
    knn_t: float = 0.1  # temperature of the weighted vote
    knn_train_subset: int | None = 10000  # fixed subset of the clean train set used as the kNN bank
    knn_test_subset: int | None = None  # fixed subset of the test set for the monitor
    monitor_data_dir: str | None = None  # labelled image folder (train/ + test/ or val/) for the kNN monitor and probe
    online_probe: bool | None = None  # linear classifier on detached features; None: on when labels exist
    probe_optimizer: str = "sgd"  # sgd (momentum 0.9) | adam; the probe's own optimiser, no weight decay
    probe_lr: float | None = None  # None: 0.1 for sgd, 1e-3 for adam (constant; features are batch-normalised)
    log_every: int = 20  # steps
    tensorboard: bool = True  # also write TensorBoard scalars to OUT/tb
    wandb: bool = False  # also log to Weights & Biases (pip install 'gsg-ssl[wandb]')
    wandb_project: str = "gsg"  # W&B project
    wandb_name: str | None = None  # W&B run name; None: the name of run.out
    wandb_mode: str = "online"  # online | offline (files under OUT/wandb or $WANDB_DIR, `wandb sync` later) | disabled
    progress: bool = True  # progress bar on stderr
    limit_batches: int | None = None  # stop each epoch after N batches (smoke tests)
    on_nonfinite: str = "stop"  # stop | rollback (reload the last checkpoint with half the lr)
    final_baselines: bool = False  # gsg pretrain: end with full-split kNN beside raw-pixel and random-init baselines
    log_decomposition: bool = True  # log Zhang et al.'s gradient decomposition each epoch (on its last batch)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("data", "dataset"): ("fashion-mnist", "mnist", "cifar10", "cifar100", "stl10", "imagefolder", "synthetic"),
    ("data", "recipe"): ("imagenet", "cifar", "grayscale"),
    ("data", "on_bad_file"): ("skip", "error"),
    ("model", "backbone"): ("resnet18", "resnet34", "resnet50"),
    ("model", "proj_last_bn"): ("affine", "plain", "none"),
    ("model", "predictor"): ("mlp", "linear", "none", "directpred", "directcopy", "symmetric", "inverse", "bias"),
    ("ssl", "method"): ("simsiam", "byol", "simclr", "moco"),
    ("ssl", "stop_gradient"): ("symmetric", "guided", "random", "reverse", "none"),
    ("ssl", "views"): ("reuse", "fresh"),
    ("ssl", "pairing"): ("matching", "cycle"),
    ("ssl", "ema_schedule"): ("cosine", "constant"),
    ("ssl", "loss"): ("cosine", "center", "residual"),
    ("ssl", "grad_surgery"): ("none", "basic", "center", "residual", "full"),
    ("optim", "schedule"): ("cosine", "constant"),
    ("optim", "optimizer"): ("sgd", "adamw"),
    ("run", "probe_optimizer"): ("sgd", "adam"),
    ("run", "wandb_mode"): ("online", "offline", "disabled"),
    ("run", "amp"): ("auto", "native", "bf16", "fp16", "off"),
    ("run", "on_nonfinite"): ("stop", "rollback"),
}
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
TIMM_PREFIX = "timm:"  # model.backbone = "timm:NAME" builds timm.create_model(NAME, num_classes=0, ...)
CONTRASTIVE_METHODS: tuple[str, ...] = ("simclr", "moco")  # explicit negatives: no stop-gradient, no predictor
# What simclr/moco fix: no stop-gradient policy and no predictor (see _contrastive_keys).
_CONTRASTIVE_FIXED: tuple[tuple[str, str], ...] = (("ssl", "stop_gradient"), ("model", "predictor"))
SMALL_IMAGE = 64  # px: "CIFAR-size" up to here (the CIFAR stem's rule), "ImageNet-size" above


_SECTION_TYPES = {"data": DataConfig, "model": ModelConfig, "ssl": SSLConfig, "optim": OptimConfig,
                  "run": RunConfig}


def _nearest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}valid keys: {', '.join(sorted(valid))}"


def _coerce(section: str, key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against the field's type annotation, converting where it is lossless."""
    where = f"{section}.{key}"
    if typing.get_origin(annotation) is dict:
        return parse_kwargs(value, where)
    args = typing.get_args(annotation)
    optional = type(None) in args
    if optional and isinstance(value, str) and value.lower() in ("none", "null"):
        value = None  # "--set run.knn_test_subset=none"; a str field such as predictor keeps "none"
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where} cannot be empty")
    base = next((a for a in args if a is not type(None)), annotation) if args else annotation
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int | str | float):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            as_float = float(value)
        except (ValueError, OverflowError):
            raise ConfigError(f"{where} must be an integer, got {value!r}") from None
        if not math.isfinite(as_float) or as_float != int(as_float):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return int(as_float)
    if base is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        return number
    if base is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value


def parse_kwargs(value: Any, where: str = "timm_kwargs") -> dict[str, Any]:
    """Keyword arguments from a table or a ``"k=v,k=v"`` string; values are JSON where they parse, else strings.

    ``"img_size=32,patch_size=4,dims=[8,16,32,64],global_pool=avg"`` → ``{"img_size": 32, "patch_size": 4,
    "dims": [8, 16, 32, 64], "global_pool": "avg"}``. Commas inside brackets do not split.

    Example:
        >>> parse_kwargs("img_size=32,patch_size=4,depths=[1,1]")
        {'img_size': 32, 'patch_size': 4, 'depths': [1, 1]}
    """
    if isinstance(value, str):
        items: dict[str, Any] = {}
        text = value.strip()
        parts, depth, start = [], 0, 0
        for i, ch in enumerate(text):
            if ch in "[{(":
                depth += 1
            elif ch in "]})":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(text[start:i])
                start = i + 1
        parts.append(text[start:])
        for part in (p.strip() for p in parts):
            if not part:
                continue
            key, sep, raw = part.partition("=")
            if not sep or not key.strip().isidentifier():
                raise ConfigError(f"{where}: expected KEY=VALUE pairs separated by commas (e.g. "
                                  f"\"img_size=32,patch_size=4\"), got {part!r}")
            try:
                items[key.strip()] = json.loads(raw)
            except json.JSONDecodeError:
                items[key.strip()] = raw.strip()
        value = items
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table (TOML [model.timm_kwargs], JSON object) or a string "
                          f"\"key=value,key=value\", got {value!r}")
    for k, v in value.items():
        if not isinstance(k, str) or not _plain(v):
            raise ConfigError(f"{where}.{k} = {v!r}: values must be finite numbers, strings, booleans or lists of "
                              "them")
    return dict(value)


def _plain(v: Any) -> bool:
    if isinstance(v, list | tuple):
        return all(_plain(x) for x in v)
    if isinstance(v, float):
        return math.isfinite(v)
    return v is None or isinstance(v, bool | int | str)


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def apply(config: Config, updates: dict[str, Any], *, origin: str = "config") -> Config:
    """Apply nested ``{section: {key: value}}`` updates, checking every key, type and choice."""
    if not isinstance(updates, dict):
        raise ConfigError(f"{origin}: expected a table of sections, got {type(updates).__name__}")
    for section, values in updates.items():
        if section not in _SECTION_TYPES:
            raise ConfigError(f"{origin}: unknown section [{section}]; {_nearest(section, list(_SECTION_TYPES))}")
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: [{section}] must be a table of keys, got {values!r}")
    was_contrastive = config.ssl.method in CONTRASTIVE_METHODS
    for section, values in updates.items():
        obj = getattr(config, section)
        types_ = _field_types(type(obj))
        for key, value in values.items():
            if key not in types_:
                raise ConfigError(f"{origin}: unknown key {section}.{key}; {_nearest(key, list(types_))}")
            setattr(obj, key, _coerce(section, key, value, types_[key]))
    _contrastive_keys(config, updates, was_contrastive, origin)
    validate(config)
    return config


def _contrastive_keys(config: Config, layer: dict[str, Any], was_contrastive: bool, origin: str) -> None:
    """simclr and moco have no stop-gradient policy and no predictor: both keys are ``none`` for them.

    A value this layer sets itself (a flag, ``--set``, a ``--config`` file) that is not ``none`` is an error: it
    would be ignored. A value inherited from the schema defaults or an earlier layer (a preset's
    ``stop_gradient = "guided"``) becomes ``none``. Switching back from simclr/moco to simsiam/byol restores
    the schema defaults of the two keys unless the same layer sets them.
    """
    method = config.ssl.method
    for section, key in _CONTRASTIVE_FIXED:
        obj = getattr(config, section)
        value = getattr(obj, key)
        given = key in (layer.get(section) or {})
        if method in CONTRASTIVE_METHODS and value != "none":
            if given:
                flag = "--stop-gradient" if key == "stop_gradient" else "--predictor"
                what = "stop-gradient policy" if key == "stop_gradient" else "predictor"
                raise ConfigError(
                    f"{origin}: {section}.{key} = {value!r} does not apply to ssl.method = {method!r}: an explicit "
                    f"contrastive method takes its negatives from other images, with no {what}. Remove {flag} "
                    f"(or set {section}.{key} = 'none')")
            setattr(obj, key, "none")
        elif method not in CONTRASTIVE_METHODS and was_contrastive and value == "none" and not given:
            setattr(obj, key, getattr(type(obj)(), key))


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


def resolved_temperature(ssl: SSLConfig, image_size: int) -> float:
    """τ of simclr/moco: ``ssl.temperature``, else SimCLR's 0.5 at CIFAR size (up to 64 px; SimCLR's CIFAR-10
    setting, Appendix B.9) or 0.1 above (its ImageNet setting), MoCo v2's 0.2 at any size."""
    if ssl.temperature is not None:
        return ssl.temperature
    if ssl.method == "moco":
        return 0.2
    return 0.5 if image_size <= SMALL_IMAGE else 0.1


def resolved_queue_size(ssl: SSLConfig, image_size: int) -> int:
    """MoCo's K: ``ssl.queue_size``, else 65536 (MoCo's ImageNet value) above 64 px and 4096 (MoCo's CIFAR-10
    demo) up to 64 px, where data sets are small."""
    if ssl.queue_size is not None:
        return ssl.queue_size
    return 4096 if image_size <= SMALL_IMAGE else 65536


def resolved_pairing(ssl: SSLConfig) -> str:
    """The pairing a run uses: ``ssl.pairing``, or matching for reuse and cycle for fresh when it is unset."""
    return ssl.pairing or ("cycle" if ssl.views == "fresh" else "matching")


def crops_per_image(views: str | None) -> int:
    """Crops each image is augmented into and encoded per step: 4 for ``views = fresh``, else 2."""
    return 4 if views == "fresh" else 2


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("gsg.presets").iterdir() if p.name.endswith(".toml"))


def read_preset(name: str) -> dict[str, Any]:
    names = preset_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.4)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown preset {name!r}; {hint}available presets: {', '.join(names)}")
    text = resources.files("gsg.presets").joinpath(f"{name}.toml").read_text()
    return tomllib.loads(text)


def read_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text ({exc}); is it a TOML or JSON file?") from None
    try:
        if path.suffix == ".json":
            return json.loads(text)
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: "
                          f"{exc}") from exc


def load_config(*, preset: str | None = None, file: str | Path | None = None,
                overrides: dict[str, Any] | None = None) -> Config:
    """Defaults ← preset ← file ← overrides (each a ``{section: {key: value}}`` table)."""
    config = Config()
    if preset:
        apply(config, read_preset(preset), origin=f"preset {preset!r}")
    if file:
        apply(config, read_file(file), origin=str(file))
    if overrides:
        apply(config, overrides, origin="command line")
    validate(config)
    return config


def from_dict(d: dict[str, Any]) -> Config:
    """Rebuild a config saved with :meth:`Config.to_dict` (e.g. from a checkpoint)."""
    return apply(Config(), d, origin="checkpoint config")



def schema_markdown() -> str:
    """docs/config.md, generated from this module (defaults and the comments beside them)."""
    import inspect
    import re

    lines = ["# Configuration", "",
             "One schema, defaults in one place: [`src/gsg/config.py`](../src/gsg/config.py). A config is built as",
             "defaults ← preset (`--preset`) ← file (`--config FILE`, TOML or JSON with `[section]` tables) ← flags",
             "(`--epochs`, …, and `--set SECTION.KEY=VALUE` for any key). Unknown sections and keys are errors that",
             "name the nearest valid key. `gsg pretrain ... --print-config` prints the resolved config.",
             "", "This page is generated: `python -c 'from gsg.config import schema_markdown as s; print(s())'`.", ""]
    for section, cls in _SECTION_TYPES.items():
        lines += [f"## [{section}]", "", "| key | default | meaning |", "|---|---|---|"]
        body = inspect.getsource(cls)
        for f in dataclasses.fields(cls):
            m = re.search(rf"^\s+{f.name}: .*?=\s*(.*?)(?:\s+#\s*(.*))?$", body, re.M)
            default, comment = (m.group(1), m.group(2) or "") if m else ("", "")
            choices = CHOICES.get((section, f.name))
            if choices:
                comment = (comment + "; " if comment else "") + "one of " + ", ".join(f"`{c}`" for c in choices)
            default = default.replace("field(default_factory=dict)", "{}")
            lines.append(f"| `{f.name}` | `{default}` | {comment.replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)
