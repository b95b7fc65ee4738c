"""The package builds as a wheel that carries its presets, and the installed wheel trains without the source tree."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# 20-30 s: a build, a virtual environment and a training run. Marked, not deselected: CI runs it.
pytestmark = pytest.mark.slow


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: int = 600) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_wheel_installs_and_trains_from_a_fresh_environment(tmp_path: Path) -> None:
    # build from a copy, so the checkout gets no build/ or egg-info
    src = tmp_path / "src-copy"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(wheels),
          "-q"], cwd=tmp_path, env=env)
    (wheel,) = wheels.glob("gsg_ssl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"gsg/presets/quickstart.toml", "gsg/presets/cifar10.toml", "gsg/presets/imagenet.toml",
            "gsg/cli/__init__.py", "gsg/train/probe.py", "gsg/models/timm_backbone.py"} <= set(names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "gsg = gsg.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()

    # a fresh environment that sees the system's torch but gets gsg only from the wheel
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], cwd=tmp_path, env=env)
    py, gsg = venv / "bin" / "python", venv / "bin" / "gsg"
    _run([str(py), "-m", "pip", "install", "--no-deps", "--ignore-installed", "-q", str(wheel)], cwd=tmp_path, env=env)
    work = tmp_path / "elsewhere"  # not the source tree
    work.mkdir()
    where = _run([str(py), "-c", "import gsg, sys; print(gsg.__file__)"], cwd=work, env=env).strip()
    assert Path(where).resolve().is_relative_to(venv.resolve()), where
    assert not Path(where).resolve().is_relative_to(ROOT)

    printed = json.loads(_run([str(gsg), "pretrain", "--preset", "quickstart", "--print-config"], cwd=work, env=env))
    assert printed["data"]["dataset"] == "fashion-mnist"  # the preset file came with the wheel
    out = _run([str(gsg), "pretrain", "--dataset", "synthetic", "--subset", "64", "--batch-size", "16", "--epochs",
                "1", "--width", "0.125", "--device", "cpu", "--out", str(work / "run"), "--set", "data.image_size=16",
                "--set", "run.limit_batches=2", "--set", "run.knn_every=0", "--set", "run.progress=false",
                "--set", "model.proj_dim=32", "--set", "model.pred_hidden=16"], cwd=work, env=env)
    assert f"checkpoint: {work / 'run' / 'checkpoint.pt'}" in out and "final loss" in out
    assert (work / "run" / "checkpoint.pt").is_file()
