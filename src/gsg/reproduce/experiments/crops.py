"""The four-crop control: GSG's effect apart from the extra crops of the authors' scheme."""

from __future__ import annotations

from typing import Any

from gsg.reproduce.experiments.base import (
    NAMES,
    Claim,
    Experiment,
    RunDef,
    at_scale,
)
from gsg.reproduce.experiments.paper import PAPER_TABLE1

# The four-crop control (issue: does GSG help beyond its extra crops?). name suffix -> (stop-gradient, views,
# pairing, epochs factor, label). "fresh" = 4 crops per image (the authors' scheme), "reuse" = 2 crops; pairing None
# is the views' default (matching for reuse). The 2-crop runs at 2x epochs have the encoder passes of a 4-crop run.
# gsg2cycle and gsg2x2 decide the default pairing (fidelity issue): matching against cycle at equal epochs, and
# matching against fresh at equal encoder passes.
CROP_VARIANTS: dict[str, tuple[str, str, str | None, int, str]] = {
    "sym2": ("symmetric", "reuse", None, 1, "symmetric, 2 crops"),
    "sym4": ("symmetric", "fresh", None, 1, "symmetric, 4 crops"),
    "gsg4": ("guided", "fresh", None, 1, "GSG, 4 crops (the authors' scheme)"),
    "gsg2": ("guided", "reuse", "matching", 1, "GSG, 2 crops (matched pairs)"),
    "sym2x2": ("symmetric", "reuse", None, 2, "symmetric, 2 crops, 2× epochs"),
    "random4": ("random", "fresh", None, 1, "random sg, 4 crops"),
    "gsg2cycle": ("guided", "reuse", "cycle", 1, "GSG, 2 crops (cycle pairing)"),
    "gsg2x2": ("guided", "reuse", "matching", 2, "GSG, 2 crops (matched pairs), 2× epochs"),
}
CROP_RUNS = {"simsiam": ("sym2", "sym4", "gsg4", "gsg2", "sym2x2", "random4", "gsg2cycle", "gsg2x2"),
             "byol": ("sym2", "sym4", "gsg4", "gsg2")}
CROP_SEEDED = {("simsiam", v) for v in ("sym2", "sym4", "gsg4", "gsg2", "sym2x2")}  # 3 seeds; the rest 1
# the runs Table 1 / Fig. 4 train too (same config): trained once with a shared --runs directory
CROP_SHARED = {"sym2": "", "gsg4": "_gsg", "random4": "_random"}


def _crops(scale: str) -> Experiment:
    runs = []
    for m, variants in CROP_RUNS.items():
        for v in variants:
            sg, views, pairing, factor, label = CROP_VARIANTS[v]
            shared = f"{m}{CROP_SHARED[v]}" if v in CROP_SHARED else ""
            runs.append(RunDef(f"{m}_{v}", f"{NAMES[m]}, {label}", NAMES[m],
                               {"ssl": {"method": m, "stop_gradient": sg, "views": views,
                                        **({"pairing": pairing} if pairing else {})}},
                               dir_name=shared, max_seeds=None if (m, v) in CROP_SEEDED else 1,
                               epochs_factor=factor))
    claims: list[Claim] = []
    for m in ("simsiam", "byol"):
        n = NAMES[m]
        for metric in ("knn", "linear"):
            claims += [
                Claim(f"{n}, the authors' comparison: GSG on 4 crops > symmetric on 2 ({metric})", "greater",
                      f"{m}_gsg4", f"{m}_sym2", metric=metric),
                Claim(f"{n}, equal crops: GSG on 4 crops > symmetric on 4 ({metric})", "greater", f"{m}_gsg4",
                      f"{m}_sym4", metric=metric),
                Claim(f"{n}, equal crops: GSG on 2 crops (matched) > symmetric on 2 ({metric})", "greater",
                      f"{m}_gsg2", f"{m}_sym2", metric=metric),
                Claim(f"{n}, crops alone: symmetric on 4 crops > symmetric on 2 ({metric})", "greater", f"{m}_sym4",
                      f"{m}_sym2", metric=metric)]
            if m == "simsiam":
                claims += [
                    Claim(f"{n}, equal encoder passes: GSG on 4 crops > symmetric on 2 at 2× epochs ({metric})",
                          "greater", f"{m}_gsg4", f"{m}_sym2x2", metric=metric),
                    # FastSiam's point (lightly): more views per image, not more epochs, at the same encoder passes
                    Claim(f"{n}, equal encoder passes: symmetric on 4 crops > symmetric on 2 at 2× epochs ({metric})",
                          "greater", f"{m}_sym4", f"{m}_sym2x2", metric=metric),
                    Claim(f"{n}, 4 crops: GSG > random sg ({metric})", "greater", f"{m}_gsg4", f"{m}_random4",
                          metric=metric),
                    # the default pairing (fidelity issue): per epoch and per encoder pass
                    Claim(f"{n}, GSG on 2 crops: matched pairs > the cycle ({metric})", "greater", f"{m}_gsg2",
                          f"{m}_gsg2cycle", metric=metric),
                    Claim(f"{n}, equal encoder passes: GSG on 4 crops > GSG on 2 matched crops at 2× epochs "
                          f"({metric})", "greater", f"{m}_gsg4", f"{m}_gsg2x2", metric=metric),
                    Claim(f"{n}, 2× epochs: GSG on 2 matched crops > symmetric on 2 ({metric})", "greater",
                          f"{m}_gsg2x2", f"{m}_sym2x2", metric=metric)]
    common: dict[str, Any] = {"name": "crops", "scale": scale,
                              "title": "The four-crop control: GSG's effect apart from its extra crops",
                              "paper_ref": "GSG paper, Table 1 and Appendix A (the authors' four crops)",
                              "runs": tuple(runs), "evals": ("knn", "linear"), "knn_metric": "knn_k200",
                              "chance": 10.0, "claims": tuple(claims), "default_seeds": 3,
                              "paper": {"table1": PAPER_TABLE1}, "seed_major": True,
                              "decides_default_pairing": True}
    note = ("SimSiam's five main variants run 3 seeds (paired differences with 95% intervals); random sg, the cycle "
            "pairing, GSG at 2× epochs and the BYOL rows 1 seed. A 2-crop run at 2× epochs has the encoder passes of "
            "a 4-crop run. The cycle pairing (each image in two pairs that share its two crops) and GSG on 2 matched "
            "crops at 2× epochs decide the default pairing: per epoch and per encoder pass. With a constant lr a "
            "2× epochs run continues the final checkpoint of its 1× run when that has finished (its first half is "
            "that run, step for step: `gsg.reproduce.prefix`), so its pretraining time is the second half's.")
    return at_scale(scale, common, linear=True, cpu_notes=(note,), full_notes=(note,))
