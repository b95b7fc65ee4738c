"""kNN classifier: brute-force and scikit-learn references, hand-checked votes, bounded-memory merging."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sklearn.neighbors import KNeighborsClassifier

from gsg.analysis.knn import knn_accuracy, knn_predict
from gsg.errors import ConfigError


def brute_force_knn(train, train_labels, test, num_classes, k, temperature, dtype=torch.float32):
    """Literal InstDisc vote: full similarity matrix, top-k, sum of exp(s/T) per class."""
    bank = F.normalize(train.to(dtype), dim=1)
    query = F.normalize(test.to(dtype), dim=1)
    sim = query @ bank.T
    top_sim, top_idx = sim.topk(min(k, len(train)), dim=1)
    weights = torch.exp(top_sim / temperature)
    scores = torch.zeros(len(test), num_classes, dtype=dtype)
    scores.scatter_add_(1, train_labels[top_idx], weights)
    return scores.argmax(dim=1)


def random_problem(seed: int, n_train=300, n_test=97, dim=16, num_classes=10):
    g = torch.Generator().manual_seed(seed)
    train = torch.randn(n_train, dim, generator=g)
    test = torch.randn(n_test, dim, generator=g)
    labels = torch.randint(0, num_classes, (n_train,), generator=g)
    return train, labels, test


CHUNKS = [(1024, None), (7, None), (7, 13), (32, 64), (97, 1)]  # (chunk_size, bank_block_size)


@pytest.mark.parametrize("k", [1, 5, 20, 300, 500])
@pytest.mark.parametrize(("chunk_size", "bank_block_size"), CHUNKS)
def test_matches_brute_force(k, chunk_size, bank_block_size):
    train, labels, test = random_problem(seed=k)
    got = knn_predict(train, labels, test, 10, k=k, temperature=0.1, chunk_size=chunk_size,
                      bank_block_size=bank_block_size)
    want = brute_force_knn(train, labels, test, 10, k, 0.1)
    assert got.dtype == torch.long
    assert torch.equal(got, want)


def test_small_temperature_does_not_overflow():
    # exp(s/0.005) reaches e^200, beyond float32; the reference runs in float64 where it is finite.
    train, labels, test = random_problem(seed=3)
    got = knn_predict(train, labels, test, 10, k=20, temperature=0.005, chunk_size=16, bank_block_size=50)
    want = brute_force_knn(train, labels, test, 10, 20, 0.005, dtype=torch.float64)
    assert torch.equal(got, want)


def test_k1_matches_sklearn_cosine_nearest_neighbour():
    train, labels, test = random_problem(seed=11, n_train=400, n_test=150, dim=8)
    sk = KNeighborsClassifier(n_neighbors=1, metric="cosine", algorithm="brute")
    sk.fit(train.double().numpy(), labels.numpy())
    want = torch.from_numpy(sk.predict(test.double().numpy()))
    got = knn_predict(train, labels, test, 10, k=1, chunk_size=40, bank_block_size=64)
    assert torch.equal(got, want.long())


def test_hand_checked_vote_depends_on_temperature():
    # Bank: (1,0) class 0, (0.8,0.6) and (0,1) class 1. Query (1,0.1): cosines 0.99504, 0.85573, 0.09950.
    # T=0.1: class 0 scores e^9.950 = 20952 > class 1 e^8.557 + e^0.995 = 5205 -> 0.
    # T=1:   class 0 scores e^0.995 = 2.705 < class 1 e^0.856 + e^0.0995 = 3.458 -> 1.
    bank = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[1.0, 0.1]])
    assert knn_predict(bank, labels, query, 2, k=3, temperature=0.1).tolist() == [0]
    assert knn_predict(bank, labels, query, 2, k=3, temperature=1.0).tolist() == [1]
    assert knn_predict(bank, labels, query, 2, k=1, temperature=1.0).tolist() == [0]
    # k beyond the bank is clamped to the 3 rows: same as k=3.
    assert knn_predict(bank, labels, query, 2, k=200, temperature=1.0).tolist() == [1]


def test_separable_clusters_give_100_percent():
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(3, 12) * 5
    labels = torch.arange(3).repeat_interleave(50)
    train = centres[labels] + 0.3 * torch.randn(150, 12, generator=g)
    test_labels = torch.arange(3).repeat_interleave(20)
    test = centres[test_labels] + 0.3 * torch.randn(60, 12, generator=g)
    acc = knn_accuracy(train, labels, test, test_labels, 3, chunk_size=16, bank_block_size=40)
    assert acc == {"knn_k200": 100.0, "knn_k1": 100.0}


def test_accuracy_is_percent_of_matches_per_k():
    train, labels, test = random_problem(seed=5)
    test_labels = torch.randint(0, 10, (len(test),), generator=torch.Generator().manual_seed(9))
    acc = knn_accuracy(train, labels, test, test_labels, 10, ks=(50, 3, 1), chunk_size=30, bank_block_size=70)
    assert list(acc) == ["knn_k50", "knn_k3", "knn_k1"]
    for k in (50, 3, 1):
        pred = brute_force_knn(train, labels, test, 10, k, 0.1)
        assert acc[f"knn_k{k}"] == pytest.approx(100.0 * (pred == test_labels).double().mean().item())


def test_half_precision_features_are_computed_in_float32():
    train, labels, test = random_problem(seed=2)
    half = knn_predict(train.half(), labels, test.half(), 10, k=10)
    ref = brute_force_knn(train.half().float(), labels, test.half().float(), 10, 10, 0.1)
    assert torch.equal(half, ref)


def test_bad_inputs_raise_config_error():
    train, labels, test = random_problem(seed=1)
    unlabelled = labels.clone()
    unlabelled[4] = -1
    with pytest.raises(ConfigError, match="unlabelled"):
        knn_predict(train, unlabelled, test, 10)
    with pytest.raises(ConfigError, match="num_classes"):
        knn_predict(train, labels, test, 5)
    with pytest.raises(ConfigError, match="dimensions"):
        knn_predict(train, labels, test[:, :8], 10)
    with pytest.raises(ConfigError, match="k must be"):
        knn_predict(train, labels, test, 10, k=0)
    with pytest.raises(ConfigError, match="temperature"):
        knn_predict(train, labels, test, 10, temperature=0.0)
    with pytest.raises(ConfigError, match="one label per"):
        knn_predict(train, labels[:-1], test, 10)
    bad = train.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ConfigError, match="NaN"):
        knn_predict(bad, labels, test, 10)
