"""RA2: the top singular subspaces of the Jacobians align, across sides, depths and inputs."""

from __future__ import annotations

import numpy as np

from .._validation import check_choice, check_int
from ._arrays import _host, _mT, _permute, _to_xp
from ._results import Metric, MetricUndefinedError
from ._stack import _ZERO_WHY, _resolve_k, _Stack, _stack, _valid, _with_nan
from ._summaries import _metric, _pair_metric, _per_matrix_metric


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
