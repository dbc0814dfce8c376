"""ramodel.depth_law (T7's predicted curve) against independent computations.

The references here do not use the stationarity equation or the ridge elimination of
``depth_law``: they minimise the un-reduced per-mode objective over (s, w) (k = 1) or over
(beta_1, beta_2, w) with s = beta_1 beta_2 (k = 2, so the nuclear-norm reduction is tested
too) with SciPy, and compare with converged ``ramodel.simulate`` runs.
"""

from __future__ import annotations

import numpy as np
import pytest

from ramodel import depth_law

scipy_optimize = pytest.importorskip("scipy.optimize")


def _reference_sigma1(L, k, *, x, y, a, b):
    """Minimise phi over the raw per-mode variables from several starts (SciPy, float64)."""
    best = None
    for s0 in (0.01, 0.3, 1.0 / L, 2.0 / L):
        for w0 in (0.5, 2.0):
            if k == 1:
                def f(v):
                    s, w = v
                    return 0.5 * (w * (1 + s) ** L * x - y) ** 2 + a * L * s**2 / 2 + b * w**2 / 2
                start = [s0, w0]
            else:
                def f(v):
                    b1, b2, w = v
                    s = b1 * b2
                    return 0.5 * (w * (1 + s) ** L * x - y) ** 2 + a * L * (b1**2 + b2**2) / 2 + b * w**2 / 2
                start = [np.sqrt(s0), np.sqrt(s0), w0]
            r = scipy_optimize.minimize(f, start, method="BFGS", options={"gtol": 1e-12, "maxiter": 10_000})
            if best is None or r.fun < best.fun:
                best = r
    # Polish with a root solve of the raw gradient (hand-derived; BFGS alone stops near 1e-5 here).
    def grad(v):
        if k == 1:
            s, w = v
            b1 = b2 = None
        else:
            b1, b2, w = v
            s = b1 * b2
        q = (1 + s) ** L * x
        r = w * q - y
        ds = r * w * L * (1 + s) ** (L - 1) * x
        gw = r * q + b * w
        if k == 1:
            return [ds + a * L * s, gw]
        return [ds * b2 + a * L * b1, ds * b1 + a * L * b2, gw]

    sol = scipy_optimize.root(grad, best.x, method="hybr", tol=1e-14)
    v = sol.x if sol.success and f(sol.x) <= best.fun + 1e-12 else best.x
    return abs(v[0]) if k == 1 else abs(v[0] * v[1])


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("L", [1, 3, 10, 40])
def test_predicted_sigma1_matches_raw_minimisation(k, L):
    prm = depth_law.reduced_parameters(classes=2, weight_decay=(1e-2, 1e-2), input_norm=0.5)
    got = depth_law.predicted_sigma1([L], branch_factors=k, classes=2, weight_decay=(1e-2, 1e-2), input_norm=0.5)[0]
    ref = _reference_sigma1(L, k, **prm)
    assert got == pytest.approx(ref, rel=1e-6, abs=1e-10)


def test_k2_zero_branch_when_decay_dominates():
    # c = y^2 b/(a x^2) <= 1: no stationary point with t > 0, J = 0 is optimal for k = 2.
    s = depth_law.predicted_sigma1([1, 8, 64], branch_factors=2, classes=2, weight_decay=(1e-2, 1e-2), input_norm=1.0)
    assert np.all(s == 0)
    prm = depth_law.reduced_parameters(classes=2, weight_decay=(1e-2, 1e-2), input_norm=1.0)
    assert _reference_sigma1(8, 2, **prm) < 1e-5


def test_k1_theta_log_L_and_k2_constant():
    prm = depth_law.reduced_parameters(classes=2, weight_decay=(1e-2, 1e-2), input_norm=0.5)
    L = np.array([10**3, 10**4, 10**5, 10**6])
    t1 = depth_law.optimal_log_gain(L, branch_factors=1, **prm)
    Ls1 = L * np.expm1(t1 / L)
    c = prm["y"] ** 2 * prm["b"] / (prm["a"] * prm["x"] ** 2)
    upper = 0.5 * depth_law.lambert_w0(2 * c * L)
    assert np.all(Ls1 <= upper * np.exp(t1 / L) + 1e-12)
    assert np.all(np.diff(Ls1) > 1.0)  # grows by > 1 per decade (about log(10)/2 = 1.15)
    slope = np.diff(Ls1) / np.diff(np.log(L))
    assert np.all(np.abs(slope - 0.5) < 0.06)
    t2 = depth_law.optimal_log_gain(L, branch_factors=2, **prm)
    Ls2 = L * np.expm1(t2 / L)
    lim = depth_law.asymptotic_L_sigma1([1], branch_factors=2, **prm)[0]
    assert np.all(np.abs(Ls2 - lim) < 1e-2 / L * 100)
    assert abs(Ls2[-1] - lim) < 1e-6


def test_lambert_w0_against_scipy():
    special = pytest.importorskip("scipy.special")
    z = np.array([0.0, 1e-8, 0.5, 1.0, 2.9, 3.0, 10.0, 1e4, 1e12])
    np.testing.assert_allclose(depth_law.lambert_w0(z), special.lambertw(z).real, rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: depth_law.predicted_sigma1([4], branch_factors=3), "branch_factors must be 1 or 2"),
        (lambda: depth_law.predicted_sigma1([0]), "depths must be integers >= 1"),
        (lambda: depth_law.predicted_sigma1([2.5]), "depths must be integers >= 1"),
        (lambda: depth_law.reduced_parameters(classes=2, weight_decay=(0.0, 1e-2)), r"weight_decay\[0\] must be"),
        (lambda: depth_law.reduced_parameters(classes=0), "classes must be an integer >= 1"),
        (lambda: depth_law.lambert_w0(-1.0), "z must be finite and >= 0"),
    ],
)
def test_errors_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_import_does_not_pull_scipy():
    import subprocess
    import sys

    code = "import sys, ramodel.depth_law; print('scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "False"


def test_full_model_matches_prediction():
    from ramodel import simulate

    X = np.zeros((2, 3))
    X[0, 0] = X[1, 1] = 0.5
    for k in (1, 2):
        sim = simulate(8, 2, inputs=X, labels=np.arange(2), branch_factors=k, weight_decay=(1e-2, 1e-2), tol=1e-11,
                       seed=0)
        assert sim.grad_norm <= 1e-8
        s1 = np.linalg.svd(np.asarray(sim.jacobians), compute_uv=False)[:, 0]
        pred = depth_law.predicted_sigma1([8], branch_factors=k, classes=2, weight_decay=(1e-2, 1e-2), input_norm=0.5)
        np.testing.assert_allclose(s1, pred[0], rtol=1e-7)


def test_depth_scaling_plot_draws_the_prediction():
    pytest.importorskip("matplotlib")
    from ramodel import plots

    L = np.array([1, 4, 16, 64])
    pred = depth_law.predicted_sigma1(L, branch_factors=1, classes=2, input_norm=0.5)
    dense = np.geomspace(1, 64, 30).round()
    fig = plots.depth_scaling(L, pred * 1.01, predicted=(dense, depth_law.predicted_sigma1(dense, input_norm=0.5)))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "T7 prediction" in labels
    with pytest.raises(ValueError, match="predicted must be a pair"):
        plots.depth_scaling(L, pred, predicted=pred)
