"""Every Python example in README.md runs (blocks after a `<!-- not-run -->` line are skipped),
and prints what the README says it prints.

Convention for shown output (the ``# ->`` marker)
-------------------------------------------------
- ``statement  # -> TEXT``: what that statement prints (every ``print`` call on its lines,
  the calls' output joined) is ``TEXT``.
- Comment lines ``# -> TEXT`` right after a statement (nothing but such lines in between):
  what the statement prints, one ``# ->`` line per printed line; used for loops and for
  output of several lines.
- Comments without the marker (``# the table the main job prints``) describe, they are not
  checked.

How ``TEXT`` is compared with the printed text:

- ``...`` matches any text, newlines included (doctest's ELLIPSIS);
- a number matches a printed number that rounds to it at the shown precision: within half a
  unit of its last shown digit (``-0.956`` matches -0.9555 to -0.9565, ``2.8e-15`` matches
  2.75e-15 to 2.85e-15, ``3`` matches only 3 printed as an integer or 2.5 to 3.5 otherwise);
- ``<X`` (no space) matches a printed number below ``X``: for values at rounding level,
  such as a converged gradient norm, whose digits depend on the BLAS;
- any other text must be printed as shown, except that every run of white space matches
  any run of white space.
"""

import ast
import io
import math
import pathlib
import re
import sys

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_TOKEN = re.compile(rf"(\.\.\.|<{_NUMBER}|{_NUMBER})")
_MARK = "# -> "


def _blocks():
    text = README.read_text()
    out = []
    for m in re.finditer(r"(<!-- not-run -->\s*)?```python\n(.*?)```", text, re.S):
        if not m.group(1):
            line = text[: m.start()].count("\n") + 1
            out.append(pytest.param(line, m.group(2), id=f"README.md:{line}"))
    return out


def _half_unit(shown: str) -> float:
    """Half a unit in the last shown digit of a number written as ``shown``."""
    mantissa, _, exponent = shown.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (int(exponent or 0) - decimals)


def output_matches(expected: str, printed: str) -> bool:
    """Whether ``printed`` shows ``expected`` under the rules of this module's docstring."""
    pattern, checks = [], []
    for i, piece in enumerate(_TOKEN.split(expected.strip())):
        if i % 2 == 0:  # literal text
            pattern.extend(r"\s+" if part.isspace() else re.escape(part) for part in re.split(r"(\s+)", piece) if part)
        elif piece == "...":
            pattern.append(".*?")
        else:
            pattern.append(f"({_NUMBER})")
            checks.append(piece)
    m = re.fullmatch("".join(pattern), printed.strip(), re.S)
    if m is None:
        return False
    for shown, got in zip(checks, m.groups()):
        value = float(got)
        if shown.startswith("<"):
            if not value < float(shown[1:]):
                return False
        elif not math.isclose(value, float(shown), rel_tol=0.0, abs_tol=_half_unit(shown) * (1 + 1e-9)):
            return False
    return True


def expected_outputs(code: str, first_line: int) -> list[tuple[int, tuple[int, int], str]]:
    """``(README line of the marker, (first, last) README line of the statement, expected)``."""
    lines = code.splitlines()
    spans = [(n.lineno, n.end_lineno) for n in ast.walk(ast.parse(code)) if isinstance(n, ast.stmt)]
    top = [(n.lineno, n.end_lineno) for n in ast.parse(code).body]
    out = []
    for i, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped.startswith(_MARK.strip()):
            continue
        if _MARK in line and not line.lstrip().startswith("#"):
            inner = min((s for s in spans if s[0] <= i <= s[1]), key=lambda s: s[1] - s[0])
            out.append((first_line + i, (first_line + inner[0], first_line + inner[1]), line.split(_MARK, 1)[1]))
    for start, end in top:  # full-line markers after a top-level statement
        expected, j = [], end
        while j < len(lines) and lines[j].strip().startswith(_MARK.strip()):
            expected.append(lines[j].strip()[len(_MARK.strip()):].strip())
            j += 1
        if expected:
            out.append((first_line + end + 1, (first_line + start, first_line + end), "\n".join(expected)))
    return out


@pytest.mark.parametrize(
    "expected, printed",
    [
        ("True <1e-12", "True 2.8208575841889886e-15"),
        ("True slope b = -0.956 in [-1.3, -0.7]", "True slope b = -0.956 in [-1.3, -0.7]"),
        ("slope -0.96", "slope -0.9557"),
        ("2.8e-15", "2.8208e-15"),
        ("(8, 16, 16)", "(8, 16, 16)"),
        ("RA4 is a law; ...", "RA4 is a law; one model cannot show it"),
        ("a:  ... b 0.27", "a: anything, b 0.2712"),
        ("[0.731 1.82 2.366]", "[0.731 1.82  2.366]"),
        ("x\ny", "x\n  y"),
        ("...slope 1.5...", "first line\nslope 1.5 (fit)\nlast"),
    ],
)
def test_output_matches(expected, printed):
    assert output_matches(expected, printed)


@pytest.mark.parametrize(
    "expected, printed",
    [
        ("True <1e-12", "True 2e-12"),
        ("slope -0.96", "slope -0.9539"),
        ("2.8e-15", "2.9e-15"),
        ("3", "4"),
        ("(8, 16, 16)", "(8, 16, 17)"),
        ("True", "False"),
        ("RA2 True", "RA2 True, RA3 False"),
        ("ab", "a b"),
    ],
)
def test_output_mismatches(expected, printed):
    assert not output_matches(expected, printed)


@pytest.mark.parametrize("first_line, code", _blocks())
def test_readme_example_runs(first_line, code, tmp_path, monkeypatch):
    from ramodel import mappings

    if "import torch" in code:
        pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    printed: dict[int, list[str]] = {}

    def recording_print(*args, sep=" ", end="\n", file=None, flush=False):
        caller = sys._getframe(1)
        if file is None and caller.f_code.co_filename == str(README):
            buffer = io.StringIO()
            print(*args, sep=sep, end=end, file=buffer)
            printed.setdefault(caller.f_lineno, []).append(buffer.getvalue())
        print(*args, sep=sep, end=end, file=file, flush=flush)

    before = set(mappings.families())
    try:
        source = "\n" * first_line + code  # README's line numbers in tracebacks and in `printed`
        exec(compile(source, str(README), "exec"), {"__name__": "__readme__", "print": recording_print})
    finally:
        for name in set(mappings.families()) - before:  # examples register families: undo it
            mappings.unregister(name)
    checks = expected_outputs(code, first_line)
    markers = [i for i, line in enumerate(code.splitlines(), start=first_line + 1) if _MARK.strip() in line]
    assert sum(e.count("\n") + 1 for _, _, e in checks) == len(markers), (
        f"a '# ->' line in README.md:{markers} follows no statement (see tests/test_readme.py)")
    for marker, (start, end), expected in checks:
        got = "".join(text for line, texts in sorted(printed.items()) if start <= line <= end for text in texts)
        assert output_matches(expected, got), f"README.md:{marker} shows {expected!r}, the example printed {got!r}"
