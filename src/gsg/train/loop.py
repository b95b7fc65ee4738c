"""The pretraining loop: data → views → Siamese model → stop-gradient policy → SGD, with monitoring.

One function, :func:`pretrain`, takes a :class:`~gsg.config.Config` and returns the final metrics.
It works on one CPU, one GPU, or many processes under torchrun (DDP + SyncBatchNorm; GSG pairs
images within each process's batch). Checkpoints are written atomically every
``run.checkpoint_every`` epochs and on SIGTERM/SIGINT; ``resume=True`` continues exactly.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gsg import __version__
from gsg.analysis import decomposition
from gsg.analysis.collapse import (
    alignment,
    center_residual,
    gsg_case_stats,
    normalized_std_tensor,
    rankme,
    uniformity,
)
from gsg.analysis.knn import knn_accuracy
from gsg.checkpoint import FORMAT_KEY, FORMAT_VERSION, check_resumable, load_checkpoint, save_atomic
from gsg.config import Config, crops_per_image, resolved_pairing
from gsg.data.datasets import ImageDataset, fixed_subset, held_out_split, load_dataset
from gsg.data.loader import BatchLoader, CropSpec
from gsg.data.views import BatchAugment, make_recipe
from gsg.errors import CheckpointError, ConfigError, DataError, TrainingDiverged
from gsg.models.directpred import DirectPredictor, batch_correlation, eigenspace_alignment
from gsg.models.embed import embed
from gsg.models.timm_backbone import is_timm
from gsg.ssl.build import backbone_spec, build_model
from gsg.ssl.methods import check_method, contrastive_loss, is_contrastive, target_momentum
from gsg.ssl.siamese import Siamese
from gsg.ssl.stopgrad import derangement, perfect_matching, policy_loss
from gsg.ssl.surgery import GradSurgery
from gsg.ssl.terms import Terms, policy_terms, symmetric_terms, target_loss
from gsg.ssl.toy_losses import toy_loss
from gsg.train import rng
from gsg.train.distributed import (
    DistInfo,
    all_reduce_mean,
    any_rank,
    barrier,
    broadcast_object,
    init_from_env,
    shutdown,
    wrap_ddp,
)
from gsg.train.logging import MetricsLogger, WandbSettings
from gsg.train.optim import build_optimizer, effective_lr, lr_factor, set_lr
from gsg.train.precision import amp_dtype, configure_cuda_backends, float32_heads
from gsg.train.probe import MONITOR_FIX, FeatureTap, OnlineProbe, monitor_datasets

log = logging.getLogger("gsg.train")
CHECKPOINT_NAME = "checkpoint.pt"
ALIGNMENT_TOP = 10  # eigenvectors of F over which a linear predictor's alignment is averaged
UNIFORMITY_MAX = 4096  # pairwise uniformity is O(N^2): cap the rows


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    batch_in_epoch: int = 0  # batches of `epoch` already done (mid-epoch checkpoint on a signal)
    lr_scale: float = 1.0  # lowered by rollbacks after a non-finite loss
    history: list[dict[str, Any]] = field(default_factory=list)


def resolve_device(name: str, info: DistInfo) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("run.device asks for CUDA but no GPU is visible; use --device cpu")
        if info.enabled:  # modulo: one visible GPU per task (SLURM --gpus-per-task=1), as init_from_env
            return torch.device("cuda", info.local_rank % max(torch.cuda.device_count(), 1))
    return torch.device(name)


def pick_recipe(cfg: Config, dataset: ImageDataset, image_size: int) -> str:
    if cfg.data.recipe:
        return cfg.data.recipe
    if dataset.channels == 1:
        return "grayscale"
    return "cifar" if image_size <= 64 else "imagenet"


def compile_model(requested: bool, sync_bn: bool, *, is_main: bool = True) -> bool:
    """Whether to ``torch.compile`` the model: as requested, except under DDP with SyncBatchNorm.

    Dynamo breaks the graph at every ``nn.SyncBatchNorm`` (pytorch/pytorch#161302; #107372: compile + DDP +
    SyncBN errors), about 46 per step for SimSiam's ResNet-18 and 90 with BYOL's target: dozens of fragments,
    long compiles and no expected speed-up. The augmentation, which has no BatchNorm, is still compiled.
    """
    if requested and sync_bn:
        if is_main:
            log.warning("run.compile: not compiling the model under multi-GPU DDP with SyncBatchNorm (torch.compile "
                        "breaks the graph at every SyncBatchNorm layer, pytorch/pytorch#161302); the augmentation "
                        "is still compiled")
        return False
    return requested


class _Signals:
    """Turns SIGTERM/SIGINT into a flag so the loop can checkpoint before exiting."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Interrupted(Exception):
    """Training stopped on a signal after saving a checkpoint."""


class Trainer:
    """Holds everything one pretraining run needs; :func:`pretrain` drives it."""

    def __init__(self, cfg: Config, *, resume: bool | str = False) -> None:
        self.cfg = cfg
        self.dist = init_from_env("cuda" if cfg.run.device.startswith("cuda") or (
            cfg.run.device == "auto" and torch.cuda.is_available()) else "cpu")
        self.device = resolve_device(cfg.run.device, self.dist)
        self.out = Path(cfg.run.out)
        self.ckpt_path = self.out / CHECKPOINT_NAME
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.run.seed + self.dist.rank)

        d = cfg.data
        configure_cuda_backends(self.device)
        # collective: under torchrun rank 0 downloads / lists the folder and the other ranks reuse its work.
        self.train_ds = load_dataset(d.dataset, "pretrain", data_dir=d.data_dir, download=d.download,
                                     on_bad_file=d.on_bad_file,
                                     image_size=d.image_size, subset=d.subset, seed=cfg.run.seed, collective=True)
        self.image_size = self.train_ds.image_size
        check_method(cfg, world_size=self.dist.world_size, image_size=self.image_size, n_images=len(self.train_ds))
        if self.train_ds.in_memory and d.on_device and self.device.type == "cuda":
            self.train_ds = self.train_ds.to(self.device)  # type: ignore[attr-defined]
        self.recipe = make_recipe(pick_recipe(cfg, self.train_ds, self.image_size), size=self.image_size,
                                  mean=self.train_ds.mean, std=self.train_ds.std)
        if d.crop_min_scale is not None:  # RandomResizedCrop's lower area bound, instead of the recipe's
            self.recipe = dataclasses.replace(self.recipe, crop_scale=(d.crop_min_scale, self.recipe.crop_scale[1]))
        self.augment = BatchAugment(self.recipe)
        if cfg.optim.batch_size % self.dist.world_size:
            raise ConfigError(f"optim.batch_size {cfg.optim.batch_size} is the global batch and must divide evenly "
                              f"over {self.dist.world_size} processes")
        self.local_batch = cfg.optim.batch_size // self.dist.world_size
        if self.local_batch < 2 and (cfg.ssl.stop_gradient != "symmetric" or cfg.ssl.views == "fresh"):
            raise ConfigError(f"each process gets {self.local_batch} image(s) per batch, but {cfg.ssl.stop_gradient} "
                              "stop-gradient pairs images within a process's batch: use a global batch of at least "
                              f"{2 * self.dist.world_size}")
        # Image folders: RandomResizedCrop on the full-resolution file, in the loader's workers, one crop per
        # view; the rest of the recipe runs batched on the device (BatchAugment with cropped=True).
        crops = CropSpec.from_recipe(self.recipe, crops_per_image(cfg.ssl.views))
        self.loader = BatchLoader(self.train_ds, self.local_batch, shuffle=True, drop_last=True,
                                  seed=cfg.run.seed, rank=self.dist.rank, world_size=self.dist.world_size,
                                  device=self.device, workers=d.workers, crops=crops)
        if len(self.loader) == 0:
            raise DataError(f"{len(self.train_ds)} images give no full batch of {self.local_batch} per process; "
                            "lower --batch-size or use more data")
        self.steps_per_epoch = len(self.loader)
        if cfg.run.limit_batches:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.run.limit_batches)
        self.total_steps = self.steps_per_epoch * cfg.optim.epochs

        self.model: Siamese = build_model(cfg.model, cfg.ssl.method, in_channels=self.train_ds.channels,
                                          image_size=self.image_size, ssl=cfg.ssl).to(self.device)
        float32_heads(self.model)  # under autocast only the backbone runs in half precision (F12, docs/gpu.md)
        # channels-last is faster for convolutions on CUDA (tensor cores) and on CPU (oneDNN): 1.22-1.31x per
        # training step on 2 CPU cores (`gsg bench steps --set compare_layout=true`, docs/performance.md).
        # timm models (ViTs: tokens, not feature maps) stay in their own layout unless asked.
        self.channels_last = (cfg.run.channels_last if cfg.run.channels_last is not None
                              else not is_timm(cfg.model.backbone))
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.global_batch = cfg.optim.batch_size
        self.base_lr = effective_lr(cfg.optim, self.global_batch)
        self.optimizer = build_optimizer(self.model, cfg.optim, self.base_lr)
        self.amp = amp_dtype(cfg.run.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.aug_gen = torch.Generator(device=self.device)
        self.aug_gen.manual_seed(cfg.run.seed * 7919 + self.dist.rank)
        self._knn_data: tuple[ImageDataset, ImageDataset] | None = None
        self.probe, self.probe_mode = self._make_probe()
        self.tap = FeatureTap(self.model.backbone) if self.probe_mode == "views" else None
        self.state = TrainState()
        # resume=True requires a checkpoint; "auto" continues one if present (what a torchrun elastic restart,
        # which reruns the same command line, needs).
        if resume is True or (resume == "auto" and self.ckpt_path.is_file()):
            self._resume()

        self.net, sync_bn = wrap_ddp(self.model, self.device, self.dist)
        if self.dist.enabled:
            if not sync_bn:  # PyTorch's SyncBatchNorm runs only on GPUs: CPU (gloo) runs keep per-process BN.
                log.warning("SyncBatchNorm needs CUDA; this CPU run uses per-process BatchNorm statistics")
            self.model = self.net.module  # type: ignore[assignment]
        self.compile_model = compile_model(cfg.run.compile, sync_bn, is_main=self.dist.is_main)
        self.forward = torch.compile(self.net) if self.compile_model else self.net
        if cfg.run.compile:
            # The augmentation's ~200 elementwise kernels per view fuse (1.78x on the CPU at 32 px,
            # docs/performance.md section 2); the random draw (`sample`) stays eager, so resume is unchanged.
            self.augment.apply = torch.compile(self.augment.apply)  # type: ignore[method-assign]
        wandb = (WandbSettings(project=cfg.run.wandb_project, name=cfg.run.wandb_name, mode=cfg.run.wandb_mode,
                               config=cfg.to_dict()) if cfg.run.wandb else None)
        self.logger = MetricsLogger(self.out, enabled=self.dist.is_main, tensorboard=cfg.run.tensorboard, wandb=wandb)
        if cfg.run.knn_every:  # (run.monitor_data_dir's data were loaded by _make_probe)
            self._knn_data = self._load_knn_data()
        self._rollbacks = 0

    def _make_probe(self) -> tuple[OnlineProbe | None, str | None]:
        """The online linear probe (gsg.train.probe) and its mode: "views", "monitor", or off (None)."""
        run = self.cfg.run
        if run.monitor_data_dir:  # asked for: unusable monitor data is an error, not a warning
            self._knn_data = monitor_datasets(self.cfg, image_size=self.image_size, channels=self.train_ds.channels)
            mode, classes = "monitor", self._knn_data[0].num_classes
            if not run.knn_every:
                if run.online_probe:
                    raise ConfigError("the online probe on run.monitor_data_dir trains at kNN-monitor epochs, but "
                                      "run.knn_every = 0; set run.knn_every >= 1 or run.online_probe = false")
                log.warning("run.knn_every = 0: no kNN monitor and no online probe on run.monitor_data_dir")
                return None, None
        elif self.train_ds.num_classes >= 2:
            mode, classes = "views", self.train_ds.num_classes
        else:
            why = f"{self.cfg.data.dataset} at {self.cfg.data.data_dir or 'its default location'} has no labels"
            if run.online_probe:
                raise ConfigError(f"run.online_probe = true needs labels, but {why}; {MONITOR_FIX}, or set "
                                  "run.online_probe = false")
            if run.online_probe is None:
                log.warning("online linear probe off: %s; %s", why, MONITOR_FIX)
            return None, None
        if run.online_probe is False:
            return None, None
        # views mode: every rank trains on its batch and the gradients are summed; monitor mode: rank 0 alone
        # the closure holds the DistInfo, not the Trainer: a Trainer -> probe -> closure -> Trainer cycle kept DDP
        # and gloo's threads alive until interpreter exit, where a rank sometimes aborted ("terminate called
        # without an active exception")
        info = self.dist
        reduce = ((lambda t: all_reduce_mean(t, info) * info.world_size)
                  if info.enabled and mode == "views" else None)
        probe = OnlineProbe(self.model.backbone.out_dim, classes, optimizer=run.probe_optimizer, lr=run.probe_lr,
                            seed=run.seed, device=self.device, all_reduce=reduce)
        return probe, mode

    # ---------------------------------------------------------------- checkpoints
    def checkpoint_dict(self, rng_states: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        rng_states = rng_states or [rng.capture(self.aug_gen, self.device)]
        return {
            FORMAT_KEY: FORMAT_VERSION,
            "gsg_version": __version__,
            "config": self.cfg.to_dict(),
            "backbone": backbone_spec(self.model, self.image_size),
            "data": {"dataset": self.cfg.data.dataset, "mean": list(self.train_ds.mean),
                     "std": list(self.train_ds.std), "image_size": self.image_size,
                     "channels": self.train_ds.channels},
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "train_state": {
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "epoch": self.state.epoch, "step": self.state.step,
                "batch_in_epoch": self.state.batch_in_epoch, "lr_scale": self.state.lr_scale,
                "rng": rng_states[0], "rng_per_rank": rng_states, "world_size": self.dist.world_size,
                "probe": self.probe.state_dict() if self.probe is not None else None,
            },
            "metrics": {"history": self.state.history},
        }

    def save(self) -> None:
        states: list[Any] = [rng.capture(self.aug_gen, self.device)]
        if self.dist.enabled:  # every rank's RNG, so that each resumes its own augmentation and pairing stream
            states = [None] * self.dist.world_size
            torch.distributed.all_gather_object(states, rng.capture(self.aug_gen, self.device))
        if self.dist.is_main:
            save_atomic(self.checkpoint_dict(states), self.ckpt_path)
        barrier(self.dist)

    def _stop_requested(self, signals: _Signals) -> bool:
        """A signal seen by any rank stops every rank after the same step (else ranks disagree on collectives)."""
        return bool(any_rank(signals.received is not None, self.dist, self.device))

    def _resume(self) -> None:
        if not self.ckpt_path.is_file():
            raise CheckpointError(f"--resume: no checkpoint at {self.ckpt_path}; start without --resume or point "
                                  "--out at the run to continue")
        ckpt = load_checkpoint(self.ckpt_path, map_location="cpu")
        check_resumable(ckpt, self.ckpt_path)
        self._check_compatible(ckpt)
        try:
            self.model.load_state_dict(ckpt["model"], strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint {self.ckpt_path} does not fit this model: {exc}") from exc
        ts = ckpt["train_state"]
        self.optimizer.load_state_dict(ts["optimizer"])
        self.scaler.load_state_dict(ts["scaler"])
        self.state = TrainState(epoch=ts["epoch"], step=ts["step"], batch_in_epoch=ts["batch_in_epoch"],
                                lr_scale=ts["lr_scale"], history=list(ckpt["metrics"]["history"]))
        per_rank = ts.get("rng_per_rank")
        same_world = isinstance(per_rank, list) and len(per_rank) == self.dist.world_size
        # Reseeded only when the checkpoint's generator ran on another device type (rng.restore warns).
        reseed = (self.cfg.run.seed * 7919 + self.dist.rank) * 1_000_003 + self.state.step
        rng.restore(per_rank[self.dist.rank] if same_world else ts["rng"], self.aug_gen, reseed=reseed,
                    device=self.device)
        if self.probe is not None:
            if ts.get("probe") is None:
                log.warning("%s has no online-probe state (made with the probe off): the probe starts afresh",
                            self.ckpt_path)
            else:
                self.probe.load_state_dict(ts["probe"])
        log.info("resumed from %s at epoch %d, step %d", self.ckpt_path, self.state.epoch, self.state.step)

    def _check_compatible(self, ckpt: dict[str, Any]) -> None:
        saved, now, defaults = ckpt["config"], self.cfg.to_dict(), type(self.cfg)().to_dict()
        # Anything that changes the model, the data or the optimisation must match for an exact resume.
        fixed = [("model", k) for k in now["model"]] + [("ssl", k) for k in now["ssl"]] + [
            ("data", "dataset"), ("data", "subset"), ("data", "image_size"), ("optim", "batch_size"),
            ("optim", "base_lr"), ("optim", "lr"), ("optim", "schedule"), ("optim", "weight_decay"),
            ("optim", "optimizer"), ("optim", "adam_beta1"), ("optim", "adam_beta2"), ("optim", "adam_eps"),
            ("run", "seed")]
        # a key the checkpoint predates had its default then
        diffs = [f"{s}.{k}: checkpoint {saved.get(s, {}).get(k, defaults[s][k])!r} vs now {now[s][k]!r}"
                 for s, k in fixed if saved.get(s, {}).get(k, defaults[s][k]) != now[s][k]]
        if diffs:
            raise CheckpointError(f"checkpoint {self.ckpt_path} was made with a different config: "
                                  + "; ".join(diffs) + ". Resume with the same settings or use a new --out.")
        if ckpt["train_state"].get("world_size", 1) != self.dist.world_size:
            log.warning("resuming with %d processes, checkpoint used %d: the batch order changes",
                        self.dist.world_size, ckpt["train_state"]["world_size"])

    # ---------------------------------------------------------------- one step
    def views_and_loss(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Augment, encode and apply the stop-gradient policy to one batch. Returns (loss, stats).

        ``images``: uint8 (B, C, H, W), or (V, B, C, S, S) views already cropped by the loader (image folders).
        """
        cfg = self.cfg.ssl
        pre = images.ndim == 5
        b = images.shape[1] if pre else images.shape[0]
        paired = cfg.stop_gradient not in ("symmetric", "none") or cfg.views == "fresh"  # none: simclr, moco
        matched = paired and resolved_pairing(cfg) == "matching"
        pairs = perfect_matching(b, generator=self.aug_gen, device=self.device) if matched else None
        partner = derangement(b, generator=self.aug_gen, device=self.device) if paired and not matched else None
        if pre:  # view k of image i is crop k; the partner's views are its own crops 2 and 3
            crops = [images[0], images[1]]
            if cfg.views == "fresh":
                assert partner is not None
                crops += [images[2][partner], images[3][partner]]
            batch = [self.augment(x, self.aug_gen, cropped=True) for x in crops]
        elif cfg.views == "fresh":
            assert partner is not None
            other = images[partner]
            batch = [self.augment(images, self.aug_gen), self.augment(images, self.aug_gen),
                     self.augment(other, self.aug_gen), self.augment(other, self.aug_gen)]
        else:
            batch = [self.augment(images, self.aug_gen), self.augment(images, self.aug_gen)]
        if self.channels_last:
            batch = [v.contiguous(memory_format=torch.channels_last) for v in batch]
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            out = self.forward(batch)
        p, t = out.p, out.t
        surgery = GradSurgery(cfg.grad_surgery) if cfg.grad_surgery != "none" else None  # Zhang et al. Table 4
        if surgery is not None:
            p = surgery.wrap(p)
        if is_contrastive(cfg.method):  # SimCLR's NT-Xent / MoCo's InfoNCE with its queue (gsg.ssl.methods)
            res = contrastive_loss(out, cfg, image_size=self.image_size, queue=self.model.queue, dist=self.dist)
        elif cfg.loss != "cosine":  # Conjecture 1's toy losses (symmetric, two views: config.validate)
            res = toy_loss(cfg.loss, p=(p[0], p[1]), t=(t[0], t[1]))
        elif cfg.views == "fresh":
            res = policy_loss(cfg.stop_gradient, p1=(p[0], p[1]), t1=(t[0], t[1]), p2=(p[2], p[3]),
                              t2=(t[2], t[3]), generator=self.aug_gen)  # type: ignore[arg-type]
        else:
            res = policy_loss(cfg.stop_gradient, p1=(p[0], p[1]), t1=(t[0], t[1]), partner=partner, pairs=pairs,
                              generator=self.aug_gen)  # type: ignore[arg-type]
        # The directed terms the loss used (gsg.ssl.terms), for surgery, the inverse predictor and the decomposition.
        decisions = (cfg.stop_gradient if cfg.loss == "cosine" else "symmetric", b, len(p), res.cases, pairs, partner)
        loss = res.loss
        if surgery is not None:
            surgery.prepare(p, t, self._terms(*decisions),  # fp16: the backward's gradient carries the loss scale
                            grad_scale=self.scaler.get_scale() if self.scaler.is_enabled() else 1.0)
        if t[0].requires_grad:  # a learnable target-side head (inverse predictor): its gradient, the loss unchanged
            inv = target_loss(self._terms(*decisions), p, t)
            loss = loss + (inv - inv.detach())
        z0 = out.z[0].detach().float()
        stats = {"z_std": normalized_std_tensor(z0), "z": z0, "z1": out.z[1].detach().float()}
        if res.distances is not None:
            stats["distances"], stats["cases"] = res.distances, res.cases
        # detached references: the epoch's last batch is decomposed at its end (the cosine loss's; not simclr/moco)
        if self.cfg.run.log_decomposition and not is_contrastive(cfg.method):
            stats["decomposition"] = ([x.detach() for x in p], [x.detach() for x in t], decisions)  # type: ignore
        if res.cases is not None:
            # a comparison, not bincount: bincount reads its size back to the host (a sync per step on CUDA)
            stats["case_share"] = ((res.cases[:, None] == torch.arange(4, device=res.cases.device)).sum(0).float()
                                   / res.cases.shape[0])
        return loss, stats

    def train_step(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor], float]:
        """One optimisation step on a batch: loss, backward, SGD, target EMA, DirectPred statistics.

        Returns (loss, stats, EMA momentum). Does not advance ``state.step``: the caller does.
        """
        cfg = self.cfg
        loss, stats = self.views_and_loss(images)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        momentum = target_momentum(cfg.ssl, self.state.step, self.total_steps)
        self.model.update_target(momentum)
        observe = getattr(self.model.predictor, "observe", None)
        if observe is not None:  # DirectPred/DirectCopy: set W_p from this step's online projections,
            # after backward, since the forward's graph still holds the old W_p.
            observe(torch.cat([stats["z"], stats["z1"]]),  # both views' online projections
                    all_reduce=(lambda x: all_reduce_mean(x, self.dist)) if self.dist.enabled else None)
        return loss, stats, momentum

    def train_epoch(self, signals: _Signals) -> dict[str, float]:
        cfg = self.cfg
        epoch = self.state.epoch
        self.model.train()
        self.loader.set_epoch(epoch)
        start = self.state.batch_in_epoch
        loss_sum = torch.zeros((), device=self.device)
        zstd_sum = torch.zeros((), device=self.device)
        n = 0
        last_z: Tensor | None = None
        last_stats: dict[str, Tensor] = {}
        case_sum = torch.zeros(4, device=self.device)
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        t0 = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        bar = _progress(self.steps_per_epoch, start, f"epoch {epoch + 1}/{cfg.optim.epochs}",
                        enabled=cfg.run.progress and self.dist.is_main)
        for i, (images, labels, _idx) in enumerate(self.loader.iterate(start), start=start):
            if i >= self.steps_per_epoch:
                break
            factor = lr_factor(self.state.step, self.total_steps, cfg.optim.warmup_epochs * self.steps_per_epoch,
                               cfg.optim.schedule)
            lr = set_lr(self.optimizer, self.base_lr * self.state.lr_scale, factor)
            if self.tap is not None and self.probe is not None:  # the probe reads the two views' features
                with self.tap.recording() as feats:
                    loss, stats, momentum = self.train_step(images)
                self.probe.train_batch(torch.cat(feats[:2]), labels.repeat(2))
            else:
                loss, stats, momentum = self.train_step(images)
            bad = ~torch.isfinite(loss.detach())
            first_bad = torch.where(bad & (first_bad < 0), torch.full((), self.state.step, dtype=torch.long,
                                                                         device=self.device),
                                    first_bad)
            loss_sum += torch.nan_to_num(loss.detach(), nan=0.0)
            zstd_sum += stats["z_std"]
            last_z, last_stats = stats["z"], stats
            if "case_share" in stats:
                case_sum += stats["case_share"]
            n += 1
            self.state.step += 1
            self.state.batch_in_epoch = i + 1
            # Under DDP the ranks agree on a stop with an all-reduce, a host sync: only every log_every steps (all
            # ranks at the same step); a signal then waits at most log_every steps. One process checks every step.
            log_step = self.state.step % cfg.run.log_every == 0
            stop = self._stop_requested(signals) if log_step or not self.dist.enabled else False
            if log_step or stop:
                self._check_finite(first_bad)
                self.logger.log("step", self.state.step, {"epoch": epoch, "loss": float(loss.detach()), "lr": lr,
                                                          "ema_momentum": momentum, "z_std": float(stats["z_std"])})
            if bar is not None:
                bar.update(1)
                if self.state.step % 10 == 0:
                    bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
            if stop and self.state.batch_in_epoch < self.steps_per_epoch:  # else: the epoch ends normally
                if bar is not None:
                    bar.close()
                self._check_finite(first_bad)
                self._check_weights_finite()
                self.save()
                raise Interrupted(f"stopped by signal {signals.received or 15} at epoch {epoch + 1}, step "
                                  f"{self.state.step}; checkpoint saved to {self.ckpt_path}; continue with --resume")
        if bar is not None:
            bar.close()
        self._check_finite(first_bad)
        self._check_weights_finite()
        n = max(n, 1)
        loss_mean = float(all_reduce_mean(loss_sum / n, self.dist))
        result = {"epoch": epoch + 1, "loss": loss_mean, "z_std": float(zstd_sum) / n,
                  "epoch_time_s": time.perf_counter() - t0, "lr": lr}
        pred = self.model.predictor
        if isinstance(pred, DirectPredictor):  # W_p is built from F̂'s eigenvectors: 1 when freq = 1
            result["pred_alignment"] = pred.alignment()
        elif isinstance(pred, nn.Linear) and last_z is not None:
            # Tian et al.'s observation: an SGD-trained linear W_p aligns with the correlation F of its inputs.
            # One batch's F has rank <= 2B, so the mean is over its top eigenvectors, where the signal is.
            w = pred.weight.detach().float()
            result["pred_alignment"] = eigenspace_alignment(w, batch_correlation(torch.cat([last_z, last_stats["z1"]])),
                                                            top=min(ALIGNMENT_TOP, w.shape[0]))
        if last_z is not None:  # dimensional collapse, which std(z/|z|) misses under a BatchNorm output
            result["z_rankme"] = rankme(last_z)
            cr = center_residual(last_z)
            result["z_center_ratio"], result["z_residual_ratio"] = cr["m_o"], cr["m_r"]
            # Wang & Isola on the last batch: views of one image close (alignment), images spread (uniformity).
            result["z_alignment"] = alignment(last_z, last_stats["z1"])
            result["z_uniformity"] = uniformity(last_z[:UNIFORMITY_MAX])
            if "decomposition" in last_stats:
                result.update(self._decomposition(*last_stats["decomposition"]))  # type: ignore[misc]
            if "distances" in last_stats:  # how decisive GSG's choice was on the last batch
                margins = gsg_case_stats(last_stats["cases"], last_stats["distances"])
                result["gsg_margin_mean"] = margins["margin_mean"]
        if self.cfg.ssl.stop_gradient not in ("symmetric", "none"):
            shares = (case_sum / n).tolist()
            result.update({f"case_{name}": s for name, s in zip(("11_21", "11_22", "12_21", "12_22"), shares,
                                                                  strict=True)})
        return result

    def _terms(self, policy: str, n: int, views: int, cases: Tensor | None, pairs: Tensor | None,
               partner: Tensor | None) -> Terms:
        return policy_terms(policy, n, views=views, cases=cases, pairs=pairs, partner=partner, device=self.device)

    def _decomposition(self, p: list[Tensor], t: list[Tensor], decisions: tuple[Any, ...]) -> dict[str, float]:
        """Zhang et al.'s gradient decomposition of the batch loss (gsg.analysis.decomposition), and for a pairing
        policy what its choice adds to the symmetric loss's gradient (``sel_*``)."""
        cfg = self.cfg.ssl
        terms = self._terms(*decisions)
        paired = cfg.stop_gradient != "symmetric" and cfg.loss == "cosine"
        ref = symmetric_terms(terms.n, views=terms.views, device=self.device) if paired else None
        return decomposition.batch_metrics(p, t, terms, loss=cfg.loss, reference=ref)

    def _kept(self) -> str:
        kept = (f"the last good checkpoint {self.ckpt_path} (epoch {self._saved_epoch()}) is kept"
                if self.ckpt_path.is_file() else "no checkpoint had been written yet")
        if self.cfg.run.on_nonfinite == "rollback" and self._rollbacks:
            return (f"{kept}, after {self._rollbacks} rollbacks to it with the lr scaled down to "
                    f"{self.state.lr_scale:g}. Lower --lr or check the data.")
        return f"{kept}. Lower --lr, check the data, or set run.on_nonfinite = 'rollback'."

    def _check_finite(self, first_bad: Tensor) -> None:
        """Raise TrainingDiverged if a step's loss was not finite; under DDP on every rank together.

        A NaN on one rank reaches the others one step later through the gradient all-reduce; deciding per rank
        would roll the ranks back at different steps and leave them out of step (docs/gpu.md, F2).
        """
        if self.dist.enabled:  # (any rank bad, earliest bad step) in one all-reduce
            never = torch.iinfo(torch.long).max
            both = torch.stack([first_bad, -torch.where(first_bad < 0, torch.full_like(first_bad, never), first_bad)])
            torch.distributed.all_reduce(both, op=torch.distributed.ReduceOp.MAX)
            first_bad = torch.where(both[0] >= 0, -both[1], both[0])
        bad_step = int(first_bad)
        if bad_step >= 0:
            raise TrainingDiverged(
                f"the loss became NaN or infinite at step {bad_step + 1} (epoch {self.state.epoch + 1}); training "
                f"stopped and {self._kept()}")

    def _check_weights_finite(self) -> None:
        """Weights, BatchNorm statistics and momentum can overflow while the loss still looks finite."""
        named = [(k, v) for k, v in self.model.state_dict().items() if v.is_floating_point()]
        named += [(f"momentum of {n}", self.optimizer.state[p]["momentum_buffer"])
                  for n, p in self.model.named_parameters()
                  if self.optimizer.state.get(p, {}).get("momentum_buffer") is not None]
        ok = torch.stack([torch.isfinite(v).all() for _, v in named])
        bad = [k for (k, _), good in zip(named, ok.tolist(), strict=True) if not good]
        # Per-process BatchNorm statistics (gloo) can differ between ranks: every rank decides together.
        if self.dist.enabled and bool(any_rank(bool(bad), self.dist, self.device)) and not bad:
            bad = ["weights or statistics of another process"]
        if bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            raise TrainingDiverged(
                f"the model's {', '.join(bad[:3])}{more} became NaN or infinite by step {self.state.step} (epoch "
                f"{self.state.epoch + 1}); training stopped and {self._kept()}")

    def _saved_epoch(self) -> int | str:
        try:
            return int(load_checkpoint(self.ckpt_path)["train_state"]["epoch"])
        except CheckpointError:
            return "?"

    # ---------------------------------------------------------------- monitoring
    def _load_knn_data(self) -> tuple[ImageDataset, ImageDataset] | None:
        """The monitor's clean train bank and held-out split, loaded by rank 0 (the only rank that embeds them).

        The decision to run the monitor is rank 0's and every rank takes it (a broadcast): a monitor switched
        off on rank 0 alone would leave the other ranks waiting at its barrier (docs/gpu.md, F1). When the data
        cannot serve, the run goes on without the monitor and says so, with what is missing.
        """
        cfg, d = self.cfg, self.cfg.data
        reason: str | None = None
        data: tuple[ImageDataset, ImageDataset] | None = None
        if cfg.run.monitor_data_dir:  # a separate labelled folder (gsg.train.probe.monitor_datasets)
            if self._knn_data is None:
                self._knn_data = monitor_datasets(cfg, image_size=self.image_size, channels=self.train_ds.channels)
            return self._knn_data
        if self.dist.is_main:
            split = held_out_split(d.dataset, d.data_dir)  # val/ where an image folder has no test/ (ImageNet)
            try:
                # A bank or test subset larger than the split means the whole split (a small dataset).
                bank = fixed_subset(load_dataset(d.dataset, "train", data_dir=d.data_dir, download=False,
                                                 image_size=d.image_size, seed=cfg.run.seed),
                                    cfg.run.knn_train_subset, cfg.run.seed)
                test = fixed_subset(load_dataset(d.dataset, split, data_dir=d.data_dir, download=False,
                                                 image_size=d.image_size, seed=cfg.run.seed),
                                    cfg.run.knn_test_subset, cfg.run.seed)
            except (DataError, ConfigError) as exc:
                reason = f"its data could not be loaded: {exc}"
            else:
                if bank.num_classes == 0 or test.num_classes == 0:
                    reason = (f"it needs labelled train and {split} splits, and {d.dataset} has no labels "
                              f"(image folders: one subfolder per class)")
                data = (bank, test)
        reason = broadcast_object(reason, self.dist)
        if reason is not None:
            if self.dist.is_main:
                log.warning("online kNN monitor requested (run.knn_every=%d) but switched off for this run: %s. "
                            "No knn_* metrics will be reported; evaluate the checkpoint with `gsg knn`, %s, or set "
                            "run.knn_every=0 to run without the monitor.", cfg.run.knn_every, reason, MONITOR_FIX)
            self.cfg.run.knn_every = 0
            return None
        return data

    def knn_monitor(self) -> dict[str, float]:
        """kNN accuracy of the backbone on the clean (un-augmented) train bank and test set (rank 0)."""
        cfg = self.cfg
        if self._knn_data is None:
            return {}
        bank, test = self._knn_data
        kw = {"batch_size": 512, "device": self.device, "size": self.image_size, "mean": self.train_ds.mean,
              "std": self.train_ds.std, "channels_last": self.channels_last, "amp_dtype": self.amp,
              "workers": cfg.data.workers}
        backbone = self.model.backbone
        fb, lb = embed(backbone, bank, **kw)
        ft, lt = embed(backbone, test, **kw)
        backbone.train()
        dev = self.device  # the search on the training device: a 10k x 50k search is seconds on a GPU
        result = knn_accuracy(fb.to(dev), lb.to(dev), ft.to(dev), lt.to(dev), bank.num_classes,
                              ks=(cfg.run.knn_k, 1), temperature=cfg.run.knn_t)
        if self.probe is not None and (self.probe_mode == "monitor" or bank.classes == self.train_ds.classes):
            if self.probe_mode == "monitor":  # one pass over the clean labelled train features
                self.probe.fit(fb, lb, epoch=self.state.epoch)
            result["probe_test_top1"] = self.probe.evaluate(ft, lt)
        return result

    def _knn_all_ranks(self) -> dict[str, float]:
        """Rank 0 runs the monitor; every rank gets its result (or its error, raised on every rank alike)."""
        result: dict[str, float] | str = {}
        if self.dist.is_main:
            try:
                result = self.knn_monitor()
            except Exception as exc:
                if not self.dist.enabled:
                    raise
                result = f"{type(exc).__name__}: {exc}"
                log.exception("online kNN monitor failed")
        result = broadcast_object(result, self.dist)
        if isinstance(result, str):
            raise DataError(f"the online kNN monitor failed on rank 0: {result}")
        return result

    # ---------------------------------------------------------------- driver
    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        self._rollbacks = 0
        with _Signals() as signals:
            while self.state.epoch < cfg.optim.epochs:
                try:
                    metrics = self.train_epoch(signals)
                except TrainingDiverged:
                    if cfg.run.on_nonfinite != "rollback" or not self.ckpt_path.is_file() or self._rollbacks >= 3:
                        raise
                    self._rollbacks += 1
                    self._rollback()
                    continue
                self.state.epoch += 1
                self.state.batch_in_epoch = 0
                last = self.state.epoch == cfg.optim.epochs
                if cfg.run.knn_every and (self.state.epoch % cfg.run.knn_every == 0 or last):
                    metrics.update(self._knn_all_ranks())
                if self.probe is not None:  # every rank: the counts are summed over processes
                    metrics.update(self.probe.epoch_metrics())
                self.state.history.append(metrics)
                self.logger.log("epoch", self.state.step, metrics)
                if self.dist.is_main:
                    log.info("epoch %d: %s", self.state.epoch, _fmt(metrics))
                stop = self._stop_requested(signals)
                if self.state.epoch % cfg.run.checkpoint_every == 0 or last or stop:
                    self.save()
                if stop and not last:
                    raise Interrupted(f"stopped by signal {signals.received or 15} after epoch {self.state.epoch}, "
                                      f"step {self.state.step}; checkpoint saved to {self.ckpt_path}; continue with "
                                      "--resume")
        self.logger.close()
        return {"checkpoint": str(self.ckpt_path), "epochs": self.state.epoch, "steps": self.state.step,
                "history": self.state.history, **(self.state.history[-1] if self.state.history else {})}

    def _rollback(self) -> None:
        scale = self.state.lr_scale * 0.5
        log.warning("non-finite loss: rolling back to %s with the lr scaled by %.3g", self.ckpt_path, scale)
        self._resume()
        self.state.lr_scale = scale


def _fmt(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())


def _progress(total: int, initial: int, desc: str, *, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)


def pretrain(cfg: Config, *, resume: bool | str = False) -> dict[str, Any]:
    """Run self-supervised pretraining as ``cfg`` describes; return the final metrics and checkpoint path.

    ``resume``: False starts afresh, True continues the checkpoint in ``run.out`` (an error if there is
    none), ``"auto"`` continues it when it exists.
    """
    trainer = Trainer(cfg, resume=resume)
    info = trainer.dist
    try:
        return trainer.fit()
    finally:
        # DDP, and with it the process group and gloo's threads, goes here, before the process group is destroyed
        # and while the interpreter is whole, even if some reference cycle holds the Trainer
        del trainer
        if info.enabled:  # only a process group has threads to outlive the run
            gc.collect()
        shutdown(info)


__all__ = ["Interrupted", "Trainer", "pretrain"]
