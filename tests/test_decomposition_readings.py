"""docs/experiments/decomposition_readings.py: the decomposition's per-epoch table and its ranges over training,
read from hand-made runs (one finished, one in progress), so that the numbers docs/decomposition.md quotes can be
checked against what the script prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "experiments" / "decomposition_readings.py"


def _epoch(e: int, eta_p: float, m_o: float, sel_eta: float | None = None) -> dict[str, object]:
    rec: dict[str, object] = {"kind": "epoch", "epoch": e, "eta_p": eta_p, "z_center_ratio": m_o,
                              "z_residual_ratio": 1.0 - m_o, "ge_center_residual_ratio": 0.2, "z_rankme": 30.0}
    if sel_eta is not None:
        rec["sel_eta"] = sel_eta
    return rec


def _runs(tmp_path: Path) -> tuple[Path, Path]:
    done, partial = tmp_path / "gsg", tmp_path / "sym"
    done.mkdir()
    history = [_epoch(1, 0.1, 0.15, -0.05), _epoch(2, -0.2, 0.12, -0.09), _epoch(3, 0.3, 0.2, 0.01)]
    (done / "done.json").write_text(json.dumps({"history": history}))
    partial.mkdir()
    lines = [_epoch(1, -0.25, 0.1), {"kind": "step", "step": 7, "eta_p": 9.0}, _epoch(2, -0.07, 0.29)]
    (partial / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return done, partial


def _run(*args: str) -> list[list[str]]:
    out = subprocess.run([sys.executable, str(SCRIPT), *args], check=True, capture_output=True, text=True).stdout
    rows = [line.strip("|").split("|") for line in out.splitlines()[2:]]
    return [[c.strip() for c in r] for r in rows]


def test_ranges_give_each_metrics_extremes_and_the_negative_epochs_of_eta(tmp_path: Path) -> None:
    done, partial = _runs(tmp_path)
    rows = _run("--ranges", f"GSG={done}", f"sym={partial}")
    assert rows[0][:2] == ["GSG (finished)", "3"]
    assert rows[0][2] == "-0.2 to 0.3 (1/3 < 0)"  # η_p
    assert rows[0][4] == "-0.09 to 0.01 (2/3 < 0)"  # η_sel
    assert rows[0][5] == "0.12 to 0.2"  # m_o: no sign count
    # in progress: only epoch records count, never a step record's values
    assert rows[1][:3] == ["sym (in progress)", "2", "-0.25 to -0.07 (2/2 < 0)"]
    assert rows[1][4] == "–"  # symmetric SimSiam has no selection gradient


def test_the_per_epoch_table_lists_the_asked_epochs_only(tmp_path: Path) -> None:
    done, _ = _runs(tmp_path)
    rows = _run(f"GSG={done}", "--epochs", "1", "3", "9")
    assert [r[1] for r in rows] == ["1", "3"]
    assert rows[1][2:6] == ["0.3", "0.2", "0.01", "0.2"]
