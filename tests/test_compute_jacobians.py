"""compute_jacobians = export_jacobians without the file; one eval-mode guard (issue 18)."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ramodel import _blocks, refinement
from ramodel import torch as rt
from ramodel.jacobian_set import JacobianSet
from ramodel.nets import ResidualMLP


def _net():
    return ResidualMLP(4, 3, width=5, depth=2, skip="orthogonal", seed=0, init_seed=0)


def test_compute_then_save_is_export(tmp_path):
    net = _net()
    x, y = torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 0, 1, 2])
    js = rt.compute_jacobians(net, x, y, meta={"run": "a"})
    ex = rt.export_jacobians(net, x, y, tmp_path / "e.npz", meta={"run": "a"})
    assert isinstance(js, JacobianSet)
    for key in ("jacobians", "representations", "skips", "classifier", "labels"):
        np.testing.assert_array_equal(getattr(js, key), getattr(ex, key))
    drop = {"export_seconds"}
    assert {k: v for k, v in js.meta.items() if k not in drop} == {k: v for k, v in ex.meta.items() if k not in drop}
    js.save(tmp_path / "c.npz")
    loaded = JacobianSet.load(tmp_path / "c.npz")
    np.testing.assert_array_equal(loaded.jacobians, JacobianSet.load(tmp_path / "e.npz").jacobians)
    assert not list(tmp_path.glob(".*ramodel-tmp*"))


def test_export_checks_the_path_before_computing(tmp_path, monkeypatch):
    def forbidden(*a, **kw):
        raise AssertionError("computed before the path was checked")

    monkeypatch.setattr(rt, "_compute_jacobians", forbidden)
    with pytest.raises(FileNotFoundError):
        rt.export_jacobians(_net(), torch.randn(2, 4), torch.tensor([0, 1]), tmp_path / "missing" / "x.npz")


def test_warnings_point_at_the_callers_line():
    net = _net()
    x, y = torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 0, 1, 2])
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        # No power iterations, no oversampling: the top-4 triplets of these 5 x 5 Jacobians do not converge.
        rt.compute_jacobians(net, x, y, k=4, method="matrix_free", power_iters=0, oversample=0, seed=0)
    ours = [w for w in got if "did not fully converge" in str(w.message)]
    assert ours and all(w.filename == __file__ for w in ours)


def test_one_eval_mode_guard():
    assert rt._eval_mode is _blocks.eval_mode is refinement._eval_mode
    net = _net().train()
    net.blocks[0].train(False)
    with _blocks.eval_mode(net):
        assert not any(m.training for m in net.modules())
    assert net.training and not net.blocks[0].training and net.blocks[1].training


def test_one_block_resolution_for_export_and_refinement():
    assert rt._resolve_blocks is _blocks.resolve_blocks
    net, other = _net(), _net()
    blocks, names = _blocks.resolve_blocks(net, None)
    assert names == ["blocks.0", "blocks.1"] and blocks[0] is net.blocks[0]
    assert _blocks.resolve_blocks(net, net.blocks[1])[1] == ["blocks.1"]
    for call in (lambda b: _blocks.resolve_blocks(net, b), lambda b: refinement._check_blocks(net, b)):
        with pytest.raises(ValueError, match="not a submodule"):
            call([other.blocks[0]])
        with pytest.raises(ValueError, match="distinct"):
            call([net.blocks[0], net.blocks[0]])
        with pytest.raises(ValueError, match="at least one"):
            call([])
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        refinement._check_blocks(object(), None)


def test_the_shared_fixture_sets_one_thread():
    assert torch.get_num_threads() == 1  # tests/conftest.py's _one_thread
