"""Tests of the certified block Krylov path of ramodel.spectra (issue 20), and of float16 input.

``top_singular(method="auto", power_iters="auto")`` runs block Golub-Kahan-Lanczos
(``ramodel.spectra._GKL``) when ``min(m, n) > 32`` and ``4 (k + oversample) <= min(m, n)``;
``top_singular_operator(method="krylov")`` does the same on products (no fallback). Every result is
compared with ``numpy.linalg.svd`` (float64) on spectra built in closed form: decaying,
gapless, gapped, rank-deficient (with ``k`` above the rank), clustered, flat (where the
certificate must fail and the exact fallback take over), and a stack mixing them.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import ramodel.spectra as sp
from ramodel.spectra import (
    TopSingular,
    top_singular,
    top_singular_operator,
    triplet_residual,
)

EPS = np.finfo(np.float64).eps
SQRT_EPS = math.sqrt(EPS)


def _mT(x):
    return np.swapaxes(x, -1, -2)


@pytest.fixture(autouse=True)
def _batched_path_only(monkeypatch):
    """These tests are about the batched block Krylov (``_GKL``); the thin-block path that
    NumPy runs first on large matrices has its own tests in ``test_lanczos.py``."""
    monkeypatch.setattr(sp, "_THIN_LANCZOS", False)


def _haar(rng, batch, d):
    Q, R = np.linalg.qr(rng.standard_normal(batch + (d, d)))
    return Q * np.sign(np.diagonal(R, axis1=-2, axis2=-1))[..., None, :]


def _spectrum(kind, r):
    i = np.arange(r)
    if kind == "gapless":
        return np.exp(-i / 8)
    if kind == "gapped":
        return np.concatenate([np.linspace(1, 0.5, 10), 0.05 * np.exp(-np.arange(r - 10) / 30)])[:r]
    if kind == "decaying":
        return 0.7**i
    if kind == "rank3":
        s = np.zeros(r)
        s[:3] = [2.0, 1.0, 0.5]
        return s
    if kind == "zero":
        return np.zeros(r)
    if kind == "clustered":
        s = 0.3 * 0.6**i
        s[:4] = 1.0 + 1e-12 * np.arange(4)[::-1]
        return s
    raise ValueError(kind)


def _make(kinds, m, n, seed=0):
    """A stack, one matrix per entry of ``kinds``; ``"flat"`` is a Gaussian matrix."""
    rng = np.random.default_rng(seed)
    r = min(m, n)
    out = []
    for kind in kinds:
        if kind == "flat":
            out.append(rng.standard_normal((m, n)) / math.sqrt(max(m, n)))
            continue
        s = _spectrum(kind, r)
        U = _haar(rng, (), m)[:, :r]
        V = _haar(rng, (), n)[:, :r]
        out.append((U * s) @ V.T)
    return np.stack(out)


class _Spy:
    """Counts the block Krylov runs (and their products) while installed."""

    def __init__(self, monkeypatch):
        self.runs = 0
        self.passes = []
        orig = sp._GKL.run

        def run(gkl, first=None):
            out = orig(gkl, first)
            self.runs += 1
            self.passes.append(gkl.passes)
            return out

        monkeypatch.setattr(sp._GKL, "run", run)


def _check_against_svd(J, T, k, *, tol=SQRT_EPS):
    """Structure, certificate and agreement with numpy.linalg.svd."""
    m, n = J.shape[-2:]
    assert T.U.shape == J.shape[:-2] + (m, k) and T.V.shape == J.shape[:-2] + (n, k)
    assert T.S.shape == J.shape[:-2] + (k,)
    eye = np.eye(k)
    assert np.max(np.abs(_mT(T.U) @ T.U - eye)) <= 1e3 * EPS
    assert np.max(np.abs(_mT(T.V) @ T.V - eye)) <= 1e3 * EPS
    assert np.all(np.diff(T.S, axis=-1) <= 0) and np.all(T.S >= 0)
    idx = np.argmax(np.abs(T.U), axis=-2)[..., None, :]
    assert np.all(np.take_along_axis(T.U, idx, axis=-2) > 0)  # sign convention
    s_ref = np.linalg.svd(J, compute_uv=False)
    s1 = s_ref[..., :1]
    res = triplet_residual(J, T)
    # the certificate: right residual <= tol s_1 and left ~ rounding, so combined <= ~tol s_1
    assert np.all(res <= 1.01 * tol * s1 + 1e3 * EPS * s1 + 1e-300), np.max(res / (s1 + 1e-300))
    # some singular value within res / sqrt(2) of each S_i; top-k values to first order
    assert np.all(np.abs(T.S - s_ref[..., :k]) <= tol * s1 + 1e3 * EPS * s1 + 1e-300)
    return s_ref


# ----------------------------------------------------------------------------- dense Krylov


@pytest.mark.parametrize("kind", ["gapless", "gapped", "decaying", "clustered"])
@pytest.mark.parametrize("shape", [(96, 96), (120, 80), (70, 130)])
def test_krylov_matches_svd(kind, shape, monkeypatch):
    spy = _Spy(monkeypatch)
    m, n = shape
    J = _make([kind] * 3, m, n, seed=1)
    k = 6
    T = top_singular(J, k, oversample=4)
    assert spy.runs >= 1  # the block Krylov path ran
    s_ref = _check_against_svd(J, T, k)
    if kind != "clustered":  # well separated: vectors agree with the SVD's to ~res / gap
        U0, _, V0h = np.linalg.svd(J, full_matrices=False)
        gap = np.min(s_ref[:, : k] - s_ref[:, 1 : k + 1])
        bound = 10 * SQRT_EPS * s_ref[:, 0].max() / gap + 1e-12
        np.testing.assert_allclose(np.abs(_mT(T.U) @ U0[..., :k]), np.broadcast_to(np.eye(k), (3, k, k)),
                                   atol=bound)
        np.testing.assert_allclose(np.abs(_mT(T.V) @ _mT(V0h)[..., :k]), np.broadcast_to(np.eye(k), (3, k, k)),
                                   atol=bound)


def test_krylov_gapped_values_exact_to_rounding():
    J = _make(["gapped"] * 2, 128, 128, seed=2)
    T = top_singular(J, 10, oversample=2)
    np.testing.assert_allclose(T.S, np.broadcast_to(_spectrum("gapped", 128)[:10], (2, 10)), rtol=1e-12)


@pytest.mark.parametrize("kind", ["rank3", "zero"])
def test_krylov_rank_deficient_and_k_above_rank(kind, monkeypatch):
    """k = 8 > rank: the bases are exhausted after one block; U, V stay orthonormal,
    the values beyond the rank are ~0, and no NaN appears."""
    spy = _Spy(monkeypatch)
    J = _make([kind] * 2, 80, 72, seed=3)
    T = top_singular(J, 8, oversample=2)
    assert spy.runs >= 1
    assert all(np.all(np.isfinite(a)) for a in T)
    _check_against_svd(J, T, 8)
    assert np.all(T.S[:, 3:] <= 1e-12 * max(1.0, float(np.max(T.S))))


def test_krylov_mixed_batch_falls_back_per_matrix(monkeypatch):
    """Easy and flat matrices in one stack, across chunk boundaries: the flat ones fail
    the certificate and get the exact SVD; the easy ones keep their Krylov triplets."""
    monkeypatch.setattr(sp, "_CHUNK_BYTES", 3 * 96 * 96 * 8)  # 3 matrices a chunk
    kinds = ["gapped", "flat", "gapless", "decaying", "flat", "rank3", "gapped"]
    J = _make(kinds, 96, 96, seed=4)
    k = 6
    T = top_singular(J, k, oversample=2)
    _check_against_svd(J, T, k)
    E = top_singular(J, k, method="svd")
    for i, kind in enumerate(kinds):
        if kind == "flat":  # the exact fallback, bit for bit
            for x, y in zip(T, E):
                np.testing.assert_array_equal(x[i], y[i])
    # a matrix gives the same triplets alone as inside the stack (shared start block)
    alone = top_singular(J[2], k, oversample=2)
    for x, y in zip(alone, T):
        np.testing.assert_allclose(x, y[2], rtol=1e-9, atol=1e-10)


def test_certificate_failure_falls_back_to_exact(monkeypatch):
    """If the explicit certificate fails (here: forced), every matrix gets the exact SVD."""
    orig = sp._GKL._certify

    def failing(self, X, S, Y, Dq, Dp):
        U, V, ok = orig(self, X, S, Y, Dq, Dp)
        return U, V, ok & False

    monkeypatch.setattr(sp._GKL, "_certify", failing)
    J = _make(["gapped", "decaying"], 96, 96, seed=5)
    T = top_singular(J, 5, oversample=2)
    E = top_singular(J, 5, method="svd")
    for x, y in zip(T, E):
        np.testing.assert_array_equal(x, y)


def test_certificate_uses_true_residuals_and_orthogonality():
    """_GKL's certificate recomputes residuals from the stored products: an estimate
    that lies (a wrong R factor) cannot pass a non-converged matrix."""
    rng = np.random.default_rng(6)
    J = rng.standard_normal((2, 80, 80))  # flat: far from converged after 2 blocks
    P1 = sp._start_block(80, 6, 0, np.float64)
    g = sp._GKL(J, None, None, P1, 4, 3, SQRT_EPS, np, compact=True)
    orig_check = g._check

    def lying_check(Dq, Dp, E_of, left):
        return orig_check(Dq, Dp, lambda X, Y: 0.0 * E_of(X, Y), left)

    g._check = lying_check
    results = g.run()
    ok = np.concatenate([r[4] for r in results])
    assert not ok.any()


def test_flat_stack_gives_up_and_is_exact(monkeypatch):
    spy = _Spy(monkeypatch)
    J = _make(["flat"] * 2, 100, 100, seed=7)
    T = top_singular(J, 5, oversample=2)
    E = top_singular(J, 5, method="svd")
    for x, y in zip(T, E):
        np.testing.assert_array_equal(x, y)
    smax = 100 // 4 // 7
    assert spy.runs == 1 and spy.passes[0] <= 2 * smax * max(1, sp._DENSE_PASS_FACTOR) + 1


def test_krylov_batch_shapes_float32_and_seed():
    J = _make(["decaying"] * 6, 64, 60, seed=8).reshape(2, 3, 64, 60)
    T = top_singular(J, 4, oversample=2)
    _check_against_svd(J, T, 4)
    T2 = top_singular(J, 4, oversample=2)
    for x, y in zip(T, T2):
        np.testing.assert_array_equal(x, y)  # deterministic for the default seed
    J32 = J.astype(np.float32)
    T32 = top_singular(J32, 4, oversample=2)
    assert all(a.dtype == np.float32 for a in T32)
    np.testing.assert_allclose(T32.S, T.S, rtol=1e-4)
    tol32 = math.sqrt(np.finfo(np.float32).eps)
    assert np.all(triplet_residual(J32, T32) <= 1.1 * tol32 * T32.S[..., :1])


def test_krylov_non_finite_is_refused():
    J = _make(["decaying"] * 3, 64, 64, seed=9)
    for bad in (np.nan, np.inf):
        Jb = J.copy()
        Jb[2, 5, 7] = bad
        with pytest.raises(ValueError, match="J must be finite"):
            top_singular(Jb, 4, oversample=2)


def test_krylov_input_not_mutated():
    J = _make(["gapless"] * 2, 64, 64, seed=10)
    before = J.copy()
    top_singular(J, 4, oversample=2)
    np.testing.assert_array_equal(J, before)


def test_krylov_tiny_and_one_by_one_use_exact():
    for J in (np.array([[3.0]]), np.ones((2, 1, 1)) * 2.0, np.random.default_rng(0).standard_normal((2, 5, 3))):
        k = 1
        T = top_singular(J, k)
        np.testing.assert_allclose(T.S, np.linalg.svd(J, compute_uv=False)[..., :k], rtol=1e-14)


def test_array_api_strict_krylov():
    xs = pytest.importorskip("array_api_strict")
    J = _make(["gapless", "flat", "decaying"], 64, 60, seed=11)
    Ts = top_singular(xs.asarray(J), 4, oversample=2)
    Tn = top_singular(J, 4, oversample=2)
    for a, b in zip(Ts, Tn):
        assert type(a).__module__.startswith("array_api_strict")
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-9, atol=1e-11)


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


@pytest.mark.parametrize("kind", ["gapless", "gapped", "rank3"])
def test_operator_krylov_matches_svd(kind):
    J = _make([kind] * 4, 90, 80, seed=12).reshape(2, 2, 90, 80)
    counter = {"mv": 0, "rmv": 0}
    T = top_singular_operator(*_ops(J, counter), J.shape, 5, oversample=2, method="krylov")
    _check_against_svd(J, T, 5)
    # one product per block of the whole batch, never a loop over matrices
    assert counter["mv"] + counter["rmv"] <= 2 * 32 + 1


def test_operator_krylov_uncertified_without_fallback():
    """A flat spectrum cannot be certified matrix-free: the last Ritz triplets come back
    (orthonormal, Rayleigh-Ritz values below the true ones), as documented."""
    J = _make(["flat"] * 2, 120, 120, seed=13)
    T = top_singular_operator(*_ops(J), J.shape, 4, oversample=2, method="krylov")
    s_ref = np.linalg.svd(J, compute_uv=False)[..., :4]
    assert np.all(T.S <= s_ref + 1e-12)
    assert np.max(np.abs(_mT(T.U) @ T.U - np.eye(4))) <= 1e3 * EPS


def test_operator_krylov_array_api_strict():
    xs = pytest.importorskip("array_api_strict")
    J = _make(["decaying"] * 2, 64, 60, seed=14)
    Js = xs.asarray(J)
    T = top_singular_operator(lambda X: Js @ xs.asarray(X), lambda Y: xs.matrix_transpose(Js) @ Y,
                              J.shape, 3, oversample=2, method="krylov")
    assert type(T.S).__module__.startswith("array_api_strict")
    np.testing.assert_allclose(np.asarray(T.S), np.linalg.svd(J, compute_uv=False)[..., :3], rtol=1e-12)


def test_operator_method_randomized_and_bad_method():
    J = _make(["decaying"] * 2, 64, 60, seed=15)
    T = top_singular_operator(*_ops(J), J.shape, 3, oversample=2, method="randomized")
    D = top_singular(J, 3, method="randomized", oversample=2)
    for x, y in zip(T, D):
        np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match=r"method must be one of \('randomized', 'krylov'\)"):
        top_singular_operator(*_ops(J), J.shape, 3, method="svd")


# ----------------------------------------------------------------------------- float16 (issue 17)


@pytest.mark.parametrize("method", sp.METHODS)
def test_float16_computed_in_float32_with_warning(method):
    J = _make(["decaying"] * 2, 64, 60, seed=16).astype(np.float16)
    with pytest.warns(UserWarning, match="float16.*computing in float32"):
        T = top_singular(J, 3, method=method, oversample=2)
    assert all(a.dtype == np.float32 for a in T)
    ref = np.linalg.svd(J.astype(np.float32), compute_uv=False)[..., :3]
    np.testing.assert_allclose(T.S, ref, rtol=5e-3)


def test_float32_and_float64_do_not_warn():
    J = _make(["decaying"], 64, 60, seed=17)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        top_singular(J, 3)
        top_singular(J.astype(np.float32), 3)


def test_result_is_a_topsingular():
    J = _make(["decaying"], 64, 60, seed=18)
    assert isinstance(top_singular(J, 3, oversample=2), TopSingular)


@pytest.mark.parametrize("kind", ["gapless", "decaying"])
def test_operator_krylov_thick_restarts(kind, monkeypatch):
    """Bases capped at 3 blocks: thick restarts (compression to the best Ritz vectors)
    keep the result certified and equal to the SVD's."""
    monkeypatch.setattr(sp, "_OPERATOR_RESTART_BLOCKS", 3)
    restarts = []
    orig = sp._GKL._restart

    def counting(self, Dq, Dp):
        restarts.append((Dq, Dp))
        return orig(self, Dq, Dp)

    monkeypatch.setattr(sp._GKL, "_restart", counting)
    J = _make([kind] * 3, 100, 90, seed=19)
    T = top_singular_operator(*_ops(J), J.shape, 4, oversample=2, method="krylov")
    assert restarts  # the restart path ran
    _check_against_svd(J, T, 4)


# ----------------------------------------------------------------------------- check schedule (issue 20, pass 2)


def _schedule_stub(hist, passes, tol, finished):
    g = object.__new__(sp._GKL)
    g.hist, g.passes, g.tol, g.finished, g.xp = hist, passes, tol, np.asarray(finished, dtype=bool), np
    return g


def test_check_step_follows_the_pace_of_the_fastest_live_matrix(monkeypatch):
    monkeypatch.setattr(sp, "_CHECK_SAFETY", 1.0)
    tol = 1e-8
    # no pace yet: the next product with J^T
    assert _schedule_stub([(2, np.array([1.0]))], 2, tol, [False])._check_step(np.array([1.0])) == 2
    # 1e-2 -> 1e-4 over two products: a decade per product, four decades left -> 4 products
    hist = [(2, np.array([1e-2, 1e-2])), (4, np.array([1e-4, 1e-3]))]
    assert _schedule_stub(hist, 4, tol, [False, False])._check_step(hist[-1][1]) == 4
    # the fast matrix finished: the slow one (half a decade per product, 5 left) sets the pace
    assert _schedule_stub(hist, 4, tol, [True, False])._check_step(hist[-1][1]) == 10
    # stagnation, or every matrix below tol: check at once or after the default step
    stag = [(2, np.array([1e-3])), (4, np.array([2e-3]))]
    assert _schedule_stub(stag, 4, tol, [False])._check_step(stag[-1][1]) == 2
    low = [(2, np.array([1e-3])), (4, np.array([1e-9]))]
    assert _schedule_stub(low, 4, tol, [False])._check_step(low[-1][1]) == 1
    monkeypatch.setattr(sp, "_CHECK_SAFETY", 2.0)
    assert _schedule_stub(hist, 4, tol, [False, False])._check_step(hist[-1][1]) == 2


@pytest.mark.parametrize("safety", [1e-3, 1.0, 1e9])
@pytest.mark.parametrize("kind", ["gapless", "gapped", "decaying"])
def test_check_schedule_never_costs_the_certificate(kind, safety, monkeypatch):
    """Skipping checks (safety 1e-3: only at restarts and the last product), the default,
    or checking after every product (1e9) all give certified triplets matching the SVD."""
    monkeypatch.setattr(sp, "_CHECK_SAFETY", safety)
    spy = _Spy(monkeypatch)
    J = _make([kind] * 3, 160, 160, seed=4)
    T = top_singular(J, 8, oversample=2)
    assert spy.runs >= 1
    _check_against_svd(J, T, 8)


def test_transposed_products_match_plain_products():
    """The dense path's J X is computed as (X^T J^T)^T: same numbers to rounding."""
    J = _make(["gapped"] * 2, 96, 80, seed=5)
    g = sp._GKL(J, None, None, np.eye(80, 6), 5, 2, SQRT_EPS, np, compact=True)
    X = np.random.default_rng(0).standard_normal((2, 80, 6))
    np.testing.assert_allclose(g.matvec(X), J @ X, rtol=0, atol=1e-13)
    Y = np.random.default_rng(1).standard_normal((2, 96, 6))
    np.testing.assert_allclose(g.rmatvec(Y), _mT(J) @ Y, rtol=0, atol=1e-13)
