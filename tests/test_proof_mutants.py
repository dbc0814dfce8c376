"""Planted wrong formulas (mutants): every proof that rests on a formula must reject its mutant.

How a mutant is fed in: each proof reads its ingredients (the §2 gradient ``gradient.grad_J_expr``
and ``gradient.factor_grad``, T2's ``S_of``, T3's root ``f_expr``, T4's share, the cross-entropy
derivative and certificate, the rotations of T6 and T9, ...) as module attributes at call time,
and the downstream proofs take them from the upstream modules instead of retyping them. So
``monkeypatch.setattr(module, name, mutant)`` plants a wrong formula, and every proof built on
it must raise :class:`proofs.ProofFailure`. The symbolic parts suffice (``numerical=False``)
except where a mutant only enters a numerical ingredient.
"""

from __future__ import annotations

import os
import sys

import pytest
import sympy as sp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from proofs import (  # noqa: E402
    gradient,
    t1_rank,
    t2_chain,
    t3_identity_skips,
    t4_depth_scaling,
    t5_trajectories,
    t6_entangled,
    t7_depth_law,
    t8_binary_ra1,
    t9_minimisers,
    t10_two_factor,
)
from proofs._exact import ProofFailure  # noqa: E402


def _rejects(module, *, numerical=False):
    with pytest.raises(ProofFailure):
        module.prove(numerical=numerical)


def test_unmutated_symbolic_proofs_pass():
    for m in (gradient, t1_rank, t2_chain, t3_identity_skips, t4_depth_scaling, t5_trajectories, t6_entangled,
              t7_depth_law, t8_binary_ra1, t9_minimisers, t10_two_factor):
        assert m.prove(numerical=False).status == "proven"


# --- a dropped transpose in the §2 gradient fails the gradient proof and everything built on it ---


@pytest.mark.parametrize("module", [gradient, t1_rank, t2_chain])
def test_dropped_transpose_in_gradient(monkeypatch, module):
    g = gradient
    monkeypatch.setattr(g, "grad_J_expr", g.Agt * g.W.T * g.G * g.Hprev.T)  # A_{>l} instead of A_{>l}^T
    _rejects(module)


@pytest.mark.parametrize("module", [gradient, t3_identity_skips, t10_two_factor])
def test_dropped_left_transpose_in_factor_gradient(monkeypatch, module):
    # (T1 uses only left = I, where the mutant is harmless, so it is not listed.)
    monkeypatch.setattr(gradient, "factor_grad", lambda left, g, right: left * g * right.T)
    _rejects(module)


@pytest.mark.parametrize("module", [gradient, t1_rank, t3_identity_skips, t10_two_factor])
def test_dropped_right_transpose_in_factor_gradient(monkeypatch, module):
    monkeypatch.setattr(gradient, "factor_grad", lambda left, g, right: left.T * g * right)
    _rejects(module)


# --- a doubled S in T2 fails T2 and T3 (which takes its S from T2) ---


@pytest.mark.parametrize("module", [t2_chain, t3_identity_skips])
def test_doubled_S(monkeypatch, module):
    monkeypatch.setattr(t2_chain, "S_of", lambda W: 2 * (t2_chain.lam_W / t2_chain.lam_J) * W.T * W)
    _rejects(module)


def test_wrong_chain_residual(monkeypatch):
    monkeypatch.setattr(t2_chain, "chain_residual", lambda J0, A0, J1, A1: J0 * A0.T - A1 * J1)
    _rejects(t2_chain)
    _rejects(t3_identity_skips)


# --- wrong closed forms ---


def test_wrong_T3_root(monkeypatch):
    mu = t3_identity_skips.mu
    monkeypatch.setattr(t3_identity_skips, "f_expr", (-1 + sp.sqrt(1 + 2 * mu)) / 2)
    _rejects(t3_identity_skips)


def test_wrong_T5_coefficient(monkeypatch):
    s, c, l = t5_trajectories.sigma, t5_trajectories.c, t5_trajectories.l_sym
    monkeypatch.setattr(t5_trajectories, "a_expr", ((1 + s * c) ** l - 1) / (c + 1))
    _rejects(t5_trajectories)


def test_wrong_T8_coefficient(monkeypatch):
    monkeypatch.setattr(t8_binary_ra1, "coefficient", lambda q, c: q / c)
    _rejects(t8_binary_ra1)


def test_wrong_T7_stationarity(monkeypatch):
    t, L, a = t7_depth_law.t, t7_depth_law.Lsym, t7_depth_law.a
    wrong = dict(t7_depth_law.stationarity_expr)
    wrong[1] = wrong[1] - a * (sp.exp(t / L) - 1) * sp.exp(t / L) + a * (sp.exp(t / L) - 1)  # drops e^{t/L}
    monkeypatch.setattr(t7_depth_law, "stationarity_expr", wrong)
    _rejects(t7_depth_law)


def test_wrong_depth_law_curve(monkeypatch):
    # A wrong stationarity equation inside ramodel.depth_law is caught by the brute-force comparison.
    from ramodel import depth_law

    right = depth_law._derivative
    monkeypatch.setattr(depth_law, "_derivative", lambda t, L, k, x, y, a, b: right(t, L, k, x, y, 2 * a, b))
    with pytest.raises(ProofFailure, match="brute force"):
        t7_depth_law._numerical(t7_depth_law.ProofLog("T7", "mutant"))


# --- a wrong share ---


def test_wrong_T4_share(monkeypatch):
    p, L = t4_depth_scaling.p, t4_depth_scaling.L_sym
    monkeypatch.setattr(t4_depth_scaling, "share_expr", (p - 1) / L)
    _rejects(t4_depth_scaling)


# --- a sign in the cross-entropy derivative and certificate ---


def test_wrong_sign_cross_entropy_derivative(monkeypatch):
    monkeypatch.setattr(gradient, "ce_gradient_entry", lambda e, s, delta: delta - e / s)
    _rejects(gradient)


def test_wrong_sign_cross_entropy_certificate(monkeypatch):
    lam_W = t1_rank.lam_W
    monkeypatch.setattr(t1_rank, "ce_certificate",
                        lambda one, W, rho_W, G, HL: lam_W * one.T * W - one.T * rho_W - (one.T * G) * HL.T)
    _rejects(t1_rank)


# --- wrong rotations ---


def test_wrong_T6_rotation(monkeypatch):
    monkeypatch.setattr(t6_entangled, "rotate", lambda J, Ql, Qr: Ql.T * J * Qr)
    _rejects(t6_entangled)


def test_wrong_T9_conjugation(monkeypatch):
    monkeypatch.setattr(t9_minimisers, "conjugate", lambda A, U: U * A * U.T)
    _rejects(t9_minimisers)
