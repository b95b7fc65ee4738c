"""Building a config: presets and files layered over the schema defaults, and rebuilding one from a dict."""

from __future__ import annotations

import difflib
import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from gsg.config.overrides import apply
from gsg.config.schema import Config
from gsg.config.validate import validate
from gsg.errors import ConfigError


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("gsg.presets").iterdir() if p.name.endswith(".toml"))


def read_preset(name: str) -> dict[str, Any]:
    names = preset_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.4)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown preset {name!r}; {hint}available presets: {', '.join(names)}")
    text = resources.files("gsg.presets").joinpath(f"{name}.toml").read_text()
    return tomllib.loads(text)


def read_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text ({exc}); is it a TOML or JSON file?") from None
    try:
        if path.suffix == ".json":
            return json.loads(text)
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: "
                          f"{exc}") from exc


def load_config(*, preset: str | None = None, file: str | Path | None = None,
                overrides: dict[str, Any] | None = None) -> Config:
    """Defaults ← preset ← file ← overrides (each a ``{section: {key: value}}`` table)."""
    config = Config()
    if preset:
        apply(config, read_preset(preset), origin=f"preset {preset!r}")
    if file:
        apply(config, read_file(file), origin=str(file))
    if overrides:
        apply(config, overrides, origin="command line")
    validate(config)
    return config


def from_dict(d: dict[str, Any]) -> Config:
    """Rebuild a config saved with :meth:`Config.to_dict` (e.g. from a checkpoint)."""
    return apply(Config(), d, origin="checkpoint config")
