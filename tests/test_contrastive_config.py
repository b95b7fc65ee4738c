"""simclr / moco in the one config schema: defaults by image size, what they fix, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from gsg.config import Config, from_dict, load_config, resolved_queue_size, resolved_temperature
from gsg.errors import ConfigError


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_contrastive_methods_have_no_stop_gradient_and_no_predictor(method: str) -> None:
    cfg = load_config(overrides={"ssl": {"method": method}})
    assert (cfg.ssl.stop_gradient, cfg.model.predictor) == ("none", "none")
    # a preset's stop_gradient = "guided" and predictor = "mlp" are inherited, not asked for: they give way
    cfg = load_config(preset="cifar10", overrides={"ssl": {"method": method}})
    assert (cfg.ssl.stop_gradient, cfg.model.predictor) == ("none", "none")
    # the resolved config (as --print-config and the checkpoint write it) loads back unchanged
    assert from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
    # asking for 'none' explicitly is fine
    assert load_config(overrides={"ssl": {"method": method, "stop_gradient": "none"},
                                  "model": {"predictor": "none"}}).ssl.stop_gradient == "none"


@pytest.mark.parametrize("key,value,flag", [(("ssl", "stop_gradient"), "guided", "--stop-gradient"),
                                            (("ssl", "stop_gradient"), "symmetric", "--stop-gradient"),
                                            (("model", "predictor"), "mlp", "--predictor")])
def test_asking_for_a_stop_gradient_or_predictor_with_simclr_is_an_error(key: tuple[str, str], value: str,
                                                                          flag: str, tmp_path: Path) -> None:
    section, name = key
    with pytest.raises(ConfigError, match=rf"{section}\.{name} = '{value}' does not apply to .*'simclr'.*{flag}"):
        overrides: dict[str, dict[str, str]] = {"ssl": {"method": "simclr"}}
        overrides.setdefault(section, {})[name] = value
        load_config(preset="quickstart", overrides=overrides)
    # in a --config file together with the method, too
    f = tmp_path / "c.toml"
    f.write_text(f'ssl.method = "simclr"\n{section}.{name} = "{value}"\n')
    with pytest.raises(ConfigError, match="does not apply"):
        load_config(file=f)


def test_switching_back_from_a_contrastive_method_restores_the_defaults(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[ssl]\nmethod = "moco"\n')
    cfg = load_config(file=f, overrides={"ssl": {"method": "byol"}})
    assert (cfg.ssl.stop_gradient, cfg.model.predictor) == ("guided", "mlp")
    cfg = load_config(file=f, overrides={"ssl": {"method": "simsiam", "stop_gradient": "symmetric"},
                                         "model": {"predictor": "none"}})
    assert (cfg.ssl.stop_gradient, cfg.model.predictor) == ("symmetric", "none")
    with pytest.raises(ConfigError, match="'none' is for the contrastive methods"):
        load_config(overrides={"ssl": {"stop_gradient": "none"}})


def test_temperature_and_queue_defaults_follow_the_papers_by_image_size() -> None:
    simclr, moco = Config().ssl, Config().ssl
    simclr.method, moco.method = "simclr", "moco"
    assert resolved_temperature(simclr, 32) == 0.5 and resolved_temperature(simclr, 224) == 0.1
    assert resolved_temperature(moco, 32) == 0.2 == resolved_temperature(moco, 224)
    assert resolved_queue_size(moco, 32) == 4096 and resolved_queue_size(moco, 224) == 65536
    simclr.temperature, moco.queue_size = 0.3, 1024
    assert resolved_temperature(simclr, 224) == 0.3 and resolved_queue_size(moco, 224) == 1024
    assert Config().ssl.moco_momentum == 0.999 and Config().ssl.moco_symmetric is False


def test_bad_contrastive_settings_name_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"ssl\.temperature must be positive.*leave it unset"):
        load_config(overrides={"ssl": {"method": "simclr", "temperature": 0}})
    with pytest.raises(ConfigError, match=r"ssl\.temperature must be positive"):
        load_config(overrides={"ssl": {"method": "moco", "temperature": -0.2}})
    with pytest.raises(ConfigError, match=r"at least 2 \(got 1\)"):
        load_config(overrides={"ssl": {"method": "simclr"}, "optim": {"batch_size": 1}})
    with pytest.raises(ConfigError, match=r"queue_size = 1000 must be a multiple of the global batch 64.*"
                                          r"ssl\.queue_size=960"):
        load_config(overrides={"ssl": {"method": "moco", "queue_size": 1000}, "optim": {"batch_size": 64}})
    with pytest.raises(ConfigError, match=r"2 × the global batch 64"):
        load_config(overrides={"ssl": {"method": "moco", "queue_size": 64, "moco_symmetric": True},
                               "optim": {"batch_size": 64}})
    with pytest.raises(ConfigError, match="must be positive"):
        load_config(overrides={"ssl": {"method": "moco", "queue_size": 0}})
    with pytest.raises(ConfigError, match="between 0 and 1"):
        load_config(overrides={"ssl": {"method": "moco", "moco_momentum": 1.5}})
    with pytest.raises(ConfigError, match="GSG settings"):
        load_config(overrides={"ssl": {"method": "simclr", "views": "fresh"}})
    with pytest.raises(ConfigError, match="GSG settings"):
        load_config(overrides={"ssl": {"method": "moco", "pairing": "cycle"}})
    with pytest.raises(ConfigError, match="own contrastive loss"):
        load_config(overrides={"ssl": {"method": "simclr", "loss": "center"}})
    with pytest.raises(ConfigError, match="own contrastive loss"):
        load_config(overrides={"ssl": {"method": "moco", "grad_surgery": "center"}})
    with pytest.raises(ConfigError, match="did you mean 'moco'"):
        load_config(overrides={"ssl": {"method": "mocov2"}})
    # the queue is MoCo's only: another method ignores an unused queue_size
    assert load_config(overrides={"ssl": {"method": "simclr", "queue_size": 1000}}).ssl.queue_size == 1000
