"""``Simulation.to_dict``, ``to_jacobian_set`` and ``save``: the run leaves the library in one place."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ramodel
from ramodel.jacobian_set import JacobianSet


@pytest.fixture(scope="module")
def sim():
    return ramodel.simulate(depth=3, classes=2, width=4, samples_per_class=3, seed=0)


def test_to_dict_is_plain_json_with_the_singular_values(sim):
    d = sim.to_dict()
    json.dumps(d, allow_nan=False)  # raises on NaN or a non-JSON value
    S = np.linalg.svd(np.asarray(sim.jacobians), compute_uv=False)[:, : min(sim.width, sim.classes + 2)]
    np.testing.assert_allclose(np.array(d["singular_values"]), S, rtol=1e-12, atol=0)
    assert d["converged"] is True and d["steps"] == sim.steps and d["message"] == sim.message
    assert [p["name"] for p in d["phases"]] == [p.name for p in sim.phases]
    assert [t["name"] for t in d["theorems"]] == ["T1", "T2", "T3"]
    assert len(sim.to_dict(top=1)["singular_values"][0]) == 1


def test_to_jacobian_set_broadcasts_and_round_trips_through_save(sim, tmp_path):
    js = sim.to_jacobian_set(meta={"note": "x"})
    N = sim.labels.shape[0]
    assert js.jacobians.shape == (sim.depth, N, sim.width, sim.width)
    for n in range(N):
        np.testing.assert_array_equal(js.jacobians[:, n], np.asarray(sim.jacobians))
    assert js.meta["note"] == "x" and js.meta["loss"] == "mse"
    path = sim.save(tmp_path / "sim.npz")
    back = JacobianSet.load(path)
    np.testing.assert_array_equal(back.jacobians, js.jacobians)
    np.testing.assert_array_equal(back.labels, np.asarray(sim.labels))
    # the same analysis from the file as from the simulation itself
    a, b = ramodel.analyze(back).to_dict(), ramodel.analyze(js).to_dict()
    assert a["verdicts"] == b["verdicts"]


def test_cli_names_still_work(sim):
    from ramodel.cli import simulation_jacobian_set

    np.testing.assert_array_equal(simulation_jacobian_set(sim).jacobians, sim.to_jacobian_set().jacobians)


def test_notebook_view_gives_undetermined_with_its_reason():
    # k = 3 from the default start ends at the trivial point J = 0 (a strict local minimum)
    s = ramodel.simulate(depth=2, classes=2, width=3, samples_per_class=2, seed=0, branch_factors=3)
    assert s.is_trivial
    html = s._repr_html_()
    assert "undetermined (trivial critical point" in html
    assert "branch_factors=3" in html and "n/a</td>" not in html


def test_overflowing_problem_warns_nothing_and_raises_the_solver_error():
    import warnings

    from ramodel.optimize import DivergenceError

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a leaked numpy warning fails the test
        with pytest.raises(DivergenceError, match="NaN/Inf"):
            ramodel.simulate(depth=3, classes=2, width=4, mean_scale=1e150)
