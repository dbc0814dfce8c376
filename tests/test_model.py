"""The objective and its derivatives against independent computations."""

import numpy as np
import pytest
import scipy.special
from scipy.stats import ortho_group

from ramodel import model

LOSSES = ["mse", "cross_entropy"]


def _problem(loss, k, skip_kind, *, d=4, C=3, N=5, L=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((d, N))
    y = rng.integers(0, C, N)
    Y = np.eye(C)[:, y]
    if skip_kind == "identity":
        M = np.broadcast_to(np.eye(d), (L, d, d)).copy()
    elif skip_kind == "none":
        M = np.zeros((L, d, d))
    elif skip_kind == "orthogonal":
        M = ortho_group.rvs(d, size=L, random_state=seed)
    else:  # a general matrix: T2 is claimed for any skip
        M = rng.standard_normal((L, d, d))
    p = model.make_problem(X, Y, M, loss=loss, weight_decay=(0.1, 0.2), branch_factors=k)
    theta = 0.5 * rng.standard_normal(model.n_params(p))
    return p, theta, y


def _naive_objective(theta, p, y):
    """Per-sample loop with explicit products: independent of the vectorised code."""
    factors, W = model.unpack(theta, p)
    L, k = factors.shape[:2]
    Js = []
    for l in range(L):
        J = np.eye(p.width)
        for i in range(k):
            J = factors[l, i] @ J
        Js.append(J)
    total = 0.0
    for n in range(p.n_inputs):
        h = p.X[:, n].copy()
        for l in range(L):
            h = p.skips[l] @ h + Js[l] @ h
        z = W @ h
        if p.loss == "mse":
            total += 0.5 * np.sum((z - np.eye(p.classes)[y[n]]) ** 2)
        else:
            total += scipy.special.logsumexp(z) - z[y[n]]
    reg = 0.5 * p.lambda_J * np.sum(factors**2) + 0.5 * p.lambda_W * np.sum(W**2)
    return total / p.n_inputs + reg


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("skip_kind", ["identity", "none", "orthogonal", "general"])
def test_objective_matches_naive_loop(loss, k, skip_kind):
    p, theta, y = _problem(loss, k, skip_kind)
    assert model.objective(theta, p) == pytest.approx(_naive_objective(theta, p, y), rel=1e-12)
    value, _ = model.value_and_grad(theta, p)
    assert value == pytest.approx(model.objective(theta, p), rel=1e-14)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("skip_kind", ["identity", "none", "orthogonal", "general"])
def test_gradient_matches_central_differences(loss, k, skip_kind):
    p, theta, _ = _problem(loss, k, skip_kind)
    _, g = model.value_and_grad(theta, p)
    h = 1e-6
    E = np.eye(theta.size)
    g_fd = np.array(
        [(model.objective(theta + h * e, p) - model.objective(theta - h * e, p)) / (2 * h) for e in E]
    )
    assert np.linalg.norm(g - g_fd) / np.linalg.norm(g) <= 1e-6


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("skip_kind", ["identity", "general"])
def test_hvp_matches_differences_of_gradient(loss, k, skip_kind):
    p, theta, _ = _problem(loss, k, skip_kind, seed=3)
    rng = np.random.default_rng(7)
    v = rng.standard_normal(theta.size)
    Hv = model.hvp(theta, v, p)
    h = 1e-5
    fd = (model.value_and_grad(theta + h * v, p)[1] - model.value_and_grad(theta - h * v, p)[1]) / (2 * h)
    assert np.linalg.norm(Hv - fd) / np.linalg.norm(Hv) <= 1e-7


def test_hvp_is_symmetric():
    p, theta, _ = _problem("cross_entropy", 2, "general", seed=5)
    rng = np.random.default_rng(1)
    u, v = rng.standard_normal((2, theta.size))
    assert u @ model.hvp(theta, v, p) == pytest.approx(v @ model.hvp(theta, u, p), rel=1e-10)


def test_gradient_formula_of_the_spec_for_k1():
    """MODEL.md §2 written literally: grad_J_l = A_{>l}^T W^T G H_{l-1}^T, grad_W = G H_L^T."""
    p, theta, _ = _problem("mse", 1, "general", seed=2)
    factors, W = model.unpack(theta, p)
    J = factors[:, 0]
    A = p.skips + J
    H = model.forward(J, p.skips, p.X)
    G = (W @ H[-1] - p.Y) / p.n_inputs
    _, g = model.value_and_grad(theta, p)
    gF, gW = model.unpack(g, p)
    L = p.depth
    for l in range(1, L + 1):
        A_after = np.eye(p.width)
        for m in range(l + 1, L + 1):
            A_after = A[m - 1] @ A_after
        expected = A_after.T @ W.T @ G @ H[l - 1].T + p.lambda_J * J[l - 1]
        np.testing.assert_allclose(gF[l - 1, 0], expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gW, G @ H[-1].T + p.lambda_W * W, rtol=1e-12, atol=1e-14)


def test_jacobians_from_factors_order():
    rng = np.random.default_rng(0)
    F = rng.standard_normal((2, 3, 4, 4))
    J = model.jacobians_from_factors(F)
    for l in range(2):
        np.testing.assert_allclose(J[l], F[l, 2] @ F[l, 1] @ F[l, 0])


def test_pack_unpack_roundtrip_and_views():
    p, theta, _ = _problem("mse", 2, "identity")
    F, W = model.unpack(theta, p)
    assert F.shape == (3, 2, 4, 4) and W.shape == (3, 4)
    np.testing.assert_array_equal(model.pack(F, W), theta)


def test_array_api_strict_matches_numpy():
    xps = pytest.importorskip("array_api_strict")
    for loss in LOSSES:
        p, theta, _ = _problem(loss, 2, "general")
        ps = model.make_problem(
            xps.asarray(p.X), xps.asarray(p.Y), xps.asarray(p.skips), loss=loss, weight_decay=(0.1, 0.2), branch_factors=2
        )
        v = np.linspace(-1, 1, theta.size)
        f, g = model.value_and_grad(xps.asarray(theta), ps)
        f0, g0 = model.value_and_grad(theta, p)
        assert f == pytest.approx(f0, rel=1e-14)
        np.testing.assert_allclose(np.asarray(g), g0, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(np.asarray(model.hvp(xps.asarray(theta), xps.asarray(v), ps)), model.hvp(theta, v, p),
                                   rtol=1e-12, atol=1e-14)


def test_inputs_are_not_mutated():
    p, theta, _ = _problem("cross_entropy", 2, "general")
    copies = [a.copy() for a in (p.X, p.Y, p.skips, theta)]
    model.value_and_grad(theta, p)
    model.hvp(theta, theta.copy(), p)
    for before, after in zip(copies, (p.X, p.Y, p.skips, theta)):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(loss="hinge"), ValueError, "loss"),
        (dict(weight_decay=(np.nan, 1.0)), ValueError, "lambda_J"),
        (dict(weight_decay=(1.0, np.inf)), ValueError, "lambda_W"),
        (dict(weight_decay=(1.0, -1.0)), ValueError, "lambda_W"),
        (dict(weight_decay="big"), TypeError, "weight_decay"),
        (dict(branch_factors=0), ValueError, "branch_factors"),
    ],
)
def test_make_problem_rejects_bad_options(kwargs, exc, match):
    X, Y, M = np.zeros((3, 4)), np.zeros((2, 4)), np.zeros((2, 3, 3))
    with pytest.raises(exc, match=match):
        model.make_problem(X, Y, M, **kwargs)


def test_make_problem_rejects_bad_shapes():
    X, Y = np.zeros((3, 4)), np.zeros((2, 4))
    with pytest.raises(ValueError, match="skips"):
        model.make_problem(X, Y, np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="Y"):
        model.make_problem(X, np.zeros((2, 5)), np.zeros((2, 3, 3)))
