"""Result JSON files next to the checkpoint; t-SNE plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

import gsg
from gsg.checkpoint import file_sha256
from gsg.errors import CheckpointError, ConfigError
from gsg.eval.results import read_result, result_path, write_result
from gsg.eval.tsne import subsample, tsne_embedding, tsne_plot


def test_write_result_records_hash_command_and_version(tmp_path: Path) -> None:
    ckpt = tmp_path / "run1" / "checkpoint.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"not really a checkpoint, but it has a hash")
    out = write_result(ckpt, "linear", "cifar10", "top1", np.float32(86.25),
                       extra={"epochs": 90, "lr": torch.tensor(30.0), "history": np.array([1.0, 2.0])},
                       command=["gsg", "linear", str(ckpt)])
    assert out == tmp_path / "run1" / "checkpoint.linear.cifar10.json"
    rec = read_result(out)
    assert rec["value"] == 86.25 and rec["metric"] == "top1" and rec["protocol"] == "linear"
    assert rec["checkpoint_sha256"] == file_sha256(ckpt)
    assert rec["command"] == f"gsg linear {ckpt}"
    assert rec["gsg_version"] == gsg.__version__
    assert rec["extra"] == {"epochs": 90, "lr": 30.0, "history": [1.0, 2.0]}
    assert rec["timestamp"].endswith("+00:00")
    json.loads(out.read_text())  # strict JSON (no NaN)


def test_result_path_sanitises_folder_datasets(tmp_path: Path) -> None:
    assert result_path(tmp_path / "c.pt", "transfer", "/data/my images/").name == "c.transfer.my_images.json"


def test_write_result_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        write_result(tmp_path / "missing.pt", "knn", "cifar10", "top1", 1.0)
    ckpt = tmp_path / "c.pt"
    ckpt.write_bytes(b"x")
    with pytest.raises(ConfigError, match="non-finite"):
        write_result(ckpt, "knn", "cifar10", "top1", float("nan"))


def test_tsne_separates_clusters_and_writes_png(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(90) % 3
    feats = 10.0 * torch.eye(3, 20)[labels] + torch.randn(90, 20, generator=g)
    # One OpenMP thread: on a shared 2-core machine, spinning worker threads make t-SNE 10x slower.
    with threadpool_limits(1):
        coords = tsne_embedding(feats, seed=0)
        again = tsne_embedding(feats, seed=0)
        out = tsne_plot(feats, labels, ["a", "b", "c"], tmp_path / "plots" / "tsne.png", "kNN 100.0%",
                        max_points=60)
    assert coords.shape == (90, 2)
    # Every point's nearest neighbour in the map has its class: the clusters stay apart.
    d = ((coords[:, None] - coords[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (labels.numpy()[d.argmin(1)] == labels.numpy()).mean() == 1.0
    np.testing.assert_allclose(again, coords)  # seeded
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_subsample_is_seeded_and_bounded() -> None:
    a = subsample(10_000, 5000, seed=1)
    assert len(a) == 5000 and len(np.unique(a)) == 5000 and np.all(np.diff(a) > 0)
    assert np.array_equal(a, subsample(10_000, 5000, seed=1))
    assert np.array_equal(subsample(30, 5000, seed=1), np.arange(30))
