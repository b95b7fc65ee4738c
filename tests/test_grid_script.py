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


def test_without_native_bf16_the_lanes_train_only_the_fp32_runs() -> None:
    text = SCRIPT.read_text()
    assert 'bf16_support()["onednn_bf16"]' in text
    # the script's own lister, run as the lanes run it: Table 4's contrastive rows; nothing for a bf16 experiment
    lister = re.search(r"<<'PY'\n(.*?)\nPY\n", text, re.S)
    assert lister is not None

    def listed(exp: str, seeds: str) -> str:
        return subprocess.run(["python", "-c", lister.group(1), exp, seeds], check=True, capture_output=True,
                              text=True).stdout.strip()

    assert listed("table4", "1").split(" --only ") == ["--only simclr_b512-s0", "simclr_b256-s0", "simclr_b128-s0",
                                                       "moco_q512-s0", "moco_q256-s0", "moco_q128-s0"]
    assert listed("crops", "3") == ""
    # ... and the last pass only reports there, instead of training the bf16 runs left
    final = text[text.rindex("wait\n"):]
    assert '[ "$ONLY_FP32" = 1 ] && last=(--report-only)' in final and '"${last[@]}"' in final
