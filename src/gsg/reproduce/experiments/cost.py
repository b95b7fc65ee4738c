"""The cost model of a cpu-scale run: measured seconds per step and evaluation, and the estimate."""

from __future__ import annotations

import math

# Seconds of one cpu-scale run (ResNet-18 width 0.25, CIFAR stem, 28 px, projector 512, batch 256) on the
# project's 2-core machine, one thread per run with two runs at a time (the cpu default, --jobs 2), measured on the
# learning-curve runs (docs/results/cpu_scale.md): an epoch of the 60,000 Fashion-MNIST images on 2 crops takes
# ~245 s on one thread in fp32 (4.1 ms per image), 0.64× that under the scale's bf16 autocast (2.6 ms), twice that
# on 4 crops; one online kNN evaluation (embed 10,000 + 2,000
# images) ~10 s; the final kNN on the whole splits (embed 70,000 images) ~60 s; the feature-mode linear probe
# (embed 70,000 images, 90 epochs of a 128-d classifier on 60,000) ~120 s; start-up ~20 s. CPU_COST_SLOW is a
# loaded machine (+30%).
# "train_per_image_fp32": the 4.1 ms above, for the runs the cpu scale trains in fp32 (run.amp = off).
CPU_COST = {"train_per_image": 2.6e-3, "train_per_image_fp32": 4.1e-3, "knn": 10.0, "checkpoint": 0.3,
            "startup": 20.0, "final_knn": 60.0, "linear": 120.0, "tsne": 100.0}
CPU_COST_SLOW = {k: 1.3 * v for k, v in CPU_COST.items()}
# A method with a momentum target encoder (BYOL's EMA, MoCo's key encoder) also runs that encoder forward on every
# crop: its epochs took 1.29-1.67x (mean 1.45x) SimSiam's at the same crops in the committed cpu-scale runs
# (byol-s0 / simsiam-s0, byol_sym4-s0 / simsiam_sym4-s0, byol_gsg-s0 / simsiam_gsg-s0, byol_nopred-s0 /
# simsiam_nopred-s0 in docs/results/runs/cpu2, median epoch times; docs/experiments/noise_and_cost.py).
MOMENTUM_TARGET_METHODS = frozenset({"byol", "moco"})
MOMENTUM_TARGET_FACTOR = 1.4
CPU_FP32_TRAIN_PER_IMAGE = CPU_COST["train_per_image_fp32"]
CPU_RUN_BUDGET_S = 2 * 45 * 60.0  # one 2-crop run: 45 minutes on 2 cores = 90 single-core minutes at --jobs 2


def estimate_seconds(epochs: int, subset: int, batch_size: int, *, knn_every: int, checkpoint_every: int,
                     evals: tuple[str, ...], cost: dict[str, float] | None = None, crops: int = 2,
                     amp: str = "bf16", method: str = "simsiam") -> float:
    """Estimated single-thread seconds of one cpu-scale run, two runs at a time on the 2 cores (see
    :data:`CPU_COST`); ``crops``: 4 for ``ssl.views = fresh``, which augments and encodes twice as many crops;
    ``amp``: ``off`` trains at the fp32 cost per image; ``method``: BYOL and MoCo pay for their momentum target
    encoder (:data:`MOMENTUM_TARGET_FACTOR`)."""
    images = (subset // batch_size) * batch_size  # drop_last
    c = CPU_COST if cost is None else cost
    per_image = c["train_per_image_fp32" if amp == "off" else "train_per_image"]
    per_image *= MOMENTUM_TARGET_FACTOR if method in MOMENTUM_TARGET_METHODS else 1.0
    knn_runs = math.ceil(epochs / knn_every) if knn_every else 0
    total = c["startup"] + epochs * images * per_image * crops / 2 + knn_runs * c["knn"]
    total += math.ceil(epochs / checkpoint_every) * c["checkpoint"]
    total += c.get("final_knn", 0.0) * ("knn" in evals)
    total += c["linear"] * ("linear" in evals) + c["tsne"] * ("tsne" in evals)
    return total
