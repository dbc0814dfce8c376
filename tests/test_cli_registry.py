"""Issue 18 (the CLI part): one module per command, the architecture and data-set registries,
every net of ``ramodel.nets`` trainable from ``ramodel train``, and the sweep pieces moved into
the library (grid files, grid expansion, the strict pre-check, executors, the read-back table)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from ramodel import cli, data_registry, sweeps
from ramodel.jacobian_set import JacobianSet

torch = pytest.importorskip("torch")
from ramodel import nets  # after the torch check
from ramodel.training import train_and_export

NETWORKS = (nets.ResidualMLP, nets.ConvResNet, nets.VisionTransformer, nets.ResidualRNN)


def _train(tmp_path, capsys, *args):
    capsys.readouterr()
    rc = cli.main(["train", "--epochs", "1", "--inputs", "6", "--json", *map(str, args)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# ------------------------------------------------------------------------ commands
def test_every_command_is_one_module_declared_once():
    names = [mod.NAME for mod in cli.COMMANDS]
    assert names == ["simulate", "sweep", "analyze", "theory", "train", "prove", "families"]
    assert list(cli.EXAMPLES) == names
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == names
    for mod in cli.COMMANDS:
        assert mod.__name__ == f"ramodel.cli.{mod.NAME}" and callable(mod.configure) and callable(mod.run)
        assert sub.choices[mod.NAME].get_default("func") is mod.run


def test_cli_import_is_light_and_old_names_stay():
    code = ("import sys, ramodel.cli as c; "
            "print([m for m in ('torch', 'scipy', 'sympy', 'matplotlib', 'ramodel.nets', 'ramodel.training') "
            "if m in sys.modules]); "
            "print(all(hasattr(c, n) for n in ('main', 'build_parser', 'CLIError', 'run_key', 'RUN_KEY_EXCLUDED', "
            "'simulation_jacobian_set', 'find_checkout', 'EXAMPLES', '_jsonable')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]" and out[1] == "True"
    assert cli.RUN_KEY_EXCLUDED == sweeps.RUN_KEY_EXCLUDED


# ---------------------------------------------------------------------- registries
def test_every_network_of_nets_is_registered_once():
    classes = [a.cls for a in nets.ARCHITECTURES.values()]
    assert sorted(c.__name__ for c in classes) == sorted(c.__name__ for c in NETWORKS)
    assert len(set(classes)) == len(classes)
    for name, arch in nets.ARCHITECTURES.items():
        assert arch.name == name and arch.layout in ("flat", "image", "sequence")
        assert arch.export == ("steps" if arch.cls is nets.ResidualRNN else "blocks")
        with pytest.raises(AttributeError):
            arch.name = "other"  # frozen


def test_train_help_lists_the_registries():
    text = cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for name in (*nets.ARCHITECTURES, *data_registry.DATASETS):
        assert name in text


@pytest.mark.parametrize("name", ["digits", "sequential_digits", "majority_symbols", "first_marker"])
def test_dataset_entries_hold_what_they_declare(name):
    entry = data_registry.dataset_entry(name)
    small = {"train_size": 40, "test_size": 20} if "train_size" in entry.options() else {}
    ds = entry.load(seed=0, **small)
    assert ("image" in entry.layouts) == (ds.image_shape is not None)
    assert ("sequence" in entry.layouts) == hasattr(ds, "steps")
    if entry.classes_option is None:
        assert ds.classes == entry.fixed_classes
        with pytest.raises(ValueError, match="fixed number of classes"):
            entry.load(classes=3, **small)
    else:
        assert entry.load(classes=3, seed=0, **small).classes == 3
    with pytest.raises(TypeError, match="takes no option"):
        entry.load(bogus=1)


def test_dataset_registry_adds_no_import_and_names_its_entries():
    code = "import sys, ramodel; a = set(sys.modules); import ramodel.data_registry; print(sorted(set(sys.modules) - a))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "['ramodel.data_registry']"
    with pytest.raises(ValueError, match="digits"):
        data_registry.load("cifar")


def test_build_checks_layout_and_options():
    digits = data_registry.load("digits", classes=3)
    seq = data_registry.load("majority_symbols", classes=3, steps=4, train_size=20, test_size=10)
    assert isinstance(nets.build("mlp", seq, width=4, depth=1), nets.ResidualMLP)  # flat rows of anything
    assert isinstance(nets.build("vit", digits, width=8, depth=1, heads=2), nets.VisionTransformer)
    rnn = nets.build("rnn", seq, width=5, init_seed=0)
    assert (rnn.steps, rnn.features, rnn.hidden, rnn.classes) == (4, 3, 5, 3)
    with pytest.raises(ValueError, match="sequence data set"):
        nets.build("rnn", digits)
    with pytest.raises(ValueError, match="image data set"):
        nets.build("conv", seq)
    with pytest.raises(TypeError, match=r"its options are \['channels', 'depth'\]"):
        nets.build("conv", digits, width=4)
    with pytest.raises(ValueError, match="'mlp', 'conv', 'vit', 'rnn'"):
        nets.architecture("resnet50")


def test_rnn_jacobian_set_against_autograd_and_the_recurrence():
    seq = data_registry.load("majority_symbols", classes=3, steps=5, train_size=20, test_size=10, seed=1)
    net = nets.build("rnn", seq, width=4, skip="orthogonal", seed=2, init_seed=3)
    x, y = np.array(seq.x_test[:3]), np.array(seq.y_test[:3])
    js = net.jacobian_set(x, y, meta={"note": "t"})
    T, N, d = 5, 3, 4
    assert js.jacobians.shape == (T, N, d, d) and js.representations.shape == (T + 1, N, d)
    assert js.depth == T and js.meta["note"] == "t" and js.meta["architecture"] == "ResidualRNN"
    M = net.cell.skip.M.double().numpy()
    np.testing.assert_array_equal(js.skips, net.cell.skip.M.numpy())
    np.testing.assert_allclose(js.classifier, net.classifier.weight.detach().numpy())
    ref = net.double()
    X = torch.as_tensor(x).reshape(N, T, 3)
    h = torch.zeros(N, d, dtype=torch.float64)
    np.testing.assert_array_equal(js.representations[0], 0.0)
    for t in range(T):
        for n in range(N):  # the Jacobian of f(., x_t) at h_{t-1}, one input at a time
            J = torch.autograd.functional.jacobian(lambda v, n=n, t=t: ref.cell.branch(v[None], X[n, t][None])[0], h[n])
            np.testing.assert_allclose(js.jacobians[t, n], J.numpy(), rtol=1e-10, atol=1e-12)
        with torch.no_grad():
            h = h @ torch.as_tensor(M).T + ref.cell.branch(h, X[:, t])
        np.testing.assert_allclose(js.representations[t + 1], h.numpy(), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ ramodel train
@pytest.mark.parametrize(("arch", "args", "depth", "width"), [
    ("mlp", ["--width", 6, "--depth", 2], 2, 6),
    ("conv", ["--channels", 2, "--depth", 1], 1, 2 * 8 * 8),
    ("vit", ["--width", 4, "--depth", 1, "--heads", 2, "--patch", 4], 2, 5 * 4),
    ("rnn", ["--dataset", "majority_symbols", "--classes", 3, "--data-param", "steps=4",
             "--data-param", "train_size=60", "--data-param", "test_size=20", "--width", 5], 4, 5),
])
def test_every_architecture_trains_and_exports_from_the_cli(tmp_path, capsys, arch, args, depth, width):
    out = tmp_path / arch
    rc, stdout, err = _train(tmp_path, capsys, "--arch", arch, "--classes", 3, *args, "--out", out)
    assert rc == 0, err
    payload = json.loads(stdout)
    assert payload["model"]["architecture"] == nets.ARCHITECTURES[arch].cls.__name__
    assert json.loads((out / "train.json").read_text()) == payload
    js = JacobianSet.load(out / "jacobians.npz")
    assert (js.depth, js.n_inputs, js.width, js.classes) == (depth, 6, width, 3)
    assert js.meta["dataset"] == ("majority_symbols" if arch == "rnn" else "digits")
    assert np.isfinite(js.jacobians).all()
    assert cli.main(["analyze", str(out / "jacobians.npz"), "--json"]) == 0


def test_sequence_digits_train_an_rnn_row_by_row(tmp_path, capsys):
    rc, _, err = _train(tmp_path, capsys, "--arch", "rnn", "--dataset", "sequential_digits", "--classes", 3,
                        "--width", 4, "--out", tmp_path / "r")
    assert rc == 0, err
    js = JacobianSet.load(tmp_path / "r" / "jacobians.npz")
    assert js.depth == 8 and js.width == 4  # 8 rows of 8 pixels


@pytest.mark.parametrize(("args", "match"), [
    (["--arch", "rnn"], "needs a sequence data set"),
    (["--arch", "rnn", "--dataset", "majority_symbols", "--depth", 3], "sequence length"),
    (["--arch", "rnn", "--dataset", "majority_symbols", "--method", "matrix_free"], "dense"),
    (["--arch", "rnn", "--dataset", "majority_symbols", "--k", 2], "do not apply"),
    (["--arch", "conv", "--width", 3], "--width does not apply to --arch conv"),
    (["--arch", "vit", "--dataset", "first_marker"], "needs an image data set"),
    (["--dataset", "first_marker", "--classes", 3], "fixed number of classes"),
    (["--dataset", "digits", "--data-param", "steps=3"], "--dataset digits"),
    (["--arch", "resnet"], "--arch"),
    (["--method", "svd"], "--method"),
])
def test_train_refuses_bad_combinations_before_training(tmp_path, capsys, args, match):
    out = tmp_path / "never"
    try:
        rc = cli.main(["train", "--steps", "100000", "--out", str(out), *map(str, args)])
    except SystemExit as exc:  # argparse
        rc = exc.code
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and match in err, err
    assert not out.exists()


def test_train_and_export_is_a_library_function(tmp_path):
    seq = data_registry.load("first_marker", steps=3, train_size=40, test_size=10)
    net = nets.build("rnn", seq, width=3, init_seed=0)
    with pytest.warns(UserWarning):  # one epoch leaves the initialisation in place
        done = train_and_export(net, seq, tmp_path / "o", inputs=4, pick="random", epochs=1, lr=0.01)
    assert done.files["jacobians.npz"].is_file() and done.jacobian_set.depth == 3
    assert list(done.indices) == sorted(done.indices) and len(done.indices) == 4
    assert done.to_dict()["model"]["architecture"] == "ResidualRNN"
    with pytest.raises(ValueError, match="matrix_free"):
        train_and_export(net, seq, tmp_path / "p", method="matrix_free", epochs=1)
    assert not (tmp_path / "p").exists()


# ---------------------------------------------------------- sweep pieces, in the library
def test_grid_configs_is_the_order_of_sweep():
    configs = sweeps.grid_configs(depths=[2, 3], classes=2, widths=[4, None], seeds=[0, 1], tol=1e-8)
    assert len(configs) == 8 and all(c["tol"] == 1e-8 for c in configs)
    assert [(c["depth"], c.get("width"), c["seed"]) for c in configs[:4]] == [(2, 4, 0), (2, 4, 1), (2, None, 0),
                                                                              (2, None, 1)]
    res = sweeps.sweep(depths=[2, 3], classes=2, widths=[4], seeds=[0, 1], executor="serial")
    assert [(r["depth"], r["seed"]) for r in res.rows] == [(c["depth"], c["seed"]) for c in
                                                           sweeps.grid_configs(depths=[2, 3], classes=2, widths=[4],
                                                                               seeds=[0, 1])]
    back = res.as_read()
    assert back.column("depth") == res.column("depth") and back.kept == res.kept
    assert all(isinstance(v, float) for v in back.column("grad_norm"))


def test_load_grid_check_runs_and_make_executor(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text("depths = [2, 4]\nclasses = 3\nbranch_factors = 2\nskip_params = { signed = true }\n")
    axes, options = sweeps.load_grid(path)
    assert axes == {"depths": [2, 4], "classes": [3]}
    assert options == {"branch_factors": 2, "skip_params": {"signed": True}}
    path.write_text("depth = 2\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['depth'\]"):
        sweeps.load_grid(path)
    with pytest.raises(ValueError, match="no such file"):
        sweeps.load_grid(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="is invalid"):
        sweeps.check_runs(sweeps.grid_configs(depths=[2], classes=2, loss="hinge"))
    executor, close = sweeps.make_executor(workers=4, runs=1)
    assert isinstance(executor, sweeps.SerialExecutor)
    close()
    close(now=True)
    executor, close = sweeps.make_executor(workers=2)
    assert executor.submit(sum, [1, 2]).result() == 3
    close()
    bad = tmp_path / "table.csv"
    bad.write_text("not,a,sweep\n1,2,3\n")
    with pytest.raises(ValueError, match="resume"):
        sweeps.check_resume(bad)
    sweeps.check_resume(tmp_path / "absent.csv")  # nothing to resume: fine
    with pytest.raises(ValueError, match="workers"):
        sweeps.make_executor(workers=0)
