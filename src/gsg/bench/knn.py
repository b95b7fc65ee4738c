"""Evaluation: gsg's kNN classifier against scikit-learn's KNeighborsClassifier (brute force, cosine).

Problem: ``n_train`` bank rows, ``n_test`` queries, ``dim`` features (default 50k x 10k x 512: CIFAR-10's
train/test sizes and ResNet-18's feature width), ``num_classes`` Gaussian clusters with noise, so that
the neighbourhoods are realistic (not uniformly random) and the predictions mean something.

Two rules, both run by each library on the same float32 features:

- ``k=1``: the plain nearest neighbour (the GSG paper's CIFAR protocol);
- weighted ``k=200, T=0.1`` (InstDisc's vote): scikit-learn with ``weights=lambda d: exp((1 - d) / T)``,
  which is exp(cos/T) since its cosine distance is d = 1 - cos: the same vote as ``gsg.analysis.knn``.

Timed: gsg's ``knn_predict`` and scikit-learn's ``fit`` + ``predict`` (``algorithm="brute"``,
``metric="cosine"``), alternated ``repeats`` times; both use every thread torch/BLAS are allowed.
Predictions are compared element by element; any disagreement is reported with the similarity gap that
decided it (a float32 near-tie between the k-th and (k+1)-th neighbour, or between two class scores).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gsg.analysis.knn import knn_predict
from gsg.bench.report import finish, interleaved_times, machine_info, resolve_device, summarize_times


def clustered_features(n_train: int, n_test: int, dim: int, num_classes: int, *, noise: float | None = None,
                       seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(bank, bank labels, queries, query labels): class centres ~ N(0, I), points = centre + noise N(0, I).

    The default noise, 6.5 (dim / 512)^(1/4), keeps the difficulty fixed across dimensions (the squared
    distance between classes grows like dim, its spread like noise² √dim). At 50k x 512 it gives ~92% with
    the k=200 vote and ~46% with k=1: contested votes and near neighbours from other classes, where a
    difference in how ties or weights are handled would show (an easy problem would hide it).
    """
    if noise is None:
        noise = 6.5 * (dim / 512) ** 0.25
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=g)
    ytr = torch.randint(0, num_classes, (n_train,), generator=g)
    yte = torch.randint(0, num_classes, (n_test,), generator=g)
    xtr = centres[ytr] + noise * torch.randn(n_train, dim, generator=g)
    xte = centres[yte] + noise * torch.randn(n_test, dim, generator=g)
    return xtr, ytr, xte, yte


def sklearn_classifier(k: int, temperature: float | None) -> Any:
    """KNeighborsClassifier with gsg's rule: uniform k=1, or the exp(cos / T) weighted vote."""
    from sklearn.neighbors import KNeighborsClassifier

    if temperature is None:
        return KNeighborsClassifier(n_neighbors=k, algorithm="brute", metric="cosine")

    def weights(dist: np.ndarray) -> np.ndarray:
        # d = 1 - cos. Subtracting each row's smallest distance rescales the row's weights by one positive
        # factor (the vote's argmax is unchanged) and keeps exp finite for small T, as gsg's _vote does.
        return np.exp(-(dist - dist.min(axis=1, keepdims=True)) / temperature)

    return KNeighborsClassifier(n_neighbors=k, algorithm="brute", metric="cosine", weights=weights)


def sklearn_predict(xtr: Tensor, ytr: Tensor, xte: Tensor, k: int, temperature: float | None) -> Tensor:
    clf = sklearn_classifier(k, temperature)
    clf.fit(xtr.numpy(), ytr.numpy())
    return torch.from_numpy(clf.predict(xte.numpy()).astype(np.int64))


def explain_disagreements(xtr: Tensor, ytr: Tensor, xte: Tensor, rows: Tensor, k: int, num_classes: int,
                          temperature: float | None) -> list[dict[str, float]]:
    """For each disagreeing query: the gap between its k-th and (k+1)-th neighbour similarity and between
    its two best class scores, in float64. Tiny gaps mean a float32 rounding tie, not a bug."""
    out = []
    bank = F.normalize(xtr.double(), dim=1)
    for i in rows.tolist()[:20]:
        sim = bank @ F.normalize(xte[i].double(), dim=0)
        top = sim.topk(min(k + 1, len(sim)))
        kth_gap = float(top.values[k - 1] - top.values[k]) if len(top.values) > k else float("inf")
        idx, s = top.indices[:k], top.values[:k]
        w = torch.exp((s - s[0]) / temperature) if temperature is not None else torch.ones_like(s)
        scores = torch.zeros(num_classes, dtype=torch.float64).scatter_add_(0, ytr[idx], w)
        best2 = scores.topk(2).values
        out.append({"query": i, "kth_neighbour_gap": kth_gap, "class_score_gap": float(best2[0] - best2[1])})
    return out


def compare(xtr: Tensor, ytr: Tensor, xte: Tensor, num_classes: int, k: int, temperature: float | None,
            device: torch.device) -> dict[str, Any]:
    """Predictions of both implementations for one rule, and where they differ."""
    ours = knn_predict(xtr.to(device), ytr.to(device), xte.to(device), num_classes, k=k,
                       temperature=temperature if temperature is not None else 1.0).cpu()
    theirs = sklearn_predict(xtr, ytr, xte, k, temperature)
    diff = torch.nonzero(ours != theirs).flatten()
    return {"ours": ours, "sklearn": theirs, "mismatches": int(diff.numel()),
            "identical": bool(diff.numel() == 0),
            "disagreements": explain_disagreements(xtr, ytr, xte, diff, k, num_classes, temperature)}


def run(*, device: str = "auto", quick: bool = False, n_train: int = 50000, n_test: int = 10000, dim: int = 512,
        num_classes: int = 10, k: int = 200, temperature: float = 0.1, repeats: int = 3,
        seed: int = 0) -> dict[str, Any]:
    """Time and predictions of gsg's kNN vs scikit-learn's on an n_train x n_test x dim problem."""
    dev = resolve_device(device)
    if quick:
        n_train, n_test, dim, repeats = 1000, 200, 32, 1
    options = {"device": str(dev), "quick": quick, "n_train": n_train, "n_test": n_test, "dim": dim,
               "num_classes": num_classes, "k": k, "temperature": temperature, "repeats": repeats, "seed": seed}
    result: dict[str, Any] = {"machine": machine_info(dev), "options": options}
    xtr, ytr, xte, yte = clustered_features(n_train, n_test, dim, num_classes, seed=seed)
    rules = {f"k={k} weighted (T={temperature})": (k, temperature), "k=1": (1, None)}
    rows = []
    agreement: dict[str, Any] = {}
    xtr_d, ytr_d, xte_d = xtr.to(dev), ytr.to(dev), xte.to(dev)
    for label, (kk, t) in rules.items():
        cmp = compare(xtr, ytr, xte, num_classes, kk, t, dev)
        acc = 100.0 * float((cmp["ours"] == yte).double().mean())
        agreement[label] = {"identical": cmp["identical"], "mismatches": cmp["mismatches"],
                            "accuracy_pct": acc, "disagreements": cmp["disagreements"]}
        fns = {
            "gsg knn_predict": lambda kk=kk, t=t: knn_predict(xtr_d, ytr_d, xte_d, num_classes, k=kk,
                                                              temperature=t if t is not None else 1.0),
            "scikit-learn (brute, cosine)": lambda kk=kk, t=t: sklearn_predict(xtr, ytr, xte, kk, t),
        }
        times = interleaved_times(fns, repeats=repeats, warmup=0, device=dev)
        med = {name: summarize_times(ts)["median_s"] for name, ts in times.items()}
        for name, m in med.items():
            rows.append({"rule": label, "implementation": name, "median s": m,
                         "speed-up vs scikit-learn": med["scikit-learn (brute, cosine)"] / m,
                         "identical predictions": cmp["identical"], "mismatches": cmp["mismatches"],
                         "accuracy %": acc})
        agreement[label]["speedup"] = med["scikit-learn (brute, cosine)"] / med["gsg knn_predict"]
    result["tables"] = {f"kNN on {n_train} x {n_test} x {dim}": rows}
    result["agreement"] = agreement
    return finish(result)
