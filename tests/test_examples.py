"""The scripts in examples/ run (on tiny data, seconds each) and print what they promise, so they cannot rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, *args: str, cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_own_training_loop(tmp_path: Path) -> None:
    out = run_example("own_training_loop.py", "--steps", "4", "--batch-size", "32", cwd=tmp_path)
    rows = re.findall(r"step +(\d+) +loss ([-+]\d\.\d+) +cases \S+ \S+ \S+ \S+ ((?:[\d.]+ ){3}[\d.]+) +"
                      r"std\(z/\|z\|\)\*sqrt\(d\) ([\d.]+)", out)
    assert [int(r[0]) for r in rows] == [0, 1, 2, 3]
    for _, loss, shares, std in rows:
        assert -1 <= float(loss) <= 1 and 0.5 < float(std) < 1.5
        assert sum(map(float, shares.split())) == pytest.approx(1, abs=0.02)  # 16 pairs, one decision each


def test_pretrain_on_a_folder_and_evaluate_on_a_labelled_one(tmp_path: Path) -> None:
    out = run_example("pretrain_folder.py", "--demo", "--out", str(tmp_path / "run"), "--image-size", "16",
                      "--epochs", "1", "--batch-size", "32", "--width", "0.125", "--linear-epochs", "2",
                      "--device", "cpu", cwd=tmp_path)
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    monitor = re.search(r"kNN \(k=20\) ([\d.]+)%, online probe top-1 ([\d.]+)% \(test\)", out)
    after = re.search(r"gsg knn: ([\d.]+)% \(k=20\).*top-1 ([\d.]+)%", out)
    assert monitor and after, out
    # the run's monitor on the labelled folder and `gsg knn` on the checkpoint see the same features
    assert monitor.group(1) == after.group(1)
    assert all(0 <= float(v) <= 100 for v in (*monitor.groups(), *after.groups()))


@pytest.mark.parametrize("backbone", [
    [],
    ["--backbone", "timm:vit_tiny_patch16_224", "--timm-kwargs", "patch_size=4,depth=1,embed_dim=32,num_heads=2"],
], ids=["torchvision", "timm"])
def test_finetune_an_exported_backbone(tmp_path: Path, backbone: list[str]) -> None:
    if backbone:
        pytest.importorskip("timm")
    out = run_example("finetune_export.py", "--demo", "--out", str(tmp_path / "ft"), "--steps", "2", *backbone,
                      cwd=tmp_path)
    loaded = "timm.create_model('vit_tiny_patch16_224'" if backbone else "torchvision_resnet(arch='resnet18'"
    assert f"loaded into {('' if backbone else 'gsg.eval.export.')}{loaded}" in out
    assert "max feature difference to the checkpoint 0\n" in out
    assert re.search(r"before fine-tuning: [\d.]+%", out) and re.search(r"after 2 fine-tuning steps: [\d.]+%", out)


def test_the_prepared_gpu_session_script_runs_its_steps_and_packs_what_comes_back(tmp_path: Path) -> None:
    """docs/experiments/gpu_session.sh with QUICK=1 DEVICE=cpu: the same steps at stand-in sizes (a dry run of the
    crops control), and the files the device tool brings back."""
    import json
    import tarfile

    out, runs = tmp_path / "out", tmp_path / "runs"
    env = {**os.environ, "OUT": str(out), "RUNS": str(runs), "QUICK": "1", "DEVICE": "cpu",
           "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "docs" / "experiments" / "gpu_session.sh")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = (out / "session.log").read_text()
    for step in ("doctor", "bench", "crops"):
        assert f"{step}: exit 0" in log, log[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["bench_epoch.json", "doctor.json", "gpu_runs.tar.gz",
                                                      "session.log"]  # the device tool brings back at most 8
    assert json.loads((out / "doctor.json").read_text())
    assert json.loads((out / "bench_epoch.json").read_text())
    with tarfile.open(out / "gpu_runs.tar.gz") as tar:
        names = tar.getnames()
    assert "./crops/dry_run.md" in names and not any(n.endswith(".pt") for n in names)
