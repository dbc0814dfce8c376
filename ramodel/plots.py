"""Figures for RA: alignment heat map, depth scaling, spectra, trajectories, and the paper's four figures
(:func:`ra_trajectories`, :func:`ra_alignment`, :func:`ra_spectra`, :func:`ra_depth`) with panels side by side.

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

__all__ = ["alignment_blocks", "alignment_heatmap", "depth_scaling", "ra_alignment", "ra_depth", "ra_spectra",
           "ra_trajectories", "singular_value_spectra", "trajectories"]


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
        ax.semilogy(idx, np.maximum(S[l], floor), "o-", ms=3, color=colours[l],
                    label=f"layer {l + 1}" if S.shape[0] <= 8 else None)
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


# --------------------------------------------------------------- the paper's four figures
#
# Each takes ``panels``, a mapping from a panel title (e.g. "identity skips", "no skips") to
# that panel's data, and draws the panels side by side with shared scales, so a network and
# its counterfactual are compared at a glance.


def _panels(panels, what: str) -> list:
    if not hasattr(panels, "items") or not len(panels):
        raise TypeError(f"panels must be a non-empty mapping from a title to {what}, got {type(panels).__name__}")
    return list(panels.items())


def ra_trajectories(panels, *, inputs: int = 60, seed: int = 0, components: int = 2) -> Figure:
    """RA1 as in the paper: trajectories ``h_0 .. h_L`` of inputs in the top principal components, coloured by class.

    The principal components are those of all representations of the panel (every layer
    and input together, centred), so straight, equally spaced trajectories show as
    straight lines of evenly spaced points, and class structure as colour.

    Parameters
    ----------
    panels : mapping
        Title -> ``(representations, labels)``: ``(L+1, N, d)`` and ``(N,)`` integers.
    inputs : int, default 60
        Inputs drawn per panel (a seeded random subset).
    seed : int, default 0
    components : {2}, default 2
        Principal components shown (the plane of the top two).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> R = np.cumsum(np.ones((5, 8, 3)), axis=0) * np.arange(1, 9)[None, :, None]
    >>> fig = ra_trajectories({"toy": (R, np.arange(8) % 2)}, inputs=4)
    >>> len(fig.axes)
    1
    """
    if components != 2:
        raise ValueError(f"components must be 2, got {components!r}")
    items = _panels(panels, "(representations, labels)")
    fig = Figure(figsize=(3.6 * len(items), 3.4), layout="constrained")
    axes = fig.subplots(1, len(items), squeeze=False)[0]
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    for ax, (title, value) in zip(axes, items):
        try:
            R, labels = value
        except (TypeError, ValueError):
            raise TypeError(f"panels[{title!r}] must be a pair (representations, labels)") from None
        R = np.asarray(to_numpy(R), dtype=float)
        y = np.asarray(to_numpy(labels)).astype(int)
        if R.ndim != 3 or y.shape != (R.shape[1],):
            raise ValueError(f"panels[{title!r}]: representations must be (L+1, N, d) and labels (N,), "
                             f"got {R.shape} and {y.shape}")
        flat = R.reshape(-1, R.shape[-1])
        centre = flat.mean(axis=0)
        _, s, Vt = np.linalg.svd(flat - centre, full_matrices=False)
        P = (R - centre) @ Vt[:2].T if Vt.shape[0] >= 2 else np.concatenate(
            [(R - centre) @ Vt[:1].T, np.zeros(R.shape[:2] + (1,))], axis=-1)
        share = float(np.sum(s[:2] ** 2) / max(np.sum(s**2), np.finfo(float).tiny))
        pick = np.sort(np.random.default_rng(seed).choice(R.shape[1], size=min(inputs, R.shape[1]), replace=False))
        for n in pick:
            colour = cmap(y[n] % 10)
            ax.plot(P[:, n, 0], P[:, n, 1], "-", color=colour, lw=0.7, alpha=0.8)
            ax.plot(P[:, n, 0], P[:, n, 1], ".", color=colour, ms=3)
        ax.plot(P[0, pick, 0], P[0, pick, 1], "o", mfc="none", mec="k", ms=4, mew=0.6, label="$h_0$")
        ax.set_title(f"{title}\n(top-2 PCs: {share:.0%} of variance)", fontsize="small")
        ax.set_xlabel("PC1", fontsize="small")
        ax.set_ylabel("PC2", fontsize="small")
        ax.tick_params(labelsize="x-small")
        ax.legend(fontsize="x-small", loc="best")
    fig.suptitle("RA1: trajectories across depth, coloured by class", fontsize="medium")
    return fig


def alignment_blocks(J, k: int) -> np.ndarray:
    """``|U_i^T J_j V_i|`` for all layer pairs, restricted to the top ``k`` singular vectors.

    Parameters
    ----------
    J : array, shape (L, d, d)
        The Jacobians of one input.
    k : int
        Singular vectors kept, ``1 <= k <= d``.

    Returns
    -------
    ndarray, shape (L, L, k, k)
        Block ``[i, j]`` is ``|U_i[:, :k]^T J_j V_i[:, :k]| / sigma_1(J_j)`` (each column of
        blocks on the scale of its own Jacobian, so deep layers with small gains stay
        visible): diagonal blocks ``[i, i]`` are ``diag(sigma_1..k(J_i)) / sigma_1(J_i)``;
        under RA2 every block is close to ``diag(sigma(J_j)) / sigma_1(J_j)``.

    Examples
    --------
    >>> import numpy as np
    >>> B = alignment_blocks(np.stack([np.diag([2.0, 1.0, 0.0])] * 3), 2)
    >>> B.shape, B[0, 2].round(3).tolist()
    ((3, 3, 2, 2), [[1.0, 0.0], [0.0, 0.5]])
    """
    J = np.asarray(to_numpy(J), dtype=float)
    if J.ndim != 3 or J.shape[1] != J.shape[2]:
        raise ValueError(f"J must have shape (L, d, d), got {J.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= J.shape[1]:
        raise ValueError(f"k must be an integer in [1, {J.shape[1]}], got {k!r}")
    U, S, Vt = np.linalg.svd(J)
    Uk, Vk = U[:, :, :k], np.swapaxes(Vt[:, :k, :], 1, 2)
    blocks = np.abs(np.einsum("ida,jde,ieb->ijab", Uk, J, Vk))
    top = S[:, 0]
    scale = np.where(top > 0, top, 1.0)
    return blocks / scale[None, :, None, None]


def ra_alignment(panels, *, k: int | None = None) -> Figure:
    """RA2 as in the paper: the grid of ``|U_i^T J_j V_i|`` over layers ``i, j``, top ``k`` only.

    Parameters
    ----------
    panels : mapping
        Title -> array ``(L, L, k, k)`` from :func:`alignment_blocks`.
    k : int, optional
        Only for the title; read from the arrays.

    Returns
    -------
    matplotlib.figure.Figure
        One image per panel: block row ``i``, block column ``j``; diagonal blocks mean
        the top singular vectors of layer ``i`` diagonalise every other layer's Jacobian.

    Examples
    --------
    >>> import numpy as np
    >>> fig = ra_alignment({"toy": alignment_blocks(np.stack([np.eye(3)] * 2), 2)})
    >>> len(fig.axes)
    2
    """
    items = _panels(panels, "an (L, L, k, k) array")
    fig = Figure(figsize=(3.8 * len(items) + 0.8, 3.6), layout="constrained")
    axes = fig.subplots(1, len(items), squeeze=False)[0]
    im = None
    for ax, (title, B) in zip(axes, items):
        B = np.asarray(to_numpy(B), dtype=float)
        if B.ndim != 4 or B.shape[0] != B.shape[1] or B.shape[2] != B.shape[3]:
            raise ValueError(f"panels[{title!r}] must have shape (L, L, k, k), got {B.shape}")
        L, kk = B.shape[0], B.shape[2]
        image = B.transpose(0, 2, 1, 3).reshape(L * kk, L * kk)
        im = ax.imshow(image, vmin=0.0, vmax=1.0, cmap="magma", interpolation="nearest")
        for t in range(1, L):
            ax.axhline(t * kk - 0.5, color="w", lw=0.3)
            ax.axvline(t * kk - 0.5, color="w", lw=0.3)
        ticks = [(t + 0.5) * kk - 0.5 for t in range(L)]
        step = max(1, L // 8)
        ax.set_xticks(ticks[::step], [str(t + 1) for t in range(L)][::step], fontsize="x-small")
        ax.set_yticks(ticks[::step], [str(t + 1) for t in range(L)][::step], fontsize="x-small")
        ax.set_xlabel("Jacobian of layer j", fontsize="small")
        ax.set_ylabel("singular vectors of layer i", fontsize="small")
        ax.set_title(title, fontsize="small")
    fig.colorbar(im, ax=list(axes), label=r"$|U_i^T J_j V_i|\,/\,\sigma_1(J_j)$", shrink=0.85)
    kk = items[0][1].shape[2] if k is None else k
    fig.suptitle(f"RA2: alignment of the top-{kk} singular vectors across depth", fontsize="medium")
    return fig


def ra_spectra(panels, *, classes: int | None = None, top: int | None = None) -> Figure:
    """RA3 as in the paper: singular values of every layer's Jacobian, one line per layer.

    Parameters
    ----------
    panels : mapping
        Title -> ``S (L, r)``, each row a layer's singular values in descending order (e.g.
        the median over inputs).
    classes : int, optional
        Marks ``C`` with a vertical line (RA3: rank at most C).
    top : int, optional
        Show the first ``top`` values only.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> fig = ra_spectra({"a": np.ones((3, 4)), "b": np.ones((3, 4))}, classes=2)
    >>> len(fig.axes)
    2
    """
    items = _panels(panels, "an (L, r) array of singular values")
    fig = Figure(figsize=(3.8 * len(items), 3.4), layout="constrained")
    axes = fig.subplots(1, len(items), squeeze=False)[0]
    for ax, (title, S) in zip(axes, items):
        S = np.asarray(to_numpy(S), dtype=float)
        if S.ndim != 2:
            raise ValueError(f"panels[{title!r}] must have shape (L, r), got {S.shape}")
        if top is not None:
            S = S[:, :top]
        L = S.shape[0]
        idx = np.arange(1, S.shape[1] + 1)
        for l in range(L):
            t = l / max(1, L - 1)
            ax.plot(idx, S[l], "o-", ms=2.5, lw=0.8, color=(0.1 + 0.8 * t, 0.3, 0.9 - 0.8 * t),
                    label=f"layer {l + 1}" if l in (0, L - 1) else None)
        if classes is not None:
            ax.axvline(classes + 0.5, color="k", ls=":", lw=1, label=f"C = {classes}")
        ax.set_xlabel("index i", fontsize="small")
        ax.set_ylabel(r"$\sigma_i(J_l)$", fontsize="small")
        ax.set_title(title, fontsize="small")
        ax.tick_params(labelsize="x-small")
        ax.legend(fontsize="x-small")
    fig.suptitle("RA3: singular values of the layer Jacobians", fontsize="medium")
    return fig


def _depth_data(title, value):
    if hasattr(value, "depths") and hasattr(value, "sigma1"):
        fit = getattr(value, "fit", None)
        return (np.asarray(value.depths, dtype=float), np.asarray(value.sigma1, dtype=float),
                None if fit is None else fit.slope, None if fit is None else fit.intercept,
                None if fit is None else (fit.ci_low, fit.ci_high))
    if hasattr(value, "get"):
        return (np.asarray(value["depths"], dtype=float), np.asarray(value["sigma1"], dtype=float),
                value.get("slope"), value.get("intercept"), value.get("ci"))
    raise TypeError(f"panels[{title!r}] must be a DepthScaling or a mapping with 'depths' and 'sigma1'")


def ra_depth(panels) -> Figure:
    """RA4 as in the paper: ``sigma_1`` and ``L sigma_1`` against depth ``L``, one column per panel.

    Parameters
    ----------
    panels : mapping
        Title -> a :class:`ramodel.scaling.DepthScaling` (its models and fit are drawn) or
        a mapping with ``depths`` and ``sigma1`` (one entry per model; seeds as repeated
        depths) and optional ``slope``, ``intercept`` and ``ci``.

    Returns
    -------
    matplotlib.figure.Figure
        Top row: mean ``sigma_1`` on log-log axes with the fit and a ``1/L`` reference;
        bottom row: ``L sigma_1``, flat under RA4.

    Examples
    --------
    >>> fig = ra_depth({"toy": {"depths": [4, 8, 16], "sigma1": [0.4, 0.2, 0.1]}})
    >>> len(fig.axes)
    2
    """
    items = _panels(panels, "depth data")
    fig = Figure(figsize=(3.6 * len(items), 5.4), layout="constrained")
    axes = fig.subplots(2, len(items), squeeze=False)
    for c, (title, value) in enumerate(items):
        depths, s1, slope, intercept, ci = _depth_data(title, value)
        if depths.shape != s1.shape or depths.ndim != 1 or not depths.size:
            raise ValueError(f"panels[{title!r}]: depths and sigma1 must be 1-D of equal length")
        top, bottom = axes[0, c], axes[1, c]
        top.loglog(depths, s1, "o", ms=4, alpha=0.8, label="models")
        bottom.semilogx(depths, depths * s1, "o", ms=4, alpha=0.8)
        L = np.geomspace(depths.min(), depths.max(), 50)
        if slope is not None and intercept is not None:
            text = f"slope {slope:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci is not None else "")
            top.loglog(L, np.exp(intercept) * L**slope, "-", lw=1, label=text)
            bottom.semilogx(L, L * np.exp(intercept) * L**slope, "-", lw=1)
        ref = float(np.exp(np.mean(np.log(np.maximum(s1 * depths, np.finfo(float).tiny)))))
        top.loglog(L, ref / L, ":", color="gray", label="1/L")
        for ax in (top, bottom):
            ticks = np.unique(depths)
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.tick_params(labelsize="x-small")
        top.set_title(title, fontsize="small")
        top.set_ylabel(r"mean $\sigma_1(J_l)$", fontsize="small")
        top.legend(fontsize="x-small")
        bottom.set_ylim(bottom=0)
        bottom.set_xlabel("depth L", fontsize="small")
        bottom.set_ylabel(r"$L\,\sigma_1$", fontsize="small")
    fig.suptitle(r"RA4: $\sigma_1 \sim 1/L$ ($L \sigma_1$ flat)", fontsize="medium")
    return fig
