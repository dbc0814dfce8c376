"""The thin-block Lanczos path of ``top_singular(method="auto")`` on NumPy (ramodel._lanczos).

Every result is compared with ``numpy.linalg.svd`` (the float64 reference). The rules
that send a matrix on to the batched block Krylov are checked where they must fire. The
cluster rule is also shown to be needed: without it the path certifies wrong values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from test_spectra_peers import _check_against_svd, _haar, _make, _mT, _ops

from ramodel import _lanczos
from ramodel import spectra as sp
from ramodel.spectra import top_singular, top_singular_operator, triplet_residual

EPS = np.finfo(np.float64).eps
TOL = math.sqrt(EPS)


class _GKLSpy:
    """Counts the matrices that reach the batched block Krylov."""

    def __init__(self, monkeypatch):
        self.matrices = 0
        orig = sp._gkl_stack

        def gkl_stack(Jf, *args, **kwargs):
            self.matrices += Jf.shape[0]
            return orig(Jf, *args, **kwargs)

        monkeypatch.setattr(sp, "_gkl_stack", gkl_stack)


def _reasons(J, k, *, tol=TOL, cluster_tol=None, seed=0):
    n = J.shape[-1]
    P1T = np.ascontiguousarray(sp._start_block(n, _lanczos.BLOCK, seed, np.float64).T.astype(J.dtype))
    ct = math.sqrt(tol) if cluster_tol is None else cluster_tol
    return [_lanczos.top_k(np.ascontiguousarray(A), k, P1T, tol, cluster_tol=ct) for A in J.reshape((-1,) + J.shape[-2:])]


def _with_spectrum(s, m, n, rng):
    U = _haar(rng, (), m)[:, : len(s)]
    V = _haar(rng, (), n)[:, : len(s)]
    return np.ascontiguousarray((U * s) @ V.T)


# ----------------------------------------------------------------------------- results


@pytest.mark.parametrize("kind", ["gapless", "gapped", "decaying"])
@pytest.mark.parametrize("shape", [(200, 200), (260, 180), (180, 260)])
@pytest.mark.parametrize("k", [1, 2, 6])
def test_thin_path_matches_svd(kind, shape, k, monkeypatch):
    spy = _GKLSpy(monkeypatch)
    m, n = shape
    J = _make([kind] * 3, m, n, seed=1)
    assert _lanczos.applies(m, n, k)
    T = top_singular(J, k)
    assert spy.matrices == 0  # every matrix certified on the thin path
    s_ref = _check_against_svd(J, T, k)
    U0, _, V0h = np.linalg.svd(J, full_matrices=False)
    gap = np.min(s_ref[:, :k] - s_ref[:, 1 : k + 1])
    bound = 10 * TOL * s_ref[:, 0].max() / gap + 1e-12
    eye = np.broadcast_to(np.eye(k), (3, k, k))
    np.testing.assert_allclose(np.abs(_mT(T.U) @ U0[..., :k]), eye, atol=bound)
    np.testing.assert_allclose(np.abs(_mT(T.V) @ _mT(V0h)[..., :k]), eye, atol=bound)


def test_thin_path_certificate_is_the_true_one():
    """The certificate (residuals from the stored products) agrees with the residuals
    recomputed from J, and U is orthonormal to rounding even where s_1 / s_k is large."""
    J = _make(["gapless"] * 2, 512, 512, seed=2)
    k = 40  # s_40 / s_1 = exp(-39 / 8) ~ 8e-3: the unpolished U = J V / s is off by ~1e-11
    out = _reasons(J, k)
    assert [o[4] for o in out] == ["certified"] * 2
    for A, (U, S, V, _, _) in zip(J, out):
        res = np.sqrt(np.sum((A @ V - U * S) ** 2, axis=0) + np.sum((A.T @ U - V * S) ** 2, axis=0))
        assert res.max() <= TOL * S[0]
        assert np.abs(U.T @ U - np.eye(k)).max() <= 1e3 * EPS
        assert np.abs(V.T @ V - np.eye(k)).max() <= 1e3 * EPS
    T = top_singular(J, k)
    _check_against_svd(J, T, k)


@pytest.mark.parametrize("forced_restarts", [False, True])
def test_thin_path_certifies_trained_like_flat_tail(forced_restarts, monkeypatch):
    """A spectrum like the trained-net Jacobians of the benchmark: s_10 / s_11 ~ 1.2 and a
    flat bulk right after. With a basis capped at 16 columns, every run restarts."""
    if forced_restarts:
        monkeypatch.setattr(_lanczos, "sizes", lambda k, r: (16, 12, 600))
    rng = np.random.default_rng(5)
    s = np.concatenate([np.linspace(1.0, 0.057, 10), 0.047 * np.exp(-np.arange(246) / 120)])
    J = np.stack([_with_spectrum(s, 256, 256, rng) for _ in range(2)])
    out = _reasons(J, 10)
    assert [o[4] for o in out] == ["certified"] * 2
    if forced_restarts:
        assert all(o[3] >= 16 + 3 * 4 for o in out)  # products: a restart at 16 columns, then every 4 products
    spy = _GKLSpy(monkeypatch)
    _check_against_svd(J, top_singular(J, 10), 10)
    assert spy.matrices == 0


def test_alone_or_in_a_stack_and_input_not_mutated():
    J = _make(["gapped", "gapless", "decaying"], 200, 200, seed=3)
    J0 = J.copy()
    T = top_singular(J, 5)
    np.testing.assert_array_equal(J, J0)
    for i in range(3):
        Ti = top_singular(J[i], 5)
        np.testing.assert_array_equal(Ti.S, T.S[i])
        np.testing.assert_array_equal(Ti.U, T.U[i])
        np.testing.assert_array_equal(Ti.V, T.V[i])
    T2 = top_singular(J.reshape(3, 1, 200, 200), 5)
    np.testing.assert_array_equal(T2.S[:, 0], T.S)


def test_float32_stays_float32():
    J = _make(["gapped"] * 2, 256, 256).astype(np.float32)
    tol32 = math.sqrt(np.finfo(np.float32).eps)
    assert [o[4] for o in _reasons(J, 10, tol=tol32)] == ["certified"] * 2
    T = top_singular(J, 10)
    assert T.U.dtype == T.S.dtype == T.V.dtype == np.float32
    s_ref = np.linalg.svd(J.astype(np.float64), compute_uv=False)
    assert np.abs(T.S - s_ref[:, :10]).max() <= tol32 * s_ref[:, 0].max()
    assert (triplet_residual(J.astype(np.float64), T) <= 2 * tol32 * s_ref[:, :1]).all()


# ----------------------------------------------------------------------------- the rules


@pytest.mark.parametrize("top", [[3, 2.5, 2, 1, 1, 1], [3, 2.9, 2.8, 2.7, 1, 1, 1], [5, 4, 3, 1, 1, 1, 1]])
def test_cluster_rule_is_needed_and_sends_repeats_on(top, monkeypatch):
    """A value repeated more often than the block has vectors: the Krylov space holds two
    of its copies, so without the rule the path certifies a top-k that misses one."""
    rng = np.random.default_rng(3)
    s = np.concatenate([top, 0.9 * 0.9 ** np.arange(200 - len(top))])
    J = np.stack([_with_spectrum(s, 200, 200, rng) for _ in range(3)])
    k = len(top) + 1
    wrong = [o for o in _reasons(J, k, cluster_tol=0.0) if o[4] == "certified"]
    assert wrong, "expected the unguarded path to certify a wrong top-k on some matrix"
    for o in wrong:
        assert np.abs(o[1] - s[:k]).max() > 0.05  # a copy of 1 is missing
    guarded = [o[4] for o in _reasons(J, k)]
    assert "certified" not in guarded and "cluster" in guarded
    spy = _GKLSpy(monkeypatch)
    T = top_singular(J, k)
    assert spy.matrices == 3
    _check_against_svd(J, T, k)
    np.testing.assert_allclose(T.S, np.broadcast_to(s[:k], (3, k)), atol=1e-12)


def test_hides_copy_rule():
    """Runs of b equal values ending before position k can hide a copy; others cannot."""
    b = 2
    assert _lanczos._hides_copy(np.array([3.0, 2, 2, 1]), b, 4, 1e-6)  # 2 may have a third copy
    assert not _lanczos._hides_copy(np.array([3.0, 2, 1, 1]), b, 4, 1e-6)  # the run reaches k
    assert not _lanczos._hides_copy(np.array([3.0, 2, 1, 0.5]), b, 4, 1e-6)
    assert _lanczos._hides_copy(np.array([1.0, 1 - 1e-8, 0.5]), b, 3, 1e-6)
    assert not _lanczos._hides_copy(np.array([1.0, 1 - 1e-4, 0.5]), b, 3, 1e-6)
    assert not _lanczos._hides_copy(np.array([1.0, 1.0]), b, 2, 1e-6)  # k <= b: never


def test_near_repeats_and_orthogonal_go_to_the_batched_path(monkeypatch):
    J = np.concatenate([_make(["clustered"] * 2, 200, 200, seed=4), _haar(np.random.default_rng(0), (1,), 200)])
    assert [o[4] for o in _reasons(J, 6)] == ["cluster"] * 3
    spy = _GKLSpy(monkeypatch)
    T = top_singular(J, 6)
    assert spy.matrices == 3
    _check_against_svd(J, T, 6)


def test_rank_deficient_zero_and_flat_are_declined_and_exact(monkeypatch):
    """k above the rank (u = J v / s is undefined for s = 0), J = 0, and a Gaussian matrix
    whose flat spectrum stalls: declined, then the batched path and the exact method."""
    J = _make(["rank3", "zero", "flat", "gapped"], 200, 200, seed=6)
    reasons = [o[4] for o in _reasons(J, 6)]
    assert reasons[0] == reasons[1] == "certificate"
    assert reasons[2] == "stalled" and reasons[3] == "certified"
    spy = _GKLSpy(monkeypatch)
    T = top_singular(J, 6)
    assert spy.matrices == 3
    _check_against_svd(J, T, 6)
    assert np.all(T.S[1] == 0) and np.all(T.S[0, 3:] <= 1e-12)


def test_budget_runs_out(monkeypatch):
    monkeypatch.setattr(_lanczos, "sizes", lambda k, r: (20, 10, 8))
    J = _make(["gapless"], 200, 200)
    assert _reasons(J, 6)[0][4] == "budget"
    _check_against_svd(J, top_singular(J, 6), 6)


def test_non_finite_refused_and_extreme_scales_exact(monkeypatch):
    """J^T J over- or underflows far from |J| ~ 1: those matrices are declined, then retried
    once scaled by a power of two, so they stay on the thin path and come back exact."""
    J = _make(["gapped"] * 2, 256, 256)
    for bad in (np.nan, np.inf):
        Jb = J.copy()
        Jb[1, 7, 9] = bad
        with pytest.raises(ValueError, match="J must be finite"):
            top_singular(Jb, 5)
    s_ref = np.linalg.svd(J, compute_uv=False)[:, :10]
    spy = _GKLSpy(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or underflow warning escapes
        for scale in (2.0**600, 1e200, 1e-200):
            Js = J * scale
            assert {o[4] for o in _reasons(Js, 10)} <= {"overflow", "certificate"}  # unscaled: declined
            T = top_singular(Js, 10)
            np.testing.assert_allclose(T.S / scale, s_ref, rtol=1e-12, atol=1e-14)
        J32 = (J * 1e-10).astype(np.float32)
        assert "certificate" in {o[4] for o in _reasons(J32, 10, tol=math.sqrt(np.finfo(np.float32).eps))}
        T = top_singular(J32, 10)
        np.testing.assert_allclose(T.S / 1e-10, s_ref, rtol=0, atol=1e-6)
    assert spy.matrices == 0


def test_small_matrices_keep_the_batched_path(monkeypatch):
    assert not _lanczos.applies(96, 96, 6) and not _lanczos.applies(512, 40, 6)
    assert _lanczos.applies(512, 512, 10) and not _lanczos.applies(130, 130, 60)
    spy = _GKLSpy(monkeypatch)
    J = _make(["gapped"] * 3, 96, 96)
    _check_against_svd(J, top_singular(J, 6, oversample=4), 6)
    assert spy.matrices == 3


def _blas_threads():
    import threadpoolctl

    return [(i["internal_api"], i["num_threads"]) for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]


def test_blas_threads_restored():
    import threadpoolctl

    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = _blas_threads()
        seen = []
        orig = _lanczos.top_k

        def spy(*args, **kwargs):
            seen.append(_blas_threads())
            return orig(*args, **kwargs)

        _lanczos.top_k, saved = spy, orig
        try:
            top_singular(_make(["gapped"], 200, 200), 5)
        finally:
            _lanczos.top_k = saved
        assert seen and all(n == 1 for lib in seen for _, n in lib)  # one thread inside
        assert _blas_threads() == before
        with pytest.raises(ValueError, match="J must be finite"):  # restored on an error too
            top_singular(np.full((1, 200, 200), np.nan), 5)
        assert _blas_threads() == before


def test_blas_limit_shared_by_concurrent_calls():
    """Threads entering and leaving in any order leave the original limits behind."""
    import threading

    import threadpoolctl

    J = _make(["gapped", "gapless"], 200, 200)
    errors = []

    def work():
        try:
            for _ in range(5):
                _check_against_svd(J, top_singular(J, 5), 5)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = _blas_threads()
        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert _blas_threads() == before
        assert _lanczos._BLAS_USERS == 0


# ----------------------------------------------------------------------------- pieces


def test_chol_qr2_matches_householder_and_refuses_dependent_rows():
    rng = np.random.default_rng(7)
    W = rng.standard_normal((2, 300))
    W[1] = W[0] + 1e-3 * W[1]  # cond ~ 1e3
    Q, R = _lanczos._chol_qr2(W, float(np.max(np.sum(W * W, axis=1))))
    assert np.abs(Q @ Q.T - np.eye(2)).max() <= 10 * EPS
    np.testing.assert_allclose(R.T @ Q, W, rtol=0, atol=1e-13)
    assert R[0, 1] != 0 and R[1, 0] == 0 and R[0, 0] > 0 and R[1, 1] > 0
    W[1] = W[0] * (1 + 1e-12)
    assert _lanczos._chol_qr2(W, float(np.max(np.sum(W * W, axis=1)))) is None


def test_orth_gives_fresh_directions_for_a_dependent_block():
    rng = np.random.default_rng(8)
    n, D, b = 100, 6, 2
    PT = np.empty((D + b, n))
    PT[:] = np.linalg.qr(rng.standard_normal((n, D + b)))[0].T
    W = rng.standard_normal(D + b) @ PT  # one row in the span of the basis
    W = np.stack([W, 2 * W])
    T = np.zeros((D + b, D + b))
    Q, R = _lanczos._orth(PT, W, T, D, b, False)
    assert np.abs(Q @ Q.T - np.eye(b)).max() <= 1e3 * EPS
    assert np.abs(PT @ Q.T).max() <= 1e3 * EPS
    np.testing.assert_allclose(PT.T @ T[:, D:] + Q.T @ R, W.T, atol=1e-12)
    # an independent block: the exact relation W^T = P C + Q^T R with upper-triangular R
    W = rng.standard_normal((b, n))
    Q, R = _lanczos._orth(PT, W, T, D, b, False)
    np.testing.assert_allclose(PT.T @ T[:, D:] + Q.T @ R, W.T, atol=1e-12)
    assert R[1, 0] == 0


# ----------------------------------------------------------------------------- operators


class _OperatorGKLSpy:
    def __init__(self, monkeypatch):
        self.calls = 0
        orig = sp._operator_gkl

        def gkl(*args, **kwargs):
            self.calls += 1
            return orig(*args, **kwargs)

        monkeypatch.setattr(sp, "_operator_gkl", gkl)


@pytest.mark.parametrize("kind", ["gapless", "gapped", "decaying"])
def test_operator_thin_path_matches_svd(kind, monkeypatch):
    spy = _OperatorGKLSpy(monkeypatch)
    J = _make([kind] * 4, 220, 200, seed=12).reshape(2, 2, 220, 200)
    counter = {"mv": 0, "rmv": 0}
    T = top_singular_operator(*_ops(J, counter), J.shape, 6, method="krylov")
    assert spy.calls == 0  # certified on the thin path, all operators in each product
    _check_against_svd(J, T, 6)
    assert counter["mv"] + counter["rmv"] <= _lanczos.operator_sizes(6, 200)[2]


def test_operator_thin_path_declines_repeats_to_the_block_krylov(monkeypatch):
    """A value repeated three times (more than the block's two vectors) goes to the block
    Krylov; the other operators keep their thin-path result."""
    rng = np.random.default_rng(3)
    s = np.concatenate([[3, 2.5, 2, 1, 1, 1], 0.9 * 0.9 ** np.arange(194)])
    J = np.stack([_with_spectrum(s, 200, 200, rng), _make(["gapped"], 200, 200, seed=1)[0]])
    spy = _OperatorGKLSpy(monkeypatch)
    T = top_singular_operator(*_ops(J), J.shape, 7, method="krylov")
    assert spy.calls == 1
    _check_against_svd(J, T, 7)
    np.testing.assert_allclose(T.S[0], s[:7], atol=1e-12)


def test_operator_thin_path_uncertified_keeps_ritz_triplets():
    J = _make(["flat"] * 2, 160, 160, seed=13)
    T = top_singular_operator(*_ops(J), J.shape, 4, method="krylov")
    s_ref = np.linalg.svd(J, compute_uv=False)[..., :4]
    assert np.all(T.S <= s_ref + 1e-12)
    assert np.max(np.abs(_mT(T.U) @ T.U - np.eye(4))) <= 1e3 * EPS


def test_operator_thin_path_array_api_strict(monkeypatch):
    xs = pytest.importorskip("array_api_strict")
    spy = _OperatorGKLSpy(monkeypatch)
    J = _make(["decaying"] * 2, 160, 150, seed=14)
    Js = xs.asarray(J)
    T = top_singular_operator(lambda X: Js @ xs.asarray(X), lambda Y: xs.matrix_transpose(Js) @ Y,
                              J.shape, 3, method="krylov")
    assert spy.calls == 0
    assert type(T.S).__module__.startswith("array_api_strict")
    np.testing.assert_allclose(np.asarray(T.S), np.linalg.svd(J, compute_uv=False)[..., :3], rtol=1e-12)


def test_operator_drivers_agree_and_finished_operators_get_zeros():
    """The NumPy driver (the dense path's algorithm, one run per operator in lockstep) and the
    array-API batched driver certify the same triplets; once an operator has finished, its
    slot in every later product call holds zeros."""
    J = _make(["decaying", "gapless", "gapped"], 200, 180, seed=21)
    c, m, n = J.shape
    X0 = np.ascontiguousarray(np.broadcast_to(sp._start_block(n, _lanczos.BLOCK, 0, np.float64), (c, n, _lanczos.BLOCK)))
    Y0 = J @ X0
    seen = []

    def mv(X):
        seen.append(np.abs(X).max(axis=(1, 2)))
        return J @ X

    def rmv(Y):
        return _mT(J) @ Y

    kw = dict(cluster_tol=math.sqrt(TOL))
    Un, Sn, Vn, rn, _ = _lanczos.top_k_operators_numpy(mv, rmv, Y0, X0, 6, TOL, **kw)
    Ug, Sg, Vg, rg, _ = _lanczos.top_k_operators(lambda X: J @ X, rmv, Y0, X0, 6, TOL, np, **kw)
    assert rn == rg == ["certified"] * 3
    np.testing.assert_allclose(Sn, Sg, rtol=1e-13)
    np.testing.assert_allclose(np.abs(_mT(Un) @ Ug), np.broadcast_to(np.eye(6), (3, 6, 6)), atol=1e-6)
    done = np.array([np.nonzero(s == 0)[0].min() if (s == 0).any() else len(seen) for s in np.array(seen).T])
    assert done.min() < len(seen)  # the fastest operator finished early; afterwards its slot is zero
    for i, first_zero in enumerate(done):
        assert np.all(np.array(seen)[first_zero:, i] == 0)
