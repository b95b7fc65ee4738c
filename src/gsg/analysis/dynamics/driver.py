"""``run_simulation``, the ``gsg simulate`` driver: resolve overrides, run one experiment (or all), write its JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gsg.analysis.dynamics.experiments import (
    _exp_alignment,
    _exp_ema,
    _exp_phase,
    _exp_predictor_lr,
    _exp_trajectories,
    _exp_weight_decay,
)
from gsg.analysis.dynamics.params import _DEFAULTS, SIMULATION_EXPERIMENTS, _resolve
from gsg.analysis.dynamics.validate import _check_method
from gsg.errors import ConfigError


def _jsonable(obj: Any) -> Any:
    """numpy -> Python; non-finite floats -> None so the JSON is standard."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


_RUNNERS: dict[str, Callable[[dict[str, Any], Path], dict[str, Any]]] = {
    "trajectories": _exp_trajectories,
    "alignment": _exp_alignment,
    "phase": _exp_phase,
    "weight_decay": _exp_weight_decay,
    "ema": _exp_ema,
    "predictor_lr": _exp_predictor_lr,
}


def run_simulation(experiment: str, out_dir: Path | str, **overrides: Any) -> dict[str, Any]:
    """Run one simulator experiment (or ``"all"``), write its PNG and ``<experiment>.json`` to ``out_dir``.

    Experiments: ``trajectories`` (Fig. 2 eigenvalues for gradient / symmetric / DirectPred predictors),
    ``alignment`` (Fig. 2 alignment, Theorem 3, Fig. 9), ``phase`` (Figs. 3-4 with fixed points and the
    collapse basin), ``weight_decay`` (Fig. 5 top, Table 4 #3-#5), ``ema`` (Fig. 5 bottom, #8-#10) and
    ``predictor_lr`` (#1-#2, cf. Fig. 6). ``overrides`` replace defaults (see :func:`experiment_defaults`);
    strings such as ``"0.1"`` or ``"0,0.05,0.1"`` are accepted for the CLI. With ``"all"`` an override
    goes to every experiment that has that parameter. Returns the JSON-ready dict that was written
    (with ``all``: ``{experiment: result}``, each also written to its own JSON).
    """
    out = Path(out_dir)
    if experiment == "all":
        known = set().union(*(_DEFAULTS[e] for e in SIMULATION_EXPERIMENTS))
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(
                f"no experiment has parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
            )
        return {
            e: run_simulation(e, out, **{k: v for k, v in overrides.items() if k in _DEFAULTS[e]})
            for e in SIMULATION_EXPERIMENTS
        }
    cfg = _resolve(experiment, overrides)
    _check_method(cfg["method"])
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create output directory {out}: {exc}; pass a writable --out") from exc
    result = _RUNNERS[experiment](cfg, out)
    json_path = out / f"{experiment}.json"
    result = _jsonable({"experiment": experiment, "parameters": cfg, **result,
                        "files": [*result["files"], json_path]})
    json_path.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    return result
