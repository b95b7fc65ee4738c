"""The typed schema: one dataclass per section, their defaults, choices and constants, and docs/config.md."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any


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
TIMM_PREFIX = "timm:"  # model.backbone = "timm:NAME" builds timm.create_model(NAME, num_classes=0, ...)
CONTRASTIVE_METHODS: tuple[str, ...] = ("simclr", "moco")  # explicit negatives: no stop-gradient, no predictor
# What simclr/moco fix: no stop-gradient policy and no predictor (see overrides._contrastive_keys).
_CONTRASTIVE_FIXED: tuple[tuple[str, str], ...] = (("ssl", "stop_gradient"), ("model", "predictor"))
SMALL_IMAGE = 64  # px: "CIFAR-size" up to here (the CIFAR stem's rule), "ImageNet-size" above


_SECTION_TYPES = {"data": DataConfig, "model": ModelConfig, "ssl": SSLConfig, "optim": OptimConfig,
                  "run": RunConfig}


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def schema_markdown() -> str:
    """docs/config.md, generated from this module (defaults and the comments beside them)."""
    import inspect
    import re

    lines = ["# Configuration", "",
             "One schema, defaults in one place: [`src/gsg/config/schema.py`](../src/gsg/config/schema.py). A config",
             "is built as defaults ← preset (`--preset`) ← file (`--config FILE`, TOML or JSON with `[section]`",
             "tables) ← flags (`--epochs`, …, and `--set SECTION.KEY=VALUE` for any key). Unknown sections and keys",
             "are errors that name the nearest valid key. `gsg pretrain ... --print-config` prints the resolved",
             "config.",
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
