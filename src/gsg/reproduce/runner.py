"""Run a paper experiment end to end: pretrain every run, evaluate, aggregate over seeds, write the report.

Layout of ``out``::

    out/runs/<run>-s<seed>/   checkpoint.pt, metrics.jsonl, config.json, command.txt, done.json
    out/tsne/<run>-s<seed>.png (t-SNE experiment)
    out/results.json, out/results.md, out/commands.md, out/<experiment>_*.png

A run is finished when its ``done.json`` exists (written atomically after pretraining and the evaluations);
a second call reuses it without training. A run without ``done.json`` is (re)started with
``pretrain(cfg, resume="auto")``, which continues its checkpoint when there is one, so an interrupted
reproduction picks up where it stopped.

The steps live in their own modules: :mod:`~gsg.reproduce.plan` (the runs and their commands),
:mod:`~gsg.reproduce.execute` (training and evaluating each run, ``done.json``), :mod:`~gsg.reproduce.lock`,
:mod:`~gsg.reproduce.baselines`, :mod:`~gsg.reproduce.aggregate` (over seeds, the claims),
:mod:`~gsg.reproduce.setting` (the report's description of the setting) and :mod:`~gsg.reproduce.report` (the
pages and plots); this module runs them in order and writes the report.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

import gsg
from gsg.errors import ConfigError, GsgError
from gsg.reproduce import plots, prefix, report
from gsg.reproduce.aggregate import _verdict as _verdict
from gsg.reproduce.aggregate import aggregate, check_claims, mean_std
from gsg.reproduce.baselines import experiment_baselines
from gsg.reproduce.deadline import pack, parse_deadline
from gsg.reproduce.execute import (
    DONE_NAME,
    RESULT_FORMAT,
    LeftToOthers,
    _check_same_config,
    _read_done,
    _run_evals,
    final_knn,
    run_all,
    seconds_left,
)
from gsg.reproduce.execute import _config_diffs as _config_diffs
from gsg.reproduce.execute import _final_metrics as _final_metrics
from gsg.reproduce.experiments import Experiment, LinearDef, TsneDef, get_experiment
from gsg.reproduce.files import _write_json, _write_text
from gsg.reproduce.lock import _try_lock as _try_lock
from gsg.reproduce.pairing_rule import default_pairing
from gsg.reproduce.plan import (
    PlannedRun,
    _check_seeds,
    _eval_settings,
    _split_overrides,
    default_out,
    estimate,
    full_scale_launch,
    plan_runs,
    reproduce_command,
    runs_root,
    select_runs,
)
from gsg.reproduce.setting import dataset_name, describe_setting, setting_notes
from gsg.train.loop import CHECKPOINT_NAME

log = logging.getLogger("gsg.reproduce")


def default_jobs(scale: str) -> int:
    """2 at cpu scale on a machine with 2+ cores (two 1-thread runs beat one 2-thread run of a small model), else
    1 (full scale: one run at a time uses the GPUs)."""
    return 2 if scale == "cpu" and (os.cpu_count() or 1) >= 2 else 1


def _check_jobs(jobs: Any) -> int:
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"jobs must be a positive number of runs to train at a time, got {jobs!r}")
    return jobs


def experiment_estimate(run_estimates: Sequence[float | None], jobs: int) -> float:
    """Wall-clock estimate of runs shared by ``jobs`` processes: greedy in plan order, as :func:`run_all`."""
    lanes = [0.0] * jobs
    for est in run_estimates:
        i = lanes.index(min(lanes))
        lanes[i] += est or 0.0
    return max(lanes)


def _start_helpers(experiment: str, scale: str, seeds: int, out: Path, device: str,
                   base_overrides: dict[str, Any] | None, runs_dir: Path, jobs: int, *, wait: bool = True,
                   only: Sequence[str] | None = None, deadline: datetime | None = None) -> list[tuple[Any, Path]]:
    """jobs - 1 helper processes (``gsg reproduce ... --worker``) that share the runs through their locks."""
    if jobs <= 1:
        return []
    env = dict(os.environ)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    if "OMP_NUM_THREADS" not in env:  # the user's setting wins
        env["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
    cmd = [sys.executable, "-m", "gsg", *shlex.split(
        reproduce_command(experiment, scale, seeds, out, device, base_overrides, runs_dir, only=only))[1:], "--worker",
           *([] if wait else ["--no-wait"]), *([] if deadline is None else ["--deadline", deadline.isoformat()])]
    out.mkdir(parents=True, exist_ok=True)
    helpers = []
    for i in range(1, jobs):
        logfile = out / f"helper-{i}.log"
        with open(logfile, "w") as f:  # the child keeps its own descriptor
            helpers.append((subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env), logfile))
        log.info("helper %d: process %d, %d thread(s), log %s", i, helpers[-1][0].pid, int(env["OMP_NUM_THREADS"]),
                 logfile)
    return helpers


def reproduce(experiment: str, *, scale: str = "cpu", seeds: int | None = None,
              out: str | os.PathLike[str] | None = None, device: str = "auto", dry_run: bool = False,
              base_overrides: dict[str, Any] | None = None,
              runs_dir: str | os.PathLike[str] | None = None, jobs: int | None = None,
              worker: bool = False, report_only: bool = False, wait: bool = True,
              only: Sequence[str] | None = None, deadline: str | datetime | None = None) -> dict[str, Any]:
    """Reproduce one table/figure of the paper at ``scale`` ("cpu" or "full"); returns the results dict.

    ``seeds``: runs per variant (default: the experiment's, 1 at cpu scale, 3 for Table 1 at full scale).
    ``out``: output directory (default ``runs/reproduce/<experiment>-<scale>``). ``base_overrides``:
    ``{section: {key: value}}`` applied last to every run's config (like ``gsg pretrain --set``), plus an
    optional ``reproduce`` section for the evaluations (linear_epochs, linear_mode, linear_train_subset,
    tsne_max_points, tsne_train_subset). ``runs_dir``: where the runs live (default ``out/runs``); give
    several experiments the same one and the runs they share are trained once. ``jobs``: runs trained at a
    time, each in its own process with cores/jobs threads (default: 2 at cpu scale on a machine with 2 or
    more cores, where a small model uses a second thread poorly; 1 at full scale). ``worker``: only train and
    evaluate runs (what the helper processes of ``jobs`` do), write no report. ``dry_run``: plan and return
    the commands, train nothing, write nothing. ``report_only``: train nothing; write the report from the runs
    finished so far (a long reproduction can be read while it runs), marked incomplete, with the runs still to
    do listed; the baselines are measured (once per protocol) as for a full report. ``wait=False``: when every
    run left is being trained by other processes (another reproduction sharing ``runs_dir``), return without a
    report (``{"left_to_others": [keys]}``) instead of waiting for them; the process that finishes the last run
    writes the report. Two such processes, each looping over the experiments, keep two cores busy across the
    experiments' boundaries (docs/experiments/reproduce_cpu2.sh). ``only``: train only these runs (variant names,
    or run keys such as ``simclr_b512-s0``); the report then covers every run finished so far, as ``report_only``
    (e.g. the fp32 runs on a CPU where bf16 autocast is slow, docs/results/cpu_scale.md). ``deadline`` (cpu
    scale; a time, or its text for :func:`gsg.reproduce.deadline.parse_deadline`, e.g. ``"+150"`` or
    ``"16:20"``): start no run that the cost model says would end after it, for a machine lent for a fixed
    time; the report then covers the runs finished so far, as ``only``, and a dry run says which runs would start.
    """
    exp = get_experiment(experiment, scale)
    until = parse_deadline(deadline) if isinstance(deadline, str) else deadline
    if until is not None and exp.scale != "cpu":
        raise ConfigError("--deadline needs the cpu scale's cost model to know how long a run takes, and full scale "
                          "has none (GPU speeds differ); use the scheduler's time limit instead: an interrupted run "
                          "checkpoints on SIGTERM and the same command resumes it exactly")
    n_seeds = _check_seeds(exp.default_seeds if seeds is None else seeds)
    out_path = Path(out) if out is not None else default_out(experiment, scale)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("gsg reproduce runs one process; for several GPUs launch the torchrun commands of "
                          "commands.md (gsg.reproduce.full_scale_launch), then run gsg reproduce without torchrun "
                          "to evaluate the finished runs and write the report")
    _, extra = _split_overrides(base_overrides)
    linear, tsne = _eval_settings(exp, extra)
    runs_path = Path(runs_dir) if runs_dir is not None else None
    n_jobs = default_jobs(scale) if jobs is None else _check_jobs(jobs)
    plans = plan_runs(exp, n_seeds, out_path, device, base_overrides, runs_path)
    to_train = select_runs(plans, only)
    if worker:
        try:
            run_all(exp, to_train, linear=linear, tsne=tsne, out=out_path, wait=wait,
                    deadline=None if until is None else until.timestamp())
        except LeftToOthers as left:
            log.info("%s: %s", exp.name, left)
        return {"worker": True, "experiment": exp.name, "runs": [p.key for p in to_train]}
    command = reproduce_command(experiment, scale, n_seeds, out_path, device, base_overrides, runs_path, n_jobs,
                                only)
    sources = prefix.prefix_sources(plans)
    estimates = {p.key: estimate(exp, p, sources.get(p.key)) for p in plans}
    estimated = experiment_estimate([estimates[p.key] for p in to_train], n_jobs) if exp.scale == "cpu" else None
    name = dataset_name(plans[0].config, exp)
    header = {"format": RESULT_FORMAT, "experiment": exp.name, "scale": exp.scale, "title": exp.title,
              "paper_ref": exp.paper_ref, "dataset_name": name,
              "dataset": exp.dataset_label if exp.dataset_label.startswith(name) else name,
              "setting": describe_setting(plans[0].config), "seeds": n_seeds, "knn_metric": exp.knn_metric,
              "chance": exp.chance, "notes": setting_notes(exp, plans[0].config, linear, tsne, name),
              "out": str(out_path), "command": command,
              "gsg_version": gsg.__version__, "linear": dataclasses.asdict(linear) if linear else None,
              "tsne": dataclasses.asdict(tsne) if tsne else None, "estimated_s": estimated, "jobs": n_jobs}
    if dry_run:
        runs = [{"key": p.key, "label": p.run.label, "dir": str(p.dir), "command": p.command,
                 "eval_commands": p.eval_commands, "estimated_s": estimates[p.key],
                 "continues": prefix.read_record(p.dir) or (
                     prefix.planned_record(p, sources[p.key])
                     if p.key in sources and not (p.dir / CHECKPOINT_NAME).exists() else None),
                 "status": "done" if (p.dir / DONE_NAME).is_file() else
                 "partial" if (p.dir / CHECKPOINT_NAME).is_file() else "todo"} for p in to_train]
        res = {**header, "dry_run": True, "runs": runs, "launch": _launch(experiment, scale, out_path, n_seeds,
                                                                           base_overrides, runs_path)}
        if until is not None:
            res["deadline"] = _dry_run_deadline(exp, to_train, sources, runs, n_jobs, until)
        res["commands_md"] = report.commands_markdown(res)
        return res

    t0 = time.perf_counter()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    if report_only:
        records, missing = finished_and_missing(exp, plans, linear=linear, tsne=tsne, out=out_path)
        log.info("%s: a report of %d finished runs of %d (train nothing)", exp.name, len(records), len(plans))
        header["helpers"] = []
        return _write_report(exp, header, records, plans, started, t0, out_path, n_seeds, base_overrides,
                             runs_path, device, linear, missing=missing)

    def partial(done: list[dict[str, Any]]) -> None:
        # Partial results after every run: an interrupted reproduction still leaves a readable record.
        _write_json(out_path / "results.json", _results(exp, header, done, plans, started, t0, complete=False))

    helpers = _start_helpers(experiment, scale, n_seeds, out_path, device, base_overrides,
                             runs_root(out_path, runs_path), n_jobs, wait=wait, only=only, deadline=until)
    try:
        records = run_all(exp, to_train, linear=linear, tsne=tsne, out=out_path, on_record=partial, wait=wait,
                          deadline=None if until is None else until.timestamp())
    except LeftToOthers as left:
        for h, _ in helpers:  # they leave as soon as they find nothing of their own either
            h.wait()
        log.info("%s: %s; the process that finishes the last of them writes the report", exp.name, left)
        return {"experiment": exp.name, "out": str(out_path), "left_to_others": left.keys}
    except BaseException:
        for h, _ in helpers:  # interrupted: the helpers checkpoint and stop too
            if h.poll() is None:
                h.send_signal(signal.SIGTERM)
        for h, _ in helpers:
            h.wait()
        raise
    for h, logfile in helpers:
        if h.wait() != 0:  # its runs were finished by this process (the lock of a dead helper is taken over)
            log.warning("helper process %d exited with %d; see %s", h.pid, h.returncode, logfile)
    header["helpers"] = [{"pid": h.pid, "returncode": h.returncode, "log": str(f)} for h, f in helpers]
    missing: list[PlannedRun] = []
    if only is not None or until is not None:  # a part of the experiment (or what the deadline left of it):
        # report every run finished so far, the rest as still to do
        records, missing = finished_and_missing(exp, plans, linear=linear, tsne=tsne, out=out_path)
    return _write_report(exp, header, records, plans, started, t0, out_path, n_seeds, base_overrides, runs_path,
                         device, linear, missing=missing)


def _dry_run_deadline(exp: Experiment, to_train: Sequence[PlannedRun], sources: dict[str, PlannedRun],
                      runs: list[dict[str, Any]], jobs: int, until: datetime) -> dict[str, Any]:
    """Which runs ``--deadline`` would start, by :func:`gsg.reproduce.deadline.pack` over what each has left;
    marks each of ``runs`` (the dry run's entries) with ``starts``."""
    left = {p.key: seconds_left(exp, p, sources.get(p.key)) or 0.0 for p in to_train}
    seconds = until.timestamp() - time.time()
    starts = set(pack(left, list(left), jobs, seconds))
    for p in to_train:  # a run that continues one left out cannot start either (run_all skips it too)
        src = sources.get(p.key)
        if src is not None and src.key in left and src.key not in starts and not (p.dir / CHECKPOINT_NAME).exists():
            starts.discard(p.key)
    for r in runs:
        r["starts"] = r["key"] in starts
    return {"until": until.isoformat(timespec="minutes"), "minutes_left": seconds / 60, "jobs": jobs,
            "starts": [k for k in left if k in starts], "left_out": [k for k in left if k not in starts]}


def finished_and_missing(exp: Experiment, plans: Sequence[PlannedRun], *, linear: LinearDef | None,
                         tsne: TsneDef | None, out: Path) -> tuple[list[dict[str, Any]], list[PlannedRun]]:
    """The records of the runs finished so far, and the plans still to do (a partial report's two halves)."""
    records = finished_records(exp, plans, linear=linear, tsne=tsne, out=out)
    done = {r["key"] for r in records}
    return records, [p for p in plans if p.key not in done]


def finished_records(exp: Experiment, plans: Sequence[PlannedRun], *, linear: LinearDef | None,
                     tsne: TsneDef | None, out: Path) -> list[dict[str, Any]]:
    """The done.json records of the plans whose runs have finished (in plan order), named as this experiment
    names them, whatever experiment sharing the runs directory trained them. Evaluations this experiment asks for
    and a record lacks are made now (as when ``run_all`` reuses a run), so none is left out of the report."""
    records = []
    for plan in plans:
        done = plan.dir / DONE_NAME
        rec = _read_done(done) if done.is_file() else None
        if rec is None:
            continue
        _check_same_config(done, rec, plan)
        if rec.get("status") == "ok" and _run_evals(exp, plan, rec, linear, tsne, out):
            _write_json(done, rec)
        rec.update(name=plan.run.name, label=plan.run.label, group=plan.run.group, how="reused")
        records.append(rec)
    return records


def _write_report(exp: Experiment, header: dict[str, Any], records: list[dict[str, Any]],
                  plans: list[PlannedRun], started: str, t0: float, out_path: Path, n_seeds: int,
                  base_overrides: dict[str, Any] | None, runs_path: Path | None, device: str,
                  linear: LinearDef | None, *, missing: Sequence[PlannedRun]) -> dict[str, Any]:
    """Baselines, aggregation, claims, plots and the three files of a report; ``missing``: runs not finished
    (a report-only call), listed on the page, which then says it is incomplete."""
    try:
        header["baselines"] = experiment_baselines(plans, linear, runs_root(out_path, runs_path), device,
                                                   exp.knn_temperature)
    except GsgError as exc:  # e.g. an unlabelled dataset: say so in the report rather than fail the reproduction
        log.warning("baselines not measured: %s", exc)
        header["baselines"] = {"error": str(exc)}
    res = _results(exp, header, records, plans, started, t0, complete=not missing)
    res["missing"] = [{"key": p.key, "label": p.run.label, "seed": p.seed} for p in missing]
    res["plots"] = plots.write_plots(res, exp, out_path) if records else []
    res["launch"] = _launch(exp.name, exp.scale, out_path, n_seeds, base_overrides, runs_path)
    res["timing"]["wall_s"] = time.perf_counter() - t0
    _write_json(out_path / "results.json", res)
    _write_text(out_path / "results.md", report.results_markdown(res, exp))
    _write_text(out_path / "commands.md", report.commands_markdown(res))
    log.info("%s (%s scale): %s, %s; %.1f min", exp.title, exp.scale, out_path / "results.md",
             out_path / "results.json", res["timing"]["wall_s"] / 60)
    return res


PAPER_GPUS = 8  # the paper trained on 8 A100s


def _launch(experiment: str, scale: str, out: Path, seeds: int, base_overrides: dict[str, Any] | None,
            runs_dir: Path | None = None) -> list[str]:
    """torchrun commands for the report (full scale only; none when the batch does not split over 8 GPUs)."""
    if scale != "full":
        return []
    try:
        return full_scale_launch(experiment, PAPER_GPUS, out=out, seeds=seeds, base_overrides=base_overrides,
                                 runs_dir=runs_dir)
    except ConfigError:
        return []


def train_seconds(rec: dict[str, Any]) -> float | None:
    """Seconds of pretraining over every call that trained this run, from the epochs' own clocks.

    The wall clock of the finishing call (``times.pretrain_s``) misses the epochs an interrupted run trained before
    its resume. A continued run (``gsg.reproduce.prefix``) counts only the epochs after the run it continues, which
    that run already counts. ``None`` for a record without epoch clocks.
    """
    after = int((rec.get("continued_from") or {}).get("epoch", 0))
    clocks = [float(h["epoch_time_s"]) for h in rec.get("history", [])
              if h.get("epoch_time_s") is not None and int(h.get("epoch", 0)) > after]
    return sum(clocks) if clocks else None


def _run_summary(rec: dict[str, Any], plan: PlannedRun) -> dict[str, Any]:
    times = rec.get("times", {})
    evals_s = sum(times.get("evals_s", {}).values())
    train_s = train_seconds(rec)
    pretrain_s = train_s if train_s is not None else times.get("pretrain_s")
    return {"key": rec["key"], "name": rec["name"], "label": rec.get("label"), "group": rec.get("group"),
            "seed": rec["seed"], "status": rec.get("status", "ok"), "error": rec.get("error"),
            "how": rec.get("how"), "continues": rec.get("continued_from"), "dir": str(plan.dir),
            "final": rec.get("final", {}),
            "evals": rec.get("evals", {}), "pretrain_s": pretrain_s, "evals_s": evals_s,
            "resumed_from_epoch": times.get("resumed_from_epoch", 0),
            "run_s": (pretrain_s or 0.0) + evals_s, "wall_s_this_call": rec.get("wall_s_this_call"),
            "command": plan.command, "eval_commands": plan.eval_commands,
            "curve": {"epoch": [h.get("epoch") for h in rec.get("history", [])],
                      "knn_k1": [h.get("knn_k1") for h in rec.get("history", [])],
                      "knn_k200": [h.get("knn_k200") for h in rec.get("history", [])],
                      "z_std": [h.get("z_std") for h in rec.get("history", [])],
                      "loss": [h.get("loss") for h in rec.get("history", [])]}}


def _results(exp: Experiment, header: dict[str, Any], records: list[dict[str, Any]], plans: list[PlannedRun],
             started: str, t0: float, *, complete: bool) -> dict[str, Any]:
    by_key = {p.key: p for p in plans}
    runs = [_run_summary(r, by_key[r["key"]]) for r in records]
    variants = aggregate(exp, records)
    res = {**header, "dry_run": False, "complete": complete, "started": started,
           "finished": datetime.now(UTC).isoformat(timespec="seconds"),
           "timing": {"wall_s": time.perf_counter() - t0, "compute_s": sum(r["run_s"] for r in runs),
                      "estimated_s": header["estimated_s"]},
           "runs": runs, "variants": variants, "claims": check_claims(exp, variants), "paper": exp.paper}
    if exp.decides_default_pairing:
        planned = Counter(p.run.name for p in plans)
        res["default_pairing"] = default_pairing(variants, planned)
    return res


__all__ = [
    "PlannedRun",
    "aggregate",
    "check_claims",
    "default_jobs",
    "default_out",
    "experiment_estimate",
    "final_knn",
    "finished_records",
    "full_scale_launch",
    "mean_std",
    "plan_runs",
    "reproduce",
    "run_all",
]

