"""``gsg reproduce --deadline``: start no run that the cpu cost model says cannot finish before a given time.

For a machine lent for a fixed time (a batch job's time limit, a session that ends): a run cut short there loses
whatever its checkpoint held once the machine is gone, so a reproduction should train only what fits and leave
the rest, listed as still to do, for the next machine. The check uses the cost model's single-core estimate
(:func:`gsg.reproduce.experiments.cost.estimate_seconds`) of what is left of a run (its checkpointed epochs are not
counted), so it is only as good as that model on the machine at hand: give an earlier deadline on a slower one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from gsg.errors import ConfigError

_RELATIVE = re.compile(r"^\+(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m?)?$")
_CLOCK = re.compile(r"^(?P<h>\d{1,2}):(?P<m>\d{2})$")
_FORMS = "+MINUTES (+150, +90m, +2h, +1h30m), HH:MM later today, or an ISO date and time (2026-12-04T06:00)"


def parse_deadline(text: str, now: datetime | None = None) -> datetime:
    """The time ``text`` names, as an aware datetime: ``+MINUTES`` or ``+XhYm`` from ``now``, ``HH:MM`` today in
    local time (``now``'s zone when given), or an ISO 8601 date and time (local time unless it carries an
    offset). A time that has already passed is an error rather than a deadline that starts nothing.

    >>> start = datetime(2026, 12, 3, 14, 0).astimezone()
    >>> parse_deadline("+1h30m", start).strftime("%H:%M")
    '15:30'
    >>> parse_deadline("16:20", start).strftime("%H:%M")
    '16:20'
    """
    now = datetime.now().astimezone() if now is None else now if now.tzinfo else now.astimezone()
    s = text.strip()
    when: datetime | None = None
    rel = _RELATIVE.match(s)
    clock = _CLOCK.match(s)
    if rel and s != "+" and (rel["h"] or rel["m"]):
        when = now + timedelta(hours=int(rel["h"] or 0), minutes=int(rel["m"] or 0))
    elif clock:
        h, m = int(clock["h"]), int(clock["m"])
        if h > 23 or m > 59:
            raise ConfigError(f"--deadline {text!r} is not a time of day; give {_FORMS}")
        when = now.replace(hour=h, minute=m, second=0, microsecond=0)
    else:
        try:
            parsed = datetime.fromisoformat(s)
        except ValueError:
            raise ConfigError(f"--deadline {text!r} is not a time; give {_FORMS}") from None
        when = parsed.astimezone() if parsed.tzinfo is None else parsed
    if when <= now:
        raise ConfigError(f"--deadline {text!r} ({when.isoformat(timespec='minutes')}) has already passed (now "
                          f"{now.isoformat(timespec='minutes')}); give a later time, with its date for tomorrow "
                          f"({(now + timedelta(days=1)).date()}T{s if clock else '06:00'}), or +MINUTES")
    return when


def fits(estimate_s: float, now_s: float, deadline_s: float) -> bool:
    """Whether a run estimated at ``estimate_s`` seconds, started at ``now_s``, ends by ``deadline_s``."""
    return now_s + estimate_s <= deadline_s


def pack(estimates: Mapping[str, float], order: Sequence[str], lanes: int, seconds_left: float) -> list[str]:
    """The runs of ``order`` that ``lanes`` processes would start before the deadline, each taking the next run
    as soon as it is free (as :func:`gsg.reproduce.execute.run_all` does) and skipping a run that would end
    after it: what ``--dry-run --deadline`` reports.

    >>> pack({"a": 60.0, "b": 50.0, "c": 30.0}, ["a", "b", "c"], lanes=1, seconds_left=100.0)
    ['a', 'c']
    """
    busy = [0.0] * max(1, lanes)
    started = []
    for key in order:
        i = busy.index(min(busy))
        if fits(estimates[key], busy[i], seconds_left):
            busy[i] += estimates[key]
            started.append(key)
    return started
