"""Residual Alignment metrics RA1-RA4 and neural collapse NC1-NC4 (``spec/METRICS.md``).

Design constraints, in order:

1. Pure functions of plain arrays, so a ``Simulation`` and a ``JacobianSet`` are
   measured by the same code. Inputs are never modified.
2. Two layouts of the Jacobians are accepted everywhere (``spec/FORMAT.md``): dense
   ``J`` of shape ``(L, N, d, d)`` (or ``(L, d, d)`` when the Jacobians do not depend
   on the input, as in the linear model), or the top-k factors passed as a tuple
   ``(U, S, V)`` with shapes ``(L, N, d, k), (L, N, k), (L, N, d, k)`` (or without the
   ``N`` axis). A :class:`ramodel.spectra.TopSingular` is such a tuple. A metric that
   exact top-k factors determine gives the same number for the dense Jacobians and for
   their factors; what factors cannot determine raises :class:`MetricUndefinedError`
   (see "Dense against factors" below).
3. Top singular triplets come only from :func:`ramodel.spectra.top_singular`, called
   once on the whole ``(L, N, d, d)`` stack. Alignments are batched matmuls; the only
   Python loops run over the L layers (pair matrices, to bound memory).
4. The heavy work runs in the namespace of the inputs (NumPy, CuPy, any array-API
   library). The small per-input / per-layer arrays that come out are moved to the host
   with :func:`ramodel.backend.to_numpy` and summarised there with NumPy (medians and
   quantiles are not part of the array API). The depth-slope fit is NumPy/SciPy only.

Results
-------
Every metric returns a :class:`Metric`: its headline ``value`` (a median or a mean of
``samples``, as the spec asks), the ``spread`` of the samples, the ``chance`` level
where one exists, the ``samples`` themselves (per input, per layer, per matrix or per
pair of layers: ``samples_over`` says which) and an optional ``detail`` array for plots
(per layer ``(L,)`` or the ``(L, L)`` alignment matrices), averaged over inputs.

A matrix whose metric is undefined (a zero Jacobian has no singular vectors and no
stable rank; a trajectory that does not move has no direction) is left out of the
samples and counted in ``Metric.excluded``; ``detail`` then holds NaN where no value
is defined. If nothing is left the function raises :class:`MetricUndefinedError`.

Dense against factors
---------------------
- RA2 ``a_lr``, ``cos_lr``, the cross-depth ``A_left``/``A_right`` matrices and the
  across-input alignments use only the top-k vectors: identical for both layouts.
- ``K[i, j] = |U_i^T J_j V_i|_F / |S_j|_2`` needs ``J_j``. From factors it is computed
  as ``U_i^T U_j diag(S_j) V_j^T V_i`` with every stored triplet of ``J_j``, i.e. from
  the rank-k truncation of ``J_j``: exact when ``rank J_j <= k_stored`` (the metric's
  ``note`` says so).
- RA3 needs the whole spectrum. Factors determine it when ``k_stored = d`` or when the
  smallest stored singular value is below ``tau * sigma_1`` (then the numerical rank is
  exact, and stable rank and ``energy_top_C`` are exact up to the omitted tail, whose
  energy is below ``(d - k_stored) * tau**2 * sigma_1**2``). Otherwise
  :class:`MetricUndefinedError` asks for more triplets.

Choosing k
----------
RA2 compares top-k subspaces, which are well defined only when ``sigma_k > sigma_{k+1}``.
With ``k > rank J`` the extra directions are an arbitrary basis of the null space and
the alignments partly measure that arbitrary choice (dense Jacobians and factors from
the same ``top_singular`` call still agree exactly). ``analyze`` takes k from the data:
``k = C`` (``C - 1`` for cross-entropy), never above the median numerical rank, and it
leaves out (and counts) matrices whose k-th and (k+1)-th singular values tie at
rounding level (:mod:`ramodel.report`).

Scale
-----
Jacobians whose squares would overflow or underflow (outside ``[tiny**0.25,
max**0.25]`` of their dtype) are divided by a power of two before any product, which is
exact, so every metric except ``sigma1_mean`` (and the per-layer ``sigma_1`` detail,
multiplied back) is unchanged by a global scale. float16 arrays are computed in float32
(LAPACK has no half precision).

Examples
--------
>>> import numpy as np
>>> from ramodel.metrics import alignment_lr, numerical_rank
>>> J = np.stack([np.diag([2.0, 1.0, 0.0, 0.0])] * 3)          # (L, d, d), symmetric PSD
>>> alignment_lr(J, k=2).value
1.0
>>> numerical_rank(J).value
2.0
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._source import ORDER_FACTOR, ORTHONORMAL_FACTOR, RANK_TAU
from ._validation import check_choice, check_int, check_positive_float
from .backend import asarray, get_namespace, to_numpy
from .scaling import DepthLawFit, fit_depth_law
from .spectra import top_singular

__all__ = [
    "MetricUndefinedError",
    "Spread",
    "Metric",
    "DepthSlopeFit",
    "DEFAULT_TAU",
    "chance_alignment",
    # RA1
    "collinearity",
    "equispacing",
    "step_ratio",
    "progress_r2",
    "trajectory_metrics",
    # RA2
    "alignment_lr",
    "cosine_lr",
    "cross_depth_alignment",
    "jacobian_alignment_matrix",
    "across_input_alignment",
    "alignment_metrics",
    # RA3
    "numerical_rank",
    "stable_rank",
    "energy_top_c",
    "rank_metrics",
    # RA4
    "sigma1_cv",
    "sigma1_mean",
    "fit_depth_slope",
    # neural collapse
    "nc1",
    "nc2_equinorm",
    "nc2_etf",
    "nc3",
    "nc4",
    "collapse_metrics",
]

DEFAULT_TAU = RANK_TAU
"""Relative threshold of the numerical rank, ``#{sigma_i >= tau * sigma_1}`` (METRICS.md)."""

# Tolerances for factors given by the caller, in units of eps of their dtype (the same
# as ramodel.jacobian_set, so a JacobianSet that validated also validates here).
_ORTHONORMAL_FACTOR = ORTHONORMAL_FACTOR
_ORDER_FACTOR = ORDER_FACTOR

_STATISTICS = ("median", "mean", "value")


class MetricUndefinedError(ValueError):
    """The metric is mathematically undefined for these (valid) inputs.

    Raised, for example, for the cross-depth alignment of a single layer, for RA3 from
    factors that do not hold the whole spectrum, or when every trajectory is constant.
    :func:`ramodel.report.analyze` records the message as the reason a verdict is None.
    """


# --------------------------------------------------------------------------- results
def _quantiles(x: np.ndarray, qs: Sequence[float]) -> list[float]:
    # Linear interpolation between +inf samples gives NaN; pick actual samples instead.
    method = "linear" if np.all(np.isfinite(x)) else "inverted_cdf"
    return [float(v) for v in np.quantile(x, qs, method=method)]


def _json_float(v: float) -> float | str | None:
    if math.isfinite(v):
        return float(v)
    if math.isnan(v):
        return None
    return "inf" if v > 0 else "-inf"


def _json_array(a: np.ndarray) -> Any:
    if a.ndim == 0:
        return _json_float(float(a))
    return [_json_array(row) for row in a] if a.ndim > 1 else [_json_float(float(v)) for v in a]


def _frozen(a: Any) -> np.ndarray:
    out = np.array(a, dtype=np.float64, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class Spread:
    """Distribution of a metric's samples.

    Attributes
    ----------
    count : int
        Number of samples.
    mean, std : float
        Mean and population standard deviation (``std`` is inf if a sample is inf).
    min, q25, median, q75, max : float
        Order statistics (linear interpolation; actual samples if any is infinite).
    """

    count: int
    mean: float
    std: float
    min: float
    q25: float
    median: float
    q75: float
    max: float

    @classmethod
    def of(cls, samples: Any) -> Spread:
        """Spread of a 1-D array of samples (no NaN).

        Examples
        --------
        >>> Spread.of([1.0, 2.0, 3.0]).median
        2.0
        """
        x = np.asarray(samples, dtype=np.float64).ravel()
        if x.size == 0 or np.isnan(x).any():
            raise ValueError("samples must be a non-empty array without NaN")
        finite = bool(np.all(np.isfinite(x)))
        top = float(np.max(np.abs(x))) if finite else math.inf
        if 1e150 < top < math.inf:  # scaled, so samples of size 1e200 do not overflow
            mean, std = float(np.mean(x / top)) * top, float(np.std(x / top)) * top
        else:
            mean = float(np.mean(x))
            std = float(np.std(x)) if finite else math.inf
        q25, median, q75 = _quantiles(x, (0.25, 0.5, 0.75))
        return cls(int(x.size), mean, std, float(x.min()), q25, median, q75, float(x.max()))

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (``inf`` as the string ``"inf"``)."""
        return {k: (v if isinstance(v, int) else _json_float(v)) for k, v in self.__dict__.items()}


@dataclass(frozen=True, eq=False)
class Metric:
    """One measured quantity, with its spread and chance level.

    Attributes
    ----------
    name : str
        Metric name, e.g. ``"collinearity"``, ``"A_left"``, ``"nc1"``.
    value : float
        The headline number: ``statistic`` of ``samples`` (or the value itself).
    statistic : {"median", "mean", "value"}
        How ``value`` summarises ``samples``.
    chance : float or None
        The value expected for random subspaces / a random classifier, where defined.
    spread : Spread or None
        Distribution of ``samples``; None for single-valued metrics.
    samples : ndarray, shape (n,), or None
        Read-only host array of the numbers ``value`` summarises.
    samples_over : str or None
        What one sample is: ``"inputs"``, ``"layers"``, ``"matrices"`` (one per layer
        and input), ``"pairs"`` (ordered pairs of layers).
    detail : ndarray or None
        Read-only array for plots, averaged over inputs: per layer ``(L,)`` or the
        ``(L, L)`` matrix of a pair metric. NaN where no value is defined.
    detail_axes : tuple of str
        Names of the axes of ``detail``, e.g. ``("layer",)`` or ``("layer", "layer")``.
    excluded : int
        Samples left out because the metric is undefined for them (zero Jacobians,
        constant trajectories).
    note : str
        Provenance that changes how to read the number (e.g. "from factors").
    """

    name: str
    value: float
    statistic: str = "value"
    chance: float | None = None
    spread: Spread | None = None
    samples: np.ndarray | None = None
    samples_over: str | None = None
    detail: np.ndarray | None = None
    detail_axes: tuple[str, ...] = ()
    excluded: int = 0
    note: str = ""

    def __post_init__(self) -> None:
        check_choice("statistic", self.statistic, _STATISTICS)
        if math.isnan(self.value):
            raise ValueError(f"Metric {self.name!r}: value must not be NaN")

    @property
    def per_input(self) -> np.ndarray | None:
        """The samples when they are one per input, else None."""
        return self.samples if self.samples_over == "inputs" else None

    def to_dict(self) -> dict:
        """Plain JSON-ready dict: floats, lists, ``None`` for NaN, ``"inf"`` for inf."""
        return {
            "name": self.name,
            "value": _json_float(self.value),
            "statistic": self.statistic,
            "chance": None if self.chance is None else _json_float(self.chance),
            "spread": None if self.spread is None else self.spread.to_dict(),
            "samples": None if self.samples is None else _json_array(self.samples),
            "samples_over": self.samples_over,
            "detail": None if self.detail is None else _json_array(self.detail),
            "detail_axes": list(self.detail_axes),
            "excluded": self.excluded,
            "note": self.note,
        }


#: The RA4 depth-law fit; one class, defined in :mod:`ramodel.scaling`.
DepthSlopeFit = DepthLawFit


def chance_alignment(k: int, d: int) -> float:
    """Expected ``|P^T Q|_F^2 / k`` for independent uniformly random k-subspaces of R^d.

    Examples
    --------
    >>> chance_alignment(3, 30)
    0.1
    """
    d = check_int("d", d, minimum=1)
    k = check_int("k", k, minimum=1, maximum=d)
    return k / d


# ----------------------------------------------------------------- array helpers
def _mT(x, xp):
    f = getattr(xp, "matrix_transpose", None)
    return f(x) if f is not None else xp.swapaxes(x, -1, -2)


def _astype(x, dtype, xp):
    f = getattr(xp, "astype", None)
    return f(x, dtype) if f is not None else x.astype(dtype)


def _permute(x, axes, xp):
    f = getattr(xp, "permute_dims", None)
    return f(x, axes) if f is not None else xp.transpose(x, axes)


def _host(x) -> np.ndarray:
    return np.array(to_numpy(x), dtype=np.float64, copy=True)


def _to_xp(a: np.ndarray, like):
    """Move a small host array into the namespace and dtype of ``like``."""
    xp = get_namespace(like)
    if xp is np:
        return np.asarray(a, dtype=like.dtype)
    return _astype(asarray(np.asarray(a, dtype=np.float64), xp=xp), like.dtype, xp)


def _is_real_floating(x) -> bool:
    try:
        return np.dtype(x.dtype).kind == "f"
    except TypeError:  # dtypes that NumPy does not know (e.g. array_api_strict's)
        xp = get_namespace(x)
        return bool(xp.isdtype(x.dtype, "real floating"))


def _as_array(name: str, x: Any):
    if x is None:
        raise TypeError(f"{name} is required, got None")
    if isinstance(x, (list, tuple)) or isinstance(x, numbers.Number):
        x = np.asarray(x)
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    return x


def _float_array(name: str, x: Any, ndims: tuple[int, ...], shape_doc: str):
    x = _as_array(name, x)
    if x.ndim not in ndims:
        raise ValueError(f"{name} must have shape {shape_doc}, got shape {tuple(x.shape)} (ndim={x.ndim})")
    if not _is_real_floating(x):
        raise TypeError(f"{name} must be a real floating array (float32 or float64), got dtype {x.dtype}")
    if any(int(s) < 1 for s in x.shape):
        raise ValueError(f"{name} must have every size >= 1, got shape {tuple(x.shape)}")
    xp = get_namespace(x)
    if not bool(xp.all(xp.isfinite(x))):
        raise ValueError(f"{name} must be finite, but it contains NaN or Inf")
    return x


def _eps(x) -> float:
    return float(np.finfo(np.dtype(str(x.dtype).split(".")[-1])).eps)


# ----------------------------------------------------------------- summaries
def _nanmean(x: np.ndarray, axis) -> np.ndarray:
    ok = ~np.isnan(x)
    count = ok.sum(axis=axis)
    total = np.where(ok, x, 0.0).sum(axis=axis)
    out = np.full(np.shape(total), np.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out


def _nanmedian(x: np.ndarray, axis) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices stay NaN
        return np.nanmedian(x, axis=axis)


def _metric(
    name: str,
    samples: np.ndarray,
    *,
    statistic: str,
    samples_over: str,
    chance: float | None = None,
    detail: np.ndarray | None = None,
    detail_axes: tuple[str, ...] = (),
    note: str = "",
    why: str = "",
) -> Metric:
    """Drop undefined (NaN) samples and summarise the rest."""
    samples = np.asarray(samples, dtype=np.float64).ravel()
    defined = samples[~np.isnan(samples)]
    excluded = int(samples.size - defined.size)
    if defined.size == 0:
        raise MetricUndefinedError(f"{name} is undefined for every one of the {samples.size} {samples_over}{why}")
    if statistic == "median":
        value = _quantiles(defined, (0.5,))[0]
    else:
        value = float(np.mean(defined))
    return Metric(
        name=name,
        value=value,
        statistic=statistic,
        chance=chance,
        spread=Spread.of(defined),
        samples=_frozen(defined),
        samples_over=samples_over,
        detail=None if detail is None else _frozen(detail),
        detail_axes=detail_axes,
        excluded=excluded,
        note=note,
    )


def _per_matrix_metric(
    name: str,
    raw: np.ndarray,
    shared: bool,
    *,
    statistic: str,
    over: str = "inputs",
    chance: float | None = None,
    note: str = "",
    why: str = "",
) -> Metric:
    """Summarise a host array ``raw (L, N)`` (NaN = undefined) of one value per matrix.

    ``over="inputs"``: per-input mean over layers, then ``statistic`` over inputs.
    ``over="matrices"``: ``statistic`` over every (layer, input) matrix. Input-independent
    Jacobians (``shared``) give one sample per layer either way.
    """
    reduce = _nanmedian if statistic == "median" else _nanmean
    if shared:
        col = raw[:, 0]
        return _metric(name, col, statistic=statistic, samples_over="layers", chance=chance,
                       detail=col, detail_axes=("layer",), note=note, why=why)
    detail = reduce(raw, axis=1)
    samples = _nanmean(raw, axis=0) if over == "inputs" else raw.ravel()
    return _metric(name, samples, statistic=statistic, samples_over=over, chance=chance,
                   detail=detail, detail_axes=("layer",), note=note, why=why)


def _pair_mask(L: int, pairs: str) -> np.ndarray:
    i, j = np.indices((L, L))
    return (i != j) if pairs == "offdiag" else (np.abs(i - j) == 1)


def _pair_metric(
    name: str, raw: np.ndarray, shared: bool, pairs: str, *, chance: float | None, note: str = ""
) -> Metric:
    """Summarise a host array ``raw (L, L, N)`` over the pairs ``i != j`` or ``|i - j| = 1``."""
    L = raw.shape[0]
    if L < 2:
        raise MetricUndefinedError(f"{name} compares layers and needs depth L >= 2, got L = {L}")
    mask = _pair_mask(L, pairs)
    if shared:
        return _metric(name, raw[mask][:, 0], statistic="mean", samples_over="pairs", chance=chance,
                       detail=raw[:, :, 0], detail_axes=("layer", "layer"), note=note)
    return _metric(name, _nanmean(raw[mask], axis=0), statistic="mean", samples_over="inputs",
                   chance=chance, detail=_nanmean(raw, axis=2), detail_axes=("layer", "layer"), note=note)


# ----------------------------------------------------------------------- RA1
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
    top = top_singular(Tc, 1)
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


# --------------------------------------------------------------- Jacobian stacks
@dataclass(frozen=True)
class _Stack:
    """Top singular triplets of a stack of Jacobians, with an input axis always present."""

    xp: Any
    U: Any  # (L, N, d, kf)
    S: Any  # (L, N, kf)
    V: Any  # (L, N, d, kf)
    J: Any  # (L, N, d, d) or None for factors
    shared: bool  # the Jacobians do not depend on the input (N = 1 here)
    layout: str  # "dense" | "factors"
    complete: bool  # S holds every singular value
    frob2: Any = field(default=None)  # (L, N) |J|_F^2 for dense
    # J, S and frob2 are stored divided by ``scale`` (a power of two, so exactly): Jacobians
    # of size 1e200 would overflow |J|_F^2 and the CV of sigma_1. Only sigma_1 itself
    # (sigma1_mean, the per-layer detail) is multiplied back.
    scale: float = 1.0
    # Host bool (L, N) of matrices a caller leaves out (analyze: inactive branches, top-k
    # subspaces undefined at rounding level); None keeps every non-zero matrix.
    mask: Any = None
    upcast_from: str | None = None  # "float16" when the arrays were computed in float32

    @property
    def L(self) -> int:
        return int(self.U.shape[0])

    @property
    def d(self) -> int:
        return int(self.U.shape[2])

    @property
    def kf(self) -> int:
        return int(self.U.shape[3])


def _check_factors(U, S, V, names=("U", "S", "V")):
    nU, nS, nV = names
    U = _float_array(nU, U, (3, 4), "(L, N, d, k) or (L, d, k)")
    shape_doc = "(L, N, d, k)" if U.ndim == 4 else "(L, d, k)"
    V = _float_array(nV, V, (U.ndim,), f"{shape_doc} like {nU}")
    S = _float_array(nS, S, (U.ndim - 1,), "(L, N, k)" if U.ndim == 4 else "(L, k)")
    d, k = int(U.shape[-2]), int(U.shape[-1])
    if k > d:
        raise ValueError(f"{nU} must have k <= d columns, got shape {tuple(U.shape)}")
    if tuple(V.shape) != tuple(U.shape):
        raise ValueError(f"{nV} must have the shape of {nU} {tuple(U.shape)}, got {tuple(V.shape)}")
    if tuple(S.shape) != tuple(U.shape[:-2]) + (k,):
        raise ValueError(f"{nS} must have shape {tuple(U.shape[:-2]) + (k,)} to match {nU}, got {tuple(S.shape)}")
    xp = get_namespace(U, S, V)
    eps = _eps(S)
    tol = _ORDER_FACTOR * eps * S[..., :1]
    if bool(xp.any(S < -tol)):
        raise ValueError(f"{nS} holds singular values, which must be >= 0")
    if k > 1 and bool(xp.any(S[..., 1:] - S[..., :-1] > tol)):
        raise ValueError(f"{nS} must be non-increasing along its last axis (top-k singular values in order)")
    eye = xp.eye(k, dtype=U.dtype)
    otol = _ORTHONORMAL_FACTOR * math.sqrt(d) * eps
    for name, Q in ((nU, U), (nV, V)):
        err = float(xp.max(xp.abs(xp.matmul(_mT(Q, xp), Q) - eye)))
        if not err <= otol:
            raise ValueError(
                f"{name} must have orthonormal columns: max |{name}^T {name} - I| = {err:.3g} > {otol:.3g}"
            )
    return U, S, V


def _is_factors(J) -> bool:
    return isinstance(J, tuple)


def _is_half(x) -> bool:
    return str(x.dtype).split(".")[-1] == "float16"


def _upcast(x):
    """float16 -> float32 (LAPACK has no half precision); other dtypes unchanged."""
    return _astype(x, get_namespace(x).float32, get_namespace(x)) if _is_half(x) else x


def _power_of_two_scale(x) -> float:
    """``2**e`` with ``max|x| / 2**e`` in [0.5, 1), or 1.0 when ``x`` is zero or already moderate.

    Only magnitudes whose squares could overflow or underflow (outside
    ``[tiny**0.25, max**0.25]`` of the dtype: 1e-77..1e77 in float64, 1e-9.5..1e9.5 in
    float32) are rescaled, so ordinary inputs are computed bit for bit as given.
    """
    xp = get_namespace(x)
    m = float(xp.max(xp.abs(x)))
    fi = np.finfo(np.dtype(str(x.dtype).split(".")[-1]))
    if m == 0.0 or (float(fi.tiny) ** 0.25 <= m <= float(fi.max) ** 0.25):
        return 1.0
    return math.ldexp(1.0, math.frexp(m)[1])


def _stack(J, *, k: int | None, full: bool, name: str = "J") -> _Stack:
    """Normalise dense Jacobians or factors to a :class:`_Stack`.

    Dense: ``top_singular`` is called once on the stack, with ``d`` triplets when
    ``full`` (RA3 needs the whole spectrum) and ``k`` otherwise. float16 inputs are
    computed in float32 (``upcast_from`` records it); huge or tiny magnitudes are
    divided by a power of two first (``scale``).
    """
    if isinstance(J, _Stack):
        return J
    if _is_factors(J):
        if len(J) != 3:
            raise TypeError(f"{name} as factors must be a tuple (U, S, V), got a tuple of length {len(J)}")
        half = any(_is_half(a) for a in J if hasattr(a, "dtype"))
        U, S, V = _check_factors(*(_upcast(_as_array(n, a)) for n, a in zip("USV", J)))
        xp = get_namespace(U, S, V)
        shared = U.ndim == 3
        if shared:
            U, S, V = (xp.expand_dims(a, axis=1) for a in (U, S, V))
        if k is not None:
            check_int("k", k, minimum=1, maximum=int(U.shape[-1]))
        complete = int(U.shape[-1]) == int(U.shape[-2])
        scale = _power_of_two_scale(S)
        if scale != 1.0:
            S = S * (1.0 / scale)
        return _Stack(xp, U, S, V, None, shared, "factors", complete, scale=scale,
                      upcast_from="float16" if half else None)
    half = hasattr(J, "dtype") and _is_half(J)
    J = _float_array(name, J, (3, 4), "(L, N, d, d) or (L, d, d)")
    J = _upcast(J)
    if J.shape[-1] != J.shape[-2]:
        raise ValueError(f"{name} must hold square d x d Jacobians, got shape {tuple(J.shape)}")
    xp = get_namespace(J)
    scale = _power_of_two_scale(J)
    if scale != 1.0:
        J = J * (1.0 / scale)  # a new array: the caller's is never modified
    shared = J.ndim == 3
    if shared:
        J = xp.expand_dims(J, axis=1)
    d = int(J.shape[-1])
    if full:
        kk = d
    else:
        if k is None:
            raise ValueError("k must be given for dense Jacobians (analyze uses k = classes); got None")
        kk = check_int("k", k, minimum=1, maximum=d)
    U, S, V = top_singular(J, kk)
    frob2 = xp.sum(J * J, axis=(-2, -1))
    return _Stack(xp, U, S, V, J, shared, "dense", kk == d, frob2, scale=scale,
                  upcast_from="float16" if half else None)


def _resolve_k(stack: _Stack, k: int | None) -> int:
    if k is None:
        return stack.kf
    return check_int("k", k, minimum=1, maximum=stack.kf)


def _valid(stack: _Stack) -> np.ndarray:
    """Host bool (L, N): the Jacobian is non-zero, so its singular vectors mean something
    (and the caller's ``mask``, when set, keeps it)."""
    ok = _host(stack.S[..., 0]) > 0
    return ok if stack.mask is None else ok & np.asarray(stack.mask, dtype=bool)


def _with_nan(raw: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = np.array(raw, dtype=np.float64, copy=True)
    out[~valid] = np.nan
    return out


_ZERO_WHY = " (a zero Jacobian has no singular vectors)"


# ----------------------------------------------------------------------- RA2
def _alignment_lr_raw(stack: _Stack, k: int) -> np.ndarray:
    xp = stack.xp
    U, V = stack.U[..., :k], stack.V[..., :k]
    G = xp.matmul(_mT(U, xp), V)
    return _with_nan(_host(xp.sum(G * G, axis=(-2, -1))) / k, _valid(stack))


def _cosine_lr_raw(stack: _Stack) -> np.ndarray:
    xp = stack.xp
    return _with_nan(_host(xp.sum(stack.U[..., 0] * stack.V[..., 0], axis=-1)), _valid(stack))


def _cross_depth_raw(stack: _Stack, k: int, side: str) -> np.ndarray:
    """``A[i, j, n] = |X_i(n)^T X_j(n)|_F^2 / k`` with X = U or V, shape (L, L, N)."""
    xp = stack.xp
    X = (stack.U if side == "left" else stack.V)[..., :k]
    Xt = _mT(X, xp)
    # One batched (L, N, k, k) product per layer i: the loop over the L layers bounds
    # memory to L*N*k^2 instead of L^2*N*k^2.
    rows = [xp.sum(xp.matmul(xp.expand_dims(Xt[i, ...], axis=0), X) ** 2, axis=(-2, -1)) for i in range(stack.L)]
    raw = _host(xp.stack(rows, axis=0)) / k
    valid = _valid(stack)
    return _with_nan(raw, valid[:, None, :] & valid[None, :, :])


def _k_matrix_raw(stack: _Stack, k: int) -> np.ndarray:
    """``K[i, j, n] = |U_i^T J_j V_i|_F / |S_j[:k]|_2``, shape (L, L, N)."""
    xp = stack.xp
    Uk, Vk = stack.U[..., :k], stack.V[..., :k]
    Ukt = _mT(Uk, xp)
    rows = []
    for i in range(stack.L):
        Ui_t = xp.expand_dims(Ukt[i, ...], axis=0)  # (1, N, k, d)
        Vi = xp.expand_dims(Vk[i, ...], axis=0)  # (1, N, d, k)
        if stack.J is not None:
            T = xp.matmul(xp.matmul(Ui_t, stack.J), Vi)
        else:  # U_i^T U_j diag(S_j) V_j^T V_i with every stored triplet of J_j
            left = xp.matmul(Ui_t, stack.U) * xp.expand_dims(stack.S, axis=-2)
            T = xp.matmul(left, xp.matmul(_mT(stack.V, xp), Vi))
        rows.append(xp.sqrt(xp.sum(T * T, axis=(-2, -1))))
    num = _host(xp.stack(rows, axis=0))  # (L_i, L_j, N)
    den = _host(xp.sqrt(xp.sum(stack.S[..., :k] ** 2, axis=-1)))  # (L_j, N)
    valid = _valid(stack)
    ok = valid[:, None, :] & valid[None, :, :]
    raw = num / np.where(valid, den, 1.0)[None, :, :]
    return _with_nan(raw, ok)


def _across_input_raw(stack: _Stack, k: int, side: str) -> np.ndarray:
    """Per layer, mean over input pairs n != m of ``|X_l(n)^T X_l(m)|_F^2 / k``, shape (L,).

    Uses ``sum_{n != m} |X_n^T X_m|_F^2 = |sum_n X_n X_n^T|_F^2 - sum_n |X_n^T X_n|_F^2``
    and the smaller of the two Gram matrices, ``(d, d)`` or ``(N k, N k)``.
    """
    xp = stack.xp
    X = (stack.U if side == "left" else stack.V)[..., :k]
    N, d = int(X.shape[1]), stack.d
    valid = _valid(stack)
    out = np.full(stack.L, np.nan)
    for l in range(stack.L):  # one layer at a time: the Gram matrix is the memory peak
        mask = _to_xp(valid[l], X)
        Xl = X[l, ...] * mask[:, None, None]  # zero out undefined inputs
        W = xp.reshape(_permute(Xl, (1, 0, 2), xp), (d, N * k))
        G = xp.matmul(_mT(W, xp), W) if N * k <= d else xp.matmul(W, _mT(W, xp))
        total = float(xp.sum(G * G))
        self_terms = float(xp.sum(xp.matmul(_mT(Xl, xp), Xl) ** 2))
        nv = int(valid[l].sum())
        if nv >= 2:
            out[l] = (total - self_terms) / (nv * (nv - 1) * k)
    return out


def _check_side(side: str) -> str:
    return check_choice("side", side, ("left", "right"))


def _check_pairs(pairs: str) -> str:
    return check_choice("pairs", pairs, ("offdiag", "adjacent"))


def alignment_lr(J, *, k: int | None = None) -> Metric:
    """RA2 within a layer: ``a_lr(l) = |U_l^T V_l|_F^2 / k``, left against right vectors.

    Parameters
    ----------
    J : array or tuple (U, S, V)
        Dense Jacobians ``(L, N, d, d)`` / ``(L, d, d)``, or top-k factors
        ``U (L, [N,] d, k)``, ``S (L, [N,] k)``, ``V (L, [N,] d, k)``.
    k : int, optional
        Subspace dimension, ``1 <= k <= d`` (``<=`` the stored k for factors). Required
        for dense Jacobians; default for factors: every stored triplet.

    Returns
    -------
    Metric
        Mean over inputs of the per-input mean over layers (per-input Jacobians), or
        mean over layers; ``detail`` is ``a_lr`` per layer, ``chance = k/d``. Zero
        Jacobians are excluded.

    Examples
    --------
    >>> import numpy as np
    >>> J = np.stack([np.diag([3.0, 1.0, 0.0])] * 2)
    >>> m = alignment_lr(J, k=1)
    >>> m.value, m.chance
    (1.0, 0.3333333333333333)
    """
    st = _stack(J, k=k, full=False)
    k = _resolve_k(st, k)
    return _per_matrix_metric("a_lr", _alignment_lr_raw(st, k), st.shared, statistic="mean",
                              chance=k / st.d, why=_ZERO_WHY)


def cosine_lr(J) -> Metric:
    """RA2 for k = 1: the signed cosine ``u_1^T v_1`` of the top singular pair per layer.

    The sign is meaningful: flipping the pair ``(u, v)`` together leaves it unchanged;
    ``-1`` means ``J`` maps ``v`` to ``-u`` (e.g. a negative definite direction).

    Parameters
    ----------
    J : array or tuple (U, S, V)
        As in :func:`alignment_lr`.

    Returns
    -------
    Metric
        Mean over inputs and layers; ``chance = 0``.

    Examples
    --------
    >>> import numpy as np
    >>> cosine_lr(np.stack([-np.diag([2.0, 1.0])] * 3)).value
    -1.0
    """
    st = _stack(J, k=1, full=False)
    return _per_matrix_metric("cos_lr", _cosine_lr_raw(st), st.shared, statistic="mean", chance=0.0,
                              why=_ZERO_WHY)


def cross_depth_alignment(J, *, k: int | None = None, side: str = "left", pairs: str = "offdiag") -> Metric:
    """RA2 across depth: ``A[i, j] = |U_i^T U_j|_F^2 / k`` (``side="right"``: V).

    Parameters
    ----------
    J : array or tuple (U, S, V)
        As in :func:`alignment_lr`. Depth ``L >= 2``.
    k : int, optional
        As in :func:`alignment_lr`.
    side : {"left", "right"}
        Left (U) or right (V) singular vectors.
    pairs : {"offdiag", "adjacent"}
        Average over every pair ``i != j`` or over adjacent layers ``|i - j| = 1``.

    Returns
    -------
    Metric
        Named ``A_left``/``A_right`` (``_adjacent`` appended for adjacent pairs). With
        per-input Jacobians, computed per input (its own top subspaces at every layer),
        averaged over the pairs, then averaged over inputs. ``detail`` is the ``(L, L)``
        matrix averaged over inputs; ``chance = k/d``.

    Examples
    --------
    >>> import numpy as np
    >>> J = np.stack([np.diag([3.0, 1.0, 0.0, 0.0])] * 3)
    >>> cross_depth_alignment(J, k=2).value
    1.0
    """
    side, pairs = _check_side(side), _check_pairs(pairs)
    st = _stack(J, k=k, full=False)
    k = _resolve_k(st, k)
    name = f"A_{side}" + ("_adjacent" if pairs == "adjacent" else "")
    return _pair_metric(name, _cross_depth_raw(st, k, side), st.shared, pairs, chance=k / st.d)


def _k_note(st: _Stack) -> str:
    if st.layout == "dense":
        return ""
    return (f"from factors: J_j replaced by its rank-{st.kf} truncation "
            f"U_j diag(S_j) V_j^T, exact when rank J_j <= {st.kf}")


def jacobian_alignment_matrix(J, *, k: int | None = None, pairs: str = "offdiag") -> Metric:
    """RA2: ``K[i, j] = |U_i^T J_j V_i|_F / |S_j|_2``, how layer j acts on layer i's top pair.

    ``S_j`` is the vector of the top-k singular values of ``J_j``, so ``K[j, j] = 1`` and
    ``0 <= K <= 1`` (a k x k compression of ``J_j`` has Frobenius norm at most that of
    its top-k singular values). For k = 1 this is the paper's ``|u_i^T J_j v_i| / sigma_1(J_j)``.

    Parameters
    ----------
    J : array or tuple (U, S, V)
        As in :func:`alignment_lr`, depth ``L >= 2``. From factors, ``J_j`` is replaced by
        ``U_j diag(S_j) V_j^T`` over every stored triplet (exact if ``rank J_j`` is at
        most the stored k; the metric's ``note`` says so).
    k : int, optional
        As in :func:`alignment_lr`.
    pairs : {"offdiag", "adjacent"}
        Pairs averaged in ``value``: ``i != j`` or ``|i - j| = 1`` (both orders).

    Returns
    -------
    Metric
        Named ``K`` (``K_adjacent``); ``detail`` is the ``(L, L)`` matrix (the RA2 figure).
        ``chance = k/d`` is the RMS of ``K`` for random subspaces when ``J_j`` has rank
        ``<= k``, and a lower bound for higher rank (it is
        ``(k/d) |J_j|_F / |S_j|_2`` in general).

    Examples
    --------
    >>> import numpy as np
    >>> J = np.stack([np.diag([3.0, 1.0, 0.0, 0.0])] * 3)
    >>> jacobian_alignment_matrix(J, k=2).detail.round(12).tolist()[0]
    [1.0, 1.0, 1.0]
    """
    pairs = _check_pairs(pairs)
    st = _stack(J, k=k, full=False)
    k = _resolve_k(st, k)
    name = "K" + ("_adjacent" if pairs == "adjacent" else "")
    return _pair_metric(name, _k_matrix_raw(st, k), st.shared, pairs, chance=k / st.d, note=_k_note(st))


def across_input_alignment(J, *, k: int | None = None, side: str = "left") -> Metric:
    """RA2 across inputs: do different inputs share their top subspaces at one layer?

    Defined, for per-input Jacobians ``J_l(x_n)``, as the mean over input pairs
    ``n != m`` of ``|X_l(n)^T X_l(m)|_F^2 / k`` with ``X = U`` (``side="left"``) or ``V``,
    one number per layer. 1 means every input has the same top-k subspace at that layer.

    Parameters
    ----------
    J : array or tuple (U, S, V)
        Per-input Jacobians ``(L, N, d, d)`` or factors ``(L, N, d, k)``, ``N >= 2``.
    k : int, optional
        As in :func:`alignment_lr`.
    side : {"left", "right"}

    Returns
    -------
    Metric
        Named ``across_inputs_left``/``_right``: mean over layers, ``samples`` and
        ``detail`` per layer, ``chance = k/d``. Cost ``O(L N d k min(d, N k))``, memory
        ``O(min(d, N k)^2)``.

    Examples
    --------
    >>> import numpy as np
    >>> J = np.broadcast_to(np.diag([3.0, 1.0, 0.0]), (2, 4, 3, 3))   # same J for 4 inputs
    >>> round(across_input_alignment(J, k=2).value, 12)
    1.0
    """
    side = _check_side(side)
    st = _stack(J, k=k, full=False)
    if st.shared:
        raise MetricUndefinedError(
            "across-input alignment needs per-input Jacobians (L, N, d, d); got input-independent ones"
        )
    return _across_metric(st, _resolve_k(st, k), side)


def _across_metric(st: _Stack, k: int, side: str) -> Metric:
    raw = _across_input_raw(st, k, side)
    return _metric(f"across_inputs_{side}", raw, statistic="mean", samples_over="layers", chance=k / st.d,
                   detail=raw, detail_axes=("layer",), why=" (needs two inputs with non-zero Jacobians)")


def _attempt(out: dict, missing: dict, name: str, fn) -> None:
    try:
        out[name] = fn()
    except MetricUndefinedError as exc:
        missing[name] = str(exc)


def _alignment_group(st: _Stack, k: int) -> tuple[dict[str, Metric], dict[str, str]]:
    out: dict[str, Metric] = {}
    missing: dict[str, str] = {}
    chance = k / st.d
    _attempt(out, missing, "a_lr", lambda: _per_matrix_metric(
        "a_lr", _alignment_lr_raw(st, k), st.shared, statistic="mean", chance=chance, why=_ZERO_WHY))
    _attempt(out, missing, "cos_lr", lambda: _per_matrix_metric(
        "cos_lr", _cosine_lr_raw(st), st.shared, statistic="mean", chance=0.0, why=_ZERO_WHY))
    for side in ("left", "right"):
        raw = _cross_depth_raw(st, k, side)
        for pairs, suffix in (("offdiag", ""), ("adjacent", "_adjacent")):
            name = f"A_{side}{suffix}"
            _attempt(out, missing, name,
                     lambda n=name, p=pairs, r=raw: _pair_metric(n, r, st.shared, p, chance=chance))
    rawK = _k_matrix_raw(st, k)
    for pairs, name in (("offdiag", "K"), ("adjacent", "K_adjacent")):
        _attempt(out, missing, name, lambda n=name, p=pairs: _pair_metric(
            n, rawK, st.shared, p, chance=chance, note=_k_note(st)))
    if st.shared:
        for side in ("left", "right"):
            missing[f"across_inputs_{side}"] = "the Jacobians do not depend on the input"
    else:
        for side in ("left", "right"):
            _attempt(out, missing, f"across_inputs_{side}", lambda s=side: _across_metric(st, k, s))
    return out, missing


def alignment_metrics(J, *, k: int | None = None) -> dict[str, Metric]:
    """Every RA2 metric from one ``top_singular`` call.

    Keys: ``a_lr``, ``cos_lr``, ``A_left``, ``A_left_adjacent``, ``A_right``,
    ``A_right_adjacent``, ``K``, ``K_adjacent`` and, for per-input Jacobians,
    ``across_inputs_left``, ``across_inputs_right``. Metrics that are undefined here
    (pair metrics when ``L = 1``) are left out; call the single function to see why.

    Parameters
    ----------
    J : array or tuple (U, S, V)
        As in :func:`alignment_lr`.
    k : int, optional
        As in :func:`alignment_lr`.

    Returns
    -------
    dict of str to Metric

    Examples
    --------
    >>> import numpy as np
    >>> J = np.stack([np.diag([3.0, 1.0, 0.0])] * 2)
    >>> sorted(alignment_metrics(J, k=1))[:3]
    ['A_left', 'A_left_adjacent', 'A_right']
    """
    st = _stack(J, k=k, full=False)
    return _alignment_group(st, _resolve_k(st, k))[0]


# ----------------------------------------------------------------------- RA3
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


# ------------------------------------------------------------- neural collapse
@dataclass(frozen=True)
class _ClassStats:
    xp: Any
    H: Any  # (N, d)
    onehot: Any  # (N, C)
    means: Any  # (C, d) class means mu_c
    M: Any  # (C, d) centred: mu_c - mean_c' mu_c'
    E: Any  # (N, d) within-class deviations h_n - mu_{y_n}
    C: int
    N: int


def _labels_host(labels, classes: int, N: int) -> np.ndarray:
    lab = labels if isinstance(labels, np.ndarray) else to_numpy(_as_array("labels", labels))
    lab = np.asarray(lab)
    if lab.dtype.kind not in "iu":
        raise TypeError(f"labels must be an integer array, got dtype {lab.dtype}")
    if lab.shape != (N,):
        raise ValueError(f"labels must have shape (N,) = ({N},) to match the features, got {lab.shape}")
    lo, hi = int(lab.min()), int(lab.max())
    if lo < 0 or hi >= classes:
        raise ValueError(f"labels must lie in [0, classes) = [0, {classes}), got values in [{lo}, {hi}]")
    return lab.astype(np.int64)


def _class_stats(features, labels, classes) -> _ClassStats:
    H = _float_array("features", features, (2,), "(N, d)")
    classes = check_int("classes", classes, minimum=2)
    N = int(H.shape[0])
    lab = _labels_host(labels, classes, N)
    counts = np.bincount(lab, minlength=classes)
    if (counts == 0).any():
        raise MetricUndefinedError(
            "neural collapse needs every class present; "
            f"classes {np.flatnonzero(counts == 0).tolist()} have no sample"
        )
    xp = get_namespace(H)
    onehot = _to_xp(lab[:, None] == np.arange(classes)[None, :], H)
    cnt = _to_xp(counts, H)
    means = xp.matmul(_mT(onehot, xp), H) / cnt[:, None]
    # Centre at the mean of the class means (= the global mean for balanced classes), so
    # an exact simplex ETF scores 0 whatever the class sizes.
    M = means - xp.mean(means, axis=0, keepdims=True)
    E = H - xp.matmul(onehot, means)
    return _ClassStats(xp, H, onehot, means, M, E, classes, N)


def _fro(x, xp) -> float:
    return math.sqrt(float(xp.sum(x * x)))


def _nc1(cs: _ClassStats) -> Metric:
    xp = cs.xp
    d = int(cs.H.shape[1])
    if _fro(cs.M, xp) == 0:
        raise MetricUndefinedError("nc1 is undefined: every class mean is the same (Sigma_B = 0)")
    # Sigma_B = M^T M / C has rank <= C - 1 because the rows of M sum to zero; keep the
    # top C-1 directions and drop those below the usual pinv cut-off max(C, d) * eps.
    r = min(cs.C - 1, d)
    top = top_singular(cs.M, r)
    S = _host(top.S)
    keep = S > max(cs.C, d) * _eps(cs.H) * S[0]
    inv = np.where(keep, 1.0 / np.where(keep, S, 1.0), 0.0)
    inv_x = _to_xp(inv, cs.H)
    # tr(Sigma_W Sigma_B^+) / C = |E V S^-1|_F^2 / N, without forming any d x d matrix.
    P = xp.matmul(cs.E, top.V) * inv_x[None, :]
    return Metric("nc1", float(xp.sum(P * P)) / cs.N, "value")


def _nc2_equinorm(cs: _ClassStats) -> Metric:
    norms = _host(cs.xp.sqrt(cs.xp.sum(cs.M * cs.M, axis=1)))
    if norms.mean() == 0:
        raise MetricUndefinedError("nc2_equinorm is undefined: every class mean is the same")
    return Metric("nc2_equinorm", float(norms.std() / norms.mean()), "value")


def _nc2_etf(cs: _ClassStats) -> Metric:
    xp = cs.xp
    G = _host(xp.matmul(cs.M, _mT(cs.M, xp)))
    g = np.linalg.norm(G)
    if g == 0:
        raise MetricUndefinedError("nc2_etf is undefined: every class mean is the same")
    C = cs.C
    etf = (np.eye(C) - np.ones((C, C)) / C) / math.sqrt(C - 1)
    return Metric("nc2_etf", float(np.linalg.norm(G / g - etf)), "value")


def _check_classifier(classifier, cs: _ClassStats):
    W = _float_array("classifier", classifier, (2,), "(C, d)")
    if tuple(W.shape) != (cs.C, int(cs.H.shape[1])):
        raise ValueError(f"classifier must have shape (C, d) = {(cs.C, int(cs.H.shape[1]))}, got {tuple(W.shape)}")
    get_namespace(W, cs.H)  # same namespace as the features
    return W


def _nc3(cs: _ClassStats, classifier) -> Metric:
    xp = cs.xp
    W = _check_classifier(classifier, cs)
    w, m = _fro(W, xp), _fro(cs.M, xp)
    if w == 0 or m == 0:
        raise MetricUndefinedError("nc3 is undefined for a zero classifier or identical class means")
    D = W / w - cs.M / m
    return Metric("nc3", _fro(D, xp), "value")


def _nc4(cs: _ClassStats, classifier, bias) -> Metric:
    xp = cs.xp
    W = _check_classifier(classifier, cs)
    logits = xp.matmul(cs.H, _mT(W, xp))
    if bias is not None:
        b = _float_array("bias", bias, (1,), "(C,)")
        if tuple(b.shape) != (cs.C,):
            raise ValueError(f"bias must have shape (C,) = ({cs.C},), got {tuple(b.shape)}")
        logits = logits + b[None, :]
    # argmin_c |h - mu_c|^2 = argmin_c (|mu_c|^2 - 2 h . mu_c)
    dist = xp.sum(cs.means * cs.means, axis=1)[None, :] - 2 * xp.matmul(cs.H, _mT(cs.means, xp))
    net = _host(xp.argmax(logits, axis=1))
    ncc = _host(xp.argmin(dist, axis=1))
    return Metric("nc4", float(np.mean(net != ncc)), "value", chance=1.0 - 1.0 / cs.C)


def nc1(features, labels, classes: int) -> Metric:
    """NC1, within-class variability collapse: ``tr(Sigma_W Sigma_B^+) / C``.

    ``Sigma_W = (1/N) sum_n (h_n - mu_{y_n})(h_n - mu_{y_n})^T``,
    ``Sigma_B = (1/C) sum_c (mu_c - mu_G)(mu_c - mu_G)^T`` with ``mu_G`` the mean of
    the class means (Papyan, Han and Donoho 2020; equal to the global mean for balanced
    classes). ``Sigma_B^+`` keeps its top ``C-1`` directions (``Sigma_B`` has rank at most
    ``C-1``) above ``max(C, d) * eps`` relative. 0 means collapsed classes; invariant
    to orthogonal maps, translation and scaling of the features.

    Parameters
    ----------
    features : array, shape (N, d)
        Last-layer features ``h_L``.
    labels : array of int, shape (N,)
        In ``[0, classes)``; every class must occur.
    classes : int
        C >= 2.

    Returns
    -------
    Metric

    Examples
    --------
    >>> import numpy as np
    >>> H = np.array([[1.0, 0.2], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.2]])
    >>> round(nc1(H, np.array([0, 0, 1, 1]), 2).value, 12)   # spread is orthogonal to the means
    0.0
    >>> H = np.array([[1.2, 0.0], [0.8, 0.0], [-1.2, 0.0], [-0.8, 0.0]])
    >>> round(nc1(H, np.array([0, 0, 1, 1]), 2).value, 12)   # 0.2**2 / 1**2 / C
    0.02
    """
    return _nc1(_class_stats(features, labels, classes))


def nc2_equinorm(features, labels, classes: int) -> Metric:
    """NC2, equinorm: CV (population std / mean) of ``|mu_c - mu_G|`` over classes.

    Parameters
    ----------
    features, labels, classes
        As in :func:`nc1`.

    Returns
    -------
    Metric
        0 when the centred class means have equal norms.

    Examples
    --------
    >>> import numpy as np
    >>> H = np.array([[1.0, 0.0], [-1.0, 0.0]])
    >>> nc2_equinorm(H, np.array([0, 1]), 2).value
    0.0
    """
    return _nc2_equinorm(_class_stats(features, labels, classes))


def nc2_etf(features, labels, classes: int) -> Metric:
    """NC2, distance to a simplex ETF: ``|G/|G|_F - (I - 11^T/C)/sqrt(C-1)|_F``.

    ``G = M M^T`` is the ``(C, C)`` Gram matrix of the centred class means and
    ``(I - 11^T/C)/sqrt(C-1)`` the Frobenius-normalised Gram of a simplex ETF (Zhu et
    al. 2021). 0 for an exact ETF (equal norms and pairwise cosines ``-1/(C-1)``);
    at most 2.

    Parameters
    ----------
    features, labels, classes
        As in :func:`nc1`.

    Returns
    -------
    Metric

    Examples
    --------
    >>> import numpy as np
    >>> H = np.array([[1.0, 0.0], [-0.5, 0.75 ** 0.5], [-0.5, -0.75 ** 0.5]])
    >>> round(nc2_etf(H, np.array([0, 1, 2]), 3).value, 12)
    0.0
    """
    return _nc2_etf(_class_stats(features, labels, classes))


def nc3(features, labels, classes: int, classifier) -> Metric:
    """NC3, self-duality: ``|W/|W|_F - M/|M|_F|_F`` with ``M (C, d)`` the centred class means.

    Parameters
    ----------
    features, labels, classes
        As in :func:`nc1`.
    classifier : array, shape (C, d)
        ``W`` of ``z = W h + b``. A bias does not enter NC3.

    Returns
    -------
    Metric
        0 when the classifier rows are proportional to the centred class means.

    Examples
    --------
    >>> import numpy as np
    >>> H = np.array([[1.0, 0.0], [-1.0, 0.0]])
    >>> nc3(H, np.array([0, 1]), 2, 5 * H).value
    0.0
    """
    return _nc3(_class_stats(features, labels, classes), classifier)


def nc4(features, labels, classes: int, classifier, *, bias=None) -> Metric:
    """NC4: share of inputs where the classifier and the nearest class centre disagree.

    The network predicts ``argmax_c (W h_n + b)_c``; the nearest-class-centre rule
    predicts ``argmin_c |h_n - mu_c|`` with the (uncentred) class means. The bias ``b``
    enters the logits only: with features shifted by ``t`` the same decisions need
    ``b - W t``. Ties go to the lowest class index.

    Parameters
    ----------
    features, labels, classes
        As in :func:`nc1` (labels define the class centres).
    classifier : array, shape (C, d)
        ``W``.
    bias : array, shape (C,), optional
        ``b``; default none (zero).

    Returns
    -------
    Metric
        Disagreement rate in [0, 1]; ``chance = 1 - 1/C`` (two independent uniform
        predictions).

    Examples
    --------
    >>> import numpy as np
    >>> H = np.array([[1.0, 0.0], [-1.0, 0.0]])
    >>> nc4(H, np.array([0, 1]), 2, H).value
    0.0
    """
    return _nc4(_class_stats(features, labels, classes), classifier, bias)


def _collapse_group(features, labels, classes, classifier, bias) -> tuple[dict[str, Metric], dict[str, str]]:
    out: dict[str, Metric] = {}
    missing: dict[str, str] = {}
    try:
        cs = _class_stats(features, labels, classes)
    except MetricUndefinedError as exc:
        return out, {n: str(exc) for n in ("nc1", "nc2_equinorm", "nc2_etf", "nc3", "nc4")}
    _attempt(out, missing, "nc1", lambda: _nc1(cs))
    _attempt(out, missing, "nc2_equinorm", lambda: _nc2_equinorm(cs))
    _attempt(out, missing, "nc2_etf", lambda: _nc2_etf(cs))
    if classifier is None:
        missing["nc3"] = missing["nc4"] = "no classifier given"
    else:
        _attempt(out, missing, "nc3", lambda: _nc3(cs, classifier))
        _attempt(out, missing, "nc4", lambda: _nc4(cs, classifier, bias))
    return out, missing


def collapse_metrics(features, labels, classes: int, *, classifier=None, bias=None) -> dict[str, Metric]:
    """Every neural-collapse metric: ``nc1``, ``nc2_equinorm``, ``nc2_etf``, ``nc3``, ``nc4``.

    NC3 and NC4 need the classifier and are left out without it.

    Parameters
    ----------
    features : array, shape (N, d)
    labels : array of int, shape (N,)
    classes : int
    classifier : array, shape (C, d), optional
    bias : array, shape (C,), optional

    Returns
    -------
    dict of str to Metric

    Examples
    --------
    >>> import numpy as np
    >>> H = np.array([[1.0, 0.0], [-1.0, 0.0]])
    >>> sorted(collapse_metrics(H, np.array([0, 1]), 2))
    ['nc1', 'nc2_equinorm', 'nc2_etf']
    """
    return _collapse_group(features, labels, classes, classifier, bias)[0]
