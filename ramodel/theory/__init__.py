"""The model's theorems as closed forms and as measurable predictions.

Closed forms (MODEL.md §3): :func:`closed_form_jacobian` (T3), :func:`depth_singular_values`
(T4), :func:`rank_one_trajectory` (T5). Measures (METRICS.md, "Measuring the theorems"):
each takes a known value exactly where the theorem's conclusion holds (0 for residuals
and asymmetries, 1 for linearity), so it can be read on a simulation, on a trained
network and on a random baseline alike. :func:`check` computes all of them on a
``Simulation``, a ``JacobianSet`` or plain arrays, with the chance level of each, and
returns a :class:`TheoryReport`.

Layout: Jacobians are ``(L, d, d)`` or per input ``(L, N, d, d)``; skips ``(L, d, d)``,
``(d, d)`` or None for identity skips. Every measure is batched over the input axis and
returns one value per layer (and per input when there is one). :func:`check` also takes
top-k factors ``U, S, V`` and computes every measure from them without forming
``d x d`` matrices (see its Notes for when that is exact).

Design decisions of :func:`check` (details in its docstring):

1. The chance baseline rotates ``J_l -> Q1_l J_l Q2_l^T`` with Haar ``Q1_l, Q2_l`` drawn per
   layer and shared by all inputs, keeping skips, classifier and representations.
2. Summaries are over every (layer, input) sample: median, spread, per-layer medians,
   and the worst sample; undefined samples (0/0) are excluded and counted.
3. Predictions are those of the k = 1 UJM at a critical point; a measure whose theorem
   says nothing for the model (T3 with non-identity skips) has ``predicted = None``.
"""

from __future__ import annotations

from ._layouts import (  # noqa: F401
    _closed_form_factors,
    _Dense,
    _Factors,
    _lr_fro,
    _mT,
    _nan_divide,
    _pad,
    _power_of_two_scale,
)
from .chance import (  # noqa: F401
    _SHARED_ROTATION_MAX_WIDTH,
    MAX_CHANCE_DRAWS,
    _haar,
)
from .closed_forms import (  # noqa: F401
    _fro,
    _skips_like,
    _svdvals,
    asymmetry,
    chain_residuals,
    classifier_residual,
    closed_form_error,
    closed_form_jacobian,
    depth_singular_values,
    depth_spread,
    gain_share_error,
    linearity,
    psd_defect,
    rank_bound,
    rank_one_trajectory,
    skip_asymmetry,
)
from .measures import (  # noqa: F401
    _ORDER_FACTOR,
    _ORTHONORMAL_FACTOR,
    DEFAULT_TAU,
    _as_float,
    _check_factor_arrays,
    _dtype,
    _dtype_name,
    _energy,
    _evaluate,
    _expect,
    _field,
    _fit_measures,
    _half,
    _nanmedian,
    _plan,
    _rank,
    _same,
    _Source,
    _source,
    _Spec,
    _summarise,
)
from .report import (  # noqa: F401
    TheoryMeasure,
    TheoryReport,
    _fmt,
    _frozen,
    _json_array,
    _json_float,
    _predicted_text,
)
from .verdicts import (  # noqa: F401
    _THEOREM_OF,
    ACTIVE_FLOOR,
    THEOREM_TOL,
    THEOREMS,
    TheoremCheck,
    _inactive,
    _theorem_verdicts,
    check,
    theorem_checks,
)

__all__ = [
    "asymmetry",
    "chain_residuals",
    "classifier_residual",
    "depth_spread",
    "psd_defect",
    "closed_form_jacobian",
    "closed_form_error",
    "depth_singular_values",
    "gain_share_error",
    "skip_asymmetry",
    "linearity",
    "rank_one_trajectory",
    "rank_bound",
    "check",
    "TheoryReport",
    "TheoryMeasure",
    "DEFAULT_TAU",
    "MAX_CHANCE_DRAWS",
    "THEOREMS",
]
