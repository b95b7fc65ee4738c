"""Paired differences over seeds: the interval and the rule for a difference that counts."""

from __future__ import annotations

import math

import pytest

from gsg.reproduce.stats import MIN_EFFECT, SINGLE_SEED_EFFECT, fmt_difference, paired_difference


def test_interval_is_the_t_interval_of_the_paired_differences() -> None:
    a = {0: 80.0, 1: 81.5, 2: 79.0, 3: 99.0}
    b = {0: 78.0, 1: 80.0, 2: 78.5}  # seed 3 has no partner and is left out
    r = paired_difference(a, b)
    d = [2.0, 1.5, 0.5]
    mean = sum(d) / 3
    s = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    half = 4.302652729911275 * s / math.sqrt(3)  # t_{0.975, 2}
    assert r["n"] == 3 and r["seeds"] == [0, 1, 2]
    assert r["mean"] == pytest.approx(mean) and r["std"] == pytest.approx(s)
    assert r["lo"] == pytest.approx(mean - half) and r["hi"] == pytest.approx(mean + half)
    assert r["lo"] < 0 < r["hi"] and not r["counts"] and r["direction"] == "="


def test_a_difference_counts_only_beyond_the_minimum_effect() -> None:
    tight_small = paired_difference({0: 1.5, 1: 1.6, 2: 1.55}, {0: 1.0, 1: 1.1, 2: 1.05})
    assert tight_small["lo"] > 0 and tight_small["mean"] < MIN_EFFECT and not tight_small["counts"]
    big = paired_difference({0: 83.0, 1: 84.0, 2: 83.5}, {0: 80.0, 1: 80.5, 2: 81.0})
    assert big["counts"] and big["direction"] == "+"
    worse = paired_difference({0: 70.0, 1: 70.5, 2: 71.0}, {0: 80.0, 1: 80.5, 2: 81.0})
    assert worse["counts"] and worse["direction"] == "-"


def test_one_seed_counts_only_beyond_seed_noise_and_missing_values() -> None:
    assert not paired_difference({0: 80.0}, {0: 80.0 - SINGLE_SEED_EFFECT / 2})["counts"]
    one = paired_difference({0: 80.0}, {0: 80.0 - 2 * SINGLE_SEED_EFFECT})
    assert one["counts"] and one["lo"] is None and fmt_difference(one) == "+4.0 (1 seed)"
    none = paired_difference({0: None}, {0: 1.0})
    assert none["n"] == 0 and fmt_difference(none) == "missing"
    assert fmt_difference(paired_difference({0: 2.0, 1: 3.0}, {0: 1.0, 1: 1.0})).endswith("(n=2)")


def test_fmt_difference_examples_and_options() -> None:
    import doctest

    import gsg.reproduce.stats as stats

    result = doctest.testmod(stats)
    assert result.attempted >= 3 and result.failed == 0
    # the summary's blocks write a dash where no seed is paired yet, the decomposition tables 3 digits
    assert fmt_difference({"n": 0, "mean": None}, missing="–") == "–"
    assert fmt_difference({"n": 2, "mean": 0.01234, "lo": -0.1, "hi": 0.2}, digits=3) == "+0.012 [-0.100, +0.200] (n=2)"
