"""Table 4: robustness to the batch size, the GSG rows beside SimCLR and MoCo v2 trained here."""

from __future__ import annotations

from typing import Any

from gsg.reproduce.experiments.base import (
    CPU_BASE,
    CPU_DATASET,
    CPU_LINEAR,
    CPU_NOTES,
    FULL_LINEAR,
    FULL_NOTES,
    IMAGENET_DATASET,
    NAMES,
    Claim,
    Experiment,
    RunDef,
    _merge,
    _sg,
)
from gsg.reproduce.experiments.paper import PAPER_TABLE4, PAPER_TABLE4_CONTRASTIVE

# cpu batch sizes stand for the paper's: the same 1/2×, 1×, 2× around the default batch.
TABLE4_BATCHES = {"cpu": (512, 256, 128), "full": (1024, 512, 256)}
# the paper's batch each of ours stands for, per scale
TABLE4_PAPER_B = {"cpu": {512: 1024, 256: 512, 128: 256}, "full": {1024: 1024, 512: 512, 256: 256}}


# The explicit contrastive rows of Table 4, trained by this framework (the paper quotes their papers' numbers,
# which stay in PAPER_TABLE4_CONTRASTIVE). SimCLR varies the batch as the GSG rows; MoCo varies its queue (its
# negatives: the paper's b for MoCo) at MoCo's batch of 256, which is 128 at cpu scale by the same map as the
# batches (cpu 512 / 256 / 128 stand for 1024 / 512 / 256), so the cpu queues are 512 / 256 / 128.
TABLE4_MOCO_BATCH = {"cpu": 128, "full": 256}
# How far apart two families' ranges across b must be to count: with one seed per b, seed noise alone moves the
# difference of two ranges of three numbers within +-1.25 points (95%) at cpu scale, by simulation at the linear
# probe's seed sd of 0.50 pooled over the four-crop control's five SimSiam variants at 3 seeds
# (docs/results/runs/cpu2; docs/experiments/noise_and_cost.py); at full scale an assumed ImageNet linear seed
# sd of 0.2 gives +-0.5.
TABLE4_RANGE_NOISE = {"cpu": 1.3, "full": 0.5}
# SimCLR v1's head (Chen et al. 2020): g(h) = W2 ReLU(W1 h), hidden = the backbone's width, 128-d output; our
# projector keeps its BatchNorms (SimCLR's code has them too, its output BN with a scale only; ours: the base's).
# Also used for MoCo v2, whose head is the same 2-layer MLP. cpu: the width-¼ ResNet-18 gives 128-d features, so
# the hidden layer (proj_hidden unset = proj_dim) is 128 too.
TABLE4_CONTRASTIVE_HEAD: dict[str, dict[str, Any]] = {
    "cpu": {"proj_dim": 128},
    "full": {"proj_layers": 2, "proj_dim": 128, "proj_hidden": 2048},
}
CONTRASTIVE_NAMES = {"simclr": "SimCLR", "moco": "MoCo v2"}
# The cpu scale trains under bf16 autocast, which is fast only where the CPU has AVX-512 BF16: on an AVX2-only
# CPU a bf16 step took 13x an fp32 one (docs/results/cpu_scale.md, "bf16 on a CPU without it"). The contrastive
# rows share no run with another experiment and are compared with each other (their range across b), so they train
# in fp32, which any CPU trains at about one speed; the GSG rows share their b=256 runs with Table 1 and the
# four-crop control and stay bf16 with them. The cost: bf16 moved accuracy by a point at most (cpu_scale.md).
TABLE4_CONTRASTIVE_RUN: dict[str, dict[str, Any]] = {"cpu": {"amp": "off"}, "full": {}}


def _table4_contrastive(scale: str) -> tuple[RunDef, ...]:
    head = {"model": TABLE4_CONTRASTIVE_HEAD[scale], "run": TABLE4_CONTRASTIVE_RUN[scale]}
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
        Claim(f"{NAMES[m]} w/ GSG holds its linear accuracy across b better than {CONTRASTIVE_NAMES[c]} (a range "
              f"smaller by more than {TABLE4_RANGE_NOISE[scale]:g} points, what seed noise alone can make of one seed "
              f"per b; b = {'the batch size' if c == 'simclr' else 'the queue size, its negatives'}; paper: "
              f"{max(PAPER_TABLE4[m + '_gsg'].values()) - min(PAPER_TABLE4[m + '_gsg'].values()):.1f} vs "
              f"{max(paper_c[c].values()) - min(paper_c[c].values()):.1f} for "
              f"{'SimCLR' if c == 'simclr' else 'MoCo (He et al.)'})", "range_less",
              runs=tuple(f"{m}_gsg_b{b}" for b in batches), other=contrastive_runs[c], metric="linear",
              tol=TABLE4_RANGE_NOISE[scale])
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
                                 "1024 / 512 / 256 negatives, at batch 128 (MoCo's 256).", contrastive_note,
                                 "Precision at cpu scale: the SimCLR and MoCo v2 rows train in fp32, the GSG rows "
                                 "under bf16 autocast as the Table 1 and four-crop runs they share (bf16 is fast "
                                 "only on CPUs with AVX-512 BF16; docs/results/cpu_scale.md). Each claim compares a "
                                 "family's own range across b, within one precision; a row of one family beside "
                                 "one of the other carries bf16's cost, a point at most."))
    return Experiment(**common, preset="imagenet", base={"optim": {"epochs": 100}}, knn_metric="knn_k200",
                      chance=0.1, dataset_label=IMAGENET_DATASET, linear=FULL_LINEAR, knn_temperature=0.2,
                      notes=(*FULL_NOTES, "Table 4 is an ImageNet experiment in the paper, so its full scale uses "
                             "the `imagenet` preset (ResNet-50, 100 epochs, lr 0.05 × b/256, cosine); pass "
                             "the ImageNet folder with `--set data.data_dir=...`.", contrastive_note))
