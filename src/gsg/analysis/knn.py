"""k-nearest-neighbour classification on L2-normalised features (online monitor and ``gsg knn``).

The weighted vote of InstDisc (Wu et al., CVPR 2018), used by most SSL papers for kNN monitoring:

    s_ij      = ⟨x̂_i, b̂_j⟩                     cosine similarity of test row i and bank row j (x̂ = x/‖x‖)
    N_k(i)    = indices of the k largest s_ij
    score_ic  = Σ_{j ∈ N_k(i), y_j = c} exp(s_ij / T)
    ŷ_i       = argmax_c score_ic

k = 1 is the plain nearest neighbour, the GSG paper's CIFAR protocol (Lee & Lee 2023, §5).

Memory: the bank is visited in blocks of ``bank_block_size`` rows and the test set in chunks of
``chunk_size`` rows, and a running top-k (similarities and labels, N_test x k) is merged across bank blocks.
The largest temporary is one chunk_size x bank_block_size similarity tile, so an ImageNet-size bank
(1.28M x 2048) never materialises an N_test x N_train matrix. Each bank block is cast to float32 and
normalised once, so a float16/bfloat16 bank is never copied whole to float32 either. The test features are
normalised once as a whole (N_test x D float32, e.g. 400 MB for ImageNet val at D = 2048).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from gsg.errors import ConfigError

# Target number of elements of one similarity tile when the bank block size is chosen automatically:
# 2**24 float32 values = 64 MiB, small next to any GPU and harmless on CPU.
_TILE_ELEMENTS = 2**24


def _check_features(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() != 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ConfigError(f"{name} must be a 2-D tensor (samples x feature dim), got shape {shape}")
    if not x.is_floating_point():
        raise ConfigError(
            f"{name} must be a floating-point tensor, got dtype {x.dtype}; cast it with .float()"
        )


def _check_labels(name: str, labels: Tensor, n: int, num_classes: int) -> None:
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.shape[0] != n:
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ConfigError(
            f"{name} must be a 1-D tensor with one label per feature row ({n}), got shape {shape}"
        )
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ConfigError(f"{name} must hold integer class indices, got dtype {labels.dtype}")
    if n == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo == -1:
        raise ConfigError(
            f"{name} contains -1 (unlabelled samples); a kNN bank and its test set need labels: "
            f"drop the unlabelled rows (e.g. use STL-10 'train', not 'train+unlabeled')"
        )
    if lo < 0 or hi >= num_classes:
        raise ConfigError(
            f"{name} must lie in [0, num_classes={num_classes}), found values in [{lo}, {hi}]; "
            f"pass the dataset's number of classes"
        )


def _validate(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    num_classes: int,
    ks: Sequence[int],
    temperature: float,
    chunk_size: int,
    bank_block_size: int | None,
) -> None:
    _check_features("train_features", train_features)
    _check_features("test_features", test_features)
    if train_features.shape[0] == 0:
        raise ConfigError("the kNN bank (train_features) is empty; extract features of at least one sample")
    if train_features.shape[1] != test_features.shape[1]:
        raise ConfigError(
            f"train and test features have different dimensions ({train_features.shape[1]} vs "
            f"{test_features.shape[1]}); extract both with the same backbone"
        )
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    _check_labels("train_labels", train_labels, train_features.shape[0], num_classes)
    if len(ks) == 0:
        raise ConfigError("ks is empty; pass at least one k, e.g. ks=(200, 1)")
    for k in ks:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}")
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0 (InstDisc uses 0.1), got {temperature!r}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if bank_block_size is not None and (not isinstance(bank_block_size, int) or bank_block_size < 1):
        raise ConfigError(
            f"bank_block_size must be a positive integer or None (automatic), got {bank_block_size!r}"
        )


def _normalise(x: Tensor, name: str) -> Tensor:
    x = x.float()
    if not bool(torch.isfinite(x).all()):
        raise ConfigError(
            f"{name} contains NaN or infinite values; the encoder that produced them has diverged "
            f"(check the training loss) or the features file is corrupt"
        )
    return F.normalize(x, dim=1)


def _topk_neighbours(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    k: int,
    chunk_size: int,
    bank_block_size: int | None,
) -> tuple[Tensor, Tensor]:
    """Similarities and labels of the k nearest bank rows of every test row, sorted descending.

    Returns two (N_test, k) tensors on the bank's device; k is already clamped to N_train.
    """
    device = train_features.device
    n_train = train_features.shape[0]
    n_test = test_features.shape[0]
    block = bank_block_size if bank_block_size is not None else max(k, _TILE_ELEMENTS // chunk_size)
    block = min(block, n_train)

    test = _normalise(test_features.to(device), "test_features")
    labels = train_labels.to(device=device, dtype=torch.long)
    best_sim = torch.full((n_test, k), float("-inf"), device=device)
    best_lab = torch.zeros((n_test, k), dtype=torch.long, device=device)
    # Bank blocks outermost: each block is cast and normalised once, and the running top-k of every test
    # row (N_test x k) is all that persists between blocks.
    for start in range(0, n_train, block):
        bank = _normalise(train_features[start : start + block], "train_features")
        bank_lab = labels[start : start + block]
        kb = min(k, bank.shape[0])
        for t0 in range(0, n_test, chunk_size):
            sim = test[t0 : t0 + chunk_size] @ bank.T  # (chunk, block)
            blk_sim, blk_idx = sim.topk(kb, dim=1)
            cand_sim = torch.cat([best_sim[t0 : t0 + chunk_size], blk_sim], dim=1)
            cand_lab = torch.cat([best_lab[t0 : t0 + chunk_size], bank_lab[blk_idx]], dim=1)
            top_sim, pos = cand_sim.topk(k, dim=1)
            best_sim[t0 : t0 + chunk_size] = top_sim
            best_lab[t0 : t0 + chunk_size] = cand_lab.gather(1, pos)
    return best_sim, best_lab


def _vote(sim: Tensor, lab: Tensor, num_classes: int, temperature: float) -> Tensor:
    """argmax_c Σ_{neighbours with label c} exp(s/T); ties go to the smallest class index."""
    # Subtracting each row's top similarity scales all its weights by one positive constant, so the argmax is
    # unchanged, and it keeps exp finite for small T (exp(1/0.01) overflows float32).
    weights = torch.exp((sim - sim[:, :1]) / temperature)
    scores = torch.zeros(sim.shape[0], num_classes, device=sim.device, dtype=weights.dtype)
    scores.scatter_add_(1, lab, weights)
    return scores.argmax(dim=1)


def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    num_classes: int,
    *,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
    bank_block_size: int | None = None,
) -> Tensor:
    """Predicted labels (N_test,) of the InstDisc weighted kNN vote on cosine similarity.

    ŷ_i = argmax_c Σ_{j ∈ top-k(i), y_j = c} exp(⟨x̂_i, b̂_j⟩ / T), with x̂ = x/‖x‖ computed in float32.
    k larger than the bank is clamped to N_train (every bank row votes). ``bank_block_size=None`` picks
    blocks so that one similarity tile has about 2**24 elements. The result is on the test features'
    device. Unlabelled bank rows (label -1) raise ConfigError.
    """
    _validate(train_features, train_labels, test_features, num_classes, (k,), temperature, chunk_size,
              bank_block_size)
    k_eff = min(k, train_features.shape[0])
    sim, lab = _topk_neighbours(
        train_features, train_labels, test_features, k_eff, chunk_size, bank_block_size
    )
    return _vote(sim, lab, num_classes, temperature).to(test_features.device)


def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    *,
    ks: Sequence[int] = (200, 1),
    temperature: float = 0.1,
    chunk_size: int = 1024,
    bank_block_size: int | None = None,
) -> dict[str, float]:
    """Top-1 kNN accuracy in percent for each k: {f"knn_k{k}": 100 · mean(ŷ == y)}.

    One pass over the bank finds the max(ks) nearest neighbours; every smaller k uses the first k of them
    (the neighbours are sorted by similarity), so several k cost one search.
    """
    _validate(train_features, train_labels, test_features, num_classes, tuple(ks), temperature, chunk_size,
              bank_block_size)
    _check_labels("test_labels", test_labels, test_features.shape[0], num_classes)
    if test_features.shape[0] == 0:
        raise ConfigError("the kNN test set is empty; extract features of at least one test sample")
    n_train = train_features.shape[0]
    k_max = min(max(ks), n_train)
    sim, lab = _topk_neighbours(
        train_features, train_labels, test_features, k_max, chunk_size, bank_block_size
    )
    target = test_labels.to(device=sim.device, dtype=torch.long)
    out: dict[str, float] = {}
    for k in ks:
        kk = min(k, n_train)
        pred = _vote(sim[:, :kk], lab[:, :kk], num_classes, temperature)
        out[f"knn_k{k}"] = 100.0 * float((pred == target).double().mean())
    return out
