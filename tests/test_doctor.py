"""`gsg doctor` with the CPU standing in: every CPU-runnable step passes, every CUDA-only step says SKIP and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gsg.doctor import STEPS, run_doctor
from gsg.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

CUDA_ONLY = {"cuda_unit", "fp16_scaler", "sync_debug", "ddp_basic", "ddp_compile", "ddp_knn_hang"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU stand-ins")
def test_doctor_on_the_cpu_passes_every_cpu_step_and_skips_the_cuda_ones(tmp_path: Path) -> None:
    report = run_doctor("cpu", tmp_path, quick=True)
    status = {s.name: s for s in report.steps}
    assert list(status) == list(STEPS)
    for name in CUDA_ONLY:
        assert status[name].status == "SKIP" and "needs CUDA" in status[name].detail, status[name]
    assert status["compile"].status == "SKIP" and "minutes" in status["compile"].detail  # --quick on the CPU
    failed = {n: s.detail for n, s in status.items() if s.status == "FAIL"}
    assert not failed and report.ok
    passed = set(STEPS) - CUDA_ONLY - {"compile"}
    assert {n for n, s in status.items() if s.status == "PASS"} == passed
    # What each step checked is in its detail, and its log in OUT/<step>.log.
    assert "z/p/t float32" in status["trainer_checks"].detail and "0 host reads" in status["trainer_checks"].detail
    assert "kNN k=20" in status["bf16_cl_knn"].detail
    assert "reseeded" in status["resume_on_cpu"].detail
    assert "full_autocast" in status["bf16_gsg"].detail
    for name in STEPS:
        assert (tmp_path / f"{name}.log").read_text().strip().splitlines()[-1].startswith(status[name].status)
    saved = json.loads((tmp_path / "doctor.json").read_text())
    assert [s["status"] for s in saved["steps"]] == [s.status for s in report.steps]
    table = report.table()
    assert f"{len(passed)} PASS, 0 FAIL, {len(CUDA_ONLY) + 1} SKIP" in table


def test_doctor_cli_runs_chosen_steps_and_refuses_unknown_ones(tmp_path: Path, capsys) -> None:
    from gsg.cli import main

    assert main(["doctor", "--device", "cpu", "--quick", "--out", str(tmp_path), "--only", "env"]) == 0
    out = capsys.readouterr().out
    assert "env" in out and "PASS" in out and "not requested" in out
    with pytest.raises(ConfigError, match="unknown doctor step"):
        run_doctor("cpu", tmp_path, only=["nope"])
    assert main(["doctor", "--device", "cpu", "--only", "envv", "--out", str(tmp_path)]) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without a GPU")
def test_doctor_on_cuda_without_a_gpu_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no GPU is visible"):
        run_doctor("cuda", tmp_path)
