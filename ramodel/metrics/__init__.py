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

from .._source import RANK_TAU
from ..spectra import top_singular
from ._arrays import (
    _as_array,
    _astype,
    _eps,
    _float_array,
    _host,
    _is_real_floating,
    _mT,
    _permute,
    _to_xp,
)
from ._results import (
    _STATISTICS,
    Metric,
    MetricUndefinedError,
    Spread,
    _frozen,
    _json_array,
    _json_float,
    _quantiles,
)
from ._stack import (
    _ORDER_FACTOR,
    _ORTHONORMAL_FACTOR,
    _ZERO_WHY,
    _check_factors,
    _is_factors,
    _is_half,
    _power_of_two_scale,
    _resolve_k,
    _Stack,
    _stack,
    _upcast,
    _valid,
    _with_nan,
)
from ._summaries import (
    _metric,
    _nanmean,
    _nanmedian,
    _pair_mask,
    _pair_metric,
    _per_matrix_metric,
)
from .alignment import (
    _across_input_raw,
    _across_metric,
    _alignment_group,
    _alignment_lr_raw,
    _attempt,
    _check_pairs,
    _check_side,
    _cosine_lr_raw,
    _cross_depth_raw,
    _k_matrix_raw,
    _k_note,
    across_input_alignment,
    alignment_lr,
    alignment_metrics,
    chance_alignment,
    cosine_lr,
    cross_depth_alignment,
    jacobian_alignment_matrix,
)
from .collapse import (
    _check_classifier,
    _class_stats,
    _ClassStats,
    _collapse_group,
    _fro,
    _labels_host,
    _nc1,
    _nc2_equinorm,
    _nc2_etf,
    _nc3,
    _nc4,
    collapse_metrics,
    nc1,
    nc2_equinorm,
    nc2_etf,
    nc3,
    nc4,
)
from .rank import (
    _check_tau,
    _energy_raw,
    _factor_note,
    _rank_group,
    _rank_raw,
    _spectrum,
    _stable_rank_raw,
    energy_top_c,
    numerical_rank,
    rank_metrics,
    stable_rank,
)
from .registry import METRICS, MetricSpec
from .scaling import (
    DepthSlopeFit,
    _sigma1_cv_metric,
    _sigma1_mean_metric,
    fit_depth_slope,
    sigma1_cv,
    sigma1_mean,
)
from .trajectory import (
    _RA1_WHY,
    _check_representations,
    _ra1_metric,
    _trajectory_raw,
    collinearity,
    equispacing,
    progress_r2,
    step_ratio,
    trajectory_metrics,
)

# Functions under their metric's key (METRICS names them so); the older names stay.
a_lr = alignment_lr
cos_lr = cosine_lr
energy_top_C = energy_top_c

__all__ = [
    "MetricUndefinedError",
    "Spread",
    "Metric",
    "DepthSlopeFit",
    "DEFAULT_TAU",
    "chance_alignment",
    "METRICS",
    "MetricSpec",
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
    "a_lr",
    "cos_lr",
    # RA3
    "numerical_rank",
    "stable_rank",
    "energy_top_c",
    "rank_metrics",
    "energy_top_C",
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
