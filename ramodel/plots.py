"""Figures for RA: alignment heat map, depth scaling, spectra, trajectories.

Design constraints: every function builds a fresh :class:`matplotlib.figure.Figure`
(never ``pyplot``), so there is no global state and nothing is shown. Save a figure with
``fig.savefig(path)``. Inputs are plain arrays (NumPy or anything :func:`to_numpy`
converts), so the same functions serve simulations and trained networks.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from .backend import to_numpy

__all__ = ["alignment_heatmap", "depth_scaling", "singular_value_spectra", "trajectories"]


def alignment_heatmap(K, *, title: str = "RA2: alignment K[i, j]", vmax: float | None = None) -> Figure:
    """Heat map of the RA2 alignment matrix ``K[i, j] = |U_i^T J_j V_i|_F / |S_j|_2``.

    Parameters
    ----------
    K : array, shape (L, L)
        Row ``i`` is the top pair of layer ``i``, column ``j`` the Jacobian of layer ``j``.
    title : str
    vmax : float, optional
        Upper end of the colour scale. Default: ``max(1, K.max())``.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> fig = alignment_heatmap(np.eye(4))
    >>> len(fig.axes)
    2
    """
    K = np.asarray(to_numpy(K), dtype=float)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"K must have shape (L, L), got {K.shape}")
    fig = Figure(figsize=(4.6, 4))
    ax = fig.add_subplot()
    L = K.shape[0]
    im = ax.imshow(K, vmin=0.0, vmax=vmax if vmax is not None else max(1.0, float(K.max())), cmap="viridis",
                   extent=(0.5, L + 0.5, L + 0.5, 0.5))
    ax.set_xlabel("Jacobian of layer j")
    ax.set_ylabel("top singular pair of layer i")
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


def depth_scaling(depths, sigma1, *, slope=None, intercept=None, ci=None, label: str = "models", predicted=None,
                  predicted_label: str = "T7 prediction") -> Figure:
    """RA4: mean top singular value against depth on log-log axes, with the fitted slope.

    Parameters
    ----------
    depths : array, shape (n,)
    sigma1 : array, shape (n,)
        Mean ``sigma_1`` of each model.
    slope, intercept : float, optional
        Fit ``log sigma1 = intercept + slope log L``; drawn when given.
    ci : (float, float), optional
        Confidence interval of the slope, shown in the legend.
    label : str
    predicted : (array, array), optional
        ``(depths, sigma1)`` of a predicted curve drawn beside the measured points, e.g.
        ``(L, ramodel.depth_law.predicted_sigma1(L, branch_factors=1, ...))``.
    predicted_label : str
        Legend entry of the predicted curve.

    Returns
    -------
    matplotlib.figure.Figure
    """
    depths = np.asarray(to_numpy(depths), dtype=float)
    sigma1 = np.asarray(to_numpy(sigma1), dtype=float)
    if depths.shape != sigma1.shape or depths.ndim != 1:
        raise ValueError(f"depths and sigma1 must be 1-D of equal length, got {depths.shape} and {sigma1.shape}")
    if predicted is not None:
        if not (isinstance(predicted, tuple | list) and len(predicted) == 2):
            raise ValueError("predicted must be a pair (depths, sigma1) of 1-D arrays of equal length")
        pL, ps = (np.asarray(to_numpy(a), dtype=float) for a in predicted)
        if pL.shape != ps.shape or pL.ndim != 1:
            raise ValueError(f"predicted must be a pair of 1-D arrays of equal length, got {pL.shape} and {ps.shape}")
    fig = Figure(figsize=(4.8, 3.8))
    ax = fig.add_subplot()
    ax.loglog(depths, sigma1, "o", label=label)
    L = np.geomspace(depths.min(), depths.max(), 50)
    if slope is not None and intercept is not None:
        text = f"fit: slope {slope:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci is not None else "")
        ax.loglog(L, np.exp(intercept) * L**slope, "-", label=text)
    if predicted is not None:
        ax.loglog(pL, ps, "--", label=predicted_label)
    ax.loglog(L, sigma1[0] * depths[0] / L, ":", color="gray", label="1/L reference")
    ticks = np.unique(depths)
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("depth L")
    ax.set_ylabel(r"mean $\sigma_1(J_l)$")
    ax.set_title("RA4: top singular value against depth")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def singular_value_spectra(S, *, classes: int | None = None, top: int | None = None) -> Figure:
    """Singular values of every layer's Jacobian, one line per layer (RA3).

    Parameters
    ----------
    S : array, shape (L, r)
        Singular values per layer, descending (e.g. ``numpy.linalg.svd(J, compute_uv=False)``).
    classes : int, optional
        Marks ``C`` with a vertical line.
    top : int, optional
        Show only the first ``top`` values.

    Returns
    -------
    matplotlib.figure.Figure
    """
    S = np.asarray(to_numpy(S), dtype=float)
    if S.ndim != 2:
        raise ValueError(f"S must have shape (L, r), got {S.shape}")
    if top is not None:
        S = S[:, :top]
    fig = Figure(figsize=(4.8, 3.8))
    ax = fig.add_subplot()
    floor = np.finfo(float).tiny
    idx = np.arange(1, S.shape[1] + 1)
    colours = [(0.1 + 0.8 * l / max(1, S.shape[0] - 1), 0.3, 0.9 - 0.8 * l / max(1, S.shape[0] - 1)) for l in range(S.shape[0])]
    for l in range(S.shape[0]):
        ax.semilogy(idx, np.maximum(S[l], floor), "o-", ms=3, color=colours[l], label=f"layer {l + 1}" if S.shape[0] <= 8 else None)
    if classes is not None:
        ax.axvline(classes + 0.5, color="k", ls=":", label=f"C = {classes}")
    ax.set_xlabel("index i")
    ax.set_ylabel(r"$\sigma_i(J_l)$")
    ax.set_title("RA3: singular-value spectra per layer")
    ax.legend(fontsize="x-small")
    fig.tight_layout()
    return fig


def trajectories(representations, *, labels=None, inputs: int = 6, seed: int = 0) -> Figure:
    """RA1: trajectories ``h_0 .. h_L`` of a few inputs, each projected on its own top two
    principal directions.

    A trajectory on a line shows as points along the first axis; equal steps as equal gaps.

    Parameters
    ----------
    representations : array, shape (L+1, N, d)
    labels : array, shape (N,), optional
        Colours by class when given.
    inputs : int, default 6
        How many inputs to draw (chosen with ``seed``).
    seed : int, default 0

    Returns
    -------
    matplotlib.figure.Figure
    """
    R = np.asarray(to_numpy(representations), dtype=float)
    if R.ndim != 3:
        raise ValueError(f"representations must have shape (L+1, N, d), got {R.shape}")
    N = R.shape[1]
    pick = np.sort(np.random.default_rng(seed).choice(N, size=min(inputs, N), replace=False))
    cols = int(np.ceil(len(pick) / 2)) if len(pick) > 1 else 1
    rows = 2 if len(pick) > 1 else 1
    fig = Figure(figsize=(3.2 * cols, 3.0 * rows), layout="constrained")
    for j, n in enumerate(pick):
        ax = fig.add_subplot(rows, cols, j + 1)
        T = R[:, n, :]
        Tc = T - T.mean(axis=0)
        _, s, Vt = np.linalg.svd(Tc, full_matrices=False)
        P = Tc @ Vt[:2].T if Vt.shape[0] >= 2 else np.column_stack([Tc @ Vt[0], np.zeros(len(T))])
        share = s[0] ** 2 / max(np.sum(s**2), np.finfo(float).tiny)
        ax.plot(P[:, 0], P[:, 1], "-", color="0.6", lw=0.8)
        sc = ax.scatter(P[:, 0], P[:, 1], c=np.arange(len(T)), cmap="viridis", s=14, zorder=3)
        title = f"input {n}" + (f" (class {int(to_numpy(labels)[n])})" if labels is not None else "")
        ax.set_title(f"{title}\nPC1 share {share:.3f}", fontsize="small")
        ax.set_xlabel("PC1", fontsize="small")
        ax.set_ylabel("PC2", fontsize="small")
        ax.tick_params(labelsize="x-small")
        # Equal scales: a line must look like a line, not a parabola stretched along PC2.
        ax.set_aspect("equal", adjustable="datalim")
    fig.colorbar(sc, ax=fig.axes, label="layer l", shrink=0.8)
    fig.suptitle("RA1: trajectories across depth", fontsize="medium")
    return fig
