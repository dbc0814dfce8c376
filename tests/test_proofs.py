"""The SymPy proofs of ``proofs/`` (MODEL.md §2-§3): every proof runs and every check can fail.

``proofs/`` is not part of the installed package, so the repository root is put on
``sys.path`` here. The full run (symbolic + numerical, all theorems) happens once per
session; the Hypothesis properties re-check the theorems on drawn small configurations
of ``ramodel.simulate`` at gradient norm <= 1e-8 with the tolerance of
``proofs._numerics.tolerance`` (1e-9 + 1e3 * |grad| / min(lambda)).
"""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sympy import Identity, MatrixSymbol

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import proofs  # noqa: E402
from proofs import _numerics as nm  # noqa: E402
from proofs import t1_rank, t2_chain, t3_identity_skips, t4_depth_scaling, t5_trajectories, t6_entangled  # noqa: E402
from proofs._exact import ProofFailure, ProofLog, Rules, nc_is_zero, require_nc_zero, skew  # noqa: E402

needs_simulate = pytest.mark.skipif(not nm.simulate_available(), reason="ramodel.simulate is not available")

#: Hypothesis examples per simulation property: small in the default (ci) profile.
N_EXAMPLES = 10 if settings.default.max_examples <= 25 else max(10, settings.default.max_examples // 100)

EXPECTED_STATUS = {name: "proven" for name in proofs.THEOREMS}


@pytest.fixture(scope="session")
def full_run():
    out = io.StringIO()
    results, failures = proofs.run_all(numerical=True, stream=out, raise_on_failure=False)
    return {r.name: r for r in results}, failures, out.getvalue()


def test_every_proof_passes(full_run):
    results, failures, _ = full_run
    assert failures == ()
    assert len(results) == len(proofs.THEOREMS)


@pytest.mark.parametrize("module", proofs.THEOREMS)
def test_status_and_claims(full_run, module):
    results, _, _ = full_run
    name = {"gradient": "gradient"}.get(module, module.split("_")[0].upper())
    res = results[name]
    assert res.status == EXPECTED_STATUS[module]
    assert any(c.scope == "all sizes" for c in res.claims)
    if nm.simulate_available():
        assert res.max_deviation is not None and res.max_deviation <= 1e-6
    d = res.to_dict()
    assert d["name"] == name and isinstance(d["claims"], list | tuple)


def test_printed_one_line_per_theorem(full_run):
    _, _, text = full_run
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == len(proofs.THEOREMS)
    for ln in lines:
        assert " proven " in ln and " s " in ln and "max deviation" in ln


@pytest.mark.parametrize("entry", [["-m", "proofs", "--help"], [os.path.join("proofs", "run_all.py"), "--help"]])
def test_command_line_entry_points(entry):
    done = subprocess.run([sys.executable, *entry], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--symbolic-only" in done.stdout


# --- the decision procedure rejects non-identities --------------------------------

d = sp.Symbol("d", integer=True, positive=True)
A, B, J, Q = (MatrixSymbol(n, d, d) for n in ("A", "B", "J", "Q"))


@pytest.mark.parametrize(
    "expr",
    [
        J * J.T - J.T * J,  # J J^T = J^T J only for normal J
        (A * B).T - A.T * B.T,  # transpose reverses products
        skew(J),  # J is not symmetric in general
        A * B - B * A,
        Q.T * Q - Identity(d),  # not an identity unless Q is declared orthogonal
    ],
)
def test_false_identities_are_rejected(expr):
    assert not nc_is_zero(expr)
    with pytest.raises(ProofFailure):
        require_nc_zero(expr, "a false identity")


def test_rules_apply_only_to_declared_symbols():
    orth = Rules.make(orthogonal=["Q"])
    assert nc_is_zero(Q.T * Q - Identity(d), orth)
    assert nc_is_zero(A * Q * Q.T * B - A * B, orth)
    assert not nc_is_zero(A.T * A - Identity(d), orth)
    u, v = MatrixSymbol("u", d, 1), MatrixSymbol("v", d, 1)
    c = sp.Symbol("c")
    assert nc_is_zero(u * v.T * u * v.T - c * u * v.T, Rules.make(pairs={(("v", True), ("u", False)): c}))
    assert not nc_is_zero(u * v.T * u * v.T - c * u * v.T)


def test_spec_sketch_step_is_an_identity():
    # "J + J J^T symmetric => J symmetric": skew(J + J J^T) = skew(J) exactly.
    assert nc_is_zero(skew(J + J * J.T) - skew(J))
    # ... whereas with J^T J on the other side it would be false in general.
    assert not nc_is_zero(skew(J + J * J) - skew(J))


# --- numerical checks on Hypothesis-drawn converged simulations ------------------


@st.composite
def configs(draw, *, loss=None, classes=None, k=1):
    C = classes if classes is not None else draw(st.integers(2, 3))
    return dict(
        depth=draw(st.integers(1, 4)),
        classes=C,
        width=draw(st.integers(max(C, 2), 6)),
        samples_per_class=draw(st.integers(1, 3)),
        loss=loss if loss is not None else draw(st.sampled_from(["mse", "cross_entropy"])),
        branch_factors=k,
        weight_decay=(draw(st.sampled_from([1e-2, 3e-2, 1e-1])), draw(st.sampled_from([1e-2, 3e-2, 1e-1]))),
        seed=draw(st.integers(0, 10_000)),
    )


def _log():
    return ProofLog("test", "test")


@needs_simulate
@settings(max_examples=N_EXAMPLES)
@given(cfg=configs(), family=st.sampled_from(nm.SKIP_FAMILIES))
def test_t1_t2_t6_any_skip(cfg, family):
    # Without skips a small initial point leads to the saddle J = 0; start larger there.
    sim = nm.converged(skip=family, init_scale=1.0 if family == "none" else 0.1, **cfg)
    assert sim.grad_norm <= nm.GRAD_MAX
    assume(not nm.trivial(sim))
    log = _log()
    t1_rank.check_simulation(sim, log)
    t2_chain.check_simulation(sim, log)
    t6_entangled.check_simulation(sim, family, log)
    assert log.deviations and max(log.deviations) <= nm.tolerance(sim)


@needs_simulate
@settings(max_examples=N_EXAMPLES)
@given(cfg=configs())
def test_t3_t4_identity_skips(cfg):
    sim = nm.converged(**cfg)
    log = _log()
    t3_identity_skips.check_simulation(sim, log)
    t4_depth_scaling.check_simulation(sim, log)
    assert not any("hypothesis fails" in n for n in log.details)
    assert len(log.deviations) >= 4 * cfg["depth"]


@needs_simulate
@settings(max_examples=N_EXAMPLES)
@given(cfg=configs(loss="cross_entropy", classes=2))
def test_t5_binary_cross_entropy(cfg):
    sim = nm.converged(**cfg)
    log = _log()
    t5_trajectories.check_simulation(sim, log)
    assert len(log.deviations) >= 1 + 3 * cfg["depth"] - 1


@needs_simulate
@settings(max_examples=max(2, N_EXAMPLES // 2))
@given(cfg=configs(k=2))
def test_k2_rank_and_gradient_symmetry(cfg):
    # Large lambda_J makes J = 0 optimal for k = 2 (a nuclear-norm-like penalty): use 1e-2.
    sim = nm.converged(**{**cfg, "weight_decay": (1e-2, 1e-2)})
    assume(not nm.trivial(sim))
    log = _log()
    t1_rank.check_simulation(sim, log)
    t3_identity_skips.check_simulation(sim, log, observe_k2=False)
    assert log.deviations


# --- the checks fail when the conclusion is false --------------------------------


@needs_simulate
def test_t3_check_detects_asymmetry():
    sim = nm.converged(depth=3, classes=3, width=5)
    J = np.array(sim.jacobians)
    J[1] += 1e-4 * np.triu(np.ones_like(J[1]), 1)
    with pytest.raises(ProofFailure, match="asym"):
        t3_identity_skips.check_simulation(dataclasses.replace(sim, jacobians=J), _log())


@needs_simulate
def test_t2_check_detects_broken_chain():
    sim = nm.converged(depth=3, classes=3, width=5, skip="orthogonal")
    J = np.array(sim.jacobians) * np.array([1.0, 1.001, 1.0])[:, None, None]
    with pytest.raises(ProofFailure, match="chain residual"):
        t2_chain.check_simulation(dataclasses.replace(sim, jacobians=J), _log())


@needs_simulate
def test_t1_check_detects_an_extra_direction():
    sim = nm.converged(depth=2, classes=2, width=5, samples_per_class=3, loss="cross_entropy")
    J = np.array(sim.jacobians)
    J[0] += 1e-4 * np.outer(np.arange(5.0), np.ones(5))
    with pytest.raises(ProofFailure):
        t1_rank.check_simulation(dataclasses.replace(sim, jacobians=J), _log())


@needs_simulate
def test_cross_entropy_rank_refinement_is_specific_to_cross_entropy():
    # MSE Jacobians reach rank C (the C - 1 bound is for cross-entropy only).
    sim = nm.converged(depth=2, classes=3, width=5, samples_per_class=3, loss="mse")
    s = np.linalg.svd(np.asarray(sim.jacobians), compute_uv=False)
    assert np.all(s[:, 2] / s[:, 0] > 1e-3)
    ce = nm.converged(depth=2, classes=3, width=5, samples_per_class=3, loss="cross_entropy")
    s = np.linalg.svd(np.asarray(ce.jacobians), compute_uv=False)
    assert np.all(s[:, 2] / s[:, 0] < 1e-9)


@needs_simulate
def test_binary_mse_is_not_rank_one():
    # T5's rank-one hypothesis comes from cross-entropy; binary MSE gives rank 2 here.
    sim = nm.converged(depth=3, classes=2, width=4, samples_per_class=3, loss="mse")
    s = np.linalg.svd(np.asarray(sim.jacobians[-1]), compute_uv=False)
    assert s[1] / s[0] > 1e-3


@needs_simulate
@pytest.mark.parametrize("family", ["correlation", "sparse_unipotent"])
def test_orthogonal_conclusions_do_not_extend(family):
    # Measured counterexample: equal singular values and symmetric J_l M_l^T at l < L
    # are specific to orthogonal skips.
    sim = nm.converged(skip=family, depth=3, classes=3, width=5, samples_per_class=3)
    obs = t6_entangled.observations(sim)
    assert obs["singular_value_spread"] > 1e-2
    assert obs["max_asym_lower"] > 1e-2
    t6_entangled.check_simulation(sim, family, _log())  # what is proven still holds


@needs_simulate
def test_orthogonal_skips_bend_binary_trajectories():
    sim = nm.converged(skip="orthogonal", depth=4, classes=2, width=4, samples_per_class=3, loss="cross_entropy")
    straight = nm.converged(depth=4, classes=2, width=4, samples_per_class=3, loss="cross_entropy")
    assert t6_entangled.observations(sim)["line_defect"] > 1e-2
    assert t6_entangled.observations(straight)["line_defect"] < 1e-8


def test_lambdify_backends_agree():
    ref, worst = nm.lambdify_eval((t3_identity_skips.mu,), t3_identity_skips.f_expr, (np.array([0.0, 0.75, 2.0]),))
    np.testing.assert_allclose(ref, [0.0, 0.5, 1.0], atol=1e-15)
    if len(nm.backends()) > 1:
        assert worst is not None and worst <= 1e-12
    else:
        assert worst is None
