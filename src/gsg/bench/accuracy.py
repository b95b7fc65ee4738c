"""Accuracy at equal cost: GSG with reused partner views ("reuse") against four fresh crops ("fresh").

Both view modes pretrain the same model (SimSiam + guided stop-gradient by default) with ``gsg.train.loop.pretrain``
on the same data, seeds and schedule; the online kNN monitor scores the backbone after every epoch, and the
history's ``epoch_time_s`` (training only, evaluation excluded) gives each run's wall-clock curve.

Two comparisons:

- equal epochs: both modes after ``epochs`` epochs;
- equal wall-clock: "fresh" pays about twice the encoder work per step, so in the time "fresh" needs for
  ``epochs`` epochs "reuse" runs about twice as many. A third run per seed, "reuse" with
  ``equal_time_epochs`` epochs (default 2 × epochs, a complete schedule of its own), is compared with
  "fresh" at ``epochs``, with the measured times of both reported. As a within-run cross-check, the dearer
  mode's kNN curve is also interpolated at the time the cheaper mode finished (the cosine schedule is not
  yet annealed there, which favours the cheaper mode's complete run; read it as a bound).
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gsg.bench.report import finish, machine_info
from gsg.config import load_config
from gsg.train.loop import pretrain

log = logging.getLogger("gsg.bench")

METRICS = ("knn_k200", "knn_k1")


def interpolate_at(times: Sequence[float], values: Sequence[float], t: float) -> float | None:
    """Value of a piecewise-linear curve (cumulative time, metric) at time t; None before its first point.

    After the last point the curve is not extrapolated: the last value is returned (the run had stopped).
    """
    if not times or t < times[0]:
        return None
    return float(np.interp(t, np.asarray(times, dtype=float), np.asarray(values, dtype=float)))


def run_curve(history: Sequence[dict[str, Any]], metric: str,
              epoch_time: float | None = None) -> tuple[list[float], list[float]]:
    """(cumulative training seconds at the end of each epoch, metric) for epochs where the metric exists.

    ``epoch_time``: use this constant per epoch instead of each epoch's measured ``epoch_time_s``.
    """
    elapsed, times, values = 0.0, [], []
    for h in history:
        elapsed += float(h["epoch_time_s"]) if epoch_time is None else epoch_time
        if metric in h:
            times.append(elapsed)
            values.append(float(h[metric]))
    return times, values


def _mean_std(xs: Sequence[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarize(runs: Sequence[dict[str, Any]], metric: str = "knn_k200", *, time_axis: str = "median",
              fresh_cost: float | None = None) -> dict[str, Any]:
    """Equal-epoch and equal-time comparisons from run records {seed, mode, epochs, history}.

    Modes: "reuse", "fresh" (same epochs) and optionally "reuse_long" (reuse with more epochs, about the
    time of "fresh"). Returns per-mode means/stds over seeds and per-seed paired differences.

    ``time_axis``: "median" puts epoch e of a mode at e x (that mode's median epoch time over all its seeds
    and epochs), so that a burst of background load during one epoch of one run does not move the
    equal-time comparison; "measured" uses each epoch's own ``epoch_time_s``. ``fresh_cost``: instead of
    wall-clock, measure time in reuse-epochs, with a fresh epoch costing ``fresh_cost`` of them (e.g. the
    paired step ratio of ``gsg bench steps``): on a shared machine the runs of one mode may have met more
    background load than those of the other, which the interleaved step ratio is immune to.
    """
    by: dict[str, dict[int, dict[str, Any]]] = {}
    for r in runs:
        by.setdefault(r["mode"], {})[r["seed"]] = r
    per_epoch: dict[str, float | None] = {
        mode: (statistics.median(h["epoch_time_s"] for rec in recs.values() for h in rec["history"])
               if time_axis == "median" else None) for mode, recs in by.items()}
    if fresh_cost is not None:
        per_epoch = {mode: (fresh_cost if mode == "fresh" else 1.0) for mode in by}
    seeds = sorted(set(by.get("reuse", {})) & set(by.get("fresh", {})))
    out: dict[str, Any] = {"metric": metric, "seeds": seeds, "modes": {}}
    for mode, recs in by.items():
        finals = [run_curve(recs[s]["history"], metric)[1][-1] for s in sorted(recs)
                  if run_curve(recs[s]["history"], metric)[1]]
        totals = [sum(h["epoch_time_s"] for h in recs[s]["history"]) for s in sorted(recs)]
        epoch_t = [statistics.median(h["epoch_time_s"] for h in recs[s]["history"]) for s in sorted(recs)]
        m, sd = _mean_std(finals)
        out["modes"][mode] = {"epochs": recs[min(recs)]["epochs"], "final_mean": m, "final_std": sd,
                              "finals": finals, "train_time_s_mean": statistics.fmean(totals),
                              "epoch_time_s_median": statistics.median(epoch_t)}
    if not seeds:
        return out
    eq_epoch = []
    eq_time_interp = []
    for s in seeds:
        tr, vr = run_curve(by["reuse"][s]["history"], metric, per_epoch["reuse"])
        tf, vf = run_curve(by["fresh"][s]["history"], metric, per_epoch["fresh"])
        eq_epoch.append(vr[-1] - vf[-1])
        # The cheaper mode's end time, read off the dearer mode's curve.
        if tr[-1] <= tf[-1]:
            other = interpolate_at(tf, vf, tr[-1])
            eq_time_interp.append(None if other is None else vr[-1] - other)
        else:
            other = interpolate_at(tr, vr, tf[-1])
            eq_time_interp.append(None if other is None else other - vf[-1])
    out["equal_epochs_diff_reuse_minus_fresh"] = _mean_std(eq_epoch)
    out["equal_epochs_diffs"] = eq_epoch
    out["equal_time_interp_diff_reuse_minus_fresh"] = _mean_std(eq_time_interp)
    out["equal_time_interp_diffs"] = eq_time_interp
    out["time_axis"] = time_axis if fresh_cost is None else f"reuse-epochs (fresh epoch = {fresh_cost})"
    out["fresh_over_reuse_epoch_time"] = (out["modes"]["fresh"]["epoch_time_s_median"]
                                          / out["modes"]["reuse"]["epoch_time_s_median"])
    if "reuse_long" in by:
        paired = [s for s in seeds if s in by["reuse_long"]]
        diffs = [run_curve(by["reuse_long"][s]["history"], metric)[1][-1]
                 - run_curve(by["fresh"][s]["history"], metric)[1][-1] for s in paired]
        out["equal_time_long_diff_reuse_long_minus_fresh"] = _mean_std(diffs)
        out["equal_time_long_diffs"] = diffs
        # Does training longer help at all at this scale? If not, an equal-time comparison rewards stopping early.
        gain = [run_curve(by["reuse_long"][s]["history"], metric)[1][-1]
                - run_curve(by["reuse"][s]["history"], metric)[1][-1] for s in paired if s in by["reuse"]]
        out["longer_training_gain_reuse_long_minus_reuse"] = _mean_std(gain)
        out["longer_training_gains"] = gain
        out["reuse_long_over_fresh_train_time"] = (out["modes"]["reuse_long"]["train_time_s_mean"]
                                                   / out["modes"]["fresh"]["train_time_s_mean"])
    return out


def _significant(mean_std: tuple[float, float], n: int) -> bool:
    """|mean| beyond 2 standard errors of the paired differences (never with one seed: no error estimate)."""
    mean, std = mean_std
    return n > 1 and mean == mean and abs(mean) > 2 * std / n**0.5


def verdict(summary: dict[str, Any]) -> str:
    """Which view mode to make the default, cost-aware.

    "fresh" costs about twice per step, so it must *earn* its cost: it wins only if it is better beyond seed
    noise (2 standard errors of the paired differences) at equal epochs AND not worse at equal wall-clock.
    Otherwise "reuse" gives the same accuracy (or better) for about half the compute.
    """
    if "equal_epochs_diff_reuse_minus_fresh" not in summary:
        return "undecided (no paired runs)"
    n = len(summary["seeds"])
    eq_ep = summary["equal_epochs_diff_reuse_minus_fresh"]
    cost = summary.get("fresh_over_reuse_epoch_time", float("nan"))
    if eq_ep[0] > 0 and _significant(eq_ep, n):
        return f"reuse (better at equal epochs by {eq_ep[0]:.2f} points over {n} seeds, and {cost:.2f}x cheaper)"
    if eq_ep[0] < 0 and _significant(eq_ep, n):
        key = ("equal_time_long_diff_reuse_long_minus_fresh" if "equal_time_long_diff_reuse_long_minus_fresh"
               in summary else "equal_time_interp_diff_reuse_minus_fresh")
        eq_t = summary[key]
        if eq_t[0] < 0 and _significant(eq_t, n):
            return (f"fresh (better by {-eq_ep[0]:.2f} points at equal epochs and by {-eq_t[0]:.2f} at equal "
                    f"wall-clock over {n} seeds)")
        return (f"reuse (fresh is better by {-eq_ep[0]:.2f} points at equal epochs but not at equal wall-clock, "
                f"where reuse − fresh = {eq_t[0]:+.2f}; fresh costs {cost:.2f}x per epoch)")
    return (f"reuse (equal epochs: reuse − fresh = {eq_ep[0]:+.2f} ± {eq_ep[1]:.2f} points over {n} seeds, within "
            f"seed noise; fresh costs {cost:.2f}x per epoch)")


def _config(mode: str, seed: int, epochs: int, out: Path, opts: dict[str, Any]) -> Any:
    data: dict[str, Any] = {"dataset": opts["dataset"], "subset": opts["subset"]}
    if opts["data_dir"]:
        data["data_dir"] = opts["data_dir"]
    if opts["image_size"]:
        data["image_size"] = opts["image_size"]
    optim: dict[str, Any] = {"epochs": epochs, "batch_size": opts["batch_size"], "schedule": opts["schedule"]}
    if opts["lr"] is not None:
        optim["lr"] = opts["lr"]
    return load_config(preset="quickstart", overrides={
        "data": data,
        "model": {"width": opts["width"], "proj_dim": opts["proj_dim"], "pred_hidden": opts["pred_hidden"]},
        "ssl": {"method": opts["method"], "stop_gradient": opts["stop_gradient"],
                "views": "fresh" if mode == "fresh" else "reuse"},
        "optim": optim,
        "run": {"seed": seed, "out": str(out / f"{mode}_seed{seed}"), "device": opts["device"], "knn_every": 1,
                "knn_train_subset": opts["knn_train_subset"], "knn_test_subset": opts["knn_test_subset"],
                "progress": False, "tensorboard": False, "checkpoint_every": epochs},
    })


def run(*, dataset: str = "fashion-mnist", data_dir: str | None = None, seeds: int = 3, subset: int = 4000,
        epochs: int = 8, equal_time_epochs: int | None = None, width: float = 0.25, batch_size: int = 128,
        lr: float | None = None, schedule: str = "cosine", proj_dim: int = 512, pred_hidden: int = 128,
        image_size: int | None = None, method: str = "simsiam", stop_gradient: str = "guided",
        knn_train_subset: int | None = 5000, knn_test_subset: int | None = 2000, device: str = "auto",
        out_dir: str | None = None, warmup: bool = True, fresh_cost: float | None = None,
        quick: bool = False) -> dict[str, Any]:
    """Pretrain reuse / fresh (and reuse with more epochs) for ``seeds`` seeds; compare kNN at equal cost.

    ``equal_time_epochs``: epochs of the extra "reuse_long" run (None: 2 × epochs; 0: skip it).
    ``warmup``: first run two untimed steps of each mode, so that one-time costs (oneDNN kernel selection,
    lazy imports, allocator growth) do not land in the first timed epoch of whichever mode runs first.
    ``quick``: a seconds-long smoke run on the synthetic dataset (16 px, width 1/8, 1 epoch and 2 for
    reuse_long, 1 seed).
    ``fresh_cost``: compare at equal cost in reuse-epochs with this cost of a fresh epoch (e.g. the paired
    step ratio of ``gsg bench steps``) instead of the measured wall-clock; see ``summarize``.
    Partial results are written to ``out_dir/accuracy_partial.json`` after every run, so a long run
    that is stopped keeps what it measured.
    """
    if quick:
        dataset, subset, epochs, seeds, width, batch_size = "synthetic", 64, 1, 1, 0.125, 16
        proj_dim, pred_hidden, image_size, knn_train_subset, knn_test_subset = 32, 16, 16, None, None
        equal_time_epochs = 2 if equal_time_epochs is None else equal_time_epochs
        lr, warmup = (0.05 if lr is None else lr), False
    if equal_time_epochs is None:
        equal_time_epochs = 2 * epochs
    opts = {"dataset": dataset, "data_dir": data_dir, "seeds": seeds, "subset": subset, "epochs": epochs,
            "equal_time_epochs": equal_time_epochs, "width": width, "batch_size": batch_size, "lr": lr,
            "schedule": schedule, "proj_dim": proj_dim, "pred_hidden": pred_hidden, "image_size": image_size,
            "method": method, "stop_gradient": stop_gradient, "knn_train_subset": knn_train_subset,
            "knn_test_subset": knn_test_subset, "device": device, "warmup": warmup, "fresh_cost": fresh_cost,
            "quick": quick}
    result: dict[str, Any] = {"machine": machine_info(device), "options": dict(opts)}
    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="gsg-bench-accuracy-")
        out = Path(tmp.name)
    else:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    try:
        if warmup:
            for mode in ("reuse", "fresh"):
                cfg = _config(mode, 0, 1, out / "warmup", opts)
                cfg.run.limit_batches, cfg.run.knn_every = 2, 0
                pretrain(cfg)
        for seed in range(seeds):
            plan = [("reuse", epochs), ("fresh", epochs)]
            if equal_time_epochs:
                plan.append(("reuse_long", equal_time_epochs))
            if seed % 2:  # alternate the order so that a drift in background load does not favour one mode
                plan.reverse()
            for mode, n_epochs in plan:
                log.info("accuracy bench: seed %d, %s, %d epochs", seed, mode, n_epochs)
                torch.manual_seed(seed)
                res = pretrain(_config(mode, seed, n_epochs, out, opts))
                runs.append({"seed": seed, "mode": mode, "epochs": n_epochs, "history": res["history"]})
                if out_dir is not None:
                    (out / "accuracy_partial.json").write_text(json.dumps({**result, "runs": runs}, indent=1))
    finally:
        if tmp is not None:
            tmp.cleanup()
    result["runs"] = runs
    return finish(_tabulate(result, fresh_cost))


def _tabulate(result: dict[str, Any], fresh_cost: float | None = None) -> dict[str, Any]:
    runs = result["runs"]
    summaries = {m: summarize(runs, m, fresh_cost=fresh_cost) for m in METRICS
                 if any(m in h for r in runs for h in r["history"])}
    if fresh_cost is not None:
        result["fresh_cost_used"] = fresh_cost
    result["summary"] = summaries
    tables: dict[str, list[dict[str, Any]]] = {}
    for metric, s in summaries.items():
        rows = []
        for mode, d in s["modes"].items():
            rows.append({"mode": mode, "epochs": d["epochs"], f"{metric} mean": d["final_mean"],
                         "std": d["final_std"], "train s (mean)": d["train_time_s_mean"],
                         "s/epoch (median)": d["epoch_time_s_median"],
                         "per seed": d["finals"]})
        tables[f"{metric}: final accuracy (%) per mode"] = rows
        cmp_rows = []
        if "equal_epochs_diff_reuse_minus_fresh" in s:
            m, sd = s["equal_epochs_diff_reuse_minus_fresh"]
            cmp_rows.append({"comparison": "equal epochs: reuse − fresh", "mean": m, "std": sd,
                             "per seed": s["equal_epochs_diffs"]})
            m, sd = s["equal_time_interp_diff_reuse_minus_fresh"]
            cmp_rows.append({"comparison": "equal time (dearer mode's curve at the cheaper one's end): reuse − fresh",
                             "mean": m,
                             "std": sd, "per seed": s["equal_time_interp_diffs"]})
        if "equal_time_long_diff_reuse_long_minus_fresh" in s:
            m, sd = s["equal_time_long_diff_reuse_long_minus_fresh"]
            cmp_rows.append({"comparison": "equal time (reuse_long vs fresh): reuse_long − fresh", "mean": m,
                             "std": sd, "per seed": s["equal_time_long_diffs"]})
            m, sd = s["longer_training_gain_reuse_long_minus_reuse"]
            cmp_rows.append({"comparison": "longer training (reuse_long − reuse)", "mean": m, "std": sd,
                             "per seed": s["longer_training_gains"]})
        if cmp_rows:
            tables[f"{metric}: paired differences (points)"] = cmp_rows
    result["tables"] = tables
    if "knn_k200" in summaries:
        result["verdict"] = verdict(summaries["knn_k200"])
        s = summaries["knn_k200"]
        if "fresh_over_reuse_epoch_time" in s:
            result["fresh_over_reuse_epoch_time"] = s["fresh_over_reuse_epoch_time"]
        if "reuse_long_over_fresh_train_time" in s:
            result["reuse_long_over_fresh_train_time"] = s["reuse_long_over_fresh_train_time"]
    return result


def from_partial(path: str | Path, fresh_cost: float | None = None) -> dict[str, Any]:
    """Rebuild the tables, summary and verdict from ``out_dir/accuracy_partial.json`` or a saved result JSON.

    ``fresh_cost``: place fresh epochs on the time axis at this multiple of a reuse epoch (see ``summarize``).
    """
    data = json.loads(Path(path).read_text())
    data.pop("tables", None)
    return _tabulate(data, fresh_cost)
