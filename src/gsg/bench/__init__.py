"""Benchmarks that compare side by side in one run and print ratios (``gsg bench NAME``).

Each module's ``run(**options) -> dict`` returns its numbers, the options it ran with and a description of the
machine (CPU model, cores, torch version, device name, load); ``format_report(name, result)`` renders that dict
as Markdown tables. ``quick=True`` shrinks every benchmark to seconds for the test suite. Speed is measured
here and written to docs/performance.md; the tests check correctness only, never timings.

- ``steps``: step cost of symmetric vs guided (reuse / fresh views), SimSiam and BYOL;
- ``datapath``: batched augmentation vs torchvision's per-image PIL pipeline; augmentation's share of a step;
- ``knn``: ``gsg.analysis.knn`` vs scikit-learn's KNeighborsClassifier (brute, cosine), time and predictions;
- ``accuracy``: reuse vs fresh views on Fashion-MNIST, kNN at equal epochs and at equal wall-clock;
- ``epoch``: seconds per CIFAR-10 epoch, GPU-resident path vs per-image DataLoader (GPU; tested on CPU);
- ``cpuscale``: the CPU-scale model's step under bf16 / torch.compile, one 2-thread vs two 1-thread processes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gsg.bench import accuracy, cpuscale, datapath, epoch, knn, steps
from gsg.bench.report import format_report

BENCHES: dict[str, Callable[..., dict[str, Any]]] = {
    "steps": steps.run,
    "datapath": datapath.run,
    "knn": knn.run,
    "accuracy": accuracy.run,
    "epoch": epoch.run,
    "cpuscale": cpuscale.run,
}

__all__ = ["BENCHES", "format_report"]
