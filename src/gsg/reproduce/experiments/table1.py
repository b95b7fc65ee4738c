"""The GSG paper's experiments on its stop-gradient variants of SimSiam and BYOL: Table 1, Fig. 4 (guiding
vs random and reverse sg), Fig. 5 (no predictor) and Fig. 6's t-SNE (Table 1's runs)."""

from __future__ import annotations

from typing import Any

from gsg.reproduce.experiments.base import (
    CPU_EPOCHS,
    CPU_TSNE,
    FULL_TSNE,
    NAMES,
    SG_LABEL,
    SG_SUFFIX,
    Claim,
    Experiment,
    RunDef,
    _sg,
    at_scale,
    projection_twins,
)
from gsg.reproduce.experiments.paper import PAPER_FIG4, PAPER_FIG5, PAPER_TABLE1, PAPER_TSNE


def _four_algorithms() -> tuple[RunDef, ...]:
    return tuple(RunDef(f"{m}{SG_SUFFIX[sg]}", f"{NAMES[m]}{SG_LABEL[sg]}", NAMES[m], _sg(m, sg))
                 for m in ("simsiam", "byol") for sg in ("symmetric", "guided"))


def _table1(scale: str) -> Experiment:
    gsg_better = tuple(
        Claim(f"{NAMES[m]} w/ GSG > {NAMES[m]} ({metric})", "greater", f"{m}_gsg", m, metric=metric)
        for m in ("simsiam", "byol") for metric in ("knn", "linear"))
    common: dict[str, Any] = {"name": "table1", "scale": scale, "title": "Table 1: representation quality",
                              "paper_ref": "GSG paper, Table 1", "runs": _four_algorithms(),
                              "evals": ("knn", "linear"), "knn_metric": "knn_k1", "chance": 10.0,
                              "claims": gsg_better, "paper": {"table1": PAPER_TABLE1}}
    return at_scale(scale, common, linear=True, cpu={"default_seeds": 1}, full={"default_seeds": 3},
                    full_notes=("Table 1 at full scale runs the CIFAR-10 half (3 seeds, as the paper); the ImageNet "
                                "columns are the paper's only (our ImageNet recipe: `gsg reproduce table4 --scale "
                                "full`, b=512 rows).",))


# The projection's collapse metrics, logged every epoch: m_o (the claims' projection_twins read it) and RankMe.
COLLAPSE_CURVES = ("z_center_ratio", "z_rankme")


def _fig4(scale: str) -> Experiment:
    runs = tuple(RunDef(f"{m}{SG_SUFFIX[sg]}", f"{NAMES[m]}{SG_LABEL[sg]}", NAMES[m], _sg(m, sg))
                 for m in ("simsiam", "byol") for sg in ("symmetric", "guided", "random", "reverse"))
    claims: list[Claim] = []
    for m in ("simsiam", "byol"):
        n = NAMES[m]
        claims += [Claim(f"{n}: GSG > symmetric", "greater", f"{m}_gsg", m),
                   Claim(f"{n}: GSG > random sg", "greater", f"{m}_gsg", f"{m}_random"),
                   Claim(f"{n}: GSG > reverse sg", "greater", f"{m}_gsg", f"{m}_reverse"),
                   Claim(f"{n}: symmetric ≈ random sg (within 3 points)", "close", m, f"{m}_random", tol=3.0),
                   Claim(f"{n}: reverse sg < symmetric", "greater", m, f"{m}_reverse")]
    claims += [Claim("SimSiam w/ reverse sg collapses (CIFAR-10 in the paper; final kNN within 5 points of "
                     "chance)", "collapsed", "simsiam_reverse", tol=5.0),
               Claim("BYOL w/ reverse sg does not collapse", "not_collapsed", "byol_reverse", tol=5.0)]
    claims += projection_twins(claims, runs)
    common: dict[str, Any] = {"name": "fig4", "scale": scale, "title": "Figure 4: importance of guiding",
                              "paper_ref": "GSG paper, Figure 4 and §6.1", "runs": runs, "evals": ("knn",),
                              "knn_metric": "knn_k1", "chance": 10.0, "claims": tuple(claims),
                              "paper": {"fig4": PAPER_FIG4}, "default_seeds": 1, "curves": COLLAPSE_CURVES}
    return at_scale(scale, common,
                    cpu_notes=(f"Fig. 4 at cpu scale: 8 runs of {CPU_EPOCHS} epochs, kNN every 2 epochs; the "
                               "symmetric and guided runs are Table 1's.",),
                    full_notes=("Fig. 4 at full scale reproduces the CIFAR-10 panels (c) and (d).",))


def _fig5(scale: str) -> Experiment:
    runs = tuple(RunDef(f"{m}{SG_SUFFIX[sg]}_nopred", f"{NAMES[m]}{SG_LABEL[sg]} w/o predictor", NAMES[m],
                        _sg(m, sg, model={"predictor": "none"}))
                 for m in ("simsiam", "byol") for sg in ("symmetric", "guided"))
    claims = tuple(
        c for m in ("simsiam", "byol") for c in (
            Claim(f"{NAMES[m]} w/o predictor collapses (final kNN within 5 points of chance)", "collapsed",
                  f"{m}_nopred", tol=5.0),
            Claim(f"{NAMES[m]} w/ GSG w/o predictor does not collapse", "not_collapsed", f"{m}_gsg_nopred",
                  tol=5.0),
            Claim(f"{NAMES[m]} w/o predictor: GSG > symmetric", "greater", f"{m}_gsg_nopred", f"{m}_nopred")))
    claims += projection_twins(claims, runs)
    common: dict[str, Any] = {"name": "fig5", "scale": scale, "title": "Figure 5: preventing collapse",
                              "paper_ref": "GSG paper, Figure 5 and §6.2", "runs": runs, "evals": ("knn",),
                              "knn_metric": "knn_k1", "chance": 10.0, "claims": claims,
                              "paper": {"fig5": PAPER_FIG5}, "default_seeds": 1, "curves": COLLAPSE_CURVES}
    return at_scale(scale, common, full_epochs=400,
                    cpu_notes=(f"Fig. 5 at cpu scale: {CPU_EPOCHS} epochs (the paper runs CIFAR-10 for 400 epochs "
                               "to confirm complete collapse; collapse may not be complete this early). "
                               "std(z/|z|)·√d is plotted too: 0 means complete collapse.",),
                    full_notes=("Fig. 5 at full scale: CIFAR-10 for 400 epochs, as the paper (panels (c), (d)).",))


def _tsne(scale: str) -> Experiment:
    table1 = _table1(scale)
    claims = tuple(Claim(f"{NAMES[m]} w/ GSG separates classes better (proxy: kNN k=200 on the t-SNE "
                         "panel's features)", "greater", f"{m}_gsg", m, metric="tsne_knn")
                   for m in ("simsiam", "byol"))
    # The same runs as Table 1 (same names and configs): with the same --out, Table 1's runs are reused.
    return Experiment(name="tsne", scale=scale, title="Figure 6 (Appendix E): t-SNE of test-set representations",
                      paper_ref="GSG paper, Appendix E, Figure 6", preset=table1.preset, base=table1.base,
                      runs=table1.runs, default_seeds=1, evals=("knn", "tsne"), knn_metric="knn_k1",
                      chance=10.0, dataset_label=table1.dataset_label,
                      tsne=CPU_TSNE if scale == "cpu" else FULL_TSNE, claims=claims,
                      notes=(table1.notes[0],), paper={"tsne": PAPER_TSNE})
