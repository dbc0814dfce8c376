"""RA3: the Jacobians have numerical rank at most C, with their energy in the top C."""

from __future__ import annotations

import numpy as np

from .._source import RANK_TAU as DEFAULT_TAU
from .._validation import check_int, check_positive_float
from ._arrays import _host
from ._results import Metric, MetricUndefinedError
from ._stack import _ZERO_WHY, _Stack, _stack
from ._summaries import _per_matrix_metric
from .alignment import _attempt


def _check_tau(tau: float) -> float:
    tau = check_positive_float("tau", tau)
    if tau >= 1:
        raise ValueError(f"tau must be in (0, 1), got {tau}")
    return tau


def _spectrum(st: _Stack, tau: float, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Host singular values (L, N, kf) and |J|_F^2 (L, N), or raise if factors miss some."""
    S = _host(st.S)
    if st.layout == "dense":
        return S, _host(st.frob2)
    if not st.complete:
        determined = (S[..., -1] < tau * S[..., 0]) | (S[..., 0] == 0)
        if not determined.all():
            bad = int((~determined).sum())
            raise MetricUndefinedError(
                f"{name} needs every singular value above tau * sigma_1, but the factors hold only "
                f"k = {st.kf} of d = {st.d} and sigma_k >= tau * sigma_1 (tau = {tau:g}) for {bad} of "
                f"{determined.size} matrices; export more triplets (k > rank) or dense Jacobians"
            )
    return S, np.sum(S**2, axis=-1)


def _factor_note(st: _Stack, tau: float) -> str:
    if st.layout == "dense" or st.complete:
        return ""
    return (f"from factors (k = {st.kf} < d = {st.d}): the omitted singular values are each below "
            f"tau * sigma_1 = {tau:g} sigma_1")


def _rank_raw(S: np.ndarray, tau: float) -> np.ndarray:
    return np.sum((S >= tau * S[..., :1]) & (S > 0), axis=-1).astype(np.float64)


def _stable_rank_raw(S: np.ndarray, frob2: np.ndarray) -> np.ndarray:
    s1 = S[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s1 > 0, frob2 / np.where(s1 > 0, s1**2, 1.0), np.nan)


def _energy_raw(S: np.ndarray, frob2: np.ndarray, classes: int) -> np.ndarray:
    top = np.sum(S[..., :classes] ** 2, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(frob2 > 0, np.minimum(top / np.where(frob2 > 0, frob2, 1.0), 1.0), np.nan)


def numerical_rank(J, *, tau: float = DEFAULT_TAU) -> Metric:
    """RA3: ``numerical_rank(J) = #{sigma_i >= tau * sigma_1}`` (0 for a zero matrix).

    Parameters
    ----------
    J : array or tuple (U, S, V)
        Dense Jacobians ``(L, [N,] d, d)`` or factors; factors must determine the
        spectrum (module docstring), else :class:`MetricUndefinedError`.
    tau : float, default 1e-3
        Relative threshold, in (0, 1) (METRICS.md default).

    Returns
    -------
    Metric
        Median over every matrix (layer x input), or over layers; ``detail`` is the
        per-layer median over inputs.

    Examples
    --------
    >>> import numpy as np
    >>> numerical_rank(np.stack([np.diag([1.0, 1e-2, 1e-4])])).value
    2.0
    """
    tau = _check_tau(tau)
    st = _stack(J, k=None, full=True)
    S, _ = _spectrum(st, tau, "numerical_rank")
    return _per_matrix_metric("numerical_rank", _rank_raw(S, tau), st.shared, statistic="median",
                              over="matrices", note=_factor_note(st, tau))


def stable_rank(J, *, tau: float = DEFAULT_TAU) -> Metric:
    """RA3: ``stable_rank(J) = |J|_F^2 / |J|_2^2``.

    Parameters
    ----------
    J : array or tuple (U, S, V)
        As in :func:`numerical_rank`. Zero matrices are excluded.
    tau : float, default 1e-3
        Only used to decide whether factors determine the spectrum.

    Returns
    -------
    Metric
        Median over matrices (or layers).

    Examples
    --------
    >>> import numpy as np
    >>> stable_rank(np.stack([np.diag([2.0, 1.0, 1.0])])).value
    1.5
    """
    tau = _check_tau(tau)
    st = _stack(J, k=None, full=True)
    S, frob2 = _spectrum(st, tau, "stable_rank")
    return _per_matrix_metric("stable_rank", _stable_rank_raw(S, frob2), st.shared, statistic="median",
                              over="matrices", note=_factor_note(st, tau), why=_ZERO_WHY)


def energy_top_c(J, classes: int, *, tau: float = DEFAULT_TAU) -> Metric:
    """RA3: ``energy_top_C = sum_{i <= C} sigma_i^2 / sum_i sigma_i^2``.

    Parameters
    ----------
    J : array or tuple (U, S, V)
        As in :func:`numerical_rank`. Zero matrices are excluded.
    classes : int
        C >= 1.
    tau : float, default 1e-3
        Only used to decide whether factors determine the spectrum.

    Returns
    -------
    Metric
        Named ``energy_top_C``; median over matrices (or layers).

    Examples
    --------
    >>> import numpy as np
    >>> energy_top_c(np.stack([np.diag([3.0, 1.0, 0.0])]), 1).value
    0.9
    """
    tau = _check_tau(tau)
    classes = check_int("classes", classes, minimum=1)
    st = _stack(J, k=None, full=True)
    S, frob2 = _spectrum(st, tau, "energy_top_C")
    return _per_matrix_metric("energy_top_C", _energy_raw(S, frob2, classes), st.shared, statistic="median",
                              over="matrices", note=_factor_note(st, tau), why=_ZERO_WHY)


def _rank_group(st: _Stack, classes: int, tau: float) -> tuple[dict[str, Metric], dict[str, str]]:
    out: dict[str, Metric] = {}
    missing: dict[str, str] = {}
    try:
        S, frob2 = _spectrum(st, tau, "RA3")
    except MetricUndefinedError as exc:
        return out, {n: str(exc) for n in ("numerical_rank", "stable_rank", "energy_top_C")}
    note = _factor_note(st, tau)
    _attempt(out, missing, "numerical_rank", lambda: _per_matrix_metric(
        "numerical_rank", _rank_raw(S, tau), st.shared, statistic="median", over="matrices", note=note))
    _attempt(out, missing, "stable_rank", lambda: _per_matrix_metric(
        "stable_rank", _stable_rank_raw(S, frob2), st.shared, statistic="median", over="matrices",
        note=note, why=_ZERO_WHY))
    _attempt(out, missing, "energy_top_C", lambda: _per_matrix_metric(
        "energy_top_C", _energy_raw(S, frob2, classes), st.shared, statistic="median", over="matrices",
        note=note, why=_ZERO_WHY))
    return out, missing


def rank_metrics(J, classes: int, *, tau: float = DEFAULT_TAU) -> dict[str, Metric]:
    """Every RA3 metric (``numerical_rank``, ``stable_rank``, ``energy_top_C``) at once.

    Parameters
    ----------
    J : array or tuple (U, S, V)
        As in :func:`numerical_rank`.
    classes : int
    tau : float, default 1e-3

    Returns
    -------
    dict of str to Metric
        Undefined metrics (factors without the spectrum) are left out.

    Examples
    --------
    >>> import numpy as np
    >>> rank_metrics(np.stack([np.diag([3.0, 1.0, 0.0])]), 2)["numerical_rank"].value
    2.0
    """
    tau = _check_tau(tau)
    classes = check_int("classes", classes, minimum=1)
    return _rank_group(_stack(J, k=None, full=True), classes, tau)[0]
