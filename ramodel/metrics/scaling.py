"""RA4: the top singular value is shared equally by the layers and falls like a power of the depth."""

from __future__ import annotations

import numpy as np

from ..scaling import DepthLawFit, fit_depth_law
from ._arrays import _host
from ._results import Metric, MetricUndefinedError, _frozen
from ._stack import _Stack, _stack
from ._summaries import _metric, _per_matrix_metric

#: The RA4 depth-law fit; one class, defined in :mod:`ramodel.scaling`.
DepthSlopeFit = DepthLawFit


# ----------------------------------------------------------------------- RA4
def _sigma1_cv_metric(st: _Stack) -> Metric:
    s1 = _host(st.S[..., 0])  # (L, N), divided by st.scale: the CV is scale-free
    mean = s1.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        cv = np.where(mean > 0, s1.std(axis=0) / np.where(mean > 0, mean, 1.0), np.nan)
    why = " (every Jacobian of the input is zero)"
    if st.shared:
        if np.isnan(cv[0]):
            raise MetricUndefinedError(f"sigma1_cv is undefined{why}")
        return Metric("sigma1_cv", float(cv[0]), "value", detail=_frozen(s1[:, 0] * st.scale),
                      detail_axes=("layer",))
    return _metric("sigma1_cv", cv, statistic="median", samples_over="inputs", detail=s1.mean(axis=1) * st.scale,
                   detail_axes=("layer",), why=why)


def _sigma1_mean_metric(st: _Stack) -> Metric:
    return _per_matrix_metric("sigma1_mean", _host(st.S[..., 0]) * st.scale, st.shared, statistic="mean")


def sigma1_cv(J) -> Metric:
    """RA4 within one model: CV (std / mean, population) of ``sigma_1(J_l)`` over layers.

    Small when every layer carries an equal share of the end-to-end map.

    Parameters
    ----------
    J : array or tuple (U, S, V)
        As in :func:`alignment_lr`.

    Returns
    -------
    Metric
        Per-input Jacobians: the median over inputs of each input's CV over layers;
        input-independent ones: the single CV. ``detail`` is ``sigma_1`` per layer
        (mean over inputs).

    Examples
    --------
    >>> import numpy as np
    >>> J = np.stack([np.eye(2), 3 * np.eye(2)])
    >>> sigma1_cv(J).value
    0.5
    """
    return _sigma1_cv_metric(_stack(J, k=1, full=False))


def sigma1_mean(J) -> Metric:
    """RA4: ``sigma_bar_1``, the mean top singular value over layers (and inputs).

    This is the per-model number that :func:`fit_depth_slope` regresses on depth.

    Parameters
    ----------
    J : array or tuple (U, S, V)

    Returns
    -------
    Metric
        Mean over inputs of the per-input mean over layers (or mean over layers).

    Examples
    --------
    >>> import numpy as np
    >>> sigma1_mean(np.stack([np.eye(2), 3 * np.eye(2)])).value
    2.0
    """
    return _sigma1_mean_metric(_stack(J, k=1, full=False))


def fit_depth_slope(depths, sigma1, *, confidence: float = 0.95) -> DepthSlopeFit:
    """RA4 across models: fit ``log sigma_bar_1 = a + b log L`` by least squares.

    The same function as :func:`ramodel.scaling.fit_depth_law` (kept under this name for
    existing callers); :func:`ramodel.depth_scaling` adds the grouping and the verdict.

    Examples
    --------
    >>> fit = fit_depth_slope([2, 4, 8, 16], [0.5, 0.25, 0.125, 0.0625])
    >>> round(fit.slope, 12), fit.within()
    (-1.0, True)
    """
    return fit_depth_law(depths, sigma1, confidence=confidence)
