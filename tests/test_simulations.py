"""The simulation scripts run end to end in --quick mode and write what they promise."""

import csv
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(script, out):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "simulations" / script), "--quick", "--out", str(out)],
        cwd=ROOT / "simulations", capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_ra4_depth(tmp_path):
    _run("ra4_depth.py", tmp_path)
    rows = _rows(tmp_path / "ra4_depth.csv")
    assert {r["branch_factors"] for r in rows} == {"1", "2"}
    assert all(r["converged"] == "True" for r in rows)
    fits = {r["branch_factors"]: float(r["slope"]) for r in _rows(tmp_path / "ra4_fits.csv")}
    # T4: k = 2 is closer to -1 than k = 1, whose L*sigma_1 still grows with L.
    assert fits["2"] < fits["1"] < 0
    assert (tmp_path / "ra4_depth.png").stat().st_size > 10_000


def test_ra3_classes(tmp_path):
    out = _run("ra3_classes.py", tmp_path)
    rows = _rows(tmp_path / "ra3_classes.csv")
    assert all(float(r["numerical_rank"]) == float(r["classes"]) for r in rows)
    assert "rank == C in every run: True" in out


def test_ra1_trajectories(tmp_path):
    _run("ra1_trajectories.py", tmp_path)
    rows = _rows(tmp_path / "ra1_trajectories.csv")
    assert all(float(r["collinearity"]) > 0.99 for r in rows)
    assert len(list(tmp_path.glob("ra1_*.png"))) == len(rows)


@pytest.mark.parametrize("script", ["ra4_depth.py", "ra3_classes.py", "ra1_trajectories.py"])
def test_scripts_require_an_output_folder(script):
    proc = subprocess.run([sys.executable, str(ROOT / "simulations" / script)], cwd=ROOT / "simulations",
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--out" in proc.stderr
