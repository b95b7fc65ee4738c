"""docs/experiments/decomposition_final.py: final-weights decomposition tables and paired differences over seeds,
read from hand-made runs whose ``gsg diagnose`` results are cached, so the numbers docs/decomposition.md quotes can
be checked against what the script prints."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "experiments" / "decomposition_final.py"


def _script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("decomposition_final", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(root: Path, name: str, seed: int, eta_p: float, m_o: float, sel_eta: float | None = None,
         samples: int = 4096, bn: str | None = None) -> Path:
    run = root / name
    run.mkdir(exist_ok=True)
    (run / "done.json").write_text(json.dumps({"seed": seed}))
    ckpt = run / "checkpoint.pt"
    ckpt.write_bytes(f"weights of {name}".encode())
    dec: dict[str, object] = {"batches": 16, "eta_p": eta_p, "ge_center_residual_ratio": 0.3,
                              "z_center_ratio": m_o + 0.05,
                              "sd": {"eta_p": 0.05, "ge_center_residual_ratio": 0.01, "z_center_ratio": 0.02}}
    if sel_eta is not None:
        dec["sel_eta"] = sel_eta
        dec["sd"]["sel_eta"] = 0.01  # type: ignore[index]
    extra: dict[str, object] = {"samples": samples, "decomposition": dec,
                                "projection": {"m_o": m_o, "m_r": (1 - m_o ** 2) ** 0.5, "rankme": 20.0}}
    if bn is not None:  # diagnoses made before gsg diagnose --bn have no "bn": the running statistics
        extra["bn"] = bn
    result = {"checkpoint_sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest(), "extra": extra}
    protocol = "diagnose-bn-batch" if bn == "batch" else "diagnose"
    (run / f"checkpoint.{protocol}.fashion-mnist.json").write_text(json.dumps(result))
    return run


def _rows(out: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| ")]


def test_each_seed_gets_a_row_and_versus_gives_the_paired_difference_with_its_interval(tmp_path: Path,
                                                                                       capsys) -> None:  # type: ignore[no-untyped-def]
    gsg = [_run(tmp_path, f"gsg-s{s}", s, 0.1, m, -0.05) for s, m in enumerate((0.17, 0.21, 0.15))]
    sym = [_run(tmp_path, f"sym-s{s}", s, -0.1, m) for s, m in enumerate((0.29, 0.27, 0.30))]
    _script().main([f"GSG={','.join(map(str, gsg))}", f"sym={','.join(map(str, sym))}", "--versus", "GSG", "sym"])
    rows = _rows(capsys.readouterr().out)
    assert rows[0] == ["run", "seed", "η_p", "η_sel", "‖o_e‖/‖r_e‖", "m_o (views)", "m_o (clean)", "m_r (clean)",
                       "RankMe (clean)"]
    assert rows[1] == ["GSG", "0", "0.100 ± 0.050", "-0.050 ± 0.010", "0.300 ± 0.010", "0.220 ± 0.020", "0.170",
                       f"{(1 - 0.17 ** 2) ** 0.5:.3f}", "20.000"]
    assert rows[4][:4] == ["sym", "0", "-0.100 ± 0.050", "–"]  # no selection gradient for symmetric SimSiam
    versus = rows[-1]
    # m_o: differences -0.12, -0.06, -0.15 -> mean -0.11, sd 0.0458, t(0.975, 2) = 4.303
    half = 4.302653 * 0.0458258 / 3 ** 0.5
    interval = f"{-0.11:+.3f} [{-0.11 - half:+.3f}, {-0.11 + half:+.3f}] (n=3)"
    assert versus[0] == "GSG − sym" and versus[1] == versus[2] == interval  # views' m_o is clean's + 0.05 here
    assert versus[3] == "+0.200 [+0.200, +0.200] (n=3)" and versus[4] == "missing"


def test_an_unfinished_run_or_an_unknown_label_is_refused(tmp_path: Path) -> None:
    run = _run(tmp_path, "a-s0", 0, 0.1, 0.2)
    (run / "done.json").unlink()
    with pytest.raises(SystemExit, match="not a finished run"):
        _script().main([f"A={run}"])
    ok = _run(tmp_path, "b-s0", 0, 0.1, 0.2)
    with pytest.raises(SystemExit, match="no runs labelled 'C'"):
        _script().main([f"B={ok}", "--versus", "B", "C"])


def test_a_stale_diagnosis_is_not_reused(tmp_path: Path) -> None:
    """A cache made for other weights (or another sample count) is recomputed, never read: on these fake weights
    ``gsg diagnose`` fails, which shows that it was called."""
    import subprocess

    run = _run(tmp_path, "a-s0", 0, 0.1, 0.2, samples=2048)
    with pytest.raises(subprocess.CalledProcessError):
        _script().main([f"A={run}"])


def test_each_batchnorm_mode_reads_only_its_own_diagnosis(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    run = _run(tmp_path, "a-s0", 0, 0.1, 0.2)  # a diagnosis without "bn": running statistics
    _run(tmp_path, "a-s0", 0, -0.3, 0.6, bn="batch")
    _script().main([f"A={run}"])
    assert _rows(capsys.readouterr().out)[1][2] == "0.100 ± 0.050"
    _script().main([f"A={run}", "--bn", "batch"])
    assert _rows(capsys.readouterr().out)[1][2] == "-0.300 ± 0.050"
