"""The fixed-step integrator (explicit Euler or classical RK4) that every simulator model runs on."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gsg.analysis.dynamics.validate import Array, _check_method, _n_steps
from gsg.errors import ConfigError

State = tuple[Array, ...]
Rhs = Callable[[State], State]


def _step(rhs: Rhs, state: State, dt: float, method: str) -> State:
    """One explicit Euler or classical RK4 step of d(state)/dt = rhs(state)."""
    k1 = rhs(state)
    if method == "euler":
        return tuple(x + dt * k for x, k in zip(state, k1, strict=True))
    k2 = rhs(tuple(x + 0.5 * dt * k for x, k in zip(state, k1, strict=True)))
    k3 = rhs(tuple(x + 0.5 * dt * k for x, k in zip(state, k2, strict=True)))
    k4 = rhs(tuple(x + dt * k for x, k in zip(state, k3, strict=True)))
    return tuple(
        x + (dt / 6.0) * (a + 2.0 * b + 2.0 * c + d)
        for x, a, b, c, d in zip(state, k1, k2, k3, k4, strict=True)
    )


def _integrate(
    rhs: Rhs,
    state: State,
    *,
    dt: float,
    t_max: float,
    record_every: int,
    method: str,
    before_step: Callable[[State], State] | None = None,
) -> tuple[Array, list[Array]]:
    """Integrate with a fixed step, recording every ``record_every`` steps and always the last one.

    ``before_step`` may overwrite part of the state at the start of every step (DirectPred sets Wp
    there); the recorded state is the one after that overwrite, i.e. the one the step actually used.
    """
    _check_method(method)
    n = _n_steps(dt, t_max, record_every)
    times: list[float] = []
    records: list[list[Array]] = [[] for _ in state]
    for k in range(n + 1):
        if before_step is not None:
            state = before_step(state)
        if k % record_every == 0 or k == n:
            times.append(k * dt)
            for rec, x in zip(records, state, strict=True):
                rec.append(x.copy())
        if k == n:
            break
        with np.errstate(over="ignore", invalid="ignore"):  # a blow-up is reported just below
            state = _step(rhs, state, dt, method)
        if not all(np.all(np.isfinite(x)) for x in state):
            raise ConfigError(
                f"the integration diverged at t={(k + 1) * dt:.4g} (non-finite values); "
                f"reduce dt (now {dt}) or use method='rk4'"
            )
    return np.asarray(times), [np.stack(r) for r in records]
