"""Sweeps that keep their work: rows written as they finish, interrupts, resume, damaged rows, failed runs."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import ramodel.sweeps as sweeps
from ramodel.sweeps import record_path, sweep

GRID = dict(depths=[2, 3, 4], classes=2, widths=3, seeds=0)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _same(a, b):
    drop = {"seconds"}
    return {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


def test_serial_sweep_writes_each_row_as_it_finishes_and_stops_at_once_on_ctrl_c(tmp_path, monkeypatch):
    out = tmp_path / "s.csv"
    real = sweeps.run_one
    seen = []

    def run_one(cfg):
        if len(seen) == 2:
            # Two rows are already on disk when the third run starts.
            assert [r["depth"] for r in _rows(out)] == ["2", "3"]
            raise KeyboardInterrupt
        seen.append(cfg["depth"])
        return real(cfg)

    monkeypatch.setattr(sweeps, "run_one", run_one)
    with pytest.raises(KeyboardInterrupt):
        sweep(**GRID, executor="serial", out=out)
    assert seen == [2, 3] and len(_rows(out)) == 2
    monkeypatch.setattr(sweeps, "run_one", real)
    res = sweep(**GRID, executor="serial", out=out)
    assert res.kept == 2 and len(res) == 3 and not res.failed
    fresh = sweep(**GRID, executor="serial")
    for a, b in zip(res.rows, fresh.rows):
        assert _same(a, b)


def _truncate_inside_last_cell(path):
    text = path.read_text()
    assert text.endswith("\n")
    body = text[:-1]
    # Cut inside the last cell of the last line: every cell is still there, one is damaged.
    last = body.rsplit(",", 1)[1]
    assert len(last) >= 2, last
    path.write_text(body[:-1])  # e.g. "0.1798" -> "0.179", "0.0" -> "0."


@pytest.mark.parametrize("with_record", [True, False])
def test_a_truncated_last_row_is_rerun_never_trusted(tmp_path, with_record):
    out = tmp_path / "s.csv"
    first = sweep(**GRID, executor="serial", out=out)
    assert record_path(out).exists()
    if not with_record:
        record_path(out).unlink()  # a CSV alone (an older ramodel, or copied without its record)
    _truncate_inside_last_cell(out)
    res = sweep(**GRID, executor="serial", out=out)
    assert res.kept == 2
    for a, b in zip(res.rows, first.rows):
        assert _same(a, b)
    last = _rows(out)[-1]
    name = list(last)[-1]
    assert float(last[name]) == first.rows[-1][name]  # the cut cell is whole again


def test_an_edited_cell_disagrees_with_the_record_and_is_rerun(tmp_path):
    out = tmp_path / "s.csv"
    first = sweep(**GRID, executor="serial", out=out)
    rows = _rows(out)
    rows[1]["sigma1_mean"] = "0."
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    res = sweep(**GRID, executor="serial", out=out)
    assert res.kept == 2
    assert res.rows[1]["sigma1_mean"] == first.rows[1]["sigma1_mean"]
    assert float(_rows(out)[1]["sigma1_mean"]) == first.rows[1]["sigma1_mean"]


def test_the_record_is_typed_and_a_cut_record_line_is_ignored(tmp_path):
    out = tmp_path / "s.csv"
    sweep(**GRID, executor="serial", out=out)
    lines = record_path(out).read_text().splitlines()
    assert len(lines) == 3
    rec = json.loads(lines[0])
    assert rec["format"] == sweeps.RECORD_FORMAT and rec["row"]["depth"] == 2 and rec["row"]["converged"] is True
    record_path(out).write_text("\n".join(lines)[:-10])  # kill -9 in the middle of the last append
    assert len(sweeps._read_records(record_path(out))) == 2  # the cut line is not trusted
    # Its CSV row is complete (the CSV is replaced atomically), so it is kept from the CSV,
    # and the record is rebuilt whole.
    res = sweep(**GRID, executor="serial", out=out)
    assert res.kept == 3
    assert len(sweeps._read_records(record_path(out))) == 3


def test_resume_false_overwrites_and_other_grids_are_kept(tmp_path):
    out = tmp_path / "s.csv"
    sweep(depths=[2], classes=2, widths=3, executor="serial", out=out)
    res = sweep(depths=[3], classes=2, widths=3, executor="serial", out=out)
    assert res.kept == 0 and len(res.other_rows) == 1 and [r["depth"] for r in _rows(out)] == ["3", "2"]
    res = sweep(depths=[3], classes=2, widths=3, executor="serial", out=out, resume=False)
    assert res.kept == 0 and [r["depth"] for r in _rows(out)] == ["3"]
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a ramodel sweep CSV"):
        sweep(depths=[3], classes=2, widths=3, executor="serial", out=tmp_path / "x.csv")


def test_a_run_that_misses_tol_is_a_failed_row_unless_allowed(tmp_path):
    res = sweep(depths=[2, 3, 4], classes=2, widths=3, tol=1e-30, max_steps=5, executor="serial")
    assert len(res.failed) == 3
    assert all(r["error"].startswith("NotConverged: |grad Phi| =") and "max_steps" in r["error"] for r in res.failed)
    assert res.rows[0]["sigma1_mean"] > 0  # the measurements are still recorded
    assert res.depth_slope() == []
    assert "3 failed (3 did not converge)" in res.summary()
    ok = sweep(depths=[2, 3, 4], classes=2, widths=3, tol=1e-30, max_steps=5, executor="serial", allow_unconverged=True)
    assert not ok.failed and len(ok.unconverged) == 3
    assert ok.depth_slope() == [] and len(ok.depth_slope(include_unconverged=True)) == 1
    assert "3 did not converge (allowed)" in ok.summary()


def test_trivial_solutions_are_counted():
    res = sweep(depths=[4], classes=2, widths=3, skips="none", init_scale=1e-3, executor="serial")
    (row,) = res.rows
    assert row["trivial"] is True and res.trivial == (row,)
    assert "1 at the trivial critical point J = 0" in res.summary()


def _cli(*args, cwd, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ramodel.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, **kw)


def test_cli_sweep_exits_1_when_a_run_did_not_converge(tmp_path):
    proc = _cli("sweep", "--depths", 2, 3, "--classes", 2, "--widths", 3, "--tol", 1e-30, "--max-steps", 5, "--out", "s.csv",
                "--workers", 1, "--json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["failed"] == payload["not_converged"] == 2 and payload["depth_slope"] == []


def _wait_for_rows(path, n, child, limit=300.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if child.poll() is not None:
            raise AssertionError(f"child exited early: {child.communicate()}")
        if path.exists():
            try:
                if len(_rows(path)) >= n:
                    return
            except (OSError, csv.Error):
                pass
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} rows after {limit} s")


SLOW_GRID = ["--depths", 4, 5, 6, 7, 8, 9, 10, 11, "--classes", 3, "--widths", 8, "--seeds", 0, 1, 2]


@pytest.mark.faults
@pytest.mark.parametrize("workers", [1, 2])
def test_cli_sweep_stops_at_once_on_sigint_keeps_rows_and_resumes(tmp_path, workers):
    out = tmp_path / "s.csv"
    child = subprocess.Popen([sys.executable, "-m", "ramodel.cli", "sweep", *map(str, SLOW_GRID), "--out", str(out),
                              "--workers", str(workers)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        _wait_for_rows(out, 2, child)
        os.kill(child.pid, signal.SIGINT)
        stdout, stderr = child.communicate(timeout=300)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130, stderr
    assert "interrupted" in stderr and "resume" in stderr
    done = _rows(out)
    assert 2 <= len(done) < 24  # stopped at once, not at the end of the grid
    assert all(r["error"] == "" for r in done)
    # Resume the part of the grid that was reached: every finished row is kept.
    depths = sorted({int(r["depth"]) for r in done})
    proc = _cli("sweep", "--depths", *depths, "--classes", 3, "--widths", 8, "--seeds", 0, 1, 2, "--out", out,
                "--workers", 1, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["kept"] == len(done) and payload["computed"] == 3 * len(depths) - len(done)


@pytest.mark.slow
@pytest.mark.faults
def test_kill_9_during_a_serial_sweep_loses_only_the_run_in_progress(tmp_path):
    out = tmp_path / "s.csv"
    args = [sys.executable, "-m", "ramodel.cli", "sweep", *map(str, SLOW_GRID), "--out", str(out), "--workers", "1"]
    for _ in range(3):
        child = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"})
        try:
            before = len(_rows(out)) if out.exists() else 0
            _wait_for_rows(out, before + 2, child)
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        rows = _rows(out)
        assert len(rows) >= before + 2 and all(r["error"] == "" for r in rows)
        assert not [p for p in tmp_path.iterdir() if ".ramodel-tmp." in p.name and str(child.pid) not in p.name]
    proc = _cli("sweep", *SLOW_GRID, "--out", out, "--workers", 1, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["kept"] == len(rows) and payload["kept"] + payload["computed"] == 24
    assert not [p for p in tmp_path.iterdir() if ".ramodel-tmp." in p.name]


@pytest.mark.faults
def test_the_default_pool_stops_at_once_on_sigint_with_finished_rows_kept(tmp_path):
    out = tmp_path / "p.csv"
    script = ("import sys\nfrom ramodel.sweeps import sweep\n"
              "if __name__ == '__main__':\n"
              "    sweep(depths=range(4, 12), classes=3, widths=8, seeds=[0, 1, 2], out=sys.argv[1])\n")
    child = subprocess.Popen([sys.executable, "-c", script, str(out)], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        _wait_for_rows(out, 2, child)
        os.kill(child.pid, signal.SIGINT)  # the parent only, as a scheduler or a user's kill would
        _, stderr = child.communicate(timeout=300)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert "KeyboardInterrupt" in stderr
    done = _rows(out)
    assert 2 <= len(done) < 24 and all(r["error"] == "" for r in done)
    res = sweep(depths=sorted({int(r["depth"]) for r in done}), classes=3, widths=8, seeds=[0, 1, 2],
                executor="serial", out=out)
    assert res.kept == len(done)


def test_cli_allow_unconverged_keeps_the_rows_and_exits_0(tmp_path):
    proc = _cli("sweep", "--depths", 2, 3, "--classes", 2, "--widths", 3, "--tol", 1e-30, "--max-steps", 5,
                "--out", "s.csv", "--workers", 1, "--allow-unconverged", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["failed"] == 0 and [r["converged"] for r in payload["rows"]] == [False, False]
