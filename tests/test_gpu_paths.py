"""The GPU code paths that a CPU can check: with mocks of the CUDA queries, fake CUDA states and host-read counts
(docs/gpu.md maps each finding of the GPU review to its test here or in test_distributed_faults.py)."""

from __future__ import annotations

import copy
import logging
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from gsg.checkpoint import load_checkpoint, save_atomic
from gsg.data.datasets import TensorImageDataset, fixed_subset, held_out_split, load_dataset
from gsg.doctor.probes import HostReads  # the smoke test's own host-read counter
from gsg.models.directpred import DirectPredictor
from gsg.train import distributed, precision, rng
from gsg.train.distributed import DistInfo
from gsg.train.loop import Trainer, compile_model, pretrain, resolve_device

pytestmark = pytest.mark.usefixtures("one_thread")

# ------------------------------------------------------------------------------------------- F4: amp=auto


def _props(major: int) -> Any:
    return types.SimpleNamespace(major=major, minor=5 if major == 7 else 0)


@pytest.mark.parametrize("major,expected", [(7, torch.float16), (8, torch.bfloat16), (9, torch.bfloat16)])
def test_amp_auto_takes_bf16_only_where_the_gpu_has_it_natively(monkeypatch, major: int,
                                                                expected: torch.dtype) -> None:
    asked: list[Any] = []

    def props(device: Any) -> Any:
        asked.append(device)
        return _props(major)

    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_properties", props)
    # torch.cuda.is_bf16_supported() would say True on sm75 (emulation) and ask the current device.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    dev = torch.device("cuda", 1)
    assert precision.amp_dtype("auto", dev) == expected
    assert asked == [dev]  # the training device, not the current one
    assert precision.amp_dtype("bf16", dev) == torch.bfloat16  # asked for: given, even if emulated
    assert precision.amp_dtype("fp16", dev) == torch.float16
    assert precision.amp_dtype("off", dev) is None
    assert precision.amp_dtype("auto", torch.device("cpu")) is None
    # native: bf16 only where the GPU has it, float32 (not fp16) elsewhere
    assert precision.amp_dtype("native", dev) == (torch.bfloat16 if major >= 8 else None)


@pytest.mark.parametrize("caps,expected", [
    ({"avx512_bf16": True, "amx_bf16": False}, torch.bfloat16),  # e.g. AMD Zen 4, Intel Cooper Lake
    ({"avx512_bf16": False, "amx_bf16": True}, torch.bfloat16),  # Intel Sapphire Rapids and later
    ({"avx512_bf16": False, "amx_bf16": False, "avx2": True}, None),  # bf16 would be emulated: slower than fp32
    ({}, None),  # a CPU torch knows nothing about
])
def test_amp_native_on_cpu_takes_bf16_only_where_the_cpu_has_it(monkeypatch, caps: dict[str, bool],
                                                               expected: torch.dtype | None) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    assert precision.amp_dtype("native", torch.device("cpu")) == expected
    assert precision.amp_dtype("auto", torch.device("cpu")) is None  # auto stays float32 on every CPU
    assert precision.amp_dtype("bf16", torch.device("cpu")) == torch.bfloat16  # asked for: given


def test_trainer_under_amp_native_autocasts_where_the_cpu_has_bf16(monkeypatch, tmp_path: Path) -> None:
    from conftest import tiny_config

    for has, expected in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda has=has: {"avx512_bf16": has})
        tr = Trainer(tiny_config(tmp_path / str(has), run={"amp": "native"}))
        assert tr.amp == expected
        assert not tr.scaler.is_enabled()  # bf16 needs no GradScaler


def test_bf16_by_name_on_a_cpu_that_emulates_it_warns_once_with_the_fix(monkeypatch, tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    from conftest import tiny_config

    cpu = torch.device("cpu")
    for has in (True, False):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda has=has: {"avx512_bf16": has})
        assert (precision.emulated_bf16_warning("bf16", cpu) is None) is has
        for setting in ("native", "off", "auto"):  # these never emulate bf16 on a CPU
            assert precision.emulated_bf16_warning(setting, cpu) is None
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="gsg.train"):
            tr = Trainer(tiny_config(tmp_path / f"w{has}", run={"amp": "bf16"}))
        assert tr.amp == torch.bfloat16  # asked for by name: given, only slower
        warned = [r.getMessage() for r in caplog.records if "without native bf16" in r.getMessage()]
        assert len(warned) == (0 if has else 1)
        if not has:
            assert "run.amp=off" in warned[0] and "run.amp=native" in warned[0]


def test_amp_native_without_capability_query_is_float32(monkeypatch) -> None:
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    assert precision.cpu_native_bf16() is False
    assert precision.amp_dtype("native", torch.device("cpu")) is None


# ---------------------------------------------------------------------------------- F8: cuDNN and TF32


def test_cuda_backends_get_autotuning_and_tf32_on_cuda_only(monkeypatch) -> None:
    flags = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
             torch.get_float32_matmul_precision())
    try:
        torch.backends.cudnn.benchmark = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        precision.configure_cuda_backends(torch.device("cpu"))
        assert not torch.backends.cudnn.benchmark and torch.get_float32_matmul_precision() == "highest"
        precision.configure_cuda_backends(torch.device("cuda", 0))
        assert torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.allow_tf32
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32 = flags[0], flags[1]
        torch.set_float32_matmul_precision(flags[2])


# ------------------------------------------------------------------------- F5: compile + DDP + SyncBN


def test_ddp_on_cuda_uses_syncbn_without_buffer_broadcast_and_skips_compiling_the_model(monkeypatch, caplog) -> None:
    made: list[dict[str, Any]] = []

    class FakeDDP(torch.nn.Module):
        def __init__(self, module: torch.nn.Module, **kwargs: Any) -> None:
            super().__init__()
            self.module = module
            made.append(kwargs)

    converted: list[torch.nn.Module] = []
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", FakeDDP)
    monkeypatch.setattr(torch.nn.SyncBatchNorm, "convert_sync_batchnorm",
                        staticmethod(lambda m: converted.append(m) or m))
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    two = DistInfo(rank=0, world_size=2, local_rank=0)
    _, sync_bn = distributed.wrap_ddp(model, torch.device("cuda", 0), two)
    assert sync_bn and converted == [model] and made == [{"device_ids": [0], "broadcast_buffers": False}]
    _, sync_bn = distributed.wrap_ddp(model, torch.device("cpu"), two)
    assert not sync_bn and made[-1] == {}  # gloo: per-process BN, default buffer broadcast
    assert distributed.wrap_ddp(model, torch.device("cuda", 0), DistInfo()) == (model, False)

    with caplog.at_level(logging.WARNING, logger="gsg.train"):
        assert compile_model(True, sync_bn=True) is False
    assert "SyncBatchNorm" in caplog.text and "augmentation is still compiled" in caplog.text
    assert compile_model(True, sync_bn=False) is True and compile_model(False, sync_bn=True) is False


# -------------------------------------------------------------------------- F13: one visible GPU per task


def test_one_visible_gpu_per_task_maps_every_local_rank_to_device_0(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    info = DistInfo(rank=3, world_size=4, local_rank=3)
    assert resolve_device("cuda", info) == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda", info) == torch.device("cuda", 1)

    chosen: list[int] = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kw: None)
    for k, v in {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "3"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    assert distributed.init_from_env("cuda").local_rank == 3 and chosen == [1]


def test_only_rank0_writes_the_run_files_and_prints(tmp_path: Path, monkeypatch, capsys) -> None:
    from gsg.cli import main

    monkeypatch.setenv("RANK", "1")  # as torchrun sets it; WORLD_SIZE unset: trains as one process
    out = tmp_path / "run"
    args = ["pretrain", "--dataset", "synthetic", "--subset", "32", "--epochs", "1", "--batch-size", "16",
            "--device", "cpu", "--out", str(out), "--set", "run.knn_every=0", "--set", "run.progress=false",
            "--set", "run.tensorboard=false", "--set", "model.width=0.125", "--set", "data.image_size=16"]
    assert main(args) == 0
    assert not (out / "command.txt").exists() and not (out / "config.json").exists()
    assert "checkpoint:" not in capsys.readouterr().out
    monkeypatch.setenv("RANK", "0")
    assert main(args) == 0
    assert (out / "command.txt").is_file() and "checkpoint:" in capsys.readouterr().out


# ------------------------------------------------------------------------------ F3: resume across devices


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import tiny_config

    out = tmp_path_factory.mktemp("cpu_run") / "run"
    pretrain(tiny_config(out, optim={"epochs": 1, "batch_size": 16, "lr": 0.05}))
    return out


def _fake_cuda_checkpoint(src: Path, dst: Path, *, recorded: bool) -> Path:
    ckpt = load_checkpoint(src / "checkpoint.pt")
    fake = torch.zeros(16, dtype=torch.uint8)  # a CUDA (Philox) generator's state: seed + offset
    for state in [ckpt["train_state"]["rng"], *ckpt["train_state"]["rng_per_rank"]]:
        state["aug"] = fake
        state["cuda"] = torch.zeros(16, dtype=torch.uint8)
        if recorded:
            state["aug_device"] = "cuda"
        else:  # a checkpoint from before the device was recorded
            state.pop("aug_device", None)
    dst.mkdir(parents=True)
    save_atomic(ckpt, dst / "checkpoint.pt")
    return dst


@pytest.mark.parametrize("recorded", [True, False])
def test_a_gpu_checkpoint_resumes_on_the_cpu_with_a_reseeded_augmentation(cpu_run: Path, tmp_path: Path,
                                                                          caplog, recorded: bool) -> None:
    from conftest import tiny_config

    out = _fake_cuda_checkpoint(cpu_run, tmp_path / "gpu_run", recorded=recorded)
    cfg = tiny_config(out, optim={"epochs": 2, "batch_size": 16, "lr": 0.05})
    with caplog.at_level(logging.WARNING, logger="gsg.train.rng"):
        result = pretrain(cfg, resume=True)  # was: RuntimeError "Expected a CPUGeneratorImplState of size 5056"
    assert "ran on cuda, this run's is on cpu" in caplog.text and "reseeded" in caplog.text
    assert result["epochs"] == 2 and result["steps"] == 8 and torch.isfinite(torch.tensor(result["loss"]))
    # The new checkpoint records a CPU generator again.
    assert load_checkpoint(out / "checkpoint.pt")["train_state"]["rng"]["aug_device"] == "cpu"


def test_a_cpu_resume_restores_the_augmentation_exactly(cpu_run: Path) -> None:
    state = load_checkpoint(cpu_run / "checkpoint.pt")["train_state"]["rng"]
    assert state["aug_device"] == "cpu" and "cuda" not in state  # no CUDA state from a CPU run
    gen = torch.Generator()
    assert rng.restore(state, gen, reseed=1) is True
    assert torch.equal(gen.get_state(), state["aug"])


def test_old_per_gpu_cuda_states_with_fewer_visible_gpus_do_not_index_past_them(monkeypatch) -> None:
    restored: list[Any] = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, d: restored.append((s, d)))
    gen = torch.Generator()
    state = rng.capture(gen)
    state["cuda"] = [torch.full((16,), i, dtype=torch.uint8) for i in range(2)]  # 2 GPUs were visible
    assert rng.restore(state, gen, reseed=0, device=torch.device("cuda", 3))  # was IndexError
    assert restored == []
    rng.restore(state, gen, reseed=0, device=torch.device("cuda", 1))
    assert len(restored) == 1 and torch.equal(restored[0][0], state["cuda"][1])


# ------------------------------------------------------------------------------------- F7: DirectPred


def test_directpred_step_makes_no_host_reads_and_counters_survive_a_resume() -> None:
    torch.manual_seed(0)
    pred = DirectPredictor(8, freq=2)
    f = torch.randn(32, 8)
    with HostReads() as reads:
        for _ in range(3):
            pred.observe(f)
    assert reads.calls == []  # was: bool(corr_initialized) and int(steps) every step
    assert int(pred.steps) == 3 and bool(pred.corr_initialized)
    fresh = DirectPredictor(8, freq=2)
    fresh.load_state_dict(pred.state_dict())  # the host counters are rebuilt from the buffers
    assert (fresh._steps, fresh._initialized) == (3, True)
    w = fresh.weight.clone()
    fresh.observe(torch.randn(32, 8))  # step 3: not a multiple of freq = 2, so W_p stays
    assert torch.equal(fresh.weight, w)
    fresh.observe(torch.randn(32, 8))  # step 4: recomputed
    assert not torch.equal(fresh.weight, w)


def test_directpred_nan_projections_give_a_nan_predictor_not_a_linalg_error() -> None:
    pred = DirectPredictor(4)
    pred.observe(torch.full((8, 4), float("nan")))  # was: torch._C._LinAlgError from eigh
    assert torch.isnan(pred.weight).all()


def test_float32_eigh_falls_back_to_float64_when_it_fails(monkeypatch) -> None:
    from gsg.models import directpred as dp

    calls: list[torch.dtype] = []
    real = torch.linalg.eigh

    def flaky(m: torch.Tensor) -> Any:
        calls.append(m.dtype)
        if m.dtype == torch.float32:
            raise torch.linalg.LinAlgError("did not converge")
        return real(m)

    monkeypatch.setattr(dp, "_work_dtype", lambda m: torch.float32)  # what CUDA uses
    monkeypatch.setattr(torch.linalg, "eigh", flaky)
    s, _ = dp._eigh(torch.eye(3))
    assert calls == [torch.float32, torch.float64] and s.dtype == torch.float64


def test_train_step_makes_no_host_reads(make_config) -> None:
    for pred in ("mlp", "directpred"):
        trainer = Trainer(make_config(model={"predictor": pred}, ssl={"method": "byol"}))
        images = trainer.train_ds.get(torch.arange(16))
        trainer.train_step(images)  # the first step initialises F̂
        with HostReads() as reads:
            trainer.train_step(images)
        assert reads.calls == [], (pred, reads.calls)


# --------------------------------------------------------------------------------- F12: float32 heads


def test_under_autocast_only_the_backbone_runs_in_bf16(make_config) -> None:
    trainer = Trainer(make_config(ssl={"method": "byol"}, run={"amp": "bf16"}))
    assert trainer.amp == torch.bfloat16
    images = trainer.train_ds.get(torch.arange(8)).float() / 255
    seen: dict[str, torch.dtype] = {}
    trainer.model.backbone.register_forward_hook(lambda m, i, o: seen.update(backbone=o.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = trainer.model([images, images])
    assert seen["backbone"] == torch.bfloat16
    assert all(t.dtype == torch.float32 for t in [*out.z, *out.p, *out.t])
    keys = set(trainer.model.state_dict())
    assert "projector.net.0.weight" in keys or any(k.startswith("projector.") for k in keys)
    twin = copy.deepcopy(trainer.model.projector)  # the rebound forward follows the copy
    assert twin.forward.__self__ is twin


# -------------------------------------------------------------------- F1/F10: held-out split, eval flags


def test_held_out_split_is_val_only_for_folders_without_test(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    assert held_out_split("imagefolder", tmp_path) == "val"
    assert held_out_split("folder", tmp_path) == "val"
    (tmp_path / "test").mkdir()
    assert held_out_split("imagefolder", tmp_path) == "test"
    assert held_out_split("cifar10", tmp_path) == "test" and held_out_split("imagefolder", None) == "test"


def test_fixed_subset_matches_load_dataset_and_takes_all_of_a_small_split() -> None:
    full = load_dataset("synthetic", "train", image_size=8, synthetic_size=40)
    sub = load_dataset("synthetic", "train", image_size=8, synthetic_size=40, subset=10, seed=3)
    assert isinstance(sub, TensorImageDataset)
    assert torch.equal(fixed_subset(full, 10, 3).images, sub.images)  # type: ignore[attr-defined]
    assert fixed_subset(full, 1000, 3) is full and fixed_subset(full, None, 3) is full


def test_knn_monitor_with_a_bank_larger_than_the_split_uses_the_whole_split(make_config) -> None:
    # Was: "subset=10000 is larger than the dataset", and the monitor switched itself off.
    result = pretrain(make_config(run={"knn_every": 1, "knn_k": 5, "knn_train_subset": 10000}))
    assert 0.0 <= result["knn_k5"] <= 100.0


def test_knn_monitor_without_labels_says_what_is_missing(tmp_path: Path, make_config, caplog) -> None:
    from PIL import Image

    (tmp_path / "train").mkdir()
    for i in range(32):  # loose images: an unlabelled folder
        Image.new("RGB", (16, 16), (i * 7 % 255, 40, 90)).save(tmp_path / "train" / f"{i}.png")
    (tmp_path / "test").mkdir()
    for i in range(4):
        Image.new("RGB", (16, 16), (i, 1, 2)).save(tmp_path / "test" / f"{i}.png")
    cfg = make_config(data={"dataset": "imagefolder", "data_dir": str(tmp_path), "subset": None, "workers": 0},
                      run={"knn_every": 1})
    with caplog.at_level(logging.WARNING, logger="gsg.train"):
        trainer = Trainer(cfg)
    assert trainer.cfg.run.knn_every == 0
    assert "online kNN monitor requested (run.knn_every=1) but switched off" in caplog.text
    assert "no labels" in caplog.text


def test_gsg_knn_takes_the_speed_flags_and_searches_on_the_device(cpu_run: Path, monkeypatch, capsys) -> None:
    from gsg.cli import main
    from gsg.eval import knn as knn_mod

    seen: dict[str, Any] = {}
    real = knn_mod.knn_accuracy

    def spy(train_f: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        seen["device"] = train_f.device
        return real(train_f, *args, **kwargs)

    real_embed = knn_mod.embed

    def embed_spy(*args: Any, **kwargs: Any) -> Any:
        seen.update({k: kwargs[k] for k in ("workers", "channels_last", "amp_dtype")})
        return real_embed(*args, **kwargs)

    monkeypatch.setattr(knn_mod, "knn_accuracy", spy)
    monkeypatch.setattr(knn_mod, "embed", embed_spy)
    ckpt = cpu_run / "checkpoint.pt"
    assert main(["knn", str(ckpt), "--device", "cpu", "--k", "5", "--workers", "0", "--amp", "bf16",
                 "--channels-last"]) == 0
    assert seen == {"device": torch.device("cpu"), "workers": 0, "channels_last": True,
                    "amp_dtype": torch.bfloat16}
    assert "kNN (k=5" in capsys.readouterr().out


def test_linear_probe_reads_the_host_once_per_epoch_not_per_step(cpu_run: Path) -> None:
    from gsg.checkpoint import load_backbone
    from gsg.eval.linear import linear_probe

    backbone, _ = load_backbone(cpu_run / "checkpoint.pt")
    train = load_dataset("synthetic", "train", image_size=16, synthetic_size=64)
    test = load_dataset("synthetic", "test", image_size=16, synthetic_size=32)
    counts = []
    for batch in (32, 4):  # 2 and 16 steps per epoch
        with HostReads() as reads:
            linear_probe(backbone, train, test, epochs=1, mode="features", batch_size=batch, protocol="cifar")
        counts.append(len(reads.calls))
    assert counts[0] == counts[1]  # was: 2 .item() per step


def test_gsg_linear_takes_the_speed_flags(cpu_run: Path, monkeypatch) -> None:
    from gsg.cli import main
    from gsg.eval import linear as linear_mod

    seen: dict[str, Any] = {}
    real = linear_mod.linear_probe

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.update({k: kwargs[k] for k in ("workers", "channels_last", "amp_dtype", "device")})
        return real(*args, **kwargs)

    monkeypatch.setattr(linear_mod, "linear_probe", spy)
    assert main(["linear", str(cpu_run / "checkpoint.pt"), "--device", "cpu", "--epochs", "1", "--mode",
                 "features", "--workers", "0", "--amp", "auto", "--channels-last"]) == 0
    # --amp auto is off on the CPU, as in training
    assert seen == {"workers": 0, "channels_last": True, "amp_dtype": None, "device": torch.device("cpu")}
