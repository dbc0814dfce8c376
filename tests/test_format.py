"""ramodel._format: the shared number formatter and table printers keep every caller's output (issue 18)."""

import numpy as np

from ramodel import _format, html_report, report, summary
from ramodel.theory import report as theory_report

VALUES = (None, 0.0, -0.0, 1e-7, 0.00123456, 1.0, 12345.678, 1e6, float("nan"), float("inf"), -float("inf"))


def test_each_callers_number_style():
    # Expected strings written out by hand from each formatter's rule before issue 18.
    assert [report._fmt(v) for v in VALUES] == [
        "-", "0", "-0", "1e-07", "0.001235", "1", "1.235e+04", "1e+06", "nan", "inf", "-inf"]
    assert [html_report._fmt(v) for v in VALUES] == [
        "-", "0", "0", "1.000e-07", "0.001235", "1", "1.235e+04", "1.000e+06", "nan", "inf", "-inf"]
    assert [theory_report._fmt(v) for v in VALUES] == [
        "-", "0", "0", "1.00e-07", "0.00123", "1", "1.23e+04", "1.00e+06", "nan", "inf", "-inf"]
    assert [summary._fmt(v) for v in VALUES[1:]] == [
        "0.0000", "-0.0000", "1.000e-07", "0.0012", "1.0000", "1.235e+04", "1.000e+06", "nan", "inf", "-inf"]
    assert html_report._fmt(True) == "True" and html_report._fmt(np.bool_(False)) == "False"


def test_tables():
    rows = [("a", "bb", ""), ("ccc", "d", "e")]
    assert _format.text_table(rows) == ["a    bb", "ccc  d   e"]
    assert _format.text_table(rows, indent="  ")[0] == "  a    bb"
    html = _format.html_table([("h", "v"), ("x", "holds"), ("y", "0.5 (FAIL)"), ("z", "n/a")], marks=True)
    assert html.count("<tr>") == 4
    assert '<td class="pass">holds</td>' in html and '<td class="fail">0.5 (FAIL)</td>' in html
    assert '<td class="na">n/a</td>' in html and "<td>x</td>" in html
    assert _format.html_table([("<",), (">",)]) == (
        "<table><thead><tr><th>&lt;</th></tr></thead><tbody><tr><td>&gt;</td></tr></tbody></table>")


def test_json_and_frozen():
    a = np.array([[1.0, np.nan], [np.inf, -np.inf]])
    assert _format.json_array(a) == [[1.0, None], ["inf", "-inf"]]
    assert _format.json_float(None) is None and _format.json_float(np.float32(0.5)) == 0.5
    c = _format.frozen_copy(a)
    assert c is not a and not c.flags.writeable and a.flags.writeable and c.dtype == np.float64
    b = np.zeros(3)
    assert _format.freeze(b) is b and not b.flags.writeable
