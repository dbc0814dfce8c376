"""``simulate``: convergence, the theorems at the solution, determinism and bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ortho_group

import ramodel
from ramodel import theory
from ramodel.optimize import DivergenceError

#: Every theorem check below passes at gradient norm <= 1e-8 with these tolerances.
GRAD_TOL = 1e-8
THEOREM_TOL = 1e-6


@st.composite
def configs(draw):
    classes = draw(st.integers(2, 5))
    return dict(
        depth=draw(st.integers(1, 16)),
        classes=classes,
        width=draw(st.integers(max(4, classes), 16)),
        samples_per_class=draw(st.integers(2, 6)),
        seed=draw(st.integers(0, 2**16)),
    )


@settings(max_examples=12)
@given(configs())
def test_identity_skips_satisfy_T1_T2_T3(cfg):
    s = ramodel.simulate(**cfg)
    assert s.converged and s.grad_norm <= GRAD_TOL, s.message
    J, W = s.jacobians, s.classifier
    lambda_J, lambda_W = s.weight_decay
    C = cfg["classes"]
    # T1: sigma_{C+1}(J_l) <= |grad| / lambda_J (plus rounding), i.e. rank <= C.
    sigma_next, bound = theory.rank_bound(J, s.grad_norm, lambda_J, C)
    assert np.all(sigma_next <= bound + 1e-12)
    # T2: chain identity and the classifier identity.
    if s.depth > 1:
        assert np.max(theory.chain_residuals(J)) <= THEOREM_TOL
    assert theory.classifier_residual(J[-1], W, (lambda_J, lambda_W)) <= THEOREM_TOL
    # T3: all J_l equal, symmetric, PSD and equal to the closed form.
    assert theory.depth_spread(J) <= THEOREM_TOL
    assert np.max(theory.asymmetry(J)) <= THEOREM_TOL
    assert np.max(theory.psd_defect(J)) <= THEOREM_TOL
    assert theory.closed_form_error(J[-1], W, (lambda_J, lambda_W)) <= THEOREM_TOL


def test_done_when_example_of_the_issue():
    s = ramodel.simulate(depth=8, classes=3, seed=0)
    assert s.converged is True and s.grad_norm <= 1e-8


@pytest.mark.parametrize("shared", [True, False])
def test_haar_orthogonal_skips_satisfy_T2_and_T6(shared):
    L, d, C = 4, 6, 3
    M = ortho_group.rvs(d, random_state=1) if shared else ortho_group.rvs(d, size=L, random_state=1)
    s = ramodel.simulate(depth=L, classes=C, width=d, samples_per_class=4, skip=M, seed=2)
    assert s.converged and s.grad_norm <= GRAD_TOL
    lambda_J, lambda_W = s.weight_decay
    J, Ms = s.jacobians, s.skips
    assert np.max(theory.chain_residuals(J, Ms)) <= THEOREM_TOL
    assert theory.classifier_residual(J[-1], s.classifier, (lambda_J, lambda_W), Ms[-1]) <= THEOREM_TOL
    # T6: J_L M_L^T symmetric, so the right singular vectors are M_L^T times the left ones.
    assert theory.skip_asymmetry(J[-1], Ms[-1]) <= THEOREM_TOL
    U, S, Vt = np.linalg.svd(J[-1] @ Ms[-1].T)
    # J_L = (J_L M_L^T) M_L: the top right singular vectors of J_L are M_L^T u.
    u = np.linalg.svd(J[-1])[0][:, :C]
    v = np.linalg.svd(J[-1])[2][:C].T
    assert np.linalg.norm(u @ u.T - (Ms[-1] @ v) @ (Ms[-1] @ v).T) <= 1e-6
    # rank <= C for any skip (T1).
    sigma_next, bound = theory.rank_bound(J, s.grad_norm, lambda_J, C)
    assert np.all(sigma_next <= bound + 1e-12)


def test_T2_holds_for_a_non_orthogonal_skip():
    """MODEL.md §5: J_L M_L^T is symmetric for any skip, not only orthogonal ones."""
    d = 5
    i = np.arange(d)
    M = 0.6 ** np.abs(i[:, None] - i[None, :])  # AR(1) correlation matrix
    s = ramodel.simulate(depth=3, classes=2, width=d, samples_per_class=4, skip=M, seed=0)
    assert s.converged
    assert np.max(theory.chain_residuals(s.jacobians, s.skips)) <= THEOREM_TOL
    assert theory.skip_asymmetry(s.jacobians[-1], s.skips[-1]) <= THEOREM_TOL
    assert np.max(theory.asymmetry(s.jacobians[-1])) > 1e-3  # J_L itself is not symmetric


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("k", [1, 2])
def test_every_loss_and_branch_count_converges(loss, k):
    s = ramodel.simulate(depth=6, classes=4, width=8, samples_per_class=3, loss=loss, branch_factors=k, seed=3)
    assert s.converged and s.grad_norm <= GRAD_TOL, s.message
    assert s.factors.shape == (6, k, 8, 8)
    np.testing.assert_allclose(s.jacobians, ramodel.model.jacobians_from_factors(s.factors))


def test_result_fields_and_representations():
    s = ramodel.simulate(depth=3, classes=2, width=4, samples_per_class=5, seed=1)
    L, d, N, C = 3, 4, 10, 2
    assert s.jacobians.shape == (L, d, d)
    assert s.skips.shape == (L, d, d)
    assert s.classifier.shape == (C, d)
    assert s.inputs.shape == (d, N)
    assert s.labels.shape == (N,)
    assert s.representations.shape == (L + 1, N, d)
    np.testing.assert_allclose(s.representations[0], s.inputs.T)
    for l in range(L):
        np.testing.assert_allclose(
            s.representations[l + 1], s.representations[l] @ (s.skips[l] + s.jacobians[l]).T, atol=1e-14
        )
    assert s.loss_history.ndim == 1 and s.loss_history[-1] <= s.loss_history[0]
    assert s.config["depth"] == L and s.config["seed"] == 1
    with pytest.raises(AttributeError):
        s.converged = False  # frozen


def test_same_seed_same_result_and_different_seed_differs():
    a = ramodel.simulate(depth=4, classes=3, width=6, seed=11)
    b = ramodel.simulate(depth=4, classes=3, width=6, seed=11)
    c = ramodel.simulate(depth=4, classes=3, width=6, seed=12)
    np.testing.assert_array_equal(a.jacobians, b.jacobians)
    np.testing.assert_array_equal(a.inputs, b.inputs)
    assert a.steps == b.steps
    assert not np.array_equal(a.inputs, c.inputs)


def test_given_inputs_and_labels():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 5))
    y = np.repeat(np.arange(3), 4)
    X_before = X.copy()
    s = ramodel.simulate(depth=2, classes=3, inputs=X, labels=y, seed=0)
    assert s.converged and s.width == 5
    np.testing.assert_array_equal(s.inputs, X.T)
    np.testing.assert_array_equal(X, X_before)
    with pytest.raises(ValueError, match="transposed"):
        ramodel.simulate(depth=2, classes=3, inputs=X.T, labels=y)
    with pytest.raises(ValueError, match="labels"):
        ramodel.simulate(depth=2, classes=3, inputs=X, labels=y[:-1])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, classes=3\)"):
        ramodel.simulate(depth=2, classes=3, inputs=X, labels=y + 1)
    Xbad = X.copy()
    Xbad[0, 0] = np.nan
    with pytest.raises(ValueError, match="inputs must be finite"):
        ramodel.simulate(depth=2, classes=3, inputs=Xbad, labels=y)


def test_array_api_strict_backend_matches_numpy():
    xps = pytest.importorskip("array_api_strict")
    a = ramodel.simulate(depth=3, classes=3, width=5, samples_per_class=3, seed=1, backend=xps, branch_factors=2)
    b = ramodel.simulate(depth=3, classes=3, width=5, samples_per_class=3, seed=1, branch_factors=2)
    assert a.converged
    np.testing.assert_allclose(ramodel.backend.to_numpy(a.jacobians), b.jacobians, rtol=0, atol=1e-12)


def test_float32_converges_to_its_default_tolerance():
    s = ramodel.simulate(depth=4, classes=3, width=6, dtype="float32", seed=0)
    assert s.jacobians.dtype == np.float32
    assert s.converged and s.grad_norm <= 1e-5


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(depth=0), ValueError, "depth must be >= 1"),
        (dict(depth=2.5), TypeError, "depth must be an integer"),
        (dict(classes=1), ValueError, "classes must be >= 2"),
        (dict(width=2, classes=3), ValueError, r"width must be >= classes \(3\)"),
        (dict(weight_decay=(np.nan, 1e-2)), ValueError, "lambda_J"),
        (dict(weight_decay=(1e-2, np.inf)), ValueError, "lambda_W"),
        (dict(loss="hinge"), ValueError, r"loss must be one of \('mse', 'cross_entropy'\)"),
        (dict(backend="jax"), ValueError, "backend must be one of"),
        (dict(dtype="float16"), ValueError, "dtype must be one of"),
        (dict(skip=np.eye(3)), ValueError, r"skip matrices must have shape \(4, 4\) or \(2, 4, 4\)"),
        (dict(skip=np.zeros((3, 4, 4))), ValueError, "skip matrices must have shape"),
        (dict(skip=np.full((4, 4), np.nan)), ValueError, "skip matrices must be finite"),
        (dict(tol=-1.0), ValueError, "tol"),
        (dict(samples_per_class=0), ValueError, "samples_per_class"),
    ],
)
def test_bad_input_is_named(kwargs, exc, match):
    base = dict(depth=2, classes=2, width=4)
    base.update(kwargs)
    with pytest.raises(exc, match=match):
        ramodel.simulate(**base)


def test_cupy_backend_without_gpu_says_why():
    try:
        import cupy  # noqa: F401

        pytest.skip("CuPy is importable here; this checks the message when it is not")
    except Exception:
        pass
    with pytest.raises(RuntimeError, match="cupy"):
        ramodel.simulate(depth=2, classes=2, width=4, backend="cupy")


def test_divergence_is_reported_with_its_step():
    with pytest.raises(DivergenceError, match="step 0"):
        ramodel.simulate(depth=3, classes=2, width=4, mean_scale=1e300, seed=0)


def test_notebook_html_has_a_verdict_per_theorem():
    from html.parser import HTMLParser

    s = ramodel.simulate(depth=3, classes=2, width=4, seed=0)
    text = s._repr_html_()
    cells = []

    class P(HTMLParser):
        def handle_data(self, data):
            cells.append(data.strip())

    P().feed(text)
    assert {"T1", "T2", "T3"} <= set(cells)
    assert cells.count("holds") == 3
