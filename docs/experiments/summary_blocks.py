"""Regenerate (or check) the tables of a summary page that are copies of a reproduction page's numbers.

    python docs/experiments/summary_blocks.py docs/results/summary.md           # rewrite the blocks
    python docs/experiments/summary_blocks.py docs/results/summary.md --check   # exit 1 when one is stale

A block is the text between two markers, the first naming a ``results.json`` (relative to the summary) and what
to draw from it:

    <!-- generated: crops_cpu2/results.json seeds -->
    ...
    <!-- end generated -->

``seeds``: every variant's numbers per seed (the page's own "Each seed" table, ``report.seeds_section``).
``differences``: every claim's paired difference with its 95% interval and verdict, kNN beside linear.

The summary's prose reads these numbers; the tables themselves are never typed by hand, so a finished run can
not leave the summary quoting an older table than its page.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from gsg.reproduce.markdown import knn_label, table
from gsg.reproduce.report import seeds_section
from gsg.reproduce.stats import fmt_difference

BLOCK = re.compile(r"(<!-- generated: (?P<json>\S+) (?P<kind>\w+) -->\n)(?P<body>.*?)(<!-- end generated -->)",
                   re.S)
_SUFFIX = re.compile(r" \((knn|linear)\)$")


def differences(res: dict[str, Any]) -> str:
    """One row per comparison: its kNN and linear paired differences and verdicts, in the page's claim order."""
    rows: dict[str, dict[str, Any]] = {}
    for c in res.get("claims", []):
        m = _SUFFIX.search(c["claim"])
        metric = m.group(1) if m else "knn"
        rows.setdefault(_SUFFIX.sub("", c["claim"]), {})[metric] = c
    body = []
    for name, by in rows.items():
        verdicts = {by[k]["verdict"] for k in ("knn", "linear") if k in by}
        verdict = verdicts.pop() if len(verdicts) == 1 else "; ".join(
            f"{k}: {by[k]['verdict']}" for k in ("knn", "linear") if k in by)
        body.append([name, *(fmt_difference(by[k].get("difference"), missing="–") if k in by else "–"
                             for k in ("knn", "linear")),
                     verdict])
    return table(["comparison (A > B)", f"kNN {knn_label(res)}: A − B", "linear: A − B", "verdict"], body) + "\n"


def seeds(res: dict[str, Any]) -> str:
    lines = seeds_section(res)
    if not lines:
        raise SystemExit("summary_blocks: a seeds block needs a page of several seeds with finished runs")
    return "\n".join(lines[2:]).rstrip("\n") + "\n"  # without the page's heading


KINDS = {"seeds": seeds, "differences": differences}


def render(summary: Path) -> str:
    text = summary.read_text()

    def one(m: re.Match[str]) -> str:
        kind = m.group("kind")
        if kind not in KINDS:
            raise SystemExit(f"summary_blocks: {summary}: unknown block kind {kind!r}; use one of {', '.join(KINDS)}")
        source = summary.parent / m.group("json")
        if not source.is_file():
            raise SystemExit(f"summary_blocks: {summary}: {source} does not exist; write the page first "
                             "(gsg reproduce ... --report-only)")
        return m.group(1) + KINDS[kind](json.loads(source.read_text())) + m.group(5)

    out = BLOCK.sub(one, text)
    opened = text.count("<!-- generated: ")
    if opened != len(BLOCK.findall(text)):
        raise SystemExit(f"summary_blocks: {summary}: a '<!-- generated: FILE KIND -->' marker has no "
                         "'<!-- end generated -->' after it")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("summary", type=Path)
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 when a block is not current")
    args = ap.parse_args(argv)
    new = render(args.summary)
    if args.check:
        if new != args.summary.read_text():
            print(f"{args.summary}: generated blocks are stale; run python docs/experiments/summary_blocks.py "
                  f"{args.summary}", file=sys.stderr)
            return 1
        return 0
    args.summary.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
