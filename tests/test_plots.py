"""Figures: returned, never shown, no global pyplot state, bad shapes refused."""

import io

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import ramodel  # noqa: E402
from ramodel import plots  # noqa: E402


@pytest.fixture(scope="module")
def sim():
    return ramodel.simulate(depth=5, classes=3, width=6, samples_per_class=3, seed=0)


def _png_roundtrip(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    img = matplotlib.image.imread(buf, format="png")
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    return img


def test_every_figure_is_a_fresh_figure_without_pyplot_state(sim):
    before = plt.get_fignums()
    S = np.linalg.svd(sim.jacobians, compute_uv=False)
    figs = [
        plots.alignment_heatmap(np.eye(5)),
        plots.depth_scaling(np.array([2.0, 4, 8]), np.array([0.4, 0.2, 0.1]), slope=-1.0, intercept=np.log(0.8), ci=(-1.1, -0.9)),
        plots.singular_value_spectra(S, classes=3),
        plots.trajectories(sim.representations, labels=sim.labels, inputs=3),
    ]
    assert plt.get_fignums() == before
    for fig in figs:
        assert isinstance(fig, Figure)
        img = _png_roundtrip(fig)
        assert np.ptp(img[..., :3]) > 0  # something was drawn


def test_inputs_are_not_mutated(sim):
    R = np.array(sim.representations)
    R.setflags(write=False)
    plots.trajectories(R, inputs=2)
    K = np.eye(3)
    K.setflags(write=False)
    plots.alignment_heatmap(K)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: plots.alignment_heatmap(np.zeros((2, 3))), r"K must have shape \(L, L\)"),
        (lambda: plots.depth_scaling(np.ones(3), np.ones(2)), "depths and sigma1"),
        (lambda: plots.singular_value_spectra(np.ones(3)), r"S must have shape \(L, r\)"),
        (lambda: plots.trajectories(np.ones((3, 4))), r"representations must have shape \(L\+1, N, d\)"),
    ],
)
def test_bad_shapes_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
