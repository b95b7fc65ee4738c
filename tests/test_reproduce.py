"""`gsg reproduce`: experiments as data, skip/resume of runs, aggregation over seeds, reports and commands.

The end-to-end tests run the real definitions shrunk by ``base_overrides`` (synthetic 16-px images, a
width-1/8 ResNet-18, 2 epochs), so they exercise exactly the code path of a real reproduction.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

import pytest

import gsg.reproduce.execute as execute
import gsg.reproduce.runner as runner
from gsg.checkpoint import load_checkpoint
from gsg.cli import _overrides, build_parser
from gsg.config import load_config
from gsg.errors import ConfigError
from gsg.reproduce import EXPERIMENTS, SCALES, full_scale_launch, get_experiment, mean_std, plan_runs, reproduce
from gsg.reproduce.experiments import CPU_COST, CPU_COST_SLOW, CPU_RUN_BUDGET_S, CPU_TRAIN_IMAGES, estimate_seconds
from gsg.reproduce.experiments.table4 import TABLE4_RANGE_NOISE
from gsg.reproduce.report import results_table, seeds_section

TINY: dict[str, dict[str, Any]] = {
    "data": {"dataset": "synthetic", "image_size": 16, "subset": 64},
    "model": {"width": 0.125, "proj_dim": 32, "pred_hidden": 16},
    "optim": {"epochs": 2, "batch_size": 16},
    "run": {"device": "cpu", "knn_every": 1, "knn_train_subset": 256, "knn_test_subset": 128,
            "tensorboard": False, "checkpoint_every": 1},
    "reproduce": {"linear_epochs": 2, "linear_train_subset": 128, "tsne_max_points": 60},
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


DEFAULT_JOBS = runner.default_jobs


@pytest.fixture(autouse=True)
def one_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """One process unless a test asks for --jobs: a helper process would not see the tests' monkeypatches."""
    monkeypatch.setattr(runner, "default_jobs", lambda scale: 1)


pytestmark = pytest.mark.usefixtures("one_thread")


def _history(run_dir: Path) -> list[dict[str, Any]]:
    return load_checkpoint(run_dir / "checkpoint.pt")["metrics"]["history"]


def test_table1_end_to_end_skips_finished_runs_and_resumes_an_interrupted_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "t1"
    real = execute.pretrain

    def interrupted_last_run(cfg: Any, *, resume: Any) -> dict[str, Any]:
        if Path(cfg.run.out).name == "byol_gsg-s0":
            cfg.optim.epochs = 1  # one of its two epochs, then the machine goes down
            real(cfg, resume=resume)
            raise KeyboardInterrupt
        return real(cfg, resume=resume)

    monkeypatch.setattr(execute, "pretrain", interrupted_last_run)
    with pytest.raises(KeyboardInterrupt):
        reproduce("table1", scale="cpu", out=out, base_overrides=TINY)
    runs = out / "runs"
    assert sorted(p.parent.name for p in runs.glob("*/done.json")) == ["byol-s0", "simsiam-s0", "simsiam_gsg-s0"]
    partial = _history(runs / "byol_gsg-s0")
    assert [h["epoch"] for h in partial] == [1]
    assert json.loads((out / "results.json").read_text())["complete"] is False  # partial results are readable

    # --report-only: a page from the 3 finished runs, training nothing, saying what is missing
    def no_training(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("--report-only trained a run")

    monkeypatch.setattr(execute, "pretrain", no_training)
    early = reproduce("table1", scale="cpu", out=out, base_overrides=TINY, report_only=True)
    assert early["complete"] is False and [m["key"] for m in early["missing"]] == ["byol_gsg-s0"]
    assert [r["key"] for r in early["runs"]] == ["simsiam-s0", "simsiam_gsg-s0", "byol-s0"]
    assert list(early["variants"]) == ["simsiam", "simsiam_gsg", "byol"]
    verdicts = {c["claim"]: c["verdict"] for c in early["claims"]}
    assert [v for c, v in verdicts.items() if "BYOL" in c] == ["n/a"] * 2  # BYOL w/ GSG has not run
    early_md = (out / "results.md").read_text()
    assert "**Incomplete: 3 of 4 runs finished.**" in early_md and "BYOL w/ GSG (seed 0)" in early_md
    assert "### Baselines under the same protocol" in early_md
    assert [h["epoch"] for h in _history(runs / "byol_gsg-s0")] == [1]  # the unfinished run was not touched
    monkeypatch.setattr(execute, "pretrain", interrupted_last_run)

    trained: list[str] = []

    def only_unfinished(cfg: Any, *, resume: Any) -> dict[str, Any]:
        name = Path(cfg.run.out).name
        assert name == "byol_gsg-s0", f"the finished run {name} was trained again"
        assert resume == "auto"
        trained.append(name)
        return real(cfg, resume=resume)

    monkeypatch.setattr(execute, "pretrain", only_unfinished)
    res = reproduce("table1", scale="cpu", out=out, base_overrides=TINY)
    assert trained == ["byol_gsg-s0"]
    done = json.loads((runs / "byol_gsg-s0" / "done.json").read_text())
    assert [h["epoch"] for h in done["history"]] == [1, 2]  # continued, not restarted
    # the final kNN is the full protocol: the whole train and test splits, not the online monitor's subsets
    knn = done["evals"]["knn"]
    assert knn["settings"]["protocol"] == "full splits" and knn["train_size"] > TINY["run"]["knn_train_subset"]
    assert done["history"][0]["loss"] == pytest.approx(partial[0]["loss"])
    assert done["times"]["resumed_from_epoch"] == 1
    how = {r["key"]: r["how"] for r in res["runs"]}
    assert how == {"simsiam-s0": "reused", "simsiam_gsg-s0": "reused", "byol-s0": "reused",
                   "byol_gsg-s0": "resumed from epoch 1"}
    # its pretraining time counts the epoch trained before the resume too, by the epochs' own clocks
    resumed = next(r for r in res["runs"] if r["key"] == "byol_gsg-s0")
    assert resumed["pretrain_s"] == pytest.approx(sum(h["epoch_time_s"] for h in done["history"]))
    assert resumed["pretrain_s"] > done["history"][0]["epoch_time_s"] > 0

    # results.json: every run, the aggregated metrics and the paper's numbers
    saved = json.loads((out / "results.json").read_text())
    # the baselines of the same protocol, measured once and kept beside the runs
    base = saved["baselines"]["results"]
    assert set(base) == {"raw_pixels", "random_init"} and len(base["random_init"]["seeds"]) == 3
    assert all(0 < base[b]["knn_k200"] <= 100 and "linear_top1" in base[b] for b in base)
    assert len(list((runs / "baselines").glob("*.json"))) == 1
    md = (out / "results.md").read_text()
    assert "### Baselines under the same protocol" in md and "| raw pixels |" in md
    assert saved["complete"] is True and saved["experiment"] == "table1" and saved["scale"] == "cpu"
    assert list(saved["variants"]) == ["simsiam", "simsiam_gsg", "byol", "byol_gsg"]
    for v in saved["variants"].values():
        assert v["metrics"]["knn"]["n"] == 1 and 0 <= v["metrics"]["knn"]["mean"] <= 100
        assert v["metrics"]["linear"]["n"] == 1 and 0 <= v["metrics"]["linear"]["mean"] <= 100
        assert v["curve"]["knn"]["epoch"] == [1, 2]
    assert saved["paper"]["table1"]["simsiam_gsg"]["cifar10_knn"] == [82.2, 0.48]
    assert len(saved["claims"]) == 4 and {c["verdict"] for c in saved["claims"]} <= {
        "holds", "does not hold (reversed)", "no difference that counts"}
    assert saved["timing"]["wall_s"] > 0 and saved["timing"]["compute_s"] > 0

    # results.md: the paper's layout with a paper column, and who measured what
    md = (out / "results.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Algorithm"))
    assert "paper CIFAR-10: kNN (k=1)" in header and "paper ImageNet: linear" in header and "linear" in header
    assert "| SimSiam w/ GSG |" in md and "82.2 ± 0.48" in md and "86.4 ± 0.28" in md and "62.2 ± 0.06" in md
    assert "ours, synthetic: kNN (k=1)" in header  # our columns name the dataset the runs trained on
    assert "not comparable" in md and "**Runtime:**" in md and "wall-clock" in md
    # plots: PNG files in the paper's style, linked from results.md
    pngs = [Path(p) for p in saved["plots"]]
    assert pngs and all(p.read_bytes()[:8] == PNG_MAGIC for p in pngs)
    assert all(f"]({p.name})" in md for p in pngs)
    # commands.md: the whole reproduction + one exact gsg pretrain per run, with the linear probe
    cmds = (out / "commands.md").read_text()
    assert "gsg reproduce table1 --scale cpu --seeds 1 --out" in cmds
    assert cmds.count("gsg pretrain ") == 4 and cmds.count("gsg linear ") == 4 and "--mode features" in cmds

    # a third call trains nothing and evaluates nothing: every run is finished
    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a finished run was recomputed")

    monkeypatch.setattr(execute, "pretrain", never)
    monkeypatch.setattr(execute, "linear_evaluate", never)
    again = reproduce("table1", scale="cpu", out=out, base_overrides=TINY)
    assert again["variants"]["byol_gsg"]["metrics"] == res["variants"]["byol_gsg"]["metrics"]

    # t-SNE uses the same runs as Table 1: given Table 1's runs directory only the panels are computed, and
    # its report goes to its own --out (Table 1's results.md stays)
    tout = tmp_path / "tsne"
    table1_md = (out / "results.md").read_text()
    tsne = reproduce("tsne", scale="cpu", out=tout, runs_dir=runs, base_overrides=TINY)
    panels = tout / "tsne_panels.png"
    assert panels.read_bytes()[:8] == PNG_MAGIC and str(panels) in tsne["plots"]
    assert sorted(p.name for p in (tout / "tsne").glob("*.png")) == [
        "byol-s0.png", "byol_gsg-s0.png", "simsiam-s0.png", "simsiam_gsg-s0.png"]
    assert "| (b) | SimSiam w/ GSG | tsne/simsiam_gsg-s0.png |" in (tout / "results.md").read_text()
    assert (out / "results.md").read_text() == table1_md and not (out / "tsne").exists()
    assert f"--runs {runs}" in tsne["command"] and not list(runs.glob("*/lock"))

    # a finished run made with another config is not silently reused
    other = {**TINY, "optim": {**TINY["optim"], "epochs": 3}}
    with pytest.raises(ConfigError, match=r"optim\.epochs"):
        reproduce("table1", scale="cpu", out=out, base_overrides=other)


def test_experiments_sharing_a_runs_directory_train_their_common_runs_once(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    plans = {e: {p.run.name: p for p in plan_runs(get_experiment(e, "cpu"), 1, tmp_path / e, runs_dir=runs)}
             for e in ("table1", "fig4", "table4", "directpred", "tsne", "fig5")}
    same = [("fig4", "simsiam_gsg", "simsiam_gsg"), ("tsne", "byol", "byol"),
            ("table4", "simsiam_gsg_b256", "simsiam_gsg"), ("table4", "byol_gsg_b256", "byol_gsg")]
    for exp, name, t1 in same:
        a, b = plans[exp][name], plans["table1"][t1]
        assert a.dir == b.dir == runs / f"{t1}-s0"
        assert runner._config_diffs(b.config.to_dict(), a.config.to_dict()) == []
        assert a.run.label != b.run.label or exp in ("fig4", "tsne")  # each report keeps its own row names
    # what differs trains apart: Table 4's other batches and its SimCLR / MoCo rows, DirectPred's runs (no
    # projector output BN, Tian et al.'s regime), Fig. 5's runs
    dirs = [p.dir for e in plans.values() for p in e.values()]
    assert len(set(dirs)) == 28
    assert {p.config.model.proj_last_bn for p in plans["directpred"].values()} == {"none"}
    assert plans["table4"]["byol_gsg_b128"].config.optim.batch_size == 128
    assert plans["directpred"]["byol_directpred"].config.model.directpred_rho == 0.3


def _held_by_another_process(run_dir: Path) -> Path:
    """The run's lock, as a live process on this host (our parent) holds it."""
    lock = run_dir / "lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": os.getppid(), "host": os.uname().nodename}))
    return lock


def _fake_record(order: list[str]) -> Any:
    def run(exp: Any, plan: Any, **kwargs: Any) -> dict[str, Any]:
        assert (plan.dir / "lock").is_file()  # trained under its lock
        order.append(plan.key)
        return {"key": plan.key, "name": "from another experiment", "label": "x", "group": "x"}
    return run


def test_run_all_puts_off_a_run_another_process_is_training(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    exp = get_experiment("table1", "cpu")
    plans = plan_runs(exp, 1, tmp_path, base_overrides=TINY)
    first = _held_by_another_process(plans[0].dir)
    order: list[str] = []
    monkeypatch.setattr(execute, "_run_one_locked", _fake_record(order))
    slept: list[float] = []

    def other_process_finishes(seconds: float) -> None:
        slept.append(seconds)
        first.unlink()

    monkeypatch.setattr(execute.time, "sleep", other_process_finishes)
    # without waiting: its own share first, then it leaves, naming the run it left, whose lock stays
    with pytest.raises(execute.LeftToOthers) as left:
        runner.run_all(exp, plans, linear=None, tsne=None, out=tmp_path, wait=False)
    assert order == ["simsiam_gsg-s0", "byol-s0", "byol_gsg-s0"] and not slept
    assert left.value.keys == ["simsiam-s0"] and "simsiam-s0" in str(left.value) and first.is_file()
    # waiting (the default): put off, waited for only when nothing else is left, then done
    order.clear()  # the fake runs wrote no done.json: all four train again
    records = runner.run_all(exp, plans, linear=None, tsne=None, out=tmp_path)
    assert order == ["simsiam_gsg-s0", "byol-s0", "byol_gsg-s0", "simsiam-s0"]
    assert len(slept) == 1
    assert [r["key"] for r in records] == [p.key for p in plans]  # plan order
    assert [r["name"] for r in records] == [r.name for r in exp.runs]  # this experiment's names
    assert not list(tmp_path.glob("runs/*/lock"))


def test_reproduce_without_wait_writes_no_report_until_the_last_run_is_in(tmp_path: Path) -> None:
    out = tmp_path / "f5"
    plans = plan_runs(get_experiment("fig5", "cpu"), 1, out, base_overrides=TINY)
    held = _held_by_another_process(plans[-1].dir)
    res = reproduce("fig5", scale="cpu", out=out, base_overrides=TINY, jobs=1, wait=False)
    assert res["left_to_others"] == [plans[-1].key]
    assert not (out / "results.md").exists()  # the report waits for the process holding the last run
    assert len(list((out / "runs").glob("*/done.json"))) == len(plans) - 1
    held.unlink()  # that process is gone without finishing: the next call trains the run and reports
    res = reproduce("fig5", scale="cpu", out=out, base_overrides=TINY, jobs=1, wait=False)
    assert res["complete"] is True and (out / "results.md").is_file()
    assert [r["how"] for r in res["runs"]].count("reused") == len(plans) - 1
    assert build_parser().parse_args(["reproduce", "fig5", "--no-wait"]).no_wait is True
    assert build_parser().parse_args(["reproduce", "fig5"]).no_wait is False


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    import subprocess
    import sys
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "lock").write_text(json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename}))
    lock = runner._try_lock(run_dir, "r")
    assert lock is not None and json.loads(lock.read_text())["pid"] == os.getpid()
    assert runner._try_lock(run_dir, "r") is None  # now held by a live process: us


def test_jobs_share_the_runs_between_processes(tmp_path: Path) -> None:
    out = tmp_path / "f5"
    res = reproduce("fig5", scale="cpu", out=out, base_overrides=TINY, jobs=2)
    assert res["complete"] is True and len(res["runs"]) == 4 and res["jobs"] == 2
    [helper] = res["helpers"]
    log_text = Path(helper["log"]).read_text()
    assert helper["returncode"] == 0, log_text
    assert "--jobs 2" in res["command"]
    # the helper planned the same runs with the same configs (a config mismatch would have stopped it)
    for r in res["runs"]:
        assert f"{r['key']}: finished earlier, reusing" in log_text or f"{r['key']}: training" in log_text
    dones = list((out / "runs").glob("*/done.json"))
    assert len(dones) == 4 and {json.loads(d.read_text())["pid"] for d in dones} <= {helper["pid"], os.getpid()}
    assert not list((out / "runs").glob("*/lock"))
    with pytest.raises(ConfigError, match="jobs"):
        reproduce("fig5", scale="cpu", out=out, base_overrides=TINY, jobs=0)


def test_experiment_estimate_is_the_longest_of_greedy_lanes() -> None:
    assert runner.experiment_estimate([10.0, 10.0, 10.0], 2) == 20.0
    assert runner.experiment_estimate([30.0, 10.0, 10.0, 10.0], 2) == 30.0
    assert runner.experiment_estimate([5.0, None], 1) == 5.0
    assert DEFAULT_JOBS("full") == 1
    assert DEFAULT_JOBS("cpu") == (2 if (os.cpu_count() or 1) >= 2 else 1)


def test_mean_std_over_two_seeds_and_the_table_built_from_given_numbers() -> None:
    s = mean_std([80.0, 82.0])
    assert s["mean"] == pytest.approx(81.0) and s["std"] == pytest.approx(2 ** 0.5) and s["n"] == 2
    assert mean_std([70.0])["std"] is None
    assert mean_std([None, float("nan")]) == {"mean": None, "std": None, "n": 0, "values": []}

    exp = get_experiment("table1", "cpu")
    records = []
    for name, knn, linear in (("simsiam", (60.0, 62.0), (70.0, 71.0)), ("simsiam_gsg", (64.0, 68.0), (72.0, 74.0))):
        for seed in (0, 1):
            history = [{"epoch": 1, "loss": -0.5, "z_std": 0.9, "knn_k1": knn[seed] - 5, "knn_k200": 50.0},
                       {"epoch": 2, "loss": -0.6, "z_std": 0.8, "knn_k1": knn[seed], "knn_k200": 55.0}]
            records.append({"name": name, "seed": seed, "status": "ok", "history": history,
                            "final": runner._final_metrics(history), "evals": {"linear": {"top1": linear[seed]}}})
    variants = runner.aggregate(exp, records)
    assert variants["simsiam_gsg"]["metrics"]["knn"]["mean"] == pytest.approx(66.0)
    assert variants["simsiam_gsg"]["metrics"]["knn"]["std"] == pytest.approx(2 * 2 ** 0.5)
    assert variants["simsiam"]["metrics"]["linear"]["mean"] == pytest.approx(70.5)
    assert variants["simsiam"]["metrics"]["linear"]["std"] == pytest.approx(0.5 ** 0.5)
    assert variants["simsiam"]["curve"]["knn"] == {"epoch": [1, 2], "mean": [56.0, 61.0],
                                                   "std": [pytest.approx(2 ** 0.5)] * 2}
    claims = {c["claim"]: c for c in runner.check_claims(exp, variants)}
    # per-seed differences 4 and 6: mean +5, but t_{0.975,1} = 12.7 makes two seeds' interval [-7.7, +17.7]
    assert claims["SimSiam w/ GSG > SimSiam (knn)"]["verdict"] == "no difference that counts"
    assert claims["SimSiam w/ GSG > SimSiam (knn)"]["ours"] == (
        "66.0 vs 61.0; paired difference +5.0 [-7.7, +17.7] (n=2)")
    assert claims["BYOL w/ GSG > BYOL (knn)"]["verdict"] == "n/a"  # not run
    res = {"experiment": "table1", "scale": "cpu", "dataset_name": "Fashion-MNIST", "knn_metric": "knn_k1",
           "variants": variants, "paper": exp.paper, "chance": 10.0}
    md = results_table(res)
    assert "| SimSiam w/ GSG | 66.0 ± 2.83 | 55.0 ± 0.00 | 73.0 ± 1.41 | 58.4 ± 0.17 | 69.4 ± 0.02 | 82.2 ± 0.48 " \
           "| 86.4 ± 0.28 |" in md


def test_dry_run_lists_the_commands_and_trains_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a dry run trained")

    monkeypatch.setattr(execute, "pretrain", never)
    res = reproduce("fig4", scale="cpu", out=tmp_path / "f4", dry_run=True, jobs=2)
    assert not (tmp_path / "f4").exists()
    assert [r["key"] for r in res["runs"]] == [f"{m}{s}-s0" for m in ("simsiam", "byol")
                                               for s in ("", "_gsg", "_random", "_reverse")]
    assert all(r["command"].startswith("gsg pretrain ") and r["status"] == "todo" for r in res["runs"])
    assert "--stop-gradient reverse" in res["runs"][3]["command"]
    assert res["estimated_s"] > 0 and "gsg reproduce fig4 --scale cpu" in res["commands_md"]
    full = reproduce("table1", scale="full", out=tmp_path / "t1", dry_run=True)
    assert len(full["runs"]) == 12 and full["seeds"] == 3  # 4 algorithms × 3 seeds, as the paper
    assert all("--preset cifar10" in r["command"] and r["eval_commands"][0].startswith("gsg knn ")
               and "--mode augment" in r["eval_commands"][1] for r in full["runs"])
    assert len(full["launch"]) == 12 and "torchrun" in full["commands_md"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_command_rebuilds_exactly_the_config_the_runner_trains(experiment: str, tmp_path: Path) -> None:
    parser = build_parser()
    for scale in SCALES:
        for plan in plan_runs(get_experiment(experiment, scale), 2, tmp_path / "o", "cpu"):
            args = parser.parse_args(shlex.split(plan.command)[1:])
            assert args.auto_resume
            cfg = load_config(preset=args.preset, file=args.config, overrides=_overrides(args))
            assert cfg.to_dict() == plan.config.to_dict(), plan.command


def test_a_two_crop_cpu_run_fits_45_minutes_on_two_cores_and_every_experiment_states_its_time(
        tmp_path: Path) -> None:
    for name in EXPERIMENTS:
        exp = get_experiment(name, "cpu")
        plans = plan_runs(exp, exp.default_seeds, tmp_path)
        for cost in (CPU_COST, CPU_COST_SLOW):
            per_run = {p.key: estimate_seconds(p.config.optim.epochs, p.config.data.subset or CPU_TRAIN_IMAGES,
                                               p.config.optim.batch_size, knn_every=p.config.run.knn_every,
                                               checkpoint_every=p.config.run.checkpoint_every, evals=exp.evals,
                                               cost=cost, crops=4 if p.config.ssl.views == "fresh" else 2)
                       for p in plans}
            two_crop = [v for p in plans for k, v in per_run.items() if k == p.key and p.config.ssl.views == "reuse"
                        and p.run.epochs_factor == 1 and p.config.optim.batch_size == 256]
            if cost is CPU_COST:  # 45 minutes on 2 cores, two one-thread runs at a time
                assert all(t <= CPU_RUN_BUDGET_S for t in two_crop), (name, max(two_crop, default=0))
            # two runs at a time on the 2 cores (the cpu default, --jobs 2): the longer of two greedy lanes
            total = runner.experiment_estimate(list(per_run.values()), 2)
            assert total >= sum(per_run.values()) / 2 - 1e-6
        res = reproduce(name, scale="cpu", out=tmp_path / name, dry_run=True)
        assert res["estimated_s"] > 0
        assert all(p.config.data.dataset == "fashion-mnist" and p.config.model.width == 0.25 for p in plans)
        assert all(p.config.data.subset is None and p.config.model.proj_last_bn in ("affine", "none") for p in plans)


def test_experiment_definitions_follow_the_paper() -> None:
    fig5 = get_experiment("fig5", "full")
    assert fig5.preset == "cifar10" and fig5.base["optim"]["epochs"] == 400
    assert {r.overrides["model"]["predictor"] for r in fig5.runs} == {"none"}
    t4 = get_experiment("table4", "full")
    assert t4.preset == "imagenet" and sorted(r.overrides["optim"]["batch_size"] for r in t4.runs
                                              if r.name.split("_")[0] in ("simsiam", "byol")) == [
        256, 256, 512, 512, 1024, 1024]
    cpu4 = plan_runs(get_experiment("table4", "cpu"), 1, Path("o"))
    assert {p.config.optim.batch_size: p.config.optim.lr for p in cpu4} == {512: None, 256: None, 128: None}
    assert {p.config.optim.base_lr for p in cpu4} == {0.1}  # lr = 0.1 × b/256: linear scaling, as the paper's rule
    dp = get_experiment("directpred", "cpu")
    assert sorted(r.name for r in dp.runs) == sorted(f"byol{g}_{p}" for g in ("", "_gsg")
                                                     for p in ("mlp", "linear", "directpred"))
    assert dp.paper["tian_stl10"]["directpred"] == (77.86, 0.16)
    # the page's note names the optimisation each scale's runs use
    dp_cpu = plan_runs(dp, 1, Path("o"))
    assert {(p.config.optim.base_lr, p.config.optim.lr, p.config.optim.schedule) for p in dp_cpu} == {
        (0.1, None, "constant")}
    assert any("lr 0.1 × batch/256 constant" in n for n in dp.notes)
    dp_full = get_experiment("directpred", "full")
    assert {p.config.optim.lr for p in plan_runs(dp_full, 1, Path("o"))} == {0.06}
    assert any("lr 0.06 constant" in n for n in dp_full.notes)


def test_bad_input_names_the_valid_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="table1, fig4, fig5, table4, tsne, directpred"):
        reproduce("table2", scale="cpu", out=tmp_path)
    with pytest.raises(ConfigError, match=r"did you mean 'full'.*cpu, full"):
        reproduce("table1", scale="ful", out=tmp_path)
    with pytest.raises(ConfigError, match="seeds"):
        reproduce("table1", scale="cpu", seeds=0, out=tmp_path)
    with pytest.raises(ConfigError, match="linear_epochs"):
        reproduce("table1", scale="cpu", out=tmp_path, dry_run=True, base_overrides={"reproduce": {"linear_epoch": 3}})
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        reproduce("table1", scale="cpu", out=tmp_path, dry_run=True, base_overrides={"optim": {"epoch": 3}})
    # what an experiment varies cannot be overridden for all its runs (they would all be the same run)
    with pytest.raises(ConfigError, match=r"optim\.batch_size is what table4 varies"):
        reproduce("table4", scale="cpu", out=tmp_path, dry_run=True, base_overrides={"optim": {"batch_size": 16}})
    assert len(reproduce("table1", scale="cpu", out=tmp_path, dry_run=True,
                         base_overrides={"optim": {"batch_size": 64}})["runs"]) == 4


def test_full_scale_launch_gives_one_torchrun_command_per_run() -> None:
    cmds = full_scale_launch("fig5", 4, out="o")
    assert len(cmds) == 4
    for c in cmds:
        assert c.startswith("torchrun --nproc_per_node 4 ") and " -m gsg pretrain --preset cifar10 " in c
        assert c.endswith("--auto-resume") and "--predictor none" in c and "--out o/runs/" in c
    assert len(full_scale_launch("table1", 8)) == 12
    with pytest.raises(ConfigError, match="divide"):
        full_scale_launch("table1", 3)
    with pytest.raises(ConfigError, match="nproc"):
        full_scale_launch("table1", 0)


def test_four_crop_control_names_its_variants_and_shares_runs_with_table1(tmp_path: Path) -> None:
    exp = get_experiment("crops", "cpu")
    plans = plan_runs(exp, 3, tmp_path)
    seeds: dict[str, int] = {}
    for p in plans:
        seeds[p.run.name] = seeds.get(p.run.name, 0) + 1
    assert seeds == {**{f"simsiam_{v}": 3 for v in ("sym2", "sym4", "gsg4", "gsg2", "sym2x2")},
                     **{f"simsiam_{v}": 1 for v in ("random4", "gsg2cycle", "gsg2x2")},
                     **{f"byol_{v}": 1 for v in ("sym2", "sym4", "gsg4", "gsg2")}}
    assert [p.seed for p in plans] == sorted(p.seed for p in plans)  # seed 0 of every variant first
    assert plans[0].key == "simsiam-s0" and plans[5].key == "simsiam_random-s0" and plans[8].key == "byol-s0"
    by = {p.key: p.config for p in plans}
    base_epochs = by["simsiam_sym4-s0"].optim.epochs
    assert by["simsiam_sym2x2-s0"].optim.epochs == 2 * base_epochs
    assert by["simsiam_gsg2-s1"].ssl.views == "reuse" and by["simsiam_gsg2-s1"].ssl.pairing == "matching"
    # the default pairing's runs: the cycle at equal epochs, matched pairs at a 4-crop run's encoder passes
    cycle, gsg2x2 = by["simsiam_gsg2cycle-s0"], by["simsiam_gsg2x2-s0"]
    assert (cycle.ssl.stop_gradient, cycle.ssl.views, cycle.ssl.pairing) == ("guided", "reuse", "cycle")
    assert cycle.optim.epochs == base_epochs and gsg2x2.optim.epochs == 2 * base_epochs
    assert (gsg2x2.ssl.views, gsg2x2.ssl.pairing) == ("reuse", "matching")
    same = {k: v for k, v in gsg2x2.to_dict().items() if k not in ("optim", "run")}
    assert same == {k: v for k, v in by["simsiam_gsg2-s0"].to_dict().items() if k not in ("optim", "run")}
    assert by["simsiam_sym4-s2"].ssl.views == "fresh" and by["simsiam_sym4-s2"].ssl.stop_gradient == "symmetric"
    labels = {p.run.label for p in plans if p.run.name == "simsiam_gsg4"}
    assert labels == {"SimSiam, GSG, 4 crops (the authors' scheme)"}
    # the authors' comparison is Table 1: symmetric on 2 crops against GSG on 4, the same trainings
    t1 = {p.key: p.config for p in plan_runs(get_experiment("table1", "cpu"), 3, tmp_path)}
    assert t1["simsiam-s0"].ssl.views == "reuse" and t1["simsiam_gsg-s0"].ssl.views == "fresh"
    for key in ("simsiam-s1", "simsiam_gsg-s2", "byol-s0"):
        assert by[key].to_dict() == t1[key].to_dict()
    names = {c.a for c in exp.claims} | {c.b for c in exp.claims}
    assert names <= {r.name for r in exp.runs}


def test_crops_table_and_baseline_section_render_given_numbers() -> None:
    from gsg.reproduce.report import baselines_section

    exp = get_experiment("crops", "cpu")
    records = []
    for name, k200 in (("simsiam_sym2", (80.0, 81.0, 80.5)), ("simsiam_gsg4", (83.0, 84.5, 83.5))):
        for seed in (0, 1, 2):
            records.append({"name": name, "seed": seed, "status": "ok", "history": [{"epoch": 1, "z_std": 0.9}],
                            "final": {}, "evals": {"knn": {"knn_k200": k200[seed], "knn_k1": 85.0},
                                                   "linear": {"top1": 88.0}}})
    variants = runner.aggregate(exp, records)
    claims = {c["claim"]: c for c in runner.check_claims(exp, variants)}
    authors = claims["SimSiam, the authors' comparison: GSG on 4 crops > symmetric on 2 (knn)"]
    assert authors["verdict"] == "holds" and authors["difference"]["mean"] == pytest.approx(3.1666666, abs=1e-6)
    assert claims["SimSiam, equal crops: GSG on 4 crops > symmetric on 4 (knn)"]["verdict"] == "n/a"
    res = {"experiment": "crops", "scale": "cpu", "dataset_name": "Fashion-MNIST", "knn_metric": "knn_k200",
           "variants": variants, "paper": exp.paper, "chance": 10.0,
           "baselines": {"command": "gsg baselines ...", "results": {
               "raw_pixels": {"label": "raw pixels", "seeds": [], "knn_k200": 81.78, "knn_k1": 85.64,
                              "linear_top1": 84.0},
               "random_init": {"label": "random-init backbone", "seeds": [0, 1, 2], "knn_k200": 75.2,
                               "knn_k200_std": 0.8, "knn_k1": 78.1, "linear_top1": 80.0}}}}
    md = results_table(res)
    assert "| SimSiam, GSG, 4 crops (the authors' scheme) | 3 | 83.7 ± 0.76 | 85.0 ± 0.00 | 88.0 ± 0.00 |" in md
    section = "\n".join(baselines_section(res))
    assert "| random-init backbone (3 seeds) | 75.2 ± 0.80 | 78.1 | 80.0 |" in section
    assert "| SimSiam, GSG, 4 crops (the authors' scheme) | +1.9 / +8.5 | -0.6 / +6.9 | +4.0 / +8.0 |" in section


def test_a_claim_over_unequal_seeds_shows_the_means_its_paired_difference_is_made_of() -> None:
    # symmetric 2 crops has 3 seeds, GSG 4 crops only seed 0 so far: "80.5 vs 79.6; paired -0.1" would not add up
    exp = get_experiment("crops", "cpu")
    records = [{"name": name, "seed": seed, "status": "ok", "history": [], "final": {},
                "evals": {"knn": {"knn_k200": v, "knn_k1": v}, "linear": {"top1": v}}}
               for name, vals in (("simsiam_sym2", (80.6, 78.7, 79.5)), ("simsiam_gsg4", (80.5,)))
               for seed, v in enumerate(vals)]
    claims = {c["claim"]: c for c in runner.check_claims(exp, runner.aggregate(exp, records))}
    ours = claims["SimSiam, the authors' comparison: GSG on 4 crops > symmetric on 2 (knn)"]["ours"]
    assert ours == ("80.5 vs 80.6 on the paired seed(s) 0 (every seed: 80.5 vs 79.6); paired difference -0.1 "
                    "(1 seed)")
    records.append({**records[-1], "seed": 1, "evals": {"knn": {"knn_k200": 79.0, "knn_k1": 79.0}}})
    records.append({**records[-1], "seed": 2, "evals": {"knn": {"knn_k200": 80.0, "knn_k1": 80.0}}})
    claims = {c["claim"]: c for c in runner.check_claims(exp, runner.aggregate(exp, records))}
    ours = claims["SimSiam, the authors' comparison: GSG on 4 crops > symmetric on 2 (knn)"]["ours"]
    assert ours.startswith("79.8 vs 79.6; paired difference +0.2 [")  # equal seeds: the plain form

def test_table4_has_simclr_and_moco_rows_and_compares_ranges() -> None:
    for scale, batches, moco_batch in (("cpu", (512, 256, 128), 128), ("full", (1024, 512, 256), 256)):
        exp = get_experiment("table4", scale)
        plans = {p.run.name: p for p in plan_runs(exp, 1, Path("o"))}
        for b in batches:
            simclr, moco = plans[f"simclr_b{b}"].config, plans[f"moco_q{b}"].config
            assert (simclr.ssl.method, simclr.optim.batch_size, simclr.ssl.stop_gradient) == ("simclr", b, "none")
            # MoCo's negatives are its queue: queue b stands for the paper's b, at MoCo's batch (256 -> 128 on cpu)
            assert (moco.ssl.method, moco.ssl.queue_size, moco.optim.batch_size) == ("moco", b, moco_batch)
            for c in (simclr, moco):  # SimCLR's head: 2 layers, 128-d output; no predictor
                assert c.model.proj_layers == 2 and c.model.proj_dim == 128 and c.model.predictor == "none"
            # the commands rebuild exactly the planned configs through the real parser
            for name in (f"simclr_b{b}", f"moco_q{b}"):
                args = build_parser().parse_args(shlex.split(plans[name].command)[1:])
                again = load_config(preset=args.preset, overrides=_overrides(args))
                assert runner._config_diffs(plans[name].config.to_dict(), again.to_dict()) == []
        assert plans["simclr_b128" if scale == "cpu" else "simclr_b256"].config.ssl.temperature is None  # by size
        kinds = [c.kind for c in exp.claims]
        assert kinds.count("range") == 2 and kinds.count("range_less") == 4
        # the paper's contrastive numbers stay the paper's
        assert exp.paper["table4_contrastive"]["SimCLR (Chen et al.)"][256] == 57.5

    exp = get_experiment("table4", "cpu")

    def variants(accs: dict[str, tuple[float, float, float]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for prefix, vals in accs.items():
            for b, v in zip((512, 256, 128), vals, strict=True):
                out[f"{prefix}{b}"] = {"label": prefix, "group": prefix, "metrics": {
                    "linear": {"mean": v, "std": None, "n": 1}, "knn": {"mean": v - 5, "std": None, "n": 1}}}
        return out

    v = variants({"simsiam_gsg_b": (70.0, 70.5, 69.8), "byol_gsg_b": (71.0, 70.0, 72.5),
                  "simclr_b": (65.0, 62.0, 58.0), "moco_q": (60.0, 59.0, 59.5)})
    claims = {c["claim"]: c for c in runner.check_claims(exp, v)}
    got = {(k.split(" w/")[0], "SimCLR" in k, "MoCo" in k): c["verdict"] for k, c in claims.items()
           if c["kind"] == "range_less"}
    # SimSiam range 0.7 < SimCLR 7.0, and < MoCo 1.0 by less than the 1.3 points seed noise allows; BYOL range
    # 2.5 < SimCLR 7.0, but > MoCo 1.0 by 1.5
    assert got == {("SimSiam", True, False): "holds", ("SimSiam", False, True): "no difference that counts",
                   ("BYOL", True, False): "holds", ("BYOL", False, True): "does not hold (reversed)"}
    assert {c.tol for c in exp.claims if c.kind == "range_less"} == {TABLE4_RANGE_NOISE["cpu"]} == {1.3}
    assert any(c["ours"] == "range 2.5 vs 1.0 points" for c in claims.values())
    missing = {k: c for k, c in v.items() if not k.startswith("moco")}
    assert {c["verdict"] for c in runner.check_claims(exp, missing) if "MoCo" in c["claim"]} == {"n/a"}
    # the report keeps the paper's quoted contrastive rows apart from ours
    res = {"experiment": "table4", "scale": "cpu", "variants": v, "paper": exp.paper, "knn_metric": exp.knn_metric,
           "dataset_name": "synthetic"}
    md = results_table(res)
    assert "| Explicit contrastive | SimCLR (Chen et al.) | paper: ImageNet linear | 62.8 |" in md
    assert "| Explicit contrastive | SimCLR (ours: batch b) |" in md and "| 65.0 | 62.0 | 58.0 |" in md
    assert "MoCo v2 (ours: queue b, batch 128)" in md


def test_table4_columns_name_the_paper_batch_each_of_ours_stands_for() -> None:
    for scale, head in (("cpu", "b=1024 (ours: b=512)"), ("full", "b=1024")):
        exp = get_experiment("table4", scale)
        res = {"experiment": "table4", "scale": scale, "dataset_name": "x", "knn_metric": "knn_k1", "variants": {},
               "paper": exp.paper, "chance": 10.0}
        header = results_table(res).splitlines()[0]
        assert header.split(" | ")[3] == head, header


def test_the_crops_page_plots_knn_against_the_crops_each_image_was_encoded(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.axes

    from gsg.reproduce.plots import write_plots

    exp = get_experiment("crops", "cpu")
    records = [{"name": name, "seed": 0, "status": "ok", "config": {"ssl": {"views": views}}, "evals": {},
                "history": [{"epoch": e, "knn_k200": 70.0 + e} for e in (2, 4)]}
               for name, views in (("simsiam_sym2", "reuse"), ("simsiam_gsg4", "fresh"))]
    variants = runner.aggregate(exp, records)
    assert (variants["simsiam_sym2"]["crops"], variants["simsiam_gsg4"]["crops"]) == (2, 4)
    drawn: list[tuple[str, list[float]]] = []
    plot = matplotlib.axes.Axes.plot

    def record(self: Any, x: Any, y: Any, *args: Any, **kwargs: Any) -> Any:
        drawn.append((kwargs.get("label"), list(x)))
        return plot(self, x, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", record)
    res = {"experiment": "crops", "scale": "cpu", "dataset_name": "Fashion-MNIST", "knn_metric": "knn_k200",
           "variants": variants, "chance": 10.0, "title": exp.title}
    paths = write_plots(res, exp, tmp_path)
    assert [Path(p).name for p in paths] == ["crops_knn.png", "crops_knn_per_pass.png"]
    assert all(Path(p).read_bytes()[:8] == PNG_MAGIC for p in paths)
    # the epochs panel, then the per-pass one: 2 crops x epochs 2, 4 -> 4, 8; 4 crops -> 8, 16
    sym2, gsg4 = variants["simsiam_sym2"]["label"], variants["simsiam_gsg4"]["label"]
    assert drawn == [(sym2, [2, 4]), (gsg4, [2, 4]), (sym2, [4, 8]), (gsg4, [8, 16])]


def test_the_each_seed_table_gives_every_seeds_numbers_and_the_seeds_still_to_run() -> None:
    def metric(by: dict[int, float]) -> dict[str, Any]:
        return {"mean": sum(by.values()) / len(by), "by_seed": {str(s): v for s, v in by.items()}}

    variants = {
        "sym": {"label": "symmetric", "metrics": {"knn_k200": metric({0: 80.59, 1: 78.66}),
                                                  "linear": metric({0: 85.81, 1: 84.55})}},
        "rand": {"label": "random sg", "metrics": {"knn_k200": metric({0: 79.56}), "linear": metric({0: 84.36})}},
    }
    res = {"seeds": 3, "variants": variants, "knn_metric": "knn_k200",
           "missing": [{"key": "simsiam-s2", "label": "symmetric", "seed": 2}]}
    md = "\n".join(seeds_section(res))
    assert "kNN k=200 / linear of each finished run" in md
    assert "| symmetric | 80.59 / 85.81 | 78.66 / 84.55 | to run |" in md
    assert "| random sg | 79.56 / 84.36 |  |  |" in md  # one planned seed: the others are not "to run"
    assert seeds_section({**res, "seeds": 1}) == []  # one seed: the results table already shows each number
    # a page whose claims read kNN k=1 (Table 1) lists k=1
    variants["sym"]["metrics"]["knn_k1"] = metric({0: 82.48, 1: 81.48})
    k1 = "\n".join(seeds_section({**res, "knn_metric": "knn_k1"}))
    assert "kNN k=1 / linear of each finished run" in k1
    assert "| symmetric | 82.48 / 85.81 | 81.48 / 84.55 | to run |" in k1
