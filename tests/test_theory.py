"""Closed forms and theorem measures against independent computations."""

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given
from hypothesis import strategies as st

from ramodel import theory


@given(st.integers(1, 4), st.integers(1, 8), st.floats(0.01, 100.0), st.integers(0, 1000))
def test_closed_form_solves_the_matrix_quadratic(C, d, kappa, seed):
    W = np.random.default_rng(seed).standard_normal((C, d))
    J = theory.closed_form_jacobian(W, (1.0, kappa))
    np.testing.assert_allclose(J + J @ J, kappa * W.T @ W, atol=1e-10 * (1 + kappa * np.sum(W**2)))
    np.testing.assert_allclose(J, J.T, atol=1e-14)
    assert np.linalg.eigvalsh(J).min() >= -1e-12
    # Independent route: the principal square root.
    ref = 0.5 * (np.real(scipy.linalg.sqrtm(np.eye(d) + 4 * kappa * W.T @ W)) - np.eye(d))
    np.testing.assert_allclose(J, ref, atol=1e-8 * (1 + np.abs(ref).max()))
    assert np.linalg.matrix_rank(J, tol=1e-9 * max(1.0, np.abs(J).max())) <= C


def test_asymmetry_values():
    rng = np.random.default_rng(0)
    S = rng.standard_normal((5, 5))
    assert theory.asymmetry(S + S.T) == pytest.approx(0.0, abs=1e-15)
    assert theory.asymmetry(S - S.T) == pytest.approx(1.0)
    G = rng.standard_normal((400, 200, 200))
    assert np.mean(theory.asymmetry(G)) == pytest.approx(1 / np.sqrt(2), abs=0.01)


def test_chain_residual_is_zero_on_a_constructed_critical_chain_and_not_otherwise():
    rng = np.random.default_rng(1)
    B = rng.standard_normal((4, 4))
    J = np.stack([0.1 * (B @ B.T)] * 3)  # equal symmetric Jacobians satisfy T2 for identity skips
    assert np.max(theory.chain_residuals(J)) <= 1e-15
    J2 = J.copy()
    J2[1] += 0.05 * rng.standard_normal((4, 4))
    assert np.max(theory.chain_residuals(J2)) > 1e-3
    # Per-input layout (L, N, d, d) gives one residual per pair and input.
    assert theory.chain_residuals(np.stack([J, J2], axis=1)).shape == (2, 2)


def test_depth_singular_values_and_T4_limit():
    p = np.array([5.0, 2.0])
    for L in [1, 3, 10]:
        s = theory.depth_singular_values(p, L)
        np.testing.assert_allclose((1 + s) ** L, p, rtol=1e-14)
    L = 10**8
    np.testing.assert_allclose(L * theory.depth_singular_values(p, L), np.log(p), rtol=1e-7)


def test_gain_share_error_is_zero_for_equal_symmetric_psd_jacobians():
    rng = np.random.default_rng(2)
    B = rng.standard_normal((6, 2))
    J = np.stack([0.2 * B @ B.T] * 5)
    assert np.max(theory.gain_share_error(J, 2)) <= 1e-12
    J[0] *= 3
    assert np.max(theory.gain_share_error(J, 2)) > 0.1


@pytest.mark.parametrize("c_zero", [False, True])
def test_rank_one_trajectory_equals_the_matrix_power(c_zero):
    rng = np.random.default_rng(3)
    d = 5
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    v = rng.standard_normal(d)
    if c_zero:
        v -= (v @ u) * u
    v /= np.linalg.norm(v)
    x = rng.standard_normal(d)
    sigma = 0.3
    H = theory.rank_one_trajectory(x, u, v, sigma, 6)
    A = np.eye(d) + sigma * np.outer(u, v)
    ref = np.stack([np.linalg.matrix_power(A, l) @ x for l in range(7)])
    np.testing.assert_allclose(H, ref, rtol=1e-12, atol=1e-12)


def test_linearity_is_one_for_the_linear_model():
    rng = np.random.default_rng(4)
    L, N, d = 3, 4, 5
    J = 0.1 * rng.standard_normal((L, d, d))
    M = rng.standard_normal((L, d, d))
    h = [rng.standard_normal((N, d))]
    for l in range(L):
        h.append(h[-1] @ (M[l] + J[l]).T)
    R = np.stack(h)
    np.testing.assert_allclose(theory.linearity(R, J, M), 1.0, atol=1e-12)
    Jn = np.broadcast_to(J[:, None], (L, N, d, d))
    np.testing.assert_allclose(theory.linearity(R, Jn, M), 1.0, atol=1e-12)


def test_psd_defect():
    assert theory.psd_defect(np.diag([2.0, 1.0])) == 0.0
    assert theory.psd_defect(np.diag([2.0, -1.0])) == pytest.approx(0.5)


def test_skips_of_wrong_shape_are_named():
    with pytest.raises(ValueError, match="skips must have shape"):
        theory.chain_residuals(np.zeros((3, 4, 4)), np.zeros((2, 4, 4)))
