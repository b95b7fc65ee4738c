"""How large a difference each claim of a reproduction page can detect at its planned seeds (a markdown table).

    python docs/experiments/detectable.py docs/results/crops_cpu2/results.json [--seeds N]

A claim's paired difference counts when its 95% t interval excludes 0 and its mean is at least
``gsg.reproduce.stats.MIN_EFFECT`` points. For every claim with two or more paired seeds so far, this takes the
standard deviation of its per-seed differences as the spread to expect, and gives the half-width of the interval
at N seeds (the page's planned seeds unless ``--seeds``): t(N−1)·sd/√N. A true difference must be larger than
that, and than MIN_EFFECT, to count at N seeds. A projection from few seeds: the sd of two differences is itself
uncertain, so read the column as an order of magnitude, not a bound.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from gsg.reproduce.stats import MIN_EFFECT, t_quantile


def detectable(claims: list[dict[str, Any]], seeds: int) -> list[list[str]]:
    """One row per claim with a spread: claim, paired seeds, sd, the interval's half-width at ``seeds``, and the
    smallest mean difference that would count there."""
    rows = []
    for c in claims:
        d = c.get("difference") or {}
        if int(d.get("n") or 0) < 2 or d.get("std") is None:
            continue
        half = t_quantile(seeds - 1) * float(d["std"]) / math.sqrt(seeds)
        rows.append([c["claim"], str(d["n"]), f"{d['std']:.2f}", f"±{half:.1f}", f"{max(half, MIN_EFFECT):.1f}"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path, help="a reproduction page's results.json")
    ap.add_argument("--seeds", type=int, default=None, help="seeds to project to (default: the page's planned)")
    args = ap.parse_args()
    res = json.loads(args.results.read_text())
    seeds = args.seeds or int(res.get("seeds") or 1)
    if seeds < 2:
        raise SystemExit(f"--seeds must be at least 2 for an interval, got {seeds}")
    head = ["claim", "paired seeds so far", "sd of the differences", f"95% half-width at {seeds} seeds",
            f"smallest difference that counts at {seeds} seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in detectable(res.get("claims", []), seeds)]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
