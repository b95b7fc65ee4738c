"""The numbers and statements of the papers the experiments reproduce (GSG, Tian et al., Zhang et al.)."""

from __future__ import annotations

# GSG paper (Lee & Lee, NeurIPS 2023), Table 1: mean ± std over 3 runs. CIFAR-10 kNN is k=1, ImageNet k=200.
PAPER_TABLE1: dict[str, dict[str, tuple[float, float]]] = {
    "simsiam": {"cifar10_knn": (77.0, 0.67), "cifar10_linear": (82.7, 0.26),
                "imagenet_knn": (51.7, 0.11), "imagenet_linear": (67.9, 0.09)},
    "simsiam_gsg": {"cifar10_knn": (82.2, 0.48), "cifar10_linear": (86.4, 0.28),
                    "imagenet_knn": (58.4, 0.17), "imagenet_linear": (69.4, 0.02)},
    "byol": {"cifar10_knn": (85.4, 0.24), "cifar10_linear": (88.0, 0.09),
             "imagenet_knn": (56.5, 0.16), "imagenet_linear": (69.9, 0.02)},
    "byol_gsg": {"cifar10_knn": (89.4, 0.21), "cifar10_linear": (90.3, 0.16),
                 "imagenet_knn": (62.2, 0.06), "imagenet_linear": (71.1, 0.12)},
}

# GSG paper Table 4: ImageNet linear top-1 (%) by batch size b (ResNet-50, 100 epochs), plus the explicit
# contrastive baselines the table quotes from MoCo and SimCLR (b = negatives from the batch or memory bank).
PAPER_TABLE4: dict[str, dict[int, float]] = {
    "simsiam_gsg": {1024: 70.1, 512: 69.4, 256: 69.9},
    "byol_gsg": {1024: 71.9, 512: 71.0, 256: 71.6},
}
PAPER_TABLE4_CONTRASTIVE: dict[str, dict[int, float]] = {
    "End-to-end (He et al.)": {1024: 57.3, 512: 56.3, 256: 54.9},
    "InstDisc (Wu et al.)": {1024: 54.1, 512: 52.0, 256: 50.0},
    "MoCo (He et al.)": {1024: 57.5, 512: 56.4, 256: 54.7},
    "SimCLR (Chen et al.)": {1024: 62.8, 512: 60.7, 256: 57.5},
}

# GSG paper Fig. 4 / Fig. 5 give curves only; their text makes these qualitative statements.
PAPER_FIG4: dict[str, str] = {
    "simsiam": "baseline; ≈ random sg",
    "simsiam_gsg": "best in every panel",
    "simsiam_random": "≈ symmetric (original)",
    "simsiam_reverse": "much lower; on CIFAR-10 collapses to 10% (chance)",
    "byol": "baseline; ≈ random sg",
    "byol_gsg": "best in every panel",
    "byol_random": "≈ symmetric (original)",
    "byol_reverse": "much lower; does not collapse on CIFAR-10 (momentum encoder)",
}
PAPER_FIG5: dict[str, str] = {
    "simsiam_nopred": "collapses to chance (10% CIFAR-10, 0.1% ImageNet)",
    "simsiam_gsg_nopred": "does not collapse (below the run with a predictor)",
    "byol_nopred": "collapses to chance (10% CIFAR-10, 0.1% ImageNet)",
    "byol_gsg_nopred": "does not collapse (below the run with a predictor)",
}
PAPER_TSNE: dict[str, str] = {
    "simsiam": "Fig. 6(a): clusters overlap more",
    "simsiam_gsg": "Fig. 6(b): clusters better separated than (a)",
    "byol": "Fig. 6(c): clusters overlap more",
    "byol_gsg": "Fig. 6(d): clusters better separated than (c)",
}

# Tian, Chen & Ganguli (ICML 2021), BYOL with EMA, no predictor bias, linear top-1 (%), mean ± std over 5 seeds.
# STL-10, ResNet-18, 100 epochs: Table 3 ("regular" W_p) for the 2-layer and the SGD-trained linear predictor,
# Table 6 (rho 0.3, eps 0.1) for DirectPred. CIFAR-10, 100 epochs: Table 8 (DirectPred and its "SGD
# baseline", the SGD-trained linear predictor); Table 8 has no 2-layer row. No paper runs these with GSG.
TIAN_STL10: dict[str, tuple[float, float]] = {"mlp": (78.85, 0.25), "linear": (74.51, 0.47),
                                               "directpred": (77.86, 0.16)}
TIAN_CIFAR10: dict[str, tuple[float, float]] = {"linear": (84.49, 0.20), "directpred": (85.21, 0.23)}


# Zhang et al. (ICLR 2022) through gsg: what each run is expected to do in their paper (verification level of
# /work/shared/notes/directpred_and_collapse.md Part B: definitions and the experiment list checked, numbers
# not, except the η_p ≈ -0.5 of Fig. 5a).
PAPER_ZHANG: dict[str, str] = {
    "simsiam": "does not collapse; η_p ≈ -0.5 (Fig. 5a: de-centring)",
    "simsiam_nopred": "collapses (Table 2 / Fig. 3, naive Siamese)",
    "simsiam_sympred": "collapses (Table 2 / Fig. 3: (a) with f replaced by h∘f)",
    "simsiam_invpred": "does not collapse (Table 2 / Fig. 3: the asymmetry matters)",
    "simsiam_biaspred": "does not collapse (§5: a single bias layer is sufficient)",
    "simsiam_surgery_basic": "collapses (Table 4: G_e removed)",
    "simsiam_surgery_center": "does not collapse (Table 4: o_e only)",
    "simsiam_surgery_residual": "does not collapse (Table 4: r_e only); both kept is best",
    "conj1_center": "m_o increases (Conjecture 1, Fig. 4)",
    "conj1_residual": "m_r increases (Conjecture 1, Fig. 4)",
}
