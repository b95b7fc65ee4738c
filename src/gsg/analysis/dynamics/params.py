"""The parameters of ``gsg simulate``'s experiments: their defaults, and overrides (CLI strings too) typed like them."""

from __future__ import annotations

import json
from typing import Any

from gsg.errors import ConfigError

SIMULATION_EXPERIMENTS: tuple[str, ...] = (
    "trajectories",
    "alignment",
    "phase",
    "weight_decay",
    "ema",
    "predictor_lr",
)

# sigma2 = 0.5 gives eta_c = 1/6; eta = 0.04 and beta = 0.4 are the continuous-time values of the
# paper's Fig. 5 (lr 0.01: eta_bar = 4e-4, EMA 0.996).
_COMMON: dict[str, Any] = {
    "sigma2": 0.5,
    "alpha_p": 1.0,
    "tau": 1.0,
    "seed": 0,
    "dt": 0.1,
    "method": "rk4",
    "collapse_tol": 1e-3,
}
_MATRIX: dict[str, Any] = {"n1": 32, "n2": 16, "init_scale": 0.1, "eta": 0.04, "beta": 0.4}
_DEFAULTS: dict[str, dict[str, Any]] = {
    "trajectories": {**_COMMON, **_MATRIX, "t_max": 300.0, "record_every": 5, "directpred_eps": 0.1},
    "alignment": {**_COMMON, **_MATRIX, "t_max": 300.0, "record_every": 5},
    "phase": {
        **_COMMON, "etas": [0.0, 0.04, 0.2], "p_range": [-0.3, 0.9], "s_range": [0.0, 0.6],
        "grid": 90, "t_max": 400.0, "dt": 0.2,
    },
    "weight_decay": {
        **_COMMON, **_MATRIX, "etas": [round(0.02 * k, 2) for k in range(13)], "t_max": 600.0,
        "record_every": 20, "n_starts": 40,
    },
    "ema": {
        **_COMMON, **_MATRIX, "betas": [None, 2.0, 0.4, 0.1, 0.04], "Wa0": "zero", "t_max": 600.0,
        "record_every": 10,
    },
    "predictor_lr": {
        **_COMMON, **_MATRIX, "alphas": [0.1, 0.3, 1.0, 3.0, 10.0], "beta": None, "symmetric_predictor": True,
        "t_max": 600.0, "record_every": 10, "grid": 40,
    },
}


def experiment_defaults(experiment: str) -> dict[str, Any]:
    """The parameters (and their defaults) that ``run_simulation(experiment, ...)`` accepts as overrides."""
    if experiment not in _DEFAULTS:
        raise ConfigError(
            f"unknown simulation experiment {experiment!r}; "
            f"use one of {', '.join((*SIMULATION_EXPERIMENTS, 'all'))}"
        )
    return json.loads(json.dumps(_DEFAULTS[experiment]))  # deep copy; all defaults are JSON types


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Accept CLI strings ("0.1", "0,0.1,0.2", "none") as well as Python values, typed like the default."""
    if isinstance(default, list):
        # Element type from the first non-None default (betas starts with None = SimSiam).
        elem = next((d for d in default if d is not None), 0.0)
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            items = [items]
        return [_coerce(name, v, elem) for v in items if not (isinstance(v, str) and not v.strip())]
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("none", "null", "simsiam"):
            return None
        if isinstance(default, str):
            return text
        if isinstance(default, bool):
            if text.lower() in ("true", "1", "yes", "on"):
                return True
            if text.lower() in ("false", "0", "no", "off"):
                return False
            raise ConfigError(f"override {name}={value!r} is not a boolean; pass true or false")
        try:
            return int(text) if isinstance(default, int) and not isinstance(default, bool) else float(text)
        except ValueError:
            raise ConfigError(
                f"override {name}={value!r} is not a number; pass e.g. {name}={default!r}"
            ) from None
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
        if value != int(value):
            raise ConfigError(f"override {name} must be an integer, got {value!r}")
        return int(value)
    return value


def _resolve(experiment: str, overrides: dict[str, Any]) -> dict[str, Any]:
    cfg = experiment_defaults(experiment)
    for key, value in overrides.items():
        if key not in cfg:
            raise ConfigError(
                f"experiment {experiment!r} has no parameter {key!r}; valid ones: {', '.join(sorted(cfg))}"
            )
        cfg[key] = _coerce(key, value, cfg[key])
    return cfg
