"""gsg bench cpuscale: what it measures and reports (bf16 / compile step times, process layout), never its timings."""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch

from gsg.bench import BENCHES, cpuscale, format_report
from gsg.bench.steps import paired_ratio
from gsg.cli import main
from gsg.errors import ConfigError, GsgError
from gsg.train import loop

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def quick(one_thread: Any) -> dict[str, Any]:
    """One quick run with torch.compile replaced by a recording identity: the compiled variants take the
    bench's compile path (separately timed first steps, cache counts) without minutes of compilation."""
    compiled: list[object] = []

    def fake_compile(fn: Any) -> Any:
        compiled.append(fn)
        return fn

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop.torch, "compile", fake_compile)
        result = BENCHES["cpuscale"](quick=True, device="cpu")
    result["_compiled"] = compiled
    return result


def test_quick_run_times_the_four_variants_with_positive_finite_times(quick: dict[str, Any]) -> None:
    assert [r["variant"] for r in quick["tables"][cpuscale.STEPS_TABLE]] == [v[0] for v in cpuscale.VARIANTS]
    assert len(quick["_compiled"]) == 4  # model + augmentation of each of the two compiled variants
    opts = quick["options"]
    assert (opts["channels"], opts["image_size"], opts["threads"]) == (1, 16, 1)
    for name, ts in quick["raw"].items():
        assert len(ts) == opts["repeats"] and all(math.isfinite(t) and t > 0 for t in ts), name
    for row in quick["tables"][cpuscale.STEPS_TABLE]:
        assert row["first step s"] > 0 and row["second step s"] > 0
        assert (row["compile s"] is None) == (not row["compiled"])
        assert row["images/s"] == pytest.approx(opts["batch_size"] / (row["median step ms"] / 1000.0))


def test_ratios_are_medians_of_the_raw_times(quick: dict[str, Any]) -> None:
    raw = quick["raw"]
    med = {k: statistics.median(v) for k, v in raw.items()}
    assert quick["bf16_over_fp32"] == pytest.approx(med["bf16"] / med["fp32"])
    assert quick["compile_over_fp32"] == pytest.approx(med["fp32 + compile"] / med["fp32"])
    assert quick["bf16_compile_over_fp32"] == pytest.approx(med["bf16 + compile"] / med["fp32"])
    assert quick["bf16_over_fp32_paired"] == pytest.approx(paired_ratio(raw["bf16"], raw["fp32"])["median"])
    rows = {r["variant"]: r for r in quick["tables"][cpuscale.STEPS_TABLE]}
    assert rows["fp32"]["time ratio to fp32"] == 1.0
    assert rows["bf16"]["median step ms"] == pytest.approx(1000 * med["bf16"])


def test_first_step_losses_share_weights_batch_and_rng(quick: dict[str, Any]) -> None:
    rows = {r["variant"]: r for r in quick["tables"][cpuscale.STEPS_TABLE]}
    # the (stubbed, so eager) compiled fp32 variant repeats fp32's first step exactly: same start for all
    assert rows["fp32 + compile"]["loss − fp32"] == 0.0 and quick["compile_first_step_loss_diff"] == 0.0
    assert rows["bf16 + compile"]["first-step loss"] == rows["bf16"]["first-step loss"]
    # bf16 autocast really ran: a different, still finite and small loss
    diff = quick["bf16_first_step_loss_diff"]
    assert diff == rows["bf16"]["first-step loss"] - rows["fp32"]["first-step loss"]
    assert diff != 0.0 and abs(diff) < 0.5


def test_two_process_layout_ran_two_concurrent_single_thread_processes(quick: dict[str, Any]) -> None:
    runs = {r["layout"]: r for r in quick["runs"]}
    assert set(runs) == {"1 process x 2 threads", "2 processes x 1 thread"}
    one, two = runs["1 process x 2 threads"], runs["2 processes x 1 thread"]
    assert [r["threads"] for r in one["records"]] == [2] and [r["threads"] for r in two["records"]] == [1, 1]
    pids = [r["pid"] for r in one["records"] + two["records"]]
    assert len(set(pids)) == 3 and os.getpid() not in pids
    a, b = two["records"]
    assert a["start"] < b["end"] and b["start"] < a["end"]  # their timed windows overlap: side by side
    steps, batch = quick["options"]["layout_steps"], quick["options"]["batch_size"]
    for run in (one, two):
        assert all(r["steps"] == steps and r["losses_finite"] for r in run["records"])
        assert run["images"] == steps * batch * run["processes"]
        assert run["wall_s"] == pytest.approx(max(r["end"] for r in run["records"]) -
                                              min(r["start"] for r in run["records"]))
        assert run["images_per_s"] == pytest.approx(run["images"] / run["wall_s"]) and run["wall_s"] > 0
    assert quick["two_single_over_one_double"] == pytest.approx(two["images_per_s"] / one["images_per_s"])
    rows = {r["layout"]: r for r in quick["tables"][cpuscale.LAYOUT_TABLE]}
    assert rows["2 processes x 1 thread"]["throughput ratio to 1 process"] == pytest.approx(
        quick["two_single_over_one_double"])


def test_layout_summary_from_given_runs() -> None:
    def run(layout: str, rnd: int, ips: float) -> dict[str, Any]:
        return {"layout": layout, "round": rnd, "wall_s": 1.0, "images_per_s": ips,
                "records": [{"steps": 3, "images_per_s": ips}]}

    one, two = "1 process x 2 threads", "2 processes x 1 thread"
    runs = [run(one, 0, 100.0), run(two, 0, 150.0), run(two, 1, 90.0), run(one, 1, 60.0),
            run(one, 2, 80.0), run(two, 2, 200.0)]
    rows, head = cpuscale.layout_summary(runs, 2)
    assert head["two_single_over_one_double"] == pytest.approx(150.0 / 80.0)  # medians 150 and 80
    assert head["two_single_over_one_double_per_round_median"] == pytest.approx(1.5)  # of 1.5, 1.5, 2.5
    assert rows[0]["images/s"] == 80.0 and rows[1]["throughput ratio to 1 process"] == pytest.approx(150 / 80)


def test_report_renders_every_table_and_field(quick: dict[str, Any]) -> None:
    res = {k: v for k, v in quick.items() if k != "_compiled"}
    text = format_report("cpuscale", res)
    assert text.startswith("### gsg bench cpuscale") and res["machine"]["cpu"] in text
    for title in (cpuscale.STEPS_TABLE, cpuscale.LAYOUT_TABLE):
        assert title in text
    for key in ("bf16_over_fp32", "compile_over_fp32", "two_single_over_one_double", "bf16_support.onednn_bf16"):
        assert f"- {key}: " in text
    assert json.loads(json.dumps(res, default=str))["options"]["quick"] is True


def test_cli_runs_cpuscale_and_names_its_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cpuscale.json"
    assert main(["bench", "cpuscale", "--device", "cpu", "--quick", "--set", "compile=false",
                 "--set", "layout=false", "--set", "channels=3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert cpuscale.STEPS_TABLE in printed and cpuscale.LAYOUT_TABLE not in printed
    result = json.loads(out.read_text())
    assert set(result["raw"]) == {"fp32", "bf16"} and result["images"] == "synthetic, 3 x 16 x 16"
    assert main(["bench", "cpuscale", "--device", "cpu", "--set", "layout_thread=2"]) == 2
    assert "did you mean layout_threads?" in capsys.readouterr().err


def test_bad_options_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="--device cpu"):
        cpuscale.run(device="cuda")
    with pytest.raises(ConfigError, match="layout_threads"):
        cpuscale.run(quick=True, layout_threads=1)
    with pytest.raises(ConfigError, match="amp"):  # the layout's config is checked before part 1 runs
        cpuscale.run(quick=True, layout_amp="fp8")


def test_a_failing_layout_process_raises_instead_of_hanging(tmp_path: Path) -> None:
    spec = {"sizes": {**cpuscale.model_sizes(True), "channels": 2}, "amp": "off", "compile": False, "seed": 0,
            "steps": 1, "warmup": 1, "out": str(tmp_path), "timeout_s": 120.0}
    with pytest.raises(GsgError, match="channels must be 1 or 3"):
        cpuscale.run_layout(1, 1, spec)
    assert torch.get_num_threads() == 1
