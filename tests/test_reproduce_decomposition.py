"""`gsg reproduce decomposition`: Zhang et al.'s experiments as runs of the one loop, their claims and report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

import gsg.reproduce.runner as runner
from gsg.reproduce import get_experiment, plan_runs, reproduce
from gsg.reproduce.experiments import CPU_BASE, CPU_COST, Claim, estimate_seconds
from gsg.reproduce.report import results_table
from test_reproduce import TINY as REPRO_TINY

pytestmark = pytest.mark.usefixtures("one_thread")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# test_reproduce's tiny runs, without its evaluation section (this experiment has no probe or t-SNE)
TINY: dict[str, dict[str, Any]] = {k: v for k, v in REPRO_TINY.items() if k != "reproduce"}


@pytest.fixture(autouse=True)
def one_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "default_jobs", lambda scale: 1)


def test_definitions_are_zhang_et_al_s_experiments_on_the_cpu_base(tmp_path: Path) -> None:
    exp = get_experiment("decomposition", "cpu")
    assert exp.base is CPU_BASE
    cfg = {p.run.name: p.config for p in plan_runs(exp, 1, tmp_path)}
    assert cfg["simsiam_nopred"].model.predictor == "none"
    assert cfg["simsiam_sympred"].model.predictor == "symmetric" and cfg["simsiam_invpred"].model.predictor == "inverse"
    assert cfg["simsiam_biaspred"].model.predictor == "bias"
    assert {cfg[f"simsiam_surgery_{k}"].ssl.grad_surgery for k in ("basic", "center", "residual")} == {
        "basic", "center", "residual"}
    assert (cfg["conj1_center"].ssl.loss, cfg["conj1_residual"].ssl.loss) == ("center", "residual")
    assert cfg["conj1_center"].model.predictor == "none" and cfg["conj1_center"].ssl.stop_gradient == "symmetric"
    assert cfg["simsiam_gsg"].ssl.views == "fresh" and cfg["simsiam_gsg2"].ssl.views == "reuse"
    assert cfg["simsiam_gsg2"].ssl.pairing == "matching" and cfg["simsiam_gsg2_nopred"].model.predictor == "none"
    assert cfg["simsiam_gsg_nopred"].ssl.views == "fresh"
    assert cfg["byol"].ssl.method == "byol" and cfg["byol_nopred"].model.predictor == "none"
    full = {r.name for r in get_experiment("decomposition", "full").runs}
    assert full == set(cfg)
    # the page's note on the projector's last BatchNorm says what every run at both scales uses
    for scale in ("cpu", "full"):
        scaled = get_experiment("decomposition", scale)
        assert {p.config.model.proj_last_bn for p in plan_runs(scaled, 1, tmp_path / scale)} == {"affine"}
        assert any("an affine BatchNorm (model.proj_last_bn = affine" in n for n in scaled.notes)
    # 4 crops are charged twice the training time of 2 crops
    one: dict[str, Any] = {"epochs": 10, "subset": 1024, "batch_size": 128, "knn_every": 0, "checkpoint_every": 10,
                           "evals": ("knn",)}
    assert estimate_seconds(**one, crops=4) - estimate_seconds(**one) == pytest.approx(
        10 * 1024 * CPU_COST["train_per_image"])


def test_runs_named_as_table1_and_fig5_are_their_trainings(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    mine = {p.run.name: p for p in plan_runs(get_experiment("decomposition", "cpu"), 1, tmp_path / "d",
                                             runs_dir=runs)}
    for other, names in (("table1", ("simsiam", "simsiam_gsg", "byol")),
                         ("fig5", ("simsiam_nopred", "simsiam_gsg_nopred", "byol_nopred")),
                         ("crops", ("simsiam_gsg2",))):
        theirs = {p.run.name: p for p in plan_runs(get_experiment(other, "cpu"), 1, tmp_path / other, runs_dir=runs)}
        for n in names:
            assert mine[n].dir == theirs[n].dir
            assert runner._config_diffs(theirs[n].config.to_dict(), mine[n].config.to_dict()) == []
    # at full scale Fig. 5 trains 400 epochs: the no-predictor runs get their own directories
    full = {p.run.name: p for p in plan_runs(get_experiment("decomposition", "full"), 1, tmp_path / "f",
                                             runs_dir=runs)}
    fig5 = {p.run.name: p for p in plan_runs(get_experiment("fig5", "full"), 1, tmp_path / "f5", runs_dir=runs)}
    assert full["simsiam_nopred"].dir != fig5["simsiam_nopred"].dir
    assert full["simsiam_nopred"].config.optim.epochs == 200


def _variant(curve: dict[str, list[float]], final: dict[str, float]) -> dict[str, Any]:
    metrics = {k: {"mean": v, "std": None, "n": 1} for k, v in final.items()}
    return {"metrics": metrics, "curve": {k: {"epoch": list(range(1, len(v) + 1)), "mean": v, "std": [None] * len(v)}
                                          for k, v in curve.items()}}


def test_new_claim_kinds_below_above_rises() -> None:
    variants = {"a": _variant({"z_center_ratio": [0.1, 0.3, 0.6]}, {"eta_p": -0.4, "z_center_ratio": 0.6}),
                "b": _variant({"z_center_ratio": [0.5, 0.2]}, {"eta_p": 0.1, "z_center_ratio": 0.2})}

    def verdict(c: Claim) -> str:
        return runner._verdict(c, variants, 10.0)["verdict"]

    assert verdict(Claim("", "below", "a", metric="eta_p", tol=0.0)) == "holds"
    assert verdict(Claim("", "below", "b", metric="eta_p", tol=0.0)) == "does not hold"
    assert verdict(Claim("", "above", "b", metric="eta_p", tol=0.0)) == "holds"
    assert verdict(Claim("", "rises", "a", metric="z_center_ratio")) == "holds"
    assert verdict(Claim("", "rises", "b", metric="z_center_ratio")) == "does not hold"
    assert verdict(Claim("", "rises", "missing", metric="z_center_ratio")) == "n/a"
    res = runner._verdict(Claim("", "greater", "a", "b", metric="z_center_ratio"), variants, 10.0)
    assert res == {"verdict": "holds", "ours": "0.6 vs 0.2 (+0.4)"}  # a metric in [0, 1] keeps its digits


def test_two_runs_end_to_end_log_the_decomposition_and_render_it(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    full = get_experiment("decomposition", "cpu")
    keep = ("simsiam", "simsiam_gsg_nopred")
    small = dataclasses.replace(full, runs=tuple(r for r in full.runs if r.name in keep),
                                claims=tuple(c for c in full.claims if c.a in keep))
    monkeypatch.setattr(runner, "get_experiment", lambda name, scale: small)
    out = tmp_path / "d"
    res = reproduce("decomposition", scale="cpu", out=out, base_overrides=TINY)
    saved = json.loads((out / "results.json").read_text())
    v = saved["variants"]
    assert list(v) == list(keep)
    assert v["simsiam"]["curve"]["eta_p"]["epoch"] == [1, 2] and v["simsiam"]["metrics"]["ge_norm"]["mean"] > 0
    assert v["simsiam_gsg_nopred"]["metrics"]["ge_norm"]["mean"] == 0.0  # no predictor: G_e = 0
    assert v["simsiam_gsg_nopred"]["curve"]["sel_eta"]["epoch"] == [1, 2]
    assert not v["simsiam"]["curve"]["sel_eta"]["epoch"]  # the symmetric loss has no selection gradient
    claims = {c["claim"]: c for c in saved["claims"]}
    eta = claims["SimSiam's extra gradient de-centres: final η_p < 0 (Fig. 5a: ≈ -0.5)"]
    assert eta["verdict"] in ("holds", "does not hold") and "eta_p = " in eta["ours"]
    mo = claims["SimSiam w/ GSG w/o predictor (4 crops): the projection does not collapse completely (final m_o < 0.9)"]
    final_mo = v["simsiam_gsg_nopred"]["curve"]["z_center_ratio"]["mean"][-1]
    assert mo["verdict"] == ("holds" if final_mo < 0.9 else "does not hold")
    md = (out / "results.md").read_text()
    assert "| Group | Run |" in md and "η_p" in md and "Zhang et al." in md
    names = {Path(p).name for p in saved["plots"]}
    assert {"decomposition_knn.png", "decomposition_eta_p.png", "decomposition_z_center_ratio.png",
            "decomposition_ge_center_norm.png", "decomposition_sel_eta.png",
            "decomposition_eta_crossing.png"} <= names
    assert all(Path(p).read_bytes()[:8] == PNG_MAGIC for p in saved["plots"])
    assert results_table(res).count("\n") == 3  # header, rule, two runs


@pytest.mark.parametrize("name", ["decomposition", "fig5", "fig4"])
def test_every_collapse_verdict_is_also_read_from_the_projection(name: str) -> None:
    """kNN within 5 points of chance cannot show a collapsed projector over a backbone left near its random start,
    so each collapse claim has a twin on m_o, in the same direction, and the experiment logs m_o."""
    from gsg.reproduce.experiments.base import COMPLETE_COLLAPSE_MO

    exp = get_experiment(name, "cpu")
    by_knn = {c.a: c.kind for c in exp.claims if c.kind in ("collapsed", "not_collapsed")}
    by_mo = {c.a: c.kind for c in exp.claims if c.metric == "z_center_ratio" and c.kind in ("above", "below")}
    assert by_knn and set(by_knn) <= set(by_mo)
    assert all(by_mo[a] == ("above" if k == "collapsed" else "below") for a, k in by_knn.items())
    assert {c.tol for c in exp.claims if c.metric == "z_center_ratio" and c.kind in ("above", "below")} == {
        COMPLETE_COLLAPSE_MO}
    assert "z_center_ratio" in exp.curves
