"""Argument checks shared by every public function.

Each check raises with a message that names the argument, the expected value and what
was received, so users can fix the call from the message alone.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = [
    "check_int",
    "check_positive_float",
    "check_choice",
    "check_finite_array",
    "as_generator",
    "check_real_array",
    "check_integer_labels",
    "check_optional_mapping",
    "check_keywords",
    "check_memory",
    "physical_memory",
]


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as int, or raise naming ``name`` and the valid range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        rng = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be {rng}, got {value}")
    if maximum is not None and value > maximum:
        rng = f"<= {maximum}" if minimum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be {rng}, got {value}")
    return value


def check_positive_float(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a finite float > 0 (or >= 0), or raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    bound = ">= 0" if allow_zero else "> 0"
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise listing them."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_finite_array(name: str, x: Any, xp) -> None:
    """Raise ``ValueError`` naming ``name`` if ``x`` holds NaN or Inf."""
    if not bool(xp.all(xp.isfinite(x))):
        raise ValueError(f"{name} must be finite, but it contains NaN or Inf")


def as_generator(seed: Any) -> np.random.Generator:
    """Normalise ``seed`` (None, int, SeedSequence or Generator) to a NumPy Generator.

    All randomness in ramodel is drawn on the host through this helper, so the same
    seed gives the same numbers on every backend.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or isinstance(seed, (numbers.Integral, np.random.SeedSequence)):
        if isinstance(seed, bool):
            raise TypeError(f"seed must be an int, SeedSequence or numpy Generator, got {seed!r}")
        if isinstance(seed, numbers.Integral) and seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        return np.random.default_rng(seed)
    raise TypeError(f"seed must be an int, SeedSequence or numpy Generator, got {type(seed).__name__}")


def _host_array(name: str, x: Any, expected: str) -> np.ndarray:
    from .backend import to_numpy

    if isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be {expected}, got a {type(x).__name__} ({x!r:.40})")
    try:
        a = to_numpy(x)
        if not isinstance(a, np.ndarray):
            a = np.asarray(a)
    except Exception as exc:
        raise TypeError(f"{name} must be {expected}, got {type(x).__name__} ({exc})") from None
    return a


def check_real_array(name: str, x: Any, *, allow_empty: bool = False) -> np.ndarray:
    """``x`` as a host array of real numbers (bool, integer or floating dtype), or raise naming ``name``.

    Complex values are refused rather than losing their imaginary part to a cast, and
    strings, bytes and Python objects (ragged lists) are refused rather than failing
    deep inside NumPy. Unless ``allow_empty``, an array with no elements is refused.

    Examples
    --------
    >>> check_real_array("inputs", [[1, 2], [3, 4]]).dtype.kind
    'i'
    >>> check_real_array("inputs", [1j])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: inputs must be an array of real numbers, got complex dtype complex128; pass x.real ...
    """
    expected = "an array of real numbers"
    a = _host_array(name, x, expected)
    kind = a.dtype.kind
    if kind == "c":
        raise TypeError(f"{name} must be {expected}, got complex dtype {a.dtype}; pass x.real (or abs(x)) "
                        "explicitly if that is meant")
    if kind not in "biuf":
        what = {"U": "strings", "S": "bytes", "O": "Python objects (a ragged or mixed list?)"}.get(kind, "values")
        raise TypeError(f"{name} must be {expected}, got {what} (dtype {a.dtype})")
    if not allow_empty and a.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {a.shape}")
    return a


def check_integer_labels(name: str, y: Any) -> np.ndarray:
    """``y`` as a non-empty host array of integer class labels (integer dtype, or whole-number floats)."""
    expected = "an array of integer class labels"
    a = _host_array(name, y, expected)
    kind = a.dtype.kind
    if kind not in "biuf" or (kind == "f" and not bool(np.all(np.isfinite(a)) and np.all(np.mod(a, 1) == 0))):
        what = {"U": "strings", "S": "bytes", "O": "Python objects", "c": "complex numbers",
                "f": "non-integer numbers"}.get(kind, "values")
        raise TypeError(f"{name} must be {expected} in [0, classes), got {what} (dtype {a.dtype}); "
                        "map class names to 0..C-1 first")
    if a.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {a.shape}")
    return a


def check_optional_mapping(name: str, value: Any) -> dict:
    """``value`` (None or a mapping with string keys) as a new dict, or raise naming ``name``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict of parameter names to values (or None), got "
                        f"{type(value).__name__} {value!r:.60}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise TypeError(f"{name} keys must be parameter names (str), got {bad!r:.60}")
    return dict(value)


def check_keywords(name: str, given: Iterable[str], known: Iterable[str]) -> None:
    """Raise ``TypeError`` naming each keyword in ``given`` that is not in ``known``, with a suggestion.

    Examples
    --------
    >>> check_keywords("sweep()", ["branch_factor"], ["branch_factors", "loss"])
    Traceback (most recent call last):
    ...
    TypeError: sweep() got an unexpected keyword argument 'branch_factor' (did you mean 'branch_factors'?)
    """
    known = list(known)
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; valid keywords are {sorted(known)}"
            raise TypeError(f"{name} got an unexpected keyword argument {key!r}{hint}")


def physical_memory() -> int | None:
    """This machine's physical memory in bytes, or None where the platform does not say."""
    import os

    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(what: str, nbytes: float, *, advice: str) -> None:
    """Refuse, before allocating, work whose memory estimate exceeds this machine's memory.

    Raises ``ValueError`` naming the call (``what``), the estimate, the machine's memory and
    ``advice`` (which argument to reduce), instead of a bare ``MemoryError`` later.

    Examples
    --------
    >>> check_memory("f(width=8)", 1e3, advice="reduce width")
    >>> check_memory("f(width=10**9)", 1e30, advice="reduce width")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: f(width=10**9) needs about ... GiB of memory, more than this machine has (...); reduce width
    """
    total = physical_memory()
    if total is not None and nbytes > total:
        raise ValueError(f"{what} needs about {nbytes / 2**30:.3g} GiB of memory, more than this machine has "
                         f"({total / 2**30:.3g} GiB); {advice}")
