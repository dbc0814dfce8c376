"""Tests of ramodel.refinement: the measures on constructed cases, and the torch collector against autograd."""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ramodel.refinement import (
    RefinementData,
    accuracy,
    chance_accuracy,
    cosine_chance,
    gradient_cosine,
    lesion_accuracy,
    measure,
    norm_ratio,
    per_block,
)

shapes = st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 9))


def _nonzero(shape):
    return hnp.arrays(np.float64, shape, elements=st.floats(-10, 10, allow_subnormal=False)).filter(
        lambda a: (np.linalg.norm(a, axis=-1) > 1e-3).all()
    )


# ----------------------------------------------------------------------- constructed cases


@given(data=st.data(), shape=shapes, eta=st.floats(1e-200, 1e200))
def test_gradient_descent_step_has_cosine_one_and_ascent_minus_one(data, shape, eta):
    g = data.draw(_nonzero(shape))
    np.testing.assert_allclose(gradient_cosine(-eta * g, g), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(gradient_cosine(eta * g, g), -1.0, rtol=0, atol=1e-12)


@given(data=st.data(), shape=shapes, c=st.floats(-1e100, 1e100, allow_subnormal=False))
def test_norm_ratio_of_a_scaling_is_the_scale(data, shape, c):
    h = data.draw(_nonzero(shape))
    # Extreme scales too: the norms are scaled before squaring, so nothing under- or overflows.
    np.testing.assert_allclose(norm_ratio(c * h, h), abs(c), rtol=1e-12, atol=0)


@given(data=st.data(), shape=shapes)
def test_measures_match_a_per_vector_reference(data, shape):
    F, h = data.draw(_nonzero(shape)), data.draw(_nonzero(shape))
    L, N, _ = shape
    ratio = np.array([[np.linalg.norm(F[l, n]) / np.linalg.norm(h[l, n]) for n in range(N)] for l in range(L)])
    cos = np.array([[-(F[l, n] @ h[l, n]) / np.linalg.norm(F[l, n]) / np.linalg.norm(h[l, n]) for n in range(N)]
                    for l in range(L)])
    np.testing.assert_allclose(norm_ratio(F, h), ratio, rtol=1e-12)
    np.testing.assert_allclose(gradient_cosine(F, h), cos, rtol=1e-10, atol=1e-12)


def test_random_directions_give_cosine_zero_with_spread_one_over_sqrt_d():
    rng = np.random.default_rng(0)
    d, N = 64, 20000
    cos = gradient_cosine(rng.standard_normal((1, N, d)), rng.standard_normal((1, N, d)))[0]
    mean, std = cosine_chance(d)
    assert (mean, std) == (0.0, 0.125)
    assert abs(cos.mean()) < 5 * std / np.sqrt(N)  # 5 standard errors of the mean
    assert abs(cos.std() / std - 1) < 0.03


def test_zero_norms_are_nan_or_an_error():
    h = np.ones((2, 3, 4))
    h[1, 2] = 0.0
    r = norm_ratio(h, h)
    assert np.isnan(r[1, 2]) and np.isfinite(np.delete(r.ravel(), 5)).all()
    with pytest.raises(ValueError, match=r"\|h_\{l-1\}\| is zero at \(block, input\) = \(1, 2\)"):
        norm_ratio(h, h, on_zero="raise")
    g = np.ones((2, 3, 4))
    c = gradient_cosine(h, g)
    assert np.isnan(c[1, 2]) and np.sum(np.isnan(c)) == 1
    with pytest.raises(ValueError, match="zero at"):
        gradient_cosine(g, h, on_zero="raise")
    s = per_block(c)
    assert s.excluded.tolist() == [0, 1] and s.count.tolist() == [3, 2]
    np.testing.assert_allclose(s.mean, [-1.0, -1.0])


def test_array_api_strict_namespace_matches_numpy():
    xps = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(3)
    F, h = rng.standard_normal((2, 2, 5, 7))
    h[0, 1] = 0.0
    for fn in (norm_ratio, gradient_cosine):
        out = fn(xps.asarray(F), xps.asarray(h))
        assert type(out).__module__.startswith("array_api_strict")
        np.testing.assert_allclose(np.asarray(out), fn(F, h), rtol=1e-14, atol=0)
    for dtype in (np.float32, np.float64):
        assert norm_ratio(F.astype(dtype), np.ones_like(F, dtype=dtype)).dtype == dtype


def test_input_errors():
    a = np.ones((2, 3, 4))
    with pytest.raises(ValueError, match=r"F must have shape \(L, N, d\)"):
        norm_ratio(np.ones((3, 4)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="same shape"):
        gradient_cosine(a, np.ones((2, 3, 5)))
    with pytest.raises(ValueError, match="finite"):
        norm_ratio(a, np.full((2, 3, 4), np.nan))
    with pytest.raises(TypeError, match="real floating"):
        norm_ratio(np.ones((2, 3, 4), dtype=int), a)
    with pytest.raises(ValueError, match="on_zero must be one of"):
        norm_ratio(a, a, on_zero="ignore")
    with pytest.raises(ValueError, match="non-empty"):
        norm_ratio(np.ones((0, 3, 4)), np.ones((0, 3, 4)))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\)"):
        lesion_accuracy(np.ones((1, 2, 2)), np.array([0, 2]))
    with pytest.raises(ValueError, match=r"shape \(L, N, C\)"):
        lesion_accuracy(np.ones((2, 2)), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\) = \(2,\)"):
        accuracy(np.ones((2, 2)), np.array([0, 1, 1]))
    with pytest.raises(TypeError, match="RefinementData"):
        measure({"F": a})


def test_accuracies_and_chance():
    z = np.array([[3.0, 1.0, 0.0], [0.0, 1.0, 5.0], [0.0, 2.0, 1.0]])
    y = np.array([0, 2, 2])
    assert accuracy(z, y) == pytest.approx(2 / 3)
    lesions = np.stack([z, z[:, ::-1], np.zeros_like(z)])
    np.testing.assert_allclose(lesion_accuracy(lesions, y), [2 / 3, 0.0, 1 / 3])  # zeros: argmax 0
    assert chance_accuracy(y) == pytest.approx(2 / 3) and chance_accuracy(np.array([0, 1, 2, 3])) == 0.25


def test_measure_bundles_the_functions():
    rng = np.random.default_rng(0)
    h, F, g = rng.standard_normal((3, 2, 5, 6))
    z = rng.standard_normal((5, 3))
    y = np.array([0, 1, 2, 0, 0])
    data = RefinementData(h_in=h, h_out=h + F, F=F, grad=g, logits=z, lesion_logits=np.stack([z, z]), labels=y,
                          feature_shape=(6,))
    r = measure(data)
    np.testing.assert_array_equal(r.norm_ratio, norm_ratio(F, h))
    np.testing.assert_array_equal(r.gradient_cosine_blocks.mean, gradient_cosine(F, g).mean(axis=1))
    assert r.lesion_accuracy.tolist() == [accuracy(z, y)] * 2
    assert r.chance_accuracy == 0.6 and r.cosine_chance_std == pytest.approx(1 / np.sqrt(6))
    assert data.representations.shape == (3, 5, 6)
    assert set(r.to_dict()) == {
        "accuracy", "chance_accuracy", "cosine_chance_std", "lesion_accuracy", "norm_ratio", "gradient_cosine"
    }


# ------------------------------------------------------------------------------- torch


torch = pytest.importorskip("torch")  # one thread: tests/conftest.py


def _mlp(skip="orthogonal", **kw):
    from ramodel.nets import ResidualMLP

    net = ResidualMLP(5, 3, width=6, depth=3, skip=skip, seed=0, init_seed=0, **kw).double()
    return net


def test_collect_matches_a_manual_forward_and_autograd():
    from ramodel.refinement import collect

    net = _mlp()
    x = torch.randn(7, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    data = collect(net, x, y, batch_size=3)
    hs = [net.embed(x)]
    for b in net.blocks:
        hs.append(hs[-1] @ b.skip.M.T + b.branch(hs[-1]))
    logits = net.classifier(hs[-1])
    grads = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, y, reduction="sum"), hs[1:])
    for l, b in enumerate(net.blocks):
        np.testing.assert_allclose(data.h_in[l], hs[l].detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(data.h_out[l], hs[l + 1].detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(data.F[l], b.branch(hs[l]).detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(data.grad[l], grads[l].numpy(), rtol=1e-10, atol=1e-12)
        # Lesion l: block l outputs M h, the others are intact.
        h = hs[0]
        for k, bk in enumerate(net.blocks):
            h = h @ bk.skip.M.T + (0 if k == l else bk.branch(h))
        np.testing.assert_allclose(data.lesion_logits[l], net.classifier(h).detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(data.logits, logits.detach().numpy(), rtol=1e-12)
    # Batching does not change anything, and the model is left as it was.
    other = collect(net, x, y, batch_size=100)
    np.testing.assert_allclose(other.grad, data.grad, rtol=1e-12, atol=1e-14)
    assert net.training and all(p.grad is None for p in net.parameters())


def test_lesioning_a_zero_branch_leaves_the_accuracy_unchanged():
    from ramodel.refinement import collect

    net = _mlp(skip="permutation")
    with torch.no_grad():
        net.blocks[1].branch[-1].weight.zero_()
        net.blocks[1].branch[-1].bias.zero_()
    x = torch.randn(40, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    data = collect(net, x, y)
    r = measure(data)
    assert np.array_equal(data.lesion_logits[1], data.logits)
    assert r.lesion_accuracy[1] == r.accuracy
    assert np.isnan(r.gradient_cosine[1]).all() and r.gradient_cosine_blocks.excluded[1] == 40  # |F| = 0
    assert (r.norm_ratio[1] == 0).all()


def test_collect_on_rnn_steps_vit_and_conv():
    from ramodel.nets import ConvResNet, ResidualRNN, VisionTransformer
    from ramodel.refinement import collect

    rnn = ResidualRNN(3, 2, steps=4, hidden=5, skip="orthogonal", seed=0, init_seed=0).double()
    x = torch.randn(6, 4, 3, dtype=torch.float64)
    data = collect(rnn, x, torch.tensor([0, 1] * 3))
    assert data.h_in.shape == (4, 6, 5)  # one block per step
    np.testing.assert_allclose(data.representations, rnn.trajectory(x).detach().numpy(), rtol=1e-12)
    assert (data.h_in[0] == 0).all()
    r = measure(data)
    assert np.isnan(r.norm_ratio[0]).all() and np.isfinite(r.norm_ratio[1:]).all()  # h_0 = 0
    vit = VisionTransformer(4, 3, patch=2, dim=4, depth=1, heads=2, seed=0, init_seed=0)
    d = collect(vit, torch.randn(3, 1, 4, 4), [0, 1, 2])
    assert d.h_in.shape == (2, 3, 20) and d.feature_shape == (5, 4)
    conv = ConvResNet(1, 3, channels=(2, 3), blocks_per_stage=1, init_seed=0)
    with pytest.raises(ValueError, match="all blocks must share one shape"):
        collect(conv, torch.randn(2, 1, 4, 4), [0, 1])
    d = collect(conv, torch.randn(2, 1, 4, 4), [0, 1], blocks=conv.blocks[:1], lesion=False)
    assert d.h_in.shape == (1, 2, 32) and d.lesion_logits is None


def test_collect_errors():
    from ramodel.refinement import collect

    net = _mlp()
    x = torch.randn(4, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"y must be in \[0, 3\)"):
        collect(net, x, [0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"x must be \(N, ...\) and y \(N,\)"):
        collect(net, x, [0, 1])
    with pytest.raises(TypeError, match="integer labels"):
        collect(net, x, torch.zeros(4))
    with pytest.raises(TypeError, match=r"\.skip .* and \.branch"):
        collect(net, x, [0, 1, 2, 0], blocks=[net.embed])
    with pytest.raises(ValueError, match="submodule"):
        collect(net, x, [0, 1, 2, 0], blocks=[_mlp().blocks[0]])
    with pytest.raises(ValueError, match="loss must be one of"):
        collect(net, x, [0, 1, 2, 0], loss="hinge")


def test_refinement_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None; import ramodel.refinement, ramodel.sequences; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok"
