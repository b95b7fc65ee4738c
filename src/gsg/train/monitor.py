"""The online monitors of a pretraining run: the kNN monitor on clean labelled data (rank 0 embeds, every rank
gets the result) and the online linear probe, which trains on the same monitor data or on the views.

The monitor data live on the trainer (``trainer.knn_data``): ``make_probe`` loads run.monitor_data_dir's,
``load_knn_data`` the dataset's own train bank and held-out split.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from gsg.analysis.knn import knn_accuracy
from gsg.data.datasets import ImageDataset, fixed_subset, held_out_split, load_dataset
from gsg.errors import ConfigError, DataError
from gsg.models.embed import embed
from gsg.train.distributed import all_reduce_mean, broadcast_object
from gsg.train.probe import MONITOR_FIX, OnlineProbe, monitor_datasets

if TYPE_CHECKING:
    from gsg.train.loop import Trainer

log = logging.getLogger("gsg.train")  # the loop's logger name, which the log lines and tests filter on


def make_probe(trainer: Trainer) -> tuple[OnlineProbe | None, str | None]:
    """The online linear probe (gsg.train.probe) and its mode: "views", "monitor", or off (None)."""
    run = trainer.cfg.run
    if run.monitor_data_dir:  # asked for: unusable monitor data is an error, not a warning
        trainer.knn_data = monitor_datasets(trainer.cfg, image_size=trainer.image_size,
                                             channels=trainer.train_ds.channels)
        mode, classes = "monitor", trainer.knn_data[0].num_classes
        if not run.knn_every:
            if run.online_probe:
                raise ConfigError("the online probe on run.monitor_data_dir trains at kNN-monitor epochs, but "
                                  "run.knn_every = 0; set run.knn_every >= 1 or run.online_probe = false")
            log.warning("run.knn_every = 0: no kNN monitor and no online probe on run.monitor_data_dir")
            return None, None
    elif trainer.train_ds.num_classes >= 2:
        mode, classes = "views", trainer.train_ds.num_classes
    else:
        why = f"{trainer.cfg.data.dataset} at {trainer.cfg.data.data_dir or 'its default location'} has no labels"
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
    info = trainer.dist
    reduce = ((lambda t: all_reduce_mean(t, info) * info.world_size)
              if info.enabled and mode == "views" else None)
    probe = OnlineProbe(trainer.model.backbone.out_dim, classes, optimizer=run.probe_optimizer, lr=run.probe_lr,
                        seed=run.seed, device=trainer.device, all_reduce=reduce)
    return probe, mode


def load_knn_data(trainer: Trainer) -> tuple[ImageDataset, ImageDataset] | None:
    """The monitor's clean train bank and held-out split, loaded by rank 0 (the only rank that embeds them).

    The decision to run the monitor is rank 0's and every rank takes it (a broadcast): a monitor switched
    off on rank 0 alone would leave the other ranks waiting at its barrier (docs/gpu.md, F1). When the data
    cannot serve, the run goes on without the monitor and says so, with what is missing.
    """
    cfg, d = trainer.cfg, trainer.cfg.data
    reason: str | None = None
    data: tuple[ImageDataset, ImageDataset] | None = None
    if cfg.run.monitor_data_dir:  # a separate labelled folder (gsg.train.probe.monitor_datasets)
        if trainer.knn_data is None:
            trainer.knn_data = monitor_datasets(cfg, image_size=trainer.image_size,
                                                 channels=trainer.train_ds.channels)
        return trainer.knn_data
    if trainer.dist.is_main:
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
    reason = broadcast_object(reason, trainer.dist)
    if reason is not None:
        if trainer.dist.is_main:
            log.warning("online kNN monitor requested (run.knn_every=%d) but switched off for this run: %s. "
                        "No knn_* metrics will be reported; evaluate the checkpoint with `gsg knn`, %s, or set "
                        "run.knn_every=0 to run without the monitor.", cfg.run.knn_every, reason, MONITOR_FIX)
        trainer.cfg.run.knn_every = 0
        return None
    return data


def knn_metrics(trainer: Trainer) -> dict[str, float]:
    """kNN accuracy of the backbone on the clean (un-augmented) train bank and test set (rank 0)."""
    cfg = trainer.cfg
    if trainer.knn_data is None:
        return {}
    bank, test = trainer.knn_data
    kw = {"batch_size": 512, "device": trainer.device, "size": trainer.image_size, "mean": trainer.train_ds.mean,
          "std": trainer.train_ds.std, "channels_last": trainer.channels_last, "amp_dtype": trainer.amp,
          "workers": cfg.data.workers}
    backbone = trainer.model.backbone
    fb, lb = embed(backbone, bank, **kw)
    ft, lt = embed(backbone, test, **kw)
    backbone.train()
    dev = trainer.device  # the search on the training device: a 10k x 50k search is seconds on a GPU
    result = knn_accuracy(fb.to(dev), lb.to(dev), ft.to(dev), lt.to(dev), bank.num_classes,
                          ks=(cfg.run.knn_k, 1), temperature=cfg.run.knn_t)
    if trainer.probe is not None and (trainer.probe_mode == "monitor" or bank.classes == trainer.train_ds.classes):
        if trainer.probe_mode == "monitor":  # one pass over the clean labelled train features
            trainer.probe.fit(fb, lb, epoch=trainer.state.epoch)
        result["probe_test_top1"] = trainer.probe.evaluate(ft, lt)
    return result


def knn_all_ranks(trainer: Trainer) -> dict[str, float]:
    """Rank 0 runs the monitor; every rank gets its result (or its error, raised on every rank alike)."""
    result: dict[str, float] | str = {}
    if trainer.dist.is_main:
        try:
            result = trainer.knn_monitor()  # the method, which a test or subclass may replace
        except Exception as exc:
            if not trainer.dist.enabled:
                raise
            result = f"{type(exc).__name__}: {exc}"
            log.exception("online kNN monitor failed")
    result = broadcast_object(result, trainer.dist)
    if isinstance(result, str):
        raise DataError(f"the online kNN monitor failed on rank 0: {result}")
    return result
