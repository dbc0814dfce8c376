"""fit_ujm: the UJM solved on a network's own features, and its bad inputs."""

import numpy as np
import pytest

import ramodel
from ramodel import theory
from ramodel.fit import fit_ujm
from ramodel.jacobian_set import JacobianSet


def ar1(d, rho=0.5):
    i = np.arange(d)
    return rho ** np.abs(np.subtract.outer(i, i))


@pytest.fixture(scope="module")
def sim():
    return ramodel.simulate(depth=3, classes=3, width=6, samples_per_class=4, seed=0)


@pytest.fixture(scope="module")
def noisy_set(sim):
    """A small synthetic "network": a UJM's features and Jacobians with noise added."""
    rng = np.random.default_rng(0)
    L, N, d = 3, sim.representations.shape[1], 6
    J = np.broadcast_to(sim.jacobians[:, None], (L, N, d, d)) + 0.05 * rng.standard_normal((L, N, d, d))
    R = sim.representations + 0.05 * rng.standard_normal(sim.representations.shape)
    return JacobianSet(labels=sim.labels, classes=3, jacobians=J, representations=R, meta={"arch": "toy"})


def test_fit_converges_on_noisy_features(noisy_set):
    fit = fit_ujm(noisy_set)
    assert fit.converged and fit.grad_norm <= 1e-8
    assert fit.config["dtype"] == "float64"
    assert (fit.depth, fit.width, fit.classes) == (3, 6, 3)
    np.testing.assert_array_equal(fit.inputs.T, noisy_set.representations[0])
    np.testing.assert_array_equal(fit.labels, noisy_set.labels)
    assert fit.config["fit_ujm"] == {"n_inputs": 12, "skips": "identity"}
    # The fit is a UJM critical point: its own theorem measures are at their predictions.
    rep = theory.check(fit, chance_draws=0)
    for name in ("chain_residual", "asymmetry", "closed_form_error", "gain_share_error"):
        assert rep.measures[name].deviation <= 1e-6, name


def test_fit_of_a_ujm_on_its_own_features_is_that_ujm(sim):
    # Same inputs, labels, options and seed: the same problem from the same start.
    fit = fit_ujm(sim)
    np.testing.assert_allclose(fit.jacobians, sim.jacobians, atol=1e-8)
    rep = theory.check(sim, fitted=fit, chance_draws=0)
    for name in ("subspace_alignment_left", "subspace_alignment_right", "sigma_ratio_1", "sigma_ratio_3"):
        np.testing.assert_allclose(rep.fit[name].samples, 1.0, atol=1e-8, err_msg=name)


def test_fit_uses_the_sets_skips_and_options(noisy_set):
    M = ar1(6)
    with_skips = JacobianSet(labels=noisy_set.labels, classes=3, jacobians=noisy_set.jacobians,
                             representations=noisy_set.representations, skips=M)
    fit = fit_ujm(with_skips, loss="cross_entropy", weight_decay=(2e-2, 1e-2), seed=3)
    assert fit.grad_norm <= 1e-8
    np.testing.assert_array_equal(fit.skips, np.broadcast_to(M, (3, 6, 6)))
    assert fit.config["fit_ujm"]["skips"] == "the set's skips"
    assert fit.config["loss"] == "cross_entropy" and fit.weight_decay == (2e-2, 1e-2)
    rep = theory.check(with_skips, fitted=fit, chance_draws=0)
    assert rep.info["fit_k"] == 2  # cross-entropy: rank <= C - 1 (T1)
    assert rep.fitted.measures["skip_asymmetry"].deviation <= 1e-6
    override = fit_ujm(with_skips, skip="identity", max_steps=5000)
    assert override.config["fit_ujm"]["skips"] == "skip= argument"
    np.testing.assert_array_equal(override.skips, np.broadcast_to(np.eye(6), (3, 6, 6)))


def test_fit_accepts_plain_mappings(sim):
    src = {"representations": sim.representations, "labels": sim.labels, "classes": np.int64(3)}
    assert fit_ujm(src).grad_norm <= 1e-8


def test_missing_representations_are_named(sim):
    js = JacobianSet(labels=sim.labels, classes=3, jacobians=np.zeros((3, 12, 6, 6)))
    with pytest.raises(ValueError, match="no 'representations'"):
        fit_ujm(js)


def test_non_finite_features_are_named(sim):
    R = sim.representations.copy()
    R[0, 2, 1] = np.nan
    with pytest.raises(ValueError, match=r"representations'\[0\].*finite"):
        fit_ujm({"representations": R, "labels": sim.labels, "classes": 3})


def test_inputs_and_labels_of_different_lengths(sim):
    with pytest.raises(ValueError, match="12 rows but labels has 11"):
        fit_ujm({"representations": sim.representations, "labels": sim.labels[:11], "classes": 3})


def test_other_bad_calls(sim):
    src = {"representations": sim.representations, "labels": sim.labels, "classes": 3}
    with pytest.raises(TypeError, match="depth"):
        fit_ujm(src, depth=5)
    with pytest.raises(TypeError, match="inputs"):
        fit_ujm(src, inputs=sim.representations[0])
    with pytest.raises(ValueError, match=r"\(L\+1, N, d\)"):
        fit_ujm({**src, "representations": sim.representations[0]})
    with pytest.raises(ValueError, match="labels"):
        fit_ujm({"representations": sim.representations, "classes": 3})
    with pytest.raises(ValueError, match="skip matrices must have shape"):
        fit_ujm({**src, "skips": np.eye(5)})
    with pytest.raises(TypeError):
        fit_ujm(None)


def test_a_run_that_stops_early_warns(sim):
    src = {"representations": sim.representations, "labels": sim.labels, "classes": 3}
    with pytest.warns(RuntimeWarning, match="stopped"):
        fit = fit_ujm(src, max_steps=1, tol=1e-30)
    assert not fit.converged


def test_a_trivial_fit_is_flagged():
    import warnings

    import ramodel

    sim = ramodel.simulate(depth=3, classes=2, width=4, samples_per_class=3, seed=0)
    assert not sim.is_trivial
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitted = ramodel.fit_ujm(sim, branch_factors=2, weight_decay=(10.0, 1e-2))
    assert fitted.is_trivial
    assert any("trivial critical point" in str(w.message) for w in caught)
