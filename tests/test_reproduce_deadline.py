"""`gsg reproduce --deadline`: start only the runs the cost model says end in time, report the rest as still to do;
and the cost model's remaining-epochs and momentum-target prices that the check relies on."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import gsg.reproduce.execute as execute
import gsg.reproduce.runner as runner
from gsg.cli import build_parser
from gsg.errors import ConfigError
from gsg.reproduce import estimate_seconds, get_experiment, plan_runs, reproduce
from gsg.reproduce.deadline import fits, pack, parse_deadline
from gsg.reproduce.experiments.cost import CPU_COST, MOMENTUM_TARGET_FACTOR
from gsg.reproduce.plan import estimate
from test_reproduce_only import spy_pretrain
from test_reproduce_prefix import TINY

pytestmark = pytest.mark.usefixtures("one_thread")

NOW = datetime(2026, 12, 3, 14, 0, tzinfo=timezone(timedelta(hours=1)))


@pytest.fixture(autouse=True)
def one_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "default_jobs", lambda scale: 1)


@pytest.mark.parametrize(("text", "minutes"), [("+150", 150), ("+90m", 90), ("+2h", 120), ("+1h30m", 90),
                                               ("+1h", 60), ("16:20", 140), ("2026-12-03T15:00+01:00", 60),
                                               ("2026-12-03T14:00:00+00:00", 60)])
def test_parse_deadline_reads_relative_clock_and_iso_times(text: str, minutes: int) -> None:
    assert parse_deadline(text, NOW) - NOW == timedelta(minutes=minutes)


def test_parse_deadline_reads_a_naive_iso_time_as_local_time() -> None:
    now = datetime(2026, 12, 3, 14, 0).astimezone()
    assert parse_deadline("2026-12-04T06:00", now) == datetime(2026, 12, 4, 6, 0).astimezone()


@pytest.mark.parametrize(("text", "match"), [
    ("13:59", r"'13:59' \(2026-12-03T13:59\+01:00\) has already passed.*2026-12-04T13:59"),
    ("2026-12-02T20:00+01:00", "has already passed"),
    ("+0", "has already passed"),
    ("soon", r"'soon' is not a time; give \+MINUTES"),
    ("+", "is not a time"),
    ("25:00", "'25:00' is not a time of day"),
])
def test_parse_deadline_rejects_passed_and_unreadable_times(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_deadline(text, NOW)


def test_pack_fills_each_lane_greedily_and_skips_what_would_end_late() -> None:
    est = {"a": 60.0, "b": 50.0, "c": 30.0, "d": 45.0}
    assert fits(40.0, 60.0, 100.0) and not fits(40.1, 60.0, 100.0)
    assert pack(est, ["a", "b", "c", "d"], lanes=1, seconds_left=100.0) == ["a", "c"]
    # two lanes: a and b start at once, c follows b (ends at 80), d would end at 105 on a's lane
    assert pack(est, ["a", "b", "c", "d"], lanes=2, seconds_left=100.0) == ["a", "b", "c"]
    assert pack(est, ["a", "b", "c", "d"], lanes=2, seconds_left=10.0) == []


def test_the_estimate_counts_only_the_epochs_a_checkpoint_has_left(tmp_path: Path) -> None:
    exp = get_experiment("table1", "cpu")
    plan = next(p for p in plan_runs(exp, 1, tmp_path) if p.key == "simsiam-s0")
    full, half, none = (estimate(exp, plan, done_epochs=e) for e in (0, 6, 12))
    assert full is not None and half is not None and none is not None
    fixed = none  # start-up and the final evaluations: paid however many epochs are left
    assert half - fixed == pytest.approx((full - fixed) / 2, rel=0.02)
    assert estimate(exp, plan, done_epochs=20) == pytest.approx(fixed)


def test_momentum_target_methods_pay_for_the_target_encoder() -> None:
    kw: dict[str, Any] = {"knn_every": 0, "checkpoint_every": 100, "evals": ()}
    fixed = CPU_COST["startup"] + CPU_COST["checkpoint"]
    simsiam = estimate_seconds(1, 2560, 256, **kw) - fixed
    for method in ("byol", "moco"):
        assert estimate_seconds(1, 2560, 256, method=method, **kw) - fixed == pytest.approx(
            MOMENTUM_TARGET_FACTOR * simsiam)
    assert estimate_seconds(1, 2560, 256, method="simclr", **kw) - fixed == pytest.approx(simsiam)


def _patch_estimates(monkeypatch: pytest.MonkeyPatch, seconds: dict[str, float]) -> None:
    def fake(exp: Any, plan: Any, source: Any = None, done_epochs: int = 0) -> float:
        return seconds.get(plan.run.name, 1.0)

    monkeypatch.setattr(execute, "estimate", fake)
    monkeypatch.setattr(runner, "estimate", fake)


def test_deadline_starts_only_the_runs_that_end_in_time_and_reports_the_rest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _patch_estimates(monkeypatch, {"byol": 3 * 3600.0})  # BYOL would take 3 hours, the rest a second
    trained = spy_pretrain(monkeypatch)
    out = tmp_path / "t1"
    deadline = datetime.now().astimezone() + timedelta(hours=2)
    dry = reproduce("table1", scale="cpu", out=out, base_overrides=TINY, deadline=deadline, dry_run=True)
    assert dry["deadline"]["starts"] == ["simsiam-s0", "simsiam_gsg-s0", "byol_gsg-s0"]
    assert dry["deadline"]["left_out"] == ["byol-s0"]
    assert [r["starts"] for r in dry["runs"]] == [True, True, False, True]
    assert "would not start before the deadline" in dry["commands_md"] and trained == []
    res = reproduce("table1", scale="cpu", out=out, base_overrides=TINY, deadline=deadline)
    assert trained == ["simsiam-s0", "simsiam_gsg-s0", "byol_gsg-s0"]
    assert res["complete"] is False and [m["key"] for m in res["missing"]] == ["byol-s0"]
    assert "--deadline" not in res["command"]  # a scheduling choice, not part of the reproduction
    assert "**Incomplete: 3 of 4 runs finished.**" in (out / "results.md").read_text()


def test_deadline_skips_a_run_that_continues_one_it_left_out(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # simsiam_sym2x2 continues simsiam_sym2 after its epochs (gsg.reproduce.prefix): without it, it cannot start
    _patch_estimates(monkeypatch, {"simsiam_sym2": 3 * 3600.0})
    trained = spy_pretrain(monkeypatch)
    deadline = time.time() + 3600.0
    plans = [p for p in plan_runs(get_experiment("crops", "cpu"), 1, tmp_path, base_overrides=TINY)
             if p.run.name in ("simsiam_sym2", "simsiam_sym2x2")]
    assert [p.key for p in plans] == ["simsiam-s0", "simsiam_sym2x2-s0"]
    exp = get_experiment("crops", "cpu")
    records = execute.run_all(exp, plans, linear=None, tsne=None, out=tmp_path / "out", deadline=deadline)
    assert records == [] and trained == []
    assert all(not (p.dir / "done.json").exists() and not (p.dir / "lock").exists() for p in plans)


def test_deadline_is_refused_at_full_scale_and_passed_through_by_the_cli(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--deadline needs the cpu scale's cost model"):
        reproduce("table1", scale="full", out=tmp_path, deadline="+60", dry_run=True)
    args = build_parser().parse_args(["reproduce", "table4", "--deadline", "+150"])
    assert args.deadline == "+150"
    assert build_parser().parse_args(["reproduce", "table4"]).deadline is None


def test_helpers_get_the_same_absolute_deadline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[list[str]] = []

    class FakePopen:
        pid = 1

        def __init__(self, cmd: list[str], **kw: Any) -> None:
            started.append(cmd)

    monkeypatch.setattr(runner.subprocess, "Popen", FakePopen)
    until = parse_deadline("+45")
    runner._start_helpers("table1", "cpu", 1, tmp_path, "cpu", None, tmp_path / "runs", 3, deadline=until)
    assert len(started) == 2
    for cmd in started:
        assert "--worker" in cmd and cmd[cmd.index("--deadline") + 1] == until.isoformat()
        assert parse_deadline(cmd[cmd.index("--deadline") + 1]) == until  # read back as the same time
