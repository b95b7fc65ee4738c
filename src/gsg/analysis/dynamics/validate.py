"""Argument checks shared by the simulator's models and integrator (a ConfigError that names the fix).

Also the ``Array`` alias and the integration methods every model accepts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gsg.errors import ConfigError

Array = np.ndarray
_METHODS = ("euler", "rk4")


def _check_method(method: str) -> None:
    if method not in _METHODS:
        raise ConfigError(f"unknown integration method {method!r}; use one of {', '.join(_METHODS)}")


def _positive(name: str, value: Any, *, allow_zero: bool = False) -> Array:
    arr = np.asarray(value, dtype=np.float64)
    bad = (arr < 0) if allow_zero else (arr <= 0)
    if not np.all(np.isfinite(arr)) or np.any(bad):
        need = "non-negative" if allow_zero else "positive"
        raise ConfigError(f"{name} must be finite and {need}, got {value!r}; pass a {need} number")
    return arr


def _n_steps(dt: float, t_max: float, record_every: int) -> int:
    _positive("dt", dt)
    _positive("t_max", t_max)
    if int(record_every) != record_every or record_every < 1:
        raise ConfigError(f"record_every must be a positive integer, got {record_every!r}")
    n = round(t_max / dt)
    if n < 1:
        raise ConfigError(f"t_max={t_max} is shorter than one step dt={dt}; increase t_max or reduce dt")
    return n
