"""theory.check: every theorem measure at its prediction, at chance, and invariant.

Tolerances: a converged float64 run (|grad Phi| <= 1e-10, lambda = 1e-2) moves each
relative residual by about |grad Phi| / lambda <= 1e-8, so 1e-6 has a wide margin and
1e-10 suffices where the measure is exact by construction (linearity of the linear
model). Chance tolerances are about five standard deviations of ``value - chance``
measured over 20 seeds (Gaussian Jacobians, L = 4, d = 16, N = 64).
"""

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ramodel
from ramodel import theory
from ramodel.jacobian_set import JacobianSet
from ramodel.spectra import top_singular

RESIDUALS = ("chain_residual", "classifier_residual", "asymmetry", "depth_spread", "psd_defect",
             "closed_form_error", "gain_share_error", "skip_asymmetry")


def ar1(d, rho=0.5):
    """AR(1) correlation matrix: symmetric positive definite, not orthogonal."""
    i = np.arange(d)
    return rho ** np.abs(np.subtract.outer(i, i))


def haar(rng, d):
    Q, R = np.linalg.qr(rng.standard_normal((d, d)))
    return Q * np.sign(np.diag(R))


@pytest.fixture(scope="module")
def sim():
    s = ramodel.simulate(depth=4, classes=3, width=6, samples_per_class=4, seed=0)
    assert s.grad_norm <= 1e-10
    return s


@pytest.fixture(scope="module")
def sim_ar1():
    s = ramodel.simulate(depth=3, classes=3, width=6, samples_per_class=4, skip=ar1(6), seed=1)
    assert s.grad_norm <= 1e-10
    return s


def random_set(rng, L=3, N=4, d=6, C=3, skips=None):
    """Per-input Gaussian Jacobians with unrelated representations and classifier."""
    out = {
        "jacobians": 0.3 * rng.standard_normal((L, N, d, d)) / np.sqrt(d),
        "representations": rng.standard_normal((L + 1, N, d)),
        "classifier": rng.standard_normal((C, d)),
        "labels": np.arange(N) % C,
        "classes": C,
    }
    if skips is not None:
        out["skips"] = skips
    return out


def factors_of(source, k):
    U, S, V = top_singular(source["jacobians"], k)
    out = {key: v for key, v in source.items() if key != "jacobians"}
    out.update(U=U, S=S, V=V)
    return out


# ----------------------------------------------------------- at the prediction
def test_converged_identity_simulation_meets_every_prediction(sim):
    rep = theory.check(sim)
    assert not rep.unavailable
    for name in RESIDUALS:
        m = rep.measures[name]
        assert m.predicted == 0.0
        assert m.deviation <= 1e-6, (name, m.deviation)
        # The same measure is far from 0 at chance, so it can fail.
        assert m.chance > 0.1, (name, m.chance)
    lin = rep.measures["linearity"]
    assert lin.samples.shape == (4, 12)
    assert np.max(np.abs(lin.samples - 1.0)) <= 1e-10
    assert abs(lin.chance) < 0.2
    rank = rep.measures["numerical_rank"]
    assert rank.predicted == 3 and rank.relation == "<=" and rank.deviation == 0
    assert rep.measures["energy_top_C"].deviation <= 1e-10
    # Per-layer samples: one per layer (input-independent Jacobians: one column).
    assert rep.measures["asymmetry"].samples.shape == (4, 1)
    assert rep.measures["chain_residual"].rows == ("1,2", "2,3", "3,4")
    assert rep.info["grad_norm"] == sim.grad_norm


def test_measures_against_plain_numpy(sim):
    """Each headline number recomputed independently from the raw arrays."""
    rep = theory.check(sim, chance_draws=0)
    J, W, X = sim.jacobians, sim.classifier, sim.representations
    (lJ, lW), L, d = sim.weight_decay, sim.depth, sim.width
    A = np.eye(d) + J
    chain = [np.linalg.norm(J[l] @ A[l].T - A[l + 1].T @ J[l + 1])
             / (np.linalg.norm(J[l] @ A[l].T) + np.linalg.norm(A[l + 1].T @ J[l + 1])) for l in range(L - 1)]
    np.testing.assert_allclose(rep.measures["chain_residual"].samples[:, 0], chain, rtol=1e-12, atol=1e-18)
    # Closed form through scipy's matrix square root, not the eigendecomposition.
    import scipy.linalg

    Jstar = 0.5 * (np.real(scipy.linalg.sqrtm(np.eye(d) + 4 * lW / lJ * W.T @ W)) - np.eye(d))
    cf = np.linalg.norm(J[-1] - Jstar) / np.linalg.norm(Jstar)
    assert rep.measures["closed_form_error"].value == pytest.approx(cf, abs=1e-9)
    P = np.linalg.multi_dot(A[::-1])
    p = np.linalg.svd(P, compute_uv=False)[:3]
    s = np.linalg.svd(J, compute_uv=False)[:, :3]
    gain = np.max(np.abs(s - (p ** (1 / L) - 1)), axis=1) / (p[0] ** (1 / L) - 1)
    np.testing.assert_allclose(rep.measures["gain_share_error"].samples[:, 0], gain, atol=1e-13)
    step = X[1:] - X[:-1]
    branch = np.einsum("lij,lnj->lni", J, X[:-1])
    cos = np.sum(step * branch, -1) / np.linalg.norm(step, axis=-1) / np.linalg.norm(branch, axis=-1)
    np.testing.assert_allclose(rep.measures["linearity"].samples, cos, atol=1e-14)


def test_branch_factors_two_and_cross_entropy_change_the_predictions():
    k2 = ramodel.simulate(depth=3, classes=3, width=5, samples_per_class=3, branch_factors=2, seed=2)
    rep = theory.check(k2, chance_draws=0)
    assert rep.measures["asymmetry"].predicted is None
    assert rep.measures["chain_residual"].predicted is None
    assert rep.measures["numerical_rank"].predicted == 3  # T1 holds for any k
    ce = ramodel.simulate(depth=3, classes=3, width=5, samples_per_class=3, loss="cross_entropy", seed=2)
    rep = theory.check(ce, chance_draws=0)
    rank = rep.measures["numerical_rank"]
    assert rank.predicted == 2 and rank.deviation == 0  # proofs/README: C - 1 for cross-entropy
    assert rep.measures["asymmetry"].deviation <= 1e-6


def test_non_orthogonal_skips_keep_t6_but_not_t3(sim_ar1):
    rep = theory.check(sim_ar1)
    assert rep.info["skips"] == "general"
    assert rep.measures["skip_asymmetry"].deviation <= 1e-6
    assert rep.measures["chain_residual"].deviation <= 1e-6
    asym = rep.measures["asymmetry"]
    assert asym.predicted is None  # T3 needs identity skips
    assert asym.per_layer[-1] > 1e-2  # J_L itself is clearly not symmetric
    assert rep.measures["gain_share_error"].predicted is None


def test_correlation_family_from_the_registry():
    s = ramodel.simulate(depth=3, classes=3, width=6, samples_per_class=3, skip="correlation", seed=3)
    rep = theory.check(s, chance_draws=0)
    assert rep.measures["skip_asymmetry"].deviation <= 1e-6
    assert rep.measures["asymmetry"].per_layer[-1] > 1e-2


def test_zero_skips_have_no_skip_asymmetry():
    s = ramodel.simulate(depth=2, classes=2, width=4, samples_per_class=3, skip="none", seed=0)
    rep = theory.check(s, chance_draws=0)
    assert "skip_asymmetry" in rep.unavailable and "zero" in rep.unavailable["skip_asymmetry"]
    assert rep.measures["chain_residual"].deviation <= 1e-6


# ------------------------------------------------------------------ at chance
@pytest.fixture(scope="module")
def gaussian_report():
    L, d, C, N = 4, 16, 3, 64
    rng = np.random.default_rng(7)
    src = {
        "jacobians": rng.standard_normal((L, N, d, d)) / np.sqrt(d),
        "representations": rng.standard_normal((L + 1, N, d)),
        "classifier": rng.standard_normal((C, d)),
        "classes": C,
    }
    return theory.check(src, weight_decay=(1e-2, 1e-2), seed=7)


# About five standard deviations of value - chance over 20 seeds (see the module docstring).
CHANCE_TOL = {
    "chain_residual": 0.012,
    "classifier_residual": 0.012,
    "asymmetry": 0.015,
    "depth_spread": 0.075,
    "psd_defect": 0.035,
    "closed_form_error": 0.04,
    "gain_share_error": 0.15,
    "linearity": 0.11,
    "skip_asymmetry": 0.03,
}


def test_gaussian_jacobians_sit_at_chance(gaussian_report):
    rep = gaussian_report
    for name, tol in CHANCE_TOL.items():
        m = rep.measures[name]
        assert abs(m.value - m.chance) <= tol, (name, m.value, m.chance)
    # The rotation keeps singular values: spectral measures equal their chance exactly.
    for name in ("numerical_rank", "energy_top_C"):
        m = rep.measures[name]
        assert m.chance == pytest.approx(m.value, abs=1e-12)
    # Closed forms of the Gaussian chance levels: E|X - X^T|^2 / (4 E|X|^2) = (d-1)/(2d);
    # independent isotropic layers give |J_l - Jbar| / |Jbar| ~ sqrt(L - 1).
    d, L = 16, 4
    assert rep.measures["asymmetry"].chance == pytest.approx(math.sqrt((d - 1) / (2 * d)), abs=0.01)
    assert rep.measures["depth_spread"].chance == pytest.approx(math.sqrt(L - 1), abs=0.03)
    assert abs(rep.measures["linearity"].chance) <= 3 / math.sqrt(d)


def test_chance_is_reproducible_and_seeded(sim):
    a = theory.check(sim, seed=5, chance_draws=3)
    b = theory.check(sim, seed=5, chance_draws=3)
    c = theory.check(sim, seed=6, chance_draws=3)
    assert a.measures["asymmetry"].chance == b.measures["asymmetry"].chance
    assert a.measures["asymmetry"].chance != c.measures["asymmetry"].chance
    none = theory.check(sim, chance_draws=0)
    assert none.measures["asymmetry"].chance is None


# --------------------------------------------------------------- invariance
@given(
    L=st.integers(2, 3),
    d=st.integers(3, 6),
    N=st.integers(1, 3),
    skip=st.sampled_from(["identity", "random", "ar1"]),
    layout=st.sampled_from(["dense", "factors"]),
    seed=st.integers(0, 2**16),
)
def test_every_measure_is_invariant_under_a_change_of_basis(L, d, N, skip, layout, seed):
    rng = np.random.default_rng(seed)
    C = 2
    M = {"identity": None, "random": rng.standard_normal((L, d, d)), "ar1": ar1(d)}[skip]
    src = random_set(rng, L=L, N=N, d=d, C=C, skips=M)
    Q = haar(rng, d)
    rot = dict(src)
    rot["jacobians"] = Q @ src["jacobians"] @ Q.T
    rot["representations"] = src["representations"] @ Q.T
    rot["classifier"] = src["classifier"] @ Q.T
    if M is not None:
        rot["skips"] = Q @ M @ Q.T
    if layout == "factors":
        src, rot = factors_of(src, d), factors_of(rot, d)
    a = theory.check(src, weight_decay=(1e-2, 3e-2), chance_draws=0)
    b = theory.check(rot, weight_decay=(1e-2, 3e-2), chance_draws=0)
    assert set(a.measures) == set(b.measures)
    for name, m in a.measures.items():
        np.testing.assert_allclose(b.measures[name].samples, m.samples, rtol=1e-8, atol=1e-10, err_msg=name)


# ---------------------------------------------------------------- layouts
def test_per_input_layout_equals_the_stacked_per_input_results():
    rng = np.random.default_rng(11)
    src = random_set(rng, L=3, N=4, d=5, C=2, skips=ar1(5))
    full = theory.check(src, weight_decay=(1e-2, 1e-2), chance_draws=0)
    for n in range(4):
        one = dict(src)
        one["jacobians"] = src["jacobians"][:, n : n + 1]
        one["representations"] = src["representations"][:, n : n + 1]
        one["labels"] = src["labels"][n : n + 1]
        single = theory.check(one, weight_decay=(1e-2, 1e-2), chance_draws=0)
        for name, m in full.measures.items():
            np.testing.assert_allclose(single.measures[name].samples[:, 0], m.samples[:, n], rtol=1e-13,
                                       atol=1e-15, err_msg=name)


def test_shared_jacobians_equal_their_broadcast_per_input_layout(sim):
    N = sim.representations.shape[1]
    js = JacobianSet(labels=sim.labels, classes=sim.classes,
                     jacobians=np.ascontiguousarray(np.broadcast_to(sim.jacobians[:, None], (4, N, 6, 6))),
                     representations=sim.representations, classifier=sim.classifier)
    a = theory.check(sim, seed=3, chance_draws=2)
    b = theory.check(js, seed=3, chance_draws=2, weight_decay=sim.weight_decay)
    assert b.info["input_dependent"] and not a.info["input_dependent"]
    for name, m in a.measures.items():
        got = b.measures[name]
        np.testing.assert_allclose(got.samples, np.broadcast_to(m.samples, got.samples.shape), atol=1e-15)
        assert got.chance == pytest.approx(m.chance, abs=1e-12), name  # the same rotations per layer


@pytest.mark.parametrize("skip", ["identity", "ar1", "zero"])
def test_dense_and_exact_factors_agree(skip):
    rng = np.random.default_rng(5)
    d = 6
    M = {"identity": None, "ar1": ar1(d), "zero": np.zeros((d, d))}[skip]
    src = random_set(rng, L=3, N=3, d=d, C=3, skips=M)
    dense = theory.check(src, weight_decay=(1e-2, 2e-2), chance_draws=2)
    fac = theory.check(factors_of(src, d), weight_decay=(1e-2, 2e-2), chance_draws=2)
    if skip != "identity":
        assert "needs dense Jacobians" in fac.unavailable["gain_share_error"]
    for name, m in fac.measures.items():
        ref = dense.measures[name]
        np.testing.assert_allclose(m.samples, ref.samples, rtol=1e-10, atol=1e-12, err_msg=name)
        assert m.chance == pytest.approx(ref.chance, abs=1e-10), name
        assert "from factors" in m.note


def test_low_rank_factors_of_a_converged_run(sim):
    """rank J = C: C + 1 triplets hold the numerical rank, and every measure matches."""
    U, S, V = top_singular(sim.jacobians, 4)
    src = {"U": U, "S": S, "V": V, "representations": sim.representations, "classifier": sim.classifier,
           "labels": sim.labels, "classes": 3}
    fac = theory.check(src, weight_decay=sim.weight_decay, chance_draws=2)
    dense = theory.check(sim, chance_draws=2)
    assert not fac.unavailable
    for name, m in fac.measures.items():
        np.testing.assert_allclose(m.samples, dense.measures[name].samples, atol=1e-10, err_msg=name)
        assert m.chance == pytest.approx(dense.measures[name].chance, abs=1e-10), name
        if m.predicted == 0.0:
            assert m.deviation <= 1e-6, name


def test_wide_factors_use_per_input_frames():
    rng = np.random.default_rng(2)
    L, N, d, k = 2, 3, 600, 3
    U = np.linalg.qr(rng.standard_normal((L, N, d, k)))[0]
    V = np.linalg.qr(rng.standard_normal((L, N, d, k)))[0]
    S = np.zeros((L, N, k))
    S[..., 0], S[..., 1] = 1.0, 0.5  # rank 2 < k: the factors hold the numerical rank
    rep = theory.check({"U": U, "S": S, "V": V, "classes": 2}, chance_draws=4)
    assert rep.info["rotation"] == "per layer and input (Haar frames)"
    # Random frames in d = 600: almost orthogonal, so near-maximal asymmetry at chance.
    assert rep.measures["asymmetry"].chance == pytest.approx(1 / math.sqrt(2), abs=0.02)


def test_float32_is_kept():
    rng = np.random.default_rng(0)
    src = random_set(rng)
    src["jacobians"] = src["jacobians"].astype(np.float32)
    rep = theory.check(src, chance_draws=1)
    assert rep.info["dtype"] == "float32"
    ref = theory.check(random_set(np.random.default_rng(0)), chance_draws=0)
    assert rep.measures["asymmetry"].value == pytest.approx(ref.measures["asymmetry"].value, rel=1e-5)


def test_array_api_strict_matches_numpy():
    xp = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(4)
    src = random_set(rng)
    ref = theory.check(src, weight_decay=(1e-2, 1e-2), chance_draws=1)
    moved = {k: (xp.asarray(v) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v) for k, v in src.items()}
    got = theory.check(moved, weight_decay=(1e-2, 1e-2), chance_draws=1)
    assert got.info["namespace"] == "array_api_strict"
    for name, m in ref.measures.items():
        np.testing.assert_allclose(got.measures[name].samples, m.samples, atol=1e-13, err_msg=name)


# ---------------------------------------------------------------- bad input
def test_truncated_factors_are_refused_by_name_or_measured_with_a_note():
    rng = np.random.default_rng(3)
    src = random_set(rng, d=6)
    fac = factors_of(src, 2)  # full-rank Jacobians: 2 triplets miss most of the spectrum
    rep = theory.check(fac, chance_draws=0)
    assert "asymmetry" not in rep.measures
    assert "needs dense Jacobians" in rep.unavailable["asymmetry"]
    assert "allow_truncated" in rep.unavailable["asymmetry"]
    assert "asymmetry" in str(rep)
    rep = theory.check(fac, chance_draws=0, allow_truncated=True)
    assert "rank-2 truncation" in rep.measures["asymmetry"].note
    assert "gain_share_error" in rep.unavailable  # needs the top C = 3 singular values


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda s: s.update(skips=np.eye(5)), "'skips' must have shape"),
        (lambda s: s.update(skips=np.ones((2, 6, 6))), "'skips' must have shape"),
        (lambda s: s.update(labels=np.zeros(3, dtype=int)), "'labels'"),
        (lambda s: s.update(representations=s["representations"][:, :3]), "'representations'"),
        (lambda s: s["jacobians"].__setitem__((0, 0, 0, 0), np.nan), "finite"),
        (lambda s: s.pop("classes"), "classes"),
        (lambda s: s.pop("jacobians"), "no Jacobians"),
        (lambda s: s.update(U=s["jacobians"]), "exactly one"),
        (lambda s: s.update(classifier=np.ones((2, 6))), "'classifier'"),
        (lambda s: s.update(jacobians=s["jacobians"].astype(int)), "float32 or float64"),
    ],
)
def test_bad_sources_are_named(change, match):
    src = random_set(np.random.default_rng(0))
    src["jacobians"] = src["jacobians"].copy()
    change(src)
    with pytest.raises((ValueError, TypeError), match=match):
        theory.check(src, chance_draws=0)


def test_bad_arguments_are_named(sim):
    with pytest.raises(ValueError, match="chance_draws"):
        theory.check(sim, chance_draws=-1)
    with pytest.raises(ValueError, match="disagrees"):
        theory.check(sim, skips=ar1(6))
    with pytest.raises(ValueError, match="disagrees"):
        theory.check(sim, weight_decay=(1.0, 1.0))
    with pytest.raises(ValueError, match="disagrees"):
        theory.check(sim, classes=4)
    with pytest.raises(TypeError, match="fitted must be a Simulation"):
        theory.check(sim, fitted=sim.jacobians)
    other = ramodel.simulate(depth=2, classes=3, width=6, samples_per_class=2, seed=0)
    with pytest.raises(ValueError, match="depth and width"):
        theory.check(sim, fitted=other)
    bad = factors_of(random_set(np.random.default_rng(0)), 6)
    bad["U"] = bad["U"] * 1.01
    with pytest.raises(ValueError, match="orthonormal"):
        theory.check(bad)


def test_measures_undefined_everywhere_are_reported_not_nan():
    src = random_set(np.random.default_rng(0))
    src["jacobians"] = np.zeros_like(src["jacobians"])
    rep = theory.check(src, chance_draws=1)
    for name in ("asymmetry", "psd_defect", "numerical_rank", "linearity"):
        assert "undefined" in rep.unavailable[name]
    json.dumps(rep.to_dict(), allow_nan=False)


# ------------------------------------------------------------ fitted model
def test_fitted_comparison_against_numpy(sim):
    from ramodel.fit import fit_ujm

    rng = np.random.default_rng(0)
    N = sim.representations.shape[1]
    J = np.broadcast_to(sim.jacobians[:, None], (4, N, 6, 6)) + 0.01 * rng.standard_normal((4, N, 6, 6))
    js = JacobianSet(labels=sim.labels, classes=3, jacobians=J, representations=sim.representations)
    fit = fit_ujm(js)
    rep = theory.check(js, fitted=fit, chance_draws=0)
    assert rep.info["fit_k"] == 3
    Un, Sn, _ = np.linalg.svd(J)
    Uf, Sf, Vft = np.linalg.svd(fit.jacobians)
    left = np.sum((np.swapaxes(Un[..., :3], -1, -2) @ Uf[:, None, :, :3]) ** 2, axis=(-2, -1)) / 3
    np.testing.assert_allclose(rep.fit["subspace_alignment_left"].samples, left, atol=1e-10)
    np.testing.assert_allclose(rep.fit["sigma_ratio_2"].samples, Sn[..., 1] / Sf[:, None, 1], rtol=1e-10)
    assert rep.fit["subspace_alignment_left"].chance == 0.5
    assert rep.fit["subspace_alignment_right"].value > 0.9  # a near copy of a UJM solution
    assert rep.fitted.measures["asymmetry"].deviation <= 1e-6
    text = str(rep)
    assert "fitted" in text and "subspace_alignment_left" in text


def test_fitted_alignment_of_random_jacobians_is_near_k_over_d():
    from ramodel.fit import fit_ujm

    rng = np.random.default_rng(1)
    L, N, d, C = 2, 48, 16, 3
    src = random_set(rng, L=L, N=N, d=d, C=C)
    src["representations"] = rng.standard_normal((L + 1, N, d))
    fit = fit_ujm(src, seed=1)
    rep = theory.check(src, fitted=fit, chance_draws=0)
    m = rep.fit["subspace_alignment_left"]
    # mean of |U^T U*|_F^2 / k over Haar U is exactly k/d; std of the mean over 96 samples ~ 0.01.
    assert m.spread.mean == pytest.approx(C / d, abs=0.05)


# ------------------------------------------------------------------ report
def test_report_export_and_display(sim, tmp_path):
    rep = theory.check(sim, chance_draws=2)
    d = rep.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert d["measures"]["asymmetry"]["predicted"] == 0.0
    path = rep.save(tmp_path / "theory.json")
    assert json.loads(path.read_text()) == d
    assert [p.name for p in tmp_path.iterdir()] == ["theory.json"]  # no temporary left
    with pytest.raises(FileNotFoundError):
        rep.save(tmp_path / "missing" / "theory.json")
    with pytest.raises(IsADirectoryError):
        rep.save(tmp_path)
    text = str(rep)
    for word in ("theorem", "chance", "predicted", "T3", "asymmetry", "per layer"):
        assert word in text
    assert "<table>" in rep._repr_html_()
    assert "TheoryReport(" in repr(rep)
    with pytest.raises(AttributeError):
        rep.measures = {}
    with pytest.raises(TypeError):
        rep.measures["asymmetry"] = None


def test_closed_form_from_factors_matches_the_dense_closed_form():
    rng = np.random.default_rng(9)
    for C, d in ((3, 7), (4, 4), (5, 3)):  # includes rank W < C
        W = rng.standard_normal((C, d))
        F, t = theory._closed_form_factors(W, (0.5, 2.0), np)
        np.testing.assert_allclose((F * t) @ F.T, theory.closed_form_jacobian(W, (0.5, 2.0)), atol=1e-12)


def test_low_rank_factors_in_a_wide_space_match_dense():
    """r = 2Lk < d: T4's end-to-end gains need the singular values 1 of the complement.

    With C = 9 > r = 8 the top C gains include a 1 from outside span[P, Q], and the
    stored k = 2 singular values are padded with zeros to C.
    """
    rng = np.random.default_rng(8)
    L, N, d = 2, 3, 10
    u, v = rng.standard_normal((2, L, N, d, 1))
    src = {"jacobians": 0.3 * u @ np.swapaxes(v, -1, -2), "representations": rng.standard_normal((L + 1, N, d)),
           "classes": 9}
    dense = theory.check(src, chance_draws=1)
    fac = theory.check(factors_of(src, 2), chance_draws=1)
    assert set(fac.measures) == set(dense.measures) and "gain_share_error" in fac.measures
    for name, m in fac.measures.items():
        np.testing.assert_allclose(m.samples, dense.measures[name].samples, rtol=1e-10, atol=1e-12, err_msg=name)
