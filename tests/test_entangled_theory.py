"""What survives entangled skips on the UJM (proofs/t6_entangled.py), on converged simulations.

These are the claims printed in simulations/entangled.py's docstring; each is checked here.
"""

import numpy as np
import pytest

import ramodel
from ramodel import theory

TOL = 1e-6
ORTHOGONAL = [("orthogonal", {}), ("permutation", {}), ("permutation", {"signed": True}), ("block_orthogonal", {"block": 3})]
NON_ORTHOGONAL = [("correlation", {"kind": "toeplitz", "rho": 0.5}), ("sparse_unipotent", {"density": 0.3})]


def _solve(skip, params, seed=0):
    s = ramodel.simulate(depth=4, classes=3, width=6, samples_per_class=4, skip=skip, skip_params=params, seed=seed)
    assert s.converged and s.grad_norm <= 1e-8, s.message
    return s


def _sigma_spread(J, C):
    sv = np.linalg.svd(J, compute_uv=False)[:, :C]
    return np.max(np.abs(sv - sv[0])) / sv[0, 0]


@pytest.mark.parametrize("skip, params", ORTHOGONAL + NON_ORTHOGONAL)
def test_T1_T2_and_last_layer_T6_hold_for_every_family(skip, params):
    s = _solve(skip, params)
    J, M = s.jacobians, s.skips
    assert np.max(theory.chain_residuals(J, M)) <= TOL
    assert theory.skip_asymmetry(J[-1], M[-1]) <= TOL
    sigma_next, bound = theory.rank_bound(J, s.grad_norm, s.weight_decay[0], 3)
    assert np.all(sigma_next <= bound + 1e-12)


@pytest.mark.parametrize("skip, params", ORTHOGONAL)
def test_orthogonal_families_keep_symmetry_through_the_skip_at_every_layer_and_equal_spectra(skip, params):
    s = _solve(skip, params, seed=1)
    J, M = s.jacobians, s.skips
    assert max(theory.skip_asymmetry(J[l], M[l]) for l in range(len(J))) <= TOL
    assert _sigma_spread(J, 3) <= TOL
    # v_l = M_l^T u_l: the top right singular subspace is the left one mapped back through the skip.
    U, _, Vt = np.linalg.svd(J)
    for l in range(len(J)):
        P_right = Vt[l, :3].T @ Vt[l, :3]
        MtU = M[l].T @ U[l, :, :3]
        assert np.linalg.norm(P_right - MtU @ MtU.T) <= 1e-6


@pytest.mark.parametrize("skip, params", NON_ORTHOGONAL)
def test_non_orthogonal_families_lose_inner_symmetry_and_equal_spectra(skip, params):
    s = _solve(skip, params, seed=1)
    J, M = s.jacobians, s.skips
    assert max(theory.skip_asymmetry(J[l], M[l]) for l in range(len(J) - 1)) > 1e-2
    assert _sigma_spread(J, 3) > 1e-2


def test_no_skip_gives_balanced_layers_without_symmetry():
    s = ramodel.simulate(depth=4, classes=3, width=6, samples_per_class=4, skip="none", seed=0)
    assert s.converged and np.abs(s.jacobians).max() > 1e-3  # not the trivial J = 0
    assert _sigma_spread(s.jacobians, 3) <= TOL
    assert np.max(theory.asymmetry(s.jacobians)) > 1e-2


def test_entangled_script_quick(tmp_path):
    import csv
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "entangled.py", "--quick", "--out", str(tmp_path)], cwd=root / "simulations",
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "entangled.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["family"] for r in rows} == {"identity", "none", "orthogonal", "permutation"}
    assert all(r["converged"] == "True" for r in rows)
    assert (tmp_path / "entangled.png").stat().st_size > 10_000
