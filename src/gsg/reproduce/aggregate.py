"""Aggregation over seeds: mean ± std of every metric and curve per run definition, and each claim's verdict."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from gsg.config import crops_per_image
from gsg.errors import ConfigError
from gsg.reproduce.experiments import Claim, Experiment
from gsg.reproduce.stats import fmt_difference, paired_difference


def mean_std(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation (n − 1) of the finite values; std is None for fewer than two."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"mean": None, "std": None, "n": 0, "values": []}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else None,
            "n": len(vals), "values": vals}


def _metric_values(rec: dict[str, Any], knn_metric: str) -> dict[str, float | None]:
    f = rec.get("final", {})
    ev = rec.get("evals", {})
    knn = ev.get("knn") if "knn_k1" in ev.get("knn", {}) else f  # full protocol when measured, else the monitor
    return {"knn": knn.get(knn_metric), "knn_k1": knn.get("knn_k1"), "knn_k200": knn.get("knn_k200"),
            "linear": ev.get("linear", {}).get("top1"), "tsne_knn": ev.get("tsne", {}).get("knn_k200"),
            "z_std": f.get("z_std"), "z_rankme": f.get("z_rankme"), "loss": f.get("loss")}


def _curve(records: list[dict[str, Any]], key: str) -> dict[str, list[Any]]:
    """Per-epoch mean (and std over seeds) of ``key`` on the epochs every seed measured."""
    per_seed = [{h["epoch"]: h[key] for h in r.get("history", []) if h.get(key) is not None and "epoch" in h}
                for r in records]
    if not per_seed:
        return {"epoch": [], "mean": [], "std": []}
    epochs = sorted(set.intersection(*(set(s) for s in per_seed)))
    stats = [mean_std([s[e] for s in per_seed]) for e in epochs]
    return {"epoch": epochs, "mean": [s["mean"] for s in stats], "std": [s["std"] for s in stats]}


def aggregate(exp: Experiment, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per run definition: mean ± std over seeds of every metric, and the kNN / std(z) curves."""
    variants: dict[str, Any] = {}
    for run in exp.runs:
        recs = [r for r in records if r.get("name") == run.name]
        if not recs:
            continue
        per = [_metric_values(r, exp.knn_metric) for r in recs]
        best = [max((v for v in _curve([r], exp.knn_metric)["mean"] if v is not None), default=None)
                for r in recs]
        metrics = {m: mean_std([p[m] for p in per]) for m in per[0]}
        metrics["knn_best"] = mean_std(best)
        curves = {"knn": _curve(recs, exp.knn_metric), "z_std": _curve(recs, "z_std")}
        for key in exp.curves:  # the experiment's own per-epoch metrics: the curve and its final value
            curves[key] = _curve(recs, key)
            metrics.setdefault(key, mean_std([_last(r.get("history", []), key) for r in recs]))
        for m, vals in [*((m, [p[m] for p in per]) for m in per[0]), ("knn_best", best)]:
            metrics[m]["by_seed"] = {int(r["seed"]): v for r, v in zip(recs, vals, strict=True)}
        views = recs[0].get("config", {}).get("ssl", {}).get("views")
        variants[run.name] = {"label": run.label, "group": run.group, "seeds": [r["seed"] for r in recs],
                              "crops": crops_per_image(views),
                              "status": sorted({r.get("status", "ok") for r in recs}), "metrics": metrics,
                              "curve": curves,
                              "errors": sorted({e.get("error") for r in recs for e in r.get("evals", {}).values()
                                                if isinstance(e, dict) and e.get("error")})}
    return variants


def _last(history: Sequence[dict[str, Any]], key: str) -> float | None:
    return next((h[key] for h in reversed(history) if h.get(key) is not None), None)


def check_claims(exp: Experiment, variants: dict[str, Any]) -> list[dict[str, Any]]:
    """Each claim of the paper, with our numbers and whether it holds on them."""
    out = []
    for c in exp.claims:
        out.append({"claim": c.text, "kind": c.kind, **_verdict(c, variants, exp.chance)})
    return out


def _mean(variants: dict[str, Any], name: str, metric: str) -> float | None:
    return variants.get(name, {}).get("metrics", {}).get(metric, {}).get("mean")


def by_seed(variants: Mapping[str, Any], name: str, metric: str) -> dict[int, float | None]:
    by = variants.get(name, {}).get("metrics", {}).get(metric, {}).get("by_seed", {})
    return {int(k): v for k, v in by.items()}


ACCURACIES = ("knn", "knn_k1", "knn_k200", "knn_best", "linear", "tsne_knn")


def _verdict(c: Claim, variants: dict[str, Any], chance: float) -> dict[str, Any]:
    if c.kind == "range":
        vals = [_mean(variants, r, c.metric) for r in c.runs]
        if any(v is None for v in vals):
            return {"verdict": "n/a", "ours": "missing"}
        spread = max(vals) - min(vals)  # type: ignore[type-var,operator]
        return {"verdict": "holds" if spread <= c.tol else "does not hold",
                "ours": f"range {spread:.1f} points ({' / '.join(f'{v:.1f}' for v in vals)})"}  # type: ignore[str-format]
    if c.kind == "range_less":
        mine, other = ([_mean(variants, r, c.metric) for r in rs] for rs in (c.runs, c.other))
        if any(v is None for v in (*mine, *other)):
            return {"verdict": "n/a", "ours": "missing"}
        r_mine = max(mine) - min(mine)  # type: ignore[type-var,operator]
        r_other = max(other) - min(other)  # type: ignore[type-var,operator]
        gap = r_other - r_mine  # counts only beyond tol, the noise of a difference of two ranges
        verdict = ("holds" if gap > c.tol else "does not hold (reversed)" if -gap > c.tol else
                   "no difference that counts")
        return {"verdict": verdict, "ours": f"range {r_mine:.1f} vs {r_other:.1f} points"}
    if c.kind == "rises":
        curve = variants.get(c.a, {}).get("curve", {}).get(c.metric, {}).get("mean", [])
        vals = [v for v in curve if v is not None]
        if len(vals) < 2:
            return {"verdict": "n/a", "ours": "missing"}
        return {"verdict": "holds" if vals[-1] > vals[0] else "does not hold",
                "ours": f"{vals[0]:.3g} -> {vals[-1]:.3g} (first -> last epoch)"}
    a = _mean(variants, c.a, c.metric)
    if a is None:
        return {"verdict": "n/a", "ours": "missing"}
    if c.kind in ("below", "above"):
        ok = a < c.tol if c.kind == "below" else a > c.tol
        return {"verdict": "holds" if ok else "does not hold",
                "ours": f"{c.metric} = {a:.3g} ({'<' if c.kind == 'below' else '>'} {c.tol:g}?)"}
    if c.kind in ("collapsed", "not_collapsed"):
        collapsed = a <= chance + c.tol
        ok = collapsed if c.kind == "collapsed" else not collapsed
        return {"verdict": "holds" if ok else "does not hold", "ours": f"{a:.1f}% (chance {chance:g}%)"}
    b = _mean(variants, c.b, c.metric)
    if b is None:
        return {"verdict": "n/a", "ours": "missing"}
    if c.kind == "greater" and c.metric not in ACCURACIES:  # a history metric such as m_o, in [0, 1]
        return {"verdict": "holds" if a > b else "does not hold", "ours": f"{a:.3g} vs {b:.3g} ({a - b:+.3g})"}
    by_a, by_b = by_seed(variants, c.a, c.metric), by_seed(variants, c.b, c.metric)
    diff = paired_difference(by_a, by_b)
    ours = f"{a:.1f} vs {b:.1f}; paired difference {fmt_difference(diff)}"
    paired = diff["seeds"]
    n_seeds = [variants[r]["metrics"][c.metric]["n"] for r in (c.a, c.b)]  # finite values per side (mean_std)
    if paired and len(paired) < max(n_seeds):
        # the means over every seed and the difference over the shared ones would not add up: show both
        pa, pb = (statistics.fmean(float(by[s]) for s in paired) for by in (by_a, by_b))  # type: ignore[arg-type]
        ours = (f"{pa:.1f} vs {pb:.1f} on the paired seed(s) {', '.join(map(str, paired))} (every seed: {a:.1f} "
                f"vs {b:.1f}); paired difference {fmt_difference(diff)}")
    if c.kind == "greater":  # it holds only when the difference counts (gsg.reproduce.stats)
        verdict = {"+": "holds", "-": "does not hold (reversed)", "=": "no difference that counts",
                   "?": "n/a"}[diff["direction"]]
        return {"verdict": verdict, "ours": ours, "difference": diff}
    if c.kind == "close":  # the whole interval (one seed: the difference) within ±tol
        lo, hi = (diff["lo"], diff["hi"]) if diff["lo"] is not None else (diff["mean"], diff["mean"])
        if lo is None or hi is None:
            return {"verdict": "n/a", "ours": "missing"}
        return {"verdict": "holds" if -c.tol <= lo and hi <= c.tol else "does not hold", "ours": ours,
                "difference": diff}
    raise ConfigError(f"unknown claim kind {c.kind!r}")
