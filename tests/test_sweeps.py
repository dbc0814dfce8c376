"""Sweeps: grid order, failures as rows, CSV output, RA4 slope fits."""

import concurrent.futures as cf
import csv

import numpy as np
import pytest

import ramodel
from ramodel.sweeps import SerialExecutor, sweep


def test_grid_rows_in_order_with_metrics_and_verdicts():
    res = sweep(depths=[3, 2], classes=[2, 3], widths=5, seeds=[0, 1], executor="serial")
    assert len(res) == 8
    assert res.column("depth") == [3, 3, 3, 3, 2, 2, 2, 2]
    assert res.column("classes") == [2, 2, 3, 3] * 2
    assert res.column("seed") == [0, 1] * 4
    assert all(res.column("converged"))
    for c in ("grad_norm", "T1", "T2", "T3", "RA2", "RA3", "sigma1_mean", "numerical_rank"):
        assert c in res.columns
    # The row's metric equals the one computed directly from the same run.
    s = ramodel.simulate(depth=3, classes=2, width=5, seed=1)
    row = res.rows[1]
    assert row["sigma1_mean"] == pytest.approx(float(np.mean(np.linalg.svd(s.jacobians, compute_uv=False)[:, 0])), rel=1e-9)


def test_a_failing_configuration_is_a_row_and_the_rest_survive():
    res = sweep(depths=[2, 0, 3], classes=2, widths=4, executor="serial")
    assert len(res) == 3
    assert [r["error"] is None for r in res.rows] == [True, False, True]
    assert "depth must be >= 1" in res.rows[1]["error"]
    assert res.failed == (res.rows[1],)
    assert res.rows[0]["converged"] and res.rows[2]["converged"]


def test_process_pool_gives_the_same_table_as_serial():
    kwargs = dict(depths=[2, 3], classes=2, widths=4, seeds=[0])
    a = sweep(**kwargs, executor="serial")
    with cf.ProcessPoolExecutor(max_workers=2) as pool:
        b = sweep(**kwargs, executor=pool)
    assert a.columns == b.columns
    for ra, rb in zip(a.rows, b.rows):
        assert {k: v for k, v in ra.items() if k != "seconds"} == {k: v for k, v in rb.items() if k != "seconds"}


def test_csv_roundtrip_and_atomic_write(tmp_path):
    res = sweep(depths=[2, 0], classes=2, widths=4, executor=SerialExecutor())
    path = tmp_path / "sweep.csv"
    res.to_csv(path)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["depth"] for r in rows] == ["2", "0"]
    assert rows[1]["error"].startswith("ValueError")
    assert float(rows[0]["sigma1_mean"]) == pytest.approx(res.rows[0]["sigma1_mean"], rel=1e-15)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.csv"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        res.to_csv(tmp_path / "missing" / "sweep.csv")


def test_depth_slope_with_two_branch_factors_is_near_minus_one():
    res = sweep(depths=[2, 4, 8, 16], classes=3, widths=6, seeds=[0, 1], branch_factors=2, executor="serial")
    (group, fit), = res.depth_slope()
    assert group["branch_factors"] == 2
    assert -1.3 <= fit.slope <= -0.7
    assert fit.ci_low <= fit.slope <= fit.ci_high


def test_bad_executor_and_empty_grid():
    with pytest.raises(TypeError, match="executor"):
        sweep(depths=[2], classes=2, executor=42)
    with pytest.raises(ValueError, match="depths must not be empty"):
        sweep(depths=[], classes=2)
