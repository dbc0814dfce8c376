"""The one recorder of block calls (ramodel._blocks.BlockRecorder), used by export and refinement."""

import pytest

torch = pytest.importorskip("torch")

import ramodel.torch as rt  # noqa: E402
from ramodel import _blocks, refinement  # noqa: E402
from ramodel.nets import ResidualMLP  # noqa: E402


def _net():
    return ResidualMLP(4, 3, width=5, depth=3, skip="orthogonal", seed=0, init_seed=0).double().eval()


def test_export_and_refinement_share_one_recorder():
    assert rt.BlockRecorder is _blocks.BlockRecorder is refinement.BlockRecorder


def test_strict_records_detached_clones_in_order_and_removes_its_hooks():
    net = _net()
    x = torch.randn(6, 4, dtype=torch.float64)
    with _blocks.BlockRecorder(list(net.blocks), ["a", "b", "c"]) as rec:
        net(x)
        rec.check()
    assert rec.order == [0, 1, 2]
    h = net.embed(x)
    for i, block in enumerate(net.blocks):
        torch.testing.assert_close(rec.inputs[i], h, rtol=0, atol=0)
        h = block(h)
        torch.testing.assert_close(rec.outputs[i], h, rtol=0, atol=0)
        assert not rec.outputs[i].requires_grad
    assert all(not b._forward_hooks and not b._forward_pre_hooks for b in net.blocks)


def test_strict_names_the_block_that_breaks_the_protocol():
    net = _net()
    blocks = [net.blocks[1], net.blocks[0]]
    with _blocks.BlockRecorder(blocks, ["second", "first"]) as rec:
        net(torch.randn(2, 4, dtype=torch.float64))
        with pytest.raises(ValueError, match=r"forward order; the forward pass runs them as \['first', 'second'\]"):
            rec.check()
    with _blocks.BlockRecorder([net.blocks[0]], ["only"]) as rec, pytest.raises(ValueError, match="'only' runs more than once"):
        net.blocks[0](net.blocks[0](torch.randn(2, 5, dtype=torch.float64)))
    assert not net.blocks[0]._forward_hooks  # removed on error too


def test_loose_records_every_call_with_its_branch_and_lesions_one():
    net = _net()
    x = torch.randn(3, 4, dtype=torch.float64)
    block = net.blocks[1]
    with torch.no_grad(), _blocks.BlockRecorder([block], strict=False, branch=True) as rec:
        h = torch.randn(3, 5, dtype=torch.float64)
        block(block(h))  # a cell called twice: two calls
        assert rec.order == [0, 0] and len(rec.calls) == 2
        h_in, F, out = rec.calls[0]
        assert h_in is h
        torch.testing.assert_close(out, block.skip(h) + F, rtol=0, atol=0)
        rec.reset()
        rec.replace_at = 0
        lesioned = block(h)
        torch.testing.assert_close(lesioned, block.skip(h), rtol=0, atol=0)
        net(x)
    assert rec.calls == [] and not block._forward_hooks and not block.branch._forward_hooks
