"""The open theorems T7-T10 of MODEL.md §6: statuses, conjecture labels, and independent re-checks.

The full proof run is covered by tests/test_proofs.py (which runs every module in
``proofs.THEOREMS``); here the new modules' specific claims are re-checked on inputs the
proofs do not use, and the slow tests re-run the recorded evidence of the conjectures.
"""

from __future__ import annotations

import io
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import proofs  # noqa: E402
from proofs import _numerics as nm  # noqa: E402
from proofs import t7_depth_law, t8_binary_ra1, t9_minimisers, t10_two_factor  # noqa: E402

needs_simulate = pytest.mark.skipif(not nm.simulate_available(), reason="ramodel.simulate is not available")


def test_listing_has_T1_to_T10_with_status_and_conjecture_labels():
    out = io.StringIO()
    results, failures = proofs.run_all(numerical=False, stream=out, verbose=True, raise_on_failure=False)
    assert failures == ()
    text = out.getvalue()
    assert "assumed (textbook):" in text and "CONJECTURE:" in text
    names = [r.name for r in results]
    assert names == ["gradient"] + [f"T{i}" for i in range(1, 11)]
    lines = {ln.split()[0]: ln for ln in text.splitlines() if ln.strip() and not ln.startswith(" ")}
    for name in ("T7", "T9", "T10"):
        assert "proven + 1 conjecture" in lines[name]
    for name in ("T1", "T2", "T3", "T4", "T5", "T6", "T8"):
        assert "conjecture" not in lines[name]
    by = {r.name: r for r in results}
    for name in ("T7", "T9", "T10"):
        (c,) = by[name].conjectures
        assert c.startswith("CONJECTURE: ") and " EVIDENCE: " in c
    # every proven module that rests on a textbook fact names it with a citation
    for name in ("T3", "T8", "T9", "T10"):
        assert by[name].assumptions and all("[" in a and "]" in a for a in by[name].assumptions)


# --- T8 on profiles the proof does not draw --------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_t8_lines_and_bound_on_random_profiles(seed):
    rng = np.random.default_rng(1000 + seed)
    d, L = 5, int(rng.integers(2, 40))
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    x = rng.standard_normal(d)
    sig = rng.uniform(0.01, 0.3, L)
    err, ratio, bound = t8_binary_ra1.trajectory_check(sig, u, u, x)
    assert err < 1e-12
    assert ratio <= bound * (1 + 1e-12)
    # the trajectory is a line: displacements h_l - x are all parallel to u
    h, P = [x], np.eye(d)
    for s in sig:
        P = (np.eye(d) + s * np.outer(u, u)) @ P
        h.append(P @ x)
    disp = np.stack(h[1:]) - x
    assert np.linalg.svd(disp, compute_uv=False)[1] < 1e-12 * np.abs(disp).max()


def test_t8_bound_is_tight_for_equal_sigma_up_to_one_step():
    s, L = 0.05, 30
    _, ratio, bound = t8_binary_ra1.trajectory_check(np.full(L, s), np.eye(3)[0], np.eye(3)[0], np.ones(3))
    assert ratio == pytest.approx((1 + s) ** (L - 1), rel=1e-12)
    assert bound == pytest.approx(ratio * (1 + s), rel=1e-12)


# --- T9: the competitor at arbitrary points --------------------------------------


@needs_simulate
@pytest.mark.parametrize("seed", range(4))
def test_t9_competitor_keeps_outputs_and_never_raises_penalty(seed):
    problem, _ = t9_minimisers._problem()
    rng = np.random.default_rng(seed)
    th = rng.standard_normal(problem.pack(np.zeros((2, 3, 3)), np.zeros((2, 3))).size) * 0.8
    for layer in range(problem.L):
        comp = t9_minimisers.competitor(problem, th, layer)
        assert problem.data(comp) == pytest.approx(problem.data(th), rel=1e-10, abs=1e-14)
        assert problem.phi(comp) <= problem.phi(th) + 1e-12
        J, _ = problem.unpack(comp)
        A = np.eye(3) + J[layer]
        assert np.allclose(A, A.T, atol=1e-12) and np.linalg.eigvalsh(A).min() >= -1e-12


@needs_simulate
def test_t9_global_minimiser_satisfies_the_hypothesis_over_restarts():
    # Independent of the proof's search: simulate from several seeds of the initial point.
    for seed in range(4):
        sim = nm.converged(depth=2, classes=2, width=3, samples_per_class=4, init_scale=1.0 + seed)
        J = np.asarray(sim.jacobians)
        assert min(np.linalg.eigvalsh((x + x.T) / 2).min() for x in J) > -1e-9


@needs_simulate
@pytest.mark.slow
def test_t9_recorded_saddle_search():
    rows, _ = t9_minimisers.saddle_search(t9_minimisers.FULL_SEARCH)
    conv = [r for r in rows if r["grad"] <= 1e-12]
    minimiser = [r for r in conv if r["hypothesis"]]
    saddles = [r for r in conv if not r["hypothesis"]]
    assert len(minimiser) == 16 and len(saddles) == 7
    assert all(abs(r["phi"] - r["phi_min"]) < 1e-9 and r["hess_min"] > 0 for r in minimiser)
    assert all(r["hess_min"] < -0.2 for r in saddles)
    assert sorted({round(r["phi"], 5) for r in saddles}) == [0.26256, 0.26559, 0.51001]


# --- T7: the reduced problem and the full model ----------------------------------


def test_t7_bounds_hold_at_many_depths():
    from ramodel import depth_law

    prm = depth_law.reduced_parameters(classes=3, weight_decay=(2e-2, 5e-2), input_norm=0.7)
    for L in (1, 5, 50, 500, 5000):
        t = depth_law.optimal_log_gain([L], branch_factors=1, **prm)[0]
        lo, hi = t7_depth_law.bounds_k1(L, t_value=t, **prm)
        assert lo - 1e-12 <= t <= hi + 1e-12
        assert t7_depth_law.solve_reduced_bruteforce(L, 1, **prm) == pytest.approx(t, rel=1e-7, abs=1e-9)


@needs_simulate
@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 2])
def test_t7_full_model_at_L4096(k):
    from ramodel import depth_law

    sim = t7_depth_law.reduced_simulation(4096, k)
    assert sim.grad_norm <= 1e-8
    s1 = np.linalg.svd(np.asarray(sim.jacobians), compute_uv=False)[:, 0]
    pred = depth_law.predicted_sigma1([4096], branch_factors=k, classes=2, input_norm=0.5)[0]
    np.testing.assert_allclose(s1, pred, rtol=1e-8)


# --- T10 ---------------------------------------------------------------------------


@needs_simulate
def test_t10_balancedness_on_other_runs():
    for cfg in (dict(depth=2, classes=3, width=4, branch_factors=2, skip="correlation", seed=3),
                dict(depth=2, classes=2, width=4, branch_factors=3, seed=5, init_scale=0.5)):
        sim = nm.converged(**cfg)
        assert np.max(t10_two_factor.balancedness_residuals(sim)) <= nm.tolerance(sim)


@pytest.mark.slow
def test_t8_trained_binary_net_steps_within_the_bound():
    pytest.importorskip("torch")
    from proofs import evidence_t8_trained

    m = evidence_t8_trained.measure(depth=6, width=16, steps=3000, seed=0)
    assert m["test_accuracy"] > 0.95
    # T8's hypotheses hold approximately after terminal-phase training ...
    assert np.median(m["rank_one"]) < 1e-2 and np.median(m["uv"]) > 0.99 and np.median(m["uu"]) > 0.99
    assert np.median(m["line_defect"]) < 1e-2
    # ... and the measured max/min step ratio stays within the proven bound (up to that approximation)
    assert np.mean(m["ratio"] <= 1.02 * m["bound"]) >= 0.9


def test_every_claim_has_its_own_check():
    # Hygiene: no "string lemma". In every function of proofs/, each log.claim(...) must be preceded
    # (since the previous claim) by a decision call: require*, a numerical deviation or a check helper.
    import ast
    import glob

    deciding = ("require", "check_top", "deviation", "_mse_fixed", "check_simulation", "check_limit",
                "check_closed_form", "finite_difference_check", "_numerical", "trajectory_check")
    missing = []
    for path in sorted(glob.glob(os.path.join(ROOT, "proofs", "*.py"))):
        tree = ast.parse(open(path, encoding="utf-8").read())
        for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
            seen = False
            calls = sorted((n for n in ast.walk(fn) if isinstance(n, ast.Call)), key=lambda n: (n.lineno, n.col_offset))
            for call in calls:
                name = ast.unparse(call.func)
                if any(k in name for k in deciding):
                    seen = True
                if name.endswith("log.claim"):
                    if not seen:
                        missing.append(f"{os.path.basename(path)}:{call.lineno} ({fn.name})")
                    seen = False
    assert missing == []
