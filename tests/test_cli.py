"""The ``ramodel`` command line, end to end through subprocesses.

Every subcommand runs as ``python -m ramodel.cli ...`` (so no console script needs to be
installed) on its happy path and on bad input. Output files are checked for content
against an independent in-process computation, not only for existence.
"""

from __future__ import annotations

import base64
import csv
import importlib.metadata
import importlib.util
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ramodel
from ramodel import cli, mappings
from ramodel.jacobian_set import JacobianSet
from ramodel.sweeps import SweepResult

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run(*args, cwd, env=None, timeout=300):
    """``python -m ramodel.cli ARGS`` in ``cwd``; returns the CompletedProcess."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "ramodel.cli", *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc, *needles):
    """Exit 2, one line on stderr naming the problem, no traceback, nothing on stdout."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "error:" in lines[0] and "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert proc.stdout == ""


@pytest.fixture
def invoke(tmp_path, monkeypatch, capsys):
    """Run the CLI in ``tmp_path``: ``via="subprocess"`` end to end, else in this process (cheaper).

    Each subcommand's bad-input test runs its first case through a subprocess and the
    others through :func:`ramodel.cli.main`, which is what the subprocess runs.
    """

    def call(*args, via="inprocess"):
        if via == "subprocess":
            return run(*args, cwd=tmp_path)
        monkeypatch.chdir(tmp_path)
        capsys.readouterr()
        try:
            rc = cli.main([str(a) for a in args])
        except SystemExit as exc:  # argparse errors
            rc = exc.code
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=rc, stdout=out, stderr=err)

    return call


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.external, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "img":
            self.srcs.append(a.get("src", ""))
        for key in ("src", "href"):
            if a.get(key) and not a[key].startswith("data:"):
                self.external.append(a[key])


def check_page(path: pathlib.Path) -> _Images:
    """A self-contained page: parses, no external resources, every image a decodable PNG."""
    from matplotlib import image

    text = path.read_text(encoding="utf-8")
    parser = _Images()
    parser.feed(text)
    assert text.startswith("<!DOCTYPE html>") and "script" not in parser.tags and "link" not in parser.tags
    assert parser.external == []
    assert parser.srcs
    for src in parser.srcs:
        head, data = src.split(",", 1)
        assert head == "data:image/png;base64"
        pixels = image.imread(io.BytesIO(base64.b64decode(data, validate=True)), format="png")
        assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100 and np.ptp(pixels) > 0
    return parser


# ---------------------------------------------------------------------------- fixtures
def _sim_file(path, **kwargs):
    """A Jacobian file from a simulation (per-input Jacobians by broadcasting), without torch."""
    sim = ramodel.simulate(**kwargs)
    J = np.asarray(sim.jacobians)
    N = sim.labels.shape[0]
    js = JacobianSet(labels=sim.labels, classes=sim.classes, meta={"loss": "mse", "note": "test"},
                     jacobians=np.broadcast_to(J[:, None], (J.shape[0], N, *J.shape[1:])).copy(),
                     representations=np.asarray(sim.representations), classifier=np.asarray(sim.classifier))
    js.save(path)
    return sim, path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jacobians")
    ident = _sim_file(folder / "identity.npz", depth=3, classes=2, width=4, samples_per_class=3, seed=0)
    orth = _sim_file(folder / "orthogonal.npz", depth=3, classes=2, width=4, samples_per_class=3, seed=1,
                     skip="orthogonal")
    bare = JacobianSet(labels=[0, 1, 1], classes=2,
                       jacobians=np.stack([np.diag([1.0, 0.5, 0.0])] * 6).reshape(2, 3, 3, 3))
    bare.save(folder / "bare.npz")
    (folder / "corrupt.npz").write_bytes(b"PK\x03\x04 not a zip")
    return {"identity": ident, "orthogonal": orth, "bare": folder / "bare.npz", "corrupt": folder / "corrupt.npz",
            "folder": folder}


# ----------------------------------------------------------------------------- parser
@pytest.mark.parametrize("command", sorted(cli.EXAMPLES))
def test_every_subcommand_has_help_with_examples_and_json(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"ramodel {command}" in out.split("examples:")[1]
    assert "--json" in out and "--debug" in out


def test_no_command_is_an_error(capsys):
    assert cli.main([]) == 2
    assert "COMMAND is required" in capsys.readouterr().err


def test_default_command_keeps_python_m_ramodel_flags(capsys):
    # python -m ramodel --depth 2 ... means ramodel simulate --depth 2 ...
    rc = cli.main(["--depth", "2", "--classes", "2", "--width", "3", "--samples-per-class", "2", "--json"],
                  default_command="simulate")
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["simulation"]["config"]["depth"] == 2 and out["simulation"]["converged"]


def test_jsonable_is_strict_json():
    value = {"a": np.float64("nan"), "b": [np.inf, -np.inf], "c": np.arange(2), "d": (np.bool_(True), 1.5)}
    text = json.dumps(cli._jsonable(value), allow_nan=False)
    assert json.loads(text) == {"a": None, "b": ["inf", "-inf"], "c": [0, 1], "d": [True, 1.5]}


@pytest.mark.skipif(not importlib.metadata.entry_points(group="console_scripts", name="ramodel"),
                    reason="the ramodel console script is not installed (pip install -e . after the "
                           "[project.scripts] entry is added)")
def test_installed_entry_point(tmp_path):
    (ep,) = importlib.metadata.entry_points(group="console_scripts", name="ramodel")
    assert ep.value == "ramodel.cli:main"
    exe = shutil.which("ramodel") or str(pathlib.Path(sys.executable).parent / "ramodel")
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == f"ramodel {ramodel.__version__}"


# ---------------------------------------------------------------------------- simulate
def test_simulate_writes_report_figures_and_jacobians(tmp_path):
    out = tmp_path / "sim"
    args = ["--depth", 3, "--classes", 2, "--width", 4, "--samples-per-class", 3, "--seed", 2]
    proc = run("simulate", *args, "--out", out, "--save-jacobians", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert json.loads((out / "report.json").read_text()) == payload

    ref = ramodel.simulate(3, 2, width=4, samples_per_class=3, seed=2)
    sim = payload["simulation"]
    assert sim["converged"] and sim["grad_norm"] <= 1e-10
    np.testing.assert_allclose(sim["singular_values"],
                               np.linalg.svd(ref.jacobians, compute_uv=False)[:, :4], atol=1e-8)
    assert [t["name"] for t in sim["theorems"]] == ["T1", "T2", "T3"] and all(t["holds"] for t in sim["theorems"])
    rep = ref.report()
    assert payload["report"]["verdicts"] == dict(rep.verdicts)
    assert payload["report"]["metrics"]["sigma1_mean"]["value"] == pytest.approx(
        rep.metrics["sigma1_mean"].value, rel=1e-8)

    text = (out / "report.txt").read_text()
    assert "UJM simulation" in text and "RA report" in text and "verdicts:" in text
    for name in ("alignment.png", "spectra.png", "trajectories.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = check_page(out / "report.html")
    assert len(page.srcs) == 3
    # The page embeds exactly the PNG files.
    names = ("alignment.png", "spectra.png", "trajectories.png")
    pngs = {base64.b64encode((out / n).read_bytes()).decode() for n in names}
    assert {src.split(",", 1)[1] for src in page.srcs} == pngs

    js = JacobianSet.load(out / "jacobians.npz")
    assert js.jacobians.shape == (3, 6, 4, 4)
    np.testing.assert_allclose(js.jacobians, np.broadcast_to(ref.jacobians[:, None], js.jacobians.shape), atol=1e-8)
    assert js.meta["weight_decay"] == [0.01, 0.01] and js.meta["loss"] == "mse"


def test_simulate_text_and_not_converged_exit_status(invoke):
    proc = invoke("simulate", "--depth", 2, "--classes", 2, "--width", 3, "--samples-per-class", 2, via="subprocess")
    assert proc.returncode == 0, proc.stderr
    assert "converged after" in proc.stdout and "verdicts: RA1" in proc.stdout
    proc = invoke("simulate", "--depth", 4, "--classes", 3, "--width", 6, "--max-steps", 1, "--tol", 1e-14, "--json")
    assert proc.returncode == 1 and json.loads(proc.stdout)["simulation"]["converged"] is False


@pytest.mark.parametrize("via, args, needle", [
    ("subprocess", ["--depth", "0"], "depth"),
    ("inprocess", ["--skip", "nope"], "nope"),
    ("inprocess", ["--depth", "x"], "--depth"),
    ("inprocess", ["--save-jacobians"], "--out"),
    ("inprocess", ["--weight-decay", "0.1", "0.1", "0.1"], "--weight-decay"),
    ("inprocess", ["--skip", "missing.npy"], "missing.npy"),
])
def test_simulate_bad_input_is_one_line(invoke, via, args, needle):
    assert_one_line_error(invoke("simulate", *args, via=via), needle)


def test_debug_raises_instead_of_one_line():
    for argv in (["simulate", "--depth", "0", "--debug"], ["--debug", "simulate", "--depth", "0"]):
        with pytest.raises(ValueError, match="depth must be >= 1"):
            cli.main(argv)


# ------------------------------------------------------------------------------- sweep
def _csv_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_sweep_resumes_from_its_csv(tmp_path):
    out = tmp_path / "grid.csv"
    (tmp_path / "grid.toml").write_text('depths = [2, 4]\nclasses = 2\nwidths = [4]\nseeds = 0\nbranch_factors = 2\n')
    proc = run("sweep", "--config", "grid.toml", "--out", out, "--workers", 2, "--progress", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    first = json.loads(proc.stdout)
    assert (first["runs"], first["kept"], first["computed"], first["failed"]) == (2, 0, 2, 0)
    assert "2/2" in proc.stderr  # the progress bar
    rows = _csv_rows(out)
    assert [r["depth"] for r in rows] == ["2", "4"] and {r["branch_factors"] for r in rows} == {"2"}
    ref = ramodel.simulate(4, 2, width=4, branch_factors=2, seed=0).report()
    assert float(rows[1]["sigma1_mean"]) == pytest.approx(ref.metrics["sigma1_mean"].value, rel=1e-6)

    # Extend the grid from the command line: only depth 8 is new; the old rows keep every cell
    # (their timings too: not recomputed). The explicit --tol 1e-10 is the float64 default: same
    # runs, and the new tol column records it for the old rows too.
    before = _csv_rows(out)
    proc = run("sweep", "--depths", 2, 4, 8, "--classes", 2, "--widths", 4, "--branch-factors", 2, "--tol", 1e-10,
               "--out", out, "--workers", 1, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    second = json.loads(proc.stdout)
    assert (second["runs"], second["kept"], second["computed"]) == (3, 2, 1)
    after = _csv_rows(out)
    assert len(after) == 3 and [{k: r[k] for k in before[0]} for r in after[:2]] == before
    assert after[2]["depth"] == "8" and after[2]["tol"] == after[0]["tol"] == "1e-10"
    (group, fit), = [(g["group"], g["fit"]) for g in second["depth_slope"]]
    rows = _csv_rows(out)
    ref_fit = ramodel.metrics.fit_depth_slope([int(r["depth"]) for r in rows], [float(r["sigma1_mean"]) for r in rows])
    assert fit["slope"] == pytest.approx(ref_fit.slope, rel=1e-9) and group["branch_factors"] == 2

    # A failed row is recomputed; the others are kept.
    rows[0]["error"], rows[0]["sigma1_mean"] = "RuntimeError: simulated failure", ""
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    proc = run("sweep", "--depths", 2, 4, 8, "--classes", 2, "--widths", 4, "--branch-factors", 2, "--out", out,
               "--workers", 1, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "3 runs: 2 kept" in proc.stdout and "1 computed, 0 failed" in proc.stdout
    assert "RA4 depth slope" in proc.stdout
    fixed = _csv_rows(out)
    assert fixed[0]["error"] == "" and float(fixed[0]["sigma1_mean"]) > 0


def test_sweep_failed_run_is_a_row_and_exits_1(tmp_path):
    # A family that fails for seed 1 only: preflight (first seed) passes, the run itself fails.
    (tmp_path / "flaky.py").write_text(
        "import numpy as np\nfrom ramodel import mappings\n"
        "@mappings.register('flaky', attributes=())\n"
        "def flaky(width, rng):\n"
        "    M = np.eye(width)\n"
        "    if rng.random() < 2:  # always: the stack's first draw decides\n"
        "        pass\n"
        "    return M\n")
    out = tmp_path / "s.csv"
    env = {"PYTHONPATH": str(tmp_path)}
    proc = run("sweep", "--import", "flaky", "--depths", 2, "--classes", 2, "--widths", 3, "--skips", "flaky",
               "identity", "--seeds", 0, 1, "--out", out, "--workers", 1, "--json", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["failed"] == 0
    # Now make seed 1's runs raise: the family reads an environment variable.
    (tmp_path / "flaky.py").write_text(
        "import os, numpy as np\nfrom ramodel import mappings\n"
        "@mappings.register('flaky', attributes=())\n"
        "def flaky(width, rng):\n"
        "    raise RuntimeError('flaky family refuses to draw')\n")
    rows = _csv_rows(out)
    rows = [r for r in rows if r["skip"] != "flaky" or r["seed"] != "1"]  # forget one flaky run
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    proc = run("sweep", "--import", "flaky", "--depths", 2, "--classes", 2, "--widths", 3, "--skips", "flaky",
               "identity", "--seeds", 0, 1, "--out", out, "--workers", 1, "--json", cwd=tmp_path, env=env)
    assert proc.returncode == 1, proc.stderr
    payload = json.loads(proc.stdout)
    assert (payload["kept"], payload["computed"], payload["failed"]) == (3, 1, 1)
    (bad,) = [r for r in payload["rows"] if r["error"]]
    assert (bad["skip"], bad["seed"]) == ("flaky", 1) and "flaky family refuses" in bad["error"]


@pytest.mark.parametrize("via, setup, args, needle", [
    ("subprocess", None, ["--depths", "0", "--classes", "2"], "depth must be >= 1"),
    ("inprocess", None, ["--classes", "2"], "--depths"),
    ("inprocess", "bogus = 1\ndepths = [2]\nclasses = 2\n", ["--config", "grid.toml"], "bogus"),
    ("inprocess", "depths = [2\n", ["--config", "grid.toml"], "TOML"),
    ("inprocess", "depths = [2]\nclasses = 2\nweight_decay = 'x'\n", ["--config", "grid.toml"], "weight_decay"),
    ("inprocess", "not,a,sweep\n1,2,3\n", ["--depths", "2", "--classes", "2", "--out", "other.csv"],
     "not a ramodel sweep CSV"),
])
def test_sweep_bad_input_is_one_line(invoke, tmp_path, via, setup, args, needle):
    if setup is not None:
        (tmp_path / ("other.csv" if "--out" in args else "grid.toml")).write_text(setup)
    if "--out" not in args:
        args = [*args, "--out", "s.csv"]
    assert_one_line_error(invoke("sweep", *args, via=via), needle)
    assert not (tmp_path / "s.csv").exists()


def test_sweep_on_dask_closes_but_never_shuts_down_the_cluster(tmp_path):
    # A stand-in for dask.distributed: the real one is an optional extra, not installed in CI.
    pkg = tmp_path / "shim" / "dask"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "distributed.py").write_text(
        "import pathlib\nfrom ramodel.sweeps import SerialExecutor\n"
        "LOG = pathlib.Path('dask.log')\n"
        "class Client:\n"
        "    def __init__(self, address):\n"
        "        LOG.write_text(f'connect {address}\\n')\n"
        "    def run(self, fn, *args):\n"
        "        fn(*args)\n"
        "        LOG.write_text(LOG.read_text() + f'run {args}\\n')\n"
        "    def get_executor(self):\n"
        "        return SerialExecutor()\n"
        "    def close(self):\n"
        "        LOG.write_text(LOG.read_text() + 'close\\n')\n"
        "    def shutdown(self):\n"
        "        raise AssertionError('the CLI must not stop the cluster')\n")
    (tmp_path / "shim" / "myskips.py").write_text("")
    proc = run("sweep", "--depths", 2, 3, "--classes", 2, "--widths", 3, "--out", "s.csv", "--dask", "tcp://sched:8786",
               "--import", "myskips", "--json", cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "shim")})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["computed"] == 2 and len(_csv_rows(tmp_path / "s.csv")) == 2
    assert (tmp_path / "dask.log").read_text() == "connect tcp://sched:8786\nrun (['myskips'],)\nclose\n"


def test_sweep_dask_without_dask_says_how_to_install(tmp_path):
    # dask is part of the test extra, so its absence is simulated: a package that fails to import
    shim = tmp_path / "shim" / "dask"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError(\"No module named 'dask'\")\n")
    proc = run("sweep", "--depths", 2, "--classes", 2, "--out", "s.csv", "--dask", "tcp://x:1", cwd=tmp_path,
               env={"PYTHONPATH": str(tmp_path / "shim")})
    assert_one_line_error(proc, "pip install 'dask[distributed]'")


def _row_text(config):
    text = SweepResult(rows=(config,), columns=tuple(config)).to_csv()
    return next(csv.DictReader(io.StringIO(text)))


@given(depth=st.integers(1, 64), classes=st.integers(2, 10), width=st.one_of(st.none(), st.integers(2, 64)),
       seed=st.integers(0, 2**31), k=st.integers(1, 3), tol=st.sampled_from([None, 1e-10, 1e-8, 0.5]),
       wd=st.one_of(st.floats(1e-4, 1.0), st.tuples(st.floats(1e-4, 1.0), st.floats(1e-4, 1.0))),
       skip=st.sampled_from(["identity", "orthogonal", "scaled(correlation)"]))
def test_run_key_survives_the_csv_and_separates_runs(depth, classes, width, seed, k, tol, wd, skip):
    config = {"depth": depth, "classes": classes, "skip": skip, "seed": seed, "branch_factors": k,
              "weight_decay": wd}
    if width is not None:
        config["width"] = width
    if tol is not None:
        config["tol"] = tol
    row = _row_text(config)
    if width is None:  # run_one records the width simulate chose
        row["width"] = str(max(16, classes))
    assert cli.run_key(row) == cli.run_key(config)
    assert cli.run_key({**config, "seed": seed + 1}) != cli.run_key(config)
    assert cli.run_key({**config, "branch_factors": k + 1}) != cli.run_key(config)


def test_run_key_fills_defaults():
    assert cli.run_key({"depth": 4, "classes": 3}) == cli.run_key(
        {"depth": 4, "classes": 3, "width": 16, "seed": 0, "skip": "identity", "loss": "mse",
         "weight_decay": 0.01, "branch_factors": 1, "dtype": "float64", "tol": ""})
    assert cli.run_key({"depth": 4, "classes": 3}) != cli.run_key({"depth": 4, "classes": 3, "loss": "cross_entropy"})


# ----------------------------------------------------------------------------- analyze
def test_analyze_side_by_side_json_and_html(files, tmp_path):
    a, b = files["identity"][1], files["bare"]
    proc = run("analyze", a, b, "--html", tmp_path / "r.html", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert [f["path"] for f in payload["files"]] == [str(a), str(b)]
    for entry, path in zip(payload["files"], (a, b)):
        ref = ramodel.analyze(JacobianSet.load(path))
        assert entry["report"]["verdicts"] == dict(ref.verdicts)
        for name, m in ref.metrics.items():
            assert entry["report"]["metrics"][name]["value"] == pytest.approx(m.value, rel=1e-9, abs=1e-12)
    page = check_page(tmp_path / "r.html")
    assert len(page.srcs) == 5  # K heat map, spectra (and trajectories, with representations) per file
    text = (tmp_path / "r.html").read_text()
    assert "Side by side" in text and "identity.npz" in text and "bare.npz" in text


def test_analyze_text(files, tmp_path):
    proc = run("analyze", files["orthogonal"][1], files["bare"], "--k", 1, "--threshold", "ra3_energy=0.5",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "== orthogonal.npz" in proc.stdout and "== bare.npz" in proc.stdout and "side by side" in proc.stdout
    assert ">= 0.5" in proc.stdout  # the overridden threshold is used


@pytest.mark.parametrize("via, which, extra, needle", [
    ("subprocess", "corrupt", [], "corrupt.npz"),
    ("inprocess", "missing", [], "missing.npz"),
    ("inprocess", "identity", ["--threshold", "nope=1"], "nope"),
    ("inprocess", "identity", ["--k", "9"], "k"),
    ("inprocess", "identity", ["--html", "no/such/folder/r.html"], "does not exist"),
])
def test_analyze_bad_input_is_one_line(files, invoke, tmp_path, via, which, extra, needle):
    path = {"missing": tmp_path / "missing.npz", "corrupt": files["corrupt"],
            "identity": files["identity"][1]}[which]
    assert_one_line_error(invoke("analyze", path, *extra, via=via), needle)


# ------------------------------------------------------------------------------ theory
def test_theory_with_fit_json_and_html(files, tmp_path):
    from ramodel import fit, theory

    path = files["identity"][1]
    proc = run("theory", path, "--html", tmp_path / "t.html", "--json", "--chance-draws", 2, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (entry,) = json.loads(proc.stdout)["files"]
    js = JacobianSet.load(path)
    ref = theory.check(js, fitted=fit.fit_ujm(js, seed=0), chance_draws=2, seed=0)
    got = entry["theory"]
    assert set(got["measures"]) == set(ref.measures) and set(got["fit"]) == set(ref.fit)
    for name, m in ref.measures.items():
        assert got["measures"][name]["value"] == pytest.approx(m.value, rel=1e-6, abs=1e-10)
        assert got["measures"][name]["chance"] == pytest.approx(m.chance, rel=1e-9)
    # The file is a converged UJM, so the fitted UJM is the same model: alignments 1.
    assert got["fit"]["subspace_alignment_left"]["value"] == pytest.approx(1.0, abs=1e-6)
    page = check_page(tmp_path / "t.html")
    assert len(page.srcs) >= 3


def test_theory_text_no_fit_and_file_without_representations(files, tmp_path):
    proc = run("theory", files["identity"][1], files["bare"], "--no-fit", "--chance-draws", 1, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("Theorem measures") == 2 and "fitted UJM" not in proc.stdout
    assert "side by side" in proc.stdout
    proc = run("theory", files["bare"], "--chance-draws", 0, cwd=tmp_path)
    assert proc.returncode == 0 and "UJM fit was skipped" in proc.stdout


@pytest.mark.parametrize("via, which, extra, needle", [
    ("subprocess", "identity", ["--chance-draws", "-1"], "chance_draws"),
    ("inprocess", "corrupt", [], "corrupt.npz"),
    ("inprocess", "identity", ["--fit-loss", "hinge"], "--fit-loss"),
])
def test_theory_bad_input_is_one_line(files, invoke, via, which, extra, needle):
    path = files["corrupt"] if which == "corrupt" else files["identity"][1]
    assert_one_line_error(invoke("theory", path, *extra, via=via), needle)


# ------------------------------------------------------------------------------- train
def test_train_exports_the_trained_network(tmp_path):
    torch = pytest.importorskip("torch")
    from ramodel import datasets
    from ramodel.nets import ResidualMLP

    out = tmp_path / "mlp"
    proc = run("train", "--out", out, "--classes", 3, "--width", 8, "--depth", 2, "--epochs", 1, "--inputs", 12,
               "--batch-size", 64, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert json.loads((out / "train.json").read_text()) == payload
    js = JacobianSet.load(out / "jacobians.npz")
    assert js.jacobians.shape == (2, 12, 8, 8) and js.representations.shape == (3, 12, 8)
    ds = datasets.digits(classes=3, seed=0)
    np.testing.assert_array_equal(js.labels, ds.y_test[:12])
    assert js.meta["test_accuracy"] == payload["training"]["final_test_accuracy"]
    assert 0 <= js.meta["test_accuracy"] <= 1 and js.meta["dataset"] == "digits"

    # Rebuild the trained network from the checkpoint and recompute h_0 and J_1(x_0).
    net = ResidualMLP(64, 3, width=8, depth=2, seed=0, init_seed=0).double()
    net.load_state_dict(torch.load(out / "checkpoint.pt", weights_only=True)["model"])
    x = torch.as_tensor(np.array(ds.x_test[:12]))
    with torch.no_grad():
        h0 = net.embed(x)
    np.testing.assert_allclose(js.representations[0], h0.numpy(), rtol=1e-5, atol=1e-6)
    J = torch.autograd.functional.jacobian(net.blocks[0].branch, h0[0])
    np.testing.assert_allclose(js.jacobians[0, 0], J.numpy(), rtol=1e-5, atol=1e-6)


def test_train_without_torch_says_how_to_install(tmp_path):
    shim = tmp_path / "shim" / "torch"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('No module named torch (test shim)')\n")
    proc = run("train", "--out", tmp_path / "o", cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "shim")})
    assert_one_line_error(proc, "pip install 'ramodel[torch]'")


def test_train_bad_input_is_one_line(invoke, tmp_path):
    assert_one_line_error(invoke("train", "--out", tmp_path / "o", "--epochs", 0, via="subprocess"), "--epochs")
    assert_one_line_error(invoke("train", "--out", tmp_path / "o", "--dataset", "cifar"), "--dataset")
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------- prove
def test_prove_runs_the_checkout_proofs(tmp_path):
    proc = run("prove", "--symbolic-only", "--json", cwd=tmp_path)  # found next to the package, not the cwd
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    sys.path.insert(0, str(ROOT))
    try:
        import proofs
    finally:
        sys.path.remove(str(ROOT))
    assert payload["failed"] == 0 and payload["passed"] == len(proofs.THEOREMS)
    assert [r["name"] for r in payload["results"]][0] == "gradient"
    assert all(r["status"].startswith("proven") for r in payload["results"])


def test_prove_bad_input_is_one_line(tmp_path, monkeypatch, capsys):
    assert_one_line_error(run("prove", "--numerically", cwd=tmp_path), "--numerically")
    monkeypatch.setattr(cli, "find_checkout", lambda: None)
    assert cli.main(["prove"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "source checkout" in err


# ---------------------------------------------------------------------------- families
def test_families_lists_the_registry(tmp_path):
    proc = run("families", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    items = json.loads(proc.stdout)["families"]
    assert [it["name"] for it in items] == list(mappings.families())
    for it in items:
        assert it["attributes"] == list(mappings.attributes(it["name"]))
        assert set(it["params"]) == set(mappings.get(it["name"]).params)
    proc = run("families", "correlation", "--param", "kind=banded", "--param", "bandwidth=2", cwd=tmp_path)
    assert proc.returncode == 0
    expected = ", ".join(mappings.attributes("correlation", kind="banded", bandwidth=2))
    assert expected in " ".join(proc.stdout.split())


def test_families_imports_a_user_family(tmp_path):
    (tmp_path / "myskips.py").write_text(
        "import numpy as np\nfrom ramodel import mappings\n"
        "@mappings.register('householder', attributes=('orthogonal', 'determinant_pm1'))\n"
        "def householder(width, rng):\n"
        "    v = rng.standard_normal(width)\n"
        "    return np.eye(width) - 2 * np.outer(v, v) / (v @ v)\n")
    proc = run("families", "householder", "--import", "myskips", "--json", cwd=tmp_path,
               env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    (item,) = json.loads(proc.stdout)["families"]
    assert item["attributes"] == ["orthogonal", "determinant_pm1"]
    proc = run("simulate", "--import", "myskips", "--skip", "householder", "--depth", 2, "--classes", 2, "--width", 3,
               "--samples-per-class", 2, "--json", cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0 and json.loads(proc.stdout)["simulation"]["config"]["skip"] == "householder"


@pytest.mark.parametrize("via, args, needle", [
    ("subprocess", ["nope"], "nope"),
    ("inprocess", ["identity", "orthogonal", "--param", "x=1"], "exactly one"),
    ("inprocess", ["correlation", "--param", "rho=5"], "rho"),
    ("inprocess", ["--import", "no_such_module_xyz"], "no_such_module_xyz"),
])
def test_families_bad_input_is_one_line(invoke, via, args, needle):
    assert_one_line_error(invoke("families", *args, via=via), needle)
