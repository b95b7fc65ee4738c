"""Running the planned runs: pretrain (or reuse, resume, or continue) each run under its lock, evaluate it, and
keep its record in ``done.json``."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gsg.checkpoint import load_checkpoint
from gsg.config import Config
from gsg.errors import CheckpointError, ConfigError, GsgError, TrainingDiverged
from gsg.eval.knn import knn_evaluate, tsne_evaluate
from gsg.eval.linear import linear_evaluate
from gsg.reproduce import prefix
from gsg.reproduce.deadline import fits
from gsg.reproduce.experiments import Experiment, LinearDef, TsneDef
from gsg.reproduce.files import _write_json, _write_text
from gsg.reproduce.lock import LOCK_POLL_S, _try_lock
from gsg.reproduce.plan import KNN_K, PlannedRun, estimate, knn_settings, tsne_png
from gsg.train.loop import CHECKPOINT_NAME, pretrain

log = logging.getLogger("gsg.reproduce")

RESULT_FORMAT = 1
DONE_NAME = "done.json"
# Settings that do not change what a run computes: a finished run stays valid when only these differ.
# Settings that do not change what a run trains (its weights): a finished run made with other values is reused.
# The online probe and the decomposition log are bit-identical on/off (tested); W&B and the final baselines only
# report.
VOLATILE = {("run", k) for k in ("out", "device", "progress", "tensorboard", "log_every", "compile", "amp",
                                 "channels_last", "wandb", "wandb_project", "wandb_name", "wandb_mode",
                                 "online_probe", "probe_optimizer", "probe_lr", "final_baselines",
                                 "log_decomposition")} | {("data", k) for k in ("data_dir", "workers", "on_device",
                                                                             "download")}


def _identity(cfg: dict[str, Any]) -> dict[str, Any]:
    return {s: {k: v for k, v in vals.items() if (s, k) not in VOLATILE} for s, vals in cfg.items()}


def _config_diffs(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    a, b = _identity(saved), _identity(now)
    # a key added to the schema after the run was made reads as its default: what that run did
    d = Config().to_dict()
    return [f"{s}.{k}: done.json {a.get(s, {}).get(k, d.get(s, {}).get(k))!r} vs now {v!r}"
            for s, vals in b.items() for k, v in vals.items() if a.get(s, {}).get(k, d.get(s, {}).get(k)) != v]


def final_knn(history: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """kNN of the last epoch that measured it (the online monitor always measures the last epoch)."""
    for h in reversed(history):
        if "knn_k1" in h or "knn_k200" in h:
            return {"knn_k1": h.get("knn_k1"), "knn_k200": h.get("knn_k200"), "epoch": h.get("epoch")}
    return {"knn_k1": None, "knn_k200": None, "epoch": None}


def _final_metrics(history: Sequence[dict[str, Any]]) -> dict[str, Any]:
    last = history[-1] if history else {}
    return {"epochs": len(history), "loss": last.get("loss"), "z_std": last.get("z_std"),
            "z_rankme": last.get("z_rankme"), **{k: v for k, v in final_knn(history).items() if k != "epoch"}}


def _stale_evals(exp: Experiment, plan: PlannedRun, evals: dict[str, Any], linear: LinearDef | None,
                 tsne: TsneDef | None, out: Path) -> list[str]:
    """The evaluations ``exp`` wants that ``evals`` lacks, holds with other settings, or holds as an error."""
    stale = []
    if "knn" in exp.evals and evals.get("knn", {}).get("settings") != knn_settings(exp):
        stale.append("knn")
    for name, want in (("linear", linear), ("tsne", tsne)):
        have = evals.get(name)
        if name in exp.evals and want is not None and (have is None or have.get("settings") != dataclasses.asdict(
                want) or "error" in have or (name == "tsne" and not tsne_png(out, plan.key).is_file())):
            stale.append(name)
    return stale


def _run_evals(exp: Experiment, plan: PlannedRun, rec: dict[str, Any], linear: LinearDef | None,
               tsne: TsneDef | None, out: Path) -> bool:
    """Add the missing or outdated evaluations to ``rec``; True if anything was computed."""
    device = plan.config.run.device  # the evaluations run where the training ran
    evals = rec.setdefault("evals", {})
    times = rec.setdefault("times", {}).setdefault("evals_s", {})
    changed = False
    ckpt = plan.dir / CHECKPOINT_NAME
    stale = _stale_evals(exp, plan, evals, linear, tsne, out)
    if stale and rec.get("restored_from") and not ckpt.is_file():
        # a run restored from its committed metrics has no weights to evaluate: say so instead of recording errors
        raise ConfigError(f"{plan.key} was restored from {rec['restored_from']} without its checkpoint, and this "
                          f"experiment wants evaluations it lacks ({', '.join(stale)}); delete {plan.dir} to "
                          "train it again, or copy its checkpoint.pt there")
    if "knn" in stale:
        # The final numbers use the full protocol (whole train split as bank, whole test split); the online
        # monitor in the history stays small and only draws the curves.
        t0 = time.perf_counter()
        cmd = next((c for c in plan.eval_commands if c.startswith("gsg knn")), "")
        try:
            r = knn_evaluate(ckpt, k=KNN_K, temperature=exp.knn_temperature, device=device, command=cmd)
            evals["knn"] = {"settings": knn_settings(exp), "knn_k1": r["knn_k1"], f"knn_k{KNN_K}": r[f"knn_k{KNN_K}"],
                            "train_size": r["train_size"], "test_size": r["test_size"],
                            "source": "gsg knn: the whole train split as bank, the whole test split",
                            "result_file": r["result_file"]}
        except GsgError as exc:
            log.warning("%s: kNN failed: %s", plan.key, exc)
            evals["knn"] = {"settings": knn_settings(exp), "error": str(exc)}
        times["knn"] = time.perf_counter() - t0
        changed = True
    if "linear" in stale and linear is not None:
        want = dataclasses.asdict(linear)
        t0 = time.perf_counter()
        cmd = next((c for c in plan.eval_commands if c.startswith("gsg linear")), "")
        try:
            r = linear_evaluate(ckpt, epochs=linear.epochs, mode=linear.mode,  # type: ignore[arg-type]
                                train_subset=linear.train_subset, device=device, command=cmd)
            evals["linear"] = {"settings": want, "top1": r["top1"], "top5": r.get("top5"),
                               "protocol": r["protocol"], "train_size": r["train_size"],
                               "test_size": r["test_size"], "result_file": r["result_file"]}
        except GsgError as exc:  # e.g. a probe that diverges on collapsed features: record, go on
            log.warning("%s: linear probe failed: %s", plan.key, exc)
            evals["linear"] = {"settings": want, "error": str(exc)}
        times["linear"] = time.perf_counter() - t0
        changed = True
    if "tsne" in stale and tsne is not None:
        want = dataclasses.asdict(tsne)
        png = tsne_png(out, plan.key)
        t0 = time.perf_counter()
        try:
            r = tsne_evaluate(ckpt, png, max_points=tsne.max_points, train_subset=tsne.train_subset,
                              device=device, title=plan.run.label)
            evals["tsne"] = {"settings": want, "png": r["png"], "knn_k200": r["knn_k200"],
                             "knn_k1": r["knn_k1"], "points": r["points"]}
        except GsgError as exc:
            log.warning("%s: t-SNE failed: %s", plan.key, exc)
            evals["tsne"] = {"settings": want, "error": str(exc)}
        times["tsne"] = time.perf_counter() - t0
        changed = True
    return changed


def seconds_left(exp: Experiment, plan: PlannedRun, source: PlannedRun | None) -> float | None:
    """The cost model's single-core seconds still to spend on ``plan``: 0 once finished, else the epochs its
    checkpoint has not reached (None at full scale, which has no cost model)."""
    if (plan.dir / DONE_NAME).is_file():
        return 0.0
    return estimate(exp, plan, source, done_epochs=_saved_epoch(plan.dir / CHECKPOINT_NAME))


def _saved_epoch(ckpt: Path) -> int:
    if not ckpt.is_file():
        return 0
    try:
        return int(load_checkpoint(ckpt)["train_state"]["epoch"])
    except (CheckpointError, KeyError, TypeError):
        return 0  # pretrain itself reports an unusable checkpoint, with the fix


def _read_done(path: Path) -> dict[str, Any] | None:
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:  # written atomically, so only a hand edit gets here
        log.warning("ignoring unreadable %s (%s): the run is continued from its checkpoint", path, exc)
        return None
    return rec if isinstance(rec, dict) and rec.get("format") == RESULT_FORMAT else None


class LeftToOthers(GsgError):
    """Every run left is being trained by another process (``run_all(wait=False)``): ``keys`` are those runs."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__(f"{len(keys)} run(s) left to the processes training them: {', '.join(keys)}")
        self.keys = keys


def run_all(exp: Experiment, plans: Sequence[PlannedRun], *, linear: LinearDef | None, tsne: TsneDef | None,
            out: Path, on_record: Any = None, wait: bool = True,
            deadline: float | None = None) -> list[dict[str, Any]]:
    """Every plan's record, in plan order. A run that another process is training is put off, not waited
    for: two reproductions on one runs directory share the work instead of one trailing the other. A run that
    continues a shorter one (:mod:`gsg.reproduce.prefix`) is put off until that one has finished.

    When every run left is another process's, ``run_all`` waits for them, or with ``wait=False`` raises
    :class:`LeftToOthers`, so that a process can go on to another experiment's runs meanwhile.

    ``deadline`` (epoch seconds; cpu scale): a run that the cost model says would end after it is not started
    (:mod:`gsg.reproduce.deadline`), nor a run that continues it; the records returned are then only those
    of the runs finished."""
    records: dict[int, dict[str, Any]] = {}
    pending = list(range(len(plans)))
    sources = prefix.prefix_sources(plans)
    index = {p.key: i for i, p in enumerate(plans)}
    estimates = {p.key: estimate(exp, p, sources.get(p.key)) for p in plans}
    skipped: set[str] = set()
    waiting = False
    while pending:
        for i in pending:
            plan = plans[i]
            source = sources.get(plan.key)
            own_ckpt = (plan.dir / CHECKPOINT_NAME).exists()
            if source is not None and source.key in skipped and not own_ckpt:
                log.info("%s: not started: it continues %s, which the deadline left untrained", plan.key, source.key)
                skipped.add(plan.key)
                pending.remove(i)
                break
            if source is not None and index[source.key] in pending and not own_ckpt:
                continue  # its first epochs are being (or will be) trained as the shorter run
            lock = _try_lock(plan.dir, plan.key)
            if lock is None:
                continue
            if deadline is not None:
                left = seconds_left(exp, plan, source)
                if left is not None and not fits(left, time.time(), deadline):
                    lock.unlink(missing_ok=True)
                    log.info("%s: not started: about %.0f min on one core, %.0f min left before the deadline",
                             plan.key, left / 60, max(0.0, deadline - time.time()) / 60)
                    skipped.add(plan.key)
                    pending.remove(i)
                    break
            est = estimates[plan.key]
            log.info("run %d/%d: %s%s", i + 1, len(plans), plan.key, f" (about {est / 60:.0f} min on one core)"
                     if est is not None and exp.scale == "cpu" else "")
            try:
                rec = _run_one_locked(exp, plan, linear=linear, tsne=tsne, out=out, source=source)
            finally:
                lock.unlink(missing_ok=True)
            # this experiment's names, also for a run another experiment sharing the runs directory trained
            rec.update(name=plan.run.name, label=plan.run.label, group=plan.run.group)
            records[i] = rec
            pending.remove(i)
            waiting = False
            if on_record is not None:
                on_record([records[j] for j in sorted(records)])
            break
        else:  # every run left is being trained by another process, or waits for one that is
            if not wait:
                raise LeftToOthers([plans[i].key for i in pending])
            if not waiting:
                log.info("waiting for other processes training %s", ", ".join(plans[i].key for i in pending))
                waiting = True
            time.sleep(LOCK_POLL_S)
    return [records[i] for i in sorted(records)]


def _check_same_config(done: Path, rec: dict[str, Any], plan: PlannedRun) -> None:
    """A finished run is reused only if it was made with exactly this plan's config."""
    diffs = _config_diffs(rec.get("config", {}), plan.config.to_dict())
    if diffs:
        raise ConfigError(f"{done} records a run made with a different config ({'; '.join(diffs)}); "
                          f"use another --out, or delete {plan.dir} to train it again")


def _run_one_locked(exp: Experiment, plan: PlannedRun, *, linear: LinearDef | None, tsne: TsneDef | None,
                    out: Path, source: PlannedRun | None = None) -> dict[str, Any]:
    """Pretrain (or reuse, or resume, or continue ``source``) one run and evaluate it, under its lock; returns its
    done.json record."""
    done = plan.dir / DONE_NAME
    now_cfg = plan.config.to_dict()
    rec = _read_done(done) if done.is_file() else None
    t_start = time.perf_counter()
    if rec is not None:
        _check_same_config(done, rec, plan)
        log.info("%s: finished earlier, reusing %s", plan.key, done)
        if rec.get("status") == "ok" and _run_evals(exp, plan, rec, linear, tsne, out):
            _write_json(done, rec)
        rec["how"] = "reused"
        rec["wall_s_this_call"] = time.perf_counter() - t_start
        return rec

    ckpt = plan.dir / CHECKPOINT_NAME
    continued = prefix.continue_from(plan, source) if source is not None else None
    if continued is not None:
        log.info("%s: continues %s from its epoch %d (%s)", plan.key, continued["source"], continued["epoch"],
                 continued["why"])
    continued = continued or prefix.read_record(plan.dir)
    resumed_from = _saved_epoch(ckpt)
    plan.dir.mkdir(parents=True, exist_ok=True)
    _write_text(plan.dir / "command.txt", plan.command + "\n")
    _write_text(plan.dir / "config.json", json.dumps(now_cfg, indent=2))
    log.info("%s: %s (%s)", plan.key, f"resuming from epoch {resumed_from}" if resumed_from else "training",
             plan.command)
    rec = {"format": RESULT_FORMAT, "key": plan.key, "name": plan.run.name, "label": plan.run.label,
           "group": plan.run.group, "seed": plan.seed, "pid": os.getpid(), "config": now_cfg, "command": plan.command,
           "eval_commands": plan.eval_commands, "checkpoint": str(ckpt), "status": "ok"}
    if continued is not None:
        rec["continued_from"] = continued
    t0 = time.perf_counter()
    try:
        res = pretrain(plan.config, resume="auto")
        history = list(res["history"])
    except TrainingDiverged as exc:  # deterministic: record it, so that a rerun does not repeat it
        log.warning("%s: %s", plan.key, exc)
        history = []
        if ckpt.is_file():
            history = list(load_checkpoint(ckpt).get("metrics", {}).get("history", []))
        rec.update(status="diverged", error=str(exc))
    pretrain_s = time.perf_counter() - t0
    rec.update(history=history, final=_final_metrics(history), evals={},
               times={"pretrain_s": pretrain_s, "evals_s": {}, "resumed_from_epoch": resumed_from})
    if rec["status"] == "ok":
        _run_evals(exp, plan, rec, linear, tsne, out)
    rec["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    _write_json(done, rec)
    rec["how"] = (f"continued {continued['source']} from epoch {continued['epoch']}" if continued is not None
                  and resumed_from == continued["epoch"] else
                  f"resumed from epoch {resumed_from}" if resumed_from else "trained")
    rec["wall_s_this_call"] = time.perf_counter() - t_start
    return rec
