"""The online linear probe: top-1 accuracy during pretraining, without a separate evaluation run.

A linear classifier (``BatchNorm1d`` without affine parameters, then ``Linear``, zero-initialised) trained
with its own optimiser on *detached* backbone features, in one of two modes:

- ``views`` (the pretraining data has labels): the features of each step's two augmented views, taken by a
  forward hook on the backbone during the training forward (no extra encoder pass). ``probe_top1`` is its
  accuracy on those augmented views over the epoch, each batch scored before the probe's update on it (as
  solo-learn and lightly report it). At kNN-monitor epochs it is also scored on the monitor's clean test
  features: ``probe_test_top1``. Images labelled -1 (STL-10's unlabelled split) are left out.
- ``monitor`` (``run.monitor_data_dir``, a labelled image folder; for unlabelled pretraining data): the
  training views have no labels, so at each kNN-monitor epoch the probe takes one pass (batches of 256) over
  the clean features of the monitor's train split, which the kNN monitor computes anyway, continuing from
  its previous state. ``probe_top1`` is its accuracy during that pass, ``probe_test_top1`` on the test split.

The probe never touches the model's parameters, gradients or any random generator the pretraining draws
from: it starts from zeros, and its shuffling in ``monitor`` mode uses a generator of its own seeded by
``run.seed`` and the epoch. Runs with and without it train bit-identical weights. Its whole state (weights,
BatchNorm statistics, optimiser, the epoch's running counts) is saved in the checkpoint, so a resumed run
reports the same numbers as an uninterrupted one.

Optimiser (``run.probe_optimizer``): ``sgd`` with momentum 0.9 and lr ``run.probe_lr`` = 0.1 by default, or
``adam`` with lr 1e-3 by default; constant lr, no weight decay. The BatchNorm standardises the features, so
one lr suits ResNet and ViT features of any scale.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gsg.config import Config
from gsg.data.datasets import ImageDataset, load_dataset
from gsg.errors import CheckpointError, ConfigError, DataError

PROBE_OPTIMIZERS = ("sgd", "adam")
DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3}
SGD_MOMENTUM = 0.9
FIT_BATCH = 256  # monitor mode: batch size of the pass over the clean train features
_SEED_STRIDE = 1000003


class LinearProbe(nn.Module):
    """``Linear(BatchNorm1d(x, affine=False))`` with zero initial weights, and the epoch's running counts."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        if dim < 1 or num_classes < 2:
            raise ConfigError(f"a linear probe needs features and at least 2 classes, got dim {dim}, "
                              f"{num_classes} classes")
        self.norm = nn.BatchNorm1d(dim, affine=False)
        self.linear = nn.Linear(dim, num_classes)
        nn.init.zeros_(self.linear.weight)  # no random draw: the pretraining's random stream stays untouched
        nn.init.zeros_(self.linear.bias)
        self.register_buffer("correct", torch.zeros((), dtype=torch.int64))
        self.register_buffer("seen", torch.zeros((), dtype=torch.int64))
        self.register_buffer("loss_sum", torch.zeros((), dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.norm(x))


class OnlineProbe:
    """A :class:`LinearProbe` with its optimiser: ``train_batch`` during training, ``evaluate`` on test features.

    Example:
        >>> import torch
        >>> probe = OnlineProbe(4, 2, lr=0.5)
        >>> x = torch.cat([torch.randn(32, 4) + 3, torch.randn(32, 4) - 3]); y = torch.arange(64) // 32
        >>> for _ in range(20):
        ...     probe.train_batch(x, y)
        >>> probe.evaluate(x, y)
        100.0
    """

    def __init__(self, dim: int, num_classes: int, *, optimizer: str = "sgd", lr: float | None = None,
                 seed: int = 0, device: str | torch.device = "cpu", all_reduce: Any = None) -> None:
        if optimizer not in PROBE_OPTIMIZERS:
            raise ConfigError(f"unknown run.probe_optimizer {optimizer!r}; choose one of {', '.join(PROBE_OPTIMIZERS)}")
        self.dim, self.num_classes, self.seed = dim, num_classes, seed
        self.head = LinearProbe(dim, num_classes).to(device)
        self.lr = lr if lr is not None else DEFAULT_LR[optimizer]
        params = list(self.head.parameters())
        self.optimizer: torch.optim.Optimizer = (
            torch.optim.SGD(params, lr=self.lr, momentum=SGD_MOMENTUM) if optimizer == "sgd"
            else torch.optim.Adam(params, lr=self.lr))
        self._all_reduce = all_reduce  # sums a tensor over processes (DDP), so that every rank's probe agrees

    def train_batch(self, features: Tensor, labels: Tensor) -> None:
        """Score the batch (running counts), then one optimiser step on it. Labels < 0 are left out."""
        x = features.detach().float().flatten(1)
        labels = labels.to(x.device)
        keep = labels >= 0
        target = labels.clamp(min=0)
        head = self.head.train()
        with torch.enable_grad():
            logits = head(x)
            per = F.cross_entropy(logits, target, reduction="none") * keep
            n = keep.sum()
            loss = per.sum() / n.clamp(min=1)  # no host sync: the mask weighs, it does not index
        head.correct += ((logits.detach().argmax(1) == labels) & keep).sum()
        head.seen += n
        head.loss_sum += per.detach().sum().double()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self._all_reduce is not None:
            for p in head.parameters():
                if p.grad is not None:
                    p.grad.copy_(self._all_reduce(p.grad))
        self.optimizer.step()

    def fit(self, features: Tensor, labels: Tensor, *, epoch: int, batch_size: int = FIT_BATCH) -> None:
        """One shuffled pass over precomputed features (monitor mode); the order depends on (seed, epoch) only."""
        device = self.head.linear.weight.device
        g = torch.Generator().manual_seed(self.seed * _SEED_STRIDE + epoch)
        order = torch.randperm(features.shape[0], generator=g)
        for chunk in order.split(batch_size):
            if chunk.numel() < 2:  # BatchNorm needs 2 rows in training mode
                continue
            self.train_batch(features[chunk].to(device), labels[chunk].to(device))

    @torch.no_grad()
    def evaluate(self, features: Tensor, labels: Tensor, *, batch_size: int = 4096) -> float:
        """Top-1 (%) on features, with the BatchNorm's running statistics (eval mode); labels < 0 ignored."""
        device = self.head.linear.weight.device
        head = self.head.eval()
        correct, seen = torch.zeros((), dtype=torch.int64, device=device), 0
        for x, y in zip(features.split(batch_size), labels.split(batch_size), strict=True):
            y = y.to(device)
            pred = head(x.to(device).float().flatten(1)).argmax(1)
            correct += ((pred == y) & (y >= 0)).sum()
            seen += int((y >= 0).sum())
        self.head.train()
        return 100.0 * int(correct) / max(seen, 1)

    def running_counts(self) -> dict[str, Tensor]:
        """This process's counts since the last :meth:`epoch_metrics` (under DDP each rank has its own, while
        the weights agree): a mid-epoch checkpoint keeps every rank's."""
        h = self.head
        return {k: getattr(h, k).detach().cpu().clone() for k in ("correct", "seen", "loss_sum")}

    def load_running_counts(self, counts: dict[str, Tensor]) -> None:
        for k, v in counts.items():
            getattr(self.head, k).copy_(v)

    def epoch_metrics(self) -> dict[str, float]:
        """``probe_top1`` (%) and ``probe_loss`` since the last call, summed over processes; resets the counts."""
        h = self.head
        counts = torch.stack([h.correct.double(), h.seen.double(), h.loss_sum])
        if self._all_reduce is not None:
            counts = self._all_reduce(counts)
        correct, seen, loss = counts.tolist()
        h.correct.zero_()
        h.seen.zero_()
        h.loss_sum.zero_()
        if seen == 0:
            return {}
        return {"probe_top1": 100.0 * correct / seen, "probe_loss": loss / seen}

    def state_dict(self) -> dict[str, Any]:
        """A copy (not views of the live tensors, which keep training): weights, statistics, counts, optimiser."""
        return {"dim": self.dim, "num_classes": self.num_classes,
                "head": {k: v.detach().cpu().clone() for k, v in self.head.state_dict().items()},
                "optimizer": copy.deepcopy(self.optimizer.state_dict())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state.get("dim"), state.get("num_classes")) != (self.dim, self.num_classes):
            raise CheckpointError(f"the checkpoint's online probe has {state.get('dim')} features and "
                                  f"{state.get('num_classes')} classes, this run's {self.dim} and {self.num_classes}; "
                                  "resume with the same monitor data or set run.online_probe = false")
        self.head.load_state_dict(state["head"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])


class FeatureTap:
    """Keeps the (detached) outputs of a module's forward calls made inside :meth:`recording`.

    The training loop records the backbone's outputs of the training forward, so the probe sees the
    features the projector saw at no extra encoder cost; outside ``recording`` (e.g. the kNN monitor's
    embedding) nothing is kept.
    """

    def __init__(self, module: nn.Module) -> None:
        self.features: list[Tensor] = []
        self._active = False
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: Any, output: Tensor) -> None:
        if self._active:
            self.features.append(output.detach())

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[Tensor]]:
        self.features = []
        self._active = True
        try:
            yield self.features
        finally:
            self._active = False

    def remove(self) -> None:
        self._handle.remove()


MONITOR_FIX = ("set run.monitor_data_dir to a labelled image folder (train/ and test/ or val/, one subfolder per "
               "class) to monitor kNN accuracy and the linear probe on it")


def monitor_datasets(cfg: Config, *, image_size: int, channels: int) -> tuple[ImageDataset, ImageDataset]:
    """The labelled (bank, test) datasets of the kNN monitor and the probe's test score.

    ``run.monitor_data_dir``: its ``train/`` and ``test/`` (else ``val/``) class subfolders, decoded at the run's
    image size and channels. Otherwise the pretraining dataset's clean train and test splits. Raises
    DataError/ConfigError saying what is missing.
    """
    d, r = cfg.data, cfg.run
    if not r.monitor_data_dir:
        bank = load_dataset(d.dataset, "train", data_dir=d.data_dir, download=False, image_size=d.image_size,
                            subset=r.knn_train_subset, seed=r.seed)
        test = load_dataset(d.dataset, "test", data_dir=d.data_dir, download=False, image_size=d.image_size,
                            subset=r.knn_test_subset, seed=r.seed)
        if bank.num_classes == 0 or test.num_classes == 0:
            raise DataError(f"{d.dataset} has no labels")
        return bank, test
    root = Path(r.monitor_data_dir).expanduser()
    where = f"run.monitor_data_dir = {str(root)!r}"
    if not (root / "train").is_dir():
        raise DataError(f"{where} has no train/ subfolder; it needs train/ and test/ (or val/), each with one "
                        "subfolder of images per class")
    split = next((s for s in ("test", "val") if (root / s).is_dir()), None)
    if split is None:
        raise DataError(f"{where} has train/ but neither test/ nor val/; add one (one subfolder per class)")
    kw: dict[str, Any] = {"data_dir": root, "download": False, "image_size": image_size, "channels": channels,
                          "on_bad_file": d.on_bad_file, "seed": r.seed}
    bank = _at_most(load_dataset("imagefolder", "train", **kw), r.knn_train_subset, r.seed)
    test = _at_most(load_dataset("imagefolder", split, **kw), r.knn_test_subset, r.seed)
    if bank.num_classes < 2 or test.num_classes < 2:
        raise DataError(f"{where}: train/ and {split}/ must hold one subfolder of images per class (at least 2), "
                        f"found {bank.num_classes} and {test.num_classes}")
    if bank.classes != test.classes:
        raise DataError(f"{where}: train/ and {split}/ have different classes ({bank.classes[:5]} vs "
                        f"{test.classes[:5]}); use the same class subfolders in both")
    return bank, test


def _at_most(ds: ImageDataset, n: int | None, seed: int) -> ImageDataset:
    """A fixed random subset of ``n`` images (run.knn_*_subset), or all of a smaller folder."""
    if n is None or n >= len(ds):
        return ds
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    return ds.take(order[:n].sort().values)
