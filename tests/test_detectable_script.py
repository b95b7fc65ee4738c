"""docs/experiments/detectable.py: the smallest difference each claim can detect at the planned seeds, checked
against a hand computation on a hand-made results.json."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "experiments" / "detectable.py"


def _rows(path: Path, *args: str) -> list[list[str]]:
    out = subprocess.run([sys.executable, str(SCRIPT), str(path), *args], check=True, capture_output=True,
                         text=True).stdout
    return [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()[2:]]


def test_half_width_is_t_times_sd_over_root_n_and_never_below_the_minimum_effect(tmp_path: Path) -> None:
    claims = [
        {"claim": "wide", "difference": {"n": 2, "std": 1.43}},
        {"claim": "narrow", "difference": {"n": 2, "std": 0.28}},
        {"claim": "one seed", "difference": {"n": 1, "std": None}},  # no spread yet: left out
        {"claim": "not run", "difference": {"n": 0, "std": None}},
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"seeds": 3, "claims": claims}))
    rows = _rows(path)
    assert [r[0] for r in rows] == ["wide", "narrow"]
    half = 4.302653 * 1.43 / math.sqrt(3)  # t(2, 0.975)
    assert rows[0][1:] == ["2", "1.43", f"±{half:.1f}", f"{half:.1f}"]
    assert rows[1][3:] == ["±0.7", "1.0"]  # below MIN_EFFECT = 1 point: the minimum effect decides
    # more seeds, a narrower interval: t(4) = 2.776
    assert _rows(path, "--seeds", "5")[0][3] == f"±{2.776445 * 1.43 / math.sqrt(5):.1f}"
