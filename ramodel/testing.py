"""Property-based testing of skip-mapping families (public; needs Hypothesis: the
``testing`` extra, ``pip install 'ramodel[testing]'``).

This is how a user tests a family of their own: register it with
:func:`ramodel.mappings.register`, then call :func:`assert_family_invariants`.

- :func:`family_params` draws valid parameter dicts from a family's :class:`~ramodel.mappings.Param`
  declarations (and its ``constraint``).
- :func:`mappings` draws matrices (NumPy) of a family.
- :func:`assert_family_invariants` property-tests every declared attribute with
  :func:`ramodel.mappings.check` on drawn widths, seeds and parameters; checks that the
  same seed gives the same matrix, that the structured form (``family.structured``)
  applies like the dense matrix, and that invalid widths and parameters raise errors
  naming the argument. Failure messages name the family, attribute, width, seed,
  parameters and the deviation against its tolerance.

Examples
--------
>>> from ramodel.testing import assert_family_invariants
>>> assert_family_invariants("permutation", max_examples=5)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "ramodel.testing needs Hypothesis: pip install 'ramodel[testing]' (or pip install hypothesis)"
    ) from exc

from . import mappings as _mappings
from ._validation import check_int

__all__ = ["family_params", "mappings", "assert_family_invariants"]

_SEEDS = st.integers(0, 2**32 - 1)


def _param_strategy(param: _mappings.Param) -> st.SearchStrategy:
    if param.kind == "bool":
        return st.booleans()
    if param.kind == "choice":
        return st.sampled_from(param.choices)
    lo, hi = param.sample_range()
    if param.kind == "int":
        return st.integers(int(lo), int(hi))
    return st.floats(
        min_value=float(lo),
        max_value=float(hi),
        exclude_min=param.low_open and lo == param.low,
        exclude_max=param.high_open and hi == param.high,
        allow_nan=False,
        allow_infinity=False,
        allow_subnormal=False,
    )


def _valid(family: _mappings.Family, params: dict) -> bool:
    try:
        family.resolve_params(params)
    except ValueError:
        return False
    return True


def family_params(family: str, **fixed_params) -> st.SearchStrategy:
    """Strategy drawing valid parameter dicts for ``family``.

    Parameters
    ----------
    family : str
        A registered name or ``"scaled(NAME)"``.
    **fixed_params
        Parameters held fixed (validated now); the others are drawn from each
        :class:`~ramodel.mappings.Param`'s sample range, then filtered through the
        family's ``constraint``.

    Returns
    -------
    SearchStrategy of dict
        Complete parameter dicts (every parameter present).

    Examples
    --------
    >>> from hypothesis import given
    >>> @given(family_params("correlation", kind="block"))
    ... def test(params):
    ...     assert params["kind"] == "block" and 1 + (params["block"] - 1) * params["rho"] > 0
    >>> test()
    """
    fam = _mappings.get(family)
    fixed = fam.resolve_params(fixed_params)
    parts = {
        name: st.just(fixed[name]) if name in fixed_params else _param_strategy(spec)
        for name, spec in fam.params.items()
    }
    return st.fixed_dictionaries(parts).filter(lambda p: _valid(fam, p))


def _width_strategy(width) -> st.SearchStrategy:
    if isinstance(width, st.SearchStrategy):
        return width
    return st.just(check_int("width", width, minimum=1))


def _cases(family: str, width, fixed_params: Mapping[str, Any], seed=_SEEDS) -> st.SearchStrategy:
    """Strategy of ``(width, seed, params)`` triples."""
    seed = seed if isinstance(seed, st.SearchStrategy) else st.just(seed)
    return st.tuples(_width_strategy(width), seed, family_params(family, **fixed_params))


def mappings(family: str, width=st.integers(1, 64), *, seed=_SEEDS, dtype="float64", **fixed_params) -> st.SearchStrategy:
    """Strategy drawing matrices of ``family`` (NumPy arrays, shape ``(width, width)``).

    Parameters
    ----------
    family : str
        A registered name or ``"scaled(NAME)"``.
    width : int or SearchStrategy of int, default ``st.integers(1, 64)``
    seed : int or SearchStrategy of int, default ``st.integers(0, 2**32 - 1)``
    dtype : {"float64", "float32"}
    **fixed_params
        Parameters held fixed; the rest come from :func:`family_params`.

    Examples
    --------
    >>> import numpy as np
    >>> from hypothesis import given
    >>> @given(mappings("orthogonal", width=st.integers(1, 8)))
    ... def test(M):
    ...     assert np.allclose(M.T @ M, np.eye(M.shape[0]))
    >>> test()
    """
    fam = _mappings.get(family)
    return _cases(family, width, fixed_params, seed).map(lambda c: fam(c[0], seed=c[1], dtype=dtype, **c[2]))


def _label(name: str, width: int, seed: int, params: dict, dtype: str) -> str:
    return f"family {name!r} at width={width}, seed={seed}, dtype={dtype}, params={params}"


def _expect_error(call, kinds: tuple, argument: str, what: str) -> None:
    try:
        call()
    except kinds as exc:
        if not re.search(rf"(?<![A-Za-z0-9_]){re.escape(argument)}(?![A-Za-z0-9_])", str(exc)):
            raise AssertionError(f"{what}: raised {type(exc).__name__} whose message does not name {argument!r}: {exc}") from None
        return
    except Exception as exc:  # the wrong kind of error is a failure, reported as such
        raise AssertionError(f"{what}: expected {'/'.join(k.__name__ for k in kinds)}, got {type(exc).__name__}: {exc}") from None
    raise AssertionError(f"{what}: expected {'/'.join(k.__name__ for k in kinds)}, but no error was raised")


def _assert_rejects_invalid(fam: _mappings.Family) -> None:
    """Invalid widths and parameters must raise errors that name the argument."""
    name = fam.name
    _expect_error(lambda: fam(0, seed=0), (ValueError,), "width", f"family {name!r} with width=0")
    _expect_error(lambda: fam(2.5, seed=0), (TypeError,), "width", f"family {name!r} with width=2.5")
    _expect_error(
        lambda: fam(3, seed=0, not_a_parameter=1), (TypeError,), "not_a_parameter", f"family {name!r} with an unknown parameter"
    )
    for pname, spec in fam.params.items():
        for value, kinds in spec.invalid_values():
            _expect_error(
                lambda: fam(3, seed=0, **{pname: value}),
                kinds,
                pname,
                f"family {name!r} with invalid {pname}={value!r} (valid: {spec.interval()})",
            )
    for params, pname in fam.invalid:
        _expect_error(lambda: fam(3, seed=0, **params), (ValueError,), pname, f"family {name!r} with invalid params {params}")


def _assert_case(fam: _mappings.Family, width: int, seed: int, params: dict, dtype: str) -> None:
    label = _label(fam.name, width, seed, params, dtype)
    M = fam(width, seed=seed, dtype=dtype, **params)
    if M.shape != (width, width) or M.dtype != np.dtype(dtype):
        raise AssertionError(f"{label}: got shape {M.shape} and dtype {M.dtype}, expected ({width}, {width}) {dtype}")
    again = fam(width, seed=seed, dtype=dtype, **params)
    if not np.array_equal(M, again):
        diff = float(np.max(np.abs(np.asarray(M, float) - np.asarray(again, float))))
        raise AssertionError(f"{label}: not deterministic: two draws with the same seed differ by up to {diff:.3e}")

    declared = fam.attributes(M, **params)
    report = _mappings.check(M, declared)
    if not report.passed:
        lines = [
            f"family {fam.name!r}: attribute {v.attribute!r} fails at width={width}, seed={seed}, dtype={dtype}, "
            f"params={params}: deviation {v.deviation:.3e} > tolerance {v.tolerance:.3e} ({v.measure})"
            for v in report.failures
        ]
        raise AssertionError("\n".join(lines))

    # The structured form must be the same draw, applied along the last axis.
    dense = fam(width, seed=seed, **params)
    h = np.random.default_rng(width).standard_normal((3, width))
    fast = _mappings.apply(fam.structured(width, seed=seed, **params), h)
    ref = h @ dense.T
    # Both are sums of the same products in different orders: |error| <= 2 gamma_n (|h| |M|^T).
    bound = (4 * width + 16) * np.finfo(np.float64).eps * (np.abs(h) @ np.abs(dense).T)
    if not np.all(np.abs(fast - ref) <= bound):
        worst = float(np.max(np.abs(fast - ref) - bound))
        raise AssertionError(f"{label}: the structured form differs from the dense matrix "
                             f"(excess {worst:.3e} over the rounding bound)")


def assert_family_invariants(
    family: str,
    *,
    max_examples: int = 25,
    width=st.integers(1, 64),
    dtype: str = "float64",
    derandomize: bool = True,
    **fixed_params,
) -> None:
    """Property-test a registered family; raise ``AssertionError`` on the first failure.

    Checks, on drawn ``(width, seed, params)``:

    - every declared attribute passes :func:`ramodel.mappings.check`;
    - same seed, same matrix (bitwise), with the requested shape and dtype;
    - the structured form ``family.structured(...)`` applied with
      :func:`ramodel.mappings.apply` equals ``h @ M.T`` within the rounding bound of
      the two summation orders;

    and, once: ``width=0`` raises ``ValueError`` and ``width=2.5`` ``TypeError`` naming
    ``width``; an unknown parameter raises ``TypeError``; for every parameter, values just
    outside its range (or of the wrong type) raise ``ValueError`` (``TypeError``) naming
    it; the family's declared ``invalid`` combinations raise ``ValueError`` naming the
    parameter.

    Parameters
    ----------
    family : str
        A registered name (including a user's) or ``"scaled(NAME)"``.
    max_examples : int, default 25
        Hypothesis examples (the ``ci`` profile's count).
    width : int or SearchStrategy of int, default ``st.integers(1, 64)``
    dtype : {"float64", "float32"}
        dtype of the checked draws (tolerances follow its eps).
    derandomize : bool, default True
        Repeatable examples; no Hypothesis database is written.
    **fixed_params
        Parameters held fixed; the rest are drawn by :func:`family_params`.

    Raises
    ------
    AssertionError
        Naming the family, attribute, width, seed, parameters and the deviation.

    Examples
    --------
    >>> assert_family_invariants("block_orthogonal", max_examples=5, width=st.integers(1, 9))
    """
    fam = _mappings.get(family)
    max_examples = check_int("max_examples", max_examples, minimum=1)
    _assert_rejects_invalid(fam)
    cases = _cases(family, width, fixed_params)

    @settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=derandomize,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(cases)
    def invariants(case):
        _assert_case(fam, case[0], case[1], case[2], dtype)

    invariants()
