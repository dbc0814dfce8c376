"""The ERM simulation (simulations/entangled_architectures.py) end to end, in its --quick mode."""

import csv
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "simulations" / "entangled_architectures.py"
FAMILIES = ["identity", "none", "orthogonal", "permutation", "sparse_unipotent", "correlation"]
TASKS = ["conv/digits", "vit/digits", "rnn/sequential_digits", "rnn/majority", "rnn/first_marker"]


def test_quick_run_writes_one_row_per_task_family_and_seed(tmp_path):
    out = tmp_path / "erm"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out / "runs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted((r["task"], r["family"], r["seed"]) for r in rows) == sorted(
        (t, f, "0") for t in TASKS for f in FAMILIES
    )
    for r in rows:
        assert r["status"] == "ok" and not r["error"], r
        L = int(r["blocks"])
        cos = np.array(r["gradient_cosine_blocks"].split(";"), dtype=float)
        ratio = np.array(r["norm_ratio_blocks"].split(";"), dtype=float)
        lesion = np.array(r["lesion_accuracy_blocks"].split(";"), dtype=float)
        assert len(cos) == len(ratio) == len(lesion) == L
        assert np.all(np.abs(cos) <= 1) and np.all((lesion >= 0) & (lesion <= 1))
        # Only a recurrent net's first step is undefined (h_0 = 0); everything else is measured.
        assert np.isfinite(ratio[1:]).all() and (np.isnan(ratio[0]) == (r["architecture"] == "rnn"))
        # sigma_1 may be exactly 0: an unscaled correlation skip can saturate every tanh unit of the RNN.
        assert 0 <= float(r["test_accuracy"]) <= 1 and float(r["ra_sigma1_mean"]) >= 0
        assert 0 < float(r["ra_chance"]) <= 1 and r["ra_RA4"] in ("True", "False", "")
        if r["family"] == "none" and r["architecture"] != "rnn":
            # No shortcut: a lesion zeroes the stream, so the net predicts one class for every input
            # (an RNN still reads the later steps).
            assert np.all(lesion <= float(r["chance_accuracy"]) + 1e-5)  # the CSV keeps 6 digits
    for task in TASKS:
        slug = task.replace("/", "_")
        assert (out / f"accuracy_{slug}.png").stat().st_size > 0
        assert (out / f"refinement_{slug}.png").stat().st_size > 0
    claims = (out / "claims.md").read_text()
    assert "(a)" in claims and "(b)" in claims and "(c)" in claims
    timing = json.loads((out / "timing.json").read_text())
    assert timing["runs"] == len(rows) and timing["quick"]


def test_unknown_family_or_task_is_refused(tmp_path):
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path), "--families", "householder"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode != 0 and "unknown mapping family 'householder'" in bad.stderr
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path), "--tasks", "mlp/digits"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode != 0 and "unknown task" in bad.stderr
