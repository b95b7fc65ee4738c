"""The rule that picks gsg's default view/pairing mode from the four-crop control, applied to its numbers.

The fidelity issue asks which of ``matching`` (2 crops, disjoint pairs), ``cycle`` (2 crops, each image in two
pairs) and ``fresh`` (4 crops, the authors' scheme) is ``pretrain``'s default, decided by measurement per epoch
and per encoder pass. The rule was written into docs/fidelity.md before the runs that decide it had finished;
this module is that rule as code, so the crops page states what it picks from the numbers it shows:

* a mode's **gain** is its metric minus symmetric SimSiam's at the same encoder passes per image, paired by
  seed (:data:`GAINS`): 2-crop modes × 12 epochs against symmetric on 2 crops, and the 48-crop budgets
  (4 crops × 12 epochs, matched pairs × 24 epochs) against symmetric on 2 crops × 24 epochs;
* rule 1: if a gain counts (:func:`gsg.reproduce.stats.paired_difference`: a 95% interval excluding 0 and a
  mean of at least a point; beyond 2 points with one seed), the mode with the largest counting gain wins;
* rule 2: else matching stays, unless another mode beats it head to head at equal encoder passes by a
  difference that counts (:data:`HEAD_TO_HEAD`); then that mode;
* rule 3: kNN and the linear probe are read the same way; the default follows kNN (the paper's headline
  metric) and a disagreement is stated.

4 crops against matched pairs at equal epochs (:data:`PER_EPOCH`) is reported beside the rule, not part of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gsg.reproduce.aggregate import by_seed
from gsg.reproduce.markdown import table
from gsg.reproduce.stats import fmt_difference, paired_difference

DEFAULT = "matching"  # what rule 2 keeps: the paper's per-pair rule at the encoder cost of plain SimSiam
MODES: dict[str, str] = {"matching": "2 crops in matched pairs: views reuse, pairing matching",
                         "cycle": "2 crops in a cycle: views reuse, pairing cycle",
                         "fresh": "4 crops, the authors' scheme: views fresh"}
METRICS: tuple[tuple[str, str], ...] = (("knn", "kNN k=200"), ("linear", "linear probe"))


@dataclass(frozen=True)
class Comparison:
    """``a`` − ``b`` (run names of the crops experiment), paired by seed, at the budget ``passes``."""

    mode: str  # the mode this comparison is about
    a: str
    b: str
    passes: str  # the encoder budget both sides share


GAINS: tuple[Comparison, ...] = (
    Comparison("matching", "simsiam_gsg2", "simsiam_sym2", "2 crops × 12 epochs"),
    Comparison("cycle", "simsiam_gsg2cycle", "simsiam_sym2", "2 crops × 12 epochs"),
    Comparison("fresh", "simsiam_gsg4", "simsiam_sym2x2", "48 crops per image"),
    Comparison("matching", "simsiam_gsg2x2", "simsiam_sym2x2", "48 crops per image"),
)
# another mode − matching at equal encoder passes: a difference that counts here moves the default (rule 2)
HEAD_TO_HEAD: tuple[Comparison, ...] = (
    Comparison("cycle", "simsiam_gsg2cycle", "simsiam_gsg2", "2 crops × 12 epochs"),
    Comparison("fresh", "simsiam_gsg4", "simsiam_gsg2x2", "48 crops per image"),
)
PER_EPOCH = Comparison("fresh", "simsiam_gsg4", "simsiam_gsg2", "12 epochs (4 crops have twice the passes)")
RUNS: tuple[str, ...] = tuple(dict.fromkeys(r for c in (*GAINS, *HEAD_TO_HEAD, PER_EPOCH) for r in (c.a, c.b)))


def _compare(variants: Mapping[str, Any], c: Comparison, metric: str) -> dict[str, Any]:
    d = paired_difference(by_seed(variants, c.a, metric), by_seed(variants, c.b, metric))
    return {"mode": c.mode, "a": c.a, "b": c.b, "passes": c.passes, **d}


def _largest_win(comparisons: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The comparison with the largest mean among those that count in favour of their mode, or None."""
    wins = [c for c in comparisons if c["direction"] == "+"]
    return max(wins, key=lambda c: c["mean"]) if wins else None


def decide(variants: Mapping[str, Any], metric: str = "knn") -> dict[str, Any]:
    """Rules 1 and 2 on one metric: ``{metric, mode, rule, reason, gains, head_to_head, per_epoch}``.

    ``variants``: :func:`gsg.reproduce.aggregate.aggregate`'s output (``metrics[metric]["by_seed"]`` per run).
    ``mode`` is None when a comparison the rule needs has no paired seed yet.

    >>> v = lambda *xs: {"metrics": {"knn": {"by_seed": dict(enumerate(xs))}}}
    >>> runs = {"simsiam_sym2": v(80, 81, 80), "simsiam_gsg2": v(83, 84, 83.5), "simsiam_gsg2cycle": v(80),
    ...         "simsiam_sym2x2": v(80, 80, 81), "simsiam_gsg4": v(80.5, 80, 81), "simsiam_gsg2x2": v(81)}
    >>> d = decide(runs)
    >>> d["mode"], d["rule"]
    ('matching', 1)
    """
    gains = [_compare(variants, c, metric) for c in GAINS]
    heads = [_compare(variants, c, metric) for c in HEAD_TO_HEAD]
    per_epoch = _compare(variants, PER_EPOCH, metric)
    out: dict[str, Any] = {"metric": metric, "gains": gains, "head_to_head": heads, "per_epoch": per_epoch}
    if any(not g["n"] for g in (*gains, *heads)):
        missing = sorted({r for g in (*gains, *heads) if not g["n"] for r in (g["a"], g["b"])})
        return {**out, "mode": None, "rule": None, "reason": "not decided: no paired seed yet for "
                + ", ".join(missing)}
    best = _largest_win(gains)
    if best is not None:
        return {**out, "mode": best["mode"], "rule": 1,
                "reason": f"rule 1: the largest gain that counts is {best['mode']}'s at {best['passes']} "
                          f"({fmt_difference(best)} over symmetric SimSiam)"}
    best = _largest_win(heads)
    if best is not None:
        return {**out, "mode": best["mode"], "rule": 2,
                "reason": f"rule 2: no mode's gain counts in its favour, and {best['mode']} beats matched pairs at "
                          f"{best['passes']} by a difference that counts ({fmt_difference(best)})"}
    return {**out, "mode": DEFAULT, "rule": 2,
            "reason": "rule 2: no mode's gain over symmetric SimSiam counts in its favour, and no mode beats matched "
                      "pairs at equal encoder passes by a difference that counts: matched pairs stay"}


def default_pairing(variants: Mapping[str, Any], planned_seeds: Mapping[str, int]) -> dict[str, Any]:
    """The rule on kNN and on the linear probe (rule 3), and whether every seed it uses has run.

    ``planned_seeds``: run name → the seeds the experiment plans for it; the choice is ``final`` only when each
    run of the rule has all of them (until then the page calls it provisional).
    """
    by_metric = {m: decide(variants, m) for m, _ in METRICS}
    knn, linear = by_metric["knn"]["mode"], by_metric["linear"]["mode"]
    done = {r: len(variants.get(r, {}).get("seeds", [])) for r in RUNS}
    final = all(done[r] >= planned_seeds.get(r, 1) for r in RUNS)
    return {"mode": knn, "final": final, "agree": knn is not None and knn == linear, "by_metric": by_metric,
            "seeds": {r: [done[r], planned_seeds.get(r, 1)] for r in RUNS}}


def _row(c: Mapping[str, Any], variants: Mapping[str, Any]) -> list[str]:
    label = {n: variants.get(n, {}).get("label", n) for n in (c["a"], c["b"])}
    verdict = {"+": "counts (for)", "-": "counts (against)", "=": "does not count", "?": "n/a"}[c["direction"]]
    return [c["mode"], c["passes"], f"{label[c['a']]} − {label[c['b']]}", fmt_difference(c), verdict]


def markdown(decision: Mapping[str, Any], variants: Mapping[str, Any]) -> list[str]:
    """The section of the crops page: what the rule picks, why, and every comparison it read."""
    mode = decision["mode"]
    status = "final" if decision["final"] else "provisional: not every seed of the rule's runs has finished"
    pick = f"**{mode}** ({MODES[mode]})" if mode else "**nothing yet**"
    lines = ["## The default pairing, by the pre-registered rule", "",
             "The rule in docs/fidelity.md (\"Decided by measurement\"), written before the runs that decide it had "
             "finished, "
             "applied to the numbers above by `gsg.reproduce.pairing_rule`: a mode's gain is its score minus "
             "symmetric SimSiam's at the same encoder passes, paired by seed; rule 1, the largest gain that counts "
             "wins; rule 2, else matched pairs stay unless another mode beats them at equal encoder passes by a "
             "difference that counts; rule 3, the linear probe is read the same way and the default follows kNN.",
             "", f"The rule picks {pick}; {status}.", ""]
    for metric, head in METRICS:
        d = decision["by_metric"][metric]
        rows = [_row(c, variants) for c in (*d["gains"], *d["head_to_head"], d["per_epoch"])]
        kinds = ["gain"] * len(d["gains"]) + ["head to head"] * len(d["head_to_head"]) + ["per epoch (not in rule)"]
        lines += [f"{head}: {d['reason']}.", "",
                  table(["comparison", "mode", "budget", "a − b", "paired difference", "verdict"],
                        [[k, *r] for k, r in zip(kinds, rows, strict=True)]), ""]
    linear = decision["by_metric"]["linear"]["mode"]
    if mode and linear and not decision["agree"]:
        lines += [f"kNN and the linear probe disagree (kNN: {mode}, linear: {linear}); by rule 3 the default "
                  "follows kNN.", ""]
    seeds = ", ".join(f"{variants.get(r, {}).get('label', r)} {n}/{want}"
                      for r, (n, want) in decision["seeds"].items())
    lines += [f"Seeds finished / planned: {seeds}.", ""]
    return lines


__all__ = ["DEFAULT", "GAINS", "HEAD_TO_HEAD", "MODES", "PER_EPOCH", "RUNS", "Comparison", "decide",
           "default_pairing", "markdown"]
