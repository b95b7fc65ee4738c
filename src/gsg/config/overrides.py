"""Applying ``{section: {key: value}}`` layers: key checks with the nearest valid name, type coercion, kwargs."""

from __future__ import annotations

import difflib
import json
import math
import typing
from typing import Any

from gsg.config.schema import _CONTRASTIVE_FIXED, _SECTION_TYPES, CONTRASTIVE_METHODS, Config, _field_types
from gsg.config.validate import validate
from gsg.errors import ConfigError


def _nearest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}valid keys: {', '.join(sorted(valid))}"


def _coerce(section: str, key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against the field's type annotation, converting where it is lossless."""
    where = f"{section}.{key}"
    if typing.get_origin(annotation) is dict:
        return parse_kwargs(value, where)
    args = typing.get_args(annotation)
    optional = type(None) in args
    if optional and isinstance(value, str) and value.lower() in ("none", "null"):
        value = None  # "--set run.knn_test_subset=none"; a str field such as predictor keeps "none"
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where} cannot be empty")
    base = next((a for a in args if a is not type(None)), annotation) if args else annotation
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int | str | float):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            as_float = float(value)
        except (ValueError, OverflowError):
            raise ConfigError(f"{where} must be an integer, got {value!r}") from None
        if not math.isfinite(as_float) or as_float != int(as_float):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return int(as_float)
    if base is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        return number
    if base is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value


def parse_kwargs(value: Any, where: str = "timm_kwargs") -> dict[str, Any]:
    """Keyword arguments from a table or a ``"k=v,k=v"`` string; values are JSON where they parse, else strings.

    ``"img_size=32,patch_size=4,dims=[8,16,32,64],global_pool=avg"`` → ``{"img_size": 32, "patch_size": 4,
    "dims": [8, 16, 32, 64], "global_pool": "avg"}``. Commas inside brackets do not split.

    Example:
        >>> parse_kwargs("img_size=32,patch_size=4,depths=[1,1]")
        {'img_size': 32, 'patch_size': 4, 'depths': [1, 1]}
    """
    if isinstance(value, str):
        items: dict[str, Any] = {}
        text = value.strip()
        parts, depth, start = [], 0, 0
        for i, ch in enumerate(text):
            if ch in "[{(":
                depth += 1
            elif ch in "]})":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(text[start:i])
                start = i + 1
        parts.append(text[start:])
        for part in (p.strip() for p in parts):
            if not part:
                continue
            key, sep, raw = part.partition("=")
            if not sep or not key.strip().isidentifier():
                raise ConfigError(f"{where}: expected KEY=VALUE pairs separated by commas (e.g. "
                                  f"\"img_size=32,patch_size=4\"), got {part!r}")
            try:
                items[key.strip()] = json.loads(raw)
            except json.JSONDecodeError:
                items[key.strip()] = raw.strip()
        value = items
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table (TOML [model.timm_kwargs], JSON object) or a string "
                          f"\"key=value,key=value\", got {value!r}")
    for k, v in value.items():
        if not isinstance(k, str) or not _plain(v):
            raise ConfigError(f"{where}.{k} = {v!r}: values must be finite numbers, strings, booleans or lists of "
                              "them")
    return dict(value)


def _plain(v: Any) -> bool:
    if isinstance(v, list | tuple):
        return all(_plain(x) for x in v)
    if isinstance(v, float):
        return math.isfinite(v)
    return v is None or isinstance(v, bool | int | str)


def apply(config: Config, updates: dict[str, Any], *, origin: str = "config") -> Config:
    """Apply nested ``{section: {key: value}}`` updates, checking every key, type and choice."""
    if not isinstance(updates, dict):
        raise ConfigError(f"{origin}: expected a table of sections, got {type(updates).__name__}")
    for section, values in updates.items():
        if section not in _SECTION_TYPES:
            raise ConfigError(f"{origin}: unknown section [{section}]; {_nearest(section, list(_SECTION_TYPES))}")
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: [{section}] must be a table of keys, got {values!r}")
    was_contrastive = config.ssl.method in CONTRASTIVE_METHODS
    for section, values in updates.items():
        obj = getattr(config, section)
        types_ = _field_types(type(obj))
        for key, value in values.items():
            if key not in types_:
                raise ConfigError(f"{origin}: unknown key {section}.{key}; {_nearest(key, list(types_))}")
            setattr(obj, key, _coerce(section, key, value, types_[key]))
    _contrastive_keys(config, updates, was_contrastive, origin)
    validate(config)
    return config


def _contrastive_keys(config: Config, layer: dict[str, Any], was_contrastive: bool, origin: str) -> None:
    """simclr and moco have no stop-gradient policy and no predictor: both keys are ``none`` for them.

    A value this layer sets itself (a flag, ``--set``, a ``--config`` file) that is not ``none`` is an error: it
    would be ignored. A value inherited from the schema defaults or an earlier layer (a preset's
    ``stop_gradient = "guided"``) becomes ``none``. Switching back from simclr/moco to simsiam/byol restores
    the schema defaults of the two keys unless the same layer sets them.
    """
    method = config.ssl.method
    for section, key in _CONTRASTIVE_FIXED:
        obj = getattr(config, section)
        value = getattr(obj, key)
        given = key in (layer.get(section) or {})
        if method in CONTRASTIVE_METHODS and value != "none":
            if given:
                flag = "--stop-gradient" if key == "stop_gradient" else "--predictor"
                what = "stop-gradient policy" if key == "stop_gradient" else "predictor"
                raise ConfigError(
                    f"{origin}: {section}.{key} = {value!r} does not apply to ssl.method = {method!r}: an explicit "
                    f"contrastive method takes its negatives from other images, with no {what}. Remove {flag} "
                    f"(or set {section}.{key} = 'none')")
            setattr(obj, key, "none")
        elif method not in CONTRASTIVE_METHODS and was_contrastive and value == "none" and not given:
            setattr(obj, key, getattr(type(obj)(), key))
