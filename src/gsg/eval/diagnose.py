"""`gsg diagnose`: every collapse metric of a checkpoint, for backbone features and projections.

Metrics (formulas in :mod:`gsg.analysis.collapse`): std(z/‖z‖)·√d, the centre and residual ratios of the
vector decomposition (m_o, m_r), RankMe, uniformity and alignment (Wang & Isola), the singular-value
spectrum; for pairing policies the share of each GSG case and the distance margin; for a linear or
DirectPred predictor the eigenspace alignment between the predictor and the correlation of its inputs; and
Zhang et al.'s gradient decomposition of the run's loss (gsg.analysis.decomposition: ‖G_e‖, ‖o_e‖, ‖r_e‖,
η_p, and for a pairing policy what its choice adds, ``sel_*``), averaged over batches of augmented pairs.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gsg.analysis.collapse import (
    alignment,
    center_residual,
    gsg_case_stats,
    normalized_std,
    rankme,
    singular_spectrum,
    uniformity,
)
from gsg.analysis.decomposition import policy_batch_metrics
from gsg.analysis.decomposition_contrastive import contrastive_batch_metrics
from gsg.checkpoint import load_checkpoint
from gsg.config import from_dict, resolved_pairing, resolved_temperature
from gsg.data.datasets import load_dataset
from gsg.data.views import BatchAugment, eval_transform, make_recipe
from gsg.errors import CheckpointError, ConfigError, DataError
from gsg.models.directpred import DirectPredictor, batch_correlation, eigenspace_alignment
from gsg.models.embed import resolve_device
from gsg.ssl.build import build_model
from gsg.ssl.methods import is_contrastive
from gsg.ssl.siamese import Siamese
from gsg.ssl.stopgrad import derangement, pair_distances, select_cases

UNIFORMITY_MAX = 4096


def load_model(checkpoint: str | Path, device: torch.device) -> tuple[Siamese, dict[str, Any]]:
    """The full Siamese model (backbone, projector, predictor, target) of a checkpoint, in eval mode."""
    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    cfg = from_dict(ckpt["config"])
    model = build_model(cfg.model, cfg.ssl.method, in_channels=ckpt["backbone"]["in_channels"],
                        image_size=ckpt["backbone"]["image_size"], ssl=cfg.ssl)
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {checkpoint} does not match the model its config describes: {exc}") from exc
    return model.to(device).eval(), ckpt


def batch_mean_sd(batches: list[dict[str, float]]) -> dict[str, Any]:
    """The mean over batches of each metric, and under ``"sd"`` its sample standard deviation over the batches
    (None with fewer than two): one batch's η is noisy (docs/decomposition.md), so a reading needs its spread. A
    metric left out on a batch (η with o_p = 0) is skipped there."""
    keys = sorted({k for d in batches for k in d})
    values = {k: torch.tensor([d[k] for d in batches if k in d], dtype=torch.float64) for k in keys}
    out: dict[str, Any] = {k: v.mean().item() for k, v in values.items()}
    out["sd"] = {k: v.std().item() if len(v) > 1 else None for k, v in values.items()}
    return out


def embedding_metrics(x: Tensor) -> dict[str, float]:
    """The single-set metrics of one embedding matrix (N, d)."""
    cr = center_residual(x)
    return {"dim": x.shape[1], "std_sqrt_d": normalized_std(x), "m_o": cr["m_o"], "m_r": cr["m_r"],
            "rankme": rankme(x), "uniformity": uniformity(x[:UNIFORMITY_MAX])}


@torch.no_grad()
def diagnose(checkpoint: str | Path, *, dataset: str | None = None, data_dir: str | None = None,
             samples: int = 2048, batch_size: int = 256, device: str = "auto", seed: int = 0,
             plot: str | Path | None = None, bn: str = "running") -> dict[str, Any]:
    """Compute every metric on ``samples`` test images (clean views; two augmented views for alignment and
    the GSG statistics). Writes a spectrum plot to ``plot`` if given. Returns a nested dict.

    ``bn``: the BatchNorm statistics of the augmented views' forward (alignment, GSG cases, the decomposition):
    ``running`` (eval mode) or ``batch`` (each batch's own, as the training step and its per-epoch log see them;
    a copy of the model runs in train mode, so the checkpoint's running statistics are not changed). The clean
    views' embeddings always use the running statistics."""
    if bn not in ("running", "batch"):
        raise ConfigError(f"bn must be 'running' (eval mode) or 'batch' (train-mode statistics), got {bn!r}")
    dev = resolve_device(device)
    model, ckpt = load_model(checkpoint, dev)
    views_model = copy.deepcopy(model).train() if bn == "batch" else model
    data = ckpt["data"]
    name = dataset or data["dataset"]
    split = "test"
    try:
        ds = load_dataset(name, split, data_dir=data_dir or ckpt["config"]["data"].get("data_dir"),
                          image_size=data["image_size"], subset=None, channels=data["channels"])
    except DataError:  # folders without a test split: diagnose on the training images
        split = "pretrain"
        ds = load_dataset(name, split, data_dir=data_dir or ckpt["config"]["data"].get("data_dir"),
                          image_size=data["image_size"], channels=data["channels"])
    n = min(samples, len(ds))
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=gen)[:n]
    mean, std, size = tuple(data["mean"]), tuple(data["std"]), data["image_size"]
    recipe_name = ckpt["config"]["data"].get("recipe") or (
        "grayscale" if data["channels"] == 1 else ("cifar" if size <= 64 else "imagenet"))
    augment = BatchAugment(make_recipe(recipe_name, size=size, mean=mean, std=std))
    aug_gen = torch.Generator(device=dev).manual_seed(seed)
    # The decomposition's pairing and fresh crops draw from their own streams: the other metrics stay as they were.
    dec_gen, dec_aug_gen = torch.Generator().manual_seed(seed + 1), torch.Generator(device=dev).manual_seed(seed + 2)
    ssl = from_dict(ckpt["config"]).ssl

    feats, projs, za, zb, decomp = [], [], [], [], []
    for start in range(0, n, batch_size):
        images = ds.get(idx[start:start + batch_size]).to(dev)
        h = model.backbone(eval_transform(images, size=size, mean=mean, std=std))
        feats.append(h.float().cpu())
        projs.append(model.projector(h).float().cpu())
        views = [augment(images, aug_gen), augment(images, aug_gen)]
        if ssl.views == "fresh" and ssl.loss == "cosine" and images.shape[0] >= 2:
            other = images[derangement(images.shape[0], generator=dec_gen).to(dev)]
            views += [augment(other, dec_aug_gen), augment(other, dec_aug_gen)]
        out = views_model(views)  # the projections of views 0 and 1 are model.project of them
        za.append(out.z[0].float().cpu())
        zb.append(out.z[1].float().cpu())
        if images.shape[0] >= 2:
            if is_contrastive(ssl.method):  # SimCLR / MoCo against the checkpoint's queue
                queue = model.queue.keys if model.queue is not None else None
                batch = contrastive_batch_metrics(ssl.method, out.z, out.t, resolved_temperature(ssl, size),
                                                  negatives=queue, symmetric=ssl.moco_symmetric)
            else:
                batch = policy_batch_metrics(ssl.stop_gradient, out.p, out.t, loss=ssl.loss,
                                             pairing=resolved_pairing(ssl), generator=dec_gen)
            # m_o, m_r of the batch's first-view projections: the per-epoch log's z_center_ratio, z_residual_ratio
            cr = center_residual(out.z[0].float())
            decomp.append({**batch, "z_center_ratio": cr["m_o"], "z_residual_ratio": cr["m_r"]})
    h, z, z1, z2 = (torch.cat(t) for t in (feats, projs, za, zb))

    result: dict[str, Any] = {"checkpoint": str(checkpoint), "dataset": name, "split": split, "samples": n, "bn": bn,
                              "method": ckpt["config"]["ssl"]["method"],
                              "stop_gradient": ckpt["config"]["ssl"]["stop_gradient"],
                              "predictor": ckpt["config"]["model"]["predictor"],
                              "backbone": embedding_metrics(h), "projection": embedding_metrics(z)}
    result["projection"]["alignment"] = alignment(z1, z2)
    # GSG statistics on augmented pairs, as the training step would see them (reuse pairing).
    partner = derangement(n, generator=gen)
    dist = pair_distances((z1, z2), (z1[partner], z2[partner]))
    result["gsg"] = gsg_case_stats(select_cases("guided", dist), dist)
    if decomp:
        result["decomposition"] = {"batches": len(decomp), "batch_size": min(batch_size, n),
                                   **batch_mean_sd(decomp)}
    pred = model.predictor
    if isinstance(pred, DirectPredictor):
        result["predictor_alignment"] = pred.alignment()
    elif isinstance(pred, torch.nn.Linear) and pred.weight.shape[0] == pred.weight.shape[1]:
        result["predictor_alignment"] = eigenspace_alignment(pred.weight.detach().float().cpu(),
                                                             batch_correlation(torch.cat([z1, z2])))
    spectra = {"backbone": singular_spectrum(h), "projection": singular_spectrum(z)}
    if plot is not None:
        result["plot"] = str(plot_spectra(spectra, plot, title=f"{Path(checkpoint).parent.name} ({name} {split})"))
    return result


def plot_spectra(spectra: dict[str, Tensor], out: str | Path, *, title: str) -> Path:
    """log singular values (normalised by the largest) against their rank, one line per embedding."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.add_subplot()
    for label, s in spectra.items():
        s = s.clamp_min(1e-12)
        ax.plot(range(1, len(s) + 1), (s / s[0]).log10().numpy(), label=f"{label} (d={len(s)})")
    ax.set_xlabel("singular value rank")
    ax.set_ylabel("log10(σ_k / σ_1)")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out)
    return out
