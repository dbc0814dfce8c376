"""RA1: the trajectories ``h_0, ..., h_L`` of the representations lie on lines with equal steps."""

from __future__ import annotations

import numpy as np

from ..backend import get_namespace
from ._arrays import _float_array, _host, _permute, _top_singular
from ._results import Metric
from ._summaries import _metric


def _check_representations(representations, name: str = "representations"):
    R = _float_array(name, representations, (3,), "(L+1, N, d)")
    if R.shape[0] < 2:
        raise ValueError(
            f"{name} must hold h_0 .. h_L with L >= 1, i.e. shape (L+1, N, d) with L+1 >= 2; got {tuple(R.shape)}"
        )
    return R


def _trajectory_raw(representations) -> dict[str, np.ndarray]:
    """Per-input RA1 quantities, shape (N,) each, NaN for a constant trajectory."""
    R = _check_representations(representations)
    xp = get_namespace(R)
    L = R.shape[0] - 1
    T = _permute(R, (1, 0, 2), xp)  # (N, L+1, d): one trajectory per input
    # Relative to h_0 first: a constant trajectory then centres to exact zeros.
    T0 = T - T[:, :1, :]
    Tc = T0 - xp.mean(T0, axis=1, keepdims=True)
    total = _host(xp.sum(Tc * Tc, axis=(1, 2)))  # |T_n|_F^2
    top = _top_singular(Tc, 1)
    s1 = _host(top.S[:, 0])
    # The positions along the first principal direction are u * s1; u sums to zero
    # because Tc is centred, so R^2 of the fit against l is corr(u, l)^2.
    u = top.U[:, :, 0]
    steps_l = xp.asarray([float(i) - L / 2 for i in range(L + 1)], dtype=R.dtype)
    proj = _host(xp.sum(u * xp.expand_dims(steps_l, axis=0), axis=1))
    lc2 = sum((i - L / 2) ** 2 for i in range(L + 1))
    dh = R[1:, ...] - R[:-1, ...]
    step = _host(xp.sqrt(xp.sum(dh * dh, axis=-1)))  # (L, N)

    moving = (total > 0) & (step.max(axis=0) > 0)
    nan = np.full(total.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Clipped at 1: rounding can put a perfect line a few ulps above.
        coll = np.where(moving, s1**2 / np.where(moving, total, 1.0), nan)
        r2 = np.where(moving, proj**2 / lc2, nan)
        mean_step = step.mean(axis=0)
        cv = step.std(axis=0) / np.where(moving, mean_step, 1.0)
        equi = np.where(moving, 1.0 - cv, nan)
        ratio = np.where(moving, step.max(axis=0) / step.min(axis=0), nan)
    return {
        "collinearity": np.minimum(coll, 1.0),
        "equispacing": equi,
        "step_ratio": ratio,
        "progress_r2": np.minimum(r2, 1.0),
    }


_RA1_WHY = " (a trajectory that does not move has no direction)"


def _ra1_metric(name: str, values: np.ndarray) -> Metric:
    return _metric(name, values, statistic="median", samples_over="inputs", why=_RA1_WHY)


def collinearity(representations) -> Metric:
    """RA1: share of each trajectory's variance along its first principal direction.

    ``collinearity_n = sigma_1^2 / sum_i sigma_i^2`` of the centred trajectory
    ``T_n = [h_0(x_n), ..., h_L(x_n)]``; 1 means the representations lie on a line.

    Parameters
    ----------
    representations : array, shape (L+1, N, d)
        ``h_0 .. h_L`` for every input, ``L >= 1``.

    Returns
    -------
    Metric
        ``value`` is the median over inputs; ``samples`` are per input. Inputs whose
        trajectory is constant are excluded.

    Examples
    --------
    >>> import numpy as np
    >>> h = np.arange(4.0)[:, None, None] * np.ones((4, 2, 3))   # equal steps on a line
    >>> round(collinearity(h).value, 12)
    1.0
    """
    return _ra1_metric("collinearity", _trajectory_raw(representations)["collinearity"])


def equispacing(representations) -> Metric:
    """RA1: ``1 - CV`` of the step norms ``|h_l - h_{l-1}|``, l = 1..L, per input.

    CV is the population standard deviation over the mean. 1 means equal steps; the
    value can be negative for very uneven steps.

    Parameters
    ----------
    representations : array, shape (L+1, N, d)

    Returns
    -------
    Metric
        Median over inputs.

    Examples
    --------
    >>> import numpy as np
    >>> h = np.array([0.0, 1.0, 3.0])[:, None, None] * np.ones((3, 1, 2))   # steps 1, 2
    >>> round(equispacing(h).value, 12)
    0.666666666667
    """
    return _ra1_metric("equispacing", _trajectory_raw(representations)["equispacing"])


def step_ratio(representations) -> Metric:
    """RA1: largest step norm over the smallest, per input (``inf`` if a step is zero).

    Parameters
    ----------
    representations : array, shape (L+1, N, d)

    Returns
    -------
    Metric
        Median over inputs.

    Examples
    --------
    >>> import numpy as np
    >>> h = np.array([0.0, 1.0, 3.0])[:, None, None] * np.ones((3, 1, 2))
    >>> step_ratio(h).value
    2.0
    """
    return _ra1_metric("step_ratio", _trajectory_raw(representations)["step_ratio"])


def progress_r2(representations) -> Metric:
    """RA1: R^2 of the position along the first principal direction against ``l``.

    1 means uniform motion along the line.

    Parameters
    ----------
    representations : array, shape (L+1, N, d)

    Returns
    -------
    Metric
        Median over inputs.

    Examples
    --------
    >>> import numpy as np
    >>> h = np.arange(5.0)[:, None, None] * np.ones((5, 2, 3))
    >>> round(progress_r2(h).value, 12)
    1.0
    """
    return _ra1_metric("progress_r2", _trajectory_raw(representations)["progress_r2"])


def trajectory_metrics(representations) -> dict[str, Metric]:
    """All RA1 metrics from one pass: collinearity, equispacing, step_ratio, progress_r2.

    Parameters
    ----------
    representations : array, shape (L+1, N, d)

    Returns
    -------
    dict of str to Metric

    Examples
    --------
    >>> import numpy as np
    >>> h = np.arange(4.0)[:, None, None] * np.ones((4, 2, 3))
    >>> sorted(trajectory_metrics(h))
    ['collinearity', 'equispacing', 'progress_r2', 'step_ratio']
    """
    raw = _trajectory_raw(representations)
    return {name: _ra1_metric(name, values) for name, values in raw.items()}
