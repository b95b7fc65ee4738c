"""Zhang et al.'s decomposition over training, read from finished runs' logged metrics (a markdown table).

    python docs/experiments/decomposition_readings.py --epochs 1 4 8 12 LABEL=RUN_DIR ...
    python docs/experiments/decomposition_readings.py --ranges LABEL=RUN_DIR ...

``--ranges``: one row per run, each metric's smallest and largest value over all its epochs, and for η_p and
η_sel in how many epochs it was negative (de-centring), so that "in every epoch" claims can be read off.

Each RUN_DIR is a `gsg pretrain` run with ``run.log_decomposition`` on (the default): every epoch's record holds
m_o and m_r of the projections (``z_center_ratio``, ``z_residual_ratio``), the extra gradient's centre-to-residual
norm ratio (``ge_center_residual_ratio``) and the de-centring coefficient η_p (``eta_p``), measured on the
epoch's last batch (``gsg.train.epoch_metrics``), and for a directed policy (GSG, random, reverse) η_sel of its
selection gradient, the policy's gradient minus the symmetric loss's (docs/decomposition.md). Reads done.json's
history when the run has finished, else metrics.jsonl, and says which.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = (("eta_p", "η_p"), ("ge_center_residual_ratio", "‖o_e‖/‖r_e‖"), ("sel_eta", "η_sel"),
           ("z_center_ratio", "m_o"), ("z_residual_ratio", "m_r"), ("z_rankme", "RankMe"))


def history(run: Path) -> tuple[list[dict], str]:
    done = run / "done.json"
    if done.is_file():
        return list(json.loads(done.read_text()).get("history", [])), "finished"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("kind") == "epoch"], "in progress"


def fmt(v: object) -> str:
    return "–" if not isinstance(v, int | float) else f"{v:.3g}"


SIGNED = ("eta_p", "sel_eta")  # their sign is the reading: negative de-centres


def ranges_row(label: str, state: str, rows: list[dict]) -> list[str]:
    """``label``'s cells: min..max of each column over the epochs that logged it; for η, the epochs below 0."""
    cells = [f"{label} ({state})", str(len(rows))]
    for key, _ in COLUMNS:
        vals = [float(r[key]) for r in rows if isinstance(r.get(key), int | float)]
        if not vals:
            cells.append("–")
            continue
        cell = f"{fmt(min(vals))} to {fmt(max(vals))}"
        if key in SIGNED:
            cell += f" ({sum(v < 0 for v in vals)}/{len(vals)} < 0)"
        cells.append(cell)
    return cells


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="LABEL=RUN_DIR")
    ap.add_argument("--epochs", type=int, nargs="+", default=[1, 4, 8, 12])
    ap.add_argument("--ranges", action="store_true", help="each run's range over all epochs instead")
    args = ap.parse_args()
    head = ["run", "epochs" if args.ranges else "epoch", *(h for _, h in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for spec in args.runs:
        label, run = spec.split("=", 1)
        rows, state = history(Path(run))
        if args.ranges:
            lines.append("| " + " | ".join(ranges_row(label, state, rows)) + " |")
            continue
        by_epoch = {r["epoch"]: r for r in rows}
        for e in args.epochs:
            if e in by_epoch:
                r = by_epoch[e]
                lines.append("| " + " | ".join([f"{label} ({state})", str(e), *(fmt(r.get(k)) for k, _ in COLUMNS)])
                             + " |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
