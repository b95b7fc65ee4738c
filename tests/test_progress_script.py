"""docs/experiments/progress.py: the progress table of the long cpu-scale reproductions and the copy of each
finished run's metrics into the docs (never its checkpoint).

It runs on a hand-made runs directory: one finished run, one partial, one continued 2x run, a baselines file,
and everything else still to do.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "experiments" / "progress.py"


def _epoch_lines(n: int) -> str:
    return "".join(json.dumps({"kind": "epoch", "epoch": e + 1, "loss": -0.5}) + "\n" for e in range(n)) + \
        json.dumps({"kind": "step", "step": 3}) + "\n"


def _done(run: Path, knn: tuple[float, float], linear: float, **extra: object) -> None:
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text(_epoch_lines(12))
    (run / "command.txt").write_text("gsg pretrain ...\n")
    (run / "checkpoint.pt").write_bytes(b"weights")
    (run / "done.json").write_text(json.dumps({
        "evals": {"knn": {"knn_k200": knn[0], "knn_k1": knn[1]}, "linear": {"top1": linear}},
        "times": {"pretrain_s": 2000.0}, **extra}))


def test_the_table_reports_each_run_and_copies_finished_metrics_only(tmp_path: Path) -> None:
    runs, docs, table = tmp_path / "runs", tmp_path / "docs" / "runs" / "cpu2", tmp_path / "docs" / "progress.md"
    _done(runs / "simsiam-s0", (80.594, 82.48), 85.81)
    _done(runs / "simsiam_gsg2x2-s0", (80.55, 82.38), 85.97,
          continued_from={"source": "simsiam_gsg2-s0", "epoch": 12})
    (runs / "simsiam_sym4-s0").mkdir(parents=True)
    (runs / "simsiam_sym4-s0" / "metrics.jsonl").write_text(_epoch_lines(5))
    (runs / "baselines").mkdir()
    (runs / "baselines" / "abc.json").write_text(json.dumps({
        "protocol": {"dataset": "fashion-mnist", "backbone": {"arch": "resnet18", "width": 0.25}},
        "results": {"raw_pixels": {"label": "raw pixels", "knn_k200": 81.78, "knn_k1": 85.64, "linear_top1": 80.32},
                    "random_init": {"label": "random-init backbone", "seeds": [0, 1, 2], "knn_k200": 74.61,
                                    "knn_k200_std": 1.16, "knn_k1": 77.43, "linear_top1": 76.03}}}))
    out = subprocess.run([sys.executable, str(SCRIPT), "--runs", str(runs), "--docs", str(docs), "--table",
                          str(table), "crops", "table1"], capture_output=True, text=True, check=True)
    rows = {line.split(" | ")[1]: line for line in table.read_text().splitlines()
            if line.startswith("| crops |")}
    assert rows["simsiam-s0"] == ("| crops | simsiam-s0 | SimSiam, symmetric, 2 crops | done (12 epochs) | 80.59 | "
                                  "82.48 | 85.81 |")
    assert "done (24 epochs, continued simsiam_gsg2-s0 after its 12)" in rows["simsiam_gsg2x2-s0"]
    assert "| partial: 5/12 epochs |" in rows["simsiam_sym4-s0"]
    assert "| to do |" in rows["simsiam_gsg-s0"]
    # Table 1's symmetric SimSiam is the crops control's run: listed once, then as shared
    shared = [line for line in table.read_text().splitlines() if line.startswith("| table1 | simsiam-s0 |")]
    assert shared and "shared (see above)" in shared[0]
    text = table.read_text()
    assert "| baselines | abc | *baseline: random-init backbone* (3 seeds) | measured (fashion-mnist, resnet18 " \
           "width 0.25) | 74.61 ± 1.16 | 77.43 | 76.03 |" in text
    assert "| baselines | abc | *baseline: raw pixels* |" in text
    assert len(rows) == 22 and out.stdout.startswith("2 done, ")
    # metrics, command and evaluations of finished runs are copied; checkpoints and unfinished runs are not
    assert sorted(p.name for p in (docs / "simsiam-s0").iterdir()) == ["command.txt", "evals.json", "metrics.jsonl"]
    assert json.loads((docs / "simsiam-s0" / "evals.json").read_text())["evals"]["linear"]["top1"] == 85.81
    assert not (docs / "simsiam_sym4-s0").exists()
    assert not list(docs.rglob("*.pt"))
