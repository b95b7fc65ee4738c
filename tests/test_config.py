"""Config schema: defaults, presets, files, overrides, and errors that name the nearest valid key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gsg.config import Config, from_dict, load_config, preset_names
from gsg.errors import ConfigError


def test_presets_exist_and_load() -> None:
    assert {"quickstart", "cifar10", "imagenet"} <= set(preset_names())
    q = load_config(preset="quickstart")
    assert q.data.dataset == "fashion-mnist" and q.model.width < 1
    c = load_config(preset="cifar10")
    assert (c.optim.batch_size, c.optim.lr, c.optim.weight_decay, c.optim.schedule) == (512, 0.06, 5e-4, "constant")
    assert c.model.cifar_stem and c.optim.epochs == 200
    i = load_config(preset="imagenet")
    assert (i.model.backbone, i.model.proj_layers, i.optim.weight_decay, i.optim.epochs) == ("resnet50", 3, 1e-4, 100)
    assert i.optim.base_lr * i.optim.batch_size / 256 == pytest.approx(0.1)


def test_precedence_defaults_preset_file_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[optim]\nepochs = 7\nbatch_size = 64\n[ssl]\nmethod = "byol"\n')
    cfg = load_config(preset="quickstart", file=f, overrides={"optim": {"epochs": 3}})
    got = (cfg.optim.epochs, cfg.optim.batch_size, cfg.ssl.method, cfg.data.dataset)
    assert got == (3, 64, "byol", "fashion-mnist")


def test_unknown_key_names_the_nearest_valid_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        load_config(overrides={"optim": {"batch_sise": 3}})
    with pytest.raises(ConfigError, match="did you mean 'optim'"):
        load_config(overrides={"optm": {"epochs": 3}})
    f = tmp_path / "c.json"
    f.write_text('{"model": {"predictr": "mlp"}}')
    with pytest.raises(ConfigError, match="predictor"):
        load_config(file=f)


def test_bad_values_are_rejected_with_choices() -> None:
    with pytest.raises(ConfigError, match="guided"):
        load_config(overrides={"ssl": {"stop_gradient": "guidedd"}})
    with pytest.raises(ConfigError, match="integer"):
        load_config(overrides={"optim": {"epochs": 2.5}})
    with pytest.raises(ConfigError, match="positive"):
        load_config(overrides={"optim": {"batch_size": 0}})
    with pytest.raises(ConfigError, match="at least 2"):
        load_config(overrides={"optim": {"batch_size": 1}})
    with pytest.raises(ConfigError, match="unknown preset 'quikstart'; did you mean 'quickstart'"):
        load_config(preset="quikstart")


def test_round_trip_through_dict() -> None:
    cfg = load_config(preset="cifar10", overrides={"model": {"proj_last_bn": "affine"}})
    assert from_dict(cfg.to_dict()) == cfg
    assert Config() == from_dict(Config().to_dict())


def test_docs_config_page_is_generated_from_the_schema() -> None:
    from gsg.config import schema_markdown

    doc = (Path(__file__).parents[1] / "docs" / "config.md").read_text()
    assert doc.strip() == schema_markdown().strip(), "regenerate docs/config.md (command at its top)"
    assert "| `batch_size` | `512` |" in doc


def test_crop_min_scale_replaces_the_recipes_lower_bound(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from conftest import tiny_config
    from gsg.errors import ConfigError
    from gsg.train.loop import Trainer

    tr = Trainer(tiny_config(tmp_path / "a", data={"crop_min_scale": 0.5}))
    assert tr.recipe.crop_scale == (0.5, 1.0)
    assert Trainer(tiny_config(tmp_path / "b")).recipe.crop_scale[0] == 0.08  # the cifar recipe's (synthetic RGB)
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="crop_min_scale"):
            tiny_config(tmp_path / "c", data={"crop_min_scale": bad})
