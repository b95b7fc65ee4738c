"""docs/experiments/summary_blocks.py: the summary's copies of a page's tables are generated from its results.json,
and ``--check`` fails when one is stale; the committed summary is current."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "experiments" / "summary_blocks.py"
_spec = importlib.util.spec_from_file_location("summary_blocks", SCRIPT)
assert _spec is not None and _spec.loader is not None
blocks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(blocks)


@dataclass
class Ran:
    returncode: int
    stderr: str


def _run(*args: object) -> Ran:
    """The script's main in this process (importing torch once, not per call); a SystemExit is its error."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = blocks.main([str(a) for a in args])
        except SystemExit as exc:
            return Ran(1, str(exc.code))
    return Ran(code, err.getvalue())


def _result() -> dict:
    variant = {"group": "SimSiam", "label": "SimSiam, symmetric, 2 crops",
               "metrics": {"knn_k200": {"by_seed": {"0": 80.594, "1": 78.66}},
                           "linear": {"by_seed": {"0": 85.81, "1": 84.55}}}}
    claims = [
        {"claim": "SimSiam, GSG > symmetric (knn)", "verdict": "no difference that counts",
         "difference": {"n": 2, "mean": 0.50001, "lo": -6.6154, "hi": 7.6154}},
        {"claim": "SimSiam, GSG > symmetric (linear)", "verdict": "holds",
         "difference": {"n": 2, "mean": 1.25, "lo": 1.04, "hi": 1.46}},
        {"claim": "BYOL, GSG > symmetric (knn)", "verdict": "no difference that counts",
         "difference": {"n": 1, "mean": -0.5, "lo": None, "hi": None}},
    ]
    return {"seeds": 3, "knn_metric": "knn_k200", "variants": {"simsiam": variant}, "claims": claims,
            "missing": [{"key": "simsiam-s2", "label": "SimSiam, symmetric, 2 crops", "seed": 2}]}


def _summary(tmp_path: Path, res: dict) -> Path:
    (tmp_path / "page").mkdir()
    (tmp_path / "page" / "results.json").write_text(json.dumps(res))
    path = tmp_path / "summary.md"
    path.write_text("# Summary\n\nprose before\n\n<!-- generated: page/results.json seeds -->\nold table\n"
                    "<!-- end generated -->\n\nprose between\n\n<!-- generated: page/results.json differences -->\n"
                    "<!-- end generated -->\n\nprose after\n")
    return path


def test_blocks_are_written_from_the_page_and_the_prose_is_kept(tmp_path: Path) -> None:
    path = _summary(tmp_path, _result())
    assert _run(path, "--check").returncode == 1  # "old table" is stale
    assert _run(path).returncode == 0
    text = path.read_text()
    assert "old table" not in text
    for prose in ("prose before", "prose between", "prose after"):
        assert text.count(prose) == 1
    assert "| SimSiam, symmetric, 2 crops | 80.59 / 85.81 | 78.66 / 84.55 | to run |" in text
    # kNN and linear claims of one comparison share a row; one seed has no interval
    assert "| SimSiam, GSG > symmetric | +0.5 [-6.6, +7.6] (n=2) | +1.2 [+1.0, +1.5] (n=2) | knn: no difference " \
           "that counts; linear: holds |" in text
    assert "| BYOL, GSG > symmetric | -0.5 (1 seed) | – | no difference that counts |" in text
    assert _run(path, "--check").returncode == 0
    before = text
    assert _run(path).returncode == 0 and path.read_text() == before  # idempotent


def test_a_new_run_makes_the_block_stale(tmp_path: Path) -> None:
    res = _result()
    path = _summary(tmp_path, res)
    _run(path)
    res["variants"]["simsiam"]["metrics"]["knn_k200"]["by_seed"]["2"] = 79.44
    res["variants"]["simsiam"]["metrics"]["linear"]["by_seed"]["2"] = 85.0
    res["missing"] = []
    (tmp_path / "page" / "results.json").write_text(json.dumps(res))
    check = _run(path, "--check")
    assert check.returncode == 1 and "stale" in check.stderr


def test_bad_markers_and_missing_pages_are_named(tmp_path: Path) -> None:
    path = _summary(tmp_path, _result())
    path.write_text(path.read_text().replace("<!-- end generated -->\n\nprose after", "prose after"))
    out = _run(path)
    assert out.returncode != 0 and "has no '<!-- end generated -->'" in out.stderr
    path.write_text("<!-- generated: nowhere/results.json seeds -->\n<!-- end generated -->\n")
    out = _run(path)
    assert out.returncode != 0 and "does not exist" in out.stderr
    path.write_text("<!-- generated: page/results.json means -->\n<!-- end generated -->\n")
    out = _run(path)
    assert out.returncode != 0 and "unknown block kind 'means'" in out.stderr


def test_the_committed_summary_is_current() -> None:
    summary = ROOT / "docs" / "results" / "summary.md"
    out = _run(summary, "--check")
    assert out.returncode == 0, out.stderr
    assert summary.read_text().count("<!-- generated: ") >= 2  # the control's seeds and differences
