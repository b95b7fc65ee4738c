"""An experiment's baselines (raw pixels, random init) under the protocol of its final numbers, measured once per
protocol and kept beside the runs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gsg.eval.baselines import Protocol, evaluate_baselines
from gsg.reproduce.experiments import LinearDef
from gsg.reproduce.files import _write_json
from gsg.reproduce.plan import KNN_K, PlannedRun

BASELINE_SEEDS = 3  # random-init networks averaged for the baseline rows


def baseline_protocol(plan: PlannedRun, linear: LinearDef | None, temperature: float = 0.1) -> Protocol:
    """The protocol of an experiment's final numbers (full-split kNN, its linear probe) for the baselines."""
    from gsg.data.datasets import load_dataset
    from gsg.models.backbones import CIFAR_STEM_MAX_SIZE

    c = plan.config
    ds = load_dataset(c.data.dataset, "train", data_dir=c.data.data_dir, download=False, image_size=c.data.image_size)
    stem = c.model.cifar_stem if c.model.cifar_stem is not None else ds.image_size <= CIFAR_STEM_MAX_SIZE
    spec = {"arch": c.model.backbone, "width": c.model.width, "in_channels": ds.channels, "cifar_stem": stem}
    use_linear = linear is not None
    return Protocol(dataset=c.data.dataset, image_size=ds.image_size, mean=ds.mean, std=ds.std, backbone=spec,
                    data_dir=c.data.data_dir, k=KNN_K, temperature=temperature, linear=use_linear,
                    linear_epochs=linear.epochs if linear else 90,
                    linear_train_subset=linear.train_subset if linear else None,
                    extra={"linear_mode": "features"})


def baseline_key(protocol: dict[str, Any]) -> str:
    """The file name of a protocol's baselines under ``runs/baselines/`` (also how a fresh checkout restores them
    from a results page, :mod:`gsg.reproduce.restore`)."""
    return hashlib.sha256(json.dumps(protocol, sort_keys=True, default=str).encode()).hexdigest()[:12]


def experiment_baselines(plans: Sequence[PlannedRun], linear: LinearDef | None, root: Path,
                         device: str, temperature: float = 0.1) -> dict[str, Any]:
    """Raw-pixel and random-init numbers under the experiment's protocol, computed once per protocol and kept
    in ``root/baselines/`` (experiments sharing a runs directory and protocol share them)."""
    proto = baseline_protocol(plans[0], linear, temperature)
    path = root / "baselines" / f"{baseline_key(dataclasses.asdict(proto))}.json"
    if path.is_file():
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    res = evaluate_baselines(proto, seeds=range(BASELINE_SEEDS), device=device)
    rec = {"protocol": dataclasses.asdict(proto), "results": res, "seconds": time.perf_counter() - t0,
           "command": shlex.join(_baseline_command(proto, linear))}
    _write_json(path, rec)
    return rec


def _baseline_command(p: Protocol, linear: LinearDef | None) -> list[str]:
    cmd = ["gsg", "baselines", "--dataset", p.dataset, "--backbone", p.backbone["arch"], "--width",
           str(p.backbone["width"]), "--image-size", str(p.image_size), "--k", str(p.k), "--temperature",
           str(p.temperature), "--seeds", str(BASELINE_SEEDS)]
    if p.data_dir:
        cmd += ["--data-dir", p.data_dir]
    if linear is None:
        return [*cmd, "--no-linear"]
    cmd += ["--linear-epochs", str(p.linear_epochs)]
    return cmd + (["--linear-train-subset", str(p.linear_train_subset)] if p.linear_train_subset else [])
