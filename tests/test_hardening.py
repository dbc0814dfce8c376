"""Issue 17 (hardening): CI exit codes, the one atomic writer, owned arrays, bad input named early."""

from __future__ import annotations

import os
import pathlib
import signal
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ramodel
from ramodel import _io, mappings
from ramodel.jacobian_set import JacobianSet
from ramodel.sweeps import sweep

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------------- item 8: CI
@pytest.mark.parametrize("pytest_rc, expected", [(0, 0), (1, 1), (5, 5)])
def test_ci_run_fails_when_pytest_collects_nothing(tmp_path, pytest_rc, expected):
    # The real .ci/run, against a stand-in interpreter whose "pytest" exits with pytest_rc.
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    (repo / ".ci" / "run").write_bytes((ROOT / ".ci" / "run").read_bytes())
    (repo / "README.md").write_bytes((ROOT / "README.md").read_bytes())
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "python"
    fake.write_text(textwrap.dedent(f"""\
        #!/usr/bin/env bash
        # A stand-in python: venv creation makes a venv whose python is this script too.
        if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
            mkdir -p "$3/bin"; cp "$0" "$3/bin/python"
            printf 'export PATH="%s/bin:$PATH"\\n' "$3" > "$3/bin/activate"; exit 0
        fi
        if [ "$1" = "-m" ] && [ "$2" = "pytest" ]; then exit {pytest_rc}; fi
        exit 0
        """))
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "PYTHON": str(fake)}
    proc = subprocess.run(["bash", str(repo / ".ci" / "run")], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == expected, (proc.stdout, proc.stderr)
    if pytest_rc == 5:
        assert "no tests" in proc.stderr


# ------------------------------------------------------------ item 4: the atomic writer
def test_temporary_files_are_recognisable_and_one_mode(tmp_path):
    target = tmp_path / "out.txt"
    name = _io.temporary_name(target)
    assert name.parent == tmp_path and name.name.startswith(".out.txt.ramodel-tmp.")
    assert f".{os.getpid()}." in name.name
    _io.atomic_write_text(target, "hello")
    assert target.read_text() == "hello"
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()
    target.chmod(0o640)  # an existing file keeps its mode
    _io.atomic_write_text(target, "again")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_checkpoints_use_the_same_writer_and_mode(tmp_path):
    training = pytest.importorskip("ramodel.training")
    path = tmp_path / "ckpt.pt"
    training._save(str(path), {"format": "x", "a": 1})
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()  # not mkstemp's 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_a_killed_write_leaves_a_named_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "big.bin"
    other = tmp_path / "other.bin"
    script = textwrap.dedent(f"""\
        import sys, time
        from ramodel import _io
        def write(fh):
            fh.write(b"x" * 1000)
            fh.flush()
            print("writing", flush=True)
            time.sleep(600)
        _io.atomic_write({str(target)!r}, write)
        """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
        left = [p for p in tmp_path.iterdir() if p.name.startswith(".big.bin.ramodel-tmp.")]
        assert len(left) == 1 and f".{child.pid}." in left[0].name
        # While the writer lives, its temporary file is not touched by another write.
        _io.atomic_write_text(target, "first")
        assert left[0].exists()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert left[0].exists()  # kill -9: nothing could clean up
    stale_other = tmp_path / f".other.bin{_io.TEMP_MARKER}{child.pid}.abcd1234"
    stale_other.write_text("not ours")
    _io.atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert not left[0].exists()
    assert stale_other.exists()  # another destination's temporary file is left alone
    _io.atomic_write_text(other, "x")
    assert not stale_other.exists()


@pytest.mark.parametrize("path, error, needle", [
    ("", ValueError, "empty"),
    (None, TypeError, "file path"),
    (".", IsADirectoryError, "folder"),
])
def test_jacobian_set_save_refuses_bad_paths_by_name(tmp_path, monkeypatch, path, error, needle):
    monkeypatch.chdir(tmp_path)
    js = JacobianSet(labels=[0, 1], classes=2, jacobians=np.zeros((1, 2, 3, 3)))
    with pytest.raises(error, match=needle) as info:
        js.save(path)
    assert "tmp" not in str(info.value)
    with pytest.raises(IsADirectoryError, match="folder"):
        js.save(tmp_path)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------- item 5: owned arrays
def test_jacobian_set_owns_its_arrays(tmp_path):
    J = np.random.default_rng(0).standard_normal((2, 3, 4, 4))
    labels = np.array([0, 1, 1])
    reps = np.zeros((3, 3, 4))
    js = JacobianSet(labels=labels, classes=2, jacobians=J, representations=reps)
    before = js.jacobians.copy()
    J[0, 0, 0, 0] = np.nan  # would not pass validation
    labels[0] = 7
    reps[:] = np.inf
    assert np.array_equal(js.jacobians, before)
    assert js.labels.tolist() == [0, 1, 1] and np.all(js.representations == 0)
    with pytest.raises(ValueError, match="read-only"):
        js.jacobians[0, 0, 0, 0] = 1.0
    back = JacobianSet.load(js.save(tmp_path / "j.npz"))
    assert np.array_equal(back.jacobians, before)
    assert J.flags.writeable  # the caller's array is untouched


# ----------------------------------------------------------------- item 6: bad input
@pytest.mark.parametrize("kwargs, error, needle", [
    (dict(inputs=np.ones((4, 3)) * (1 + 1j), labels=[0, 1, 0, 1]), TypeError, "inputs must be an array of real"),
    (dict(inputs=[["a", "b", "c"]] * 4, labels=[0, 1, 0, 1]), TypeError, "inputs must be an array of real numbers, got strings"),
    (dict(inputs=np.zeros((0, 3)), labels=np.zeros(0, dtype=int)), ValueError, "inputs must not be empty"),
    (dict(inputs=np.ones((4, 3)), labels=["a", "b", "a", "b"]), TypeError, "labels must be an array of integer"),
    (dict(skip_params=[1]), TypeError, "skip_params must be a dict"),
    (dict(skip=np.eye(4) * 1j, width=4), TypeError, "skip must be an array of real numbers, got complex"),
    (dict(skip="permutation", skip_params={1: True}), TypeError, "skip_params keys"),
])
def test_simulate_names_the_bad_argument(kwargs, error, needle):
    with _no_warning():
        with pytest.raises(error, match=needle):
            ramodel.simulate(depth=2, classes=2, **kwargs)


class _no_warning:
    """Bad input is an error, never a numpy warning on the way to a wrong answer."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def test_register_refuses_attributes_none():
    with pytest.raises(TypeError, match=r"attributes must be a tuple of attribute names .* got None"):
        mappings.register("hardening_none", attributes=None)
    with pytest.raises(TypeError, match="attributes must be"):
        mappings.register("hardening_int", attributes=[1])
    assert "hardening_none" not in mappings.families()


@pytest.mark.parametrize("kwargs, error, needle", [
    (dict(branch_factor=2), TypeError, "unexpected keyword argument 'branch_factor' \\(did you mean 'branch_factors'"),
    (dict(depth=3), TypeError, "depths="),
    (dict(progress="yes"), TypeError, "progress must be True, False or None"),
    (dict(resume="no"), TypeError, "resume must be True or False"),
    (dict(allow_unconverged=1), TypeError, "allow_unconverged must be True or False"),
    (dict(loss="hinge"), ValueError, "loss must be one of"),
    (dict(weight_decay=-1.0), ValueError, "weight_decay"),
    (dict(tol=-1.0), ValueError, "tol must be"),
    (dict(out=""), ValueError, "out must be a file path"),
])
def test_sweep_refuses_bad_options_before_the_first_run(tmp_path, monkeypatch, kwargs, error, needle):
    calls = []
    monkeypatch.setattr("ramodel.sweeps.run_one", lambda cfg: calls.append(cfg) or {})
    kwargs.setdefault("out", tmp_path / "s.csv")
    with pytest.raises(error, match=needle):
        sweep(depths=[2, 3], classes=2, widths=3, executor="serial", **kwargs)
    assert calls == [] and list(tmp_path.iterdir()) == []


def test_depth_slope_refuses_unknown_group_columns():
    res = sweep(depths=[2, 3, 4], classes=2, widths=3, executor="serial")
    assert len(res.depth_slope()) == 1
    with pytest.raises(ValueError, match=r"by names column\(s\) \['nope'\]"):
        res.depth_slope(by=["nope"])
    with pytest.raises(ValueError, match="confidence"):
        res.depth_slope(confidence=95)


def test_to_pandas_has_every_column():
    pd = pytest.importorskip("pandas")
    res = sweep(depths=[2, 3], classes=2, widths=3, executor="serial")
    df = res.to_pandas()
    assert isinstance(df, pd.DataFrame) and list(df.columns) == list(res.columns) and len(df) == 2


def test_serial_executor_never_swallows_keyboard_interrupt():
    from ramodel.sweeps import SerialExecutor

    def stop():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        SerialExecutor().submit(stop)
    fut = SerialExecutor().submit(lambda: 1 / 0)
    assert isinstance(fut.exception(), ZeroDivisionError)


# ------------------------------------------------------- item 7: RuntimeWarnings at the source
def test_an_overflowing_start_is_a_divergence_error_without_numpy_warnings():
    import warnings

    from ramodel.optimize import DivergenceError

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning would surface as the error instead
        with pytest.raises(DivergenceError, match="step 0"):
            ramodel.simulate(depth=3, classes=2, width=4, init_scale=1e200, seed=0)


def test_cli_stderr_has_the_error_and_no_numpy_warning(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ramodel.cli", "simulate", "--depth", "3", "--classes", "2",
                           "--width", "4", "--mean-scale", "1e300"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "DivergenceError" in lines[0] and "warning" not in proc.stderr, proc.stderr


def test_a_gaussian_mixture_too_large_for_the_machine_is_refused_with_its_estimate():
    from ramodel._validation import physical_memory
    from ramodel.datasets import gaussian_mixture

    if physical_memory() is None:
        pytest.skip("the platform does not report its memory")
    with pytest.raises(ValueError, match=r"width=1000000, samples_per_class=1000000\) needs about 4.47e\+04 GiB"):
        gaussian_mixture(2, width=10**6, samples_per_class=10**6)
    X, y = gaussian_mixture(2, width=3, samples_per_class=2, seed=0)  # ordinary sizes are untouched
    assert X.shape == (4, 3)
