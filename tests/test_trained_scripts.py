"""Smoke-and-content tests of simulations/trained_resnets.py and theory_vs_trained.py (--quick)."""

from __future__ import annotations

import csv
import math
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("torch")

ROOT = pathlib.Path(__file__).resolve().parents[1]
SIM = ROOT / "simulations"
VERDICT_VALUES = {"pass", "FAIL", "n/a"}


def _run(script: str, out: pathlib.Path) -> list[dict]:
    proc = subprocess.run([sys.executable, str(SIM / script), "--quick", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "runs.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _float(s: str) -> float:
    return float(s)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    return out, _run("trained_resnets.py", out)


@pytest.fixture(scope="module")
def theory(tmp_path_factory):
    out = tmp_path_factory.mktemp("theory")
    return out, _run("theory_vs_trained.py", out)


def test_trained_one_row_per_configuration(trained):
    out, rows = trained
    sys.path.insert(0, str(SIM))
    try:
        import trained_resnets
    finally:
        sys.path.remove(str(SIM))
    expected = [(c["data"], str(c["depth"]), c["skip"], str(c["classes"])) for c in trained_resnets.grid(True, 40)]
    got = [(r["data"], r["depth"], r["skip"], r["C"]) for r in rows]
    assert got == expected
    assert len(set(got)) == len(got)


def test_trained_columns_and_values(trained):
    out, rows = trained
    for r in rows:
        for col in ("RA1", "RA2", "RA3", "RA4"):
            assert r[col] in VERDICT_VALUES
        if r["status"] != "ok":
            continue
        for col in ("train_acc", "test_acc", "A_left", "energy_top_C"):
            assert 0.0 <= _float(r[col]) <= 1.0, (col, r[col])
        d = 32
        assert 1 <= _float(r["numerical_rank"]) <= d
        assert _float(r["sigma1_mean"]) > 0
        assert math.isclose(_float(r["A_chance"]), int(r["C"]) / d, rel_tol=1e-3)
        # RA3's verdict is the rank rule (<= C) and the energy rule (>= 0.9), as in METRICS.md.
        ra3 = _float(r["numerical_rank"]) <= int(r["C"]) and _float(r["energy_top_C"]) >= 0.9
        assert r["RA3"] == ("pass" if ra3 else "FAIL")
    assert any(r["status"] == "ok" for r in rows)
    for name in ("accuracy_by_family.png", "alignment_by_family.png", "rank_vs_classes.png", "K_identity.png",
                 "K_none.png", "table.md", "timing.json"):
        assert (out / name).stat().st_size > 0, name
    assert len(list((out / "reports").glob("*.json"))) == sum(r["status"] == "ok" for r in rows)


def test_theory_rows_and_columns(theory):
    out, rows = theory
    sys.path.insert(0, str(SIM))
    try:
        import theory_vs_trained
    finally:
        sys.path.remove(str(SIM))
    expected = [(c["data"], str(c["depth"]), c["skip"]) for c in theory_vs_trained.grid(True, 30)]
    assert [(r["data"], r["depth"], r["skip"]) for r in rows] == expected
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok
    for r in ok:
        assert 0.0 <= _float(r["train_acc"]) <= 1.0 and 0.0 <= _float(r["test_acc"]) <= 1.0
        for m in theory_vs_trained.MEASURES:
            assert m in r and f"{m}_chance" in r and f"{m}_fitted" in r and f"{m}_pred" in r
        # The fitted UJM is a converged critical point: its T2 chain residual is ~0 (MODEL.md §3),
        # while a bias-free ReLU branch is positively homogeneous, so T5 linearity is exactly 1.
        assert _float(r["chain_residual_fitted"]) < 1e-6
        assert abs(_float(r["linearity"]) - 1.0) < 1e-8
        # Chance of linearity keeps h but rotates J: near 0, far from the trained value.
        assert abs(_float(r["linearity_chance"])) < 0.5
        for key in ("sigma1", "sigma1_fit1", "sigma1_fit2"):
            assert _float(r[key]) > 0
    for name in ("depth_scaling.png", "theory_vs_chance.png", "slopes.csv", "table.md"):
        assert (out / name).stat().st_size > 0, name
    assert len(list((out / "theory").glob("*.txt"))) == len(ok)
