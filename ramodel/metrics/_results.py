"""Result types of the metrics: :class:`Metric`, its :class:`Spread`, :class:`MetricUndefinedError`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._format import frozen_copy, json_array, json_float
from .._validation import check_choice

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


# JSON-safe numbers and frozen copies: one copy, in ramodel._format.
_json_float = json_float
_json_array = json_array
_frozen = frozen_copy


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
