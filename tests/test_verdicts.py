"""Verdicts that cannot pass by accident (issue 15): each reproduced case, constructed here.

1. RA4 from one model            -> None (a law across depths; the CV is a diagnostic)
2. vacuous passes on noise       -> RA2/RA3 None when C >= d, never True on Gaussian noise
3. dead branches                 -> every RA verdict None ("branches inactive")
4. undefined top-k subspaces     -> k from the data; tied matrices excluded and counted
5. silent identity skips         -> the exporter refuses to guess (tests at the end, torch)
6. trivial critical point        -> theorem and RA verdicts None, said in summary and CLI
7. bare arrays                   -> analyze and check_theory take (L, d, d) / (L, N, d, d)
plus invariance under sign flips and orthogonal changes of basis, float16, huge scales,
and the save/chance_draws argument checks.
"""

from __future__ import annotations

import dataclasses
import html
import json

import numpy as np
import pytest

import ramodel
from ramodel import analyze, check_theory
from ramodel.report import PROPERTIES, Thresholds
from ramodel.spectra import top_singular


def orthonormal(d, r, rng):
    Q, R = np.linalg.qr(rng.standard_normal((d, r)))
    return Q * np.sign(np.diag(R))


def aligned_source(rng, *, L=5, N=6, d=8, C=3, scale=1.0):
    """Identical symmetric rank-C Jacobians and equal-step lines: RA holds."""
    Q = orthonormal(d, C, rng)
    J = np.broadcast_to(scale * (Q * np.linspace(0.5, 0.2, C)) @ Q.T, (L, d, d)).copy()
    labels = np.arange(N) % C
    hL = 3 * Q.T[labels] + 1e-3 * rng.standard_normal((N, d))
    R = np.stack([hL - 0.1 * (L - l) * Q[:, 0] for l in range(L + 1)])
    return {"jacobians": J, "labels": labels, "classes": C, "representations": R}


# --------------------------------------------------------------- 1. RA4 from one model
def test_ra4_is_never_decided_by_one_model():
    rng = np.random.default_rng(0)
    # A network without skips has equal sigma_1 over layers (small CV) ...
    plain = aligned_source(rng)
    rep = analyze(plain)
    assert rep.metrics["sigma1_cv"].value < 1e-12
    assert rep.verdicts["RA4"] is None and "depth_scaling" in rep.reasons["RA4"]
    # ... and a network whose sigma_1 rises along depth (RA-like) is not failed either.
    rising = dict(plain, jacobians=plain["jacobians"] * np.linspace(1, 3, 5)[:, None, None])
    rep = analyze(rising)
    assert rep.metrics["sigma1_cv"].value > 0.25 and rep.verdicts["RA4"] is None
    assert "equal-share" in str(rep) and all(c.property != "RA4" for c in rep.checks)


# ------------------------------------------------------------- 2. vacuous passes on noise
def test_noise_with_more_classes_than_width_is_undetermined():
    rng = np.random.default_rng(1)
    L, N, d, C = 4, 12, 8, 10
    src = {"jacobians": rng.standard_normal((L, N, d, d)), "labels": np.arange(N) % C, "classes": C,
           "representations": rng.standard_normal((L + 1, N, d)).cumsum(axis=0)}
    rep = analyze(src)
    assert rep.verdicts["RA2"] is None and "C = 10 >= d = 8" in rep.reasons["RA2"]
    assert rep.verdicts["RA3"] is None and "holds for any matrix" in rep.reasons["RA3"]
    assert True not in rep.verdicts.values()


@pytest.mark.parametrize("d, C, k", [(8, 2, None), (8, 3, 3), (6, 3, None), (8, 10, None), (5, 5, 2),
                                     (16, 4, 1), (4, 3, None)])
@pytest.mark.parametrize("per_input", [False, True])
def test_gaussian_jacobians_never_pass(d, C, k, per_input):
    for seed in range(4):
        rng = np.random.default_rng(100 * seed + d + C)
        L, N = 5, 6
        J = rng.standard_normal((L, N, d, d) if per_input else (L, d, d))
        src = {"jacobians": J, "labels": np.arange(N) % C, "classes": C,
               "representations": rng.standard_normal((L + 1, N, d)).cumsum(axis=0)}
        rep = analyze(src, k=k)
        assert True not in rep.verdicts.values(), (seed, dict(rep.verdicts), dict(rep.reasons))
        theo = check_theory(src, chance_draws=0)
        assert True not in theo.verdicts.values(), (seed, dict(theo.verdicts), dict(theo.reasons))


def test_ra2_margin_rule_against_the_chance_distribution():
    # The standard deviation used by the margin rule matches random subspaces.
    from ramodel.report import _pair_sd

    rng = np.random.default_rng(2)
    d, k = 7, 3
    P = orthonormal(d, k, rng)
    vals = [np.sum((P.T @ orthonormal(d, k, rng)) ** 2) / k for _ in range(20000)]
    assert np.mean(vals) == pytest.approx(k / d, abs=3e-3)
    assert np.std(vals) == pytest.approx(_pair_sd(k, d), rel=0.03)
    # L = 2, d = 6, k = 3: one pair cannot tell 0.75 from chance 0.5 -> undetermined,
    # even for perfectly aligned Jacobians.
    rep = analyze(aligned_source(rng, L=2, d=6, C=3))
    assert rep.verdicts["RA2"] is None and "not clearly above chance" in rep.reasons["RA2"]


# --------------------------------------------------------------------- 3. dead branches
@pytest.mark.parametrize("with_R", [True, False])
def test_dead_branches_are_undetermined(with_R):
    rng = np.random.default_rng(3)
    src = aligned_source(rng, scale=1e-12)
    if with_R:
        src["representations"] = np.broadcast_to(src["representations"][:1], src["representations"].shape).copy()
    else:
        del src["representations"]
    rep = analyze(src)
    assert all(rep.verdicts[p] is None for p in PROPERTIES), dict(rep.verdicts)
    for p in ("RA1", "RA2", "RA3"):
        assert "branches inactive" in rep.reasons[p] and "1e-06" in rep.reasons[p]
    assert rep.info["inactive"] is not None


def test_branches_that_do_not_move_the_representations_are_inactive():
    rng = np.random.default_rng(4)
    src = aligned_source(rng)
    R = np.broadcast_to(src["representations"][:1], src["representations"].shape).copy()
    rep = analyze(dict(src, representations=R))  # Jacobians fine, but the steps are zero
    assert rep.verdicts["RA2"] is None and "median step" in rep.reasons["RA2"]


def test_floors_are_thresholds_the_caller_can_move():
    rng = np.random.default_rng(5)
    src = aligned_source(rng, scale=1e-7)
    src["representations"] = src["representations"] * 1.0
    assert analyze(src).verdicts["RA2"] is None
    assert analyze(src, thresholds=Thresholds(active_floor=1e-9)).verdicts["RA2"] is True


# ------------------------------------------------------------- 4. undefined subspaces
def test_k_never_exceeds_the_numerical_rank():
    rng = np.random.default_rng(6)
    L, N, d = 4, 8, 8
    u = orthonormal(d, 1, rng)
    base = np.stack([0.3 * (u @ u.T)] * L)
    src = {"jacobians": base, "labels": np.arange(N) % 2, "classes": 2}
    rep = analyze(src)
    assert rep.info["k"] == 1 and "numerical rank 1" in rep.info["k_rule"]
    assert rep.metrics["A_left"].value == pytest.approx(1.0) and rep.verdicts["RA2"] is True
    # A 1e-16 perturbation cannot move it (k = C = 2 would pick an arbitrary null vector).
    noisy = analyze(dict(src, jacobians=base + 1e-16 * rng.standard_normal(base.shape)))
    assert noisy.info["k"] == 1 and noisy.metrics["A_left"].value == pytest.approx(1.0, abs=1e-12)


def test_tied_singular_values_are_excluded_and_counted():
    rng = np.random.default_rng(7)
    L, d = 4, 6
    Q = orthonormal(d, 3, rng)
    J = np.stack([(Q * [1.0, 0.5, 0.5]) @ Q.T] * L)  # sigma_2 = sigma_3: no top-2 subspace
    rep = analyze({"jacobians": J, "labels": np.arange(4) % 3, "classes": 3}, k=2)
    assert rep.info["ra2_excluded"]["tied"] == L
    assert rep.verdicts["RA2"] is None and "tie at rounding level" in rep.reasons["RA2"]
    assert rep.info["k"] == 2 and rep.info["k_rule"] == "k given by the caller"
    ok = analyze({"jacobians": J, "labels": np.arange(4) % 3, "classes": 3})  # k = 3: defined
    assert ok.info["ra2_excluded"]["tied"] == 0 and ok.verdicts["RA2"] is True


def test_cross_entropy_defaults_to_c_minus_1():
    rng = np.random.default_rng(8)
    src = aligned_source(rng, C=3)
    assert analyze(src).info["k"] == 3
    rep = analyze(src, loss="cross_entropy")
    assert rep.info["k"] == 2 and "cross-entropy" in rep.info["k_rule"]
    sim = ramodel.simulate(depth=4, classes=3, width=8, loss="cross_entropy", seed=0)
    assert sim.report().info["k"] == 2


# -------------------------------------------------------------- 6. trivial critical point
def test_trivial_critical_point_is_said_everywhere(tmp_path):
    sim = ramodel.simulate(depth=64, classes=3, width=6, skip="none", seed=0)
    assert sim.is_trivial and sim.converged
    rep = sim.report()
    assert all(v is None for v in rep.verdicts.values())
    assert "trivial critical point" in rep.reasons["RA2"]
    from ramodel.summary import theorem_checks

    checks = theorem_checks(sim)
    assert all(c.holds is None and "trivial" in c.measured["reason"] for c in checks)
    text = sim.summary()
    assert "trivial critical point" in text and ": holds" not in text and text.count("undetermined") >= 3
    theo = check_theory(sim, chance_draws=0)
    assert all(v is None for v in theo.verdicts.values()) and "trivial" in theo.reasons["T1"]
    from ramodel.cli import main

    assert main(["simulate", "--depth", "64", "--classes", "3", "--width", "6", "--skip", "none"]) == 1


def test_unconverged_simulation_has_no_theorem_verdict():
    sim = ramodel.simulate(depth=4, classes=3, width=6, seed=0)
    stopped = dataclasses.replace(sim, converged=False, grad_norm=8e-7)
    theo = check_theory(stopped, chance_draws=0)
    assert theo.verdicts["T2"] is None and "not a critical point" in theo.reasons["T2"]
    assert check_theory(sim, chance_draws=0).verdicts["T2"] is True


# ------------------------------------------------------------------- 7. bare arrays
@pytest.mark.parametrize("per_input", [False, True])
def test_bare_arrays(per_input):
    rng = np.random.default_rng(9)
    src = aligned_source(rng)
    J = src["jacobians"] if not per_input else np.broadcast_to(src["jacobians"][:, None], (5, 6, 8, 8)).copy()
    rep = analyze(J, classes=3)
    ref = analyze({"jacobians": J, "classes": 3, "labels": np.arange(J.shape[1] if per_input else 6) % 3})
    assert dict(rep.verdicts) == {"RA1": None, "RA2": True, "RA3": True, "RA4": None}
    assert rep.metrics["A_left"].value == ref.metrics["A_left"].value
    assert "representations" in rep.reasons["RA1"]
    theo = check_theory(J, classes=3, chance_draws=0)
    assert theo.measures["asymmetry"].value < 1e-12
    with pytest.raises(ValueError, match="classes="):
        analyze(J)
    with pytest.raises(ValueError, match="classes"):
        check_theory(J)


# --------------------------------------------------- converged simulations still pass
@pytest.mark.parametrize("kw", [dict(depth=4, classes=3), dict(depth=8, classes=3, width=6, branch_factors=2),
                                dict(depth=6, classes=2, width=8, loss="cross_entropy")])
def test_converged_simulation_passes_ra2_and_ra3(kw):
    sim = ramodel.simulate(**kw, seed=0)
    assert sim.converged and not sim.is_trivial
    rep = sim.report()
    assert rep.verdicts["RA2"] is True and rep.verdicts["RA3"] is True, dict(rep.reasons)
    theo = check_theory(sim, chance_draws=0)
    assert theo.verdicts["T1"] is True
    # T2 is proven for k = 1; for k = 2 the theorem predicts nothing: undetermined, not True.
    assert theo.verdicts["T2"] is (True if kw.get("branch_factors", 1) == 1 else None)


# ---------------------------------------------------------------------- invariances
def _rotated(src, Q):
    out = dict(src)
    out["jacobians"] = Q @ src["jacobians"] @ Q.T
    out["representations"] = src["representations"] @ Q.T
    if "classifier" in src:
        out["classifier"] = src["classifier"] @ Q.T
    return out


@pytest.mark.parametrize("make", ["aligned", "noise", "dead", "rank1"])
def test_orthogonal_change_of_basis_and_sign_flips_keep_every_verdict(make):
    rng = np.random.default_rng(10)
    d, N, L = 8, 6, 5
    if make == "aligned":
        src = aligned_source(rng)
    elif make == "noise":
        src = {"jacobians": rng.standard_normal((L, N, d, d)), "labels": np.arange(N) % 3, "classes": 3,
               "representations": rng.standard_normal((L + 1, N, d)).cumsum(axis=0)}
    elif make == "dead":
        src = aligned_source(rng, scale=1e-12)
    else:
        u = orthonormal(d, 1, rng)
        src = dict(aligned_source(rng, C=2), jacobians=np.stack([0.3 * (u @ u.T)] * L))
    base = analyze(src)
    Q = orthonormal(d, d, rng)
    rot = analyze(_rotated(src, Q))
    assert dict(rot.verdicts) == dict(base.verdicts) and rot.info["k"] == base.info["k"]
    # Sign flips of the singular vectors: the factor form with U, V columns flipped together.
    J = src["jacobians"]
    U, S, V = top_singular(J, d)
    signs = rng.choice([-1.0, 1.0], size=U.shape[:-2] + (1, d))
    fac = {key: v for key, v in src.items() if key != "jacobians"}
    a = analyze(dict(fac, U=U, S=S, V=V))
    b = analyze(dict(fac, U=U * signs, S=S, V=V * signs))
    assert dict(a.verdicts) == dict(b.verdicts) == dict(base.verdicts)


# -------------------------------------------------------------- precision and scale
def test_float16_is_computed_in_float32_and_said():
    rng = np.random.default_rng(11)
    src = aligned_source(rng)
    half = {**src, "jacobians": src["jacobians"].astype(np.float16),
            "representations": src["representations"].astype(np.float16)}
    rep = analyze(half)
    assert rep.info["dtype"] == "float16" and rep.info["computed_in"] == "float32"
    assert "float16 computed in float32" in str(rep)
    single = analyze({**half, "jacobians": half["jacobians"].astype(np.float32),
                      "representations": half["representations"].astype(np.float32)})
    assert dict(rep.verdicts) == dict(single.verdicts)
    theo = check_theory(half, chance_draws=0)
    assert theo.info["dtype"] == "float16" and theo.info["computed_in"] == "float32"


@pytest.mark.parametrize("scale", [1e200, 1e-200, 1e-30])
def test_scale_does_not_change_the_verdicts(scale, recwarn):
    rng = np.random.default_rng(12)
    src = aligned_source(rng)
    base = analyze(src)
    big = analyze(dict(src, jacobians=src["jacobians"] * scale))
    if scale > 1:
        assert dict(big.verdicts) == dict(base.verdicts)
        assert big.metrics["sigma1_mean"].value == pytest.approx(scale * base.metrics["sigma1_mean"].value)
        assert big.metrics["energy_top_C"].excluded == 0 and "zero" not in json.dumps(dict(big.unavailable))
    else:  # tiny branches are inactive, not aligned
        assert big.verdicts["RA2"] is None and "inactive" in big.reasons["RA2"]
    assert not [w for w in recwarn if "overflow" in str(w.message)]


def test_check_theory_at_1e300_does_not_raise():
    sim = ramodel.simulate(depth=3, classes=2, width=4, samples_per_class=3, seed=0)
    J = np.asarray(sim.jacobians) * 1e300
    rep = check_theory({"jacobians": J, "classes": 2}, chance_draws=2)
    assert rep.measures["asymmetry"].value < 1e-12 and rep.measures["energy_top_C"].value == pytest.approx(1.0)
    assert "overflows float64" in rep.unavailable["chain_residual"]
    assert rep.verdicts["T2"] is None


# ---------------------------------------------------------------- argument checks
@pytest.mark.parametrize("bad", [None, ""])
def test_save_needs_a_file_path(bad, tmp_path):
    rep = analyze(aligned_source(np.random.default_rng(13)))
    theo = check_theory(aligned_source(np.random.default_rng(13)), chance_draws=0)
    for r in (rep, theo):
        with pytest.raises(ValueError, match="path must be the file to write"):
            r.save(bad)
        with pytest.raises(ValueError, match="is a folder"):
            r.save(tmp_path)
        with pytest.raises(IsADirectoryError):
            r.save(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_chance_draws_bound():
    src = aligned_source(np.random.default_rng(14))
    with pytest.raises(ValueError, match=r"chance_draws must be in \[0, 10000\]"):
        check_theory(src, chance_draws=10_001)


def test_every_verdict_has_a_reason_in_text_html_and_json():
    rep = analyze(aligned_source(np.random.default_rng(15), L=2))
    d = json.loads(json.dumps(rep.to_dict()))
    assert set(d["reasons"]) == set(PROPERTIES)
    for why in rep.reasons.values():
        assert why and why in str(rep) and html.escape(why) in rep._repr_html_()
    theo = check_theory(aligned_source(np.random.default_rng(15)), chance_draws=0)
    dt = theo.to_dict()
    assert set(dt["verdicts"]) == set(dt["reasons"]) == {"T1", "T2", "T3", "T4", "T5", "T6"}
    assert "verdicts (tol" in str(theo) and "<th>reason</th>" in theo._repr_html_()


# ------------------------------------------------------ 5. skips declared, never guessed
torch = pytest.importorskip("torch")
nn = torch.nn


class PlainBlock(nn.Module):
    """``h -> tanh(W h)``: no skip at all (and no declaration)."""

    def __init__(self, d):
        super().__init__()
        self.lin = nn.Linear(d, d)

    def forward(self, h):
        return torch.tanh(self.lin(h))


class PostReLU(nn.Module):
    """``relu(W2 tanh(W1 h) + h)``: post-activation, identity skip declared."""

    def __init__(self, d):
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(d, d), nn.Linear(d, d)
        self.skip = None

    def forward(self, h):
        return torch.relu(self.lin2(torch.tanh(self.lin1(h))) + h)


class Net(nn.Module):
    def __init__(self, blocks, d=5, C=3):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(d, C)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.fc(x)


def test_block_without_skip_is_refused_with_the_ways_to_declare_it(tmp_path):
    from ramodel.torch import export_jacobians

    torch.manual_seed(0)
    net = Net([PlainBlock(5), PlainBlock(5)])
    x, y = torch.randn(6, 5), np.arange(6) % 3
    with pytest.raises(ValueError, match=r"block 'blocks.0' \(PlainBlock\) declares no skip") as err:
        export_jacobians(net, x, y, tmp_path / "p.npz")
    for hint in ("skips='identity'", "skips='none'", "'skip' attribute", "skip_matrix()"):
        assert hint in str(err.value)
    assert list(tmp_path.iterdir()) == []
    # Declared as plain blocks: J = dF/dh exactly, skips stored as zero, family "none".
    js = export_jacobians(net, x, y, tmp_path / "p.npz", skips="none")
    h = torch.as_tensor(np.array(js.representations[0]))
    ref = torch.func.vmap(torch.func.jacrev(net.blocks[0].double()))(h.double())
    np.testing.assert_allclose(js.jacobians[0], ref.detach().numpy(), atol=1e-12)
    assert js.meta["skip_family"] == "none" and not np.any(js.skips)
    rep = analyze(js)
    assert rep.metrics["numerical_rank"].value == 5  # not the rank of dF/dh - I, and no identity claimed
    # The caller may say identity explicitly (the old behaviour, now declared).
    ident = export_jacobians(net, x, y, tmp_path / "i.npz", skips="identity")
    np.testing.assert_allclose(ident.jacobians[0], js.jacobians[0] - np.eye(5), atol=1e-12)


def test_every_skip_is_checked_against_the_width(tmp_path):
    from ramodel.torch import export_jacobians

    torch.manual_seed(1)
    net = Net([PlainBlock(5)])
    x, y = torch.randn(4, 5), np.arange(4) % 3
    with pytest.raises(ValueError, match=r"skips\[0\] has shape \(1000, 1000\)"):
        export_jacobians(net, x, y, tmp_path / "a.npz", skips=[np.eye(1000)])
    with pytest.raises(ValueError, match=r"has shape \(4, 4\)"):
        export_jacobians(net, x, y, tmp_path / "a.npz", skips=np.eye(4))
    assert list(tmp_path.iterdir()) == []


def test_post_activation_residual_is_the_papers_jacobian(tmp_path):
    from ramodel.torch import block_jacobians, export_jacobians

    torch.manual_seed(2)
    net = Net([PostReLU(5), PostReLU(5)]).double()
    x, y = torch.randn(6, 5, dtype=torch.float64), np.arange(6) % 3
    eff = export_jacobians(net, x, y, tmp_path / "e.npz")
    paper = export_jacobians(net, x, y, tmp_path / "p.npz", residual="post_activation")
    assert eff.meta["residual"] == "effective" and paper.meta["residual"] == "post_activation"
    blk = net.blocks[0]
    for n in range(6):
        h = torch.as_tensor(np.array(eff.representations[0, n]))
        pre = blk.lin2(torch.tanh(blk.lin1(h))) + h
        D = torch.diag((pre > 0).double())
        dF = torch.func.jacrev(lambda v: blk.lin2(torch.tanh(blk.lin1(v))))(h)
        np.testing.assert_allclose(paper.jacobians[0, n], (D @ dF).detach().numpy(), atol=1e-12)
        np.testing.assert_allclose(eff.jacobians[0, n], (D @ (dF + torch.eye(5, dtype=torch.float64))
                                                         - torch.eye(5, dtype=torch.float64)).detach().numpy(),
                                   atol=1e-12)
    J = block_jacobians(blk, torch.as_tensor(np.array(eff.representations[0])), residual="post_activation")
    np.testing.assert_allclose(J, paper.jacobians[0], atol=1e-12)
    with pytest.raises(ValueError, match="residual must be one of"):
        export_jacobians(net, x, y, tmp_path / "z.npz", residual="paper")
