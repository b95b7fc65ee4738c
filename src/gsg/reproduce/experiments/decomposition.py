"""Zhang et al.'s vector-decomposition experiments, and GSG / BYOL on the same metrics."""

from __future__ import annotations

from typing import Any

from gsg.reproduce.experiments.base import (
    Claim,
    Experiment,
    Overrides,
    RunDef,
    _merge,
    _sg,
    at_scale,
    projection_claim,
    projection_twins,
)
from gsg.reproduce.experiments.paper import PAPER_ZHANG

DECOMPOSITION_CURVES: tuple[str, ...] = (
    "z_center_ratio", "z_residual_ratio", "z_rankme", "ge_norm", "ge_center_norm", "ge_residual_norm",
    "ge_center_residual_ratio", "eta_p", "p_center_norm", "sel_center_norm", "sel_residual_norm", "sel_eta")
ZHANG_GROUPS = ("Architectures", "Gradient surgery", "Conjecture 1", "GSG and BYOL")


def _decomposition(scale: str) -> Experiment:
    """Zhang et al.'s experiments as options of the one model and loop, and GSG / BYOL on the same metrics."""
    arch, surg, conj, gsg = ZHANG_GROUPS
    simsiam = _sg("simsiam", "symmetric")
    nopred = {"model": {"predictor": "none"}}
    matched = {"views": "reuse", "pairing": "matching"}

    def run(name: str, label: str, group: str, overrides: Overrides, *, fig5: bool = False) -> RunDef:
        # The cpu runs with Table 1's / Fig. 5's names are the same trainings (shared with --runs); at full scale
        # Fig. 5 trains for 400 epochs, so its no-predictor names get their own directories here.
        return RunDef(name, label, group, overrides, dir_name=f"{name}_200ep" if fig5 and scale == "full" else "")

    runs = [
        run("simsiam", "SimSiam (predictor on the online branch)", arch, simsiam),
        run("simsiam_nopred", "Naive Siamese (no predictor)", arch, _merge(simsiam, nopred), fig5=True),
        run("simsiam_sympred", "Symmetric predictor (sg(h(z_b)) target)", arch,
            _merge(simsiam, {"model": {"predictor": "symmetric"}})),
        run("simsiam_invpred", "Inverse predictor (h^{-1}(sg z_b) target)", arch,
            _merge(simsiam, {"model": {"predictor": "inverse"}})),
        run("simsiam_biaspred", "Bias-only predictor h(z) = z + b", arch,
            _merge(simsiam, {"model": {"predictor": "bias"}})),
        # GSG and BYOL before Zhang et al.'s surgery and toy losses: the GSG question is the new one, and its
        # no-predictor runs decide it (the order runs are trained in, and the order of the page's rows).
        # GSG both ways: 4 crops (the authors' scheme; Table 1's and Fig. 5's runs) and 2 matched crops (the crops
        # control's run)
        run("simsiam_gsg", "SimSiam w/ GSG (4 crops, the authors' scheme)", gsg, _sg("simsiam", "guided")),
        run("simsiam_gsg2", "SimSiam w/ GSG (2 crops, matched pairs)", gsg, _sg("simsiam", "guided", ssl=matched)),
        run("simsiam_gsg_nopred", "SimSiam w/ GSG w/o predictor (4 crops)", gsg,
            _sg("simsiam", "guided", **nopred), fig5=True),
        run("simsiam_gsg2_nopred", "SimSiam w/ GSG w/o predictor (2 crops, matched pairs)", gsg,
            _sg("simsiam", "guided", ssl=matched, **nopred)),
        run("byol", "BYOL (EMA target)", gsg, _sg("byol", "symmetric")),
        run("byol_nopred", "BYOL w/o predictor", gsg, _sg("byol", "symmetric", **nopred), fig5=True),
        *(run(f"simsiam_surgery_{k}", label, surg, _merge(simsiam, {"ssl": {"grad_surgery": k}}))
          for k, label in (("basic", "SimSiam, basic gradient only (G_e removed)"),
                           ("center", "SimSiam, basic + o_e"), ("residual", "SimSiam, basic + r_e"))),
        run("conj1_center", "-Z_a·sg(o_z) (no predictor)", conj, _merge(simsiam, nopred, {"ssl": {"loss": "center"}})),
        run("conj1_residual", "-Z_a·sg(r_a) (no predictor)", conj,
            _merge(simsiam, nopred, {"ssl": {"loss": "residual"}})),
    ]
    ours = "(ours: GSG is not in Zhang et al.; a reading of GSG through their decomposition)"
    claims = [
        Claim("Naive Siamese (no predictor) collapses (final kNN within 5 points of chance)", "collapsed",
              "simsiam_nopred", tol=5.0),
        Claim("Symmetric predictor collapses", "collapsed", "simsiam_sympred", tol=5.0),
        Claim("Inverse predictor does not collapse", "not_collapsed", "simsiam_invpred", tol=5.0),
        Claim("Bias-only predictor does not collapse", "not_collapsed", "simsiam_biaspred", tol=5.0),
        Claim("Removing G_e (basic gradient only) collapses", "collapsed", "simsiam_surgery_basic", tol=5.0),
        Claim("Basic + o_e only does not collapse", "not_collapsed", "simsiam_surgery_center", tol=5.0),
        Claim("Basic + r_e only does not collapse", "not_collapsed", "simsiam_surgery_residual", tol=5.0),
        Claim("Keeping o_e and r_e (SimSiam) beats o_e only", "greater", "simsiam", "simsiam_surgery_center"),
        Claim("Keeping o_e and r_e (SimSiam) beats r_e only", "greater", "simsiam", "simsiam_surgery_residual"),
        Claim("-Z_a·sg(o_z) raises m_o over training (Conjecture 1)", "rises", "conj1_center",
              metric="z_center_ratio"),
        Claim("-Z_a·sg(o_z) ends with a larger m_o than -Z_a·sg(r_a)", "greater", "conj1_center", "conj1_residual",
              metric="z_center_ratio"),
        Claim("-Z_a·sg(r_a) ends with a larger m_r than -Z_a·sg(o_z)", "greater", "conj1_residual", "conj1_center",
              metric="z_residual_ratio"),
        Claim("SimSiam's extra gradient de-centres: final η_p < 0 (Fig. 5a: ≈ -0.5)", "below", "simsiam",
              metric="eta_p", tol=0.0),
        Claim("SimSiam w/ GSG w/o predictor does not collapse (GSG paper, Fig. 5)", "not_collapsed",
              "simsiam_gsg_nopred", tol=5.0),
        Claim(f"GSG's choice de-centres without a predictor: final η of its selection gradient < 0 {ours}", "below",
              "simsiam_gsg_nopred", metric="sel_eta", tol=0.0),
        Claim(f"GSG's choice de-centres with a predictor: final η_sel < 0 {ours}", "below", "simsiam_gsg",
              metric="sel_eta", tol=0.0),
        Claim(f"GSG's choice de-centres on 2 matched crops: final η_sel < 0 {ours}", "below", "simsiam_gsg2",
              metric="sel_eta", tol=0.0),
        Claim(f"GSG's choice de-centres on 2 matched crops without a predictor: final η_sel < 0 {ours}", "below",
              "simsiam_gsg2_nopred", metric="sel_eta", tol=0.0),
        Claim("SimSiam w/ GSG w/o predictor on 2 matched crops does not collapse", "not_collapsed",
              "simsiam_gsg2_nopred", tol=5.0),
        Claim("BYOL w/o predictor collapses (GSG paper, Fig. 5)", "collapsed", "byol_nopred", tol=5.0),
        projection_claim("SimSiam", "simsiam", collapsed=False),
    ]
    # Every collapse verdict again on the projection (added 2026-12-02, after the naive Siamese run: m_o 0.997 and
    # RankMe 2.4, its backbone's kNN near the random-init backbone's).
    claims += projection_twins(claims, tuple(runs))
    bn = ("The projector ends in an affine BatchNorm (model.proj_last_bn = affine, lightly's CIFAR-10 head, which the "
          "GSG paper follows): its learnable shift lets every output be the same vector, so complete collapse can show "
          "as m_o -> 1 and RankMe -> 1; the claims read collapse from the final kNN (within 5 points of chance).")
    what = ("Per-epoch metrics on each epoch's last batch (docs/decomposition.md): m_o, m_r of z/|z|; |G_e|, |o_e|, "
            "|r_e| (per-sample norms, batch mean) and η_p of the loss's extra gradient at the normalised prediction "
            "(before any surgery); sel_*: what a pairing policy's choice adds to the symmetric loss's gradient.")
    common: dict[str, Any] = {"name": "decomposition", "scale": scale,
                              "title": "Zhang et al.'s vector decomposition as experiments, and GSG through it",
                              "paper_ref": "Zhang et al. (ICLR 2022), Tables 2 and 4, Figs. 3-5, §5",
                              "runs": tuple(runs), "evals": ("knn",), "knn_metric": "knn_k1", "chance": 10.0,
                              "claims": tuple(claims), "default_seeds": 1, "paper": {"zhang": PAPER_ZHANG},
                              "curves": DECOMPOSITION_CURVES}
    return at_scale(scale, common,
                    cpu_notes=(what, bn, "The runs named as Table 1's, Fig. 5's and the four-crop control's are "
                               "those trainings when the experiments share --runs."),
                    full_notes=(what, bn, "Full scale: CIFAR-10, ResNet-18, 200 epochs (Table 1's setting; the "
                                "paper's own schedule is not verified)."))
