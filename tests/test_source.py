"""ramodel._source: the one reader of FORMAT.md-shaped input (issue 18)."""

from types import MappingProxyType

import numpy as np
import pytest

import ramodel
from ramodel import _source
from ramodel._source import as_source, is_simulation, resolve_classes


@pytest.fixture(scope="module")
def sim():
    return ramodel.simulate(depth=2, classes=2, width=4, samples_per_class=2, seed=0)


def test_fields_by_key_attribute_and_bare_array(sim):
    J = np.zeros((2, 3, 3))
    by_key = as_source({"jacobians": J, "classes": 2, "meta": {"loss": "cross_entropy"}})
    assert by_key.layout == "dense" and by_key.shared and not by_key.bare
    assert by_key.jacobians is J  # never copied
    assert by_key.provenance.kind == "arrays" and by_key.provenance.loss == "cross_entropy"
    bare = as_source(J)
    assert bare.bare and bare.jacobians is J and bare.classes is None
    s = as_source(sim)
    assert s.kind == "simulation" and s.provenance.is_simulation
    assert s.provenance.grad_norm == sim.grad_norm and s.provenance.converged == sim.converged
    assert s.provenance.loss == sim.config["loss"]
    assert s.depth == sim.depth and s.classes_or() == sim.classes
    assert as_source(s) is s


def test_factor_layout_and_its_errors():
    U = np.zeros((2, 5, 4, 1))
    S = np.zeros((2, 5, 1))
    src = as_source({"U": U, "S": S, "V": U})
    assert src.layout == "factors" and src.shared is False and src.factors == (U, S, U)
    with pytest.raises(ValueError, match=r"missing \['V'\]"):
        as_source({"U": U, "S": S})
    with pytest.raises(ValueError, match="exactly one"):
        as_source({"jacobians": np.zeros((2, 4, 4)), "U": U})
    with pytest.raises(ValueError, match="no Jacobians"):
        as_source({"labels": np.zeros(3, dtype=int)}).require_jacobians()
    with pytest.raises(TypeError, match="obj must be a Simulation, got None"):
        as_source(None, name="obj", expected="a Simulation")


def test_classes_are_resolved_once():
    assert resolve_classes(np.array(3)) == 3
    assert resolve_classes(None, 4) == 4
    assert resolve_classes(3, 3) == 3
    with pytest.raises(ValueError, match="disagrees"):
        resolve_classes(3, 4)
    with pytest.raises(ValueError, match="classes="):
        resolve_classes(None)
    with pytest.raises(TypeError, match="integer scalar"):
        resolve_classes(np.array([2, 3]))
    with pytest.raises(ValueError, match="classes"):
        resolve_classes(1)


def test_provenance_is_duck_typed(sim):
    class Like:
        config = MappingProxyType({"loss": "mse"})
        grad_norm = 1e-3
        converged = False
        is_trivial = False
        jacobians = np.zeros((2, 3, 3))

    assert is_simulation(Like()) and is_simulation(sim)
    assert not is_simulation({"config": {}, "grad_norm": 0, "converged": True, "is_trivial": False,
                              "jacobians": 0})
    p = as_source(Like()).provenance
    assert p.kind == "simulation" and p.converged is False and p.grad_norm == 1e-3


def test_constants_are_defined_once():
    from ramodel import jacobian_set, metrics, report, scaling, summary, theory

    assert metrics.DEFAULT_TAU is _source.RANK_TAU is theory.DEFAULT_TAU
    assert summary.RANK_TAU is _source.RANK_TAU
    assert summary.THEOREM_TOL is theory.THEOREM_TOL is _source.THEOREM_TOL
    assert scaling.ACTIVE_FLOOR is theory.ACTIVE_FLOOR is report.Thresholds().active_floor
    assert jacobian_set._ORTHONORMAL_FACTOR is metrics._ORTHONORMAL_FACTOR is _source.ORTHONORMAL_FACTOR
    assert jacobian_set._ORDER_FACTOR is metrics._ORDER_FACTOR is _source.ORDER_FACTOR


def _imported_modules(module):
    import ast
    import pathlib

    path = pathlib.Path(module.__file__)
    files = sorted(path.parent.glob("*.py")) if path.name == "__init__.py" else [path]
    out = set()
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                out.add(("." * node.level) + (node.module or ""))
                out.update(("." * node.level) + a.name for a in node.names if node.module is None)
    return out


def test_theory_does_not_import_simulation():
    # theory -> simulation -> summary -> theory was the package's only import cycle.
    from ramodel import theory

    assert not any(m.rsplit(".", 1)[-1] == "simulation" for m in _imported_modules(theory))


def test_one_factor_check_for_the_file_the_metrics_and_the_theory():
    from ramodel import theory
    from ramodel.jacobian_set import JacobianSet
    from ramodel.metrics import alignment_lr

    rng = np.random.default_rng(3)
    Q = np.linalg.qr(rng.standard_normal((2, 4, 6, 3)))[0]
    S = np.sort(rng.random((2, 4, 3)), axis=-1)[..., ::-1] + 0.1
    bad_U = Q.copy()
    bad_U[1, 2] *= 1.01  # layer 1, input 2
    base = {"labels": np.arange(4) % 2, "classes": 2}
    where = r"at layer 1, input 2, above the tolerance"
    with pytest.raises(ValueError, match=r"'U' must have orthonormal columns: max \|U\^T U - I\| = .* " + where):
        JacobianSet(U=bad_U, S=S, V=Q, **base)
    with pytest.raises(ValueError, match=r"^U must have orthonormal columns: .* " + where):
        alignment_lr((bad_U, S, Q))
    with pytest.raises(ValueError, match=r"'U' must have orthonormal columns: .* " + where):
        theory.check({"U": bad_U, "S": S, "V": Q, **base}, chance_draws=0)
    rising = S.copy()
    rising[0, 1] = [1.0, 2.0, 0.5]
    with pytest.raises(ValueError, match=r"'S' must be non-increasing .* S\[0, 1, 1\] = 2 > S\[0, 1, 0\] = 1"):
        _source.check_factor_values(Q, rising, Q)
    with pytest.raises(ValueError, match="'S' holds singular values, which must be >= 0"):
        _source.check_factor_values(Q, -S, Q)
    _source.check_factor_values(Q, S, Q)  # valid factors pass


def test_factor_check_runs_in_the_arrays_namespace():
    xp = pytest.importorskip("array_api_strict")
    Q = np.linalg.qr(np.random.default_rng(4).standard_normal((2, 5, 2)))[0]
    S = np.array([[2.0, 1.0], [3.0, 0.5]])
    _source.check_factor_values(xp.asarray(Q), xp.asarray(S), xp.asarray(Q))
    with pytest.raises(ValueError, match="'V' must have orthonormal columns: .* at layer 0,"):
        _source.check_factor_values(xp.asarray(Q), xp.asarray(S), xp.asarray(2.0 * Q))
