"""What every experiment definition builds on: the types (runs, evaluations, claims, experiments), the
two scales' shared settings and notes, and the helpers that compose config overrides."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

Overrides = dict[str, dict[str, Any]]

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
    over ``other`` by more than ``tol``; by less either way, no difference that counts), ``below`` / ``above``
    (a's final ``metric`` < / > ``tol``), ``rises`` (a's ``metric`` at its last epoch > at its first).
    ``metric``: ``knn`` (the experiment's kNN), ``linear``, ``tsne_knn``, or a per-epoch history key of the
    experiment's ``curves`` (its final value).
    """

    text: str
    kind: str
    a: str = ""
    b: str = ""
    runs: tuple[str, ...] = ()
    metric: str = "knn"
    tol: float = 0.0
    other: tuple[str, ...] = ()  # range_less: the runs whose range must be the larger


# m_o of z/|z| above this: the centre holds over 81% of every output's squared norm (m_o² + m_r² = 1), i.e. the
# outputs are nearly one vector; Zhang et al.'s complete collapse is m_o -> 1.
COMPLETE_COLLAPSE_MO = 0.9


def projection_claim(label: str, run: str, collapsed: bool) -> Claim:
    """``run``'s projection collapses (final m_o > :data:`COMPLETE_COLLAPSE_MO`) or does not (below it)."""
    return Claim(f"{label}: the projection {'collapses' if collapsed else 'does not collapse'} completely "
                 f"(final m_o {'>' if collapsed else '<'} {COMPLETE_COLLAPSE_MO})", "above" if collapsed else "below",
                 run, metric="z_center_ratio", tol=COMPLETE_COLLAPSE_MO)


def projection_twins(claims: tuple[Claim, ...] | list[Claim], runs: tuple[RunDef, ...]) -> tuple[Claim, ...]:
    """Each ``collapsed`` / ``not_collapsed`` claim again, read from the projection (:func:`projection_claim`).
    At the cpu scale's 12 epochs a collapsed projector leaves the backbone near its random start, so its kNN stays
    far above chance (the naive Siamese run: m_o 0.997, kNN k=1 76.1): the kNN criterion alone cannot show the
    collapse the papers mean. The experiment must log ``z_center_ratio``."""
    labels = {r.name: r.label for r in runs}
    return tuple(projection_claim(labels.get(c.a, c.a), c.a, c.kind == "collapsed") for c in claims
                 if c.kind in ("collapsed", "not_collapsed"))


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
    # The four-crop control: its page applies the pre-registered rule that picks the default pairing
    # (gsg.reproduce.pairing_rule) to its numbers.
    decides_default_pairing: bool = False
    # Per-epoch history keys (beyond kNN and std) aggregated over seeds, plotted, and usable as claim metrics.
    curves: tuple[str, ...] = ()

    def run(self, name: str) -> RunDef:
        for r in self.runs:
            if r.name == name:
                return r
        raise KeyError(name)


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


def at_scale(scale: str, common: dict[str, Any], *, linear: bool = False, full_epochs: int = 200,
             cpu_notes: tuple[str, ...] = (), full_notes: tuple[str, ...] = (),
             cpu: dict[str, Any] | None = None, full: dict[str, Any] | None = None) -> Experiment:
    """An experiment of the GSG paper's CIFAR-10 family at ``scale``: the cpu scale's base, data and notes, or the
    ``cifar10`` preset for ``full_epochs``; the linear probe of the scale when ``linear``; ``cpu`` / ``full``:
    further fields for one scale only."""
    if scale == "cpu":
        return Experiment(**common, preset=None, base=CPU_BASE, dataset_label=CPU_DATASET,
                          linear=CPU_LINEAR if linear else None, notes=(*CPU_NOTES, *cpu_notes), **(cpu or {}))
    return Experiment(**common, preset="cifar10", base={"optim": {"epochs": full_epochs}},
                      dataset_label=CIFAR_DATASET, linear=FULL_LINEAR if linear else None,
                      notes=(*FULL_NOTES, *full_notes), **(full or {}))


NAMES = {"simsiam": "SimSiam", "byol": "BYOL"}
SG_SUFFIX = {"symmetric": "", "guided": "_gsg", "random": "_random", "reverse": "_reverse"}
SG_LABEL = {"symmetric": "", "guided": " w/ GSG", "random": " w/ random sg", "reverse": " w/ reverse sg"}


def run_overrides(exp: Experiment, run: RunDef) -> Overrides:
    """The run's config overrides on top of the experiment's preset (without seed, out and device)."""
    return _merge(exp.base, run.overrides)
