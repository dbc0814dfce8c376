"""Tests of ramodel.metrics against closed forms, brute-force references and invariances."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

import ramodel.metrics as rm
from ramodel.metrics import (
    Metric,
    MetricUndefinedError,
    Spread,
    across_input_alignment,
    alignment_lr,
    alignment_metrics,
    chance_alignment,
    collapse_metrics,
    collinearity,
    cosine_lr,
    cross_depth_alignment,
    energy_top_c,
    equispacing,
    fit_depth_slope,
    jacobian_alignment_matrix,
    nc1,
    nc2_equinorm,
    nc2_etf,
    nc3,
    nc4,
    numerical_rank,
    progress_r2,
    rank_metrics,
    sigma1_cv,
    sigma1_mean,
    stable_rank,
    step_ratio,
    trajectory_metrics,
)
from ramodel.spectra import top_singular

seeds = st.integers(0, 2**32 - 1)


# ------------------------------------------------------------------ constructions
def haar(d: int, rng: np.random.Generator) -> np.ndarray:
    Q, R = np.linalg.qr(rng.standard_normal((d, d)))
    return Q * np.sign(np.diag(R))


def orthonormal(shape: tuple[int, ...], d: int, r: int, rng) -> np.ndarray:
    Q, R = np.linalg.qr(rng.standard_normal(shape + (d, r)))
    return Q * np.sign(np.diagonal(R, axis1=-2, axis2=-1))[..., None, :]


def generic_jacobians(rng, L, N, d, rank=None, shared=False) -> np.ndarray:
    """Jacobians with well-separated singular values (top-k subspaces well conditioned)."""
    r = d if rank is None else rank
    lead = (L,) if shared else (L, N)
    U, V = orthonormal(lead, d, r, rng), orthonormal(lead, d, r, rng)
    s = np.exp(-0.7 * np.arange(r)) * rng.uniform(0.5, 2.0, size=lead + (1,))
    return np.einsum("...ir,...r,...jr->...ij", U, s, V)


def sym_rank_c(rng, d, C, s=None) -> np.ndarray:
    Q = orthonormal((), d, C, rng)
    s = rng.uniform(0.1, 2.0, size=C) if s is None else s
    return (Q * s) @ Q.T


def lines(rng, L, N, d, steps=None) -> np.ndarray:
    """h_l = x_n + c_l * s_n * u_n: points on a line, positions c_l (equal steps by default)."""
    c = np.arange(L + 1, dtype=float) if steps is None else np.concatenate([[0.0], np.cumsum(steps)])
    x = rng.standard_normal((N, d))
    u = rng.standard_normal((N, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    s = rng.uniform(0.2, 3.0, size=(N, 1))
    return x[None] + c[:, None, None] * (s * u)[None]


def simplex_etf(C: int, d: int, rng, scale=1.0) -> np.ndarray:
    """(C, d) rows of a simplex ETF embedded by a random orthonormal map (C <= d)."""
    E = np.sqrt(C / (C - 1)) * (np.eye(C) - np.ones((C, C)) / C)
    P = orthonormal((), d, C, rng).T  # (C, d) orthonormal rows
    return scale * E @ P


# --------------------------------------------------------------- brute force refs
def ref_trajectories(R: np.ndarray) -> dict[str, np.ndarray]:
    L = R.shape[0] - 1
    out = {k: [] for k in ("collinearity", "equispacing", "step_ratio", "progress_r2")}
    for n in range(R.shape[1]):
        T = R[:, n, :] - R[:, n, :].mean(axis=0)
        _, s, vh = np.linalg.svd(T)
        out["collinearity"].append(s[0] ** 2 / np.sum(s**2))
        steps = [math.dist(R[l + 1, n], R[l, n]) for l in range(L)]
        out["equispacing"].append(1 - statistics.pstdev(steps) / statistics.fmean(steps))
        out["step_ratio"].append(max(steps) / min(steps))
        p = T @ vh[0]
        ls = np.arange(L + 1.0)
        fit = np.polyval(np.polyfit(ls, p, 1), ls)
        out["progress_r2"].append(1 - np.sum((p - fit) ** 2) / np.sum((p - p.mean()) ** 2))
    return {k: np.array(v) for k, v in out.items()}


def ref_jacobians(J: np.ndarray, k: int, classes: int, tau: float = 1e-3) -> dict[str, np.ndarray]:
    """Per-matrix loops with numpy's SVD: the independent reference of RA2-RA4."""
    L, N, d, _ = J.shape
    U = np.empty((L, N, d, k))
    V = np.empty((L, N, d, k))
    S = np.empty((L, N, d))
    for l in range(L):
        for n in range(N):
            u, s, vh = np.linalg.svd(J[l, n])
            U[l, n], V[l, n], S[l, n] = u[:, :k], vh[:k].T, s
    r = {
        "a_lr": np.zeros((L, N)),
        "cos_lr": np.zeros((L, N)),
        "A_left": np.zeros((L, L, N)),
        "A_right": np.zeros((L, L, N)),
        "K": np.zeros((L, L, N)),
        "rank": np.zeros((L, N)),
        "stable": np.zeros((L, N)),
        "energy": np.zeros((L, N)),
        "across_left": np.zeros(L),
        "across_right": np.zeros(L),
    }
    for l in range(L):
        for n in range(N):
            r["a_lr"][l, n] = np.linalg.norm(U[l, n].T @ V[l, n]) ** 2 / k
            r["cos_lr"][l, n] = U[l, n][:, 0] @ V[l, n][:, 0]
            s = S[l, n]
            r["rank"][l, n] = np.sum(s >= tau * s[0])
            r["stable"][l, n] = np.sum(J[l, n] ** 2) / s[0] ** 2
            r["energy"][l, n] = np.sum(s[:classes] ** 2) / np.sum(J[l, n] ** 2)
            for j in range(L):
                r["A_left"][l, j, n] = np.linalg.norm(U[l, n].T @ U[j, n]) ** 2 / k
                r["A_right"][l, j, n] = np.linalg.norm(V[l, n].T @ V[j, n]) ** 2 / k
                r["K"][l, j, n] = np.linalg.norm(U[l, n].T @ J[j, n] @ V[l, n]) / np.linalg.norm(S[j, n, :k])
        if N > 1:
            for side, X in (("left", U), ("right", V)):
                vals = [np.linalg.norm(X[l, n].T @ X[l, m]) ** 2 / k for n in range(N) for m in range(N) if n != m]
                r[f"across_{side}"][l] = np.mean(vals)
    return r


def offdiag_mean_per_input(A: np.ndarray) -> np.ndarray:
    L = A.shape[0]
    return np.array([np.mean([A[i, j, n] for i in range(L) for j in range(L) if i != j]) for n in range(A.shape[2])])


def all_values(J, k, classes, R=None) -> dict[str, float]:
    """Headline value of every Jacobian metric (and RA1 when R is given)."""
    out = {n: m.value for n, m in alignment_metrics(J, k=k).items()}
    out.update({n: m.value for n, m in rank_metrics(J, classes).items()})
    out["sigma1_cv"] = sigma1_cv(J).value
    out["sigma1_mean"] = sigma1_mean(J).value
    if R is not None:
        out.update({n: m.value for n, m in trajectory_metrics(R).items()})
    return out


# ============================================================================ RA1
@given(L=st.integers(1, 6), N=st.integers(1, 4), d=st.integers(1, 5), seed=seeds)
def test_equal_step_lines_score_one(L, N, d, seed):
    R = lines(np.random.default_rng(seed), L, N, d)
    ms = trajectory_metrics(R)
    for name in ("collinearity", "equispacing", "step_ratio", "progress_r2"):
        assert ms[name].value == pytest.approx(1.0, abs=1e-9), name
        assert ms[name].samples.shape == (N,)
        assert ms[name].samples_over == "inputs"


@given(L=st.integers(2, 7), ratio=st.floats(1.1, 3.0), seed=seeds)
def test_geometric_steps_are_not_equispaced(L, ratio, seed):
    steps = ratio ** np.arange(L)
    R = lines(np.random.default_rng(seed), L, 3, 4, steps=steps)
    expect_equi = 1 - statistics.pstdev(steps.tolist()) / statistics.fmean(steps.tolist())
    assert equispacing(R).value == pytest.approx(expect_equi, rel=1e-9)
    assert equispacing(R).value < 1 - 1e-3
    assert step_ratio(R).value == pytest.approx(ratio ** (L - 1), rel=1e-9)
    assert collinearity(R).value == pytest.approx(1.0, abs=1e-9)  # still a line
    assert progress_r2(R).value < 1 - 1e-6  # uneven steps: position is not linear in l


def test_ra1_matches_bruteforce():
    rng = np.random.default_rng(0)
    R = rng.standard_normal((6, 7, 5)).cumsum(axis=0)
    ref = ref_trajectories(R)
    ms = trajectory_metrics(R)
    for name, values in ref.items():
        np.testing.assert_allclose(ms[name].samples, values, rtol=1e-10, err_msg=name)
        assert ms[name].value == pytest.approx(np.median(values), rel=1e-12)
        assert ms[name].statistic == "median"
        sp = ms[name].spread
        assert sp.count == 7
        assert sp.mean == pytest.approx(values.mean()) and sp.std == pytest.approx(values.std())
        assert (sp.q25, sp.q75) == pytest.approx(tuple(np.quantile(values, [0.25, 0.75])))
    for fn in (collinearity, equispacing, step_ratio, progress_r2):
        assert fn(R).value == ms[fn.__name__].value


def test_constant_trajectory_is_excluded_and_all_constant_is_undefined():
    rng = np.random.default_rng(1)
    R = lines(rng, 4, 3, 3)
    R[:, 1, :] = R[0, 1, :]  # input 1 never moves
    m = collinearity(R)
    assert m.excluded == 1 and m.samples.shape == (2,)
    assert m.value == pytest.approx(1.0)
    with pytest.raises(MetricUndefinedError, match="collinearity"):
        collinearity(np.ones((4, 2, 3)))


def test_zero_step_gives_infinite_ratio_and_json_stays_valid():
    R = lines(np.random.default_rng(2), 3, 3, 2)
    R[2, 0, :] = R[1, 0, :]  # one step of input 0 is zero
    m = step_ratio(R)
    assert np.isinf(m.samples).sum() == 1
    d = m.to_dict()
    json.dumps(d, allow_nan=False)
    assert "inf" in d["samples"]
    assert d["spread"]["max"] == "inf" and d["spread"]["std"] == "inf"


# ===================================================================== RA2 - RA4
@pytest.mark.parametrize("shared", [False, True])
def test_jacobian_metrics_match_bruteforce(shared):
    rng = np.random.default_rng(3)
    L, N, d, k, C = 3, 4, 5, 2, 2
    J = rng.standard_normal((L, d, d) if shared else (L, N, d, d))
    Jn = J[:, None] if shared else J
    ref = ref_jacobians(Jn, k, C)
    ms = alignment_metrics(J, k=k)
    if shared:
        np.testing.assert_allclose(ms["a_lr"].samples, ref["a_lr"][:, 0], rtol=1e-10)
        assert ms["a_lr"].samples_over == "layers"
        pairs = ~np.eye(L, dtype=bool)
        for name in ("A_left", "A_right", "K"):
            np.testing.assert_allclose(ms[name].samples, ref[name][pairs][:, 0], rtol=1e-10)
        assert "across_inputs_left" not in ms
    else:
        np.testing.assert_allclose(ms["a_lr"].samples, ref["a_lr"].mean(axis=0), rtol=1e-10)
        np.testing.assert_allclose(ms["cos_lr"].samples, ref["cos_lr"].mean(axis=0), rtol=1e-10)
        for name in ("A_left", "A_right", "K"):
            np.testing.assert_allclose(ms[name].samples, offdiag_mean_per_input(ref[name]), rtol=1e-10)
            np.testing.assert_allclose(ms[name].detail, ref[name].mean(axis=2), rtol=1e-10)
        for side in ("left", "right"):
            m = ms[f"across_inputs_{side}"]
            np.testing.assert_allclose(m.samples, ref[f"across_{side}"], rtol=1e-10)
            assert m.value == pytest.approx(ref[f"across_{side}"].mean())
    adj = np.abs(np.subtract.outer(np.arange(L), np.arange(L))) == 1
    assert ms["A_left_adjacent"].value == pytest.approx(np.mean(ref["A_left"][adj]))
    assert ms["K_adjacent"].value == pytest.approx(np.mean(ref["K"][adj]))
    assert ms["a_lr"].value == pytest.approx(ref["a_lr"].mean())
    for name in ("a_lr", "A_left", "A_right", "K", "A_left_adjacent"):
        assert ms[name].chance == k / d
    rk = rank_metrics(J, C)
    assert rk["numerical_rank"].value == np.median(ref["rank"])
    assert rk["stable_rank"].value == pytest.approx(np.median(ref["stable"]))
    assert rk["energy_top_C"].value == pytest.approx(np.median(ref["energy"]))
    s1 = np.array([[np.linalg.norm(Jn[l, n], 2) for n in range(Jn.shape[1])] for l in range(L)])
    assert sigma1_mean(J).value == pytest.approx(s1.mean())
    cv = s1.std(axis=0) / s1.mean(axis=0)
    assert sigma1_cv(J).value == pytest.approx(np.median(cv))


@given(d=st.integers(2, 7), data=st.data(), L=st.integers(2, 4), N=st.integers(2, 3), seed=seeds)
def test_identical_symmetric_rank_c_jacobians_are_perfectly_aligned(d, data, L, N, seed):
    C = data.draw(st.integers(1, d), label="C")
    rng = np.random.default_rng(seed)
    J1 = sym_rank_c(rng, d, C)
    for J in (np.broadcast_to(J1, (L, d, d)), np.broadcast_to(J1, (L, N, d, d))):
        ms = alignment_metrics(J, k=C)
        for name in ("a_lr", "cos_lr", "A_left", "A_right", "A_left_adjacent", "A_right_adjacent", "K", "K_adjacent"):
            assert ms[name].value == pytest.approx(1.0, abs=1e-9), name
        if J.ndim == 4:
            assert ms["across_inputs_left"].value == pytest.approx(1.0, abs=1e-9)
            assert ms["across_inputs_right"].value == pytest.approx(1.0, abs=1e-9)
        rk = rank_metrics(J, C)
        assert rk["numerical_rank"].value == C
        assert rk["energy_top_C"].value == pytest.approx(1.0, abs=1e-12)
        s = np.linalg.eigvalsh(J1)[::-1]
        assert rk["stable_rank"].value == pytest.approx(np.sum(s**2) / s[0] ** 2, rel=1e-9)
        assert sigma1_cv(J).value == pytest.approx(0.0, abs=1e-12)


def test_negative_definite_direction_gives_signed_cosine_minus_one():
    rng = np.random.default_rng(4)
    J = -np.broadcast_to(sym_rank_c(rng, 5, 1), (3, 5, 5))
    assert cosine_lr(J).value == pytest.approx(-1.0)
    assert alignment_lr(J, k=1).value == pytest.approx(1.0)


def test_gaussian_jacobians_align_at_chance():
    # Independent Haar subspaces: E|P^T Q|_F^2 / k = k/d exactly; the sd of one value is
    # about sqrt(2)/d = 0.035, and each mean below averages >= 180 values (sd <= 0.003),
    # so a 25 % tolerance on chance = 0.075 is > 6 sd.
    rng = np.random.default_rng(5)
    L, N, d, k = 6, 30, 40, 3
    J = rng.standard_normal((L, N, d, d))
    ms = alignment_metrics(J, k=k)
    chance = chance_alignment(k, d)
    for name in ("a_lr", "A_left", "A_right", "across_inputs_left", "across_inputs_right"):
        assert ms[name].value == pytest.approx(chance, rel=0.25), name
        assert ms[name].chance == chance
    assert abs(ms["cos_lr"].value) < 0.05


@given(L=st.integers(2, 4), N=st.integers(1, 3), d=st.integers(2, 6), data=st.data(), seed=seeds)
def test_metrics_invariant_under_orthogonal_change_of_basis(L, N, d, data, seed):
    k = data.draw(st.integers(1, d), label="k")
    rng = np.random.default_rng(seed)
    J = generic_jacobians(rng, L, N, d)
    R = rng.standard_normal((L + 1, N, d)).cumsum(axis=0)
    Q = haar(d, rng)
    J2 = Q @ J @ Q.T
    R2 = R @ Q.T  # h -> Q h for row vectors
    before, after = all_values(J, k, min(k, d), R), all_values(J2, k, min(k, d), R2)
    assert before.keys() == after.keys()
    for name in before:
        assert after[name] == pytest.approx(before[name], rel=1e-7, abs=1e-9), name
    # and the factor layout: U -> Q U, V -> Q V
    U, S, V = top_singular(J, k)
    f1 = alignment_metrics((U, S, V)), alignment_metrics((Q @ U, S, Q @ V))
    for name in f1[0]:
        assert f1[1][name].value == pytest.approx(f1[0][name].value, rel=1e-9, abs=1e-12), name


@given(L=st.integers(2, 4), N=st.integers(1, 3), d=st.integers(2, 6), seed=seeds)
def test_metrics_invariant_under_sign_flips_of_singular_pairs(L, N, d, seed):
    rng = np.random.default_rng(seed)
    J = generic_jacobians(rng, L, N, d)
    U, S, V = top_singular(J, d)  # complete: RA3 is defined from these factors too
    flip = rng.choice([-1.0, 1.0], size=U.shape[:-2] + (1, d))
    a, b = (U, S, V), (U * flip, S, V * flip)
    for fn in (lambda f: alignment_metrics(f, k=min(2, d)), lambda f: rank_metrics(f, 2)):
        ma, mb = fn(a), fn(b)
        for name in ma:
            assert mb[name].value == pytest.approx(ma[name].value, rel=1e-10, abs=1e-12), name
    # left vectors flipped alone (not a symmetry of J) leave the subspace metrics unchanged
    flip_u = rng.choice([-1.0, 1.0], size=U.shape[:-2] + (1, d))
    assert alignment_lr((U * flip_u, S, V), k=2).value == pytest.approx(alignment_lr(a, k=2).value)
    assert cross_depth_alignment((U * flip_u, S, V), k=2).value == pytest.approx(
        cross_depth_alignment(a, k=2).value)


@given(L=st.integers(1, 4), N=st.integers(1, 3), d=st.integers(3, 7), data=st.data(), seed=seeds,
       shared=st.booleans())
def test_dense_and_exact_factors_agree(L, N, d, data, seed, shared):
    rank = data.draw(st.integers(1, d - 2), label="rank")
    kf = data.draw(st.integers(rank + 1, d - 1), label="k_stored")
    # k <= rank: beyond the rank the top-k subspace is an arbitrary null-space basis
    k = data.draw(st.integers(1, rank), label="k")
    classes = data.draw(st.integers(1, d), label="classes")
    rng = np.random.default_rng(seed)
    J = generic_jacobians(rng, L, N, d, rank=rank, shared=shared)
    F = top_singular(J, kf)
    for group in (lambda x: alignment_metrics(x, k=k), lambda x: rank_metrics(x, classes),
                  lambda x: {"s": sigma1_cv(x), "m": sigma1_mean(x)}):
        gd, gf = group(J), group(F)
        assert gd.keys() == gf.keys()
        for name in gd:
            assert gf[name].value == pytest.approx(gd[name].value, rel=1e-8, abs=1e-10), name
            if gd[name].samples is not None:
                np.testing.assert_allclose(gf[name].samples, gd[name].samples, rtol=1e-8, atol=1e-10)
            if gd[name].detail is not None:
                np.testing.assert_allclose(gf[name].detail, gd[name].detail, rtol=1e-8, atol=1e-10)


def test_full_rank_jacobians_from_truncated_factors():
    rng = np.random.default_rng(6)
    L, N, d, kf = 3, 2, 6, 3
    J = generic_jacobians(rng, L, N, d)
    F = top_singular(J, kf)
    for name in ("a_lr", "cos_lr", "A_left", "A_right", "across_inputs_left"):
        assert alignment_metrics(F, k=2)[name].value == pytest.approx(alignment_metrics(J, k=2)[name].value)
    # K from factors is K of the rank-kf truncations, and says so
    trunc = np.einsum("...ik,...k,...jk->...ij", *F)
    mK = jacobian_alignment_matrix(F, k=2)
    assert mK.value == pytest.approx(jacobian_alignment_matrix(trunc, k=2).value)
    assert mK.value != pytest.approx(jacobian_alignment_matrix(J, k=2).value)
    assert "truncation" in mK.note
    for fn in (numerical_rank, stable_rank, lambda x: energy_top_c(x, 2)):
        with pytest.raises(MetricUndefinedError, match="export more triplets"):
            fn(F)
    assert rank_metrics(F, 2) == {}
    # all d triplets determine the spectrum exactly
    Fd = top_singular(J, d)
    assert stable_rank(Fd).value == pytest.approx(stable_rank(J).value)
    assert energy_top_c(Fd, 2).value == pytest.approx(energy_top_c(J, 2).value)


def test_k_matrix_is_one_on_the_diagonal_and_bounded_by_one():
    rng = np.random.default_rng(7)
    m = jacobian_alignment_matrix(rng.standard_normal((4, 3, 6, 6)), k=2)
    np.testing.assert_allclose(np.diag(m.detail), 1.0, rtol=1e-12)
    assert np.all(m.detail >= 0) and np.all(m.detail <= 1 + 1e-12)


def test_numerical_rank_threshold_and_factor_completeness():
    J = np.diag([1.0, 1e-2, 1e-4, 0.0])[None]
    assert numerical_rank(J).value == 2
    assert numerical_rank(J, tau=1e-5).value == 3
    assert numerical_rank(J, tau=0.1).value == 1
    F = top_singular(J, 3)  # sigma_3 = 1e-4 < tau * sigma_1: the rank is determined
    assert numerical_rank(F).value == 2
    with pytest.raises(MetricUndefinedError, match="tau"):
        numerical_rank(F, tau=1e-5)
    assert numerical_rank(np.zeros((2, 3, 3))).value == 0


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the reference divides 0/0
def test_zero_jacobians_are_excluded_where_undefined():
    rng = np.random.default_rng(8)
    J = generic_jacobians(rng, 3, 4, 4)
    J[1, 2] = 0.0
    m = alignment_lr(J, k=2)
    ref = ref_jacobians(J, 2, 2)["a_lr"]
    ref[1, 2] = np.nan
    np.testing.assert_allclose(m.samples, np.nanmean(ref, axis=0))
    assert stable_rank(J).excluded == 1
    assert numerical_rank(J).excluded == 0  # rank 0 is a value
    A = ref_jacobians(J, 2, 2)["A_left"]
    bad = np.isnan(ref)
    A[bad[:, None, :] | bad[None, :, :]] = np.nan
    per_input = [np.nanmean(A[~np.eye(3, dtype=bool)][:, n]) for n in range(4)]
    assert cross_depth_alignment(J, k=2).value == pytest.approx(np.mean(per_input), rel=1e-12)
    with pytest.raises(MetricUndefinedError, match="zero Jacobian"):
        alignment_lr(np.zeros((2, 3, 3)), k=1)
    with pytest.raises(MetricUndefinedError, match="every Jacobian"):
        sigma1_cv(np.zeros((2, 1, 3, 3)))


def test_pair_metrics_need_two_layers_and_across_needs_inputs():
    J = np.eye(3)[None]
    with pytest.raises(MetricUndefinedError, match="L >= 2"):
        cross_depth_alignment(J, k=1)
    with pytest.raises(MetricUndefinedError, match="L >= 2"):
        jacobian_alignment_matrix(J, k=1)
    assert set(alignment_metrics(J, k=1)) == {"a_lr", "cos_lr"}
    with pytest.raises(MetricUndefinedError, match="per-input"):
        across_input_alignment(np.stack([np.eye(3)] * 2), k=1)


# ============================================================================ RA4
def test_sigma1_cv_recovers_layer_scales():
    rng = np.random.default_rng(9)
    J0 = generic_jacobians(rng, 1, 1, 4, shared=True)[0]
    c = np.array([1.0, 2.0, 0.5, 1.5])
    s = np.linalg.norm(J0, 2)
    m = sigma1_cv(c[:, None, None] * J0)
    assert m.value == pytest.approx(statistics.pstdev(c.tolist()) / statistics.fmean(c.tolist()))
    np.testing.assert_allclose(m.detail, c * s)
    scales = rng.uniform(0.5, 2, size=(4, 5))  # per (layer, input)
    Jn = scales[..., None, None] * J0
    m = sigma1_cv(Jn)
    np.testing.assert_allclose(m.samples, scales.std(axis=0) / scales.mean(axis=0))
    assert sigma1_mean(Jn).value == pytest.approx(s * scales.mean())


def test_depth_slope_exact_power_law():
    L = np.array([2, 4, 8, 16, 32])
    fit = fit_depth_slope(L, 3.0 * L**-1.0)
    assert fit.slope == pytest.approx(-1.0, abs=1e-12)
    assert fit.intercept == pytest.approx(math.log(3.0))
    assert fit.ci_high - fit.ci_low < 1e-8 and fit.r2 == pytest.approx(1.0)
    assert fit.within() and not fit.within(-0.9, -0.5)
    json.dumps(fit.to_dict(), allow_nan=False)


def test_depth_slope_matches_linregress_and_covers_the_truth():
    rng = np.random.default_rng(10)
    L = np.repeat([2.0, 4.0, 8.0, 16.0], 2)
    y = 0.7 * L**-0.9 * np.exp(0.05 * rng.standard_normal(L.size))
    fit = fit_depth_slope(L, y)
    ref = stats.linregress(np.log(L), np.log(y))
    assert fit.slope == pytest.approx(ref.slope) and fit.stderr == pytest.approx(ref.stderr)
    assert fit.intercept == pytest.approx(ref.intercept) and fit.r2 == pytest.approx(ref.rvalue**2)
    half = stats.t.ppf(0.975, 6) * ref.stderr
    assert fit.dof == 6 and (fit.ci_low, fit.ci_high) == pytest.approx((ref.slope - half, ref.slope + half))
    # coverage: the 90 % interval covers the true slope in about 90 % of 400 sweeps
    # (binomial sd 1.5 %; bounds at +-3.4 sd)
    hits = 0
    for _ in range(400):
        y = L**-1.0 * np.exp(0.1 * rng.standard_normal(L.size))
        f = fit_depth_slope(L, y, confidence=0.9)
        hits += f.ci_low <= -1.0 <= f.ci_high
    assert 0.85 <= hits / 400 <= 0.95


@pytest.mark.parametrize(
    "depths, sigma, kw, match",
    [
        ([2, 4], [1.0, 0.5], {}, "at least 3"),
        ([2, 4, 8], [1.0, 0.5], {}, "same length"),
        ([2, 2, 2], [1.0, 0.5, 0.2], {}, "distinct"),
        ([2, 0, 8], [1.0, 0.5, 0.2], {}, "depths"),
        ([2, 4, 8], [1.0, -0.5, 0.2], {}, "sigma1"),
        ([2, 4, 8], [1.0, np.nan, 0.2], {}, "sigma1"),
        ([2, 4, 8], [1.0, 0.5, 0.2], {"confidence": 1.0}, "confidence"),
        ([[2, 4, 8]], [[1.0, 0.5, 0.2]], {}, "1-D"),
    ],
)
def test_depth_slope_rejects_bad_input(depths, sigma, kw, match):
    with pytest.raises(ValueError, match=match):
        fit_depth_slope(depths, sigma, **kw)


# ================================================================ neural collapse
def ref_nc1(H, y, C):
    means = np.stack([H[y == c].mean(axis=0) for c in range(C)])
    mu = means.mean(axis=0)
    E = H - means[y]
    Sw = E.T @ E / len(y)
    Sb = (means - mu).T @ (means - mu) / C
    return np.trace(Sw @ np.linalg.pinv(Sb, rcond=1e-10)) / C


def clusters(rng, C, d, counts, spread=0.3):
    y = np.repeat(np.arange(C), counts)
    mu = rng.standard_normal((C, d))
    return mu[y] + spread * rng.standard_normal((y.size, d)), y


@given(C=st.integers(2, 5), extra=st.integers(0, 3), seed=seeds, offset=st.floats(-3, 3),
       scale=st.floats(0.1, 10))
def test_exact_simplex_etf_is_fully_collapsed(C, extra, seed, offset, scale):
    rng = np.random.default_rng(seed)
    d = C + extra
    M = simplex_etf(C, d, rng, scale)
    counts = rng.integers(1, 5, size=C)  # imbalanced classes are fine
    y = np.repeat(np.arange(C), counts)
    t = offset * rng.standard_normal(d)
    H = M[y] + t
    assert nc1(H, y, C).value == pytest.approx(0.0, abs=1e-20)
    assert nc2_equinorm(H, y, C).value == pytest.approx(0.0, abs=1e-9)
    assert nc2_etf(H, y, C).value == pytest.approx(0.0, abs=1e-9)
    assert nc3(H, y, C, 2.5 * M).value == pytest.approx(0.0, abs=1e-9)
    assert nc4(H, y, C, M, bias=-M @ t).value == 0.0


@pytest.mark.parametrize("counts", [[5, 5, 5], [2, 6, 4]])
def test_nc1_matches_pseudo_inverse_definition(counts):
    rng = np.random.default_rng(11)
    H, y = clusters(rng, 3, 6, counts)
    assert nc1(H, y, 3).value == pytest.approx(ref_nc1(H, y, 3), rel=1e-9)
    H2, y2 = clusters(rng, 4, 2, [3, 3, 3, 3])  # d < C - 1: Sigma_B has rank d
    assert nc1(H2, y2, 4).value == pytest.approx(ref_nc1(H2, y2, 4), rel=1e-9)


@given(alpha=st.floats(0.1, 10), seed=seeds)
def test_nc1_scales_with_the_within_class_spread(alpha, seed):
    rng = np.random.default_rng(seed)
    H, y = clusters(rng, 3, 5, [4, 4, 4])
    means = np.stack([H[y == c].mean(axis=0) for c in range(3)])
    H2 = means[y] + alpha * (H - means[y])
    assert nc1(H2, y, 3).value == pytest.approx(alpha**2 * nc1(H, y, 3).value, rel=1e-9)
    for fn in (nc2_equinorm, nc2_etf):  # the class means did not move
        assert fn(H2, y, 3).value == pytest.approx(fn(H, y, 3).value, abs=1e-12)


def test_nc2_changes_when_one_class_mean_moves():
    rng = np.random.default_rng(12)
    C, d = 4, 6
    M = simplex_etf(C, d, rng)
    y = np.arange(C)
    M2 = M.copy()
    M2[0] *= 1.5
    norms = np.linalg.norm(M2 - M2.mean(axis=0), axis=1)
    assert nc2_equinorm(M2, y, C).value == pytest.approx(norms.std() / norms.mean())
    assert nc2_etf(M2, y, C).value > 0.05
    # the ETF distance against an actual simplex ETF Gram (built from vectors)
    G = (M2 - M2.mean(axis=0)) @ (M2 - M2.mean(axis=0)).T
    E = M @ M.T
    assert nc2_etf(M2, y, C).value == pytest.approx(np.linalg.norm(G / np.linalg.norm(G) - E / np.linalg.norm(E)))


def test_nc3_sees_rotation_of_the_classifier_not_its_scale():
    rng = np.random.default_rng(13)
    C, d = 3, 5
    M = simplex_etf(C, d, rng)
    y = np.repeat(np.arange(C), 2)
    H = M[y]
    assert nc3(H, y, C, 4.0 * M).value == pytest.approx(0.0, abs=1e-12)
    Q = haar(d, rng)
    W = M @ Q.T
    ref = np.linalg.norm(W / np.linalg.norm(W) - M / np.linalg.norm(M))
    assert nc3(H, y, C, W).value == pytest.approx(ref) and ref > 0.1


def test_nc4_counts_disagreements_and_uses_the_bias():
    rng = np.random.default_rng(14)
    C, d = 3, 4
    M = simplex_etf(C, d, rng)
    counts = np.array([2, 3, 5])
    y = np.repeat(np.arange(C), counts)
    H = M[y] + 0.01 * rng.standard_normal((y.size, d))
    assert nc4(H, y, C, M).value == 0.0
    bias = np.array([100.0, 0.0, 0.0])  # the network now always says class 0
    m = nc4(H, y, C, M, bias=bias)
    assert m.value == pytest.approx(1 - counts[0] / counts.sum())
    assert m.chance == pytest.approx(1 - 1 / C)


@given(seed=seeds, scale=st.floats(0.2, 5), shift=st.floats(-2, 2))
def test_nc_metrics_invariant_under_rotation_translation_scaling(seed, scale, shift):
    rng = np.random.default_rng(seed)
    C, d = 3, 5
    H, y = clusters(rng, C, d, [3, 4, 3])
    W = rng.standard_normal((C, d))
    b = rng.standard_normal(C)
    Q = haar(d, rng)
    t = shift * rng.standard_normal(d)
    H2 = scale * H @ Q.T + t
    W2 = W @ Q.T
    b2 = scale * b - W2 @ t  # the same decisions: every logit is multiplied by `scale`
    before = collapse_metrics(H, y, C, classifier=W, bias=b)
    after = collapse_metrics(H2, y, C, classifier=W2, bias=b2)
    assert set(before) == {"nc1", "nc2_equinorm", "nc2_etf", "nc3", "nc4"}
    for name in before:
        assert after[name].value == pytest.approx(before[name].value, rel=1e-8, abs=1e-12), name


def test_nc_rejects_bad_input():
    rng = np.random.default_rng(15)
    H, y = clusters(rng, 3, 4, [2, 2, 2])
    with pytest.raises(MetricUndefinedError, match=r"classes \[2\]"):
        nc1(H, np.array([0, 0, 1, 1, 0, 1]), 3)
    with pytest.raises(ValueError, match="labels must lie"):
        nc1(H, y + 1, 3)
    with pytest.raises(ValueError, match="labels must lie"):
        nc1(H, y - 1, 3)
    with pytest.raises(ValueError, match="labels must have shape"):
        nc1(H, y[:-1], 3)
    with pytest.raises(TypeError, match="integer"):
        nc1(H, y.astype(float), 3)
    with pytest.raises(ValueError, match="classifier must have shape"):
        nc3(H, y, 3, np.ones((3, 5)))
    with pytest.raises(ValueError, match="bias must have shape"):
        nc4(H, y, 3, np.ones((3, 4)), bias=np.ones(2))
    with pytest.raises(ValueError, match="features must be finite"):
        nc1(np.where(H > 1, np.nan, H), y, 3)
    with pytest.raises(ValueError, match="features must have shape"):
        nc1(H[None], y, 3)
    with pytest.raises(ValueError, match="classes must be >= 2"):
        nc1(H, y * 0, 1)
    with pytest.raises(MetricUndefinedError, match="same"):
        nc1(np.ones((6, 4)), y, 3)
    assert set(collapse_metrics(H, y, 3)) == {"nc1", "nc2_equinorm", "nc2_etf"}


# ======================================================================= general
def _readonly(a):
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


def test_functions_never_modify_their_inputs():
    rng = np.random.default_rng(16)
    L, N, d = 3, 4, 5
    J = _readonly(generic_jacobians(rng, L, N, d, rank=2))
    F = tuple(_readonly(a) for a in top_singular(J, 3))
    R = _readonly(rng.standard_normal((L + 1, N, d)))
    H, y = clusters(rng, 2, d, [2, 2])
    H, y, W = _readonly(H), _readonly(y), _readonly(rng.standard_normal((2, d)))
    copies = [np.copy(a) for a in (J, *F, R, H, y, W)]
    for src in (J, F):
        alignment_metrics(src, k=2)
        rank_metrics(src, 2)
        sigma1_cv(src)
        across_input_alignment(src, k=2)
    trajectory_metrics(R)
    collapse_metrics(H, y, 2, classifier=W, bias=_readonly(np.ones(2)))
    for a, c in zip((J, *F, R, H, y, W), copies):
        np.testing.assert_array_equal(a, c)


def test_one_batched_top_singular_call(monkeypatch):
    calls = []

    def counting(J, k, **kw):
        calls.append(tuple(J.shape))
        return top_singular(J, k, **kw)

    monkeypatch.setattr(rm, "top_singular", counting)
    J = np.random.default_rng(17).standard_normal((3, 6, 4, 4))
    alignment_metrics(J, k=2)
    assert calls == [(3, 6, 4, 4)]
    calls.clear()
    trajectory_metrics(np.random.default_rng(18).standard_normal((4, 6, 3)))
    assert calls == [(6, 4, 3)]


@pytest.mark.parametrize(
    "J, kw, exc, match",
    [
        (np.ones((3, 3)), {"k": 1}, ValueError, r"shape \(L, N, d, d\)"),
        (np.ones((2, 2, 2, 3, 3)), {"k": 1}, ValueError, "ndim=5"),
        (np.ones((2, 3, 4)), {"k": 1}, ValueError, "square"),
        (np.ones((2, 3, 3), dtype=int), {"k": 1}, TypeError, "real floating"),
        (np.full((2, 3, 3), np.nan), {"k": 1}, ValueError, "finite"),
        (np.ones((2, 3, 3)), {"k": 4}, ValueError, "k must be"),
        (np.ones((2, 3, 3)), {"k": 0}, ValueError, "k must be"),
        (np.ones((2, 3, 3)), {}, ValueError, "k must be given"),
        (np.ones((2, 0, 3, 3)), {"k": 1}, ValueError, ">= 1"),
        ((np.ones((2, 3, 3)),) * 2, {}, TypeError, r"\(U, S, V\)"),
        ("J", {"k": 1}, TypeError, "array"),
    ],
)
def test_bad_jacobians_are_rejected(J, kw, exc, match):
    with pytest.raises(exc, match=match):
        alignment_lr(J, **kw)


def test_bad_factors_are_rejected():
    rng = np.random.default_rng(19)
    U, S, V = top_singular(generic_jacobians(rng, 2, 3, 4), 2)
    cases = [
        ((U, S, V[..., :1]), "V must have the shape"),
        ((U, S[..., :1], V), "S must have shape"),
        ((U, S[0], V), "S must have shape"),
        ((U[..., :1, :], S, V[..., :1, :]), "k <= d"),
        ((2 * U, S, V), "U must have orthonormal"),
        ((U, S[..., ::-1], V), "non-increasing"),
        ((U, -S, V), ">= 0"),
        ((U, np.where(S > 0, np.inf, S), V), "finite"),
    ]
    for F, match in cases:
        with pytest.raises(ValueError, match=match):
            alignment_lr(F)
    with pytest.raises(ValueError, match="k must be"):
        alignment_lr((U, S, V), k=3)
    with pytest.raises(ValueError, match="side"):
        cross_depth_alignment((U, S, V), side="up")
    with pytest.raises(ValueError, match="pairs"):
        cross_depth_alignment((U, S, V), pairs="all")
    for tau in (0.0, 1.0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="tau"):
            numerical_rank((U, S, V), tau=tau)


def test_bad_representations_are_rejected():
    with pytest.raises(ValueError, match=r"\(L\+1, N, d\)"):
        collinearity(np.ones((3, 4)))
    with pytest.raises(ValueError, match="L >= 1"):
        collinearity(np.ones((1, 4, 2)))
    R = np.ones((3, 2, 2))
    R[1, 1, 1] = np.inf
    with pytest.raises(ValueError, match="representations must be finite"):
        collinearity(R)


def test_metric_and_spread_results():
    m = alignment_lr(np.random.default_rng(20).standard_normal((3, 5, 4, 4)), k=2)
    assert m.per_input is m.samples and not m.samples.flags.writeable
    d = m.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert d["chance"] == 0.5 and d["detail_axes"] == ["layer"]
    with pytest.raises(ValueError, match="NaN"):
        Metric("x", float("nan"))
    with pytest.raises(ValueError, match="statistic"):
        Metric("x", 1.0, statistic="mode")
    assert Spread.of([3.0, 1.0, 2.0]).to_dict()["median"] == 2.0
    with pytest.raises(ValueError):
        Spread.of([])
    assert chance_alignment(2, 8) == 0.25


# ============================================================== array API (strict)
xps = pytest.importorskip("array_api_strict")


def _strict(a):
    return xps.asarray(np.asarray(a).tolist(), dtype=xps.float64)


def _top_singular_is_strict_clean() -> bool:
    try:
        top_singular(_strict(np.eye(2)), 1)
        return True
    except Exception:
        return False


def test_array_api_strict_factor_path_matches_numpy():
    rng = np.random.default_rng(21)
    F = top_singular(generic_jacobians(rng, 3, 4, 5), 3)
    Fs = tuple(_strict(a) for a in F)
    a, b = alignment_metrics(F, k=2), alignment_metrics(Fs, k=2)
    assert a.keys() == b.keys()
    for name in a:
        assert b[name].value == pytest.approx(a[name].value, rel=1e-12), name
    assert sigma1_cv(Fs).value == pytest.approx(sigma1_cv(F).value)


def test_array_api_strict_collapse_matches_numpy():
    rng = np.random.default_rng(22)
    H, y = clusters(rng, 3, 5, [3, 3, 4])
    W = rng.standard_normal((3, 5))
    for fn in (nc2_equinorm, nc2_etf):
        assert fn(_strict(H), y, 3).value == pytest.approx(fn(H, y, 3).value, rel=1e-12)
    assert nc3(_strict(H), y, 3, _strict(W)).value == pytest.approx(nc3(H, y, 3, W).value)
    assert nc4(_strict(H), y, 3, _strict(W)).value == nc4(H, y, 3, W).value


def test_array_api_strict_paths_through_top_singular():
    if not _top_singular_is_strict_clean():
        pytest.skip("ramodel.spectra.top_singular is not array-API clean yet (xp.where with two scalars)")
    rng = np.random.default_rng(23)
    J = generic_jacobians(rng, 3, 2, 4)
    R = rng.standard_normal((4, 5, 3))
    H, y = clusters(rng, 3, 5, [3, 3, 4])
    for name, m in alignment_metrics(J, k=2).items():
        assert alignment_metrics(_strict(J), k=2)[name].value == pytest.approx(m.value), name
    for name, m in trajectory_metrics(R).items():
        assert trajectory_metrics(_strict(R))[name].value == pytest.approx(m.value), name
    assert nc1(_strict(H), y, 3).value == pytest.approx(nc1(H, y, 3).value)
