"""Weights & Biases logging, offline (no network): the run files hold the same metrics as metrics.jsonl."""

from __future__ import annotations

import json
import struct
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gsg.errors import ConfigError
from gsg.train.logging import MetricsLogger, WandbSettings, read_metrics
from gsg.train.loop import pretrain

pytestmark = pytest.mark.usefixtures("one_thread")

_BLOCK = 32768  # the .wandb file is a LevelDB-style log: 7-byte header, then records in 32 KiB blocks
_FULL, _LAST = 1, 4


def wandb_records(path: Path) -> list[Any]:
    """The protobuf records of a W&B run file (wandb's own reader is not public API in every version)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, buf, out = 7, b"", []
    while pos + 7 <= len(data):
        if _BLOCK - pos % _BLOCK < 7:  # a block's tail too short for a header is padding
            pos += _BLOCK - pos % _BLOCK
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        buf += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (_FULL, _LAST):
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


def complete_records(path: Path, timeout: float = 60.0) -> list[Any]:
    """The records once the run's exit record is on disk: wandb's service may still be writing after finish()."""
    deadline = time.monotonic() + timeout
    while True:
        records = wandb_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def history(path: Path) -> list[dict[str, Any]]:
    rows = []
    for r in complete_records(path):
        if r.WhichOneof("record_type") == "history":
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
    return rows


def test_offline_run_logs_the_same_metrics_as_the_json_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    from conftest import tiny_config

    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = {"wandb": True, "wandb_mode": "offline", "wandb_project": "gsg-test", "wandb_name": "tiny",
           "log_every": 2, "knn_every": 1, "knn_k": 5}
    cfg = tiny_config(tmp_path / "run", optim={"epochs": 1, "batch_size": 16, "lr": 0.05}, run=run)
    pretrain(cfg)
    files = sorted((tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    run_id = (Path(cfg.run.out) / "wandb_id").read_text().strip()
    assert files[0].name == f"run-{run_id}.wandb"
    rows = history(files[0])
    logged = {k: v for row in rows for k, v in row.items() if not k.startswith("_")}
    jsonl = read_metrics(Path(cfg.run.out) / "metrics.jsonl")
    epoch = next(r for r in jsonl if r["kind"] == "epoch")
    for key in ("loss", "z_std", "knn_k5", "knn_k1", "probe_top1", "probe_test_top1", "lr"):
        assert logged[f"epoch/{key}"] == pytest.approx(epoch[key], rel=1e-12), key
    steps = [r for r in jsonl if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [2, 4]
    step_rows = [row for row in rows if "step/loss" in row]
    assert [row["_step"] for row in step_rows] == [2, 4]  # logged at the optimizer step, as TensorBoard
    assert [row["step/loss"] for row in step_rows] == pytest.approx([r["loss"] for r in steps], rel=1e-12)
    meta = next(r.run for r in complete_records(files[0]) if r.WhichOneof("record_type") == "run")
    assert (meta.project, meta.display_name, meta.run_id) == ("gsg-test", "tiny", run_id)
    config = {u.key: json.loads(u.value_json) for u in meta.config.update}
    assert config["optim"]["batch_size"] == 16 and config["run"]["wandb_mode"] == "offline"

    # a resumed run continues the same W&B run (wandb names offline folders by the second they start in, so
    # the resumed run may share the first one's folder)
    cfg2 = tiny_config(tmp_path / "run", optim={"epochs": 2, "batch_size": 16, "lr": 0.05}, run=run)
    pretrain(cfg2, resume=True)
    files = sorted((tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert {f.name for f in files} == {f"run-{run_id}.wandb"}
    assert any(row.get("epoch/epoch") == 2 and row["_step"] == 8 for f in files for row in history(f))


def test_missing_wandb_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'gsg-ssl\[wandb\]'"):
        MetricsLogger(tmp_path, tensorboard=False, wandb=WandbSettings(mode="offline"))


def test_wandb_off_by_default_and_mode_is_checked() -> None:
    from gsg.config import load_config

    assert load_config().run.wandb is False
    with pytest.raises(ConfigError, match="offline"):
        load_config(overrides={"run": {"wandb_mode": "ofline"}})
