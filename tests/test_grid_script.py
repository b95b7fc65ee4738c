"""docs/experiments/reproduce_cpu2.sh, the cpu-scale grid: valid bash, experiments that exist, two lanes that go
on to the next experiment (--no-wait) rather than idle, and a final pass that writes every page."""

from __future__ import annotations

import os
import re
import subprocess
import sys
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



def test_a_deadline_is_read_once_and_given_to_every_lane_and_the_last_pass() -> None:
    text = SCRIPT.read_text()
    lanes = text[text.index("lane() {"):text.index("export OMP_NUM_THREADS")]
    final = text[text.rindex("wait\n"):]
    assert '"${until[@]}"' in lanes and '"${until[@]}"' in final
    block = re.search(r"^until=\(\)\n.*?^fi\n", text, re.S | re.M)
    assert block is not None
    script = "set -euo pipefail\n" + block.group(0) + 'echo "flags:${until[*]:-}"\n'

    def until(deadline: str | None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "DEADLINE"}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this python, with gsg
        if deadline is not None:
            env["DEADLINE"] = deadline
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env)

    relative = until("+90")
    assert relative.returncode == 0, relative.stderr
    flags = relative.stdout.rsplit("flags:", 1)[1].split()
    assert flags[0] == "--deadline"  # an absolute time, so that every later call shares it
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d", flags[1])
    assert until(None).stdout == "flags:\n"  # no DEADLINE: an empty array, so the calls get no flag
    bad = until("soon")
    assert bad.returncode != 0 and "is not a time" in bad.stderr
