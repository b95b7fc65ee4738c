"""Choices the Trainer makes from the config and the machine before it builds anything: the device, the
augmentation recipe, and whether to ``torch.compile`` the model."""

from __future__ import annotations

import logging

import torch

from gsg.config import Config
from gsg.data.datasets import ImageDataset
from gsg.errors import ConfigError
from gsg.train.distributed import DistInfo

log = logging.getLogger("gsg.train")  # the loop's logger name, which the log lines and tests filter on


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
