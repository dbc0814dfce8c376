"""How results are written out: JSON-safe numbers, frozen arrays, numbers as text, tables.

Design constraints, first:

- One copy of each piece, shared by the RA report, the theory report, the HTML pages,
  the summaries and the data sets; each caller keeps its own number style (digits and
  where scientific notation starts) through the arguments of :func:`number`, so no
  printed value changes.
- NumPy only; nothing here imports an optional dependency.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["freeze", "frozen_copy", "html_table", "json_array", "json_float", "jsonable", "number", "text_table",
           "verdict_word"]


def json_float(v: Any) -> float | str | None:
    """A float for JSON: NaN (and None) as None, infinities as ``"inf"`` / ``"-inf"``.

    Examples
    --------
    >>> json_float(1.5), json_float(float("nan")), json_float(-float("inf"))
    (1.5, None, '-inf')
    """
    if v is None:
        return None
    v = float(v)
    if math.isnan(v):
        return None
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def json_array(a: Any) -> Any:
    """Nested lists of :func:`json_float` values (a bare value for a 0-d array).

    Examples
    --------
    >>> json_array(np.array([[1.0, np.nan], [np.inf, 0.5]]))
    [[1.0, None], ['inf', 0.5]]
    """
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 0:
        return json_float(a)
    return [json_array(x) for x in a]


def jsonable(obj: Any) -> Any:
    """Plain JSON values, recursively: NaN -> None, +-inf -> ``"inf"``/``"-inf"``, arrays -> lists,
    paths -> strings, anything else unknown -> ``str(obj)``.

    Examples
    --------
    >>> jsonable({"a": np.array([1.0, np.nan]), "b": (np.int64(2), True), "c": float("inf")})
    {'a': [1.0, None], 'b': [2, True], 'c': 'inf'}
    """
    import pathlib
    from collections.abc import Mapping

    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return json_float(obj)
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, pathlib.PurePath):
        return str(obj)
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def frozen_copy(a: Any) -> np.ndarray:
    """A read-only float64 copy of ``a`` (the caller's array is never shared)."""
    out = np.array(a, dtype=np.float64, copy=True)
    out.setflags(write=False)
    return out


def freeze(a: np.ndarray) -> np.ndarray:
    """Make ``a`` itself read-only and return it (for arrays this package just built)."""
    a.flags.writeable = False
    return a


def number(v: Any, *, digits: int = 4, sci_digits: int | None = None, low: float = 1e-3, high: float = 1e5,
           fixed: bool = False, zero: str | None = None) -> str:
    """``v`` as text: ``f"{v:.{digits}g}"`` (``f`` with ``fixed``), scientific with
    ``sci_digits`` outside ``low <= |v| < high`` when ``sci_digits`` is given.

    None is ``"-"``, a bool its name, NaN ``"nan"``, infinities ``"inf"`` / ``"-inf"``,
    and zero ``zero`` when given.

    Examples
    --------
    >>> number(0.123456), number(None), number(2e-7, digits=3, sci_digits=2), number(0.5, fixed=True)
    ('0.1235', '-', '2.00e-07', '0.5000')
    """
    if v is None:
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0 and zero is not None:
        return zero
    if sci_digits is not None and v != 0 and not low <= abs(v) < high:
        return f"{v:.{sci_digits}e}"
    return f"{v:.{digits}f}" if fixed else f"{v:.{digits}g}"


def verdict_word(v: bool | None) -> str:
    """``"holds"``, ``"fails"`` or ``"undetermined"`` (None)."""
    return "undetermined" if v is None else ("holds" if v else "fails")


def text_table(rows: Sequence[Sequence[Any]], *, indent: str = "") -> list[str]:
    """The lines of a plain-text table: columns padded to their widest cell, two spaces apart.

    Examples
    --------
    >>> text_table([("a", "bb"), ("ccc", "d")], indent="  ")
    ['  a    bb', '  ccc  d']
    """
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(r[j]) for r in cells) for j in range(len(cells[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]


def _mark(c: str) -> str:
    if c.endswith("(FAIL)") or c == "fails":
        return ' class="fail"'
    if c.endswith("(pass)") or c == "holds":
        return ' class="pass"'
    if c in ("n/a", "undetermined"):
        return ' class="na"'
    return ""


def html_table(rows: Sequence[Sequence[Any]], *, marks: bool = False) -> str:
    """An HTML table: the first row is the header; every cell is escaped.

    With ``marks``, cells that pass, fail or are undetermined get the classes ``pass``,
    ``fail`` and ``na``.

    Examples
    --------
    >>> html_table([("x", "y"), ("1", "<2")])
    '<table><thead><tr><th>x</th><th>y</th></tr></thead><tbody><tr><td>1</td><td>&lt;2</td></tr></tbody></table>'
    """
    esc = html.escape
    head = "".join(f"<th>{esc(str(c))}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td{_mark(str(c)) if marks else ''}>{esc(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
