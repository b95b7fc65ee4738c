"""The paper's experiments as data: for each experiment and scale, the runs (name + config overrides), the
evaluations, the claims to check and the numbers the papers report.

Nothing here trains; :mod:`gsg.reproduce.runner` executes these definitions and :mod:`gsg.reproduce.report`
renders them. Two scales:

``cpu``
    Fashion-MNIST (read offline from Debian's ``dataset-fashion-mnist``), a 1024-image training subset, a
    CIFAR-stem ResNet-18 of width 0.25 at 28 px, batch 128, lr 0.06 constant (the paper's CIFAR-10 setting),
    one seed. Each experiment is sized to finish within 60 minutes on 2 CPU cores (:func:`estimate_seconds`).
``full``
    The paper's settings for GPUs: the ``cifar10`` preset (CIFAR ResNet-18, 200 epochs, batch 512, lr 0.06
    constant; Fig. 5: 400 epochs) and, for Table 4 only, the ``imagenet`` preset (ResNet-50, 100 epochs).
"""

from __future__ import annotations

import copy
import difflib
import math
from dataclasses import dataclass, field
from typing import Any

from gsg.errors import ConfigError

Overrides = dict[str, dict[str, Any]]

EXPERIMENTS: tuple[str, ...] = ("table1", "fig4", "fig5", "table4", "tsne", "directpred", "crops",
                               "decomposition")
SCALES: tuple[str, ...] = ("cpu", "full")
EVALS: tuple[str, ...] = ("knn", "linear", "tsne")


@dataclass(frozen=True, eq=False)
class RunDef:
    """One training run of an experiment (repeated per seed)."""

    name: str  # directory and key: out/runs/<name>-s<seed>
    label: str  # the paper's name for it (table row, legend entry)
    group: str  # plot panel / table block
    overrides: Overrides  # applied on top of the experiment's base
    # Directory name when the run is the same training as another experiment's (Table 4's default batch is
    # Table 1's GSG run): with a shared --runs directory it is trained once. Empty: the name.
    dir_name: str = ""
    max_seeds: int | None = None  # at most this many seeds, whatever --seeds asks (the four-crop control's 1-seed rows)
    epochs_factor: int = 1  # train for this multiple of the experiment's epochs

    @property
    def key_name(self) -> str:
        return self.dir_name or self.name

    def seeds(self, requested: int) -> int:
        return requested if self.max_seeds is None else min(requested, self.max_seeds)


@dataclass(frozen=True)
class LinearDef:
    mode: str  # "features" (precomputed clean features, CPU) | "augment" (the paper's protocol)
    epochs: int = 90
    train_subset: int | None = None


@dataclass(frozen=True)
class TsneDef:
    max_points: int = 5000
    train_subset: int | None = None  # kNN bank for the accuracy in each panel's title


@dataclass(frozen=True)
class Claim:
    """A statement of the paper checked on our numbers.

    kind: ``greater`` (a > b), ``close`` (|a - b| <= tol), ``collapsed`` / ``not_collapsed`` (a's final kNN
    within ``tol`` points of chance, the paper's criterion "the accuracy converges to the chance level"),
    ``range`` (max - min over ``runs`` <= tol), ``range_less`` (the range over ``runs`` is smaller than the range
    over ``other``), ``below`` / ``above`` (a's final ``metric`` < / > ``tol``),
    ``rises`` (a's ``metric`` at its last epoch > at its first). ``metric``: ``knn`` (the experiment's kNN),
    ``linear``, ``tsne_knn``, or a per-epoch history key of the experiment's ``curves`` (its final value).
    """

    text: str
    kind: str
    a: str = ""
    b: str = ""
    runs: tuple[str, ...] = ()
    metric: str = "knn"
    tol: float = 0.0
    other: tuple[str, ...] = ()  # range_less: the runs whose range must be the larger


@dataclass(frozen=True, eq=False)
class Experiment:
    name: str
    scale: str
    title: str
    paper_ref: str
    preset: str | None
    base: Overrides
    runs: tuple[RunDef, ...]
    default_seeds: int
    evals: tuple[str, ...]
    knn_metric: str  # history key reported as "kNN" (k=1: the paper's CIFAR-10 protocol; k=200: ImageNet)
    chance: float  # chance-level accuracy (%) of the dataset, for the collapse criterion
    dataset_label: str
    linear: LinearDef | None = None
    tsne: TsneDef | None = None
    claims: tuple[Claim, ...] = ()
    notes: tuple[str, ...] = ()
    paper: dict[str, Any] = field(default_factory=dict)
    knn_temperature: float = 0.1  # of the final weighted kNN (InstDisc's 0.1; ImageNet: the authors' main_knn.py 0.2)
    seed_major: bool = False  # train every variant's seed 0 first, then seed 1, ...: paired comparisons come early
    # Per-epoch history keys (beyond kNN and std) aggregated over seeds, plotted, and usable as claim metrics.
    curves: tuple[str, ...] = ()

    def run(self, name: str) -> RunDef:
        for r in self.runs:
            if r.name == name:
                return r
        raise KeyError(name)


# ------------------------------------------------------------------------------------------ paper numbers

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

# ------------------------------------------------------------------------------------------ scales

# CPU scale (chosen by measurement, docs/results/cpu_scale.md): the whole Fashion-MNIST training set (60,000
# images), a CIFAR-stem ResNet-18 of width 0.25 at 28 px, projector 2×512 ending in an affine BatchNorm (the CIFAR
# recipe's head, lightly's), predictor 512 → 128 → 512 (SimSiam's 4× bottleneck), batch 256, SGD lr 0.1 × b/256
# constant (the paper's CIFAR setting has no schedule; 0.1 learned 2.5× faster than 0.05 in the measured curves),
# wd 5e-4, CPU_EPOCHS epochs. The budget is the point of
# symmetric SimSiam's measured learning curve (full-split kNN against images seen) that fits the 45-minute limit
# for one 2-crop run on 2 cores; the learning curve, the baselines and the choice are on that page. Every cpu
# experiment shares this base, so the runs they have in common are one training each with a shared --runs.
CPU_EPOCHS = 12
CPU_TRAIN_IMAGES = 60000  # Fashion-MNIST's training split: the cost model's images per epoch
CPU_BASE: Overrides = {
    "data": {"dataset": "fashion-mnist", "subset": None},
    "model": {"backbone": "resnet18", "width": 0.25, "proj_dim": 512, "pred_hidden": 128, "proj_last_bn": "affine"},
    # The cifar10 preset's BYOL target: a constant 0.99 momentum, as the GSG authors' code.
    "ssl": {"ema_momentum": 0.99, "ema_schedule": "constant"},
    "optim": {"epochs": CPU_EPOCHS, "batch_size": 256, "lr": None, "base_lr": 0.1, "schedule": "constant",
              "weight_decay": 5e-4},
    # The online monitor only draws the curves (a 10,000-image bank, 2,000 test images); the final kNN and the
    # linear probe use the whole splits (plan.KNN_K, CPU_LINEAR).
    # bf16 autocast (AVX-512 BF16): a step is 0.64× as long as fp32's; the fp32 and bf16 curves of the same
    # recipe agree within run-to-run spread (docs/results/cpu_scale.md, "Speed"). Every variant shares it.
    "run": {"knn_every": 2, "knn_train_subset": 10000, "knn_test_subset": 2000, "progress": False,
            "checkpoint_every": 1, "amp": "bf16"},
}
CPU_LINEAR = LinearDef(mode="features", epochs=90, train_subset=None)  # the whole train split
# The panel titles' kNN uses the full training set as bank, as `gsg tsne` does, so the commands match exactly.
CPU_TSNE = TsneDef(max_points=2000, train_subset=None)
FULL_LINEAR = LinearDef(mode="augment", epochs=90)
FULL_TSNE = TsneDef(max_points=5000)

CPU_DATASET = "Fashion-MNIST (28 px, grayscale, 10 classes)"
CIFAR_DATASET = "CIFAR-10"
IMAGENET_DATASET = "ImageNet (image folder given by data.data_dir)"

# Static notes; gsg.reproduce.setting adds the ones that depend on the resolved settings (kNN bank, linear probe).
# "{dataset}" is replaced by the dataset the runs trained on.
CROPS_NOTE = ("As in the paper and the authors' code, the symmetric baselines see 2 crops per image and GSG, random "
              "and reverse stop-gradient 4 (`views = fresh`, twice the encoder passes per step); "
              "`gsg reproduce crops` separates GSG's effect from the extra crops.")
CPU_NOTES: tuple[str, ...] = (
    "Scale `cpu`: every number in the *ours* columns was measured by this command on {dataset} with a small "
    "ResNet-18 on CPU. The paper's numbers are on CIFAR-10 / ImageNet with full-size ResNets and far longer "
    "training: the absolute values are **not comparable**; what is compared is the ordering of the variants, "
    "i.e. the paper's claims.",
    "One seed by default at cpu scale (`--seeds N` for more): a difference of a point or two between "
    "variants is within seed-to-seed noise.",
    CROPS_NOTE,
)
FULL_NOTES: tuple[str, ...] = (
    "Scale `full`: the paper's settings; every number in the *ours* columns was measured by this command on "
    "{dataset}.",
    CROPS_NOTE,
)


def _merge(*layers: Overrides | None) -> Overrides:
    """Later layers win key by key; the inputs are not modified."""
    out: Overrides = {}
    for layer in layers:
        for section, values in (layer or {}).items():
            out.setdefault(section, {}).update(copy.deepcopy(values))
    return out


def _sg(method: str, stop_gradient: str, **more: dict[str, Any]) -> Overrides:
    """A run as the paper trains it: the symmetric baselines on 2 crops per image (``TwoCropsTransform``), GSG and
    its random / reverse ablations on 4 (the authors' ``FourCropsTransform``: ``views = fresh``)."""
    views = "reuse" if stop_gradient == "symmetric" else "fresh"
    return _merge({"ssl": {"method": method, "stop_gradient": stop_gradient, "views": views}}, more)


NAMES = {"simsiam": "SimSiam", "byol": "BYOL"}
SG_SUFFIX = {"symmetric": "", "guided": "_gsg", "random": "_random", "reverse": "_reverse"}
SG_LABEL = {"symmetric": "", "guided": " w/ GSG", "random": " w/ random sg", "reverse": " w/ reverse sg"}


def _four_algorithms() -> tuple[RunDef, ...]:
    return tuple(RunDef(f"{m}{SG_SUFFIX[sg]}", f"{NAMES[m]}{SG_LABEL[sg]}", NAMES[m], _sg(m, sg))
                 for m in ("simsiam", "byol") for sg in ("symmetric", "guided"))


# ------------------------------------------------------------------------------------------ definitions


def _table1(scale: str) -> Experiment:
    gsg_better = tuple(
        Claim(f"{NAMES[m]} w/ GSG > {NAMES[m]} ({metric})", "greater", f"{m}_gsg", m, metric=metric)
        for m in ("simsiam", "byol") for metric in ("knn", "linear"))
    common: dict[str, Any] = {"name": "table1", "scale": scale, "title": "Table 1: representation quality",
                              "paper_ref": "GSG paper, Table 1", "runs": _four_algorithms(),
                              "evals": ("knn", "linear"), "knn_metric": "knn_k1", "chance": 10.0,
                              "claims": gsg_better, "paper": {"table1": PAPER_TABLE1}}
    if scale == "cpu":
        return Experiment(**common, preset=None, base=CPU_BASE, default_seeds=1, dataset_label=CPU_DATASET,
                          linear=CPU_LINEAR,
                          notes=CPU_NOTES)
    return Experiment(**common, preset="cifar10", base={"optim": {"epochs": 200}}, default_seeds=3,
                      dataset_label=CIFAR_DATASET, linear=FULL_LINEAR,
                      notes=(*FULL_NOTES, "Table 1 at full scale runs the CIFAR-10 half (3 seeds, as the paper); "
                             "the ImageNet columns are the paper's only (our ImageNet recipe: `gsg reproduce "
                             "table4 --scale full`, b=512 rows)."))


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
    common: dict[str, Any] = {"name": "fig4", "scale": scale, "title": "Figure 4: importance of guiding",
                              "paper_ref": "GSG paper, Figure 4 and §6.1", "runs": runs, "evals": ("knn",),
                              "knn_metric": "knn_k1", "chance": 10.0, "claims": tuple(claims),
                              "paper": {"fig4": PAPER_FIG4}, "default_seeds": 1}
    if scale == "cpu":
        return Experiment(**common, preset=None, base=CPU_BASE, dataset_label=CPU_DATASET,
                          notes=(*CPU_NOTES, f"Fig. 4 at cpu scale: 8 runs of {CPU_EPOCHS} epochs, kNN every 2 "
                                 "epochs; the symmetric and guided runs are Table 1's."))
    return Experiment(**common, preset="cifar10", base={"optim": {"epochs": 200}}, dataset_label=CIFAR_DATASET,
                      notes=(*FULL_NOTES, "Fig. 4 at full scale reproduces the CIFAR-10 panels (c) and (d)."))


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
    common: dict[str, Any] = {"name": "fig5", "scale": scale, "title": "Figure 5: preventing collapse",
                              "paper_ref": "GSG paper, Figure 5 and §6.2", "runs": runs, "evals": ("knn",),
                              "knn_metric": "knn_k1", "chance": 10.0, "claims": claims,
                              "paper": {"fig5": PAPER_FIG5}, "default_seeds": 1}
    if scale == "cpu":
        return Experiment(**common, preset=None, base=CPU_BASE, dataset_label=CPU_DATASET,
                          notes=(*CPU_NOTES, f"Fig. 5 at cpu scale: {CPU_EPOCHS} epochs (the paper runs CIFAR-10 "
                                 "for 400 epochs to confirm complete collapse; collapse may not be complete this "
                                 "early). "
                                 "std(z/|z|)·√d is plotted too: 0 means complete collapse."))
    return Experiment(**common, preset="cifar10", base={"optim": {"epochs": 400}}, dataset_label=CIFAR_DATASET,
                      notes=(*FULL_NOTES, "Fig. 5 at full scale: CIFAR-10 for 400 epochs, as the paper (panels (c), "
                             "(d))."))


# cpu batch sizes stand for the paper's: the same 1/2×, 1×, 2× around the default batch.
TABLE4_BATCHES = {"cpu": (512, 256, 128), "full": (1024, 512, 256)}
# the paper's batch each of ours stands for, per scale
TABLE4_PAPER_B = {"cpu": {512: 1024, 256: 512, 128: 256}, "full": {1024: 1024, 512: 512, 256: 256}}


# The explicit contrastive rows of Table 4, trained by this framework (the paper quotes their papers' numbers,
# which stay in PAPER_TABLE4_CONTRASTIVE). SimCLR varies the batch as the GSG rows; MoCo varies its queue (its
# negatives: the paper's b for MoCo) at MoCo's batch of 256, which is 128 at cpu scale by the same map as the
# batches (cpu 512 / 256 / 128 stand for 1024 / 512 / 256), so the cpu queues are 512 / 256 / 128.
TABLE4_MOCO_BATCH = {"cpu": 128, "full": 256}
# SimCLR v1's head (Chen et al. 2020): g(h) = W2 ReLU(W1 h), hidden = the backbone's width, 128-d output; our
# projector keeps its BatchNorms (SimCLR's code has them too, its output BN with a scale only; ours: the base's).
# Also used for MoCo v2, whose head is the same 2-layer MLP. cpu: the width-¼ ResNet-18 gives 128-d features, so
# the hidden layer (proj_hidden unset = proj_dim) is 128 too.
TABLE4_CONTRASTIVE_HEAD: dict[str, dict[str, Any]] = {
    "cpu": {"proj_dim": 128},
    "full": {"proj_layers": 2, "proj_dim": 128, "proj_hidden": 2048},
}
CONTRASTIVE_NAMES = {"simclr": "SimCLR", "moco": "MoCo v2"}


def _table4_contrastive(scale: str) -> tuple[RunDef, ...]:
    head = {"model": TABLE4_CONTRASTIVE_HEAD[scale]}
    simclr = tuple(RunDef(f"simclr_b{b}", f"SimCLR, b={b}", "SimCLR",
                          _merge({"ssl": {"method": "simclr"}, "optim": {"batch_size": b}}, head))
                   for b in TABLE4_BATCHES[scale])
    mb = TABLE4_MOCO_BATCH[scale]
    moco = tuple(RunDef(f"moco_q{q}", f"MoCo v2, queue {q} (batch {mb})", "MoCo v2",
                        _merge({"ssl": {"method": "moco", "queue_size": q}, "optim": {"batch_size": mb}}, head))
                 for q in TABLE4_BATCHES[scale])
    return simclr + moco


def _table4(scale: str) -> Experiment:
    batches = TABLE4_BATCHES[scale]
    gsg_runs = tuple(
        RunDef(f"{m}_gsg_b{b}", f"{NAMES[m]} w/ GSG, b={b}", f"{NAMES[m]} w/ GSG",
               _sg(m, "guided", optim={"batch_size": b}),
               dir_name=f"{m}_gsg" if scale == "cpu" and b == CPU_BASE["optim"]["batch_size"] else "")
        for m in ("simsiam", "byol") for b in batches)
    runs = gsg_runs + _table4_contrastive(scale)
    contrastive_runs = {"simclr": tuple(f"simclr_b{b}" for b in batches), "moco": tuple(f"moco_q{q}" for q in batches)}
    paper_c = {"simclr": PAPER_TABLE4_CONTRASTIVE["SimCLR (Chen et al.)"],
               "moco": PAPER_TABLE4_CONTRASTIVE["MoCo (He et al.)"]}
    claims = tuple(
        Claim(f"{NAMES[m]} w/ GSG holds its linear accuracy across batch sizes (range within 2 points; paper: "
              f"{max(PAPER_TABLE4[m + '_gsg'].values()) - min(PAPER_TABLE4[m + '_gsg'].values()):.1f})", "range",
              runs=tuple(f"{m}_gsg_b{b}" for b in batches), metric="linear", tol=2.0)
        for m in ("simsiam", "byol"))
    claims += tuple(
        Claim(f"{NAMES[m]} w/ GSG holds its linear accuracy across b better than {CONTRASTIVE_NAMES[c]} (smaller "
              f"range; b = {'the batch size' if c == 'simclr' else 'the queue size, its negatives'}; paper: "
              f"{max(PAPER_TABLE4[m + '_gsg'].values()) - min(PAPER_TABLE4[m + '_gsg'].values()):.1f} vs "
              f"{max(paper_c[c].values()) - min(paper_c[c].values()):.1f} for "
              f"{'SimCLR' if c == 'simclr' else 'MoCo (He et al.)'})", "range_less",
              runs=tuple(f"{m}_gsg_b{b}" for b in batches), other=contrastive_runs[c], metric="linear")
        for m in ("simsiam", "byol") for c in ("simclr", "moco"))
    common: dict[str, Any] = {"name": "table4", "scale": scale, "title": "Table 4: robustness to the batch size",
                              "paper_ref": "GSG paper, Table 4 and §5.3", "runs": runs,
                              "evals": ("knn", "linear"), "claims": claims, "default_seeds": 1,
                              "paper": {"table4": PAPER_TABLE4, "table4_contrastive": PAPER_TABLE4_CONTRASTIVE}}
    contrastive_note = (
        "SimCLR and MoCo v2 rows: trained here by the same model, loop and evaluation (`--method simclr`, "
        "`--method moco`; docs/methods.md) with the GSG rows' data and optimisation (SGD, lr scaled by the batch, "
        "not SimCLR's LARS nor MoCo v2's lr 0.03), SimCLR's 2-layer head with a 128-d output, temperature 0.5 "
        "(SimCLR at CIFAR size, 0.1 at ImageNet size) and 0.2 (MoCo v2), MoCo momentum 0.999. SimCLR varies the "
        "batch as the GSG rows; MoCo varies its queue (its negatives) at MoCo's batch of 256 "
        f"({TABLE4_MOCO_BATCH[scale]} here). The paper's contrastive numbers are quoted from their papers and "
        "stay apart in the table (*paper* rows).")
    if scale == "cpu":
        # CPU_BASE already scales lr linearly with the batch (base_lr 0.1 × b/256).
        return Experiment(**common, preset=None, base=CPU_BASE, knn_metric="knn_k1", chance=10.0,
                          dataset_label=CPU_DATASET, linear=CPU_LINEAR,
                          notes=(*CPU_NOTES, "Table 4 at cpu scale: batch sizes 512 / 256 / 128 stand for the paper's "
                                 "1024 / 512 / 256 (the same ratios around the default batch); lr = 0.1 × b/256 "
                                 "(linear scaling, as the paper's 0.05 × b/256 on ImageNet). The b=256 runs are "
                                 "Table 1's GSG runs. MoCo's queues 512 / 256 / 128 stand for the paper's "
                                 "1024 / 512 / 256 negatives, at batch 128 (MoCo's 256).", contrastive_note))
    return Experiment(**common, preset="imagenet", base={"optim": {"epochs": 100}}, knn_metric="knn_k200",
                      chance=0.1, dataset_label=IMAGENET_DATASET, linear=FULL_LINEAR, knn_temperature=0.2,
                      notes=(*FULL_NOTES, "Table 4 is an ImageNet experiment in the paper, so its full scale uses "
                             "the `imagenet` preset (ResNet-50, 100 epochs, lr 0.05 × b/256, cosine); pass "
                             "the ImageNet folder with `--set data.data_dir=...`.", contrastive_note))


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


PREDICTOR_LABEL = {"mlp": "2-layer MLP predictor", "linear": "linear predictor (SGD)",
                   "directpred": "DirectPred (ρ 0.3, ε 0.1)"}


def _directpred(scale: str) -> Experiment:
    # Tian et al.'s regime: the released code's projector has no output BatchNorm, so the predictor's input
    # correlation F̂ stays uncentred (after a train-mode BN it would be a Pearson correlation with unit diagonal,
    # the centred regime they report hurts DirectPred). Every row, the MLP ones too, uses that projector.
    dp = {"directpred_rho": 0.3, "directpred_eps": 0.1, "directpred_freq": 1}
    runs = tuple(
        RunDef(f"byol{SG_SUFFIX[sg]}_{p}", f"BYOL{SG_LABEL[sg]}, {PREDICTOR_LABEL[p]}",
               "BYOL (symmetric)" if sg == "symmetric" else "BYOL w/ GSG",
               _sg("byol", sg, model={"predictor": p, "proj_last_bn": "none",
                                      **(dp if p == "directpred" else {})}))
        for sg in ("symmetric", "guided") for p in ("mlp", "linear", "directpred"))
    claims = (Claim("DirectPred > SGD-trained linear predictor (Tian et al. Tables 3, 6, 8)", "greater",
                    "byol_directpred", "byol_linear", metric="linear"),
              Claim("2-layer MLP ≥ DirectPred (Tian et al. STL-10: 78.85 vs 77.86)", "greater", "byol_mlp",
                    "byol_directpred", metric="linear"),
              *(Claim(f"GSG > symmetric with the {PREDICTOR_LABEL[p]} (no paper number: the GSG claim carried "
                      "over)", "greater", f"byol_gsg_{p}", f"byol_{p}", metric="linear")
                for p in ("mlp", "linear", "directpred")))
    common: dict[str, Any] = {"name": "directpred", "scale": scale,
                              "title": "DirectPred vs linear vs 2-layer predictor, with and without GSG",
                              "paper_ref": "Tian, Chen & Ganguli (ICML 2021), Tables 3, 6 and 8", "runs": runs,
                              "evals": ("knn", "linear"), "knn_metric": "knn_k1", "chance": 10.0,
                              "claims": claims, "default_seeds": 1,
                              "paper": {"tian_stl10": TIAN_STL10, "tian_cifar10": TIAN_CIFAR10}}
    tian = ("Tian et al. train BYOL with EMA and no predictor bias: STL-10 numbers are ResNet-18, 100 epochs, 5 "
            "seeds (Table 3 'regular' W_p; Table 6 ρ=0.3, ε=0.1); CIFAR-10 numbers are Table 8 (100 epochs). "
            "Our runs keep the GSG paper's CIFAR-10 optimisation (lr 0.06 constant, wd 5e-4, EMA 0.99 "
            "constant), not Tian et al.'s (lr 0.03, wd 4e-4, EMA 0.996), and the ½+½ loss (half the gradient per "
            "term of their summed 2−2cos). The projector has no output BatchNorm (`proj_last_bn = none`), as "
            "their released code, so F̂ is the uncentred correlation they prescribe.")
    if scale == "cpu":
        return Experiment(**common, preset=None, base=CPU_BASE, dataset_label=CPU_DATASET, linear=CPU_LINEAR,
                          notes=(*CPU_NOTES, tian))
    return Experiment(**common, preset="cifar10", base={"optim": {"epochs": 100}}, dataset_label=CIFAR_DATASET,
                      linear=FULL_LINEAR,
                      notes=(*FULL_NOTES, tian, "Full scale: CIFAR-10 for 100 epochs, to match Tian et al.'s "
                             "Table 8."))


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
                              "paper": {"table1": PAPER_TABLE1}, "seed_major": True}
    note = ("SimSiam's five main variants run 3 seeds (paired differences with 95% intervals); random sg, the cycle "
            "pairing, GSG at 2× epochs and the BYOL rows 1 seed. A 2-crop run at 2× epochs has the encoder passes of "
            "a 4-crop run. The cycle pairing (each image in two pairs that share its two crops) and GSG on 2 matched "
            "crops at 2× epochs decide the default pairing: per epoch and per encoder pass. With a constant lr a "
            "2× epochs run continues the final checkpoint of its 1× run when that has finished (its first half is "
            "that run, step for step: `gsg.reproduce.prefix`), so its pretraining time is the second half's.")
    if scale == "cpu":
        return Experiment(**common, preset=None, base=CPU_BASE, dataset_label=CPU_DATASET, linear=CPU_LINEAR,
                          notes=(*CPU_NOTES, note))
    return Experiment(**common, preset="cifar10", base={"optim": {"epochs": 200}}, dataset_label=CIFAR_DATASET,
                      linear=FULL_LINEAR, notes=(*FULL_NOTES, note))


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
        *(run(f"simsiam_surgery_{k}", label, surg, _merge(simsiam, {"ssl": {"grad_surgery": k}}))
          for k, label in (("basic", "SimSiam, basic gradient only (G_e removed)"),
                           ("center", "SimSiam, basic + o_e"), ("residual", "SimSiam, basic + r_e"))),
        run("conj1_center", "-Z_a·sg(o_z) (no predictor)", conj, _merge(simsiam, nopred, {"ssl": {"loss": "center"}})),
        run("conj1_residual", "-Z_a·sg(r_a) (no predictor)", conj,
            _merge(simsiam, nopred, {"ssl": {"loss": "residual"}})),
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
    ]
    bn = ("The projector ends in a BatchNorm (model.proj_last_bn, `plain` by default): each channel is centred over "
          "the batch, which bounds m_o of z/|z| well below 1, so complete collapse cannot show as m_o -> 1; read "
          "collapse from the kNN accuracy (the claims' criterion) and RankMe (`z_rankme`).")
    what = ("Per-epoch metrics on each epoch's last batch (docs/decomposition.md): m_o, m_r of z/|z|; |G_e|, |o_e|, "
            "|r_e| (per-sample norms, batch mean) and η_p of the loss's extra gradient at the normalised prediction "
            "(before any surgery); sel_*: what a pairing policy's choice adds to the symmetric loss's gradient.")
    common: dict[str, Any] = {"name": "decomposition", "scale": scale,
                              "title": "Zhang et al.'s vector decomposition as experiments, and GSG through it",
                              "paper_ref": "Zhang et al. (ICLR 2022), Tables 2 and 4, Figs. 3-5, §5",
                              "runs": tuple(runs), "evals": ("knn",), "knn_metric": "knn_k1", "chance": 10.0,
                              "claims": tuple(claims), "default_seeds": 1, "paper": {"zhang": PAPER_ZHANG},
                              "curves": DECOMPOSITION_CURVES}
    if scale == "cpu":
        return Experiment(**common, preset=None, base=CPU_BASE, dataset_label=CPU_DATASET,
                          notes=(*CPU_NOTES, what, bn, "The run SimSiam w/ GSG w/o predictor with 4 crops is in the "
                                 "full scale only (the hour); the runs named as Table 1's and Fig. 5's are those "
                                 "trainings when the experiments share --runs."))
    return Experiment(**common, preset="cifar10", base={"optim": {"epochs": 200}}, dataset_label=CIFAR_DATASET,
                      notes=(*FULL_NOTES, what, bn, "Full scale: CIFAR-10, ResNet-18, 200 epochs (Table 1's "
                             "setting; the paper's own schedule is not verified)."))


_BUILDERS = {"table1": _table1, "fig4": _fig4, "fig5": _fig5, "table4": _table4, "tsne": _tsne,
             "directpred": _directpred, "crops": _crops, "decomposition": _decomposition}


def _check_choice(what: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        close = difflib.get_close_matches(value, valid, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown {what} {value!r}{hint}; choose one of {', '.join(valid)}")


def get_experiment(name: str, scale: str) -> Experiment:
    """The definition of experiment ``name`` at ``scale``; a ConfigError names the valid ones."""
    _check_choice("experiment", name, EXPERIMENTS)
    _check_choice("scale", scale, SCALES)
    return _BUILDERS[name](scale)


def run_overrides(exp: Experiment, run: RunDef) -> Overrides:
    """The run's config overrides on top of the experiment's preset (without seed, out and device)."""
    return _merge(exp.base, run.overrides)


# ------------------------------------------------------------------------------------------ cost model

# Seconds of one cpu-scale run (ResNet-18 width 0.25, CIFAR stem, 28 px, projector 512, batch 256) on the
# project's 2-core machine, one thread per run with two runs at a time (the cpu default, --jobs 2), measured on the
# learning-curve runs (docs/results/cpu_scale.md): an epoch of the 60,000 Fashion-MNIST images on 2 crops takes
# ~245 s on one thread in fp32 (4.1 ms per image), 0.64× that under the scale's bf16 autocast (2.6 ms), twice that
# on 4 crops; one online kNN evaluation (embed 10,000 + 2,000
# images) ~10 s; the final kNN on the whole splits (embed 70,000 images) ~60 s; the feature-mode linear probe
# (embed 70,000 images, 90 epochs of a 128-d classifier on 60,000) ~120 s; start-up ~20 s. CPU_COST_SLOW is a
# loaded machine (+30%).
CPU_COST = {"train_per_image": 2.6e-3, "knn": 10.0, "checkpoint": 0.3, "startup": 20.0, "final_knn": 60.0,
            "linear": 120.0, "tsne": 100.0}
CPU_COST_SLOW = {k: 1.3 * v for k, v in CPU_COST.items()}
CPU_RUN_BUDGET_S = 2 * 45 * 60.0  # one 2-crop run: 45 minutes on 2 cores = 90 single-core minutes at --jobs 2


def estimate_seconds(epochs: int, subset: int, batch_size: int, *, knn_every: int, checkpoint_every: int,
                     evals: tuple[str, ...], cost: dict[str, float] | None = None, crops: int = 2) -> float:
    """Estimated single-thread seconds of one cpu-scale run, two runs at a time on the 2 cores (see
    :data:`CPU_COST`); ``crops``: 4 for ``ssl.views = fresh``, which augments and encodes twice as many crops."""
    images = (subset // batch_size) * batch_size  # drop_last
    c = CPU_COST if cost is None else cost
    knn_runs = math.ceil(epochs / knn_every) if knn_every else 0
    total = c["startup"] + epochs * images * c["train_per_image"] * crops / 2 + knn_runs * c["knn"]
    total += math.ceil(epochs / checkpoint_every) * c["checkpoint"]
    total += c.get("final_knn", 0.0) * ("knn" in evals)
    total += c["linear"] * ("linear" in evals) + c["tsne"] * ("tsne" in evals)
    return total


__all__ = ["CPU_BASE", "CPU_COST", "CPU_COST_SLOW", "CPU_EPOCHS", "CPU_RUN_BUDGET_S", "CPU_TRAIN_IMAGES",
           "DECOMPOSITION_CURVES", "EVALS", "EXPERIMENTS", "PAPER_TABLE1", "PAPER_TABLE4", "PAPER_ZHANG", "SCALES",
           "TABLE4_MOCO_BATCH", "TIAN_CIFAR10", "TIAN_STL10", "Claim", "Experiment", "LinearDef", "RunDef", "TsneDef",
           "estimate_seconds", "get_experiment", "run_overrides"]
