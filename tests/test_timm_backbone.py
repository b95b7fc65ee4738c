"""timm backbones: config validation, building, training, exact resume, kNN from the checkpoint, timm export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

timm = pytest.importorskip("timm")

from gsg.checkpoint import backbone_from_checkpoint, load_checkpoint  # noqa: E402
from gsg.cli import main  # noqa: E402
from gsg.config import load_config, parse_kwargs  # noqa: E402
from gsg.errors import ConfigError  # noqa: E402
from gsg.eval.export import export_timm, timm_create_line  # noqa: E402
from gsg.eval.knn import knn_evaluate  # noqa: E402
from gsg.models.backbones import backbone_from_spec, backbone_spec, build_backbone  # noqa: E402
from gsg.ssl.build import build_model  # noqa: E402
from gsg.train.loop import Trainer, pretrain  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

# Tiny versions of two families, through timm's own kwargs: a ViT (patch 4 on 16-px images, 1 block of
# width 32) and a ConvNeXt (one block per stage, 8-64 channels).
VIT = {"backbone": "timm:vit_tiny_patch16_224", "timm_kwargs": {"patch_size": 4, "depth": 1, "embed_dim": 32,
                                                               "num_heads": 2}}
CONVNEXT = {"backbone": "timm:convnext_atto", "timm_kwargs": {"dims": [8, 16, 32, 64], "depths": [1, 1, 1, 1]}}
SIZE = {VIT["backbone"]: 16, CONVNEXT["backbone"]: 32}  # the ConvNeXt's stages downsample by 32
ADAMW = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "warmup_epochs": 1}


def timm_config(out: Path, model: dict[str, Any], **sections: dict[str, Any]) -> Any:
    from conftest import tiny_config

    optim = {"epochs": 2, "batch_size": 16, **ADAMW, **sections.pop("optim", {})}
    data = {"dataset": "synthetic", "image_size": SIZE[model["backbone"]], "subset": 64}
    return tiny_config(out, model={"width": 1.0, **model}, optim=optim, data=data,
                       **{"run": {"limit_batches": 2, **sections.pop("run", {})}, **sections})


def test_config_accepts_timm_names_and_parses_kwargs(tmp_path: Path) -> None:
    cfg = load_config(overrides={"model": {"backbone": "timm:vit_tiny_patch16_224",
                                           "timm_kwargs": "img_size=32,patch_size=4,dims=[8,16],act=gelu"}})
    assert cfg.model.timm_kwargs == {"img_size": 32, "patch_size": 4, "dims": [8, 16], "act": "gelu"}
    f = tmp_path / "c.toml"  # the TOML table form
    f.write_text('[model]\nbackbone = "timm:convnext_atto"\n[model.timm_kwargs]\ndepths = [1, 1, 1, 1]\n')
    assert load_config(file=f).model.timm_kwargs == {"depths": [1, 1, 1, 1]}
    assert parse_kwargs("") == {}


@pytest.mark.parametrize(("model", "match"), [
    ({"backbone": "timm:vit_tiny_patch16"}, r"nearest names: .*vit_tiny_patch16_224"),
    ({"backbone": "timm:convnext_attto"}, r"not a timm model; nearest names: convnext_atto"),
    ({"backbone": "timm:convnext_atto", "width": 0.5}, r"model.width .*model.timm_kwargs"),
    ({"backbone": "timm:convnext_atto", "cifar_stem": True}, r"cifar_stem .*patch_size=4"),
    ({"backbone": "resnet18", "timm_kwargs": {"depth": 2}}, r"timm_kwargs is set but .*timm:NAME"),
    ({"backbone": "resnet19"}, r"did you mean 'resnet18'.*timm:NAME"),
    ({"backbone": "timm:convnext_atto", "timm_kwargs": "depths"}, r"KEY=VALUE"),
])
def test_config_errors_name_the_fix(model: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(overrides={"model": model})


def test_timm_kwargs_from_the_command_line(tmp_path: Path) -> None:
    from gsg.cli import _overrides, build_parser

    args = build_parser().parse_args(["pretrain", "--backbone", "timm:convnext_atto", "--set",
                                      "model.timm_kwargs=dims=[8,16,32,64],depths=[1,1,1,1]"])
    assert load_config(overrides=_overrides(args)).model.timm_kwargs == {"dims": [8, 16, 32, 64],
                                                                       "depths": [1, 1, 1, 1]}
    args = build_parser().parse_args(["pretrain", "--backbone", "timm:vit_tiny_patch16_224", "--set",
                                      'model.timm_kwargs={"patch_size": 4, "qkv_bias": false}'])
    assert load_config(overrides=_overrides(args)).model.timm_kwargs == {"patch_size": 4, "qkv_bias": False}


def test_missing_timm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(ConfigError, match=r"needs the timm package: pip install 'gsg-ssl\[timm\]'"):
        load_config(overrides={"model": {"backbone": "timm:convnext_atto"}})


def test_build_refuses_what_gsg_sets_and_patches_that_do_not_tile() -> None:
    with pytest.raises(ConfigError, match=r"pretrained.*random initialisation"):
        build_backbone("timm:convnext_atto", timm_kwargs={"pretrained": True})
    with pytest.raises(ConfigError, match="num_classes"):
        build_backbone("timm:convnext_atto", timm_kwargs={"num_classes": 10})
    with pytest.raises(ConfigError, match=r"28-px images into 16-px patches.*patch_size=P.*e\.g\. 4"):
        build_backbone("timm:vit_tiny_patch16_224", image_size=28)
    with pytest.raises(ConfigError, match=r"img_size=32 but the run's images are 16 px"):
        build_backbone("timm:vit_tiny_patch16_224", image_size=16, timm_kwargs={"img_size": 32, "patch_size": 4})
    with pytest.raises(ConfigError, match=r"downsamples by 32 in total, more than the 16-px.*image_size >= 32"):
        build_backbone("timm:convnext_atto", image_size=16)
    with pytest.raises(ConfigError, match=r"unexpected keyword argument 'nonsense'.*model.timm_kwargs"):
        build_backbone("timm:convnext_atto", timm_kwargs={"nonsense": 1})


def test_nothing_is_downloaded(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm.models._builder as builder

    def no_download(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("timm tried to load pretrained weights")

    monkeypatch.setattr(builder, "load_pretrained", no_download)
    net = build_backbone("timm:vit_tiny_patch16_224", image_size=16, timm_kwargs=VIT["timm_kwargs"])
    assert net.out_dim == 32


@pytest.mark.parametrize("channels", [1, 3])
def test_pooled_feature_sizes_the_heads_and_the_input_follows_the_run(channels: int) -> None:
    cfg = load_config(overrides={"model": {**VIT, "proj_dim": 24, "pred_hidden": 8}})
    model = build_model(cfg.model, "byol", in_channels=channels, image_size=16)
    assert model.backbone.num_features == 32 and model.projector[0].in_features == 32
    assert model.predictor[0].in_features == 24
    x = torch.randn(3, channels, 16, 16)
    assert model.backbone(x).shape == (3, 32)  # num_classes=0: the pooled feature, no classifier
    spec = backbone_spec(model.backbone, 16)
    assert spec["timm_kwargs"] == {"in_chans": channels, "img_size": 16, **VIT["timm_kwargs"]}
    conv = build_backbone(CONVNEXT["backbone"], in_channels=channels, image_size=32,
                          timm_kwargs=CONVNEXT["timm_kwargs"])
    assert "img_size" not in conv.timm_kwargs and conv.out_dim == 64  # ConvNeXt takes any size
    # the spec rebuilds the same architecture
    rebuilt = backbone_from_spec(backbone_spec(conv, 32))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in conv.state_dict().items()}


def _stop_after_one_epoch(trainer: Trainer) -> None:
    original, done = trainer.train_epoch, {"n": 0}

    def stop(signals):  # type: ignore[no-untyped-def]
        if done["n"] == 1:
            raise KeyboardInterrupt
        done["n"] += 1
        return original(signals)

    trainer.train_epoch = stop  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()


@pytest.mark.parametrize("model", [VIT, CONVNEXT], ids=["vit", "convnext"])
def test_timm_backbone_trains_resumes_exactly_evaluates_and_exports(tmp_path: Path, model: dict[str, Any]) -> None:
    run = {"knn_every": 1, "knn_k": 5}
    full = timm_config(tmp_path / "full", model, run=run)
    trainer = Trainer(full)
    assert not trainer.channels_last  # not applied to timm models by default
    assert type(trainer.optimizer).__name__ == "AdamW"
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    result = trainer.fit()
    ckpt = load_checkpoint(Path(full.run.out) / "checkpoint.pt")
    changed = [k for k, v in ckpt["model"].items() if k.startswith("backbone.") and not torch.equal(v, before[k])]
    assert len(changed) > 5 and result["steps"] == 4
    assert ckpt["backbone"]["arch"] == model["backbone"]

    # interrupted after epoch 1 and resumed: bit-identical weights and metrics
    part = timm_config(tmp_path / "part", model, run=run)
    _stop_after_one_epoch(Trainer(part))
    pretrain(part, resume=True)
    resumed = load_checkpoint(Path(part.run.out) / "checkpoint.pt")
    for k, v in ckpt["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    assert [h["loss"] for h in ckpt["metrics"]["history"]] == [h["loss"] for h in resumed["metrics"]["history"]]

    # evaluation rebuilds the backbone from the checkpoint: the kNN command equals the run's own monitor
    knn = knn_evaluate(Path(full.run.out) / "checkpoint.pt", k=5, device="cpu")
    assert knn["knn_k5"] == pytest.approx(result["knn_k5"], abs=1e-9)
    assert knn["knn_k1"] == pytest.approx(result["knn_k1"], abs=1e-9)

    # export: strict load into timm.create_model with the recorded kwargs, identical features
    out = export_timm(Path(full.run.out) / "checkpoint.pt", tmp_path / "timm.pth")
    build = json.loads((tmp_path / "timm.pth.json").read_text())["build"]
    assert build["pretrained"] is False and build["num_classes"] == 0
    net = timm.create_model(**build)
    net.load_state_dict(torch.load(out, weights_only=True), strict=True)
    ours = backbone_from_checkpoint(ckpt)
    size = SIZE[model["backbone"]]
    x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), ours(x), rtol=0, atol=0)


def test_export_cli_prints_the_create_model_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = timm_config(tmp_path / "r", VIT, optim={"epochs": 1}, run={"limit_batches": 1})
    pretrain(cfg)
    out = tmp_path / "vit.pth"
    assert main(["export", str(Path(cfg.run.out) / "checkpoint.pt"), "--format", "timm", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    line = ("timm.create_model('vit_tiny_patch16_224', pretrained=False, num_classes=0, in_chans=3, img_size=16, "
            "patch_size=4, depth=1, embed_dim=32, num_heads=2)")
    assert line in printed and timm_create_line(json.loads(out.with_name("vit.pth.json").read_text())["build"]) == line
    net = eval(line, {"timm": timm})  # the printed line builds the model the file loads into
    net.load_state_dict(torch.load(out, weights_only=True), strict=True)
    # the ResNet formats refuse a timm backbone and say which format to use
    assert main(["export", str(Path(cfg.run.out) / "checkpoint.pt"), "--format", "torchvision", "--out",
                 str(tmp_path / "x.pth")]) == 2
    assert "--format timm" in capsys.readouterr().err


def test_gsg_resnet_exports_to_timm_resnet(tmp_path: Path) -> None:
    from test_eval_export import make_checkpoint

    for arch in ("resnet18", "resnet34"):  # timm and torchvision share the ResNet key names
        ckpt, net = make_checkpoint(tmp_path, arch, in_channels=1)
        out = export_timm(ckpt, tmp_path / f"{arch}.pth")
        build = json.loads(out.with_name(out.name + ".json").read_text())["build"]
        assert build == {"model_name": arch, "pretrained": False, "num_classes": 0, "in_chans": 1}
        m = timm.create_model(**build)
        m.load_state_dict(torch.load(out, weights_only=True), strict=True)
        x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            torch.testing.assert_close(m.eval()(x), net(x), rtol=0, atol=0)
    ckpt, _ = make_checkpoint(tmp_path, cifar_stem=True)
    with pytest.raises(ConfigError, match=r"CIFAR stem.*--format torchvision"):
        export_timm(ckpt, tmp_path / "c.pth")
