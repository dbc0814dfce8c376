"""Neural collapse NC1-NC4 of the last representations (Papyan et al., 2020)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import check_int
from ..backend import get_namespace, to_numpy
from ._arrays import _as_array, _eps, _float_array, _host, _mT, _to_xp, _top_singular
from ._results import Metric, MetricUndefinedError
from .alignment import _attempt


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
    top = _top_singular(cs.M, r)
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
