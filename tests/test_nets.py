"""Tests of ramodel.nets: entangled skips and the residual networks, against dense references."""

import copy
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from conftest import float64_default as _float64  # noqa: E402
from ramodel import mappings  # noqa: E402
from ramodel.nets import ConvResNet, EntangledSkip, ResidualBlock, ResidualMLP  # noqa: E402


def _reference_mlp(net: ResidualMLP, x: np.ndarray, skips: np.ndarray) -> np.ndarray:
    """Logits of a bias-carrying, norm-free ReLU ResidualMLP from its weights, in NumPy float64."""
    W = {k: v.detach().double().numpy() for k, v in net.state_dict().items()}
    h = x @ W["embed.weight"].T + W["embed.bias"]
    for l, M in enumerate(skips):
        p = f"blocks.{l}.branch."
        F = np.maximum(h @ W[p + "0.weight"].T + W[p + "0.bias"], 0.0) @ W[p + "3.weight"].T + W[p + "3.bias"]
        h = h @ M.T + F
    return h @ W["classifier.weight"].T + W["classifier.bias"]


# ------------------------------------------------------------------------- packaging


_WITHOUT_TORCH = """
import ast, importlib, pathlib, pkgutil, sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import ramodel

def top_level_imports(body):
    for s in body:
        if isinstance(s, (ast.Import, ast.ImportFrom)):
            yield s
        elif isinstance(s, (ast.Try, ast.If)):
            yield from top_level_imports(s.body + s.orelse)

def imports_torch(name):
    path = pathlib.Path(ramodel.__path__[0]) / (name + ".py")
    path = path if path.exists() else path.with_suffix("") / "__init__.py"  # a package (metrics/, theory/)
    tree = ast.parse(path.read_text())
    return any(
        getattr(n, "module", None) == "torch" or any(a.name == "torch" for a in n.names)
        for n in top_level_imports(tree.body)
    )

optional = set()
for m in pkgutil.iter_modules(ramodel.__path__):
    if imports_torch(m.name):
        optional.add(m.name)
    else:
        importlib.import_module("ramodel." + m.name)
assert {"nets", "training"} <= optional, optional
assert not {"ramodel.nets", "ramodel.training"} & set(sys.modules)
"""


def test_ramodel_works_without_torch():
    # torch made unimportable: every module without a top-level torch import must still
    # import, and none may pull in nets or training.
    subprocess.run([sys.executable, "-c", _WITHOUT_TORCH], check=True, capture_output=True, timeout=120)


# ------------------------------------------------------------------------- EntangledSkip


def test_identity_skip_returns_input_itself_and_none_returns_zero():
    h = torch.randn(5, 6)
    assert EntangledSkip(6, "identity")(h) is h
    z = EntangledSkip(6, "none")(h)
    assert z.shape == h.shape and not z.any()
    assert EntangledSkip(6, np.eye(6)).structure == "identity"
    assert EntangledSkip(6, np.zeros((6, 6))).structure == "zero"


@given(
    width=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
    signed=st.booleans(),
    block=st.integers(1, 7),
)
def test_structured_skips_agree_with_dense(width, seed, signed, block):
    h = torch.randn(3, width, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    cases = [("permutation", {"signed": signed}, "permutation"), ("block_orthogonal", {"block": block}, "block_diagonal")]
    for family, params, structure in cases:
        M = mappings.get(family)(width, seed=seed, **params)  # independent float64 draw
        with _float64():
            fast = EntangledSkip(width, family, skip_params=params, seed=seed)
            dense = EntangledSkip(width, M.copy())  # explicit matrix: the dense path
        assert fast.structure in (structure, "identity")  # e.g. the identity permutation
        assert dense.structure in ("dense", "identity")
        expected = torch.from_numpy(h.numpy() @ M.T)
        torch.testing.assert_close(fast(h), expected, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(dense(h), expected, rtol=1e-13, atol=1e-13)
        if family == "permutation":  # a gather with signs is exact
            assert torch.equal(fast(h), expected)


@pytest.mark.parametrize(
    ("family", "params"),
    [
        ("orthogonal", {}), ("permutation", {"signed": True}), ("block_orthogonal", {"block": 3}),
        ("correlation", {"kind": "banded"}),
    ],
)
def test_skip_on_channels_of_feature_maps(family, params):
    with _float64():
        skip = EntangledSkip(7, family, skip_params=params, seed=3, dim=1)
    M = mappings.get(family)(7, seed=3, **params)
    h = torch.randn(2, 7, 4, 5, dtype=torch.float64)
    expected = np.einsum("ij,bjxy->bixy", M, h.numpy())
    torch.testing.assert_close(skip(h), torch.from_numpy(expected), rtol=1e-12, atol=1e-12)


def test_skip_input_and_size_errors():
    with pytest.raises(ValueError, match="unknown mapping family 'nope'"):
        EntangledSkip(4, "nope")
    with pytest.raises(ValueError, match=r"skip must have shape \(width, width\) = \(4, 4\)"):
        EntangledSkip(4, np.eye(3))
    with pytest.raises(ValueError, match="skip_params"):
        EntangledSkip(4, np.eye(4), skip_params={"block": 2})
    with pytest.raises(ValueError, match="block"):
        EntangledSkip(4, "block_orthogonal", skip_params={"block": 0})
    with pytest.raises(ValueError, match="finite"):
        EntangledSkip(2, np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"axis -1 must have size 4"):
        EntangledSkip(4, "orthogonal", seed=0)(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"axis 1 must have size 4"):
        EntangledSkip(4, "orthogonal", seed=0, dim=1)(torch.randn(2, 3, 8, 8))


# ------------------------------------------------------------------------- ResidualMLP


@pytest.mark.parametrize(
    ("skip", "params"),
    [("identity", {}), ("none", {}), ("orthogonal", {}), ("permutation", {"signed": True}),
     ("block_orthogonal", {"block": 3}), ("sparse_unipotent", {"density": 0.3}), ("correlation", {"kind": "block"})],
)  # fmt: skip
def test_mlp_forward_matches_dense_float64_reference(skip, params):
    with _float64():
        net = ResidualMLP(5, 3, width=8, depth=3, skip=skip, skip_params=params, seed=11, init_seed=0)
    skips = mappings.draw_stack(skip, 8, depth=3, seed=11, params=params)
    x = np.random.default_rng(0).standard_normal((6, 5))
    out = net(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(out, _reference_mlp(net, x, skips), rtol=1e-12, atol=1e-12)


def test_mlp_explicit_skips_single_and_stack():
    stack = mappings.draw_stack("orthogonal", 6, depth=2, seed=5)
    x = np.random.default_rng(1).standard_normal((4, 3))
    for skip, expected in [(stack, stack), (torch.from_numpy(stack[0]), stack[[0, 0]])]:
        with _float64():
            net = ResidualMLP(3, 2, width=6, depth=2, skip=skip, init_seed=0)
        out = net(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(out, _reference_mlp(net, x, expected), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="stack of 3 matrices"):
        ResidualMLP(3, 2, width=6, depth=3, skip=stack)


def test_blocks_are_skip_plus_branch():
    h = torch.randn(4, 8)
    net = ResidualMLP(5, 3, width=8, depth=2, skip="identity", init_seed=0)
    for b in net.blocks:
        assert torch.equal(b(h), h + b.branch(h))
    net = ResidualMLP(5, 3, width=8, depth=2, skip="none", init_seed=0)
    for b in net.blocks:
        assert torch.equal(b(h), b.branch(h))
    net = ResidualMLP(5, 3, width=8, depth=2, skip="orthogonal", seed=0, init_seed=0)
    for b in net.blocks:
        torch.testing.assert_close(b(h), h @ b.skip.M.T + b.branch(h))
    assert net.embed(torch.zeros(2, 5)).shape == (2, 8) and net.classifier.out_features == 3


def test_skip_buffers_are_not_parameters_and_follow_draw_stack():
    net = ResidualMLP(5, 3, width=6, depth=3, skip="orthogonal", seed=7, init_seed=0)
    params = {id(p) for p in net.parameters()}
    state = net.state_dict()
    for l, b in enumerate(net.blocks):
        assert id(b.skip.M) not in params and not b.skip.M.requires_grad
        assert f"blocks.{l}.skip.M" in state
    net(torch.randn(4, 5)).sum().backward()
    assert all(b.skip.M.grad is None for b in net.blocks)
    S = torch.stack([b.skip.M for b in net.blocks])
    assert torch.equal(S, torch.from_numpy(mappings.draw_stack("orthogonal", 6, depth=3, seed=7, dtype="float32")))
    assert not torch.equal(S[0], S[1]) and not torch.equal(S[1], S[2])
    shared = ResidualMLP(5, 3, width=6, depth=3, skip="orthogonal", skip_shared=True, seed=7, init_seed=0)
    assert all(torch.equal(b.skip.M, torch.from_numpy(mappings.get("orthogonal")(6, seed=7)).float()) for b in shared.blocks)
    # The buffer travels with state_dict: another seed's model reproduces this one after loading.
    other = ResidualMLP(5, 3, width=6, depth=3, skip="orthogonal", seed=8, init_seed=1)
    x = torch.randn(3, 5)
    assert not torch.equal(other(x), net(x))
    other.load_state_dict(net.state_dict())
    assert torch.equal(other(x), net(x))
    assert net.double().blocks[0].skip.M.dtype == torch.float64


def test_init_seed_is_reproducible_and_leaves_global_rng_alone():
    before = torch.get_rng_state()
    a = ResidualMLP(5, 3, width=6, depth=2, init_seed=3)
    b = ResidualMLP(5, 3, width=6, depth=2, init_seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = ResidualMLP(5, 3, width=6, depth=2, init_seed=4)
    assert not torch.equal(a.embed.weight, c.embed.weight)


def test_bias_free_relu_branch_is_exactly_linear_along_h():
    net = ResidualMLP(5, 3, width=6, depth=2, bias=False, skip="orthogonal", seed=0, init_seed=0).double()
    h = torch.randn(6, dtype=torch.float64)
    for b in net.blocks:
        J = torch.autograd.functional.jacobian(b.branch, h)
        torch.testing.assert_close(J @ h, b.branch(h), rtol=1e-14, atol=1e-14)
        # ... and the block minus its skip is the branch, the function exporters differentiate.
        J_block = torch.autograd.functional.jacobian(lambda v, b=b: b(v) - v @ b.skip.M.T, h)
        torch.testing.assert_close(J_block, J, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("norm", ["layernorm", "batchnorm"])
@pytest.mark.parametrize("activation", ["gelu", "tanh", "silu", "linear"])
def test_mlp_variants_run(norm, activation):
    net = ResidualMLP(5, 3, width=6, depth=2, norm=norm, activation=activation, init_seed=0)
    assert net(torch.randn(4, 5)).shape == (4, 3)
    assert isinstance(net.blocks[0].branch[1], {"layernorm": torch.nn.LayerNorm, "batchnorm": torch.nn.BatchNorm1d}[norm])


def test_mlp_argument_errors():
    net = ResidualMLP(64, 3, width=4, depth=1)
    with pytest.raises(ValueError, match="flat inputs.*flatten images"):
        net(torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"shape \(batch, 64\)"):
        net(torch.randn(2, 63))
    for kwargs, match in [
        ({"skip": "nope"}, "unknown mapping family"),
        ({"skip": np.eye(3)}, "skip must have shape"),
        ({"activation": "sigmoid"}, "activation must be one of"),
        ({"norm": "group"}, "norm must be one of"),
        ({"drop_path": 1.0}, "drop_path"),
        ({"width": 0}, "width"),
        ({"depth": 0}, "depth"),
        ({"skip": "orthogonal", "seed": -1}, "seed"),
    ]:
        with pytest.raises(ValueError, match=match):
            ResidualMLP(64, 3, **{"width": 4, "depth": 1, **kwargs})


# ------------------------------------------------------------------------- stochastic depth


def test_drop_path_rates_increase_linearly():
    net = ResidualMLP(5, 3, width=4, depth=4, drop_path=0.4)
    assert [b.drop_path for b in net.blocks] == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_stochastic_depth_only_in_training_mode():
    torch.manual_seed(0)
    net = ResidualMLP(5, 3, width=6, depth=3, drop_path=0.5, skip="orthogonal", seed=0, init_seed=0)
    plain = copy.deepcopy(net)
    for b in plain.blocks:
        b.drop_path = 0.0
    x = torch.randn(64, 5)
    net.eval()
    assert torch.equal(net(x), net(x)) and torch.equal(net(x), plain.eval()(x))
    net.train()
    assert not torch.equal(net(x), net(x))
    # Per sample, a block either drops its branch or keeps it scaled by 1 / (1 - p).
    b = net.blocks[1]
    h = torch.randn(64, 6)
    out, skip, F = b(h), b.skip(h), b.branch(h)
    dropped = torch.isclose(out, skip, atol=1e-6).all(dim=1)
    kept = torch.isclose(out, skip + F / (1 - b.drop_path), atol=1e-6).all(dim=1)
    assert bool((dropped ^ kept).all()) and 0 < int(dropped.sum()) < 64


# ------------------------------------------------------------------------- ConvResNet


def test_conv_blocks_are_same_shape_and_skip_acts_on_channels():
    with _float64():
        net = ConvResNet(1, 4, channels=(3, 5), blocks_per_stage=(2, 1), skip="orthogonal", seed=2, init_seed=0).eval()
    assert net.block_stage == (0, 0, 1) and len(net.blocks) == 3 and len(net.downsample) == 1
    shapes = []
    hooks = [b.register_forward_hook(lambda m, i, o: shapes.append((i[0].shape, o.shape, i[0], o))) for b in net.blocks]
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        logits = net(x)
    for h in hooks:
        h.remove()
    assert [s[0] for s in shapes] == [s[1] for s in shapes]
    assert [tuple(s[0]) for s in shapes] == [(2, 3, 8, 8), (2, 3, 8, 8), (2, 5, 4, 4)]
    widths = [3, 3, 5]
    seeds = np.random.SeedSequence(2).spawn(3)  # draw_stack's per-block rule
    for (_, _, h, out), b, w, s in zip(shapes, net.blocks, widths, seeds):
        M = mappings.get("orthogonal")(w, seed=s)
        with torch.no_grad():
            expected = np.einsum("ij,bjxy->bixy", M, h.numpy()) + b.branch(h).numpy()
        np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)
    # The logits are linear in h_L: classifier of its spatial mean.
    h_L = shapes[-1][3]
    torch.testing.assert_close(logits, net.classifier(h_L.mean(dim=(2, 3))))
    torch.testing.assert_close(net.embed(x), net.stem(x))


def test_conv_identity_and_none_blocks():
    x = torch.randn(2, 4, 6, 6)
    ident = ConvResNet(1, 3, channels=(4,), blocks_per_stage=1, init_seed=0).eval()
    assert torch.equal(ident.blocks[0](x), x + ident.blocks[0].branch(x))
    none = ConvResNet(1, 3, channels=(4,), blocks_per_stage=1, skip="none", init_seed=0).eval()
    assert torch.equal(none.blocks[0](x), none.blocks[0].branch(x))


def test_conv_shared_skips_per_width_and_28px_input():
    net = ConvResNet(1, 10, channels=(4, 4, 6), blocks_per_stage=1, skip="permutation", skip_shared=True, seed=0)
    M = [b.skip.M for b in net.blocks]
    assert torch.equal(M[0], M[1]) and M[2].shape == (6, 6)
    assert all(b.skip.structure == "permutation" for b in net.blocks)
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_conv_argument_errors():
    net = ConvResNet(1, 3, channels=(4,), blocks_per_stage=1)
    with pytest.raises(ValueError, match=r"images of shape \(batch, 1, height, width\).*reshape"):
        net(torch.randn(2, 64))
    with pytest.raises(ValueError, match="skip must have shape"):
        ConvResNet(1, 3, channels=(4, 8), skip=np.eye(4))
    with pytest.raises(ValueError, match="blocks_per_stage must have one count per stage"):
        ConvResNet(1, 3, channels=(4, 8), blocks_per_stage=(1,))
    with pytest.raises(ValueError, match="unknown mapping family"):
        ConvResNet(1, 3, skip="householder")
    with pytest.raises(TypeError, match="channels"):
        ConvResNet(1, 3, channels=8)


def test_residual_block_validates_drop_path():
    with pytest.raises(ValueError, match="drop_path"):
        ResidualBlock(EntangledSkip(2), torch.nn.Identity(), drop_path=-0.1)


def test_auto_init_makes_a_skip_free_mlp_trainable():
    """PyTorch's default init starves a skip-free stack; "auto" switches it to He init."""
    from ramodel.datasets import digits
    from ramodel.training import train

    torch.set_num_threads(1)
    ds = digits()
    acc = {}
    for init in ("auto", "torch"):
        m = ResidualMLP(64, 10, width=32, depth=3, skip="none", seed=0, init_seed=0, init=init)
        acc[init] = train(m, ds, epochs=3, batch_size=64, lr=0.05, seed=0, progress=False).final_test_accuracy
    assert acc["auto"] >= 0.8 and acc["torch"] <= 0.2, acc
    # Residual nets keep PyTorch's default under "auto".
    a = ResidualMLP(64, 10, width=8, depth=2, skip="identity", init_seed=0)
    b = ResidualMLP(64, 10, width=8, depth=2, skip="identity", init_seed=0, init="torch")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


# ------------------------------------------------------------------------- fast structured skips


@given(
    width=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
    bandwidth=st.integers(1, 14),
    block=st.integers(1, 7),
    rho=st.floats(-0.1, 0.95),  # above -1/(block - 1) for every block <= 7
    dim=st.sampled_from([-1, 1]),
)
def test_banded_equicorrelation_and_scaled_skips_agree_with_dense(width, seed, bandwidth, block, rho, dim):
    cases = [
        ("correlation", {"kind": "banded", "bandwidth": bandwidth}, "banded"),
        ("scaled(correlation)", {"kind": "banded", "bandwidth": bandwidth}, "banded"),
        ("correlation", {"kind": "block", "block": block, "rho": rho}, "block_equicorrelation"),
        ("scaled(correlation)", {"kind": "block", "block": block, "rho": rho}, "block_equicorrelation"),
        ("scaled(block_orthogonal)", {"block": block}, "block_diagonal"),
    ]
    gen = torch.Generator().manual_seed(seed % 2**31)
    shape = (3, width, 2) if dim == 1 else (2, 3, width)
    h = torch.randn(*shape, dtype=torch.float64, generator=gen)
    for family, params, structure in cases:
        M = mappings.get(family)(width, seed=seed, **params)  # independent float64 draw
        with _float64():
            fast = EntangledSkip(width, family, skip_params=params, seed=seed, dim=dim)
        assert fast.structure in (structure, "identity")
        torch.testing.assert_close(fast.M, torch.from_numpy(M), rtol=0, atol=0)
        expected = torch.from_numpy(np.moveaxis(np.moveaxis(h.numpy(), dim, -1) @ M.T, -1, dim))
        torch.testing.assert_close(fast(h), expected, rtol=1e-12, atol=1e-12)


def test_diagonal_structured_skip_and_fast_forms_stay_out_of_dense_path():
    d = np.array([2.0, -1.0, 0.5])
    with _float64():
        skip = EntangledSkip(3, mappings.DiagonalMap(d))
    assert skip.structure == "diagonal"
    h = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(skip(h), h * torch.from_numpy(d), rtol=0, atol=0)
    # A banded skip never forms h @ M.T: poisoning M leaves its output unchanged.
    banded = EntangledSkip(6, "correlation", skip_params={"kind": "banded", "bandwidth": 2})
    x = torch.randn(2, 6)
    before = banded(x)
    banded.M.fill_(float("nan"))
    assert torch.equal(banded(x), before)
