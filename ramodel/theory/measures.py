"""The measures of METRICS.md "Measuring the theorems": the source, the plan of what can be
measured on it, and their evaluation and summaries.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._source import (
    ORDER_FACTOR,
    ORTHONORMAL_FACTOR,
    RANK_TAU,
    as_source,
    check_factor_values,
    get_field,
)
from .._validation import check_positive_float
from ..backend import asarray, get_namespace, to_numpy
from ..metrics import Spread
from ..metrics._summaries import _nanmedian  # one copy
from ..spectra import top_singular
from ._layouts import _Dense, _Factors, _mT, _nan_divide
from .report import TheoryMeasure, _frozen

# =====================================================================================
# check(): every measure of METRICS.md "Measuring the theorems", with its chance level
# =====================================================================================

#: Numerical-rank threshold (METRICS.md RA3 default), also the completeness rule of factors.
DEFAULT_TAU = RANK_TAU
# Orthonormality and ordering tolerances of stored factors (as in JacobianSet).
_ORTHONORMAL_FACTOR = ORTHONORMAL_FACTOR
_ORDER_FACTOR = ORDER_FACTOR


# --------------------------------------------------------------------- the source
@dataclass(frozen=True)
class _Source:
    xp: Any
    jac: Any  # _Dense or _Factors
    shared: bool
    L: int
    N: int
    d: int
    k: int | None  # stored factors
    R: Any
    M: Any  # (L, d, d) or None for identity skips
    skip_kind: str
    W: Any
    weight_decay: tuple | None
    classes: int
    loss: str | None
    branch_factors: int | None
    kind: str
    grad_norm: float | None
    upcast_from: str | None = None  # "float16": computed in float32
    trivial: bool = False  # a Simulation at the critical point J = 0
    converged: bool | None = None  # a Simulation's solver reached its tol


_field = get_field  # the reader of ramodel._source (kept under its old name)


def _as_float(key, a, ndims, doc):
    if isinstance(a, (list, tuple)):
        a = np.asarray(a, dtype=np.float64)
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        raise TypeError(f"{key!r} must be an array of shape {doc}, got {type(a).__name__}")
    xp = get_namespace(a)
    try:
        is_float = np.dtype(a.dtype).kind == "f"
    except TypeError:
        is_float = bool(xp.isdtype(a.dtype, "real floating"))
    if not is_float:
        raise ValueError(f"{key!r} must be a float32 or float64 array, got dtype {a.dtype}")
    if a.ndim not in ndims:
        raise ValueError(f"{key!r} must have shape {doc}, got {tuple(a.shape)}")
    if not bool(xp.all(xp.isfinite(a))):
        raise ValueError(f"{key!r} must be finite, but it contains NaN or Inf")
    if str(a.dtype).split(".")[-1] == "float16":  # LAPACK has no half precision: computed in float32
        a = xp.astype(a, xp.float32)
    return a


def _half(a) -> bool:
    return a is not None and hasattr(a, "dtype") and str(a.dtype).split(".")[-1] == "float16"


def _expect(key, a, shape, doc):
    if tuple(int(s) for s in a.shape) != tuple(shape):
        raise ValueError(f"{key!r} must have shape {doc} = {tuple(shape)}, got {tuple(a.shape)}")


def _check_factor_arrays(U, S, V, shared, xp):
    names = "(L, d, k)" if shared else "(L, N, d, k)"
    d, k = int(U.shape[-2]), int(U.shape[-1])
    if k > d:
        raise ValueError(f"'U' must have k <= d columns, got shape {tuple(U.shape)}")
    _expect("V", V, U.shape, f"{names} like 'U'")
    _expect("S", S, tuple(U.shape[:-2]) + (k,), "(L, k)" if shared else "(L, N, k)")
    check_factor_values(U, S, V)


def _same(a, b, xp) -> bool:
    return tuple(a.shape) == tuple(b.shape) and bool(xp.all(a == b))


def _source(obj, *, skips, classes, weight_decay) -> _Source:
    src = as_source(obj, name="obj", expected="a Simulation, a JacobianSet or a mapping of FORMAT.md arrays")
    prov = src.provenance
    is_sim = prov.is_simulation
    kind = prov.kind
    half = any(_half(getattr(src, key)) for key in ("jacobians", "U", "S", "V"))
    classes = src.classes_or(classes)

    J = src.jacobians
    fac = {key: getattr(src, key) for key in ("U", "S", "V")}
    if J is not None:
        J = _as_float("jacobians", J, (3, 4), "(L, N, d, d) or (L, d, d)")
        if J.shape[-1] != J.shape[-2] or min(J.shape) < 1:
            raise ValueError(f"'jacobians' must hold square d x d matrices, got shape {tuple(J.shape)}")
        xp = get_namespace(J)
        shared = J.ndim == 3
        if shared:
            J = xp.expand_dims(J, axis=1)
        L, N, d = int(J.shape[0]), int(J.shape[1]), int(J.shape[-1])
        k = None
        jac = _Dense(J, shared, xp)
    elif src.require_jacobians() == "factors":
        U = _as_float("U", fac["U"], (3, 4), "(L, N, d, k) or (L, d, k)")
        shared = U.ndim == 3
        V = _as_float("V", fac["V"], (U.ndim,), "like 'U'")
        S = _as_float("S", fac["S"], (U.ndim - 1,), "(L, N, k) or (L, k)")
        xp = get_namespace(U, S, V)
        _check_factor_arrays(U, S, V, shared, xp)
        if shared:
            U, S, V = (xp.expand_dims(a, axis=1) for a in (U, S, V))
        L, N, d, k = (int(s) for s in U.shape)
        jac = _Factors(U, S, V, shared, xp)

    R = src.representations
    if R is not None:
        R = _as_float("representations", R, (3,), "(L+1, N, d)")
        if shared:
            if int(R.shape[0]) != L + 1 or int(R.shape[2]) != d:
                raise ValueError(
                    f"'representations' must have shape (L+1, N, d) = ({L + 1}, N, {d}), got {tuple(R.shape)}"
                )
        else:
            _expect("representations", R, (L + 1, N, d), "(L+1, N, d)")
    n_inputs = int(R.shape[1]) if (R is not None and shared) else N
    labels = src.labels
    if labels is not None:
        lab = np.asarray(to_numpy(labels))
        if lab.ndim != 1 or (not shared or R is not None) and lab.shape[0] != n_inputs:
            raise ValueError(f"'labels' must have shape (N,) = ({n_inputs},), got {lab.shape}")

    M_obj = src.skips
    M = None
    for key, cand in (("skips", skips), ("the source's skips", M_obj)):
        if cand is None:
            continue
        cand = _as_float("skips", cand, (2, 3), "(L, d, d) or (d, d)")
        _expect("skips", cand, (L, d, d) if cand.ndim == 3 else (d, d), "(L, d, d)" if cand.ndim == 3 else "(d, d)")
        cand = xp.broadcast_to(cand, (L, d, d)) if cand.ndim == 2 else cand
        if M is None:
            M = cand
        elif not _same(M, cand, xp):
            raise ValueError("skips= disagrees with the source's own skips; pass one of them")
    skip_kind = "identity"
    if M is not None:
        eye = xp.eye(d, dtype=M.dtype)
        if bool(xp.all(M == eye)):
            M = None
        elif bool(xp.all(M == 0)):
            skip_kind = "zero"
        else:
            orth = float(xp.max(xp.abs(_mT(M, xp) @ M - eye))) <= 1e-10
            skip_kind = "orthogonal" if orth else "general"

    W = src.classifier
    if W is not None:
        W = _as_float("classifier", W, (2,), "(C, d)")
        _expect("classifier", W, (classes, d), "(C, d)")

    config = dict(prov.config) if is_sim else {}
    wd_obj = tuple(float(v) for v in config["weight_decay"]) if "weight_decay" in config else None
    if weight_decay is not None:
        if isinstance(weight_decay, (int, float)) and not isinstance(weight_decay, bool):
            weight_decay = (weight_decay, weight_decay)
        try:
            lj, lw = weight_decay
        except (TypeError, ValueError):
            raise TypeError(f"weight_decay must be (lambda_J, lambda_W), got {weight_decay!r}") from None
        weight_decay = (check_positive_float("lambda_J", lj), check_positive_float("lambda_W", lw))
        if wd_obj is not None and wd_obj != weight_decay:
            raise ValueError(f"weight_decay={weight_decay} disagrees with the simulation's {wd_obj}")
    else:
        weight_decay = wd_obj
    loss = prov.loss
    branch_factors = int(config["branch_factors"]) if "branch_factors" in config else None
    return _Source(
        xp=xp,
        jac=jac,
        shared=shared,
        L=L,
        N=n_inputs,
        d=d,
        k=k,
        R=R,
        M=M,
        skip_kind=skip_kind,
        W=W,
        weight_decay=weight_decay,
        classes=classes,
        loss=loss if loss in ("mse", "cross_entropy") else None,
        branch_factors=branch_factors,
        kind=kind,
        grad_norm=prov.grad_norm,
        upcast_from="float16" if half else None,
        trivial=prov.trivial if is_sim else False,
        converged=prov.converged,
    )


# ----------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class _Spec:
    theorem: str
    formula: str
    rows: tuple
    predicted: float | None
    relation: str
    condition: str
    compute: Callable
    note: str = ""


def _plan(src: _Source, *, tau: float, allow_truncated: bool):
    """Which measures to compute, with their predictions; and why the others are not."""
    L, C, M, xp = src.L, src.classes, src.M, src.xp
    k1 = src.branch_factors in (None, 1)
    identity = src.skip_kind == "identity"
    layers = tuple(str(l + 1) for l in range(L))
    last = (str(L),)
    cond_k = "k = 1" + ("" if src.branch_factors is not None else " (assumed: the k = 1 UJM's prediction)")
    t3 = f"critical point, {cond_k}, identity skips"
    rank_bound = C - 1 if src.loss == "cross_entropy" else C
    unavailable: dict[str, str] = {}
    specs: dict[str, _Spec] = {}
    note = ""
    blocked = None
    if src.jac.layout == "factors":
        S = src.jac.S
        ratio = float(xp.max(_nan_divide(S[..., -1], S[..., 0], xp))) if src.k < src.d else 0.0
        ratio = 0.0 if math.isnan(ratio) else ratio
        if src.k == src.d:
            note = "from factors (the whole spectrum is stored)"
        elif ratio <= tau:
            note = f"from factors (k = {src.k}; omitted singular values are below tau * sigma_1, tau = {tau:g})"
        elif allow_truncated:
            note = (f"from the rank-{src.k} truncation U S V^T only: the stored factors omit singular values up to "
                    f"{ratio:.3g} sigma_1")
        else:
            blocked = (
                f"needs dense Jacobians, or factors that hold the numerical rank (k = d, or "
                f"S[..., -1] <= tau * S[..., 0] with tau = {tau:g}); the {src.k} stored triplets leave "
                f"sigma_k / sigma_1 up to {ratio:.3g}. Pass allow_truncated=True to measure the rank-{src.k} truncation"
            )

    def add(name, spec):
        if blocked is not None:
            unavailable[name] = blocked
        else:
            specs[name] = spec if not note else _Spec(**{**spec.__dict__, "note": note})

    add("numerical_rank", _Spec(
        "T1", "#{i: sigma_i(J_l) >= tau sigma_1(J_l)}", layers, float(rank_bound), "<=",
        f"critical point, lambda_J > 0, any skips, any k; C - 1 for cross-entropy (tau = {tau:g})",
        lambda j: _rank(j, tau, src)))
    add("energy_top_C", _Spec(
        "T1", "sum_{i<=C} sigma_i^2 / sum_i sigma_i^2", layers, 1.0, "=",
        "critical point, lambda_J > 0, any skips, any k", lambda j: _energy(j, C, src)))
    if L < 2:
        unavailable["chain_residual"] = "needs depth >= 2 (one residual per pair of consecutive layers)"
    else:
        add("chain_residual", _Spec(
            "T2", "|J_l A_l^T - A_{l+1}^T J_{l+1}|_F / (|J_l A_l^T|_F + |A_{l+1}^T J_{l+1}|_F)",
            tuple(f"{l + 1},{l + 2}" for l in range(L - 1)), 0.0 if k1 else None, "=",
            f"critical point, {cond_k}, any skips", lambda j: j.chain(M)))
    needs_w = []
    if src.W is None:
        needs_w.append("the classifier W")
    if src.weight_decay is None:
        needs_w.append("the weight decays (pass weight_decay=(lambda_J, lambda_W))")
    why_w = "needs " + " and ".join(needs_w) if needs_w else None
    if why_w:
        unavailable["classifier_residual"] = why_w
    else:
        add("classifier_residual", _Spec(
            "T2", "|lambda_W W^T W - lambda_J J_L A_L^T|_F / (|lambda_W W^T W|_F + |lambda_J J_L A_L^T|_F)",
            last, 0.0 if k1 else None, "=", f"critical point, {cond_k}, any skips",
            lambda j: j.classifier_residual(src.W, src.weight_decay, M)))
    add("asymmetry", _Spec(
        "T3", "|J_l - J_l^T|_F / (2 |J_l|_F)", layers, 0.0 if (k1 and identity) else None, "=", t3,
        lambda j: j.asymmetry()))
    if L < 2:
        unavailable["depth_spread"] = "needs depth >= 2"
    else:
        add("depth_spread", _Spec(
            "T3", "mean_l |J_l - Jbar|_F / |Jbar|_F", (f"1..{L}",), 0.0 if (k1 and identity) else None, "=",
            t3 + ", spectra of J_l above -1/2", lambda j: j.depth_spread()))
    add("psd_defect", _Spec(
        "T3", "max(0, -lambda_min((J_l + J_l^T)/2)) / sigma_1(J_l)", layers, 0.0 if (k1 and identity) else None,
        "=", t3 + ", spectra of J_l above -1/2", lambda j: j.psd_defect()))
    if why_w:
        unavailable["closed_form_error"] = why_w
    else:
        add("closed_form_error", _Spec(
            "T3", "|J_L - J*|_F / |J*|_F, J* = (-I + (I + 4 (lambda_W/lambda_J) W^T W)^{1/2}) / 2", last,
            0.0 if (k1 and identity) else None, "=", t3 + ", spectra of J_l above -1/2",
            lambda j: j.closed_form_error(src.W, src.weight_decay)))
    if src.jac.layout == "factors" and M is not None:
        unavailable["gain_share_error"] = (
            "needs dense Jacobians when the skips are not the identity (the end-to-end map "
            "prod_l (M_l + J_l) is computed from factors only for M_l = I)"
        )
    elif blocked is None and src.jac.layout == "factors" and src.k < min(C, src.d) and "truncation" in note:
        unavailable["gain_share_error"] = f"needs the top C = {C} singular values; the factors hold k = {src.k}"
    else:
        add("gain_share_error", _Spec(
            "T4", "max_{i<=C} |sigma_i(J_l) - (p_i^{1/L} - 1)| / (p_1^{1/L} - 1), p_i = sigma_i(A_L...A_1)",
            layers, 0.0 if (k1 and identity) else None, "=", t3 + ", spectra of J_l above -1/2",
            lambda j: j.gain_share(C, M)))
    if src.R is None:
        unavailable["linearity"] = "needs representations (L+1, N, d)"
    else:
        add("linearity", _Spec(
            "T5", "cos(h_l - M_l h_{l-1}, J_l h_{l-1})", layers, 1.0, "=",
            "the linearised model (exactly 1 for the UJM and for bias-free ReLU branches)",
            lambda j: j.linearity(src.R, M)))
    if src.skip_kind == "zero":
        unavailable["skip_asymmetry"] = "the skips are zero, so J_L M_L^T = 0 has no asymmetry"
    else:
        add("skip_asymmetry", _Spec(
            "T6", "|J_L M_L^T - M_L J_L^T|_F / (2 |J_L M_L^T|_F)", last, 0.0 if k1 else None, "=",
            f"critical point, {cond_k}, any skips (T2 at the last layer)",
            lambda j: j.skip_asymmetry(M)))
    order = ("numerical_rank", "energy_top_C", "chain_residual", "classifier_residual", "asymmetry",
             "depth_spread", "psd_defect", "closed_form_error", "gain_share_error", "linearity", "skip_asymmetry")
    return {n: specs[n] for n in order if n in specs}, {n: unavailable[n] for n in order if n in unavailable}


def _dtype(src):
    j = src.jac
    return j.J.dtype if j.layout == "dense" else j.U.dtype


def _rank(jac, tau, src):
    xp = src.xp
    s = jac.spectrum()
    count = xp.sum(xp.astype(s >= tau * s[..., :1], s.dtype), axis=-1)
    return _nan_divide(count, xp.astype(s[..., 0] > 0, s.dtype), xp)


def _energy(jac, C, src):
    xp = src.xp
    s = jac.spectrum()
    s = _nan_divide(s, s[..., :1], xp)  # scale-free: sigma_i / sigma_1 (0/0 for a zero matrix)
    s2 = s * s
    return _nan_divide(xp.sum(s2[..., :C], axis=-1), xp.sum(s2, axis=-1), xp)


def _evaluate(specs, jac, xp, failed=None):
    """Every measure's samples; a measure that overflows (or whose LAPACK call fails on
    the overflowed numbers) is recorded in ``failed`` with the reason instead of raising."""
    out = {}
    failed = {} if failed is None else failed
    # 0/0 (a zero Jacobian or vector) is an undefined sample: NaN, excluded and counted later.
    for name, spec in specs.items():
        if name in failed:
            continue
        try:
            with np.errstate(invalid="ignore", divide="ignore", over="raise"):
                v = np.asarray(to_numpy(spec.compute(jac)), dtype=np.float64)
        except (FloatingPointError, np.linalg.LinAlgError) as exc:
            failed[name] = (f"overflows {_dtype_name(jac)} ({type(exc).__name__}: {exc}): the measure multiplies "
                            "Jacobians with the skips, which is not scale-free; rescale the Jacobians")
            continue
        out[name] = v.reshape(len(spec.rows), -1)
    return out


def _dtype_name(jac) -> str:
    return str((jac.J if jac.layout == "dense" else jac.U).dtype).split(".")[-1]


def _summarise(name, spec, samples, chances):
    bad = np.isnan(samples)
    if bad.all():
        return None
    vals = samples[~bad]
    if spec.predicted is None or spec.relation == "<=":
        worst = float(np.max(vals))
    else:
        worst = float(vals[np.argmax(np.abs(vals - spec.predicted))])
    chances = [c for c in chances if not math.isnan(c)]
    return TheoryMeasure(
        name=name,
        theorem=spec.theorem,
        formula=spec.formula,
        value=float(np.median(vals)),
        spread=Spread.of(vals),
        worst=worst,
        per_layer=_frozen(_nanmedian(samples, axis=1)),
        per_input=_frozen(_nanmedian(samples, axis=0)),
        rows=spec.rows,
        samples=_frozen(samples),
        chance=float(np.mean(chances)) if chances else None,
        chance_std=float(np.std(chances)) if chances else None,
        predicted=spec.predicted,
        relation=spec.relation,
        condition=spec.condition,
        excluded=int(bad.sum()),
        note=spec.note,
    )


def _fit_measures(src: _Source, fitted, tau):
    """Alignment of the network's top-k singular subspaces with the fitted model's."""
    xp = src.xp
    if int(fitted.depth) != src.L or int(fitted.width) != src.d:
        raise ValueError(
            f"fitted must have the depth and width of the source (L={src.L}, d={src.d}), got "
            f"L={fitted.depth}, d={fitted.width}"
        )
    floss = fitted.config.get("loss")
    # T1: cross-entropy gives rank <= C - 1, so the C-th direction would be an arbitrary null vector.
    k = src.classes - 1 if floss == "cross_entropy" else src.classes
    k = min(k, src.d)
    note = ""
    if src.k is not None and src.k < k:
        note = f"k = {src.k}, all the stored factors hold (C = {src.classes})"
        k = src.k
    Jf = asarray(to_numpy(fitted.jacobians), xp=xp)
    Jf = xp.astype(Jf, _dtype(src))
    Uf, Sf, Vf = top_singular(Jf, k)
    Un, Sn, Vn = src.jac.top(k)
    rows = tuple(str(l + 1) for l in range(src.L))
    left = xp.sum((_mT(Un, xp) @ Uf[:, None, ...]) ** 2, axis=(-2, -1)) / k
    right = xp.sum((_mT(Vn, xp) @ Vf[:, None, ...]) ** 2, axis=(-2, -1)) / k
    Sfb = xp.broadcast_to(Sf[:, None, :], Sn.shape)
    ratio = xp.where(Sfb > 0, Sn / xp.where(Sfb > 0, Sfb, xp.ones_like(Sfb)),
                     xp.where(Sn > 0, xp.full_like(Sn, float("inf")), xp.full_like(Sn, float("nan"))))
    chance = k / src.d
    specs = {
        "subspace_alignment_left": (_Spec("fit", "|U_l^T U*_l|_F^2 / k", rows, 1.0, "=",
                                          "the network's Jacobians are the fitted UJM's", None, note), left, chance),
        "subspace_alignment_right": (_Spec("fit", "|V_l^T V*_l|_F^2 / k", rows, 1.0, "=",
                                           "the network's Jacobians are the fitted UJM's", None, note), right, chance),
    }
    for i in range(k):
        specs[f"sigma_ratio_{i + 1}"] = (
            _Spec("fit", f"sigma_{i + 1}(J_l) / sigma_{i + 1}(J*_l)", rows, 1.0, "=",
                  "the network's Jacobians are the fitted UJM's", None,
                  note or "chance: the baseline keeps singular values, so it equals the value"),
            ratio[..., i], None)
    out = {}
    for name, (spec, vals, ch) in specs.items():
        samples = np.asarray(to_numpy(vals), dtype=np.float64).reshape(src.L, -1)
        m = _summarise(name, spec, samples, [] if ch is None else [ch])
        if m is not None:
            out[name] = m
    return out, k
