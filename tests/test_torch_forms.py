"""Each structured LinearMap provides its own torch form; EntangledSkip applies it as it is."""

from dataclasses import dataclass

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import float64_default  # noqa: E402
from ramodel import mappings  # noqa: E402
from ramodel.nets import EntangledSkip  # noqa: E402

CASES = [
    ("permutation", {"signed": True}, "permutation"),
    ("block_orthogonal", {"block": 3}, "block_diagonal"),
    ("correlation", {"kind": "banded"}, "banded"),
    ("correlation", {"kind": "block"}, "block_equicorrelation"),
]


def _form_product(lmap, x):
    """Apply ``lmap.torch_form()`` the way a module does, with its buffers on a plain holder."""
    form = lmap.torch_form()

    class Holder:
        pass

    holder = Holder()
    for name, value in form.buffers.items():
        value = np.asarray(value)
        setattr(holder, name, torch.as_tensor(value, dtype=torch.long if value.dtype.kind in "iu" else torch.float64))
    for name, value in form.settings.items():
        setattr(holder, name, value)
    return form.structure, form.apply(x, holder)


@pytest.mark.parametrize(("family", "params", "structure"), CASES)
@pytest.mark.parametrize("width", [1, 7, 10])
def test_torch_form_applies_the_dense_matrix(family, params, structure, width):
    lmap = mappings.get(family).structured(width, seed=3, **params)
    x = torch.randn(4, 2, width, dtype=torch.float64, generator=torch.Generator().manual_seed(width))
    name, out = _form_product(lmap, x)
    assert name == structure
    torch.testing.assert_close(out, x @ torch.from_numpy(lmap.dense()).T, rtol=1e-13, atol=1e-13)


def test_scaled_map_folds_its_factor_and_dense_maps_have_no_form():
    base = mappings.get("permutation").structured(6, seed=1, signed=True)
    scaled = mappings.ScaledMap(mappings.ScaledMap(base, 0.5), -3.0)
    x = torch.randn(5, 6, dtype=torch.float64)
    name, out = _form_product(scaled, x)
    assert name == "permutation"
    torch.testing.assert_close(out, x @ torch.from_numpy(-1.5 * base.dense()).T, rtol=0, atol=0)
    assert mappings.DenseMap(np.eye(3)).torch_form() is None
    assert mappings.ScaledMap(mappings.DenseMap(2 * np.eye(3)), 2.0).torch_form() is None


@dataclass(frozen=True, eq=False)
class _Reversal(mappings.LinearMap):
    """A new structured map: reverse the features (nets.py knows nothing of it)."""

    size: int

    @property
    def width(self):
        return self.size

    def dense(self):
        return np.eye(self.size)[::-1].copy()

    def _apply(self, h, xp):
        return xp.flip(h, axis=-1)

    def torch_form(self, factor=1.0):
        return mappings.TorchForm("reversal", {"scale": np.array([factor])}, lambda x, m: m.scale[0] * x.flip(-1))


def test_a_new_linear_map_needs_no_change_in_entangled_skip():
    with float64_default():
        skip = EntangledSkip(5, mappings.ScaledMap(_Reversal(5), 2.0), dim=1)
    assert skip.structure == "reversal"
    assert "scale" in dict(skip.named_buffers()) and skip.scale.dtype == torch.float64
    h = torch.randn(3, 5, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(skip(h), 2.0 * h.flip(1), rtol=0, atol=0)
    assert skip.float().scale.dtype == torch.float32  # a buffer: moved and cast with the module
