"""The command line: the documented contract, clear errors, and an end-to-end pretrain + knn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gsg.cli import main


def test_unknown_option_names_the_nearest_valid_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "--stop-gradiant", "guided"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown option --stop-gradiant" in err and "did you mean --stop-gradient" in err


def test_bad_choice_and_preset_list_valid_values(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["pretrain", "--method", "mocov3"])  # not a method (moco, MoCo v2, is)
    err = capsys.readouterr().err
    assert "simsiam" in err and "moco" in err
    with pytest.raises(SystemExit):
        main(["pretrain", "--preset", "cifar"])
    assert "cifar10" in capsys.readouterr().err


def test_unknown_config_key_is_an_error_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[optim]\nepoch = 3\n")
    assert main(["pretrain", "--config", str(f)]) == 2
    err = capsys.readouterr().err
    assert "unknown key optim.epoch" in err and "did you mean 'epochs'" in err and "Traceback" not in err


def test_print_config_applies_flags_and_set(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pretrain", "--preset", "quickstart", "--method", "byol", "--views", "fresh", "--epochs", "3",
                 "--set", "model.proj_last_bn=affine", "--set", "run.knn_test_subset=none", "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["ssl"]["method"] == "byol" and cfg["ssl"]["views"] == "fresh" and cfg["optim"]["epochs"] == 3
    assert cfg["model"]["proj_last_bn"] == "affine" and cfg["run"]["knn_test_subset"] is None


def test_missing_data_says_how_to_get_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["pretrain", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--set", "data.download=false",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "cifar" in err.lower() and "--data-dir" in err


def test_pretrain_then_knn_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = ["pretrain", "--dataset", "synthetic", "--subset", "64", "--epochs", "1", "--batch-size", "16",
            "--width", "0.125", "--out", str(out), "--set", "data.image_size=16", "--set", "model.proj_dim=32",
            "--set", "model.pred_hidden=16", "--set", "run.knn_k=5", "--set", "run.progress=false",
            "--set", "run.knn_train_subset=none"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "kNN accuracy: knn_k5 = " in printed and (out / "checkpoint.pt").is_file()
    assert (out / "command.txt").read_text().startswith("gsg pretrain")
    assert main(["knn", str(out / "checkpoint.pt"), "--k", "5"]) == 0
    printed = capsys.readouterr().out
    assert "kNN (k=5, T=0.1)" in printed
    result = json.loads(Path(printed.split("result: ")[1].strip()).read_text())
    assert result["protocol"] == "knn" and 0 <= result["value"] <= 100 and len(result["checkpoint_sha256"]) == 64


def test_knn_on_a_corrupt_checkpoint_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["knn", str(bad)]) == 2
    assert "corrupt" in capsys.readouterr().err


@pytest.fixture(scope="module")
def synthetic_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "run"
    assert main(["pretrain", "--dataset", "synthetic", "--subset", "64", "--epochs", "1", "--batch-size", "16",
                 "--width", "0.125", "--out", str(out), "--set", "data.image_size=16", "--set", "model.proj_dim=32",
                 "--set", "run.knn_every=0", "--set", "run.progress=false"]) == 0
    return out / "checkpoint.pt"


def test_linear_transfer_tsne_commands(synthetic_checkpoint: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = str(synthetic_checkpoint)
    assert main(["linear", ckpt, "--mode", "features", "--epochs", "3", "--lr", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "linear probe top-1" in out
    res = json.loads((synthetic_checkpoint.parent / "checkpoint.linear.synthetic.json").read_text())
    assert res["protocol"] == "linear" and 0 <= res["value"] <= 100
    assert main(["transfer", ckpt, "--dataset", "synthetic", "--image-size", "16"]) == 0
    assert "synthetic: top1" in capsys.readouterr().out
    png = tmp_path / "t.png"
    assert main(["tsne", ckpt, "--out", str(png), "--max-points", "100"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG" and "kNN k=200" in capsys.readouterr().out


def test_export_of_a_narrow_backbone_prints_how_to_load_it_and_detectron2_refuses(
        synthetic_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from gsg.eval.export import torchvision_resnet

    out = tmp_path / "x.pth"
    assert main(["export", str(synthetic_checkpoint), "--format", "torchvision", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "torchvision_resnet(arch='resnet18', width=0.125, in_channels=3, cifar_stem=True)" in printed
    model = torchvision_resnet(arch="resnet18", width=0.125, in_channels=3, cifar_stem=True)
    model.load_state_dict(torch.load(out, weights_only=True), strict=True)
    code = main(["export", str(synthetic_checkpoint), "--format", "detectron2", "--out", str(tmp_path / "x.pkl")])
    assert code == 2 and "width 0.125" in capsys.readouterr().err and not (tmp_path / "x.pkl").exists()


def test_diagnose_separates_a_collapsed_checkpoint(synthetic_checkpoint: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from gsg.checkpoint import load_checkpoint, save_atomic
    from gsg.eval.diagnose import diagnose

    healthy = diagnose(synthetic_checkpoint, samples=128, plot=tmp_path / "h.png")
    ckpt = load_checkpoint(synthetic_checkpoint)
    # Zeroing the first convolution makes every image's representation identical: complete collapse.
    ckpt["model"]["backbone.conv1.weight"] = torch.zeros_like(ckpt["model"]["backbone.conv1.weight"])
    collapsed_path = tmp_path / "collapsed" / "checkpoint.pt"
    save_atomic(ckpt, collapsed_path)
    collapsed = diagnose(collapsed_path, samples=128)
    for part in ("backbone", "projection"):
        assert collapsed[part]["std_sqrt_d"] < 1e-3 < healthy[part]["std_sqrt_d"]
        assert collapsed[part]["m_o"] > 0.999 > healthy[part]["m_o"]
        assert collapsed[part]["rankme"] < 1.01 < healthy[part]["rankme"]
        assert collapsed[part]["uniformity"] > -1e-3 > healthy[part]["uniformity"]
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["diagnose", str(synthetic_checkpoint), "--samples", "64"]) == 0
    printed = capsys.readouterr().out
    assert "std_sqrt_d" in printed and "GSG cases" in printed and "running BatchNorm statistics" in printed
    # --bn batch: its own result file beside the running-statistics one, both kept
    assert main(["diagnose", str(synthetic_checkpoint), "--samples", "64", "--bn", "batch"]) == 0
    assert "batch BatchNorm statistics" in capsys.readouterr().out
    results = {p.name: json.loads(p.read_text()) for p in synthetic_checkpoint.parent.glob("*.diagnose*.json")}
    assert {r["extra"]["bn"] for r in results.values()} == {"running", "batch"}


def test_plot_command_draws_runs_and_prints_a_table(synthetic_checkpoint: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    run = synthetic_checkpoint.parent
    png = tmp_path / "p.png"
    assert main(["plot", f"mine={run}", "--metrics", "loss", "z_std", "--out", str(png), "--table"]) == 0
    out = capsys.readouterr().out
    assert png.read_bytes()[:4] == b"\x89PNG" and "| mine | 1 |" in out
    assert main(["plot", str(tmp_path / "nope"), "--out", str(png)]) == 2


def test_bench_command_runs_quick_and_rejects_unknown_options(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "knn.json"
    assert main(["bench", "knn", "--quick", "--out", str(out)]) == 0
    assert "identical" in capsys.readouterr().out and json.loads(out.read_text())
    assert main(["bench", "knn", "--quick", "--set", "nope=1"]) == 2
    assert "unknown option 'nope'" in capsys.readouterr().err
