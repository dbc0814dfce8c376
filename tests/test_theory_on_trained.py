"""Issue 10 end to end: a trained digits ResNet, exported, fitted by the UJM, and read by `ramodel theory`."""

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from ramodel.datasets import digits
    from ramodel.nets import ResidualMLP
    from ramodel.torch import export_jacobians
    from ramodel.training import train

    torch.set_num_threads(1)
    ds = digits(classes=3)
    model = ResidualMLP(64, 3, width=12, depth=3, bias=False, seed=0, init_seed=0)
    result = train(model, ds, epochs=3, batch_size=64, lr=0.05, seed=0, progress=False)
    assert result.final_train_accuracy >= 0.9
    path = tmp_path_factory.mktemp("trained") / "digits.npz"
    x = np.array(ds.x_test[:40])
    y = np.array(ds.y_test[:40])
    js = export_jacobians(model, x, y, path, meta={"dataset": "digits"})
    return js, path


def test_fit_ujm_on_trained_features_converges(exported):
    import ramodel

    js, _ = exported
    fitted = ramodel.fit_ujm(js)
    assert fitted.converged and fitted.grad_norm <= 1e-8
    assert fitted.depth == js.depth and fitted.width == js.width
    np.testing.assert_allclose(fitted.inputs.T, js.representations[0])


def test_ramodel_theory_prints_every_measure_with_chance_and_fit(exported):
    _, path = exported
    proc = subprocess.run([sys.executable, "-m", "ramodel.cli", "theory", str(path), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    text = json.dumps(out)
    for name in ("numerical_rank", "chain_residual", "asymmetry", "depth_spread", "psd_defect",
                 "gain_share_error", "linearity"):
        assert name in text, name
    assert "chance" in text and "fitted" in text
    plain = subprocess.run([sys.executable, "-m", "ramodel.cli", "theory", str(path)],
                           capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0 and "chain_residual" in plain.stdout
