"""Tests of ramodel.report: analyze() on FORMAT.md-shaped sources, verdicts, export."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ramodel.metrics import alignment_metrics, fit_depth_slope, trajectory_metrics
from ramodel.report import PROPERTIES, RAReport, Thresholds, analyze
from ramodel.spectra import top_singular


def orthonormal(d, r, rng):
    Q, R = np.linalg.qr(rng.standard_normal((d, r)))
    return Q * np.sign(np.diag(R))


def perfect_source(rng, *, L=4, N=6, d=8, C=3, per_input=False):
    """Identical symmetric rank-C Jacobians, trajectories on equal-step lines."""
    Q = orthonormal(d, C, rng)
    J1 = (Q * np.linspace(0.5, 0.2, C)) @ Q.T
    J = np.broadcast_to(J1, (L, N, d, d) if per_input else (L, d, d)).copy()
    labels = np.arange(N) % C
    means = 3 * Q.T  # (C, d): class means in the top subspace
    hL = means[labels] + 1e-3 * rng.standard_normal((N, d))
    u = Q[:, 0]
    R = np.stack([hL - 0.1 * (L - l) * u for l in range(L + 1)])  # equal steps on a line
    return {"jacobians": J, "labels": labels, "classes": C, "representations": R, "classifier": means.copy()}


def random_source(rng, *, L=3, N=5, d=6, C=2):
    return {
        "jacobians": rng.standard_normal((L, N, d, d)),
        "labels": np.arange(N) % C,
        "classes": C,
        "representations": rng.standard_normal((L + 1, N, d)).cumsum(axis=0),
        "classifier": rng.standard_normal((C, d)),
    }


@dataclass(frozen=True)
class FakeSimulation:
    """The attributes the lead's Simulation exposes."""

    jacobians: np.ndarray
    representations: np.ndarray
    labels: np.ndarray
    classifier: np.ndarray
    skips: np.ndarray
    classes: int


# ------------------------------------------------------------------- verdicts
@pytest.mark.parametrize("per_input", [False, True])
def test_perfect_ra_source_holds_every_property(per_input):
    src = perfect_source(np.random.default_rng(0), per_input=per_input)
    rep = analyze(src)
    assert isinstance(rep, RAReport)
    # Issue 15: RA4 is a law across depths; one model's RA4 is undetermined.
    assert dict(rep.verdicts) == {"RA1": True, "RA2": True, "RA3": True, "RA4": None}
    assert rep.metrics["collinearity"].value == pytest.approx(1.0)
    assert rep.metrics["A_left"].value == pytest.approx(1.0)
    assert rep.metrics["numerical_rank"].value == 3
    assert rep.metrics["nc1"].value < 1e-5 and rep.metrics["nc4"].value == 0.0
    assert rep.info["k"] == 3 and rep.info["input_dependent"] is per_input
    assert ("across_inputs_left" in rep.metrics) is per_input
    assert set(rep.reasons) == set(PROPERTIES)  # every verdict carries a reason (issue 15)
    assert "depth_scaling" in rep.reasons["RA4"]


def test_random_source_fails_alignment_and_rank():
    rep = analyze(random_source(np.random.default_rng(1)))
    assert rep.verdicts["RA2"] is False and rep.verdicts["RA3"] is False
    assert rep.verdicts["RA1"] is False
    failed = {c.metric for c in rep.checks if c.passed is False}
    assert {"A_left", "A_right", "numerical_rank"} <= failed


def test_verdicts_follow_the_checks_and_their_thresholds():
    rng = np.random.default_rng(2)
    src = perfect_source(rng)
    steps = np.array([1.0, 1.3, 1.0, 1.3])  # equispacing = 1 - CV = 0.87
    x = rng.standard_normal((6, 8))
    u = np.eye(8)[0]
    src["representations"] = np.stack([x + c * u for c in np.concatenate([[0], np.cumsum(steps)])])
    rep = analyze(src)
    equi = rep.metrics["equispacing"].value
    assert equi == pytest.approx(1 - steps.std() / steps.mean())
    assert rep.verdicts["RA1"] is True
    assert analyze(src, thresholds=Thresholds(ra1_equispacing=0.9)).verdicts["RA1"] is False
    for c in rep.checks:
        m = rep.metrics[c.metric]
        assert c.value == m.value
        assert c.passed == (m.value >= c.threshold if c.op == ">=" else m.value <= c.threshold)
    for p in PROPERTIES[:3]:  # RA4 has no check in one report (issue 15)
        assert rep.verdicts[p] == all(c.passed for c in rep.checks if c.property == p)


def test_ra2_chance_requirement_is_capped_for_small_width():
    # d = 6, C = 3: chance = 1/2, so 5 x chance = 2.5 would reject perfect alignment.
    src = perfect_source(np.random.default_rng(3), d=6, C=3)
    rep = analyze(src)
    assert rep.metrics["A_left"].value == pytest.approx(1.0)
    assert rep.verdicts["RA2"] is True
    assert [c.threshold for c in rep.checks if c.property == "RA2"] == [0.75, 0.75]
    literal = analyze(src, thresholds=Thresholds(ra2_chance_cap=None))
    assert literal.verdicts["RA2"] is False
    # wide layers: the cap does not bite and the spec's 5 x chance rule applies
    assert Thresholds().ra2_required(0.05) == 0.5 and Thresholds().ra2_required(0.11) == pytest.approx(0.55)


def test_ra3_max_rank_threshold_and_ra4_cv_threshold():
    src = perfect_source(np.random.default_rng(4))
    assert analyze(src, thresholds=Thresholds(ra3_max_rank=2)).verdicts["RA3"] is False
    J = src["jacobians"] * np.array([1.0, 2.0, 1.0, 2.0])[:, None, None]  # sigma_1 CV = 1/3
    src2 = dict(src, jacobians=J)
    rep = analyze(src2)
    assert rep.metrics["sigma1_cv"].value == pytest.approx(1 / 3)
    # Issue 15: the CV is the equal-share diagnostic, never the RA4 verdict.
    assert rep.verdicts["RA4"] is None
    assert analyze(src2, thresholds=Thresholds(ra4_sigma1_cv=0.4)).verdicts["RA4"] is None


def test_uncomputable_properties_are_none_with_a_reason():
    rng = np.random.default_rng(5)
    src = perfect_source(rng)
    del src["representations"]
    rep = analyze(src)
    assert rep.verdicts["RA1"] is None and "representations" in rep.reasons["RA1"]
    assert "nc1" not in rep.metrics and "representations" in rep.unavailable["nc1"]
    assert rep.verdicts["RA2"] is True
    one = analyze(dict(src, jacobians=src["jacobians"][:1]))
    assert one.verdicts["RA2"] is None and "L >= 2" in one.reasons["RA2"]
    # factors that do not hold the spectrum: RA3 cannot be judged
    J = rng.standard_normal((3, 6, 8, 8))
    U, S, V = top_singular(J, 3)
    rep = analyze({"U": U, "S": S, "V": V, "labels": np.arange(6) % 3, "classes": 3})
    assert rep.verdicts["RA3"] is None and "export more triplets" in rep.reasons["RA3"]
    assert rep.verdicts["RA2"] is False and rep.info["layout"] == "factors"
    src_noW = perfect_source(rng)
    del src_noW["classifier"]
    rep = analyze(src_noW)
    assert "nc1" in rep.metrics and rep.unavailable["nc4"] == "no classifier given"


@given(seed=st.integers(0, 2**32 - 1), per_input=st.booleans(), rank=st.integers(1, 3))
def test_dense_and_exact_factors_give_the_same_report(seed, per_input, rank):
    rng = np.random.default_rng(seed)
    L, N, d, C = 3, 4, 6, 3
    lead = (L, N) if per_input else (L,)
    U0 = np.linalg.qr(rng.standard_normal(lead + (d, rank)))[0]
    V0 = np.linalg.qr(rng.standard_normal(lead + (d, rank)))[0]
    s = np.exp(-0.5 * np.arange(rank)) * rng.uniform(0.5, 2, size=lead + (1,))
    J = np.einsum("...ir,...r,...jr->...ij", U0, s, V0)
    base = {"labels": np.arange(N) % C, "classes": C,
            "representations": rng.standard_normal((L + 1, N, d)).cumsum(axis=0)}
    U, S, V = top_singular(J, 4)
    a = analyze(dict(base, jacobians=J), k=rank)  # k <= rank: a unique top-k subspace
    b = analyze(dict(base, U=U, S=S, V=V), k=rank)
    assert a.metrics.keys() == b.metrics.keys()
    for name in a.metrics:
        assert b.metrics[name].value == pytest.approx(a.metrics[name].value, rel=1e-8, abs=1e-10), name
    assert dict(a.verdicts) == dict(b.verdicts)


def test_attribute_source_equals_mapping_source():
    rng = np.random.default_rng(6)
    src = perfect_source(rng)
    sim = FakeSimulation(src["jacobians"], src["representations"], src["labels"], src["classifier"],
                         np.broadcast_to(np.eye(8), (4, 8, 8)), 3)
    a, b = analyze(sim), analyze(src)
    assert a.to_dict() == b.to_dict()


def test_jacobian_set_source():
    jsmod = pytest.importorskip("ramodel.jacobian_set")
    rng = np.random.default_rng(7)
    src = perfect_source(rng, per_input=True)
    try:
        js = jsmod.JacobianSet(labels=src["labels"], classes=3, meta={}, jacobians=src["jacobians"],
                               representations=src["representations"], classifier=src["classifier"])
    except TypeError as exc:  # the JacobianSet API is another module's; only its attributes matter here
        pytest.skip(f"JacobianSet constructor differs: {exc}")
    assert analyze(js).to_dict() == analyze(src).to_dict()


def test_npz_style_scalars_and_default_k():
    rng = np.random.default_rng(8)
    src = perfect_source(rng, d=4, C=3)
    src["classes"] = np.array(3, dtype=np.int64)  # a 0-d array, as read from an .npz
    rep = analyze(src)
    assert rep.info["classes"] == 3 and rep.info["k"] == 3
    src5 = {k: v for k, v in src.items() if k != "classifier"}
    rep5 = analyze(dict(src5, classes=5))
    assert rep5.info["k"] == 3  # k = C capped at d = 4 and at the numerical rank 3 (issue 15)
    assert "no sample" in rep5.unavailable["nc1"]  # classes 3 and 4 never occur
    assert analyze(src, k=1).info["k"] == 1
    U, S, V = top_singular(src["jacobians"], 2)
    assert analyze({"U": U, "S": S, "V": V, "labels": src["labels"], "classes": 3}).info["k"] == 2


def test_depth_sweep_uses_sigma1_mean_of_each_report():
    rng = np.random.default_rng(9)
    depths, sig = [2, 4, 8, 16], []
    for L in depths:
        src = perfect_source(rng, L=L)
        src["jacobians"] = src["jacobians"] / L  # sigma_1 ~ 1/L
        del src["representations"]
        sig.append(analyze(src).metrics["sigma1_mean"].value)
    fit = fit_depth_slope(depths, sig)
    t = Thresholds()
    assert fit.slope == pytest.approx(-1.0) and fit.within(t.ra4_slope_low, t.ra4_slope_high)


# -------------------------------------------------------------------- export
def test_to_dict_is_plain_json_and_round_trips():
    rng = np.random.default_rng(10)
    src = perfect_source(rng)
    R = src["representations"].copy()
    R[2, 0] = R[1, 0]  # a zero step: step_ratio inf for input 0
    rep = analyze(dict(src, representations=R))
    d = rep.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text) == d
    assert d["verdicts"] == dict(rep.verdicts)
    assert d["thresholds"] == Thresholds().to_dict()
    assert d["metrics"]["step_ratio"]["spread"]["max"] == "inf"
    assert set(d["metrics"]) == set(rep.metrics)


def test_save_writes_json_atomically(tmp_path):
    rep = analyze(perfect_source(np.random.default_rng(11)))
    target = tmp_path / "report.json"
    assert rep.save(target) == target
    assert json.loads(target.read_text()) == rep.to_dict()
    assert os.listdir(tmp_path) == ["report.json"]
    rep.save(str(target))  # overwrite in place
    assert os.listdir(tmp_path) == ["report.json"]


def test_save_to_a_missing_folder_raises_and_leaves_nothing(tmp_path):
    rep = analyze(perfect_source(np.random.default_rng(12)))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        rep.save(tmp_path / "nope" / "report.json")
    assert os.listdir(tmp_path) == []
    with pytest.raises(IsADirectoryError):
        rep.save(tmp_path)
    assert os.listdir(tmp_path) == []


def test_interrupted_save_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    rep = analyze(perfect_source(np.random.default_rng(13)))
    target = tmp_path / "report.json"
    target.write_text("old")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        rep.save(target)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["report.json"]


def test_text_and_html_tables():
    rep = analyze(perfect_source(np.random.default_rng(14)))
    text = str(rep)
    lines = text.splitlines()
    assert lines[0].startswith("RA report: L=4, N=6, d=8, C=3, k=3")
    assert lines[1].split() == ["property", "measure", "value", "chance", "threshold", "verdict"]
    row = next(line for line in lines if line.startswith("RA1") and "collinearity" in line)
    assert row.split()[-2:] == ["0.9", "pass"] and ">=" in row
    assert "verdicts: RA1 holds, RA2 holds, RA3 holds, RA4 undetermined" in text
    html = rep._repr_html_()
    assert html.count("<table>") == 2 and "<td>collinearity (median)</td>" in html
    assert "&gt;= 0.9" in html and html.count("<td>holds</td>") == 3  # RA4 undetermined (issue 15)
    assert html.count("<td>undetermined</td>") == 1
    assert repr(rep) == "RAReport(RA1=True, RA2=True, RA3=True, RA4=None, metrics=22)"
    src = perfect_source(np.random.default_rng(14))
    del src["representations"]
    text = str(analyze(src))
    assert "RA1 undetermined" in text and "no representations" in text


def test_report_is_frozen():
    rep = analyze(perfect_source(np.random.default_rng(15)))
    with pytest.raises(AttributeError):
        rep.verdicts = {}
    with pytest.raises(TypeError):
        rep.metrics["x"] = None
    with pytest.raises(ValueError):
        rep.metrics["collinearity"].samples[0] = 0.0


# ----------------------------------------------------------------- bad input
def _bad(src, key, value):
    out = dict(src)
    if value is _DELETE:
        del out[key]
    else:
        out[key] = value
    return out


_DELETE = object()


@pytest.mark.parametrize(
    "key, value, exc, match",
    [
        ("classes", _DELETE, ValueError, "'classes'"),
        ("classes", 1, ValueError, "classes must be >= 2"),
        ("classes", 2.0, TypeError, "classes must be an integer"),
        ("classes", np.array([3]), TypeError, "'classes' must be an integer scalar"),
        ("labels", _DELETE, ValueError, "'labels'"),
        ("labels", np.arange(6) % 3 + 1, ValueError, r"'labels' must lie in \[0, classes\)"),
        ("labels", -np.ones(6, dtype=int), ValueError, "'labels' must lie"),
        ("labels", np.zeros(6), TypeError, "'labels' must be an integer"),
        ("labels", np.zeros((2, 3), dtype=int), ValueError, "'labels' must have shape"),
        ("labels", np.zeros(5, dtype=int), ValueError, "representations"),
        ("jacobians", _DELETE, ValueError, "no Jacobians"),
        ("jacobians", np.ones((4, 8)), ValueError, "jacobians must have shape"),
        ("jacobians", np.ones((4, 6, 8, 7)), ValueError, "jacobians must hold square"),
        ("jacobians", np.full((4, 8, 8), np.nan), ValueError, "jacobians must be finite"),
        ("jacobians", np.ones((4, 8, 8), dtype=np.int64), TypeError, "jacobians must be a real floating"),
        ("U", np.ones((4, 8, 2)), ValueError, "exactly one"),
        ("representations", np.ones((4, 6, 8)), ValueError, r"'representations' must have shape \(L\+1, N, d\)"),
        ("representations", np.ones((5, 6, 7)), ValueError, "'representations'"),
        ("representations", np.full((5, 6, 8), np.inf), ValueError, "representations must be finite"),
        ("skips", np.ones((3, 8, 8)), ValueError, "'skips'"),
        ("skips", np.ones((8,)), ValueError, "skips must have shape"),
        ("classifier", np.ones((2, 8)), ValueError, r"'classifier' must have shape \(C, d\)"),
        ("classifier_bias", np.ones(2), ValueError, "'classifier_bias'"),
    ],
)
def test_bad_sources_name_the_key(key, value, exc, match):
    src = perfect_source(np.random.default_rng(16))
    with pytest.raises(exc, match=match):
        analyze(_bad(src, key, value))


def test_bad_factor_sources_and_options():
    rng = np.random.default_rng(17)
    src = perfect_source(rng, per_input=True)
    U, S, V = top_singular(src["jacobians"], 3)
    base = {k: v for k, v in src.items() if k != "jacobians"}
    with pytest.raises(ValueError, match=r"missing \['V'\]"):
        analyze(dict(base, U=U, S=S))
    with pytest.raises(ValueError, match="S must have shape"):
        analyze(dict(base, U=U, S=S[..., :2], V=V))
    with pytest.raises(ValueError, match="'U' has N = 6 inputs"):
        analyze(dict(base, U=U, S=S, V=V, labels=np.zeros(7, dtype=int),
                     representations=np.zeros((5, 7, 8))))
    with pytest.raises(ValueError, match="k must be"):
        analyze(dict(base, U=U, S=S, V=V), k=4)
    with pytest.raises(ValueError, match="k must be"):
        analyze(src, k=9)
    with pytest.raises(TypeError, match="thresholds"):
        analyze(src, thresholds={"ra1_collinearity": 0.5})
    with pytest.raises(ValueError, match="tau"):
        analyze(src, tau=2.0)
    with pytest.raises(TypeError, match="source"):
        analyze(None)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"ra1_collinearity": 1.5}, "ra1_collinearity"),
        ({"ra2_alignment": -0.1}, "ra2_alignment"),
        ({"ra2_chance_cap": 2.0}, "ra2_chance_cap"),
        ({"ra3_max_rank": -1}, "ra3_max_rank"),
        ({"ra4_sigma1_cv": float("nan")}, "ra4_sigma1_cv"),
        ({"ra4_slope_low": -0.5, "ra4_slope_high": -0.7}, "ra4_slope_low"),
    ],
)
def test_thresholds_are_validated(kw, match):
    with pytest.raises(ValueError, match=match):
        Thresholds(**kw)


def test_analyze_never_modifies_its_source():
    src = perfect_source(np.random.default_rng(18), per_input=True)
    src["skips"] = np.broadcast_to(np.eye(8), (4, 8, 8)).copy()
    copies = {k: np.copy(v) for k, v in src.items()}
    for v in src.values():
        if isinstance(v, np.ndarray):
            v.setflags(write=False)
    analyze(src)
    for k, v in src.items():
        np.testing.assert_array_equal(v, copies[k])


def test_report_metrics_equal_the_metric_functions():
    src = random_source(np.random.default_rng(19))
    rep = analyze(src)
    direct = alignment_metrics(src["jacobians"], k=2)
    direct.update(trajectory_metrics(src["representations"]))
    for name, m in direct.items():
        assert rep.metrics[name].value == pytest.approx(m.value, rel=1e-12), name
