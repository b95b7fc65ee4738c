"""`gsg reproduce --only`: train a part of an experiment, report every run finished so far; and the cpu scale's
precision per run (Table 4's contrastive rows in fp32, the cost model's fp32 price)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import gsg.reproduce.execute as execute
import gsg.reproduce.runner as runner
from gsg.cli import build_parser
from gsg.errors import ConfigError
from gsg.reproduce import estimate_seconds, get_experiment, plan_runs, reproduce
from gsg.reproduce.experiments.cost import CPU_COST, CPU_FP32_TRAIN_PER_IMAGE
from gsg.reproduce.plan import select_runs
from test_reproduce_prefix import TINY  # the same tiny runs as the prefix tests

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def one_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "default_jobs", lambda scale: 1)


def spy_pretrain(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the runs pretrained from now on, in order (each still trains)."""
    real = execute.pretrain
    trained: list[str] = []

    def spy(cfg: Any, *, resume: Any) -> dict[str, Any]:
        trained.append(Path(cfg.run.out).name)
        return real(cfg, resume=resume)

    monkeypatch.setattr(execute, "pretrain", spy)
    return trained


def test_select_runs_by_variant_name_or_key_in_plan_order(tmp_path: Path) -> None:
    plans = plan_runs(get_experiment("table1", "cpu"), 2, tmp_path)
    assert [p.key for p in select_runs(plans, None)] == [p.key for p in plans]
    assert [p.key for p in select_runs(plans, ["byol", "simsiam_gsg-s1"])] == ["simsiam_gsg-s1", "byol-s0",
                                                                               "byol-s1"]
    with pytest.raises(ConfigError, match=r"--only 'byol_gs' names no run.*did you mean 'byol_gsg'"):
        select_runs(plans, ["byol_gs"])


def test_only_trains_the_named_runs_and_reports_the_rest_as_missing(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "t1"
    trained = spy_pretrain(monkeypatch)
    res = reproduce("table1", scale="cpu", out=out, base_overrides=TINY, only=["simsiam_gsg"])
    assert trained == ["simsiam_gsg-s0"]
    assert res["complete"] is False and [r["key"] for r in res["runs"]] == ["simsiam_gsg-s0"]
    assert [m["key"] for m in res["missing"]] == ["simsiam-s0", "byol-s0", "byol_gsg-s0"]
    assert "--only simsiam_gsg" in res["command"]
    assert "**Incomplete: 1 of 4 runs finished.**" in (out / "results.md").read_text()
    # a second part: the first is reused from its done.json, not trained again, and both are reported
    res = reproduce("table1", scale="cpu", out=out, base_overrides=TINY, only=["simsiam-s0"])
    assert trained == ["simsiam_gsg-s0", "simsiam-s0"]
    assert [r["key"] for r in res["runs"]] == ["simsiam-s0", "simsiam_gsg-s0"]
    assert [m["key"] for m in res["missing"]] == ["byol-s0", "byol_gsg-s0"]


def test_cli_passes_only_through() -> None:
    args = build_parser().parse_args(["reproduce", "table4", "--only", "simclr_b512", "--only", "moco_q128-s0"])
    assert args.only == ["simclr_b512", "moco_q128-s0"]
    assert build_parser().parse_args(["reproduce", "table4"]).only is None


def test_table4_cpu_trains_the_contrastive_rows_in_fp32_and_the_gsg_rows_as_their_shared_runs(
        tmp_path: Path) -> None:
    exp = get_experiment("table4", "cpu")
    amp = {p.run.name: p.config.run.amp for p in plan_runs(exp, 1, tmp_path)}
    assert {n: a for n, a in amp.items() if n.startswith(("simclr", "moco"))} == {
        f"{m}{b}": "off" for m in ("simclr_b", "moco_q") for b in (512, 256, 128)}
    # the GSG rows share b=256 with Table 1 and the four-crop control, so they keep the scale's bf16
    assert {a for n, a in amp.items() if "_gsg" in n} == {"bf16"}
    table1 = {p.key: p.config.run.amp for p in plan_runs(get_experiment("table1", "cpu"), 1, tmp_path)}
    assert table1["simsiam_gsg-s0"] == "bf16"
    assert any("the SimCLR and MoCo v2 rows train in fp32" in n for n in exp.notes)


def test_the_cost_model_prices_fp32_training_at_its_measured_cost() -> None:
    kw: dict[str, Any] = {"knn_every": 0, "checkpoint_every": 100, "evals": ()}
    bf16 = estimate_seconds(1, 2560, 256, **kw) - CPU_COST["startup"] - CPU_COST["checkpoint"]
    fp32 = estimate_seconds(1, 2560, 256, amp="off", **kw) - CPU_COST["startup"] - CPU_COST["checkpoint"]
    assert bf16 == pytest.approx(2560 * CPU_COST["train_per_image"])
    assert fp32 == pytest.approx(2560 * CPU_FP32_TRAIN_PER_IMAGE)
    assert fp32 / bf16 == pytest.approx(4.1 / 2.6)
