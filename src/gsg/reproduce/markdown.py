"""Markdown and number formatting shared by the reproduction pages: values with their spread, the paper's
numbers, tables and durations."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

DASH = "–"


def fmt(mean: float | None, std: float | None = None, digits: int = 1) -> str:
    """``mean ± std`` (std only when there is one), ``–`` for a missing value."""
    if mean is None or not math.isfinite(mean):
        return DASH
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits + 1}f}"  # the paper's style: 82.2 ± 0.48


def fmt_stat(stat: dict[str, Any] | None, digits: int = 1) -> str:
    if not stat:
        return DASH
    return fmt(stat.get("mean"), stat.get("std"), digits)


def fmt_paper(value: tuple[float, float] | float | None) -> str:
    if value is None:
        return DASH
    if isinstance(value, tuple | list):
        return f"{value[0]:.{_decimals(value[0])}f} ± {value[1]:.2f}"
    return f"{value:.{_decimals(value)}f}"


def _decimals(v: float) -> int:
    return 2 if round(v, 1) != round(v, 2) else 1


def knn_label(res: dict[str, Any]) -> str:
    """The k of a page's kNN metric, as its tables and plots name it."""
    return "k=1" if res["knn_metric"] == "knn_k1" else "k=200"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table; ``|`` inside a cell is escaped."""
    def cell(x: str) -> str:
        return str(x).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def minutes(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


__all__ = ["DASH", "fmt", "fmt_paper", "fmt_stat", "minutes", "table"]
