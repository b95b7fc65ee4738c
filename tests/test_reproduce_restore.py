"""gsg.reproduce.restore: a fresh machine rebuilds finished runs from their committed metrics, and gsg reproduce
then reuses them instead of training them again; a copy that does not match its plan is left to train."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from gsg.errors import ConfigError
from gsg.reproduce import baselines, execute, runner
from gsg.reproduce.experiments import get_experiment
from gsg.reproduce.experiments.base import LinearDef
from gsg.reproduce.restore import epoch_history, restore_baselines, restore_runs
from gsg.reproduce.runner import plan_runs
from test_reproduce_prefix import TINY  # the same tiny runs as the prefix tests

pytestmark = pytest.mark.usefixtures("one_thread")

LINEAR = LinearDef(mode="features", epochs=1)


def _plans(tmp: Path, **base: Any) -> list[runner.PlannedRun]:
    over = {k: {**v, **base.get(k, {})} for k, v in TINY.items()}
    plans = plan_runs(get_experiment("crops", "cpu"), 1, tmp / "out", base_overrides=over, runs_dir=tmp / "runs")
    return [p for p in plans if p.run.name == "simsiam_sym2"]


def _commit(plan: runner.PlannedRun, rec: dict[str, Any], docs: Path) -> Path:
    """What docs/experiments/progress.py commits of a finished run."""
    dest = docs / plan.key
    dest.mkdir(parents=True)
    for name in ("metrics.jsonl", "command.txt"):
        shutil.copy2(plan.dir / name, dest / name)
    (dest / "evals.json").write_text(json.dumps({"evals": rec["evals"], "times": rec["times"]}))
    return dest


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("restore")
    (plan,) = _plans(tmp)
    (rec,) = runner.run_all(get_experiment("crops", "cpu"), [plan], linear=LINEAR, tsne=None, out=tmp / "out")
    assert rec["status"] == "ok" and "top1" in rec["evals"]["linear"]
    _commit(plan, rec, tmp / "docs")
    return tmp, rec


def test_a_restored_run_is_reused_with_its_history_and_evaluations_not_trained(
        trained: tuple[Path, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp, rec = trained
    runs = tmp_path / "runs"
    shutil.copytree(tmp / "docs", tmp_path / "docs")
    # the fresh machine: the same plan, an empty runs directory (the command names the same --out, so the
    # plans are made against the original runs path, then the directory is emptied)
    (plan,) = _plans(tmp)
    shutil.rmtree(tmp / "runs")
    assert restore_runs(get_experiment("crops", "cpu"), [plan], tmp_path / "docs") == [plan.key]
    assert restore_runs(get_experiment("crops", "cpu"), [plan], tmp_path / "docs") == []  # idempotent
    assert not (plan.dir / "checkpoint.pt").exists() and not runs.exists()

    def no_training(*_: Any, **__: Any) -> None:
        raise AssertionError("a restored run must not be trained again")

    monkeypatch.setattr(execute, "pretrain", no_training)
    (again,) = runner.run_all(get_experiment("crops", "cpu"), [plan], linear=LINEAR, tsne=None, out=tmp / "out")
    assert again["how"] == "reused" and again["restored_from"] == str(tmp_path / "docs" / plan.key)
    assert again["evals"] == rec["evals"]
    assert again["history"] == rec["history"] and again["final"] == rec["final"]
    assert [h["epoch"] for h in again["history"]] == [1, 2]
    # an evaluation it lacks (a probe of other settings) cannot be computed without weights: a clear error, and
    # the restored record is kept as it was
    with pytest.raises(ConfigError, match=r"without its checkpoint.*\(linear\); delete .* to train it again"):
        runner.run_all(get_experiment("crops", "cpu"), [plan], linear=LinearDef(mode="features", epochs=2),
                       tsne=None, out=tmp / "out")
    assert json.loads((plan.dir / "done.json").read_text())["evals"] == rec["evals"]


def test_a_copy_that_does_not_match_its_plan_is_left_to_train(trained: tuple[Path, dict[str, Any]],
                                                                 tmp_path: Path) -> None:
    tmp, _ = trained
    exp = get_experiment("crops", "cpu")
    src = tmp / "docs"
    (plan,) = _plans(tmp_path)  # another runs directory: its command names another --out
    docs = tmp_path / "docs"
    shutil.copytree(src / _plans(tmp)[0].key, docs / plan.key)
    assert restore_runs(exp, [plan], docs) == []  # the command differs
    (other,) = _plans(tmp, optim={"epochs": 3})  # same directory, another epoch count
    assert other.key == plan.key and restore_runs(exp, [other], src) == []
    # the matching plan, but its metrics cut short, or an evaluation missing
    (same,) = _plans(tmp)
    shutil.rmtree(tmp / "runs", ignore_errors=True)  # nothing there, so that only the copy decides
    cut = tmp_path / "cut"
    shutil.copytree(src, cut)
    lines = (cut / same.key / "metrics.jsonl").read_text().splitlines()
    (cut / same.key / "metrics.jsonl").write_text("\n".join(x for x in lines if '"epoch": 2,' not in x
                                                            or '"kind": "epoch"' not in x) + "\n")
    assert len(epoch_history(cut / same.key / "metrics.jsonl")) == 1
    assert restore_runs(exp, [same], cut) == []
    shutil.copy2(src / same.key / "metrics.jsonl", cut / same.key / "metrics.jsonl")
    saved = json.loads((cut / same.key / "evals.json").read_text())
    del saved["evals"]["linear"]
    (cut / same.key / "evals.json").write_text(json.dumps(saved))
    assert restore_runs(exp, [same], cut) == []
    assert not (same.dir / "done.json").exists()
    assert restore_runs(exp, [same], src) == [same.key]  # the intact copy is restored


def test_baselines_restored_from_a_page_are_found_under_the_key_gsg_reproduce_looks_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (plan,) = _plans(tmp_path)
    proto = dataclasses.asdict(baselines.baseline_protocol(plan, LINEAR, 0.1))
    rec = {"protocol": json.loads(json.dumps(proto, default=str)), "command": "gsg baselines ...", "seconds": 1.0,
           "results": {"raw_pixels": {"knn_k200": 81.78}, "random_init": {"knn_k200": 74.61}}}
    page = tmp_path / "page" / "results.json"
    page.parent.mkdir()
    page.write_text(json.dumps({"baselines": rec}))
    written = restore_baselines([page, page], tmp_path / "runs")
    assert len(written) == 1 and written[0].parent == tmp_path / "runs" / "baselines"

    def no_eval(*_: Any, **__: Any) -> None:
        raise AssertionError("restored baselines must not be measured again")

    monkeypatch.setattr(baselines, "evaluate_baselines", no_eval)
    got = baselines.experiment_baselines([plan], LINEAR, tmp_path / "runs", "cpu")
    assert got["results"]["raw_pixels"]["knn_k200"] == 81.78
    # another protocol (no linear probe) is not taken for this one
    with pytest.raises(AssertionError, match="measured again"):
        baselines.experiment_baselines([plan], None, tmp_path / "runs", "cpu")
