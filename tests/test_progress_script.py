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
                          str(table), "crops=3", "table1=3"], capture_output=True, text=True, check=True)
    rows = {line.split(" | ")[1]: line for line in table.read_text().splitlines()
            if line.startswith("| crops |") and line.count("|") == 8}
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


def _left(table: Path) -> dict[str, tuple[int, ...]]:
    """The 'still to train' rows: experiment -> (runs, single-core minutes, fp32 runs, their minutes)."""
    rows = [line.strip("|").split("|") for line in table.read_text().splitlines() if line.count("|") == 6]
    return {c[0].strip(): tuple(int(x) for x in c[1:]) for c in rows if c[1].strip().isdigit()}


def test_the_minutes_still_to_train_count_partial_runs_and_the_reproductions_seeds(tmp_path: Path) -> None:
    from gsg.reproduce import get_experiment, plan_runs
    from gsg.reproduce.plan import estimate

    runs, docs, table = tmp_path / "runs", tmp_path / "docs", tmp_path / "progress.md"
    _done(runs / "simsiam-s0", (80.0, 82.0), 85.0)

    def left(sym4_epochs: int) -> dict[str, tuple[int, ...]]:
        if sym4_epochs:
            (runs / "simsiam_sym4-s0").mkdir(parents=True, exist_ok=True)
            (runs / "simsiam_sym4-s0" / "metrics.jsonl").write_text(_epoch_lines(sym4_epochs))
        subprocess.run([sys.executable, str(SCRIPT), "--runs", str(runs), "--docs", str(docs), "--table",
                        str(table), "crops=3", "table1=3"], capture_output=True, text=True, check=True)
        return _left(table)

    before = left(0)
    # 21 of the control's 22 runs; Table 1 at 3 seeds adds BYOL and BYOL + GSG at seeds 1 and 2 (the rest are
    # the control's runs, counted there)
    assert before["crops"][0] == 21 and before["table1"][0] == 4
    assert before["all"][0] == 25 and abs(before["all"][1] - before["crops"][1] - before["table1"][1]) <= 1
    after = left(5)  # 5 of the 12 epochs of the 4-crop run trained: 5/12 of its cost is no longer to do
    plan = next(p for p in plan_runs(get_experiment("crops", "cpu"), 3, Path("unused"), runs_dir=runs)
                if p.key == "simsiam_sym4-s0")
    crops = get_experiment("crops", "cpu")
    saved = ((estimate(crops, plan) or 0.0) - (estimate(crops, plan, done_epochs=5) or 0.0)) / 60
    assert saved > 20 and abs((before["crops"][1] - after["crops"][1]) - saved) <= 1
    assert after["crops"][0] == 21  # a partial run is still to train
    assert before["crops"][2:] == (0, 0) == before["table1"][2:]  # every run of both trains under bf16


def test_the_runs_still_to_train_in_fp32_are_counted_apart(tmp_path: Path) -> None:
    from gsg.reproduce import get_experiment, plan_runs
    from gsg.reproduce.plan import estimate

    runs, table = tmp_path / "runs", tmp_path / "progress.md"
    subprocess.run([sys.executable, str(SCRIPT), "--runs", str(runs), "--docs", str(tmp_path / "docs"), "--table",
                    str(table), "table4"], capture_output=True, text=True, check=True)
    exp = get_experiment("table4", "cpu")
    contrastive = [p for p in plan_runs(exp, 1, Path("unused"), runs_dir=runs) if p.run.group in ("SimCLR", "MoCo v2")]
    minutes = sum(estimate(exp, p) or 0.0 for p in contrastive) / 60
    runs_left, total, n_fp32, fp32_minutes = _left(table)["table4"]
    assert (runs_left, n_fp32) == (12, 6) and abs(fp32_minutes - minutes) <= 1 and total > fp32_minutes
