"""Property-based tests (hypothesis) of the config parser, the `--set` command line and the stop-gradient
policies: any input gives a result that obeys the schema, or a ConfigError, never another exception.

Runs are derandomized (the same examples every run) and keep no example database, so CI is reproducible.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import typing
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gsg.cli import main
from gsg.config import CHOICES, POSITIVE, Config, apply, from_dict, load_config, read_file
from gsg.errors import ConfigError
from gsg.ssl.stopgrad import POLICIES, derangement, policy_loss, select_cases

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
_HINTS = {name: typing.get_type_hints(typing.get_type_hints(Config)[name]) for name in SECTIONS}


def _is_nonfinite_token(v: Any) -> bool:
    """True for values the parser would read as a non-finite number: nan, inf, "-Infinity", "1e999", ..."""
    if isinstance(v, float):
        return not math.isfinite(v)
    if isinstance(v, str):
        try:
            return not math.isfinite(float(v))
        except ValueError:
            return False
    return False


def _values(nonfinite: bool) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
        st.floats(allow_nan=nonfinite, allow_infinity=nonfinite),
        st.sampled_from(["", "0", "1", "-1", "2.5", "true", "no", "guided", "byol", "cpu", "1e3", "nan", "inf",
                         "-Infinity", "1e999", "none"]),
        st.text(max_size=12),
    )
    if not nonfinite:
        scalars = scalars.filter(lambda v: not _is_nonfinite_token(v))
    return st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=5), scalars,
                                                                               max_size=2))


def _updates(nonfinite: bool) -> st.SearchStrategy[dict[str, Any]]:
    def section(name: str) -> st.SearchStrategy[dict[str, Any]]:
        keys = st.one_of(st.sampled_from(sorted(_HINTS.get(name, {"x": int}))), st.text(max_size=8))
        return st.dictionaries(keys, _values(nonfinite), max_size=4)

    names = st.one_of(st.sampled_from(sorted(SECTIONS)), st.text(max_size=8))
    return names.flatmap(lambda n: st.fixed_dictionaries({n: section(n)})) | st.just({})


def _check_schema(cfg: Config) -> None:
    """What every accepted config satisfies."""
    for section, hints in _HINTS.items():
        obj = getattr(cfg, section)
        for key, annotation in hints.items():
            value = getattr(obj, key)
            args = typing.get_args(annotation)
            if typing.get_origin(annotation) is dict:  # model.timm_kwargs: a table of plain, finite values
                assert type(value) is dict and all(type(k) is str for k in value), (section, key, value)
                assert not any(isinstance(v, float) and not math.isfinite(v) for v in value.values())
                continue
            if value is None:
                assert type(None) in args, f"{section}.{key} is None"
                continue
            base = next((a for a in args if a is not type(None)), annotation) if args else annotation
            if base is float:
                assert type(value) is float, (section, key, value)
                assert math.isfinite(value), f"{section}.{key} = {value} accepted"
            elif base is int:
                assert type(value) is int, (section, key, value)
            elif base in (bool, str):
                assert type(value) is base, (section, key, value)
            if (section, key) in CHOICES:
                assert value in CHOICES[(section, key)]
            if (section, key) in POSITIVE:
                assert value > 0
    assert from_dict(cfg.to_dict()) == cfg


@FUZZ
@given(_updates(nonfinite=False))
def test_config_apply_gives_a_valid_config_or_a_config_error(updates: dict[str, Any]) -> None:
    try:
        cfg = apply(Config(), updates)
    except ConfigError as exc:
        assert str(exc)
        return
    _check_schema(cfg)


@FUZZ
@given(_updates(nonfinite=True))
@example({"optim": {"epochs": float("nan")}})
@example({"optim": {"lr": "inf"}})
@example({"optim": {"lr": 10**400}})  # float() of it raises OverflowError
def test_config_apply_refuses_non_finite_numbers(updates: dict[str, Any]) -> None:
    try:
        cfg = apply(Config(), updates)
    except ConfigError:
        return
    _check_schema(cfg)


@pytest.mark.parametrize("section,key,value", [
    ("optim", "lr", -0.1), ("optim", "base_lr", -1.0), ("optim", "momentum", -0.5),
    ("optim", "weight_decay", -1e-4), ("optim", "warmup_epochs", -1), ("model", "proj_layers", 0),
    ("model", "proj_hidden", -5), ("data", "image_size", 0), ("run", "limit_batches", -1),
    ("ssl", "ema_momentum", 1.5),
])
def test_config_refuses_out_of_domain_numbers(section: str, key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"{section}.{key}"):
        apply(Config(), {section: {key: value}})


@FUZZ
@given(st.text(max_size=200), st.sampled_from([".toml", ".json"]))
@example('[optim]\nepochs = "3"\n', ".toml")
@example('{"optim": [1, 2]}', ".json")
@example("[1, 2]", ".json")
@example("NaN", ".json")
def test_config_files_of_any_text_load_or_are_a_config_error(tmp_path_factory: pytest.TempPathFactory,
                                                             text: str, suffix: str) -> None:
    path = tmp_path_factory.mktemp("cfg") / f"c{suffix}"
    path.write_text(text, encoding="utf-8")
    try:
        cfg = load_config(file=path)
    except ConfigError as exc:
        assert str(exc)
        return
    _check_schema(cfg)


def test_config_file_that_is_not_text_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b"\xff\xfe[optim]\x00\x81")
    with pytest.raises(ConfigError, match=r"c\.toml"):
        read_file(path)


def _run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


_KEYS = [f"{s}.{k}" for s, hints in _HINTS.items() for k in hints]


def _set_items(nonfinite: bool) -> st.SearchStrategy[str]:
    value = st.one_of(st.text(max_size=10), st.sampled_from(["1", "0", "-3", "2.5", "true", "null", "[1]", '{"a":1}',
                                                            '"x"', "NaN", "Infinity", "-Infinity", "1e999"]))
    if not nonfinite:
        value = value.filter(lambda v: not _is_nonfinite_token(v) and not _is_nonfinite_token(_json(v)))
    key = st.one_of(st.sampled_from(_KEYS), st.text(max_size=10))
    return st.tuples(key, value).map(lambda kv: f"{kv[0]}={kv[1]}") | st.text(max_size=15)


def _json(v: str) -> Any:
    try:
        return json.loads(v)
    except ValueError:
        return v


@FUZZ
@given(st.lists(_set_items(nonfinite=False), min_size=1, max_size=3))
def test_cli_set_prints_a_valid_config_or_exits_2(items: list[str]) -> None:
    code, out, err = _run_cli(["pretrain", "--print-config", *[f"--set={i}" for i in items]])
    assert code in (0, 2), (code, err)
    if code == 0:
        cfg = from_dict(json.loads(out))
        _check_schema(cfg)
    else:
        assert "Traceback" not in err and ("gsg: error:" in err or "error:" in err)


@FUZZ
@given(st.lists(_set_items(nonfinite=True), min_size=1, max_size=2))
@example(["optim.epochs=NaN"])
@example(["optim.lr=Infinity"])
def test_cli_set_with_non_finite_numbers_exits_2(items: list[str]) -> None:
    code, out, _err = _run_cli(["pretrain", "--print-config", *[f"--set={i}" for i in items]])
    assert code in (0, 2)
    if code == 0:
        _check_schema(from_dict(json.loads(out)))


# --------------------------------------------------------------------------------------- stop-gradient


@FUZZ
@given(st.integers(min_value=0, max_value=64), st.integers(min_value=0, max_value=2**31 - 1))
def test_derangement_for_any_batch_size(n: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    if n < 2:
        with pytest.raises(ConfigError, match="at least 2 images"):
            derangement(n, generator=gen)
        return
    partner = derangement(n, generator=gen)
    assert partner.dtype == torch.int64 and sorted(partner.tolist()) == list(range(n))
    assert not (partner == torch.arange(n)).any()


_MODERATE = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_subnormal=True)
_ANY = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                 st.sampled_from([float("nan"), float("inf"), -float("inf"), 0.0, 3e38, -1e-45]))


@st.composite
def _batches(draw: Any, elements: st.SearchStrategy[float]) -> tuple[int, int, list[torch.Tensor]]:
    b = draw(st.integers(min_value=0, max_value=3) | st.integers(min_value=4, max_value=9))
    d = draw(st.integers(min_value=1, max_value=6))
    tensors = []
    for _ in range(4):  # p_a, p_b, t_a, t_b
        flat = draw(st.lists(elements, min_size=b * d, max_size=b * d))
        tensors.append(torch.tensor(flat, dtype=torch.float32).reshape(b, d))
    return b, d, tensors


def _loss(policy: str, b: int, tensors: list[torch.Tensor], seed: int) -> Any:
    """What the training loop does: a partner assignment for pairing policies, then the policy's loss."""
    gen = torch.Generator().manual_seed(seed)
    pa, pb, ta, tb = tensors
    partner = derangement(b, generator=gen) if policy != "symmetric" else None
    return policy_loss(policy, p1=(pa, pb), t1=(ta, tb), partner=partner, generator=gen), partner  # type: ignore[arg-type]


@FUZZ
@given(_batches(_MODERATE), st.sampled_from(POLICIES), st.integers(min_value=0, max_value=1000))
def test_policies_on_finite_inputs_of_any_shape(batch: tuple[int, int, list[torch.Tensor]], policy: str,
                                                seed: int) -> None:
    b, _d, tensors = batch
    tensors = [t.clone().requires_grad_(True) for t in tensors]
    if b == 0 or (b == 1 and policy != "symmetric"):
        with pytest.raises(ConfigError):
            _loss(policy, b, tensors, seed)
        return
    out, _partner = _loss(policy, b, tensors, seed)
    assert out.loss.shape == () and out.per_sample.shape == (b,)
    assert torch.isfinite(out.loss) and torch.all(out.per_sample.abs() <= 1 + 1e-5)
    assert torch.allclose(out.loss, out.per_sample.mean())
    if policy == "symmetric":
        assert out.cases is None
    else:
        assert out.cases is not None and out.cases.shape == (b,) and out.cases.dtype == torch.int64
        assert out.cases.min() >= 0 and out.cases.max() <= 3
        assert out.distances is not None and out.distances.shape == (b, 4) and torch.all(out.distances >= 0)
        guided = select_cases("guided", out.distances)
        chosen = out.distances.gather(1, guided[:, None])[:, 0]
        assert torch.equal(chosen, out.distances.min(dim=1).values)  # GSG takes the nearest pair
        for i in range(b):  # ... and on ties the first of them, as the paper's if/elif chain
            assert guided[i] == int((out.distances[i] == chosen[i]).nonzero()[0])
        if policy == "guided":
            assert torch.equal(out.cases, guided)
        if policy == "reverse":
            assert torch.equal(out.cases, 3 - guided)
    out.loss.backward()
    pa, pb, ta, tb = tensors
    assert ta.grad is None and tb.grad is None  # the target side is under stop-gradient
    for p in (pa, pb):
        assert p.grad is None or torch.isfinite(p.grad).all()


@FUZZ
@given(_batches(_ANY), st.sampled_from(POLICIES), st.integers(min_value=0, max_value=1000))
def test_policies_on_nan_and_inf_inputs_never_crash_and_never_hide_a_symmetric_nan(
        batch: tuple[int, int, list[torch.Tensor]], policy: str, seed: int) -> None:
    b, _d, tensors = batch
    if b == 0 or (b == 1 and policy != "symmetric"):
        with pytest.raises(ConfigError):
            _loss(policy, b, tensors, seed)
        return
    out, _partner = _loss(policy, b, tensors, seed)
    per = out.per_sample
    assert per.shape == (b,) and torch.all(per.isnan() | (per.abs() <= 1 + 1e-5))  # NaN or a cosine: never ±inf
    if out.cases is not None:
        assert out.cases.min() >= 0 and out.cases.max() <= 3
    if policy == "symmetric" and not all(torch.isfinite(t).all() for t in tensors):
        assert torch.isnan(out.loss), "a non-finite input vanished from the loss: the divergence check misses it"
    if torch.isfinite(out.loss):
        assert torch.all(per.abs() <= 1 + 1e-5)


@settings(max_examples=50, deadline=None, derandomize=True, database=None)
@given(st.floats(min_value=1e20, max_value=1e37), st.integers(min_value=1, max_value=6))
def test_negative_cosine_of_parallel_huge_vectors_is_minus_one(scale: float, d: int) -> None:
    from gsg.ssl.stopgrad import negative_cosine

    v = torch.full((2, d), scale)
    assert torch.allclose(negative_cosine(v, v), torch.tensor([-1.0, -1.0]))
