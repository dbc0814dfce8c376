"""ramodel.metrics.registry: every metric declared once, and analyze follows the table (issue 18)."""

import numpy as np
import pytest

import ramodel
from ramodel import metrics
from ramodel.metrics import registry
from ramodel.report import _GROUPS, Thresholds


def _source(rng, L=3, N=5, d=6, C=2):
    return {
        "jacobians": rng.standard_normal((L, N, d, d)),
        "labels": np.arange(N) % C,
        "classes": C,
        "representations": rng.standard_normal((L + 1, N, d)).cumsum(axis=0),
        "classifier": rng.standard_normal((C, d)),
    }


def test_every_metric_of_analyze_is_in_the_table():
    rep = ramodel.analyze(_source(np.random.default_rng(0)), k=2)
    names = [m.name for m in registry.METRICS]
    assert len(names) == len(set(names))
    assert set(rep.metrics) | set(rep.unavailable) == set(names)
    assert set(rep.metrics) == set(names)  # a full source gives every one
    assert {m.property for m in registry.METRICS} == set(registry.FAMILIES)
    assert _GROUPS == registry.groups()
    assert [n for names_ in _GROUPS.values() for n in names_] == names


def test_the_checks_follow_the_verdict_rules():
    th = Thresholds(ra1_equispacing=0.7, ra3_energy=0.8)
    rep = ramodel.analyze(_source(np.random.default_rng(1)), k=2, thresholds=th)
    d, C, chance = 6, 2, 2 / 6
    need = th.ra2_required(chance)
    # The rules as analyze wrote them before the table (issue 18 changes no behaviour).
    ra2 = (f"mean >= max({th.ra2_alignment:g}, {th.ra2_chance_multiple:g} x chance capped at chance + "
           f"{th.ra2_chance_cap:g}(1 - chance))")
    expected = [
        ("RA1", "collinearity", ">=", th.ra1_collinearity, f"median >= {th.ra1_collinearity:g}"),
        ("RA1", "equispacing", ">=", 0.7, "median >= 0.7"),
        ("RA2", "A_left", ">=", need, ra2),
        ("RA2", "A_right", ">=", need, ra2),
        ("RA3", "numerical_rank", "<=", float(C), f"median <= {C}"),
        ("RA3", "energy_top_C", ">=", 0.8, "median >= 0.8"),
    ]
    got = [(c.property, c.metric, c.op, c.threshold, c.rule) for c in rep.checks]
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    assert [g[4] for g in got] == [e[4] for e in expected]
    np.testing.assert_allclose([g[3] for g in got], [e[3] for e in expected], rtol=1e-15)
    assert d > C


def test_each_row_function_computes_the_reported_value():
    rng = np.random.default_rng(2)
    src = _source(rng)
    rep = ramodel.analyze(src, k=2)
    J, R = src["jacobians"], src["representations"]
    for spec in registry.METRICS:
        if spec.property == "RA1":
            m = spec.function(R)
        elif spec.property == "RA2":
            m = spec.function(J, k=2) if spec.name != "cos_lr" else spec.function(J)
        elif spec.name == "energy_top_C":
            m = spec.function(J, 2)
        elif spec.property in ("RA3", "RA4"):
            m = spec.function(J)
        else:
            args = (R[-1], src["labels"], 2)
            m = spec.function(*args, src["classifier"]) if "classifier" in spec.needs else spec.function(*args)
        assert m.name == spec.name
        assert m.value == pytest.approx(rep.metrics[spec.name].value, rel=1e-12, abs=1e-14), spec.name


def test_key_named_aliases_and_lookup():
    assert metrics.a_lr is metrics.alignment_lr
    assert metrics.cos_lr is metrics.cosine_lr
    assert metrics.energy_top_C is metrics.energy_top_c
    assert registry.by_name("a_lr").function is metrics.alignment_lr
    assert registry.needing("classifier") == ("nc3", "nc4")
    with pytest.raises(KeyError, match="known"):
        registry.by_name("alignment_lr")
