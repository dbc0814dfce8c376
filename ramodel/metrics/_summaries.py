"""From samples to a :class:`Metric`: NaN-aware means and medians, per matrix and per pair."""

from __future__ import annotations

import warnings

import numpy as np

from ._results import Metric, MetricUndefinedError, Spread, _frozen, _quantiles


def _nanmean(x: np.ndarray, axis) -> np.ndarray:
    ok = ~np.isnan(x)
    count = ok.sum(axis=axis)
    total = np.where(ok, x, 0.0).sum(axis=axis)
    out = np.full(np.shape(total), np.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out


def _nanmedian(x: np.ndarray, axis=None) -> np.ndarray:
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
