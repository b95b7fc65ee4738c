"""DirectPred and DirectCopy: linear predictors set from the statistics of their inputs, not learned.

DirectPred (Tian, Chen & Ganguli, ICML 2021, Eq. 18-19) as the released code computes it
(facebookresearch/luckmatters ``ssl/real-dataset/byol_trainer.py``: ``compute_w_corr`` with
balance_type="boost_scale", dyn_convert=2; see /work/shared/notes/directpred_and_collapse.md, A.2)::

    F̂   ← ρ F̂ + (1-ρ) E_B[f fᵀ]              uncentred; f = online projections of both views, detached;
                                              the first batch sets F̂ = E_B[f fᵀ]
    F̂   = U diag(s) Uᵀ                        symmetric eigendecomposition
    p_j = max(sqrt(max(s_j, 0) / s_max) + ε, 1e-4)
    W_p = U diag(p) Uᵀ                        symmetric PSD

The paper writes p_j = sqrt(s_j) + ε·max_j s_j; the code's form normalises the top eigenvalue to 1, so ε is
relative to it. Because cos(c·W_p f, z) = cos(W_p f, z) for c > 0, only that relative ε matters.

DirectCopy (Wang, Chen, Du & Tian 2021, arXiv:2110.04947) skips the eigendecomposition: W_p = F̂ + ε I in the
released code (``predictor_reg="directcopy"``). By default we first normalise F̂ by its largest eigenvalue
(W_p = F̂/λ_max + ε I), so that ε has the same meaning as in DirectPred (the notes' "safe choice"; whether the
paper normalises was not verified). ``normalize=False`` gives the released code's unnormalised form.

Defaults (notes A.2/A.4): ρ = 0.3, ε = 0.1, freq = 1 — the paper's Table 8 and the best cell of Table 6
(STL-10 77.86), also used by the ReScience reproduction. The README command uses ε = 0.01. The notes give no
separate DirectCopy defaults, so DirectCopy uses the same ρ, ε, freq (not verified against its paper).

Differences from the released trainer, on purpose:
- W_p starts at the identity (the released code starts from a default-initialised nn.Linear and
  overwrites it after the first step).
- W_p is a buffer, not a parameter: with freq > 1 it stays fixed between eigen-resets, whereas the released
  code lets SGD update it in between (paper §4: "when W_p is not set by eigen decomposition, it is updated by
  regular gradient updates").
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gsg.errors import ConfigError

MODES: tuple[str, ...] = ("directpred", "directcopy")
MIN_EIGENVALUE = 1e-4  # the released code's floor on the predictor's eigenvalues


def _check_square(name: str, m: Tensor) -> None:
    if not isinstance(m, Tensor) or m.dim() != 2 or m.shape[0] != m.shape[1]:
        raise ConfigError(f"{name} must be a square d x d matrix, got shape {getattr(m, 'shape', m)!r}")


def batch_correlation(f: Tensor) -> Tensor:
    """E_B[f fᵀ] = fᵀ f / N, uncentred, float32, from the detached rows of f (N, d)."""
    if not isinstance(f, Tensor) or f.dim() != 2 or f.shape[0] < 1:
        got = getattr(f, "shape", f)
        raise ConfigError(f"f must be a non-empty (N, d) batch of projections, got shape {got!r}")
    x = f.detach().float()
    return x.T @ x / x.shape[0]


def _check_rho(rho: float) -> None:
    if not 0.0 <= rho < 1.0:
        raise ConfigError(
            f"rho (the correlation EMA decay) must be in [0, 1), got {rho!r}; DirectPred uses 0.3"
        )


def correlation_update(F_hat: Tensor | None, f: Tensor, rho: float) -> Tensor:
    """F̂ ← ρ F̂ + (1-ρ) E_B[f fᵀ] (uncentred, f detached); F̂ = E_B[f fᵀ] when ``F_hat`` is None (first call).

    Returns a new float32 tensor; the inputs are not modified.
    """
    _check_rho(rho)
    c = batch_correlation(f)
    if F_hat is None:
        return c
    _check_square("F_hat", F_hat)
    if F_hat.shape != c.shape:
        raise ConfigError(f"F_hat is {tuple(F_hat.shape)} but the projections have dimension {c.shape[0]}")
    return rho * F_hat.to(c) + (1.0 - rho) * c


def _work_dtype(m: Tensor) -> torch.dtype:
    # float64 on the CPU: float32 eigenvectors of a near-degenerate correlation matrix are noticeably less
    # orthogonal. float32 on CUDA: float64 runs at 1/64 of the float32 rate on consumer GPUs (hundreds of ms
    # for d = 2048, every step); _eigh falls back to float64 where float32 fails to converge.
    return torch.float32 if m.is_cuda else torch.float64


def _eigh(F_hat: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues (ascending) and eigenvectors of the symmetrised F̂ (eigh reads one triangle only).

    Raises torch.linalg.LinAlgError only when float64 fails too (a NaN or infinite F̂).
    """
    m = F_hat.to(_work_dtype(F_hat))
    try:
        return torch.linalg.eigh((m + m.T) / 2)
    except torch.linalg.LinAlgError:
        if m.dtype == torch.float64:
            raise
        m = F_hat.double()
        return torch.linalg.eigh((m + m.T) / 2)


def directpred_weight(F_hat: Tensor, eps: float, *, eps_inside: bool = False) -> Tensor:
    """DirectPred's W_p = U diag(p) Uᵀ from F̂ = U diag(s) Uᵀ, in the released code's form.

    eps_inside=False (default): p_j = max(sqrt(s_j⁺ / s_max) + ε, 1e-4);
    eps_inside=True:            p_j = sqrt(max(s_j⁺ / s_max + ε, 1e-4)),   s⁺ = max(s, 0).
    A zero F̂ (no signal yet) gives max(ε, 1e-4)·I. Returned in F_hat's dtype and device; symmetric PSD.
    """
    _check_square("F_hat", F_hat)
    s, u = _eigh(F_hat)
    s = s.clamp(min=0)
    s = s / s.max().clamp_min(torch.finfo(s.dtype).tiny)
    if eps_inside:
        p = (s + eps).clamp(min=MIN_EIGENVALUE).sqrt()
    else:
        p = (s.sqrt() + eps).clamp(min=MIN_EIGENVALUE)
    w = (u * p) @ u.T
    # Rounding leaves U diag(p) Uᵀ asymmetric by ~1e-17; average it out so W_p is exactly symmetric.
    return ((w + w.T) / 2).to(F_hat.dtype)


def directcopy_weight(F_hat: Tensor, eps: float, *, normalize: bool = True) -> Tensor:
    """DirectCopy's W_p = F̂ / λ_max(F̂) + ε I (``normalize=False``: F̂ + ε I, the released code).

    λ_max is the largest eigenvalue of the symmetrised F̂ (its spectral norm, as F̂ is PSD); a zero F̂
    gives ε I. Only eigenvalues are computed (eigvalsh), no eigenvectors.
    """
    _check_square("F_hat", F_hat)
    m = F_hat.to(_work_dtype(F_hat))
    m = (m + m.T) / 2
    if normalize:
        try:
            top = torch.linalg.eigvalsh(m)[-1]
        except torch.linalg.LinAlgError:
            if m.dtype == torch.float64:
                raise
            m = m.double()
            top = torch.linalg.eigvalsh(m)[-1]
        m = m / top.clamp_min(torch.finfo(m.dtype).tiny)
    eye = torch.eye(m.shape[0], dtype=m.dtype, device=m.device)
    return (m + eps * eye).to(F_hat.dtype)


def eigenspace_alignment(W_p: Tensor, F_hat: Tensor, *, top: int | None = None) -> float:
    """Mean over eigenvectors u_j of F̂ of cos(W_p u_j, u_j) (Tian et al. 2021, Fig. 2, third column).

    = (1/J) Σ_j ⟨W_p u_j, u_j⟩ / ‖W_p u_j‖ over the ``top`` eigenvectors with the largest eigenvalues
    (all d when None). 1 when W_p has F̂'s eigenvectors with positive eigenvalues (then W_p and F̂ commute);
    < 1 when W_p rotates them; negative eigenvalues of W_p give negative cosines. With repeated eigenvalues of
    F̂ the eigenvectors are not unique and a commuting W_p can still score < 1. A u_j with W_p u_j = 0
    counts as cosine 0.
    """
    _check_square("W_p", W_p)
    _check_square("F_hat", F_hat)
    if W_p.shape != F_hat.shape:
        raise ConfigError(f"W_p {tuple(W_p.shape)} and F_hat {tuple(F_hat.shape)} must have the same shape")
    d = F_hat.shape[0]
    if top is not None and not 1 <= top <= d:
        raise ConfigError(f"top must be in [1, {d}] or None, got {top!r}")
    _, u = _eigh(F_hat)  # ascending eigenvalues: the last columns are the top eigenvectors
    if top is not None:
        u = u[:, d - top :]
    u = u.double()
    wu = W_p.double() @ u
    return float(F.cosine_similarity(wu, u, dim=0, eps=1e-12).mean())


class DirectPredictor(nn.Module):
    """Linear predictor h(z) = W_p z (no bias) whose W_p is set from the EMA correlation of its inputs.

    ``mode="directpred"``: W_p = directpred_weight(F̂, eps, eps_inside=eps_inside);
    ``mode="directcopy"``: W_p = directcopy_weight(F̂, eps).

    Use: call ``forward`` on the online projections (gradients flow to z, not to W_p), then, once per
    training step, ``observe(torch.cat([z1, z2]))`` with the detached online projections of both views. As in
    the released trainer, the forward pass of step t uses the W_p computed at the end of step t-1, and
    ``observe`` recomputes W_p at steps 0, freq, 2·freq, … (counted in observe calls).

    State (buffers, saved in ``state_dict`` and restored on resume): ``weight`` (d x d, starts at I),
    ``corr`` (F̂), ``corr_initialized`` (whether F̂ holds a batch yet) and ``steps`` (observe calls so far).
    ``observe`` decides from Python copies of the last two, rebuilt when a state dict is loaded: reading the
    buffers each step would wait for the GPU (a host sync per step).

    A non-finite F̂ (NaN projections) gives a NaN W_p rather than an exception from the eigendecomposition,
    so the training loop's non-finite handling (stop or roll back) sees it.
    """

    weight: Tensor
    corr: Tensor
    corr_initialized: Tensor
    steps: Tensor

    def __init__(
        self,
        dim: int,
        *,
        mode: str = "directpred",
        rho: float = 0.3,
        eps: float = 0.1,
        freq: int = 1,
        eps_inside: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ConfigError(f"dim must be a positive integer (the projector's output size), got {dim!r}")
        if mode not in MODES:
            raise ConfigError(f"unknown DirectPred mode {mode!r}; choose one of {', '.join(MODES)}")
        _check_rho(rho)
        if not eps >= 0:
            raise ConfigError(f"eps must be >= 0 (DirectPred uses 0.1), got {eps!r}")
        if not isinstance(freq, int) or isinstance(freq, bool) or freq < 1:
            raise ConfigError(f"freq must be a positive integer (1 = recompute W_p every step), got {freq!r}")
        if eps_inside and mode != "directpred":
            raise ConfigError("eps_inside only applies to mode='directpred'; drop it for directcopy")
        self.dim = dim
        self.mode = mode
        self.rho = float(rho)
        self.eps = float(eps)
        self.freq = freq
        self.eps_inside = bool(eps_inside)
        self.register_buffer("weight", torch.eye(dim))
        self.register_buffer("corr", torch.zeros(dim, dim))
        self.register_buffer("corr_initialized", torch.tensor(False))
        self.register_buffer("steps", torch.tensor(0, dtype=torch.long))
        self._initialized = False  # host copies of corr_initialized and steps
        self._steps = 0
        self.register_load_state_dict_post_hook(_sync_counters)

    def extra_repr(self) -> str:
        inside = ", eps_inside=True" if self.eps_inside else ""
        return f"dim={self.dim}, mode={self.mode}, rho={self.rho}, eps={self.eps}, freq={self.freq}{inside}"

    def forward(self, z: Tensor) -> Tensor:
        """z @ W_pᵀ, in z's dtype (so it also works outside autocast with half-precision inputs)."""
        return F.linear(z, self.weight.to(z.dtype))

    def compute_weight(self) -> Tensor:
        """The W_p that the current F̂ gives (without storing it)."""
        if self.mode == "directpred":
            return directpred_weight(self.corr, self.eps, eps_inside=self.eps_inside)
        return directcopy_weight(self.corr, self.eps)

    @torch.no_grad()
    def observe(self, f: Tensor, all_reduce: Callable[[Tensor], Tensor] | None = None) -> None:
        """Fold this step's projections f (N, d; both views concatenated) into F̂; reset W_p every ``freq`` steps.

        ``all_reduce`` (for DDP): a function that returns the mean of its argument over processes, e.g.
        ``lambda t: (torch.distributed.all_reduce(t), t / world_size)[1]``; it is applied to E_B[f fᵀ] before
        the EMA, so every process holds the same F̂ and W_p (assuming equal per-process batch sizes).
        """
        if not isinstance(f, Tensor) or f.dim() != 2 or f.shape[1] != self.dim:
            raise ConfigError(
                f"observe expects the (N, {self.dim}) online projections, got shape {getattr(f, 'shape', f)}"
            )
        c = batch_correlation(f).to(self.corr.device)
        if all_reduce is not None:
            c = all_reduce(c)
        if self._initialized:
            self.corr.mul_(self.rho).add_(c, alpha=1.0 - self.rho)
        else:
            self.corr.copy_(c)
            self.corr_initialized.fill_(True)
            self._initialized = True
        if self._steps % self.freq == 0:
            try:
                self.weight.copy_(self.compute_weight())
            except torch.linalg.LinAlgError:  # F̂ holds NaN/inf: let the loop's finite checks report it
                self.weight.fill_(float("nan"))
        self.steps.add_(1)
        self._steps += 1

    def alignment(self) -> float:
        """eigenspace_alignment(W_p, F̂); NaN before the first ``observe`` (F̂ holds no statistics yet)."""
        if not bool(self.corr_initialized):
            return float("nan")
        return eigenspace_alignment(self.weight, self.corr)


def _sync_counters(module: nn.Module, incompatible: object) -> None:
    """After load_state_dict: the host copies of the counters from the loaded buffers (one read per load)."""
    assert isinstance(module, DirectPredictor)
    module._initialized = bool(module.corr_initialized)
    module._steps = int(module.steps)
