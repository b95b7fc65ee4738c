"""The two measured constants of session 13, from the committed cpu2 runs (docs/results/runs/cpu2):

1. the momentum-target price (MOMENTUM_TARGET_FACTOR): median epoch time of each BYOL run over its SimSiam twin;
2. Table 4's range margin (TABLE4_RANGE_NOISE): the 95% spread of the difference of two ranges of three one-seed
   linear-probe numbers, simulated at the linear probe's seed sd pooled over the four-crop control's SimSiam variants.

Usage: python docs/experiments/noise_and_cost.py [--runs docs/results/runs/cpu2]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import numpy as np

PAIRS = [("byol-s0", "simsiam-s0"), ("byol_sym4-s0", "simsiam_sym4-s0"), ("byol_gsg-s0", "simsiam_gsg-s0"),
         ("byol_nopred-s0", "simsiam_nopred-s0")]
SEEDED = ["simsiam", "simsiam_sym4", "simsiam_gsg", "simsiam_gsg2", "simsiam_sym2x2"]


def median_epoch_s(run: Path) -> float:
    rows = (json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines())
    return statistics.median(r["epoch_time_s"] for r in rows if r.get("kind") == "epoch")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=Path("docs/results/runs/cpu2"))
    args = ap.parse_args()
    ratios = [median_epoch_s(args.runs / a) / median_epoch_s(args.runs / b) for a, b in PAIRS]
    for (a, b), r in zip(PAIRS, ratios, strict=True):
        print(f"{a} / {b}: {r:.2f}x")
    print(f"mean momentum-target ratio: {statistics.fmean(ratios):.2f}x")
    var = [statistics.variance([json.loads((args.runs / f"{v}-s{s}" / "evals.json").read_text())["evals"]["linear"]
                                ["top1"] for s in range(3)]) for v in SEEDED]
    sd = math.sqrt(statistics.fmean(var))  # equal degrees of freedom (2 each)
    draws = np.random.default_rng(0).normal(0.0, sd, size=(200_000, 2, 3))
    spread = np.ptp(draws, axis=2)
    lo, hi = np.percentile(spread[:, 0] - spread[:, 1], [2.5, 97.5])
    print(f"pooled linear seed sd: {sd:.2f}; difference of two ranges of 3, 95%: [{lo:+.2f}, {hi:+.2f}]")


if __name__ == "__main__":
    main()
