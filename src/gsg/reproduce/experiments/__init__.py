"""The paper's experiments as data: for each experiment and scale, the runs (name + config overrides), the
evaluations, the claims to check and the numbers the papers report.

Nothing here trains; :mod:`gsg.reproduce.runner` executes these definitions and :mod:`gsg.reproduce.report`
renders them. Two scales:

``cpu``
    Fashion-MNIST (read offline from Debian's ``dataset-fashion-mnist``), the whole 60,000-image training set,
    a CIFAR-stem ResNet-18 of width 0.25 at 28 px, batch 256, lr 0.1 constant, 12 epochs under bf16 autocast
    (``CPU_BASE``; chosen by measurement in docs/results/cpu_scale.md). A 2-crop run is about 36 single-core
    minutes (:func:`estimate_seconds`); the grid runs over several sessions, resumably.
``full``
    The paper's settings for GPUs: the ``cifar10`` preset (CIFAR ResNet-18, 200 epochs, batch 512, lr 0.06
    constant; Fig. 5: 400 epochs) and, for Table 4 only, the ``imagenet`` preset (ResNet-50, 100 epochs).

The definitions live in one module per job: :mod:`~gsg.reproduce.experiments.base` (the types, the scales' shared
settings and the override helpers), :mod:`~gsg.reproduce.experiments.paper` (the papers' numbers),
:mod:`~gsg.reproduce.experiments.table1` (Table 1, Fig. 4, Fig. 5, the t-SNE),
:mod:`~gsg.reproduce.experiments.table4`, :mod:`~gsg.reproduce.experiments.directpred`,
:mod:`~gsg.reproduce.experiments.crops`, :mod:`~gsg.reproduce.experiments.decomposition`,
:mod:`~gsg.reproduce.experiments.cost` (the cost model) and :mod:`~gsg.reproduce.experiments.registry`
(:func:`get_experiment`). Everything is importable from here.
"""

from __future__ import annotations

from gsg.reproduce.experiments.base import (
    CIFAR_DATASET,
    CPU_BASE,
    CPU_DATASET,
    CPU_EPOCHS,
    CPU_LINEAR,
    CPU_NOTES,
    CPU_TRAIN_IMAGES,
    CPU_TSNE,
    CROPS_NOTE,
    EVALS,
    FULL_LINEAR,
    FULL_NOTES,
    FULL_TSNE,
    IMAGENET_DATASET,
    NAMES,
    SCALES,
    SG_LABEL,
    SG_SUFFIX,
    Claim,
    Experiment,
    LinearDef,
    Overrides,
    RunDef,
    TsneDef,
    run_overrides,
)
from gsg.reproduce.experiments.cost import CPU_COST, CPU_COST_SLOW, CPU_RUN_BUDGET_S, estimate_seconds
from gsg.reproduce.experiments.crops import CROP_RUNS, CROP_SEEDED, CROP_SHARED, CROP_VARIANTS
from gsg.reproduce.experiments.decomposition import DECOMPOSITION_CURVES, ZHANG_GROUPS
from gsg.reproduce.experiments.directpred import PREDICTOR_LABEL
from gsg.reproduce.experiments.paper import (
    PAPER_FIG4,
    PAPER_FIG5,
    PAPER_TABLE1,
    PAPER_TABLE4,
    PAPER_TABLE4_CONTRASTIVE,
    PAPER_TSNE,
    PAPER_ZHANG,
    TIAN_CIFAR10,
    TIAN_STL10,
)
from gsg.reproduce.experiments.registry import EXPERIMENTS, get_experiment
from gsg.reproduce.experiments.table4 import (
    CONTRASTIVE_NAMES,
    TABLE4_BATCHES,
    TABLE4_CONTRASTIVE_HEAD,
    TABLE4_MOCO_BATCH,
    TABLE4_PAPER_B,
)

__all__ = ["CIFAR_DATASET", "CONTRASTIVE_NAMES", "CPU_BASE", "CPU_COST", "CPU_COST_SLOW", "CPU_DATASET", "CPU_EPOCHS",
           "CPU_LINEAR", "CPU_NOTES", "CPU_RUN_BUDGET_S", "CPU_TRAIN_IMAGES", "CPU_TSNE", "CROPS_NOTE", "CROP_RUNS",
           "CROP_SEEDED", "CROP_SHARED", "CROP_VARIANTS", "DECOMPOSITION_CURVES", "EVALS", "EXPERIMENTS",
           "FULL_LINEAR", "FULL_NOTES", "FULL_TSNE", "IMAGENET_DATASET", "NAMES", "PAPER_FIG4", "PAPER_FIG5",
           "PAPER_TABLE1", "PAPER_TABLE4", "PAPER_TABLE4_CONTRASTIVE", "PAPER_TSNE", "PAPER_ZHANG", "PREDICTOR_LABEL",
           "SCALES", "SG_LABEL", "SG_SUFFIX", "TABLE4_BATCHES", "TABLE4_CONTRASTIVE_HEAD", "TABLE4_MOCO_BATCH",
           "TABLE4_PAPER_B", "TIAN_CIFAR10", "TIAN_STL10", "ZHANG_GROUPS", "Claim", "Experiment", "LinearDef",
           "Overrides", "RunDef", "TsneDef", "estimate_seconds", "get_experiment", "run_overrides"]
