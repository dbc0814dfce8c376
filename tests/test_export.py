"""Tests of ramodel.torch: exporting residual Jacobians of PyTorch networks.

Every Jacobian is checked against an independent computation: central finite
differences, ``torch.autograd.functional.jacobian`` per sample, or the closed form
of a linear branch. The matrix-free top-k is checked against the exact SVD.
"""

from __future__ import annotations

import copy
import datetime
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch import nn  # noqa: E402

import ramodel.torch as rt  # noqa: E402
from ramodel.jacobian_set import JacobianSet  # noqa: E402
from ramodel.torch import block_jacobians, block_top_singular, export_jacobians, skip_matrix  # noqa: E402

# torch's first forward-mode AD call scripts its JVP decompositions with the
# deprecated torch.jit.script: torch's own warning, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def _t(a):
    """A tensor from a (read-only) stored array, via a writable copy."""
    return torch.from_numpy(np.array(a))


# ----------------------------------------------------------------------------- models


class TanhBlock(nn.Module):
    """Pre-activation MLP block ``h + W2 tanh(W1 h + b1) + b2`` (smooth, for FD)."""

    def __init__(self, d, hidden=7):
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(d, hidden), nn.Linear(hidden, d)
        self.skip = None  # declares the identity skip (issue 15: skips are never guessed)

    def forward(self, h):
        return h + self.lin2(torch.tanh(self.lin1(h)))


class LinearBlock(nn.Module):
    """``h + W2 W1 h``: the residual Jacobian is exactly ``W2 W1``."""

    def __init__(self, d, hidden=4):
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(d, hidden, bias=False), nn.Linear(hidden, d, bias=False)
        self.skip = None  # declares the identity skip (issue 15)

    def forward(self, h):
        return h + self.lin2(self.lin1(h))


class Net(nn.Module):
    def __init__(self, blocks, d, classes, *, stem=None, between=None):
        super().__init__()
        self.stem = stem if stem is not None else nn.Identity()
        self.blocks = nn.ModuleList(blocks)
        self.between = between
        self.fc = nn.Linear(d, classes)

    def forward(self, x):
        h = self.stem(x)
        for i, b in enumerate(self.blocks):
            if self.between is not None and i == 1:
                h = self.between(h)
            h = b(h)
        return self.fc(h.flatten(1))


class BasicBlock(nn.Module):
    """torchvision's BasicBlock (same shape): relu(bn2(conv2(relu(bn1(conv1(x))))) + x)."""

    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.skip = None  # declares the identity skip (issue 15)

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Skip(nn.Module):
    def __init__(self, M, dim=None):
        super().__init__()
        self.register_buffer("matrix", M)
        if dim is not None:
            self.dim = dim


class EntangledMLPBlock(nn.Module):
    """``M h + W2 relu(W1 h)`` with ``M`` exposed as ``block.skip.matrix``."""

    def __init__(self, M, hidden=6):
        super().__init__()
        d = M.shape[0]
        self.skip = Skip(M)
        self.lin1, self.lin2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def branch(self, h):
        return self.lin2(torch.relu(self.lin1(h)))

    def forward(self, h):
        return h @ self.skip.matrix.T + self.branch(h)


class MethodSkipBlock(EntangledMLPBlock):
    """The same block, declaring ``M`` through ``skip_matrix()`` instead."""

    def __init__(self, M, hidden=6):
        super().__init__(M, hidden)
        del self.skip
        self.register_buffer("M", M)

    def skip_matrix(self):
        return self.M

    def forward(self, h):
        return h @ self.M.T + self.branch(h)


class ChannelSkipConvBlock(nn.Module):
    """``M`` mixes channels at every pixel: ``(M h)[i] = sum_j M[i, j] h[j]``."""

    def __init__(self, M):
        super().__init__()
        c = M.shape[0]
        self.skip = Skip(M, dim=1)
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, h):
        return torch.einsum("ij,bjxy->bixy", self.skip.matrix, h) + self.conv2(torch.tanh(self.conv1(h)))


def _blur_conv(c, sx, sy, *, seed, decay=0.5, size=5):
    """A conv whose operator has a decaying spectrum: anisotropic Gaussian blur times a
    channel matrix with singular values ``decay**i``."""
    g = np.random.default_rng(seed)
    r = np.arange(size) - size // 2
    K = np.exp(-(r[:, None] ** 2) / (2 * sy**2) - r[None, :] ** 2 / (2 * sx**2))
    K /= K.sum()
    Q1, _ = np.linalg.qr(g.standard_normal((c, c)))
    Q2, _ = np.linalg.qr(g.standard_normal((c, c)))
    Cm = Q1 @ np.diag(decay ** np.arange(c)) @ Q2.T
    conv = nn.Conv2d(c, c, size, padding=size // 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.as_tensor(Cm[:, :, None, None] * K[None, None]))
    return conv


class DecayingConvBlock(nn.Module):
    def __init__(self, c, seed=0):
        super().__init__()
        self.a = _blur_conv(c, 1.6, 1.1, seed=seed + 1)
        self.b = _blur_conv(c, 1.3, 0.9, seed=seed + 2)
        self.skip = None  # declares the identity skip (issue 15)

    def forward(self, h):
        return h + 2 * self.b(torch.tanh(self.a(h)))


def _randomise_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(0.3 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.weight.copy_(1 + 0.2 * torch.randn(m.num_features, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.num_features, generator=g))


def _tanh_net(d=5, L=3, C=3, seed=0):
    torch.manual_seed(seed)
    return Net([TanhBlock(d) for _ in range(L)], d, C)


def _decay_net(c=2, hw=4, L=2, C=3, seed=0):
    torch.manual_seed(seed)
    return Net([DecayingConvBlock(c, seed=10 * s) for s in range(L)], c * hw * hw, C)


def _basic_net(c=2, hw=4, L=2, C=3, seed=0):
    torch.manual_seed(seed)
    stem = nn.Conv2d(1, c, 3, padding=1)
    net = Net([BasicBlock(c) for _ in range(L)], c * hw * hw, C, stem=stem)
    _randomise_bn(net, seed)
    return net


def _autograd_jacobians(fn, H):
    """Per-sample reference: ``torch.autograd.functional.jacobian`` of ``fn`` on one
    sample at a time (a loop is fine in a reference)."""
    out = []
    for h in H:
        J = torch.autograd.functional.jacobian(lambda v: fn(v[None])[0], h)
        out.append(J.reshape(h.numel(), h.numel()))
    return torch.stack(out).numpy()


def _projector(Q):
    return Q @ np.swapaxes(Q, -1, -2)


@pytest.fixture
def x5():
    return torch.randn(6, 5, generator=torch.Generator().manual_seed(1))


# ----------------------------------------------------------------------------- Jacobians


def test_dense_equals_central_finite_differences(tmp_path, x5):
    net = _tanh_net()
    js = export_jacobians(net, x5, [0, 1, 2, 0, 1, 2], tmp_path / "j.npz", method="dense")
    ref = copy.deepcopy(net).double().eval()
    eps = 1e-6
    for l, block in enumerate(ref.blocks):
        H = _t(js.representations[l])
        E = torch.eye(5, dtype=torch.float64)
        with torch.no_grad():
            plus = block(H[:, None, :] + eps * E) - (H[:, None, :] + eps * E)
            minus = block(H[:, None, :] - eps * E) - (H[:, None, :] - eps * E)
        fd = ((plus - minus) / (2 * eps)).transpose(1, 2).numpy()  # (N, d_out, d_in)
        np.testing.assert_allclose(js.jacobians[l], fd, atol=1e-8, rtol=0)
    assert np.abs(js.jacobians).max() > 0.05  # not trivially zero


def test_linear_branch_exports_the_weight_product(tmp_path):
    torch.manual_seed(3)
    d, L = 6, 3
    net = Net([LinearBlock(d) for _ in range(L)], d, 2)
    x = torch.randn(4, d)
    js = export_jacobians(net, x, [0, 1, 1, 0], tmp_path / "lin.npz")
    assert js.meta["method"] == "dense"
    for l, b in enumerate(net.blocks):
        W = b.lin2.weight.detach().double().numpy() @ b.lin1.weight.detach().double().numpy()
        for n in range(4):
            np.testing.assert_allclose(js.jacobians[l, n], W, rtol=0, atol=1e-15)


@settings(max_examples=8)
@given(
    d=st.integers(2, 6),
    L=st.integers(1, 3),
    N=st.integers(1, 5),
    batch_size=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_linear_branch_property(tmp_path_factory, d, L, N, batch_size, seed):
    # J_l = W2 W1 at every input, and the stored trajectory obeys h_l = (I + W2 W1) h_{l-1}.
    torch.manual_seed(seed)
    net = Net([LinearBlock(d, hidden=2) for _ in range(L)], d, 2)
    x = torch.randn(N, d)
    path = tmp_path_factory.mktemp("prop") / "p.npz"
    js = export_jacobians(net, x, np.arange(N) % 2, path, batch_size=batch_size, classes=2)
    for l, b in enumerate(net.blocks):
        W = b.lin2.weight.detach().double().numpy() @ b.lin1.weight.detach().double().numpy()
        np.testing.assert_allclose(js.jacobians[l], np.broadcast_to(W, (N, d, d)), rtol=0, atol=1e-14)
        step = js.representations[l] @ (np.eye(d) + W).T
        np.testing.assert_allclose(js.representations[l + 1], step, rtol=1e-12, atol=1e-12)


def test_torchvision_basic_block_effective_residual(tmp_path):
    # Post-activation: block(h) = relu(G(h) + h), so J = d(block(h) - h)/dh = D (G' + I) - I.
    net = _basic_net()
    x = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    js = export_jacobians(net, x, [0, 1, 2, 0, 1], tmp_path / "bb.npz")
    assert js.meta["feature_shape"] == [2, 4, 4] and js.width == 32
    ref = copy.deepcopy(net).double().eval()
    for l, block in enumerate(ref.blocks):
        H = _t(js.representations[l]).reshape(-1, 2, 4, 4)
        full = _autograd_jacobians(block, H)  # d block / dh
        np.testing.assert_allclose(js.jacobians[l], full - np.eye(32), rtol=0, atol=1e-12)
        # The convention D (G' + I) - I: rows where the final ReLU is off are exactly -I.
        with torch.no_grad():
            off = (block(H) <= 0).reshape(5, 32).numpy()
        rows = js.jacobians[l][off]
        np.testing.assert_array_equal(rows, -np.eye(32)[np.nonzero(off)[1]])
    # RA's step h_l - h_{l-1} is the effective residual's value.
    with torch.no_grad():
        h1 = ref.blocks[0](_t(js.representations[0]).reshape(-1, 2, 4, 4)).reshape(5, 32)
    np.testing.assert_allclose(js.representations[1], h1.numpy(), rtol=0, atol=1e-13)


def test_matrix_free_top_k_equals_dense_svd(tmp_path):
    torch.manual_seed(0)
    c, hw, k = 3, 6, 4
    net = Net([DecayingConvBlock(c, seed=s) for s in (0, 10)], c * hw * hw, 3)
    x = torch.randn(3, c, hw, hw, generator=torch.Generator().manual_seed(5))
    y = [0, 1, 2]
    mf = export_jacobians(net, x, y, tmp_path / "mf.npz", method="matrix_free", k=k, batch_size=2)
    dense = export_jacobians(net, x, y, tmp_path / "dense.npz", method="dense")
    assert mf.k == k and mf.jacobians is None and dense.has_dense
    U, S, Vh = np.linalg.svd(dense.jacobians)
    V = np.swapaxes(Vh, -1, -2)
    assert (S[..., k - 1] - S[..., k] > 0.02 * S[..., 0]).all()  # a real gap at k: subspaces are defined
    np.testing.assert_allclose(mf.S, S[..., :k], rtol=1e-6)
    assert np.abs(_projector(mf.U) - _projector(U[..., :k])).max() < 1e-6
    assert np.abs(_projector(mf.V) - _projector(V[..., :k])).max() < 1e-6
    assert mf.meta["max_relative_residual"] < 1e-7
    np.testing.assert_array_equal(mf.representations, dense.representations)


@pytest.mark.parametrize("power_iters", ["auto", 0, 3])
def test_torch_range_finder_is_spectras_algorithm(power_iters):
    # The torch range finder must give what ramodel.spectra.top_singular_operator gives
    # on the same operator with the same seed (same test matrix, iterations, signs).
    spectra = pytest.importorskip("ramodel.spectra")
    rng = np.random.default_rng(4)
    B, d, k = 3, 60, 4
    Q1 = np.linalg.qr(rng.standard_normal((B, d, d)))[0]
    Q2 = np.linalg.qr(rng.standard_normal((B, d, d)))[0]
    J = (Q1 * 0.7 ** np.arange(d)) @ np.swapaxes(Q2, -1, -2)
    Jt = torch.from_numpy(J)
    U, S, V, res = rt._range_finder(lambda X: Jt @ X, lambda Y: Jt.mT @ Y, B, d, k, oversample=5,
                                    power_iters=power_iters, seed=11, dtype=torch.float64, device="cpu")
    ref = spectra.top_singular_operator(lambda X: J @ X, lambda Y: np.swapaxes(J, -1, -2) @ Y, (B, d, d), k,
                                        oversample=5, power_iters=power_iters, seed=11, xp=np)
    np.testing.assert_allclose(S.numpy(), ref.S, rtol=1e-12)
    np.testing.assert_allclose(U.numpy(), ref.U, atol=1e-10)
    np.testing.assert_allclose(V.numpy(), ref.V, atol=1e-10)
    direct = np.linalg.norm(J @ V.numpy() - U.numpy() * S.numpy()[:, None, :], axis=-2) / S.numpy()[:, :1]
    np.testing.assert_allclose(res.numpy(), direct, rtol=1e-6, atol=1e-15)


def test_matrix_free_float32(tmp_path):
    torch.manual_seed(0)
    net = Net([DecayingConvBlock(3)], 3 * 36, 3)
    x = torch.randn(2, 3, 6, 6)
    js = export_jacobians(net, x, [0, 1], tmp_path / "f32.npz", method="matrix_free", k=3, dtype="float32")
    assert js.U.dtype == np.float32 and js.representations.dtype == np.float32
    ref = np.linalg.svd(block_jacobians(net.blocks[0], _t(js.representations[0]).reshape(2, 3, 6, 6)),
                        compute_uv=False)[:, :3]
    np.testing.assert_allclose(js.S[0], ref, rtol=1e-4)
    JacobianSet.load(tmp_path / "f32.npz")  # orthonormal to float32 tolerance


def test_matrix_free_never_builds_dense(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the matrix-free path formed a dense Jacobian")

    monkeypatch.setattr(rt, "_dense_jacobians", forbidden)
    monkeypatch.setattr(rt, "jacrev", forbidden)
    net = _decay_net()
    x = torch.randn(3, 2, 4, 4)
    js = export_jacobians(net, x, [0, 1, 2], tmp_path / "m.npz", method="matrix_free", k=2)
    assert js.S.shape == (2, 3, 2)


def test_auto_method_switches_on_width(tmp_path, monkeypatch, x5):
    net = _tanh_net()
    y = [0, 1, 2, 0, 1, 2]
    assert export_jacobians(net, x5, y, tmp_path / "a.npz").meta["method"] == "dense"
    monkeypatch.setattr(rt, "_AUTO_DENSE_MAX_WIDTH", 4)
    js = export_jacobians(net, x5, y, tmp_path / "b.npz")
    assert js.meta["method"] == "matrix_free" and js.k == 3  # k defaults to C


def test_batch_size_does_not_change_the_result(tmp_path):
    net = _decay_net()
    x = torch.randn(5, 2, 4, 4)
    y = [0, 1, 2, 0, 1]
    for method in ("dense", "matrix_free"):
        a = export_jacobians(net, x, y, tmp_path / "a.npz", method=method, batch_size=5, k=2)
        b = export_jacobians(net, x, y, tmp_path / "b.npz", method=method, batch_size=2, k=2)
        np.testing.assert_allclose(a.representations, b.representations, rtol=0, atol=1e-14)
        if method == "dense":
            np.testing.assert_allclose(a.jacobians, b.jacobians, rtol=0, atol=1e-13)
        else:
            np.testing.assert_allclose(a.S, b.S, rtol=1e-10)
            np.testing.assert_allclose(_projector(a.U), _projector(b.U), rtol=0, atol=1e-8)


def test_unconverged_top_k_warns(tmp_path):
    # A random post-activation block has a flat top spectrum (many sigma ~ 1): the top-2
    # subspace is ill-defined and the range finder cannot certify it. It must say so.
    net = _basic_net()
    x = torch.randn(3, 1, 4, 4)
    with pytest.warns(UserWarning, match="did not fully converge"):
        js = export_jacobians(net, x, [0, 1, 2], tmp_path / "w.npz", method="matrix_free", k=2)
    assert js.meta["max_relative_residual"] > 1e-6
    JacobianSet.load(tmp_path / "w.npz")  # still a valid file: orthonormal U, V, ordered S


def test_block_helpers_match_autograd():
    H = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    for block in (_basic_net().blocks[1], _decay_net().blocks[1]):
        J = block_jacobians(block, H)
        ref = _autograd_jacobians(copy.deepcopy(block).double().eval(), H) - np.eye(32)
        np.testing.assert_allclose(J, ref, rtol=0, atol=1e-12)
    T = block_top_singular(block, H, 3)
    np.testing.assert_allclose(T.S, np.linalg.svd(ref, compute_uv=False)[:, :3], rtol=1e-8)
    assert block.training  # a fresh module trains; the helper restored that after its eval pass


# ----------------------------------------------------------------------------- skips


def test_entangled_skip_matrix_protocol(tmp_path):
    d = 5
    rng = np.random.default_rng(0)
    Ms = [torch.as_tensor(np.linalg.qr(rng.standard_normal((d, d)))[0], dtype=torch.float32) for _ in range(2)]
    torch.manual_seed(0)
    blocks = [EntangledMLPBlock(Ms[0]), MethodSkipBlock(Ms[1])]
    net = Net(blocks, d, 2)
    x = torch.randn(4, d)
    js = export_jacobians(net, x, [0, 1, 0, 1], tmp_path / "e.npz")
    np.testing.assert_array_equal(js.skips, np.stack([M.double().numpy() for M in Ms]))
    assert js.meta["skips"] == {"stored": True, "acts_on": "features"}
    ref = copy.deepcopy(net).double()
    for l, b in enumerate(ref.blocks):
        H = _t(js.representations[l])
        np.testing.assert_allclose(js.jacobians[l], _autograd_jacobians(b.branch, H), rtol=0, atol=1e-13)
    np.testing.assert_array_equal(skip_matrix(blocks[1]), Ms[1].double().numpy())


def test_channel_skip_on_conv_features(tmp_path, monkeypatch):
    c, hw = 3, 4
    rng = np.random.default_rng(1)
    M = torch.as_tensor(rng.standard_normal((c, c)), dtype=torch.float32)
    torch.manual_seed(0)
    net = Net([ChannelSkipConvBlock(M), BasicBlock(c)], c * hw * hw, 2)
    x = torch.randn(3, c, hw, hw)
    js = export_jacobians(net, x, [0, 1, 0], tmp_path / "c.npz")
    Mfull = np.kron(M.double().numpy(), np.eye(hw * hw))
    np.testing.assert_array_equal(js.skips[0], Mfull)
    np.testing.assert_array_equal(js.skips[1], np.eye(c * hw * hw))
    ref = copy.deepcopy(net).double()
    H = _t(js.representations[0]).reshape(3, c, hw, hw)
    full = _autograd_jacobians(ref.blocks[0], H)
    np.testing.assert_allclose(js.jacobians[0], full - Mfull, rtol=0, atol=1e-12)
    assert js.meta["skips"]["acts_on"] == "channels"
    # Too large to store: nothing stored, the channel matrices are kept in meta.
    monkeypatch.setattr(rt, "_AUTO_DENSE_MAX_WIDTH", 8)
    big = export_jacobians(net, x, [0, 1, 0], tmp_path / "c2.npz", method="dense")
    assert big.skips is None and big.meta["skips"]["stored"] is False
    np.testing.assert_array_equal(big.meta["skips"]["channel_matrices"][0], M.double().numpy())
    np.testing.assert_array_equal(big.jacobians, js.jacobians)


def test_skips_argument_overrides_discovery(tmp_path):
    # A plain block h + F(h) declared (wrongly, on purpose) to have skip 0.5 I:
    # the exported residual is then block(h) - 0.5 h, whose Jacobian is I/2 + F'.
    net = _tanh_net(d=4, L=2)
    x = torch.randn(3, 4)
    base = export_jacobians(net, x, [0, 1, 2], tmp_path / "a.npz")
    half = export_jacobians(net, x, [0, 1, 2], tmp_path / "b.npz", skips=0.5 * np.eye(4))
    np.testing.assert_allclose(half.jacobians, base.jacobians + 0.5 * np.eye(4), rtol=0, atol=1e-15)
    assert half.skips.shape == (2, 4, 4)


def test_unknown_skip_attribute_is_refused(tmp_path):
    class Odd(TanhBlock):
        def __init__(self, d):
            super().__init__(d)
            self.skip = nn.Linear(d, d)

    torch.manual_seed(0)
    net = Net([Odd(4)], 4, 2)
    with pytest.raises(TypeError, match="without a 'matrix' or 'M' attribute"):
        export_jacobians(net, torch.randn(2, 4), [0, 1], tmp_path / "o.npz")
    assert list(tmp_path.iterdir()) == []


def test_ramodel_nets_blocks(tmp_path):
    nets = pytest.importorskip("ramodel.nets")
    net = nets.ResidualMLP(6, 3, width=5, depth=2, skip="orthogonal", seed=0, init_seed=0)
    x = torch.randn(4, 6)
    js = export_jacobians(net, x, [0, 1, 2, 0], tmp_path / "n.npz")
    ref = copy.deepcopy(net).double().eval()
    for l, b in enumerate(ref.blocks):
        np.testing.assert_allclose(js.skips[l], b.skip.M.numpy())
        H = _t(js.representations[l])
        np.testing.assert_allclose(js.jacobians[l], _autograd_jacobians(b.branch, H), rtol=0, atol=1e-12)
    assert js.classifier is not None and js.meta["classifier"] == "model.classifier"


# ----------------------------------------------------------------------------- modes, file, meta


def test_eval_forced_and_modes_restored(tmp_path):
    net = _basic_net()
    net.train()
    net.blocks[1].bn1.eval()  # a mixed state must come back exactly
    before = {name: m.training for name, m in net.named_modules()}
    seen = []
    net.blocks[0].register_forward_pre_hook(lambda m, a: seen.append(m.training))
    x = torch.randn(4, 1, 4, 4)
    js = export_jacobians(net, x, [0, 1, 2, 0], tmp_path / "m.npz")
    assert seen and not any(seen)
    assert {name: m.training for name, m in net.named_modules()} == before
    # Eval mode: BN used its running statistics, so one sample alone gives the same h_1.
    ref = copy.deepcopy(net).double().eval()
    with torch.no_grad():
        h1 = ref.blocks[0](ref.stem(x[:1].double()))
    np.testing.assert_allclose(js.representations[1, :1], h1.reshape(1, -1).numpy(), rtol=0, atol=1e-13)
    # Restored on error too.
    with pytest.raises(ValueError):
        export_jacobians(net, x, [0, 1, 2, 0], tmp_path / "m2.npz", blocks=[net.blocks[1], net.blocks[0]])
    assert {name: m.training for name, m in net.named_modules()} == before


def test_model_tensors_untouched(tmp_path, x5):
    net = _tanh_net()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    export_jacobians(net, x5, [0, 1, 2, 0, 1, 2], tmp_path / "u.npz", dtype="float64")
    for k, v in net.state_dict().items():
        assert v.dtype == state[k].dtype and torch.equal(v, state[k])


def test_representations_match_manual_forward(tmp_path):
    net = _basic_net(L=3)
    x = torch.randn(4, 1, 4, 4)
    js = export_jacobians(net, x, [0, 1, 2, 0], tmp_path / "r.npz")
    ref = copy.deepcopy(net).double().eval()
    with torch.no_grad():
        h = ref.stem(x.double())
        hs = [h]
        for b in ref.blocks:
            h = b(h)
            hs.append(h)
    manual = torch.stack(hs).reshape(4, 4, -1).numpy()
    np.testing.assert_allclose(js.representations, manual, rtol=0, atol=1e-13)


def test_file_round_trip_and_meta(tmp_path):
    net = _decay_net()
    x = torch.randn(4, 2, 4, 4)
    path = tmp_path / "net.npz"
    user = {"dataset": "toy", "train_accuracy": 0.9, "test_accuracy": 0.8, "seed": 7}
    js = export_jacobians(net, x, np.array([0, 1, 2, 0]), path, meta=user, method="matrix_free", k=2, seed=3)
    loaded = JacobianSet.load(path)
    for key in ("labels", "U", "S", "V", "representations"):
        np.testing.assert_array_equal(getattr(loaded, key), getattr(js, key))
    assert loaded.classes == 3 and loaded.meta == js.meta
    m = loaded.meta
    assert m["architecture"] == "Net" and m["architecture_repr"].startswith("Net(")
    assert m["blocks"] == ["blocks.0", "blocks.1"] and m["block_types"] == ["DecayingConvBlock"] * 2
    assert (m["depth"], m["width"], m["classes"], m["k"], m["method"]) == (2, 32, 3, 2, "matrix_free")
    assert (m["dataset"], m["train_accuracy"], m["test_accuracy"], m["seed"]) == ("toy", 0.9, 0.8, 7)
    assert m["export_seed"] == 3 and m["skip_family"] == "identity" and m["dtype"] == "float64"
    assert set(m["versions"]) >= {"torch", "numpy", "ramodel"} and m["versions"]["torch"] == torch.__version__
    created = datetime.datetime.fromisoformat(m["created"])
    assert created.utcoffset() == datetime.timedelta(0)
    # fc acts on d = 32 flattened features here, so it is the classifier.
    np.testing.assert_array_equal(loaded.classifier, net.fc.weight.detach().double().numpy())
    assert m["classifier"] == "model.fc"
    assert 0.0 <= m["accuracy_on_inputs"] <= 1.0
    json.dumps(m)


def test_classifier_given_or_explained(tmp_path, x5):
    net = _tanh_net()
    y = [0, 1, 2, 0, 1, 2]
    W = np.arange(15.0).reshape(3, 5)
    js = export_jacobians(net, x5, y, tmp_path / "a.npz", classifier=W)
    np.testing.assert_array_equal(js.classifier, W)
    assert js.meta["classifier"] == "given"
    net.fc = nn.Linear(7, 3)  # a head that does not act on d features
    net.forward = lambda x: net.blocks[2](net.blocks[1](net.blocks[0](x)))
    js = export_jacobians(net, x5, y, tmp_path / "b.npz")
    assert js.classifier is None and "7 -> 3" in js.meta["classifier"]


def test_non_contiguous_blocks_warn_and_use_each_blocks_input(tmp_path):
    torch.manual_seed(0)
    net = Net([TanhBlock(4), TanhBlock(4)], 4, 2, between=nn.Linear(4, 4))
    x = torch.randn(3, 4)
    with pytest.warns(UserWarning, match="not the output of the block before"):
        js = export_jacobians(net, x, [0, 1, 0], tmp_path / "nc.npz")
    assert js.meta["contiguous"] is False
    ref = copy.deepcopy(net).double().eval()
    with torch.no_grad():
        h1_in = ref.between(_t(js.representations[1]))
    np.testing.assert_allclose(js.jacobians[1], _autograd_jacobians(ref.blocks[1], h1_in) - np.eye(4), atol=1e-13)


def test_exported_sets_feed_analyze(tmp_path):
    report = pytest.importorskip("ramodel.report")
    torch.manual_seed(3)
    net = Net([LinearBlock(6, hidden=2) for _ in range(3)], 6, 3)
    x, y = torch.randn(9, 6), np.arange(9) % 3
    export_jacobians(net, x, y, tmp_path / "lin.npz")
    rep = report.analyze(JacobianSet.load(tmp_path / "lin.npz"))
    assert rep.metrics["numerical_rank"].value == 2.0  # rank of W2 W1 with an inner width of 2
    # Dense and matrix-free exports of one network give the same RA2 numbers.
    net = _decay_net(C=3)
    x, y = torch.randn(4, 2, 4, 4), [0, 1, 2, 0]
    dense = report.analyze(export_jacobians(net, x, y, tmp_path / "d.npz", method="dense"))
    mf = report.analyze(export_jacobians(net, x, y, tmp_path / "m.npz", method="matrix_free"))
    for key in ("a_lr", "A_left", "A_right"):
        np.testing.assert_allclose(mf.metrics[key].value, dense.metrics[key].value, rtol=1e-6, atol=1e-9)


def test_user_meta_contradicting_the_export_is_refused(tmp_path, x5):
    with pytest.raises(ValueError, match=r"meta\['depth'\] = 7 contradicts"):
        export_jacobians(_tanh_net(), x5, [0, 1, 2, 0, 1, 2], tmp_path / "x.npz", meta={"depth": 7})
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- bad input


class Down(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(5, 3)

    def forward(self, h):
        return self.lin(h)


def _bad_cases():
    def nan_inputs(net, x, y):
        x = x.clone()
        x[2, 1] = float("nan")
        return dict(inputs=x), ValueError, "input 2 .*NaN or Inf"

    def label_high(net, x, y):
        return dict(labels=[0, 1, 2, 3, 0, 1]), ValueError, r"labels must lie in \[0, classes\) = \[0, 3\)"

    def label_negative(net, x, y):
        return dict(labels=[0, -1, 2, 0, 1, 2]), ValueError, r"labels must lie in \[0, classes\)"

    def label_float(net, x, y):
        return dict(labels=np.zeros(6)), ValueError, "labels must be integers"

    def length_mismatch(net, x, y):
        return dict(labels=[0, 1, 2]), ValueError, "3 labels for N = 6 inputs"

    def missing_folder(net, x, y):
        return dict(path_name="nope/j.npz"), FileNotFoundError, "does not exist"

    def not_a_submodule(net, x, y):
        return dict(blocks=[TanhBlock(5)]), ValueError, "not a submodule of the model"

    def not_reached(net, x, y):
        net.extra = TanhBlock(5)
        return dict(blocks=[net.blocks[0], net.extra]), ValueError, r"\['extra'\] were not reached"

    def wrong_order(net, x, y):
        return dict(blocks=[net.blocks[1], net.blocks[0]]), ValueError, "forward order"

    def shape_change(net, x, y):
        net.blocks[2] = Down()
        net.fc = nn.Linear(3, 3)
        return dict(), ValueError, r"maps features of shape \(5,\) to \(3,\): it is not a residual block"

    def bad_method(net, x, y):
        return dict(method="svd"), ValueError, "method must be one of"

    def bad_dtype(net, x, y):
        return dict(dtype="float16"), ValueError, "dtype must be one of"

    def k_too_large(net, x, y):
        return dict(k=6), ValueError, r"k must be in \[1, d\] = \[1, 5\]"

    def no_blocks(net, x, y):
        return dict(model=nn.Sequential(nn.Linear(5, 5))), ValueError, "has no attribute 'blocks'"

    return [nan_inputs, label_high, label_negative, label_float, length_mismatch, missing_folder,
            not_a_submodule, not_reached, wrong_order, shape_change, bad_method, bad_dtype, k_too_large, no_blocks]


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda f: f.__name__)
def test_bad_input_raises_and_writes_nothing(tmp_path, x5, case):
    net = _tanh_net()
    y = [0, 1, 2, 0, 1, 2]
    over, exc, match = case(net, x5, y)
    args = {"model": net, "inputs": x5, "labels": y, "path": tmp_path / over.pop("path_name", "j.npz")}
    args.update(over)
    net.train()
    with pytest.raises(exc, match=match):
        export_jacobians(args.pop("model"), args.pop("inputs"), args.pop("labels"), args.pop("path"), **args)
    assert list(tmp_path.iterdir()) == []  # no file, no temporary file
    assert net.training  # mode restored


def test_path_is_a_folder(tmp_path, x5):
    with pytest.raises(IsADirectoryError, match="it is a folder"):
        export_jacobians(_tanh_net(), x5, [0, 1, 2, 0, 1, 2], tmp_path)


def test_existing_file_survives_a_failed_export(tmp_path, x5):
    path = tmp_path / "j.npz"
    good = export_jacobians(_tanh_net(), x5, [0, 1, 2, 0, 1, 2], path)
    before = path.read_bytes()
    with pytest.raises(ValueError):
        export_jacobians(_tanh_net(), x5, [0, 1, 2, 0, 1, 9], path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["j.npz"]
    np.testing.assert_array_equal(JacobianSet.load(path).jacobians, good.jacobians)
