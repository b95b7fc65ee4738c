"""Paired comparisons of variants over seeds: the mean difference, its 95% interval, and whether it counts.

Two variants trained with the same seeds share the subset, the batch order of the first epoch and the
initialisation, so seed-to-seed noise partly cancels in their per-seed differences. For ``n`` paired seeds with
differences d_1..d_n (points of accuracy)::

    mean = Σ d_i / n,   s = sqrt(Σ (d_i − mean)² / (n − 1)),   95% interval = mean ± t_{0.975, n−1} · s / √n

A difference **counts** when its interval excludes 0 *and* its mean is at least :data:`MIN_EFFECT` points: an
interval from three seeds can exclude 0 by luck of a small ``s``, and a gain of a few tenths is below what
anyone would pay compute for. With one seed there is no interval; a difference then counts only above
:data:`SINGLE_SEED_EFFECT`, a bound on the seed-to-seed spread measured at the cpu scale (docs/results).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any

MIN_EFFECT = 1.0  # points: the smallest mean difference that counts, even with an interval excluding 0
SINGLE_SEED_EFFECT = 2.0  # points: with one seed a difference counts only beyond seed noise


def t_quantile(df: int, p: float = 0.975) -> float:
    """Student's t quantile (scipy, which scikit-learn already needs)."""
    from scipy.stats import t

    return float(t.ppf(p, df))


def paired_difference(a: Mapping[int, float | None], b: Mapping[int, float | None]) -> dict[str, Any]:
    """a − b over the seeds both have: ``{n, mean, std, lo, hi, counts, direction, seeds}``.

    ``direction``: ``+`` (a better, and it counts), ``-`` (b better, and it counts), ``=`` (no difference that
    counts). ``lo``/``hi`` are None for fewer than two seeds.

    >>> r = paired_difference({0: 80.0, 1: 81.0, 2: 82.0}, {0: 78.0, 1: 78.5, 2: 79.5})
    >>> round(r["mean"], 3), r["n"], r["direction"]
    (2.333, 3, '+')
    """
    seeds = sorted(s for s in a if s in b and a[s] is not None and b[s] is not None
                   and math.isfinite(float(a[s])) and math.isfinite(float(b[s])))  # type: ignore[arg-type]
    d = [float(a[s]) - float(b[s]) for s in seeds]  # type: ignore[arg-type]
    if not d:
        return {"n": 0, "mean": None, "std": None, "lo": None, "hi": None, "counts": False, "direction": "?",
                "seeds": []}
    mean = statistics.fmean(d)
    if len(d) == 1:
        counts = abs(mean) >= SINGLE_SEED_EFFECT
        return {"n": 1, "mean": mean, "std": None, "lo": None, "hi": None, "counts": counts,
                "direction": ("+" if mean > 0 else "-") if counts else "=", "seeds": seeds}
    std = statistics.stdev(d)
    half = t_quantile(len(d) - 1) * std / math.sqrt(len(d))
    lo, hi = mean - half, mean + half
    counts = (lo > 0 or hi < 0) and abs(mean) >= MIN_EFFECT
    return {"n": len(d), "mean": mean, "std": std, "lo": lo, "hi": hi, "counts": counts,
            "direction": ("+" if mean > 0 else "-") if counts else "=", "seeds": seeds}


def fmt_difference(r: Mapping[str, Any] | None, digits: int = 1, missing: str = "missing") -> str:
    """``+2.3 [+0.9, +3.8] (n=3)``, or ``+2.3 (1 seed)``, or ``missing`` (no paired seed yet).

    >>> fmt_difference({"n": 2, "mean": 0.5, "lo": -6.6, "hi": 7.6})
    '+0.5 [-6.6, +7.6] (n=2)'
    >>> fmt_difference({"n": 1, "mean": 0.0421, "lo": None, "hi": None}, digits=3)
    '+0.042 (1 seed)'
    >>> fmt_difference(None, missing="–")
    '–'
    """
    if not r or not r.get("n") or r.get("mean") is None:
        return missing
    f = f"+.{digits}f"
    if r.get("lo") is None or r.get("hi") is None:
        return f"{r['mean']:{f}} (1 seed)"
    return f"{r['mean']:{f}} [{r['lo']:{f}}, {r['hi']:{f}}] (n={r['n']})"


__all__ = ["MIN_EFFECT", "SINGLE_SEED_EFFECT", "fmt_difference", "paired_difference", "t_quantile"]
