"""The pretraining loop: data → views → Siamese model → stop-gradient policy → SGD, with monitoring.

One function, :func:`pretrain`, takes a :class:`~gsg.config.Config` and returns the final metrics.
It works on one CPU, one GPU, or many processes under torchrun (DDP + SyncBatchNorm; GSG pairs
images within each process's batch). Checkpoints are written atomically every
``run.checkpoint_every`` epochs and on SIGTERM/SIGINT; ``resume=True`` continues exactly.

This module holds the :class:`Trainer`'s construction, its step and epoch, and the driver; the rest lives
beside it in ``gsg.train``: ``choices`` (device, recipe, compile), ``resume`` (checkpoints), ``monitor``
(kNN monitor, online probe), ``finite`` (divergence checks), ``epoch_metrics`` (per-epoch diagnostics)
and ``signals`` (SIGTERM/SIGINT).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gsg.analysis.collapse import normalized_std_tensor
from gsg.config import Config, crops_per_image, resolved_pairing
from gsg.data.datasets import ImageDataset, load_dataset
from gsg.data.loader import BatchLoader, CropSpec
from gsg.data.views import BatchAugment, make_recipe
from gsg.errors import ConfigError, DataError, TrainingDiverged
from gsg.models.timm_backbone import is_timm
from gsg.ssl.build import build_model
from gsg.ssl.methods import check_method, contrastive_loss, is_contrastive, target_momentum
from gsg.ssl.siamese import Siamese
from gsg.ssl.stopgrad import derangement, perfect_matching, policy_loss
from gsg.ssl.surgery import GradSurgery
from gsg.ssl.terms import Terms, policy_terms, target_loss
from gsg.ssl.toy_losses import toy_loss
from gsg.train.choices import compile_model, pick_recipe, resolve_device
from gsg.train.distributed import all_reduce_mean, init_from_env, shutdown, wrap_ddp
from gsg.train.epoch_metrics import ALIGNMENT_TOP as ALIGNMENT_TOP  # re-exported: public names of this module
from gsg.train.epoch_metrics import UNIFORMITY_MAX as UNIFORMITY_MAX
from gsg.train.epoch_metrics import epoch_metrics
from gsg.train.finite import check_finite, check_weights_finite
from gsg.train.logging import MetricsLogger, WandbSettings, fmt_metrics, progress_bar
from gsg.train.monitor import knn_all_ranks, knn_metrics, load_knn_data, make_probe
from gsg.train.optim import build_optimizer, effective_lr, lr_factor, set_lr
from gsg.train.precision import amp_dtype, configure_cuda_backends, emulated_bf16_warning, float32_heads
from gsg.train.probe import FeatureTap
from gsg.train.resume import CHECKPOINT_NAME, TrainState, build_checkpoint, restore, rollback, save_checkpoint
from gsg.train.signals import Interrupted, Signals, stop_requested

log = logging.getLogger("gsg.train")


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
        slow = emulated_bf16_warning(cfg.run.amp, self.device)
        if slow and self.dist.is_main:
            log.warning("%s", slow)  # a warning, not an error: the result is the same, only slower
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.aug_gen = torch.Generator(device=self.device)
        self.aug_gen.manual_seed(cfg.run.seed * 7919 + self.dist.rank)
        self.knn_data: tuple[ImageDataset, ImageDataset] | None = None
        self.probe, self.probe_mode = make_probe(self)
        self.tap = FeatureTap(self.model.backbone) if self.probe_mode == "views" else None
        self.state = TrainState()
        # resume=True requires a checkpoint; "auto" continues one if present (what a torchrun elastic restart,
        # which reruns the same command line, needs).
        if resume is True or (resume == "auto" and self.ckpt_path.is_file()):
            restore(self)

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
        if cfg.run.knn_every:  # (run.monitor_data_dir's data were loaded by make_probe)
            self.knn_data = load_knn_data(self)
        self.rollbacks = 0

    # ---------------------------------------------------------------- checkpoints, signals, monitor
    # Methods, not just the functions they call: they are the Trainer's API, and tests replace _stop_requested.
    def checkpoint_dict(self, rng_states: list[dict[str, Any]] | None = None,
                        partials: list[dict[str, Any] | None] | None = None) -> dict[str, Any]:
        """The checkpoint of this run as a dict (gsg.train.resume); ``rng_states``: every rank's augmentation RNG;
        ``partials``: every rank's running sums of the epoch in progress."""
        return build_checkpoint(self, rng_states, partials)

    def save(self) -> None:
        """Write the checkpoint to ``ckpt_path`` (collective: every rank calls it)."""
        save_checkpoint(self)

    def _stop_requested(self, signals: Signals) -> bool:
        """A signal seen by any rank stops every rank after the same step (else ranks disagree on collectives)."""
        return stop_requested(signals, self.dist, self.device)

    def knn_monitor(self) -> dict[str, float]:
        """kNN accuracy of the backbone on the clean (un-augmented) train bank and test set (rank 0)."""
        return knn_metrics(self)

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
        # detached references: the epoch's last batch is decomposed at its end (SimCLR / MoCo: the projections,
        # the keys and MoCo's negatives; under DDP this process's batch)
        if self.cfg.run.log_decomposition:
            online, extra = (out.z, res.negatives) if is_contrastive(cfg.method) else (p, decisions)
            stats["decomposition"] = ([x.detach() for x in online], [x.detach() for x in t], extra)  # type: ignore
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

    def train_epoch(self, signals: Signals) -> dict[str, float]:
        cfg = self.cfg
        epoch = self.state.epoch
        self.model.train()
        self.loader.set_epoch(epoch)
        start = self.state.batch_in_epoch
        # the sums of the batches before a mid-epoch stop, when the checkpoint has them
        acc = self.state.partial if start > 0 and self.state.partial is not None else {}
        self.state.partial = None
        loss_sum = acc["loss_sum"].to(self.device) if acc else torch.zeros((), device=self.device)
        zstd_sum = acc["zstd_sum"].to(self.device) if acc else torch.zeros((), device=self.device)
        case_sum = acc["case_sum"].to(self.device) if acc else torch.zeros(4, device=self.device)
        n = int(acc.get("n", 0))
        seconds_before = float(acc.get("elapsed_s", 0.0))
        last_z: Tensor | None = None
        last_stats: dict[str, Tensor] = {}
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        t0 = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        bar = progress_bar(self.steps_per_epoch, start, f"epoch {epoch + 1}/{cfg.optim.epochs}",
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
                check_finite(self, first_bad)
                self.logger.log("step", self.state.step, {"epoch": epoch, "loss": float(loss.detach()), "lr": lr,
                                                          "ema_momentum": momentum, "z_std": float(stats["z_std"])})
            if bar is not None:
                bar.update(1)
                if self.state.step % 10 == 0:
                    bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
            if stop and self.state.batch_in_epoch < self.steps_per_epoch:  # else: the epoch ends normally
                if bar is not None:
                    bar.close()
                check_finite(self, first_bad)
                check_weights_finite(self)
                self.state.partial = {"loss_sum": loss_sum.detach().cpu(), "zstd_sum": zstd_sum.detach().cpu(),
                                      "case_sum": case_sum.detach().cpu(), "n": n,
                                      "elapsed_s": seconds_before + time.perf_counter() - t0,
                                      "probe_counts": self.probe.running_counts() if self.probe else None}
                self.save()
                raise Interrupted(f"stopped by signal {signals.received or 15} at epoch {epoch + 1}, step "
                                  f"{self.state.step}; checkpoint saved to {self.ckpt_path}; continue with --resume")
        if bar is not None:
            bar.close()
        check_finite(self, first_bad)
        check_weights_finite(self)
        n = max(n, 1)
        loss_mean = float(all_reduce_mean(loss_sum / n, self.dist))
        result = {"epoch": epoch + 1, "loss": loss_mean, "z_std": float(zstd_sum) / n,
                  "epoch_time_s": seconds_before + time.perf_counter() - t0, "lr": lr}
        result.update(epoch_metrics(self, last_z, last_stats, case_sum, n))
        return result

    def _terms(self, policy: str, n: int, views: int, cases: Tensor | None, pairs: Tensor | None,
               partner: Tensor | None) -> Terms:
        return policy_terms(policy, n, views=views, cases=cases, pairs=pairs, partner=partner, device=self.device)

    # ---------------------------------------------------------------- driver
    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        self.rollbacks = 0
        with Signals() as signals:
            while self.state.epoch < cfg.optim.epochs:
                try:
                    metrics = self.train_epoch(signals)
                except TrainingDiverged:
                    if cfg.run.on_nonfinite != "rollback" or not self.ckpt_path.is_file() or self.rollbacks >= 3:
                        raise
                    self.rollbacks += 1
                    rollback(self)
                    continue
                self.state.epoch += 1
                self.state.batch_in_epoch = 0
                last = self.state.epoch == cfg.optim.epochs
                if cfg.run.knn_every and (self.state.epoch % cfg.run.knn_every == 0 or last):
                    metrics.update(knn_all_ranks(self))
                if self.probe is not None:  # every rank: the counts are summed over processes
                    metrics.update(self.probe.epoch_metrics())
                self.state.history.append(metrics)
                self.logger.log("epoch", self.state.step, metrics)
                if self.dist.is_main:
                    log.info("epoch %d: %s", self.state.epoch, fmt_metrics(metrics))
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
