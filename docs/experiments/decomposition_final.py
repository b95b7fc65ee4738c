"""Zhang et al.'s decomposition at finished runs' final weights, averaged over many batches, with paired
differences over seeds (markdown tables).

    python docs/experiments/decomposition_final.py LABEL=RUN_DIR[,RUN_DIR...] ... [--versus LABEL_A LABEL_B ...]
        [--bn running|batch]

The per-epoch metrics of a run (``decomposition_readings.py``) are each one training batch's, so a single epoch's
η is noisy. Here each finished run's final checkpoint is measured by ``gsg diagnose`` on ``--samples`` test images
(default 4096: 16 batches of 256, two augmented views each, four crops for a ``views = fresh`` run, pairs drawn as
in training) and every metric is the mean over those batches, with its standard deviation over the batches
beside it. ``--bn running`` (default) runs the augmented views in eval mode (BatchNorm with its running
statistics); ``--bn batch`` with each batch's own statistics, as the training step and its per-epoch log do. The
columns: η_p, η_sel, ‖o_e‖/‖r_e‖ and m_o (views), the centre ratio of each batch's first-view projections (the
log's z_center_ratio), per batch; m_o, m_r and RankMe of the clean (unaugmented) test images' projections over
all samples, always under the running statistics.

Several RUN_DIRs after one label are its seeds. ``--versus A B`` prints A − B paired over the seeds both have,
with the 95% t interval (``gsg.reproduce.stats.paired_difference``), for both m_o, η_p and η_sel.
A run's diagnosis is cached in its directory (``checkpoint.diagnose.<dataset>.json``, or
``checkpoint.diagnose-bn-batch.<dataset>.json`` for ``--bn batch``, written by ``gsg diagnose``) and reused while
the checkpoint's sha256, the sample count and the BatchNorm mode match; otherwise it is recomputed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from gsg.reproduce.stats import fmt_difference, paired_difference

# (key, header, where): "dec" from the decomposition (mean ± sd over batches), "proj" from the projections
COLUMNS = (("eta_p", "η_p", "dec"), ("sel_eta", "η_sel", "dec"), ("ge_center_residual_ratio", "‖o_e‖/‖r_e‖", "dec"),
           ("z_center_ratio", "m_o (views)", "dec"), ("m_o", "m_o (clean)", "proj"), ("m_r", "m_r (clean)", "proj"),
           ("rankme", "RankMe (clean)", "proj"))
VERSUS = (("z_center_ratio", "m_o (views)"), ("m_o", "m_o (clean)"), ("eta_p", "η_p"), ("sel_eta", "η_sel"))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _matches(r: dict[str, Any], digest: str, samples: int, bn: str) -> bool:
    # a diagnosis written before the BatchNorm option existed used the running statistics
    extra = r.get("extra", {})
    return (r.get("checkpoint_sha256") == digest and extra.get("samples") == samples
            and extra.get("bn", "running") == bn)


def diagnosis(run: Path, samples: int, bn: str = "running") -> dict[str, Any]:
    """The run's ``gsg diagnose`` result at its final checkpoint (cached while it matches)."""
    done, ckpt = run / "done.json", run / "checkpoint.pt"
    if not done.is_file() or not ckpt.is_file():
        raise SystemExit(f"{run}: not a finished run (no done.json or checkpoint.pt); its last checkpoint is not its "
                         "final weights. Wait for it to finish, or leave it out.")
    digest = sha256(ckpt)
    for cached in sorted(run.glob("checkpoint.diagnose*.json")):
        r = json.loads(cached.read_text())
        if _matches(r, digest, samples, bn):
            return r
    subprocess.run(["gsg", "diagnose", str(ckpt), "--samples", str(samples), "--device", "cpu", "--bn", bn],
                   check=True, stdout=subprocess.DEVNULL)
    for cached in sorted(run.glob("checkpoint.diagnose*.json")):
        r = json.loads(cached.read_text())
        if _matches(r, digest, samples, bn):
            return r
    raise SystemExit(f"{run}: gsg diagnose wrote no result next to {ckpt}")


def values(r: dict[str, Any]) -> dict[str, tuple[float | None, float | None]]:
    """Each column's (value, sd over batches); the projections' metrics are over all samples (no sd)."""
    dec, proj = r["extra"].get("decomposition") or {}, r["extra"]["projection"]
    out: dict[str, tuple[float | None, float | None]] = {}
    for key, _, where in COLUMNS:
        if where == "dec":
            out[key] = (dec.get(key), (dec.get("sd") or {}).get(key))
        else:
            out[key] = (proj.get(key), None)
    return out


def cell(v: tuple[float | None, float | None]) -> str:
    mean, sd = v
    if mean is None:
        return "–"
    return f"{mean:.3f}" + ("" if sd is None else f" ± {sd:.3f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="LABEL=RUN_DIR[,RUN_DIR...] (one directory per seed)")
    ap.add_argument("--samples", type=int, default=4096)
    ap.add_argument("--versus", nargs=2, action="append", default=[], metavar=("A", "B"))
    ap.add_argument("--bn", choices=("running", "batch"), default="running",
                    help="BatchNorm statistics of the augmented views (gsg diagnose --bn)")
    args = ap.parse_args(argv)
    measured: dict[str, dict[int, dict[str, tuple[float | None, float | None]]]] = {}
    batches = set()
    for spec in args.runs:
        label, _, dirs = spec.partition("=")
        if not dirs:
            raise SystemExit(f"{spec!r}: expected LABEL=RUN_DIR[,RUN_DIR...]")
        for d in dirs.split(","):
            run = Path(d)
            r = diagnosis(run, args.samples, args.bn)
            seed = int(json.loads((run / "done.json").read_text())["seed"])
            measured.setdefault(label, {})[seed] = values(r)
            batches.add((r["extra"].get("decomposition") or {}).get("batches"))
    head = ["run", "seed", *(h for _, h, _ in COLUMNS)]
    lines = [f"Final weights, {args.samples} test images (batches per run: "
             f"{', '.join(str(b) for b in sorted(b for b in batches if b))}); views under {args.bn} BatchNorm "
             "statistics; mean ± sd over the batches.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, seeds in measured.items():
        for seed, vals in sorted(seeds.items()):
            lines.append("| " + " | ".join([label, str(seed), *(cell(vals[k]) for k, _, _ in COLUMNS)]) + " |")
    if args.versus:
        lines += ["", "| A − B | " + " | ".join(h for _, h in VERSUS) + " |", "|---|" + "---|" * len(VERSUS)]
        for a, b in args.versus:
            for label in (a, b):
                if label not in measured:
                    raise SystemExit(f"--versus {a!r} {b!r}: no runs labelled {label!r}; labels: {sorted(measured)}")
            diffs = [fmt_difference(paired_difference({s: v[k][0] for s, v in measured[a].items()},
                                                      {s: v[k][0] for s, v in measured[b].items()}), digits=3)
                     for k, _ in VERSUS]
            lines.append(f"| {a} − {b} | " + " | ".join(diffs) + " |")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
