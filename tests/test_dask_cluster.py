"""Sweeps on a real ``dask.distributed.LocalCluster``: two worker processes, loopback only.

Needs the ``dask`` extra (it is part of the ``test`` extra, so CI installs it). The fast tests
run by default; the worker-kill test is ``slow`` and runs in CI through ``.ci/run``'s
``-m "dask or faults"`` step.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ramodel.sweeps import sweep

distributed = pytest.importorskip("dask.distributed")

pytestmark = pytest.mark.dask

GRID = dict(depths=[2, 3, 4], classes=2, widths=3, seeds=[0, 1])


def _cluster():
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the worker processes
    return distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                    dashboard_address="127.0.0.1:0", silence_logs=40)


@pytest.fixture(scope="module")
def client():
    with _cluster() as cluster, distributed.Client(cluster) as c:
        c.wait_for_workers(2, timeout=120)
        yield c


def _same_rows(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k != "seconds"} == {k: v for k, v in rb.items() if k != "seconds"}


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _cli(*args, cwd, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ramodel.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, **kw)


def test_sweep_on_the_client_executor_matches_serial_and_leaves_the_cluster_running(client, tmp_path):
    assert len(client.scheduler_info()["workers"]) == 2
    res = sweep(**GRID, executor=client.get_executor(), out=tmp_path / "d.csv")
    ref = sweep(**GRID, executor="serial")
    _same_rows(res.rows, ref.rows)
    assert res.columns == ref.columns and not res.failed
    assert len(_rows(tmp_path / "d.csv")) == 6
    # The rows really ran on the workers (other processes), and the cluster is still up.
    pids = set(client.run(os.getpid).values())
    assert len(pids) == 2 and os.getpid() not in pids
    assert client.submit(sum, [1, 2]).result() == 3


def test_cli_sweep_dask_runs_on_the_cluster_and_resumes(client, tmp_path):
    address = client.scheduler.address
    args = ["sweep", "--depths", 2, 3, 4, "--classes", 2, "--widths", 3, "--seeds", 0, 1, "--out", "s.csv",
            "--dask", address, "--json"]
    proc = _cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert (payload["runs"], payload["computed"], payload["failed"]) == (6, 6, 0)
    ref = sweep(**GRID, executor="serial")
    got = {(r["depth"], r["seed"]): r["sigma1_mean"] for r in payload["rows"]}
    assert got == {(r["depth"], r["seed"]): r["sigma1_mean"] for r in ref.rows}
    proc = _cli(*args, cwd=tmp_path)
    assert proc.returncode == 0 and json.loads(proc.stdout)["kept"] == 6
    assert client.submit(sum, [1, 2]).result() == 3  # the CLI closed its client, not the cluster


def _wait_for_rows(path, n, child, limit=300.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if child.poll() is not None:
            raise AssertionError(f"the sweep ended before {n} rows: {child.communicate()}")
        try:
            if path.exists() and len(_rows(path)) >= n:
                return
        except (OSError, csv.Error):
            pass
        time.sleep(0.02)
    raise AssertionError(f"fewer than {n} rows after {limit} s")


@pytest.mark.slow
@pytest.mark.faults
def test_a_worker_killed_mid_run_loses_nothing_and_the_sweep_resumes(tmp_path):
    out = tmp_path / "k.csv"
    grid = ["--depths", 12, 14, 16, 18, "--classes", 3, "--widths", 12, "--seeds", 0, 1, 2]
    with _cluster() as cluster, distributed.Client(cluster) as c:
        c.wait_for_workers(2, timeout=120)
        child = subprocess.Popen([sys.executable, "-m", "ramodel.cli", "sweep", *map(str, grid), "--out", str(out),
                                  "--dask", cluster.scheduler_address, "--json"], cwd=tmp_path,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"})
        try:
            _wait_for_rows(out, 1, child)
            pids = c.run(os.getpid)
            busy = [w for w, tasks in c.processing().items() if tasks and w in pids]
            assert busy, "no worker is running a task"
            os.kill(pids[busy[0]], signal.SIGKILL)  # a worker process, in the middle of its run
            stdout, stderr = child.communicate(timeout=600)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert child.returncode in (0, 1), stderr
        payload = json.loads(stdout)
        rows = payload["rows"]
        assert len(rows) == 12 and payload["runs"] == 12  # every run has its row: retried or reported
        lost = [r for r in rows if r["error"]]
        assert all("worker lost" in r["error"] for r in lost), lost
        print(f"worker killed: {len(lost)} of 12 runs reported lost, the rest finished (retried by Dask)")
        assert len(_rows(out)) == 12
        # Resume: only the lost runs are computed again.
        proc = _cli("sweep", *grid, "--out", out, "--dask", cluster.scheduler_address, "--json", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        again = json.loads(proc.stdout)
        assert (again["kept"], again["computed"], again["failed"]) == (12 - len(lost), len(lost), 0)
