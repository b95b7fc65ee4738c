"""docs/experiments/reproduce_cpu2.sh, the cpu-scale grid: valid bash, experiments that exist, two lanes that go
on to the next experiment (--no-wait) rather than idle, and a final pass that writes every page."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from gsg.reproduce import EXPERIMENTS

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "experiments" / "reproduce_cpu2.sh"


def test_the_grid_script_parses_and_names_real_experiments() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    text = SCRIPT.read_text()
    names = re.search(r"^EXPERIMENTS=\((.*)\)$", text, re.M)
    assert names is not None
    listed = names.group(1).split()
    assert listed[0] == "crops" and set(listed) == set(EXPERIMENTS)  # the control first; none left out
    lanes = text[text.index("lane() {"):text.index("export OMP_NUM_THREADS")]
    assert "--no-wait" in lanes and "--jobs 1" in lanes
    assert text.count("lane > ") == 2 and "wait\n" in text  # two lanes, then the final pass
    final = text[text.rindex("wait\n"):]
    assert "gsg reproduce" in final and "--no-wait" not in final  # the last pass waits and writes every page
