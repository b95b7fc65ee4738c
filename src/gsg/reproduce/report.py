"""Reports of a reproduction: Markdown tables in the paper's layout (ours beside the paper's numbers),
and the exact commands (the plots are :mod:`gsg.reproduce.plots`).

Everything here reads the results dict that :func:`gsg.reproduce.runner.reproduce` builds, so a report can
be re-rendered from ``results.json`` without training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gsg.reproduce import pairing_rule
from gsg.reproduce.aggregate import by_seed
from gsg.reproduce.experiments import (
    PAPER_FIG4,
    PAPER_FIG5,
    PAPER_TABLE4_CONTRASTIVE,
    PAPER_ZHANG,
    PREDICTOR_LABEL,
    TABLE4_BATCHES,
    TABLE4_MOCO_BATCH,
    TABLE4_PAPER_B,
    Experiment,
)
from gsg.reproduce.markdown import DASH, fmt, fmt_paper, fmt_stat, knn_label, minutes, table

# ------------------------------------------------------------------------------------------ tables


def _metric(res: dict[str, Any], name: str, metric: str, digits: int = 1) -> str:
    v = res["variants"].get(name)
    if v is None:
        return DASH
    if metric == "linear" and v.get("errors") and v["metrics"]["linear"]["n"] == 0:
        return "error"
    if "diverged" in v.get("status", []) and v["metrics"].get(metric, {}).get("n", 0) == 0:
        return "diverged"
    return fmt_stat(v["metrics"].get(metric), digits)


def _ours(res: dict[str, Any]) -> str:
    return f"ours, {res['dataset_name']}"


# ------------------------------------------------------------------------------------------ tables


def _table1(res: dict[str, Any]) -> str:
    p = res["paper"]["table1"]
    o = _ours(res)
    headers = ["Algorithm", f"{o}: kNN ({knn_label(res)})", f"{o}: kNN (k=200)", f"{o}: linear",
               "paper ImageNet: kNN", "paper ImageNet: linear", "paper CIFAR-10: kNN (k=1)", "paper CIFAR-10: linear"]
    rows = []
    for name, v in res["variants"].items():
        pp = p.get(name, {})
        rows.append([v["label"], _metric(res, name, "knn"), _metric(res, name, "knn_k200"),
                     _metric(res, name, "linear"), fmt_paper(pp.get("imagenet_knn")),
                     fmt_paper(pp.get("imagenet_linear")), fmt_paper(pp.get("cifar10_knn")),
                     fmt_paper(pp.get("cifar10_linear"))])
    return table(headers, rows)


def _curve_table(res: dict[str, Any], paper: dict[str, str], paper_head: str) -> str:
    o = _ours(res)
    headers = ["Algorithm", f"{o}: final kNN ({knn_label(res)})", f"{o}: final kNN (k=200)",
               f"{o}: best kNN ({knn_label(res)})", f"{o}: std(z/‖z‖)·√d", f"{o}: collapsed?", paper_head]
    rows = []
    for name, v in res["variants"].items():
        knn = v["metrics"]["knn"]["mean"]
        collapsed = DASH if knn is None else ("yes" if knn <= res["chance"] + 5 else "no")
        rows.append([v["label"], _metric(res, name, "knn"), _metric(res, name, "knn_k200"),
                     _metric(res, name, "knn_best"), _metric(res, name, "z_std", 3), collapsed,
                     paper.get(name, DASH)])
    return table(headers, rows)


def _table4(res: dict[str, Any]) -> str:
    cpu = res["scale"] == "cpu"
    ours_b = TABLE4_BATCHES[res["scale"]]
    paper_b = [TABLE4_PAPER_B[res["scale"]][b] for b in ours_b]
    headers = ["Methodology", "Algorithm", "numbers"] + [
        f"b={pb}" + (f" (ours: b={b})" if cpu else "") for pb, b in zip(paper_b, ours_b, strict=True)]
    rows = [["Explicit contrastive", name, "paper: ImageNet linear", *(fmt_paper(v[pb]) for pb in paper_b)]
            for name, v in PAPER_TABLE4_CONTRASTIVE.items()]
    paper = res["paper"]["table4"]
    o = _ours(res)
    for m, label in (("simsiam", "SimSiam w/ GSG"), ("byol", "BYOL w/ GSG")):
        rows.append(["Implicit contrastive", label, "paper: ImageNet linear",
                     *(fmt_paper(paper[f"{m}_gsg"][pb]) for pb in paper_b)])
        rows.append(["Implicit contrastive", label, f"{o}: linear",
                     *(_metric(res, f"{m}_gsg_b{b}", "linear") for b in ours_b)])
        rows.append(["Implicit contrastive", label, f"{o}: kNN ({knn_label(res)})",
                     *(_metric(res, f"{m}_gsg_b{b}", "knn") for b in ours_b)])
    # our own SimCLR / MoCo v2 runs, apart from the paper's quoted contrastive numbers above
    for prefix, label in (("simclr_b", "SimCLR (ours: batch b)"),
                          ("moco_q", f"MoCo v2 (ours: queue b, batch {TABLE4_MOCO_BATCH[res['scale']]})")):
        if not any(f"{prefix}{b}" in res["variants"] for b in ours_b):
            continue  # results made before these rows existed
        rows.append(["Explicit contrastive", label, f"{o}: linear", *(_metric(res, f"{prefix}{b}", "linear")
                                                                     for b in ours_b)])
        rows.append(["Explicit contrastive", label, f"{o}: kNN ({knn_label(res)})",
                     *(_metric(res, f"{prefix}{b}", "knn") for b in ours_b)])
    return table(headers, rows)


def _tsne(res: dict[str, Any]) -> str:
    paper = res["paper"]["tsne"]
    headers = ["Panel", "Algorithm", "t-SNE PNG", "kNN of these features (k=200 / k=1)", "paper (Fig. 6)"]
    rows = []
    by_name = {r["name"]: r for r in res["runs"] if r["seed"] == 0}
    for i, (name, v) in enumerate(res["variants"].items()):
        r = by_name.get(name, {})
        t = r.get("evals", {}).get("tsne", {})
        png = Path(t["png"]).name if t.get("png") else (t.get("error") and "error") or DASH
        knn = f"{fmt(t.get('knn_k200'))} / {fmt(t.get('knn_k1'))}" if t.get("png") else DASH
        rows.append([f"({chr(97 + i)})", v["label"], f"tsne/{png}" if t.get("png") else png, knn,
                     paper.get(name, DASH)])
    return table(headers, rows)


def _directpred(res: dict[str, Any]) -> str:
    stl, cifar = res["paper"]["tian_stl10"], res["paper"]["tian_cifar10"]
    o = _ours(res)
    headers = ["Predictor", f"{o}: BYOL linear", f"{o}: BYOL kNN ({knn_label(res)})", f"{o}: BYOL w/ GSG linear",
               f"{o}: BYOL w/ GSG kNN ({knn_label(res)})", "Tian et al. STL-10 (BYOL, linear)",
               "Tian et al. CIFAR-10 (Table 8, linear)", "paper w/ GSG"]
    rows = [[label, _metric(res, f"byol_{p}", "linear"), _metric(res, f"byol_{p}", "knn"),
             _metric(res, f"byol_gsg_{p}", "linear"), _metric(res, f"byol_gsg_{p}", "knn"),
             fmt_paper(stl.get(p)), fmt_paper(cifar.get(p)), "not reported"]
            for p, label in PREDICTOR_LABEL.items()]
    return table(headers, rows)


def _crops(res: dict[str, Any]) -> str:
    o = _ours(res)
    headers = ["Variant", "seeds", f"{o}: kNN (k=200)", f"{o}: kNN (k=1)", f"{o}: linear", f"{o}: std(z/‖z‖)·√d",
               f"{o}: RankMe(z)"]
    rows = [[v["label"], str(len(v["seeds"])), _metric(res, name, "knn_k200"), _metric(res, name, "knn_k1"),
             _metric(res, name, "linear"), _metric(res, name, "z_std", 3), _metric(res, name, "z_rankme")]
            for name, v in res["variants"].items()]
    return table(headers, rows)


def _decomposition(res: dict[str, Any]) -> str:
    o = _ours(res)
    cols = (("z_center_ratio", "m_o"), ("z_residual_ratio", "m_r"), ("z_rankme", "RankMe"), ("ge_norm", "‖G_e‖"),
            ("ge_center_norm", "‖o_e‖"), ("ge_residual_norm", "‖r_e‖"), ("ge_center_residual_ratio", "‖o_e‖/‖r_e‖"),
            ("eta_p", "η_p"), ("sel_eta", "η_sel"))
    headers = ["Group", "Run", f"{o}: final kNN ({knn_label(res)})", f"{o}: collapsed?",
               *(f"{o}: {label}" for _, label in cols), "Zhang et al."]
    rows = []
    for name, v in res["variants"].items():
        knn = v["metrics"]["knn"]["mean"]
        collapsed = DASH if knn is None else ("yes" if knn <= res["chance"] + 5 else "no")
        rows.append([v["group"], v["label"], _metric(res, name, "knn"), collapsed,
                     *(_metric(res, name, key, 3) for key, _ in cols), PAPER_ZHANG.get(name, "not in the paper")])
    return table(headers, rows)


def results_table(res: dict[str, Any]) -> str:
    """The experiment's table in the paper's layout, our columns beside the paper's."""
    name = res["experiment"]
    if name == "table1":
        return _table1(res)
    if name == "fig4":
        return _curve_table(res, PAPER_FIG4, "paper (Fig. 4, CIFAR-10; curves only)")
    if name == "fig5":
        return _curve_table(res, PAPER_FIG5, "paper (Fig. 5; curves only)")
    if name == "table4":
        return _table4(res)
    if name == "tsne":
        return _tsne(res)
    if name == "directpred":
        return _directpred(res)
    if name == "crops":
        return _crops(res)
    if name == "decomposition":
        return _decomposition(res)
    raise KeyError(name)


BASELINE_METRICS = (("knn_k200", "knn_k200", "kNN k=200"), ("knn_k1", "knn_k1", "kNN k=1"),
                    ("linear", "linear_top1", "linear"))


def baselines_section(res: dict[str, Any]) -> list[str]:
    """The raw-pixel and random-init rows of the same protocol, and every variant's gain over each."""
    b = res.get("baselines")
    if not b:
        return []
    if "error" in b:
        return ["### Baselines", "", f"Not measured: {b['error']}", ""]
    base = b["results"]
    have = [(ours, theirs, head) for ours, theirs, head in BASELINE_METRICS
            if any(theirs in r for r in base.values())]
    rows = [[r["label"] + (f" ({len(r['seeds'])} seeds)" if len(r.get("seeds") or []) > 1 else ""),
             *(fmt(r.get(theirs), r.get(f"{theirs}_std") or None) for _, theirs, _ in have)]
            for r in base.values()]
    gain_rows = []
    for v in res["variants"].values():
        cells = []
        for ours, theirs, _ in have:
            mean = v["metrics"].get(ours, {}).get("mean")
            cells.append(DASH if mean is None else " / ".join(
                f"{mean - r[theirs]:+.1f}" if theirs in r else DASH for r in base.values()))
        gain_rows.append([v["label"], *cells])
    names = " / ".join(r["label"] for r in base.values())
    return ["### Baselines under the same protocol", "",
            "A learned number counts only above these: the same kNN (whole train split as bank, whole test split) "
            "and linear probe, on raw pixels and on a randomly initialised backbone of the runs' architecture "
            f"(eval-mode BatchNorm with its default statistics). Command: `{b.get('command', '')}`.", "",
            table(["baseline", *(h for _, _, h in have)], rows), "",
            f"Gain of each variant over {names} (points):", "",
            table(["variant", *(h for _, _, h in have)], gain_rows), ""]


def incomplete_banner(res: dict[str, Any]) -> list[str]:
    """For a report of the runs finished so far (``gsg reproduce --report-only``): how many, and which are missing."""
    missing = res.get("missing") or []
    if not missing:
        return []
    names = ", ".join(f"{m['label']} (seed {m['seed']})" for m in missing)
    return [f"**Incomplete: {len(res['runs'])} of {len(res['runs']) + len(missing)} runs finished.** Every number "
            "and verdict below uses only those; a claim whose variants have not run reads n/a. Still to run: "
            f"{names}. Rerun the command above (without --report-only) to train them.", ""]


def seeds_section(res: dict[str, Any]) -> list[str]:
    """Each seed's numbers of every variant (the page's kNN, then linear), so that a mean ± std can be read back;
    "to run" for a planned seed that has not finished. Only when the experiment runs several seeds."""
    seeds = range(int(res.get("seeds") or 1))
    if len(seeds) < 2:
        return []
    missing = {(m.get("label"), int(m["seed"])) for m in res.get("missing", [])}
    metrics = ((res.get("knn_metric", "knn_k200"), f"kNN {knn_label(res)}"), ("linear", "linear"))
    shown = [(k, h) for k, h in metrics if any(k in v.get("metrics", {}) for v in res["variants"].values())]
    if not shown:
        return []
    rows = []
    for name, v in res["variants"].items():
        per_metric = [by_seed(res["variants"], name, k) for k, _ in shown]
        cells = [v.get("label") or name]
        for seed in seeds:
            vals = [m.get(seed) for m in per_metric]
            cells.append(" / ".join(fmt(x, digits=2) for x in vals) if any(x is not None for x in vals) else
                         "to run" if (v.get("label"), seed) in missing else "")
        rows.append(cells)
    return ["### Each seed", "", f"{' / '.join(h for _, h in shown)} of each finished run; an empty cell is a seed "
            "the variant does not plan.", "", table(["variant", *(f"seed {s}" for s in seeds)], rows), ""]


def results_markdown(res: dict[str, Any], exp: Experiment) -> str:
    t = res["timing"]
    est = (f" (estimate on 2 CPU cores, {res.get('jobs', 1)} run(s) at a time: {minutes(t['estimated_s'])})"
           if t.get("estimated_s") else "")
    lines = [
        f"# {res['title']}: reproduction at scale `{res['scale']}`",
        "",
        f"Reproduces {res['paper_ref']}. **Ours** (measured by this command): {res['dataset']}; {res['setting']}; "
        f"{res['seeds']} seed(s) per variant, mean ± sample std (n−1) over seeds where there are several. The "
        "paper's numbers are copied from the paper.",
        "",
        f"**Runtime:** {minutes(t['wall_s'])} wall-clock for this invocation; {minutes(t['compute_s'])} recorded "
        f"over the {len(res['runs'])} runs (pretraining by the epochs' clocks + evaluations){est}.",
        "",
        f"Command: `{res['command']}` (every run by hand: [commands.md](commands.md)).",
        "",
        *incomplete_banner(res),
        *(f"- {n}" for n in res["notes"]),
        "",
        "## Results",
        "",
        results_table(res),
        "",
        *seeds_section(res),
        *baselines_section(res),
        "## The paper's claims, checked on our numbers",
        "",
        table(["claim", "ours", "verdict"], [[c["claim"], c["ours"], c["verdict"]] for c in res["claims"]]),
        "",
    ]
    if res.get("default_pairing"):
        lines += pairing_rule.markdown(res["default_pairing"], res["variants"])
    errors = [(v["label"], e) for v in res["variants"].values() for e in v.get("errors", [])]
    errors += [(r["key"], r["error"]) for r in res["runs"] if r.get("error")]
    if errors:
        lines += ["Errors:", "", *(f"- {who}: {msg}" for who, msg in errors), ""]
    if res.get("plots"):
        lines += ["## Plots", "", *(f"![{Path(p).stem}]({Path(p).name})" for p in res["plots"]), ""]
    lines += ["## Runs and runtime", "",
              table(["run", "seed", "status", "this call", "epochs", f"monitor kNN at the end ({knn_label(res)})",
                     "pretraining", "evaluations"],
                    [[r["label"] or r["name"], str(r["seed"]), r["status"], r.get("how") or DASH,
                      str(r["final"].get("epochs", DASH)), fmt(r["final"].get(res["knn_metric"])),
                      minutes(r.get("pretrain_s")), minutes(r.get("evals_s"))] for r in res["runs"]]),
              "",
              "Pretraining is the sum of the run's epoch clocks over every call that trained it, so a resumed run "
              "counts the epochs before its resume too, and a continued run (2× epochs) only the epochs after the "
              "run it continues; an epoch stopped mid-way by a checkpoint made before 2026-12-01 counts only its part "
              "after the resume. Evaluations are the wall clock of the call that ran them. Both are wall clock: they "
              "include any time the run was paused (SIGSTOP) and grow with whatever else ran on the machine, so "
              "compare costs with the cost model's estimate, not with this column.",
              ""]
    return "\n".join(lines)


def commands_markdown(res: dict[str, Any]) -> str:
    """The exact commands: the whole reproduction, then each run by hand, with the time each took."""
    t = res.get("timing", {})
    lines = [f"# Commands: {res['title']} (scale `{res['scale']}`)", "",
             "The whole reproduction (skips finished runs, resumes an interrupted one):", "",
             "```bash", res["command"], "```", ""]
    if t.get("wall_s") is not None:
        lines += [f"Total: {minutes(t['wall_s'])} wall-clock for the last invocation, {minutes(t['compute_s'])} "
                  "recorded over all runs.", ""]
    elif res.get("estimated_s"):
        lines += [f"Estimated: {minutes(res['estimated_s'])} on 2 CPU cores, {res.get('jobs', 1)} run(s) at a time.",
                  ""]
    d = res.get("deadline")
    if d:
        lines += [f"With `--deadline {d['until']}` ({d['minutes_left']:.0f} min left, {d['jobs']} run(s) at a time, by "
                  f"the cost model): {len(d['starts'])} run(s) start ({', '.join(d['starts']) or 'none'}); left for "
                  f"a later machine: {', '.join(d['left_out']) or 'none'}.", ""]
    lines += ["Each run by hand (the same config; `--auto-resume` continues an interrupted run). kNN accuracy is "
              "the online monitor's last epoch in the run's `metrics.jsonl` (`knn_k1`, `knn_k200`).", ""]
    for r in res["runs"]:
        timing = (f"pretraining {minutes(r.get('pretrain_s'))}, evaluations {minutes(r.get('evals_s'))}"
                  if r.get("pretrain_s") is not None else
                  f"estimated {minutes(r['estimated_s'])} on one core" if r.get("estimated_s") else "")
        if r.get("starts") is False:
            timing += "; would not start before the deadline"
        lines += [f"## {r['key']}: {r.get('label') or ''}" + (f" ({timing})" if timing else ""), ""]
        cont = r.get("continues")
        if cont:  # gsg.reproduce.prefix: the shorter run's final checkpoint is this run's first epochs
            lines += [f"Continues `{cont['source']}` after its epoch {cont['epoch']} ({cont['why']}): its final "
                      "checkpoint is copied in and only the later epochs are trained. Without that run, the command "
                      "alone trains every epoch.", ""]
        lines += ["```bash", *(cont["by_hand"][:-1] if cont else []), r["command"], *r.get("eval_commands", []),
                  "```", ""]
    if res.get("launch"):
        lines += ["## Several GPUs (torchrun)", "",
                  "One command per run, 8 GPUs per node as the paper (the batch size is global: each process takes "
                  "batch/8 and GSG pairs images within it). Then run the `gsg reproduce` command above without "
                  "torchrun: it finds the finished checkpoints, evaluates them and writes the report.", "",
                  "```bash", *res["launch"], "```", ""]
    return "\n".join(lines)


__all__ = ["baselines_section", "commands_markdown", "incomplete_banner", "results_markdown", "results_table",
           "seeds_section"]
