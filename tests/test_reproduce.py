"""Issue 16: training that reaches the terminal regime, init_cosine, callbacks, the paper's figures,
and simulations/reproduce_ra.py --quick."""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import ramodel
from ramodel import plots
from ramodel.datasets import digits
from ramodel.nets import ConvResNet, ResidualMLP
from ramodel.training import (
    PROTOCOLS,
    InitialisationWarning,
    branch_weights,
    init_cosine,
    train,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small():
    """digits, 4 classes, 300 training samples."""
    ds = digits(classes=4, seed=0)
    keep = slice(0, 300)
    return dataclasses.replace(ds, x_train=ds.x_train[keep], y_train=ds.y_train[keep], train_index=ds.train_index[keep])


def _mlp(**kw):
    kw = {"width": 12, "depth": 2, "skip": "identity", "seed": 0, "init_seed": 0, **kw}
    return ResidualMLP(64, kw.pop("classes", 4), **kw)


def _quiet(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InitialisationWarning)
        return fn(*a, **kw)


# ----------------------------------------------------------------- length and schedule


def test_steps_warmup_constant_lr_trace(small):
    # 300 samples / 64 -> 5 batches per epoch (the last of 44); 23 steps = 4 full epochs + 3 steps.
    r = _quiet(train, _mlp(), small, steps=23, warmup=5, schedule="constant", lr=0.1, batch_size=64, progress=False)
    expected = [0.1 * (s + 1) / 5 for s in range(5)] + [0.1] * 18
    np.testing.assert_allclose(r.lr_steps, expected, rtol=1e-12)
    assert r.steps == r.steps_run == 23 and r.epochs == 5 and len(r.loss) == 5
    np.testing.assert_allclose(r.lr, [expected[0], expected[5], expected[10], expected[15], expected[20]], rtol=1e-12)
    assert r.settings["warmup"] == 5 and r.settings["schedule"] == "constant"


def test_cosine_and_step_after_warmup(small):
    T, w = 30, 6
    r = _quiet(train, _mlp(), small, steps=T, warmup=w, lr=0.2, batch_size=100, progress=False)
    exp = [0.2 * (s + 1) / w if s < w else 0.1 * (1 + math.cos(math.pi * (s - w) / (T - w))) for s in range(T)]
    np.testing.assert_allclose(r.lr_steps, exp, rtol=1e-12, atol=1e-15)
    r = _quiet(train, _mlp(), small, steps=T, warmup=w, lr=0.2, schedule="step", batch_size=100, progress=False)
    # After warmup, 24 steps: /10 from step 12 of them, /100 from step 18.
    exp = [0.2 * (s + 1) / w for s in range(w)] + [0.2] * 12 + [0.02] * 6 + [0.002] * 6
    np.testing.assert_allclose(r.lr_steps, exp, rtol=1e-12)


def test_terminal_protocol_defaults_and_overrides(small):
    r = _quiet(train, _mlp(), small, protocol="terminal", steps=40, progress=False)
    s = r.settings
    assert (s["batch_size"], s["lr"], s["weight_decay"], s["grad_clip"], s["protocol"]) == (256, 0.1, 1e-2, 5.0,
                                                                                             "terminal")
    assert s["warmup"] == 2  # 5 % of 40 steps
    assert PROTOCOLS["terminal"]["steps"] == 3000
    r = _quiet(train, _mlp(), small, protocol="terminal", steps=40, weight_decay=0.0, warmup=0, batch_size=50,
               progress=False)
    assert (r.settings["weight_decay"], r.settings["warmup"], r.settings["batch_size"]) == (0.0, 0, 50)
    with pytest.raises(ValueError, match="epochs or steps, not both"):
        train(_mlp(), small, epochs=1, steps=5)
    with pytest.raises(ValueError, match="length is missing"):
        train(_mlp(), small)
    with pytest.raises(ValueError, match="protocol must be one of"):
        train(_mlp(), small, steps=5, protocol="long")
    with pytest.raises(ValueError, match=r"warmup must be < the number of steps \(5\)"):
        train(_mlp(), small, steps=5, warmup=5)
    with pytest.raises(ValueError, match="every is only valid with a callback"):
        train(_mlp(), small, steps=5, every=2)


def test_test_split_is_evaluated_only_when_asked(small):
    r = _quiet(train, _mlp(), small, epochs=4, batch_size=100, progress=False)
    assert r.test_accuracy[:3] == (None, None, None) and r.test_accuracy[3] == r.final_test_accuracy
    r = _quiet(train, _mlp(), small, epochs=4, batch_size=100, eval_every=2, progress=False)
    assert r.test_accuracy[0] is None and r.test_accuracy[2] is None
    assert 0 <= r.test_accuracy[1] <= 1 and r.test_accuracy[3] == r.final_test_accuracy


# --------------------------------------------------------------- optimizer details


def _reference_sgd(net, ds, *, steps, lr, momentum, wd, decoupled, weights_only):
    """An independent full-batch SGD loop (constant lr, no warmup)."""
    x = torch.tensor(np.array(ds.x_train), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(ds.y_train))
    params = list(net.parameters())
    bufs = [None] * len(params)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(params, grads)):
                decays = wd > 0 and (p.ndim >= 2 or not weights_only)
                if decays and decoupled:
                    p.mul_(1 - lr * wd)
                d = g + wd * p if decays and not decoupled else g.clone()
                bufs[i] = d if bufs[i] is None else momentum * bufs[i] + d
                p.sub_(lr * bufs[i])


@pytest.mark.parametrize(("decoupled", "weights_only"), [(False, False), (True, False), (False, True), (True, True)])
def test_weight_decay_variants_match_a_reference_loop(small, decoupled, weights_only):
    kw = {"steps": 3, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.1}
    a = _mlp(bias=True).double()
    b = _mlp(bias=True).double()
    _quiet(train, a, small, **kw, batch_size=len(small.y_train), schedule="constant", decoupled_decay=decoupled,
           decay_on="weights" if weights_only else "all", progress=False)
    _reference_sgd(b, small, steps=3, lr=0.05, momentum=0.9, wd=0.1, decoupled=decoupled, weights_only=weights_only)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_allclose(pa.detach().numpy(), pb.detach().numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_gradient_clipping_bounds_the_step(small):
    net = _mlp().double()
    before = torch.cat([p.detach().reshape(-1).clone() for p in net.parameters()])
    _quiet(train, net, small, steps=1, lr=1.0, momentum=0.0, weight_decay=0.0, grad_clip=1e-3, schedule="constant",
           batch_size=len(small.y_train), progress=False)
    after = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    assert float((after - before).norm()) == pytest.approx(1e-3, rel=1e-6)


# ------------------------------------------------------------------ callback, init cosine


def test_callback_steps_and_it_does_not_change_the_run(small):
    seen = []

    def cb(state):
        seen.append((state.step, state.init_cosine, state.model.training))
        torch.rand(100)  # consumes the global generator: must not change the run

    kw = {"steps": 10, "lr": 0.05, "batch_size": 64, "seed": 2, "progress": False}
    a, b = _mlp(drop_path=0.3), _mlp(drop_path=0.3)
    ra = _quiet(train, a, small, callback=cb, every=4, **kw)
    rb = _quiet(train, b, small, **kw)
    assert [s for s, _, _ in seen] == [0, 4, 8, 10]
    assert seen[0][1] == 1.0 and not any(t for _, _, t in seen)
    assert ra.loss == rb.loss
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(TypeError, match="callback must be callable"):
        train(_mlp(), small, steps=2, callback=3)


def test_init_cosine_is_one_at_init_and_falls_with_decay(small):
    net = _mlp()
    w0 = branch_weights(net)
    overall, blocks = init_cosine(net, w0)
    assert overall == 1.0 and blocks == (1.0, 1.0)
    # Independent computation of the per-block cosine after a change.
    with torch.no_grad():
        net.blocks[1].branch[0].weight.mul_(-1)
    W1, W2 = net.blocks[1].branch[0].weight.detach(), net.blocks[1].branch[-1].weight.detach()
    now = torch.cat([W1.reshape(-1), W2.reshape(-1)]).double()
    assert init_cosine(net, w0)[1][1] == pytest.approx(float(now @ w0[1] / (now.norm() * w0[1].norm())), rel=1e-12)

    kw = {"steps": 300, "lr": 0.1, "batch_size": 100, "progress": False}
    with pytest.warns(InitialisationWarning, match="cosine"):
        no_decay = train(_mlp(), small, weight_decay=0.0, **kw)
    decayed = _quiet(train, _mlp(), small, weight_decay=5e-2, **kw)
    assert decayed.init_cosine < no_decay.init_cosine and decayed.init_cosine < 0.5
    assert len(decayed.init_cosine_blocks) == 2 and max(decayed.init_cosine_blocks) < 0.6
    d = decayed.to_dict()
    assert d["init_cosine"] == decayed.init_cosine and d["settings"]["weight_decay"] == 5e-2
    json.dumps(d)


def test_resume_in_steps_mode_equals_uninterrupted(small, tmp_path):
    kw = {"steps": 17, "lr": 0.05, "batch_size": 64, "warmup": 3, "seed": 1, "progress": False,
          "checkpoint_every": 5}
    ref = _mlp(drop_path=0.2)
    ref_r = _quiet(train, ref, small, **kw)
    net, calls = _mlp(drop_path=0.2), []

    class Stop(Exception):
        pass

    def bomb(module, args):
        calls.append(1)
        if len(calls) == 13:
            raise Stop

    h = net.register_forward_pre_hook(bomb)
    with pytest.raises(Stop):
        _quiet(train, net, small, checkpoint=tmp_path / "c.pt", **kw)
    h.remove()
    assert torch.load(tmp_path / "c.pt", weights_only=True)["step"] == 10  # epoch 2 ends at step 10 >= 5
    fresh = _mlp(drop_path=0.2, init_seed=5)
    r = _quiet(train, fresh, small, checkpoint=tmp_path / "c.pt", resume=True, **kw)
    assert r.steps_run == 7 and r.steps == 17 and r.lr_steps == ref_r.lr_steps
    assert r.init_cosine == ref_r.init_cosine  # the initial weights travel in the checkpoint
    assert all(torch.equal(p, q) for p, q in zip(fresh.state_dict().values(), ref.state_dict().values()))


# --------------------------------------------------------- RA in the terminal regime


def _export(net, ds, path, n=100):
    from ramodel.torch import export_jacobians

    idx = np.sort(np.random.default_rng(0).permutation(len(ds.y_test))[:n])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return export_jacobians(net, np.asarray(ds.x_test)[idx], np.asarray(ds.y_test)[idx], path,
                                classes=ds.classes, method="dense")


def test_terminal_protocol_gives_ra2_and_no_skips_does_not(tmp_path):
    ds = digits(seed=0)
    reports, results = {}, {}
    for skip in ("identity", "none"):
        net = ResidualMLP(64, 10, width=32, depth=4, skip=skip, seed=0, init_seed=0, bias=False)
        results[skip] = _quiet(train, net, ds, protocol="terminal", steps=1000, progress=False)
        reports[skip] = ramodel.analyze(_export(net, ds, tmp_path / f"{skip}.npz"))
    assert results["identity"].init_cosine < 0.35  # measured 0.27
    assert results["identity"].final_test_accuracy > 0.9 and results["none"].final_test_accuracy > 0.85
    assert reports["identity"].verdicts["RA2"] is True
    assert reports["none"].verdicts["RA2"] is False
    assert reports["identity"].metrics["A_left"].value > 2 * reports["none"].metrics["A_left"].value


# ------------------------------------------------------------------ skips are declared


@pytest.mark.parametrize(
    "make",
    [
        lambda: ResidualMLP(8, 3, width=6, depth=2, skip="none", init_seed=0),
        lambda: ResidualMLP(8, 3, width=6, depth=2, skip="identity", drop_path=0.5, init_seed=0),
        lambda: ResidualMLP(8, 3, width=6, depth=2, skip="none", drop_path=0.5, norm="batchnorm", init_seed=0),
        lambda: ResidualMLP(8, 3, width=6, depth=2, skip="permutation", seed=0, init_seed=0),
        lambda: ConvResNet(1, 3, channels=(4,), blocks_per_stage=2, skip="none", init_seed=0),
    ],
    ids=["mlp-none", "mlp-droppath", "mlp-none-bn-droppath", "mlp-permutation", "conv-none"],
)
def test_every_block_declares_its_skip(make):
    from ramodel.torch import skip_matrix

    net = make()
    for block in net.blocks:
        M = skip_matrix(block)  # declared by block.skip.M, never guessed
        if M is None:  # the exporter's spelling of the identity
            assert block.skip.structure == "identity"
        else:
            np.testing.assert_array_equal(M, block.skip.M.numpy())
        if block.skip.family == "none":
            assert not M.any()


# --------------------------------------------------------------------------- figures


def test_alignment_blocks_against_a_loop():
    rng = np.random.default_rng(0)
    J = rng.normal(size=(3, 5, 5))
    B = plots.alignment_blocks(J, 2)
    top = [np.linalg.svd(Jl, compute_uv=False)[0] for Jl in J]
    for i in range(3):
        U, _, Vt = np.linalg.svd(J[i])
        for j in range(3):
            np.testing.assert_allclose(B[i, j], np.abs(U[:, :2].T @ J[j] @ Vt[:2].T) / top[j], atol=1e-12)
    s = np.linalg.svd(J[1], compute_uv=False)
    np.testing.assert_allclose(np.diag(B[1, 1]), s[:2] / s[0], atol=1e-12)
    with pytest.raises(ValueError, match="k must be"):
        plots.alignment_blocks(J, 6)


def test_paper_figures_have_one_panel_per_entry():
    rng = np.random.default_rng(0)
    R = rng.normal(size=(5, 12, 4))
    y = np.arange(12) % 3
    assert len(plots.ra_trajectories({"a": (R, y), "b": (R, y)}, inputs=5).axes) == 2
    B = plots.alignment_blocks(rng.normal(size=(3, 4, 4)), 2)
    assert len(plots.ra_alignment({"a": B, "b": B}).axes) == 3  # two panels and the colour bar
    assert len(plots.ra_spectra({"a": np.ones((3, 4))}, classes=2).axes) == 1
    fig = plots.ra_depth({"a": {"depths": [4, 8, 16], "sigma1": [0.4, 0.2, 0.1], "slope": -1.0,
                                "intercept": math.log(1.6), "ci": (-1.1, -0.9)},
                          "b": {"depths": [4, 8, 16], "sigma1": [1.0, 1.0, 1.0]}})
    assert len(fig.axes) == 4
    with pytest.raises(TypeError, match="panels must be a non-empty mapping"):
        plots.ra_spectra({})
    with pytest.raises(ValueError, match=r"panels\['a'\]"):
        plots.ra_trajectories({"a": (R, y[:3])})


# ------------------------------------------------------------------ the study script


@pytest.mark.slow
def test_reproduce_quick_writes_every_table_and_figure(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "simulations" / "reproduce_ra.py"), "--quick", "--out",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("runs.csv", "ra4.csv", "trace.csv", "summary.json", "timing.json", "table_depth.md",
                 "table_width.md", "table_classes.md", "table_counterfactual.md", "table_conv.md", "table_ra4.md",
                 "table_trace.md", "table_short.md", "fig_ra1_trajectories.png", "fig_ra2_alignment.png",
                 "fig_ra3_spectra.png", "fig_ra4_depth.png", "fig_ra_vs_step.png", "fig_counterfactuals.png",
                 "fig_rank_vs_classes.png", "fig_conv.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["missing"] == [] and summary["ok"] == summary["networks"]
    import csv

    with open(tmp_path / "runs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["split"] for r in rows} == {"train", "test"}
    assert all(0 < float(r["init_cosine"]) <= 1 for r in rows)
    with open(tmp_path / "ra4.csv", newline="") as fh:
        ra4 = list(csv.DictReader(fh))
    assert {(r["arch"], r["skip"], r["split"]) for r in ra4} >= {("mlp", "identity", "test"), ("mlp", "none", "test")}
    # A second run finds every network done and only rebuilds the report.
    again = subprocess.run([sys.executable, str(ROOT / "simulations" / "reproduce_ra.py"), "--quick", "--out",
                            str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((tmp_path / "timing.json").read_text())["run_now"] == 0


# ------------------------------------------------------------------- ramodel train


def test_cli_train_terminal_protocol_records_init_cosine(tmp_path, capsys):
    from ramodel.cli import main

    out = tmp_path / "ra"
    code = main(["train", "--protocol", "terminal", "--steps", "200", "--classes", "3", "--width", "8", "--depth",
                 "2", "--inputs", "20", "--pick", "random", "--out", str(out), "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert json.loads((out / "train.json").read_text()) == payload
    t = payload["training"]
    assert t["steps"] == 200 and t["settings"]["protocol"] == "terminal" and t["settings"]["warmup"] == 10
    assert t["settings"]["weight_decay"] == 1e-2 and 0 < payload["init_cosine"] < 1
    assert len(payload["init_cosine_blocks"]) == 2 and "lr_steps" not in t
    js = ramodel.JacobianSet.load(out / "jacobians.npz")
    assert js.meta["training"]["protocol"] == "terminal" and js.meta["training"]["init_cosine"] == payload["init_cosine"]


@pytest.mark.parametrize(("args", "match"), [(["--method", "svd"], "--method"), (["--k", "0"], "--k"),
                                             (["--export-dtype", "float16"], "--export-dtype"),
                                             (["--epochs", "2", "--steps", "3"], "not both"),
                                             (["--schedule", "linear"], "--schedule")])
def test_cli_train_checks_export_options_before_training(tmp_path, capsys, args, match):
    from ramodel.cli import main

    out = tmp_path / "never"
    assert main(["train", "--out", str(out), "--steps", "100000", *args]) == 2
    assert match in capsys.readouterr().err
    assert not out.exists()  # nothing trained, no empty folder left


def test_cli_train_failure_leaves_no_empty_folder(tmp_path, capsys):
    from ramodel.cli import main

    out = tmp_path / "diverges"
    code = main(["train", "--out", str(out), "--steps", "5", "--lr", "1e9", "--loss", "mse", "--width", "4",
                 "--depth", "1"])
    assert code == 2 and "training loss became" in capsys.readouterr().err
    assert not out.exists()  # it diverged before the first checkpoint: no empty folder is left
