"""RA4 across depths: ramodel.depth_scaling and fit_depth_law (issue 15)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ramodel
from ramodel import JacobianSet
from ramodel.scaling import ACTIVE_FLOOR, DepthScaling, fit_depth_law


@pytest.fixture(scope="module")
def k2_sims():
    # Small k = 2 depth sweep (each solve well under a second).
    return [ramodel.simulate(depth=L, classes=3, width=6, branch_factors=2, seed=0) for L in (2, 4, 8, 16)]


def test_fit_depth_law_against_numpy_polyfit():
    rng = np.random.default_rng(0)
    L = np.array([2, 4, 8, 16, 32, 8.0])
    s = 0.7 / L * np.exp(0.05 * rng.standard_normal(L.size))
    fit = fit_depth_law(L, s)
    b, a = np.polyfit(np.log(L), np.log(s), 1)
    assert fit.slope == pytest.approx(b, rel=1e-12) and fit.intercept == pytest.approx(a, rel=1e-12)
    # Independent CI: scipy.stats.linregress stderr and the t quantile.
    from scipy import stats

    lr = stats.linregress(np.log(L), np.log(s))
    half = stats.t.ppf(0.975, L.size - 2) * lr.stderr
    assert fit.stderr == pytest.approx(lr.stderr, rel=1e-10)
    assert (fit.ci_low, fit.ci_high) == pytest.approx((lr.slope - half, lr.slope + half), rel=1e-10)
    assert fit.r2 == pytest.approx(lr.rvalue**2, rel=1e-10)
    assert ramodel.metrics.fit_depth_slope(L, s) == fit  # one fit, two names


@pytest.mark.parametrize("bad, match", [
    (([2, 4], [1.0, 0.5]), "at least 3 models"),
    (([4, 4, 4], [1.0, 0.5, 0.2]), "two distinct"),
    (([2, 4, 8], [1.0, -0.5, 0.2]), "sigma1 must hold finite values > 0"),
    (([2, 4, 8], [1.0, 0.5]), "same length"),
])
def test_fit_depth_law_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        fit_depth_law(*bad)


def test_k2_depth_sweep_passes_ra4(k2_sims):
    res = ramodel.depth_scaling(k2_sims)
    assert isinstance(res, DepthScaling)
    assert res.verdict is True and -1.3 <= res.slope <= -0.7
    assert res.ci[0] <= res.slope <= res.ci[1]
    assert res.depths == (2, 4, 8, 16)
    np.testing.assert_allclose(res.L_sigma1, np.array(res.depths) * np.array(res.sigma1))
    # sigma_bar_1 against an independent SVD per simulation
    for sim, s in zip(k2_sims, res.sigma1):
        assert s == pytest.approx(np.linalg.svd(np.asarray(sim.jacobians), compute_uv=False)[:, 0].mean(), rel=1e-12)
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert d["verdict"] is True and len(d["models"]) == 4
    text = str(res)
    assert "RA4 holds" in text and "CI" in text and "L*sigma_bar_1" in text


def test_fewer_than_three_depths_is_undetermined(k2_sims):
    res = ramodel.depth_scaling(k2_sims[:2])
    assert res.verdict is None and "needs >= 3 distinct depths" in res.reason
    # Three models but only two depths: a fit, but still no verdict.
    res = ramodel.depth_scaling([k2_sims[0], k2_sims[1], k2_sims[1]])
    assert res.fit is not None and res.verdict is None


def test_single_model_is_undetermined(k2_sims):
    res = ramodel.depth_scaling(k2_sims[0])
    assert res.verdict is None and res.equal_share_cv[0] is not None


def _jset(J, C=2, N=None, meta=None):
    N = J.shape[1]
    return JacobianSet(labels=np.arange(N) % C, classes=C, jacobians=J, meta=meta or {})


def test_files_and_jacobian_sets_follow_the_law(tmp_path):
    rng = np.random.default_rng(1)
    d, N, C = 6, 4, 2
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0][:, :C]
    paths = []
    for L in (2, 4, 8):
        J = np.broadcast_to((Q * [1.0, 0.5]) @ Q.T / L, (L, N, d, d)).copy()
        p = tmp_path / f"net_L{L}.npz"
        _jset(J, C, meta={"architecture": "Toy", "depth": L}).save(p)
        paths.append(p)
    res = ramodel.depth_scaling(paths)
    assert res.verdict is True and res.slope == pytest.approx(-1.0, abs=1e-12)
    assert res.group["architecture"] == "Toy" and "depth" not in res.group
    assert res.names == ("net_L2.npz", "net_L4.npz", "net_L8.npz")
    # the same through loaded objects, and through factors
    res2 = ramodel.depth_scaling([JacobianSet.load(p) for p in paths])
    assert res2.slope == pytest.approx(res.slope, abs=1e-12)


def test_no_depth_dependence_fails_or_is_undetermined():
    rng = np.random.default_rng(2)
    sets = [_jset(rng.standard_normal((L, 3, 5, 5))) for L in (2, 4, 8, 16)]
    res = ramodel.depth_scaling(sets)
    assert res.verdict is not True


def test_inactive_branches_are_undetermined():
    rng = np.random.default_rng(3)
    d, N = 5, 3
    sets = []
    for L in (2, 4, 8):
        u = np.linalg.qr(rng.standard_normal((d, 2)))[0]
        J = np.broadcast_to(1e-12 / L * (u @ u.T), (L, N, d, d)).copy()
        sets.append(_jset(J))
    res = ramodel.depth_scaling(sets)
    assert res.verdict is None and "inactive" in res.reason and f"{ACTIVE_FLOOR:g}" in res.reason


def test_huge_scale_is_not_an_overflow():
    d, N = 4, 2
    sets = [_jset(np.broadcast_to(1e200 / L * np.eye(d)[:, :1] @ np.eye(d)[:1], (L, N, d, d)).copy())
            for L in (2, 4, 8)]
    res = ramodel.depth_scaling(sets)
    assert res.verdict is True and res.slope == pytest.approx(-1.0, abs=1e-12)


def test_groups_by_everything_but_depth(k2_sims):
    k1 = [ramodel.simulate(depth=L, classes=3, width=6, seed=0) for L in (2, 4, 8)]
    out = ramodel.depth_scaling(k2_sims + k1)
    assert isinstance(out, list) and [r.group["branch_factors"] for r in out] == [2, 1]
    assert ramodel.depth_scaling(k2_sims + k1, by=("classes",)).fit.n == 7
    with pytest.raises(ValueError, match="by has unknown keys"):
        ramodel.depth_scaling(k2_sims, by=("colour",))


def test_sweep_result_source():
    res = ramodel.sweep(depths=[2, 4, 8], classes=2, widths=4, branch_factors=2, executor="serial")
    out = ramodel.depth_scaling(res)
    assert out.verdict is True and out.depths == (2, 4, 8)


def test_unconverged_runs_are_excluded(k2_sims):
    import dataclasses

    run = ramodel.simulate(depth=32, classes=3, width=6, branch_factors=2, seed=0)
    stopped = dataclasses.replace(run, converged=False, grad_norm=8e-7)
    res = ramodel.depth_scaling([*k2_sims, stopped])
    assert 32 not in res.depths and any("did not converge" in e for e in res.excluded)
    assert 32 in ramodel.depth_scaling([*k2_sims, stopped], include_unconverged=True).depths


def test_trivial_point_is_undetermined(k2_sims):
    import dataclasses

    triv = dataclasses.replace(k2_sims[1], jacobians=np.zeros_like(k2_sims[1].jacobians))
    assert triv.is_trivial
    res = ramodel.depth_scaling([k2_sims[0], k2_sims[2], k2_sims[3], triv], by=())
    assert res.verdict is None and "trivial" in res.reason


@pytest.mark.parametrize("kw, match", [
    ({"slope_range": (-0.7, -1.3)}, "slope_range"),
    ({"confidence": 1.0}, "confidence"),
])
def test_argument_errors(k2_sims, kw, match):
    with pytest.raises(ValueError, match=match):
        ramodel.depth_scaling(k2_sims, **kw)
    with pytest.raises(TypeError, match="sources"):
        ramodel.depth_scaling([object()])


def test_cli_analyze_prints_the_depth_fit_for_files_of_several_depths(tmp_path, capsys, k2_sims):
    from ramodel.cli import main, simulation_jacobian_set

    paths = []
    for sim in k2_sims[:3]:
        p = tmp_path / f"L{sim.depth}.npz"
        simulation_jacobian_set(sim).save(p)
        paths.append(str(p))
    assert main(["analyze", *paths]) == 0
    out = capsys.readouterr().out
    assert "== RA4 across depths" in out and "RA4 holds" in out and "CI" in out
    assert "L2.npz" in out.split("== RA4 across depths")[1]
    assert main(["analyze", *paths, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    (fit,) = payload["depth_scaling"]
    assert fit["verdict"] is True and [m["depth"] for m in fit["models"]] == [2, 4, 8]
    assert all(f["report"]["verdicts"]["RA4"] is None for f in payload["files"])
    # Files of one depth: no depth fit.
    assert main(["analyze", paths[0], paths[0]]) == 0
    assert "RA4 across depths" not in capsys.readouterr().out
