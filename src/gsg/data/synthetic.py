"""The synthetic dataset: deterministic labelled images for tests, demos and smoke runs (no files needed)."""

from __future__ import annotations

import math

import torch

__all__ = ["DISTRACTOR", "NOISE", "SYNTHETIC_CLASSES", "SYNTHETIC_DEFAULT_SIZE", "SYNTHETIC_IMAGE_SIZE",
           "synthetic_images"]

SYNTHETIC_DEFAULT_SIZE = {"train": 512, "pretrain": 512, "test": 256}
SYNTHETIC_IMAGE_SIZE = 32
SYNTHETIC_CLASSES = 10
DISTRACTOR, NOISE = 1.0, 0.35  # synthetic nuisance strengths, relative to the class templates' pixel std

_SYNTHETIC_TEMPLATE_SEED = 20231  # class patterns are shared by every split; only the samples differ
_SYNTHETIC_SPLIT_SEED = {"train": 1, "pretrain": 1, "test": 2}


def _waves(freqs: torch.Tensor, phase: torch.Tensor, amp: torch.Tensor, shift: torch.Tensor,
           coord: torch.Tensor) -> torch.Tensor:
    """Σ_m amp[b,m,c] cos(2π f[b,m]·((y, x) - shift[b]) + phase[b,m]) -> (B, C, S, S)."""
    y = coord[None, None, :, None] - shift[:, None, 0, None, None]  # (B, 1, S, 1)
    x = coord[None, None, None, :] - shift[:, None, 1, None, None]  # (B, 1, 1, S)
    ang = 2 * math.pi * (freqs[..., 0, None, None] * y + freqs[..., 1, None, None] * x)
    return torch.einsum("bmyx,bmc->bcyx", torch.cos(ang + phase[..., None, None]), amp)


def _blob(centre: torch.Tensor, amp: torch.Tensor, shift: torch.Tensor, coord: torch.Tensor,
          sigma: float = 0.15) -> torch.Tensor:
    """amp[b,c] exp(-|(y, x) - centre[b] - shift[b]|² / 2σ²), distance wrapped on the unit torus."""
    dy = coord[None, :] - shift[:, 0, None] - centre[:, 0, None]
    dx = coord[None, :] - shift[:, 1, None] - centre[:, 1, None]
    dy, dx = dy - dy.round(), dx - dx.round()
    g = torch.exp(-(dy[:, :, None] ** 2 + dx[:, None, :] ** 2) / (2 * sigma**2))
    return amp[:, :, None, None] * g[:, None]


def _random_freqs(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """Integer frequencies in [-3, 3]², not (0, 0); periodic on [0, 1)², so shifts wrap."""
    f = torch.randint(-3, 4, (*shape, 2), generator=g).double()
    f[(f == 0).all(-1)] = 1.0
    return f


def synthetic_images(n: int, *, channels: int = 3, image_size: int = SYNTHETIC_IMAGE_SIZE,
                     num_classes: int = SYNTHETIC_CLASSES, sample_seed: int = 1,
                     distractor: float = DISTRACTOR, noise: float = NOISE,
                     chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic labelled images: each class a smooth periodic pattern, each image a disturbed copy.

    Class k: t_k(c, p) = Σ_{m<3} a_kmc cos(2π f_km·p + φ_km) + b_kc exp(-|p - μ_k|²_wrap / 2σ²), p = (y, x)
    in [0, 1)², integer f_km ∈ [-3, 3]², σ = 0.15. Image i of class k:
        x_i(c, p) = g_ic s_i t_k(c, p - δ_i) + λ d_i(c, p) + ε,
    shift δ_i ~ U[-1/4, 1/4]², contrast s_i ~ U[0.7, 1.3], colour gain g_ic ~ U[0.7, 1.3], a class-free
    distractor d_i (2 random waves, like a template's) of weight λ = distractor, and ε ~ N(0, noise²), all in
    units of the templates' pixel std σ_t; stored as uint8 255·clip(0.5 + 0.2 x/σ_t, 0, 1) (pixel mean ≈ 0.5,
    std ≈ 0.27). Raw-pixel 1-NN accuracy (512 train, 256 test, 32 px): 89% with 3 channels, 71% with 1.
    Shifts, colour and contrast are what the augmentations of SSL recipes are invariant to.
    Returns (uint8 (n, C, S, S), int64 (n,) labels, balanced).
    """
    k_cls, coord = num_classes, torch.arange(image_size, dtype=torch.float64) / image_size
    gt = torch.Generator().manual_seed(_SYNTHETIC_TEMPLATE_SEED)
    t_freqs, t_phase = _random_freqs((k_cls, 3), gt), torch.rand(k_cls, 3, generator=gt, dtype=torch.float64)
    t_amp = torch.randn(k_cls, 3, channels, generator=gt, dtype=torch.float64)
    t_centre = torch.rand(k_cls, 2, generator=gt, dtype=torch.float64)
    t_blob = 1.5 * torch.randn(k_cls, channels, generator=gt, dtype=torch.float64)
    t_phase = t_phase * 2 * math.pi

    def template(lab: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        return (_waves(t_freqs[lab], t_phase[lab], t_amp[lab], shift, coord)
                + _blob(t_centre[lab], t_blob[lab], shift, coord))

    scale = template(torch.arange(k_cls), torch.zeros(k_cls, 2, dtype=torch.float64)).std().item()

    gs = torch.Generator().manual_seed(sample_seed)
    labels = (torch.arange(n) % k_cls)[torch.randperm(n, generator=gs)]
    shift = (torch.rand(n, 2, generator=gs, dtype=torch.float64) - 0.5) / 2
    gain = (0.7 + 0.6 * torch.rand(n, 1, generator=gs, dtype=torch.float64)) * (
        0.7 + 0.6 * torch.rand(n, channels, generator=gs, dtype=torch.float64))
    d_freqs = _random_freqs((n, 2), gs)
    d_phase = 2 * math.pi * torch.rand(n, 2, generator=gs, dtype=torch.float64)
    d_amp = torch.randn(n, 2, channels, generator=gs, dtype=torch.float64)
    eps = torch.randn(n, channels, image_size, image_size, generator=gs, dtype=torch.float32)

    out = torch.empty(n, channels, image_size, image_size, dtype=torch.uint8)
    for i in range(0, n, chunk):
        sl = slice(i, min(i + chunk, n))
        x = gain[sl, :, None, None] * template(labels[sl], shift[sl])
        still = torch.zeros_like(shift[sl])
        x = x + distractor * scale * _waves(d_freqs[sl], d_phase[sl], d_amp[sl], still, coord)
        x = x + noise * scale * eps[sl]
        out[sl] = torch.round(255 * (0.5 + 0.2 * x / scale).clamp(0, 1)).to(torch.uint8)
    return out, labels
