"""The per-epoch diagnostics beyond the mean loss: the predictor's alignment, collapse measures and the gradient
decomposition on the epoch's last batch, and the guided policy's case shares over the epoch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from gsg.analysis import decomposition
from gsg.analysis.collapse import alignment, center_residual, gsg_case_stats, rankme, uniformity
from gsg.analysis.decomposition_contrastive import contrastive_batch_metrics
from gsg.config import resolved_temperature
from gsg.models.directpred import DirectPredictor, batch_correlation, eigenspace_alignment
from gsg.ssl.methods import is_contrastive
from gsg.ssl.terms import symmetric_terms

if TYPE_CHECKING:
    from gsg.train.loop import Trainer

ALIGNMENT_TOP = 10  # eigenvectors of F over which a linear predictor's alignment is averaged
UNIFORMITY_MAX = 4096  # pairwise uniformity is O(N^2): cap the rows


def epoch_metrics(trainer: Trainer, last_z: Tensor | None, last_stats: dict[str, Tensor], case_sum: Tensor,
                  n: int) -> dict[str, float]:
    """The metrics that follow the epoch's loss, z_std and lr in its record, in their logged order.

    ``last_z``/``last_stats``: the last batch's projections and stats (``views_and_loss``); ``case_sum``: the
    sum over the epoch's ``n`` batches of the four case shares.
    """
    result: dict[str, float] = {}
    pred = trainer.model.predictor
    if isinstance(pred, DirectPredictor):  # W_p is built from F̂'s eigenvectors: 1 when freq = 1
        result["pred_alignment"] = pred.alignment()
    elif isinstance(pred, nn.Linear) and last_z is not None:
        # Tian et al.'s observation: an SGD-trained linear W_p aligns with the correlation F of its inputs.
        # One batch's F has rank <= 2B, so the mean is over its top eigenvectors, where the signal is.
        w = pred.weight.detach().float()
        result["pred_alignment"] = eigenspace_alignment(w, batch_correlation(torch.cat([last_z, last_stats["z1"]])),
                                                        top=min(ALIGNMENT_TOP, w.shape[0]))
    if last_z is not None:  # dimensional collapse, which std(z/|z|) misses under a BatchNorm output
        result["z_rankme"] = rankme(last_z)
        cr = center_residual(last_z)
        result["z_center_ratio"], result["z_residual_ratio"] = cr["m_o"], cr["m_r"]
        # Wang & Isola on the last batch: views of one image close (alignment), images spread (uniformity).
        result["z_alignment"] = alignment(last_z, last_stats["z1"])
        result["z_uniformity"] = uniformity(last_z[:UNIFORMITY_MAX])
        if "decomposition" in last_stats:
            result.update(decomposition_metrics(trainer, *last_stats["decomposition"]))  # type: ignore[misc]
        if "distances" in last_stats:  # how decisive GSG's choice was on the last batch
            margins = gsg_case_stats(last_stats["cases"], last_stats["distances"])
            result["gsg_margin_mean"] = margins["margin_mean"]
    if trainer.cfg.ssl.stop_gradient not in ("symmetric", "none"):
        shares = (case_sum / n).tolist()
        result.update({f"case_{name}": s for name, s in zip(("11_21", "11_22", "12_21", "12_22"), shares,
                                                              strict=True)})
    return result


def decomposition_metrics(trainer: Trainer, p: list[Tensor], t: list[Tensor], decisions: Any) -> dict[str, float]:
    """Zhang et al.'s gradient decomposition of the batch loss (gsg.analysis.decomposition), and for a pairing
    policy what its choice adds to the symmetric loss's gradient (``sel_*``). SimCLR and MoCo
    (gsg.analysis.decomposition_contrastive): ``p`` the online projections, ``decisions`` MoCo's negatives."""
    cfg = trainer.cfg.ssl
    if is_contrastive(cfg.method):
        return contrastive_batch_metrics(cfg.method, p, t, resolved_temperature(cfg, trainer.image_size),
                                         negatives=decisions, symmetric=cfg.moco_symmetric)
    terms = trainer._terms(*decisions)
    paired = cfg.stop_gradient != "symmetric" and cfg.loss == "cosine"
    ref = symmetric_terms(terms.n, views=terms.views, device=trainer.device) if paired else None
    return decomposition.batch_metrics(p, t, terms, loss=cfg.loss, reference=ref)
