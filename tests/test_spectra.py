"""Tests of ramodel.spectra: every method against numpy.linalg.svd and closed forms.

Test matrices are built as ``J = U diag(s) V^T`` with Haar ``U``, ``V`` and a chosen
spectrum ``s`` (decaying, rank-deficient, clustered, exactly degenerate), so the
singular values are known in closed form; ``numpy.linalg.svd`` gives the reference
vectors. Vectors are compared through projectors with the Wedin bound computed from
the residuals, because individual vectors are not unique inside clusters.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ramodel.spectra import (
    METHODS,
    TopSingular,
    fix_signs,
    top_singular,
    top_singular_operator,
    triplet_residual,
)

EPS = np.finfo(np.float64).eps
SQRT_EPS = math.sqrt(EPS)
KINDS = ("gaussian", "decaying", "rank_deficient", "clustered", "degenerate")


# ----------------------------------------------------------------------------- builders


def _haar(rng, batch, d):
    Q, R = np.linalg.qr(rng.standard_normal(batch + (d, d)))
    return Q * np.sign(np.diagonal(R, axis1=-2, axis2=-1))[..., None, :]


def _spectrum(kind, r, rng, *, rho=0.5):
    """Non-increasing singular values of length r (None for 'gaussian')."""
    if kind == "decaying":
        return 3.0 * rho ** np.arange(r)
    if kind == "rank_deficient":
        rank = int(rng.integers(0, r))  # may be 0: the zero matrix
        s = np.zeros(r)
        s[:rank] = 2.0 * rho ** np.arange(rank)
        return s
    if kind == "clustered":
        c = int(rng.integers(1, r + 1))
        s = 0.3 * 0.5 ** np.arange(r)
        s[:c] = 1.0 + 1e-11 * np.arange(c)[::-1]  # width << sqrt(eps): unresolvable at tol
        return s
    if kind == "degenerate":
        c = int(rng.integers(1, r + 1))
        s = 0.25 * 0.5 ** np.arange(r)
        s[:c] = 2.0
        return s
    raise ValueError(kind)


def _make(kind, batch, m, n, seed, *, rho=0.5):
    """J (batch + (m, n)) and its exact singular values (batch + (r,))."""
    rng = np.random.default_rng(seed)
    r = min(m, n)
    if kind == "gaussian":
        J = rng.standard_normal(batch + (m, n))
        return J, np.linalg.svd(J, compute_uv=False)
    s = _spectrum(kind, r, rng, rho=rho)
    U = _haar(rng, batch, m)[..., :r]
    V = _haar(rng, batch, n)[..., :r]
    J = (U * s) @ np.swapaxes(V, -1, -2)
    return J, np.broadcast_to(s, batch + (r,))


@st.composite
def cases(draw, *, kinds=KINDS, max_dim=28, min_dim=1):
    batch = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    m = draw(st.integers(min_dim, max_dim))
    n = draw(st.integers(min_dim, max_dim))
    k = draw(st.integers(1, min(m, n)))
    kind = draw(st.sampled_from(kinds))
    seed = draw(st.integers(0, 2**32 - 1))
    return batch, m, n, k, kind, seed


# ----------------------------------------------------------------------------- checks


def _mT(x):
    return np.swapaxes(x, -1, -2)


def _orth_err(X):
    k = X.shape[-1]
    return float(np.max(np.abs(_mT(X) @ X - np.eye(k)), initial=0.0))


def _check_structure(J, T, k, *, dtype=np.float64):
    m, n = J.shape[-2:]
    batch = J.shape[:-2]
    assert T.U.shape == batch + (m, k)
    assert T.S.shape == batch + (k,)
    assert T.V.shape == batch + (n, k)
    for a in T:
        assert a.dtype == dtype
        assert np.all(np.isfinite(a))
    tol = 1e3 * np.finfo(dtype).eps
    assert _orth_err(T.U) <= tol
    assert _orth_err(T.V) <= tol
    assert np.all(T.S >= 0)
    assert np.all(np.diff(T.S, axis=-1) <= 0)
    # the sign convention: largest-magnitude entry of each u_i is positive
    idx = np.argmax(np.abs(T.U), axis=-2)[..., None, :]
    assert np.all(np.take_along_axis(T.U, idx, axis=-2) > 0)


def _projector_gap_check(J, T, s_exact):
    """Wedin: |sin Theta| <= max(|R1|_F, |R2|_F) / (s_k - sigma_{k+1}), for U and V."""
    k = T.S.shape[-1]
    r = s_exact.shape[-1]
    if k == r:
        return
    U0, _, V0h = np.linalg.svd(J, full_matrices=False)
    U0, V0 = U0[..., :k], _mT(V0h)[..., :k]
    R1 = J @ T.V - T.U * T.S[..., None, :]
    R2 = _mT(J) @ T.U - T.V * T.S[..., None, :]
    res = np.maximum(np.linalg.norm(R1, axis=(-2, -1)), np.linalg.norm(R2, axis=(-2, -1)))
    delta = T.S[..., -1] - s_exact[..., k]
    gap = s_exact[..., k - 1] - s_exact[..., k]
    scale = s_exact[..., :1].squeeze(-1) + 1e-300
    ok = (delta > 1e-6 * scale) & (gap > 1e-6 * scale)
    if not np.any(ok):
        return
    # the reference SVD's own vectors are off by ~ eps * sigma_1 / gap
    bound = res / np.where(ok, delta, 1.0) + 1e3 * EPS * scale / np.where(ok, gap, 1.0)
    for X, X0 in ((T.U, U0), (T.V, V0)):
        dist = np.linalg.norm(X @ _mT(X) - X0 @ _mT(X0), ord=2, axis=(-2, -1))
        assert np.all(np.where(ok, dist <= 1.01 * bound + 1e-14, True)), (dist, bound)


def _values_check(T, s_exact, J, *, tol=SQRT_EPS):
    """Two checks on S against the exact singular values s_exact (..., r).

    1. Rigorous for any orthonormal U, V: [u; v]/sqrt(2) is an approximate eigenvector
       of [[0, J], [J^T, 0]] (eigenvalues +-sigma_j, and 0 when m != n) with residual
       res_i / sqrt(2), so some sigma_j (or 0) lies within res_i / sqrt(2) of S_i.
    2. The documented tolerance: |S_i - sigma_i| <= 2 tol sigma_1 (clusters in these
       test spectra are far narrower than tol, and gaps elsewhere far wider).
    """
    res = triplet_residual(J, T)
    scale = s_exact[..., :1]
    slack = 100 * EPS * scale * max(J.shape[-2:])
    candidates = np.concatenate([s_exact, np.zeros_like(s_exact[..., :1])], axis=-1)
    nearest = np.min(np.abs(T.S[..., :, None] - candidates[..., None, :]), axis=-1)
    assert np.all(nearest <= res / math.sqrt(2) + slack), (nearest, res)
    err = np.abs(T.S - s_exact[..., : T.S.shape[-1]])
    assert np.all(err <= 2 * tol * scale + slack), (err, scale)


# ----------------------------------------------------------------------------- exact SVD


@given(cases())
def test_svd_matches_closed_form(case):
    batch, m, n, k, kind, seed = case
    J, s = _make(kind, batch, m, n, seed)
    T = top_singular(J, k, method="svd")
    _check_structure(J, T, k)
    scale = s[..., :1] + 1e-300
    assert np.all(np.abs(T.S - s[..., :k]) <= 50 * EPS * scale * max(m, n))
    assert np.all(triplet_residual(J, T) <= 50 * EPS * scale * max(m, n))


def test_svd_diagonal_example():
    T = top_singular(np.diag([1.0, 3.0, 2.0]), 2, method="svd")
    assert T.S.tolist() == [3.0, 2.0]
    np.testing.assert_array_equal(np.abs(T.U), [[0, 0], [1, 0], [0, 1]])


# ----------------------------------------------------------------------------- gram


@given(cases())
def test_gram_matches_svd(case):
    batch, m, n, k, kind, seed = case
    J, s = _make(kind, batch, m, n, seed)
    T = top_singular(J, k, method="gram")
    _check_structure(J, T, k)
    scale = s[..., :1]
    # documented resolution: residuals within ~sqrt(eps) sigma_1
    assert np.all(triplet_residual(J, T) <= 10 * SQRT_EPS * scale + 1e-300)
    _values_check(T, s, J)
    _projector_gap_check(J, T, s)


def test_gram_zero_and_rank_deficient_never_nan():
    rng = np.random.default_rng(0)
    low = rng.standard_normal((3, 9, 2)) @ rng.standard_normal((3, 2, 7))  # rank 2
    for J in (np.zeros((2, 5, 4)), low, _mT(low)):
        k = min(J.shape[-2:])
        T = top_singular(J, k, method="gram")
        _check_structure(J, T, k)
        assert np.all(T.S[..., 2:] <= 1e-11 * np.max(np.abs(J)))
        assert np.all(triplet_residual(J, T) <= 1e-12 * (1 + T.S[..., :1]))


def test_gram_wide_and_tall_agree():
    J, s = _make("decaying", (2,), 7, 19, seed=3)
    for A, ss in ((J, s), (_mT(J), s)):
        T = top_singular(A, 4, method="gram")
        Tsvd = top_singular(A, 4, method="svd")
        np.testing.assert_allclose(T.S, ss[..., :4], rtol=1e-12)
        # well separated spectrum: the sign convention makes the vectors themselves agree
        np.testing.assert_allclose(T.U, Tsvd.U, atol=1e-10)
        np.testing.assert_allclose(T.V, Tsvd.V, atol=1e-10)


# ----------------------------------------------------------------------------- randomized


@given(cases(kinds=("decaying", "rank_deficient", "clustered", "degenerate"), min_dim=8, max_dim=40),
       st.integers(5, 12), st.integers(0, 2**16))
def test_randomized_converges_and_matches_svd(case, oversample, sketch_seed):
    """With oversample >= 5 and decay <= 0.5 per index, 'auto' power iterations
    reach the residual test, and the result then matches the exact one."""
    batch, m, n, k, kind, seed = case
    J, s = _make(kind, batch, m, n, seed, rho=0.5)
    T = top_singular(J, k, method="randomized", oversample=oversample, seed=sketch_seed)
    _check_structure(J, T, k)
    scale = s[..., :1]
    res = triplet_residual(J, T)
    assert np.all(res <= 1.01 * SQRT_EPS * scale + 1e-13 * scale + 1e-300)
    _values_check(T, s, J)
    _projector_gap_check(J, T, s)


@given(cases(kinds=("gaussian", "decaying"), min_dim=6, max_dim=40), st.integers(0, 3), st.integers(0, 3))
def test_randomized_ritz_properties_any_spectrum(case, oversample, power_iters):
    """Whatever the convergence: S never exceeds the exact values (Rayleigh-Ritz),
    J^T U = V S holds to rounding, and U, V are orthonormal."""
    batch, m, n, k, kind, seed = case
    J, s = _make(kind, batch, m, n, seed, rho=0.9)
    T = top_singular(J, k, method="randomized", oversample=oversample, power_iters=power_iters, seed=seed)
    _check_structure(J, T, k)
    scale = s[..., :1]
    assert np.all(T.S <= s[..., :k] + 100 * EPS * scale * max(m, n))
    left = triplet_residual(J, T, side="left")
    assert np.all(left <= 100 * EPS * scale * max(m, n))


def test_randomized_exact_when_rank_within_sketch():
    rng = np.random.default_rng(5)
    J = rng.standard_normal((4, 60, 3)) @ rng.standard_normal((4, 3, 50))  # rank 3
    T = top_singular(J, 3, method="randomized", oversample=2, power_iters=0, seed=1)
    exact = np.linalg.svd(J, compute_uv=False)[..., :3]
    np.testing.assert_allclose(T.S, exact, rtol=1e-12)
    assert np.all(triplet_residual(J, T) <= 1e-12 * exact[..., :1])


def test_randomized_full_width_sketch_is_exact_on_flat_spectrum():
    rng = np.random.default_rng(6)
    J = rng.standard_normal((2, 15, 12))
    T = top_singular(J, 3, method="randomized", oversample=20, seed=0)  # l = min(m, n)
    np.testing.assert_allclose(T.S, np.linalg.svd(J, compute_uv=False)[..., :3], rtol=1e-12)


def test_randomized_deterministic_and_batch_consistent():
    J, _ = _make("gaussian", (3,), 40, 30, seed=2)
    a = top_singular(J, 4, method="randomized", oversample=3, power_iters=1, seed=7)
    b = top_singular(J, 4, method="randomized", oversample=3, power_iters=1, seed=7)
    c = top_singular(J, 4, method="randomized", oversample=3, power_iters=1, seed=8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    # unconverged on a flat spectrum, so another sketch gives other values
    assert not np.allclose(a.S, c.S, rtol=1e-10)
    # the sketch is shared by the stack: a matrix alone gives its triplets in the stack
    single = top_singular(J[1], 4, method="randomized", oversample=3, power_iters=1, seed=7)
    for x, y in zip(single, a):
        np.testing.assert_allclose(x, y[1], rtol=1e-9, atol=1e-11)
    # a Generator seed works and is consumed like an int seed
    g = top_singular(J, 4, method="randomized", oversample=3, power_iters=1, seed=np.random.default_rng(7))
    np.testing.assert_array_equal(g.S, a.S)


def test_more_power_iterations_reduce_the_error():
    J, s = _make("decaying", (4,), 80, 80, seed=9, rho=0.9)
    errs = []
    for q in (0, 1, 3):
        T = top_singular(J, 5, method="randomized", oversample=2, power_iters=q, seed=0)
        errs.append(float(np.max(np.abs(T.S - s[..., :5]) / s[..., :1])))
    assert errs[0] > errs[1] > errs[2]


def test_randomized_flat_spectrum_small_budget_is_not_converged():
    """A documented limitation, checked so the docs stay honest: on flat spectra a
    fixed small budget does not reach the residual test."""
    J, _ = _make("gaussian", (2,), 120, 120, seed=4)
    T = top_singular(J, 10, method="randomized", oversample=2, power_iters=1, seed=0)
    assert np.max(triplet_residual(J, T) / T.S[..., :1]) > SQRT_EPS


# ----------------------------------------------------------------------------- auto


@given(cases(max_dim=48))
def test_auto_is_certified_on_every_spectrum(case):
    batch, m, n, k, kind, seed = case
    J, s = _make(kind, batch, m, n, seed)
    T = top_singular(J, k, seed=0)
    _check_structure(J, T, k)
    scale = s[..., :1]
    assert np.all(triplet_residual(J, T) <= 1.01 * SQRT_EPS * scale + 1e-13 * scale + 1e-300)
    _values_check(T, s, J)
    _projector_gap_check(J, T, s)


def test_auto_uses_svd_for_small_or_wide_sketches():
    J, _ = _make("gaussian", (2,), 30, 40, seed=0)
    for x, y in zip(top_singular(J, 3), top_singular(J, 3, method="svd")):
        np.testing.assert_array_equal(x, y)
    J, _ = _make("gaussian", (2,), 60, 70, seed=0)  # 4 * (5 + 10) > 60
    for x, y in zip(top_singular(J, 5), top_singular(J, 5, method="svd")):
        np.testing.assert_array_equal(x, y)


def test_auto_randomized_with_per_matrix_exact_fallback():
    """One easy (low-rank) and one hard (flat) matrix in a stack: the easy one keeps
    its randomized triplets, the hard one is recomputed exactly."""
    rng = np.random.default_rng(11)
    m = n = 200
    easy = rng.standard_normal((m, 3)) @ rng.standard_normal((3, n))
    hard = rng.standard_normal((m, n))
    J = np.stack([easy, hard])
    T = top_singular(J, 5, oversample=10, power_iters=1, seed=0)
    R = top_singular(J, 5, method="randomized", oversample=10, power_iters=1, seed=0)
    E = top_singular(J, 5, method="svd")
    for x, y in zip(T, R):
        np.testing.assert_array_equal(x[0], y[0])
    for x, y in zip(T, E):
        np.testing.assert_array_equal(x[1], y[1])
    assert np.max(triplet_residual(hard, TopSingular(*(a[1] for a in R)))) > SQRT_EPS * R.S[1, 0]
    # default power_iters="auto": the hard matrix is given up on early, same final answer
    D = top_singular(J, 5, seed=0)
    for x, y in zip(D, E):
        np.testing.assert_array_equal(x[1], y[1])
    np.testing.assert_allclose(D.S[0], E.S[0], rtol=1e-12, atol=1e-12 * E.S[0, 0])
    assert np.all(triplet_residual(easy, TopSingular(*(a[0] for a in D))) <= SQRT_EPS * D.S[0, 0])


def test_auto_jacobian_like_matches_svd_at_moderate_size():
    rng = np.random.default_rng(12)
    d = 160
    s = np.concatenate([0.8 ** np.arange(8), 0.01 * np.exp(-np.arange(d - 8) / 40)])
    U, V = _haar(rng, (3,), d), _haar(rng, (3,), d)
    J = (U * s) @ _mT(V)
    T = top_singular(J, 8, seed=0)
    np.testing.assert_allclose(T.S, np.broadcast_to(s[:8], (3, 8)), rtol=1e-12)
    Tsvd = top_singular(J, 8, method="svd")
    np.testing.assert_allclose(T.U, Tsvd.U, atol=1e-6)
    np.testing.assert_allclose(T.V, Tsvd.V, atol=1e-6)
    _projector_gap_check(J, T, np.broadcast_to(s, (3, d)))


# ----------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("method", METHODS)
def test_float32_kept_and_accurate(method):
    J, s = _make("decaying", (2,), 50, 45, seed=1)
    J32 = J.astype(np.float32)
    T = top_singular(J32, 4, method=method, seed=0)
    _check_structure(J32, T, 4, dtype=np.float32)
    eps32 = np.finfo(np.float32).eps
    np.testing.assert_allclose(T.S, s[..., :4], rtol=200 * eps32 * 50)


@pytest.mark.parametrize("method", METHODS)
def test_integer_and_bool_input_become_float64(method):
    rng = np.random.default_rng(2)
    J = rng.integers(-5, 6, size=(2, 12, 9))
    T = top_singular(J, 3, method=method, seed=0)
    assert T.S.dtype == np.float64
    np.testing.assert_allclose(T.S, top_singular(J.astype(np.float64), 3, method="svd").S, rtol=1e-10)
    Tb = top_singular(J > 0, 2, method=method, seed=0)
    np.testing.assert_allclose(Tb.S, np.linalg.svd((J > 0).astype(float), compute_uv=False)[..., :2], rtol=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_input_not_mutated(method):
    J, _ = _make("decaying", (2,), 40, 40, seed=0)
    before = J.copy()
    top_singular(J, 3, method=method, seed=0)
    np.testing.assert_array_equal(J, before)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"k": 0}, ValueError, r"k must be in \[1, 4\]"),
        ({"k": 5}, ValueError, r"k must be in \[1, 4\]"),
        ({"k": 2.0}, TypeError, "k must be an integer"),
        ({"k": 2, "method": "lanczos"}, ValueError, r"method must be one of \('auto', 'svd', 'gram', 'randomized'\)"),
        ({"k": 2, "oversample": -1}, ValueError, "oversample must be >= 0"),
        ({"k": 2, "power_iters": -1}, ValueError, "power_iters must be >= 0"),
        ({"k": 2, "power_iters": "many"}, ValueError, "power_iters must be 'auto' or an integer"),
        ({"k": 2, "power_iters": 1.5}, TypeError, "power_iters must be an integer"),
        ({"k": 2, "tol": 0.0}, ValueError, r"tol must be in \(0, 1\]"),
        ({"k": 2, "tol": "x"}, TypeError, "tol must be a real number"),
        ({"k": 2, "seed": -3, "method": "randomized"}, ValueError, "seed must be a non-negative integer"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    J = np.ones((3, 5, 4))
    with pytest.raises(exc, match=match):
        top_singular(J, **kwargs)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_rejected(method, bad):
    J = np.ones((2, 4, 4))
    J[1, 2, 3] = bad
    with pytest.raises(ValueError, match="J must be finite"):
        top_singular(J, 2, method=method)


def test_bad_array_input():
    with pytest.raises(ValueError, match="ndim >= 2"):
        top_singular(np.ones(4), 1)
    with pytest.raises(TypeError, match="real"):
        top_singular(np.ones((3, 3), dtype=complex), 1)
    with pytest.raises(TypeError, match="expected an array"):
        top_singular([[1.0, 0.0], [0.0, 1.0]], 1)


# ----------------------------------------------------------------------------- operator


def _ops(J, counter=None):
    def matvec(X):
        if counter is not None:
            counter["mv"] += 1
        return J @ X

    def rmatvec(Y):
        if counter is not None:
            counter["rmv"] += 1
        return _mT(J) @ Y

    return matvec, rmatvec


@pytest.mark.parametrize("power_iters", [0, 2, "auto"])
def test_operator_equals_dense_randomized(power_iters):
    J, _ = _make("decaying", (2, 3), 45, 35, seed=4, rho=0.7)
    mv, rmv = _ops(J)
    # method="randomized": the subspace iteration (issue 20 made block Krylov the default
    # for power_iters="auto"; tests/test_spectra_peers.py checks that one against the SVD)
    T = top_singular_operator(mv, rmv, J.shape, 4, oversample=5, power_iters=power_iters, seed=3,
                              method="randomized")
    D = top_singular(J, 4, method="randomized", oversample=5, power_iters=power_iters, seed=3)
    for x, y in zip(T, D):
        np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-12)


def test_operator_call_count_is_independent_of_batch():
    """Blocks of vectors, never a loop over matrices or columns: 2q + 2 products."""
    for batch in ((1,), (6,), (2, 3)):
        J, _ = _make("gaussian", batch, 30, 20, seed=0)
        counter = {"mv": 0, "rmv": 0}
        top_singular_operator(*_ops(J, counter), J.shape, 3, oversample=2, power_iters=2, seed=0)
        assert counter == {"mv": 3, "rmv": 3}


def test_operator_converges_on_low_rank_plus_noise():
    rng = np.random.default_rng(8)
    J = rng.standard_normal((3, 90, 6)) @ rng.standard_normal((3, 6, 70)) + 1e-6 * rng.standard_normal((3, 90, 70))
    T = top_singular_operator(*_ops(J), J.shape, 6, seed=0)
    ref = np.linalg.svd(J, compute_uv=False)[..., :6]
    np.testing.assert_allclose(T.S, ref, rtol=1e-10)
    assert np.all(triplet_residual(J, T) <= SQRT_EPS * ref[..., :1])


def test_operator_infers_namespace_from_first_product():
    xs = pytest.importorskip("array_api_strict")
    J, s = _make("decaying", (2,), 30, 25, seed=1)
    Js = xs.asarray(J)
    seen = []

    def matvec(X):
        seen.append(type(X).__module__.split(".")[0])
        if isinstance(X, np.ndarray):  # first call: host block, moved by the wrapper
            X = xs.asarray(X)
        return Js @ X

    def rmatvec(Y):
        return xs.matrix_transpose(Js) @ Y

    T = top_singular_operator(matvec, rmatvec, (2, 30, 25), 3, seed=0)
    assert seen[0] == "numpy" and set(seen[1:]) == {"array_api_strict"}
    assert type(T.S).__module__.startswith("array_api_strict")
    np.testing.assert_allclose(np.asarray(T.S), s[..., :3], rtol=1e-10)


def test_operator_bad_input():
    J = np.ones((2, 6, 5))
    mv, rmv = _ops(J)
    with pytest.raises(TypeError, match="callables"):
        top_singular_operator(J, rmv, J.shape, 2)
    with pytest.raises(ValueError, match="at least 2 entries"):
        top_singular_operator(mv, rmv, (6,), 1)
    with pytest.raises(TypeError, match="shape must be a tuple"):
        top_singular_operator(mv, rmv, 6, 1)
    with pytest.raises(ValueError, match=r"k must be in \[1, 5\]"):
        top_singular_operator(mv, rmv, J.shape, 6)
    with pytest.raises(ValueError, match="dtype must be one of"):
        top_singular_operator(mv, rmv, J.shape, 2, dtype="int32")
    with pytest.raises(ValueError, match=r"matvec must return an array of shape \(2, 6, 5\)"):
        top_singular_operator(lambda X: X, rmv, J.shape, 2)
    with pytest.raises(ValueError, match=r"rmatvec must return an array of shape \(2, 5, 5\)"):
        top_singular_operator(mv, lambda Y: Y, J.shape, 2)
    with pytest.raises(ValueError, match="matvec\\(X\\) must be finite"):
        top_singular_operator(lambda X: np.full((2, 6, X.shape[-1]), np.nan), rmv, J.shape, 2)


def test_operator_float32_blocks():
    J, s = _make("decaying", (2,), 40, 30, seed=2)
    J32 = J.astype(np.float32)
    T = top_singular_operator(*_ops(J32), J.shape, 3, seed=0, dtype="float32")
    assert T.S.dtype == np.float32
    np.testing.assert_allclose(T.S, s[..., :3], rtol=1e-4)


# ----------------------------------------------------------------------------- residual helper


def test_triplet_residual_closed_form():
    J, s = _make("decaying", (3,), 12, 10, seed=0)
    T = top_singular(J, 4, method="svd")
    scaled = TopSingular(T.U, 1.1 * T.S, T.V)
    # J v = s u and J^T u = s v, so each side is exactly 0.1 s_i
    np.testing.assert_allclose(triplet_residual(J, scaled, side="right"), 0.1 * s[..., :4], rtol=1e-10)
    np.testing.assert_allclose(triplet_residual(J, scaled, side="left"), 0.1 * s[..., :4], rtol=1e-10)
    np.testing.assert_allclose(triplet_residual(J, scaled), math.sqrt(2) * 0.1 * s[..., :4], rtol=1e-10)


def test_triplet_residual_bad_input():
    J = np.eye(3)
    T = top_singular(J, 2)
    with pytest.raises(ValueError, match="side must be one of"):
        triplet_residual(J, T, side="up")
    with pytest.raises(ValueError, match="shapes do not match"):
        triplet_residual(np.eye(4), T)


def test_fix_signs_and_to_dict():
    U = np.array([[0.6, -0.8], [-0.8, -0.6]])
    V = np.eye(2)
    U2, V2 = fix_signs(U, V, np)
    np.testing.assert_array_equal(U2, [[-0.6, 0.8], [0.8, 0.6]])
    np.testing.assert_array_equal(V2, [[-1.0, 0.0], [0.0, -1.0]])
    np.testing.assert_array_equal(U, [[0.6, -0.8], [-0.8, -0.6]])  # not mutated
    T = top_singular(np.diag([2.0, 1.0]), 1)
    assert set(T.to_dict()) == {"U", "S", "V"} and T.to_dict()["S"] is T.S


# ----------------------------------------------------------------------------- array-API


@pytest.mark.parametrize("method", METHODS)
def test_array_api_strict_matches_numpy(method):
    xs = pytest.importorskip("array_api_strict")
    J, _ = _make("decaying", (2,), 70, 60, seed=3, rho=0.6)
    Ts = top_singular(xs.asarray(J), 4, method=method, seed=0)
    Tn = top_singular(J, 4, method=method, seed=0)
    for a, b in zip(Ts, Tn):
        assert type(a).__module__.startswith("array_api_strict")
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-9, atol=1e-11)
    res = triplet_residual(xs.asarray(J), Ts)
    assert type(res).__module__.startswith("array_api_strict")


def test_array_api_strict_auto_fallback_and_operator():
    xs = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(4)
    J = np.stack([rng.standard_normal((150, 2)) @ rng.standard_normal((2, 140)), rng.standard_normal((150, 140))])
    Js = xs.asarray(J)
    T = top_singular(Js, 3, power_iters=1, seed=0)
    np.testing.assert_allclose(np.asarray(T.S), np.linalg.svd(J, compute_uv=False)[..., :3], rtol=1e-10, atol=1e-12)
    To = top_singular_operator(
        lambda X: Js @ X, lambda Y: xs.matrix_transpose(Js) @ Y, J.shape, 2, xp=xs, seed=0
    )
    np.testing.assert_allclose(np.asarray(To.S)[0], np.linalg.svd(J[0], compute_uv=False)[:2], rtol=1e-10)


# ----------------------------------------------------------------------------- GPU


def _cupy_or_skip():
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install
        pytest.skip(f"CuPy is not importable ({type(exc).__name__}: {exc})")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("CuPy imported but CUDA reports no GPU")
    except Exception as exc:
        pytest.skip(f"CuPy imported but no usable GPU ({type(exc).__name__}: {exc})")
    return cupy


@pytest.mark.gpu
@pytest.mark.parametrize("method", METHODS)
def test_cupy_matches_numpy(method):
    cp = _cupy_or_skip()
    J, s = _make("decaying", (4,), 80, 70, seed=0, rho=0.6)
    T = top_singular(cp.asarray(J), 5, method=method, seed=0)
    assert all(isinstance(a, cp.ndarray) for a in T)
    np.testing.assert_allclose(cp.asnumpy(T.S), s[..., :5], rtol=1e-10)
    Tn = top_singular(J, 5, method="svd")
    np.testing.assert_allclose(cp.asnumpy(T.U), Tn.U, atol=1e-8)
    res = cp.asnumpy(triplet_residual(cp.asarray(J), T))
    assert np.all(res <= 1.01 * SQRT_EPS * s[..., :1])


@pytest.mark.gpu
def test_cupy_operator_and_fallback():
    cp = _cupy_or_skip()
    rng = np.random.default_rng(1)
    J = np.stack([rng.standard_normal((200, 3)) @ rng.standard_normal((3, 180)), rng.standard_normal((200, 180))])
    Jc = cp.asarray(J)
    T = top_singular(Jc, 4, power_iters=1, seed=0)
    np.testing.assert_allclose(cp.asnumpy(T.S), np.linalg.svd(J, compute_uv=False)[..., :4], rtol=1e-9)
    To = top_singular_operator(lambda X: Jc @ cp.asarray(X), lambda Y: Jc.swapaxes(-1, -2) @ Y, J.shape, 3, seed=0)
    assert isinstance(To.S, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(To.S)[0], np.linalg.svd(J[0], compute_uv=False)[:3], rtol=1e-10)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("factor", [1e-200, 1e200])
def test_extreme_scales_neither_overflow_nor_underflow(method, factor):
    """Gram squares J and residuals square errors: both work on scaled copies."""
    J, s = _make("decaying", (2,), 60, 50, seed=7)
    T = top_singular(J * factor, 4, method=method, seed=0)
    assert all(np.all(np.isfinite(a)) for a in T)
    np.testing.assert_allclose(T.S / factor, s[..., :4], rtol=1e-10)
    Tref = top_singular(J, 4, method="svd")
    np.testing.assert_allclose(T.U, Tref.U, atol=1e-7)
    res = triplet_residual(J * factor, T)
    assert np.all(np.isfinite(res)) and np.all(res <= SQRT_EPS * factor * s[..., :1])


def test_operator_non_finite_later_block_is_named():
    J = np.random.default_rng(0).standard_normal((2, 30, 20))
    mv, _ = _ops(J)
    with pytest.raises(ValueError, match=r"rmatvec\(Y\) must be finite"):
        top_singular_operator(mv, lambda Y: np.full((2, 20, Y.shape[-1]), np.inf), J.shape, 2, oversample=2)
