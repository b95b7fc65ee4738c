"""Progress of long cpu-scale reproductions: copy each finished run's metrics and command into the docs, and
write a progress table.

    python docs/experiments/progress.py --runs runs/reproduce-cpu2 --docs docs/results/runs/cpu2 \
        --table docs/results/progress.md crops=3 decomposition table4 fig5 table1=3 fig4 tsne directpred

For every planned run it reports done / partial (epochs so far) / to do, and for finished runs their final kNN
(full splits) and linear probe. ``EXPERIMENT=SEEDS`` plans the seeds that ``gsg reproduce --seeds`` is given
(``reproduce_cpu2.sh`` runs crops and table1 with 3); a bare name plans the experiment's default, or ``--seeds``.
Per experiment it adds the single-core minutes still to train by the cost model (``estimate_seconds``, as the dry
runs), counting a partial run's remaining epochs and a 2x run that continues its 1x run as its second half.
Finished runs get ``metrics.jsonl``, ``command.txt`` and ``evals.json`` copied to ``--docs/<run>/`` (never
checkpoints). Commit the result after each finished run: the runs are resumable and independent, so a session
can end at any time.
"""

from __future__ import annotations

import argparse
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

from gsg.reproduce.experiments import get_experiment
from gsg.reproduce.plan import estimate, plan_runs
from gsg.reproduce.prefix import prefix_sources


def _epochs_done(run_dir: Path) -> int:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return 0
    return sum(1 for line in metrics.read_text().splitlines() if '"kind": "epoch"' in line)


def _baseline_rows(runs: Path) -> list[list[str]]:
    """The raw-pixel and random-init rows of every protocol measured under ``runs/baselines`` (gsg reproduce
    writes one JSON per protocol), so that the table shows the learned numbers beside them."""
    rows = []
    for path in sorted((runs / "baselines").glob("*.json")):
        rec = json.loads(path.read_text())
        proto = rec.get("protocol", {})
        bb = proto.get("backbone", {})
        where = f"{proto.get('dataset', '?')}, {bb.get('arch', '?')} width {bb.get('width', '?')}"
        for name, res in rec.get("results", {}).items():
            seeds = res.get("seeds") or []
            label = f"*baseline: {res.get('label', name)}*" + (f" ({len(seeds)} seeds)" if seeds else "")
            rows.append(["baselines", path.stem, label, f"measured ({where})",
                         *(_mean_std(res, k) for k in ("knn_k200", "knn_k1", "linear_top1"))])
    return rows


def _mean_std(res: dict, key: str) -> str:
    if res.get(key) is None:
        return "–"
    std = res.get(f"{key}_std")
    return f"{res[key]:.2f}" + (f" ± {std:.2f}" if std else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiments", nargs="+", help="EXPERIMENT or EXPERIMENT=SEEDS (the reproduction's --seeds)")
    ap.add_argument("--runs", type=Path, required=True, help="the shared --runs directory of the reproductions")
    ap.add_argument("--docs", type=Path, required=True, help="where finished runs' metrics are copied")
    ap.add_argument("--table", type=Path, required=True, help="the Markdown progress table to write")
    ap.add_argument("--seeds", type=int, help="seeds per variant (default: each experiment's)")
    args = ap.parse_args()
    rows, seen = [], set()
    left: dict[str, list[float]] = {}  # experiment -> single-core seconds of each run still to train
    fp32: dict[str, list[float]] = {}  # ... of those that train in fp32 (any CPU; the rest need native bf16)
    for spec in args.experiments:
        name, _, n_seeds = spec.partition("=")
        exp = get_experiment(name, "cpu")
        seeds = int(n_seeds) if n_seeds else args.seeds or exp.default_seeds
        plans = plan_runs(exp, seeds, Path("unused"), runs_dir=args.runs)
        sources = prefix_sources(plans)
        left[name], fp32[name] = [], []
        for plan in plans:
            if plan.key in seen:
                rows.append([name, plan.key, plan.run.label, "shared (see above)", "", "", ""])
                continue
            seen.add(plan.key)
            done = plan.dir / "done.json"
            want = plan.config.optim.epochs
            if done.is_file():
                rec = json.loads(done.read_text())
                ev = rec.get("evals", {})
                knn = ev.get("knn", {})
                dest = args.docs / plan.key
                dest.mkdir(parents=True, exist_ok=True)
                for f in ("metrics.jsonl", "command.txt", "continued_from.json"):
                    if (plan.dir / f).is_file():
                        shutil.copy2(plan.dir / f, dest / f)
                (dest / "evals.json").write_text(json.dumps({"evals": ev, "times": rec.get("times", {})},
                                                            indent=1) + "\n")
                cont = rec.get("continued_from")
                status = f"done ({want} epochs" + (f", continued {cont['source']} after its {cont['epoch']})"
                                                   if cont else ")")
                k200 = f"{knn['knn_k200']:.2f}" if "knn_k200" in knn else "–"
                k1 = f"{knn['knn_k1']:.2f}" if "knn_k1" in knn else "–"
                lin = ev.get("linear", {}).get("top1")
                rows.append([name, plan.key, plan.run.label, status, k200, k1, "–" if lin is None else f"{lin:.2f}"])
            else:
                n = _epochs_done(plan.dir)
                status = f"partial: {n}/{want} epochs" if n else "to do"
                rows.append([name, plan.key, plan.run.label, status, "", "", ""])
                cost = estimate(exp, plan, sources.get(plan.key), done_epochs=n) or 0.0
                left[name].append(cost)
                if plan.config.run.amp == "off":
                    fp32[name].append(cost)
    done_n = sum(r[3].startswith("done") for r in rows)
    todo = [r for r in rows if not r[3].startswith(("done", "shared"))]
    lines = ["# Progress of the cpu-scale reproductions", "",
             f"Written {datetime.now(UTC).isoformat(timespec='minutes')} by `python docs/experiments/progress.py "
             f"--runs {args.runs} --docs {args.docs} --table {args.table} {' '.join(args.experiments)}`.", "",
             "The runs are started by `bash docs/experiments/reproduce_cpu2.sh` (resumable: rerun it to continue; "
             "two one-thread runs at a time, the faster layout on 2 cores; on a fresh machine it first restores "
             "the finished runs from the metrics committed here, `docs/experiments/restore.py`, and trains only what "
             "is left). A page from the runs finished so far: "
             "`gsg reproduce EXPERIMENT --scale cpu --runs runs/reproduce-cpu2 --out docs/results/EXPERIMENT_cpu2 "
             "--report-only` (with `--seeds 3` for crops and table1). The cpu2 grid is about 36 single-core minutes "
             "per 2-crop run and 67 per 4-crop run under bf16, 1.4× that for BYOL and MoCo (their momentum "
             "target encoder); a 2× epochs run continues its finished 1× run (`gsg.reproduce.prefix`), so it costs "
             "one more 1× run. On a machine lent for a fixed time, `DEADLINE=HH:MM bash "
             "docs/experiments/reproduce_cpu2.sh` starts only the runs that end before it.",
             "",
             f"{done_n} runs done, {len(todo)} to do or in progress. Finished runs' metrics and commands: "
             f"[`{args.docs}`]({Path('runs') / args.docs.name}/). kNN on the whole train and test splits (k=200, "
             "T=0.1, and k=1); linear probe on frozen features of the whole train split. The first rows are the same "
             "protocol's baselines: a learned number that does not beat them says nothing was learned.", "",
             "Still to train, by the cost model (single-core minutes; two runs at a time take about half as long on "
             "the machine; an experiment's runs that an earlier one trains are counted there). The bf16 runs are "
             "fast only on a CPU with AVX-512 BF16 (or a GPU); the fp32 ones train at one speed on any CPU "
             "(docs/results/cpu_scale.md):", "",
             "| experiment | runs to train | single-core minutes | of which fp32 (any CPU): runs | minutes |",
             "|---|---|---|---|---|",
             *(f"| {name} | {len(v)} | {sum(v) / 60:.0f} | {len(fp32[name])} | {sum(fp32[name]) / 60:.0f} |"
               for name, v in left.items()),
             f"| all | {sum(len(v) for v in left.values())} | {sum(map(sum, left.values())) / 60:.0f} | "
             f"{sum(len(v) for v in fp32.values())} | {sum(map(sum, fp32.values())) / 60:.0f} |", "",
             "| experiment | run | variant | status | kNN k=200 | kNN k=1 | linear |", "|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in _baseline_rows(args.runs) + rows]
    args.table.parent.mkdir(parents=True, exist_ok=True)
    args.table.write_text("\n".join(lines) + "\n")
    print(f"{done_n} done, {len(todo)} to do; {args.table}")


if __name__ == "__main__":
    main()
