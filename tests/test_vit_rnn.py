"""Tests of the Vision Transformer and the residual RNN of ramodel.nets, against NumPy float64 references."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import erf

torch = pytest.importorskip("torch")

from conftest import float64_default as _float64  # noqa: E402
from ramodel import mappings  # noqa: E402
from ramodel.nets import ResidualRNN, SelfAttention, VisionTransformer  # noqa: E402

FAMILIES = [
    ("identity", {}), ("none", {}), ("orthogonal", {}), ("permutation", {"signed": True}),
    ("sparse_unipotent", {"density": 0.3}), ("correlation", {"kind": "banded", "bandwidth": 2}),
    ("block_orthogonal", {"block": 3}),
]  # fmt: skip


def _weights(net) -> dict:
    return {k: v.detach().double().numpy() for k, v in net.state_dict().items()}


# --------------------------------------------------------------------------- references


def _layernorm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _attention(x, W, p, heads):
    """Multi-head self-attention from the weights, one head at a time (an independent formulation)."""
    D = x.shape[-1]
    q, k, v = np.split(x @ W[p + "qkv.weight"].T + W[p + "qkv.bias"], 3, axis=-1)
    dh = D // heads
    out = []
    for i in range(heads):
        s = slice(i * dh, (i + 1) * dh)
        logits = q[..., s] @ np.swapaxes(k[..., s], -1, -2) / np.sqrt(dh)
        a = np.exp(logits - logits.max(-1, keepdims=True))
        out.append((a / a.sum(-1, keepdims=True)) @ v[..., s])
    return np.concatenate(out, -1) @ W[p + "proj.weight"].T + W[p + "proj.bias"]


def _gelu(x):
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def _reference_vit(net: VisionTransformer, images: np.ndarray, skips: np.ndarray) -> np.ndarray:
    """Logits of a ViT from its weights, in NumPy float64: patches by reshaping, then the blocks."""
    W = _weights(net)
    B, C, H, Wd = images.shape
    p = net.patch
    patches = images.reshape(B, C, H // p, p, Wd // p, p).transpose(0, 2, 4, 1, 3, 5).reshape(B, -1, C * p * p)
    h = patches @ W["patch_embed.weight"].reshape(net.dim, -1).T + W["patch_embed.bias"]
    if net.pool == "cls":
        h = np.concatenate([np.broadcast_to(W["cls_token"], (B, 1, net.dim)), h], axis=1)
    h = h + W["pos_embed"]
    for l, (M, kind) in enumerate(zip(skips, net.block_kind)):
        q = f"blocks.{l}.branch."
        z = _layernorm(h, W[q + "0.weight"], W[q + "0.bias"])
        if kind == "attention":
            F = _attention(z, W, q + "1.", net.heads)
        else:
            F = _gelu(z @ W[q + "1.weight"].T + W[q + "1.bias"]) @ W[q + "3.weight"].T + W[q + "3.bias"]
        h = h @ M.T + F
    h = _layernorm(h, W["norm.weight"], W["norm.bias"])
    pooled = h[:, 0] if net.pool == "cls" else h.mean(1)
    return pooled @ W["classifier.weight"].T + W["classifier.bias"]


def _reference_rnn(net: ResidualRNN, x: np.ndarray, M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """States (T+1, B, d) and logits of a tanh ResidualRNN from its weights, NumPy float64."""
    W = _weights(net)
    h = np.zeros((x.shape[0], net.hidden))
    states = [h]
    for t in range(net.steps):
        a = h @ W["cell.branch.state_in.weight"].T + W["cell.branch.state_in.bias"] + x[:, t] @ W["cell.branch.input_in.weight"].T
        h = h @ M.T + np.tanh(a) @ W["cell.branch.out.weight"].T + W["cell.branch.out.bias"]
        states.append(h)
    return np.stack(states), h @ W["classifier.weight"].T + W["classifier.bias"]


# ------------------------------------------------------------------------------ ViT


def test_self_attention_equals_torch_multihead_attention():
    with _float64():
        att = SelfAttention(12, 3)
        ref = torch.nn.MultiheadAttention(12, 3, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(att.qkv.weight)
        ref.in_proj_bias.copy_(att.qkv.bias)
        ref.out_proj.weight.copy_(att.proj.weight)
        ref.out_proj.bias.copy_(att.proj.bias)
    x = torch.randn(4, 7, 12, dtype=torch.float64)
    expected, _ = ref(x, x, x, need_weights=False)
    torch.testing.assert_close(att(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("skip", "params"), FAMILIES)
@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_vit_matches_numpy_reference(skip, params, pool):
    with _float64():
        net = VisionTransformer(
            (8, 4), 5, in_channels=2, patch=2, dim=6, depth=2, heads=3, pool=pool, skip=skip, skip_params=params,
            seed=4, init_seed=0,
        ).eval()
    skips = mappings.draw_stack(skip, 6, depth=4, seed=4, params=params)  # independent float64 draws
    images = np.random.default_rng(1).standard_normal((3, 2, 8, 4))
    out = net(torch.from_numpy(images)).detach().numpy()
    np.testing.assert_allclose(out, _reference_vit(net, images, skips), rtol=1e-10, atol=1e-10)


def test_vit_identity_and_none_blocks_are_the_plain_blocks():
    h = torch.randn(2, 17, 8)
    plain = VisionTransformer(8, 3, dim=8, depth=2, heads=2, skip="identity", init_seed=0).eval()
    none = VisionTransformer(8, 3, dim=8, depth=2, heads=2, skip="none", init_seed=0).eval()
    for a, b in zip(plain.blocks, none.blocks):
        assert torch.equal(a(h), h + a.branch(h))  # x <- x + F(LN x), exactly
        assert torch.equal(b(h), b.branch(h))  # no shortcut at all
        assert isinstance(a.branch[0], torch.nn.LayerNorm)  # pre-LN: the branch normalises its own input
    assert plain.block_kind == ("attention", "mlp", "attention", "mlp")


def test_vit_structured_skips_equal_explicit_dense_stack():
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    for family, params in [("permutation", {"signed": True}), ("block_orthogonal", {"block": 4}),
                           ("correlation", {"kind": "banded"})]:  # fmt: skip
        with _float64():
            fast = VisionTransformer(8, 4, dim=8, depth=1, heads=2, skip=family, skip_params=params, seed=2, init_seed=0)
            stack = np.stack([b.skip.M.numpy() for b in fast.blocks])
            dense = VisionTransformer(8, 4, dim=8, depth=1, heads=2, skip=stack, init_seed=0)
        assert {b.skip.structure for b in fast.blocks} <= {"permutation", "block_diagonal", "banded"}
        assert {b.skip.structure for b in dense.blocks} == {"dense"}
        torch.testing.assert_close(fast.eval()(x), dense.eval()(x), rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(stack, mappings.draw_stack(family, 8, depth=2, seed=2, params=params))


def test_vit_skips_shared_and_buffers():
    net = VisionTransformer(8, 3, dim=8, depth=2, heads=2, skip="orthogonal", skip_shared=True, seed=1)
    M = [b.skip.M for b in net.blocks]
    assert all(torch.equal(M[0], m) for m in M) and len(M) == 4
    assert all(b.skip.dim == -1 for b in net.blocks)  # the embedding axis
    assert not any(m is p for m in M for p in net.parameters())


def test_vit_block_jacobian_is_the_branch_jacobian():
    from ramodel.torch import block_jacobians

    with _float64():
        net = VisionTransformer(4, 3, patch=2, dim=4, depth=1, heads=2, skip="orthogonal", seed=0, init_seed=0).eval()
    h = torch.randn(2, 5, 4, dtype=torch.float64)
    J = block_jacobians(net.blocks[0], h)
    expected = torch.stack([torch.autograd.functional.jacobian(lambda v: net.blocks[0].branch(v[None])[0], hi) for hi in h])
    np.testing.assert_allclose(J, expected.reshape(2, 20, 20).numpy(), rtol=1e-10, atol=1e-12)


def test_vit_trains_on_digits_with_the_standard_loop():
    from ramodel.datasets import digits
    from ramodel.training import train

    ds = digits(classes=3, seed=0)
    net = VisionTransformer(8, 3, patch=2, dim=16, depth=1, heads=2, init_seed=0)
    result = train(net, ds, epochs=4, batch_size=32, lr=0.1, seed=0, progress=False)
    # SGD trains a ViT slowly; four epochs already beat chance (1/3) by far and lower the loss.
    assert result.final_test_accuracy > 0.5 and result.loss[-1] < result.loss[0], result


def test_vit_argument_errors():
    with pytest.raises(ValueError, match=r"patch=3 must divide the image size 8x8"):
        VisionTransformer(8, 3, patch=3)
    with pytest.raises(ValueError, match=r"heads must be >= 1, got 0"):
        VisionTransformer(8, 3, heads=0)
    with pytest.raises(ValueError, match=r"heads must be >= 1, got -2"):
        VisionTransformer(8, 3, heads=-2)
    with pytest.raises(ValueError, match="heads must divide dim"):
        VisionTransformer(8, 3, dim=10, heads=4)
    with pytest.raises(ValueError, match=r"skip must have shape \(width, width\) = \(8, 8\)"):
        VisionTransformer(8, 3, dim=8, heads=2, skip=np.eye(6))
    with pytest.raises(ValueError, match="unknown mapping family 'householder'"):
        VisionTransformer(8, 3, skip="householder")
    with pytest.raises(ValueError, match="pool must be one of"):
        VisionTransformer(8, 3, pool="max")
    with pytest.raises(ValueError, match="image_size"):
        VisionTransformer((8, 8, 8), 3)
    net = VisionTransformer(8, 3, dim=8, heads=2)
    with pytest.raises(ValueError, match=r"images of shape \(batch, 1, 8, 8\).*reshape"):
        net(torch.randn(2, 64))
    with pytest.raises(ValueError, match="heads must divide dim"):
        SelfAttention(6, 4)


# ------------------------------------------------------------------------------ RNN


@pytest.mark.parametrize(("skip", "params"), FAMILIES)
def test_rnn_matches_numpy_reference(skip, params):
    with _float64():
        net = ResidualRNN(3, 4, steps=5, hidden=6, skip=skip, skip_params=params, seed=9, init_seed=0)
    M = mappings.get(skip)(6, seed=9, **params)  # the one draw, with the run's seed itself
    x = np.random.default_rng(2).standard_normal((7, 5, 3))
    states, logits = _reference_rnn(net, x, M)
    np.testing.assert_allclose(net(torch.from_numpy(x)).detach().numpy(), logits, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(net.trajectory(torch.from_numpy(x)).detach().numpy(), states, rtol=1e-12, atol=1e-12)
    # Flat rows (as ramodel.training.train passes a SequenceDataset) are read in C order.
    flat = torch.from_numpy(x.reshape(7, 15))
    assert torch.equal(net(flat), net(torch.from_numpy(x)))


def test_rnn_identity_and_none_cells_are_the_plain_cells():
    h, x = torch.randn(4, 5), torch.randn(4, 2)
    ident = ResidualRNN(2, 3, steps=3, hidden=5, skip="identity", init_seed=0)
    none = ResidualRNN(2, 3, steps=3, hidden=5, skip="none", init_seed=0)
    assert torch.equal(ident.cell(h, x), h + ident.cell.branch(h, x))
    assert torch.equal(none.cell(h, x), none.cell.branch(h, x))
    assert list(ident.blocks) == [ident.cell]


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), activation=st.sampled_from(["tanh", "relu", "linear"]))
def test_rnn_step_jacobians_closed_form(seed, activation):
    with _float64():
        net = ResidualRNN(3, 2, steps=4, hidden=5, inner=7, activation=activation, skip="orthogonal", seed=seed,
                          init_seed=seed % 1000)
    x = torch.randn(6, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    J = net.step_jacobians(x).numpy()
    W = _weights(net)
    H = net.trajectory(x).detach().numpy()[:-1]
    a = (H @ W["cell.branch.state_in.weight"].T + W["cell.branch.state_in.bias"]
         + np.swapaxes(x.numpy(), 0, 1) @ W["cell.branch.input_in.weight"].T)
    slope = {"tanh": 1 - np.tanh(a) ** 2, "relu": (a > 0).astype(float), "linear": np.ones_like(a)}[activation]
    # J_t = W_out diag(phi'(a_t)) W_h: the Jacobian of the branch only (M excluded).
    expected = np.einsum("ik,tbk,kj->tbij", W["cell.branch.out.weight"], slope, W["cell.branch.state_in.weight"])
    assert J.shape == (4, 6, 5, 5)
    np.testing.assert_allclose(J, expected, rtol=1e-10, atol=1e-12)


def test_rnn_skip_draw_and_buffer():
    net = ResidualRNN(2, 3, steps=3, hidden=6, skip="permutation", skip_params={"signed": True}, seed=5)
    assert net.cell.skip.structure == "permutation"
    assert torch.equal(net.cell.skip.M, torch.from_numpy(mappings.get("permutation")(6, seed=5, signed=True)).float())
    assert not any(net.cell.skip.M is p for p in net.parameters())
    explicit = ResidualRNN(2, 3, steps=3, hidden=6, skip=np.eye(6)[::-1].copy())
    assert explicit.cell.skip.structure == "dense"


def test_rnn_trains_on_a_sequence_dataset_with_the_standard_loop():
    from ramodel.sequences import majority_symbols
    from ramodel.training import train

    ds = majority_symbols(steps=6, symbols=3, bias=0.5, train_size=300, test_size=100, seed=0)
    net = ResidualRNN(ds.features, ds.classes, steps=ds.steps, hidden=16, init_seed=0)
    result = train(net, ds, epochs=8, batch_size=32, lr=0.01, seed=0, progress=False)
    assert result.final_test_accuracy > 0.6, result.test_accuracy  # chance is about 1/3


def test_rnn_argument_errors():
    net = ResidualRNN(3, 2, steps=4, hidden=5)
    with pytest.raises(ValueError, match=r"sequences of shape \(batch, steps, features\) = \(batch, 4, 3\).*rank-4"):
        net(torch.randn(2, 4, 3, 1))
    with pytest.raises(ValueError, match="rank-1"):
        net(torch.randn(12))
    with pytest.raises(ValueError, match=r"flat \(batch, 12\)"):
        net(torch.randn(2, 13))
    with pytest.raises(ValueError, match=r"\(batch, 4, 3\)"):
        net(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match=r"skip must have shape \(width, width\) = \(5, 5\)"):
        ResidualRNN(3, 2, steps=4, hidden=5, skip=np.eye(4))
    with pytest.raises(ValueError, match="unknown mapping family"):
        ResidualRNN(3, 2, steps=4, skip="householder")
    with pytest.raises(ValueError, match="steps"):
        ResidualRNN(3, 2, steps=0)
    with pytest.raises(ValueError, match="activation must be one of"):
        ResidualRNN(3, 2, steps=2, activation="sigmoid")
    with pytest.raises(ValueError, match="skip_params"):
        ResidualRNN(3, 2, steps=2, hidden=4, skip=np.eye(4), skip_params={"signed": True})
