"""The solver on problems with known answers."""

import numpy as np
import pytest
from scipy.optimize import rosen, rosen_der, rosen_hess_prod

from ramodel.optimize import DivergenceError, lbfgs, minimize, minres


@pytest.mark.parametrize("n", [1, 3, 30])
def test_minres_solves_symmetric_indefinite_systems(n):
    rng = np.random.default_rng(n)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = Q @ np.diag(rng.standard_normal(n) * np.logspace(0, 3, n)) @ Q.T
    b = rng.standard_normal(n)
    x, _ = minres(lambda v: A @ v, b, rtol=1e-12, maxiter=20 * n)
    np.testing.assert_allclose(x, np.linalg.solve(A, b), rtol=1e-8, atol=1e-10)


def test_minres_on_a_singular_consistent_system_gives_the_minimum_norm_solution():
    A = np.diag([1.0, 2.0, 0.0, -3.0])
    b = np.array([1.0, 1.0, 0.0, 1.0])
    x, _ = minres(lambda v: A @ v, b, rtol=1e-14, maxiter=20)
    np.testing.assert_allclose(x, np.linalg.pinv(A) @ b, atol=1e-14)


def test_minimize_reaches_tight_gradient_norm_on_rosenbrock():
    x0 = np.array([-1.2, 1.0, -0.5, 0.8])
    fun = lambda x: (rosen(x), rosen_der(x))  # noqa: E731
    res = minimize(fun, rosen_hess_prod, x0, tol=1e-12, max_steps=2000)
    assert res.converged and res.grad_norm <= 1e-12
    np.testing.assert_allclose(res.x, np.ones(4), atol=1e-10)
    assert res.history[0] >= res.history[-1]


def test_lbfgs_stalls_near_rounding_and_the_newton_polish_finishes():
    """MODEL.md §5: a line search on Φ stalls once Φ's changes reach its rounding error."""
    rng = np.random.default_rng(0)
    B = rng.standard_normal((10, 10))
    A = B @ B.T + np.eye(10)
    b = rng.standard_normal(10)
    fun = lambda x: (0.5 * x @ A @ x - b @ x, A @ x - b)  # noqa: E731
    x, f, g, steps, msg = lbfgs(fun, np.zeros(10), tol=1e-6, max_steps=500)
    assert np.linalg.norm(g) <= 1e-6
    res = minimize(fun, lambda x, v: A @ v, np.zeros(10), tol=1e-13, max_steps=500)
    assert res.converged and res.grad_norm <= 1e-13
    np.testing.assert_allclose(res.x, np.linalg.solve(A, b), rtol=1e-12)


def test_nan_at_start_raises_with_step_zero():
    with pytest.raises(DivergenceError, match="step 0"):
        minimize(lambda x: (np.nan, x), None, np.ones(2), tol=1e-8, max_steps=10)


def test_nan_everywhere_after_start_raises_with_the_step():
    calls = {"n": 0}

    def fun(x):
        calls["n"] += 1
        if calls["n"] > 6:
            return np.inf, np.full_like(x, np.nan)
        return rosen(x), rosen_der(x)

    with pytest.raises(DivergenceError, match=r"step \d+"):
        minimize(fun, None, np.array([-1.2, 1.0, 0.3]), tol=1e-12, max_steps=50)


def test_nan_regions_are_avoided_not_returned():
    """A step into a NaN region is shrunk; the result stays finite."""

    def fun(x):
        if x[0] > 0.5:
            return np.nan, np.full_like(x, np.nan)
        return float((x[0] - 0.4) ** 2 + x[1] ** 2), np.array([2 * (x[0] - 0.4), 2 * x[1]])

    res = minimize(fun, None, np.array([-3.0, 1.0]), tol=1e-10, max_steps=200)
    assert np.all(np.isfinite(res.x)) and res.converged
    np.testing.assert_allclose(res.x, [0.4, 0.0], atol=1e-9)
