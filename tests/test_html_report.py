"""Self-contained HTML pages: they parse, load nothing from elsewhere, every image decodes,
and the numbers in their tables are the reports' own."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from matplotlib import image
from matplotlib.figure import Figure

import ramodel
from ramodel import fit, html_report, theory
from ramodel.jacobian_set import JacobianSet


class _Page(HTMLParser):
    """Collects images, links and table cells; checks that every tag it opens is closed."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.imgs, self.external, self.cells, self.stack, self.tags = [], [], [], [], []
        self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(a)
        for key in ("src", "href"):
            if a.get(key) and not a[key].startswith("data:"):
                self.external.append(a[key])
        if tag in ("td", "th"):
            self._cell = []
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()
        if tag in ("td", "th"):
            self.cells.append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    assert page.stack == [], page.stack
    assert text.startswith("<!DOCTYPE html>") and page.tags[:1] == ["html"]
    assert page.external == [] and "script" not in page.tags and "link" not in page.tags
    for img in page.imgs:
        head, data = img["src"].split(",", 1)
        assert head == "data:image/png;base64" and img.get("alt")
        pixels = image.imread(io.BytesIO(base64.b64decode(data, validate=True)), format="png")
        assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100 and np.ptp(pixels) > 0
    return page


@pytest.fixture(scope="module")
def sim():
    return ramodel.simulate(depth=3, classes=2, width=4, samples_per_class=3, seed=0)


@pytest.fixture(scope="module")
def jset(sim):
    J = np.asarray(sim.jacobians)
    N = sim.labels.shape[0]
    return JacobianSet(labels=sim.labels, classes=2, meta={"loss": "mse"},
                       jacobians=np.broadcast_to(J[:, None], (3, N, 4, 4)).copy(),
                       representations=np.asarray(sim.representations))


def test_figure_data_uri_round_trips_the_pixels():
    fig = Figure(figsize=(2, 1))
    fig.patch.set_facecolor((1.0, 0.0, 0.0))
    uri = html_report.figure_data_uri(fig, dpi=50)
    pixels = image.imread(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])), format="png")
    assert pixels.shape[:2] == (50, 100)
    np.testing.assert_allclose(pixels[0, 0, :3], [1.0, 0.0, 0.0])
    assert html_report.figure_data_uri(fig, dpi=50) == uri  # deterministic bytes
    assert html_report.figure_data_uri(html_report.figure_png(fig, dpi=50)) == uri  # pre-rendered PNG bytes
    with pytest.raises(ValueError, match="PNG"):
        html_report.figure_data_uri(b"GIF89a")


def test_simulation_page(sim):
    report = sim.report()
    text = html_report.simulation_page(sim, report=report)
    page = parse(text)
    assert len(page.imgs) == 3
    assert [i["alt"] for i in page.imgs] == ["RA2", "RA3", "RA1"]
    # The RA table holds the report's own formatted values, next to their measures.
    cells = page.cells
    i = cells.index("numerical_rank (median)")
    assert float(cells[i + 1]) == report.metrics["numerical_rank"].value
    i = cells.index("sigma1_mean (mean)")
    assert float(cells[i + 1]) == pytest.approx(report.metrics["sigma1_mean"].value, rel=1e-3)
    assert "T3" in cells and "converged" in text


def test_analysis_page_side_by_side(sim, jset):
    rep_a, rep_b = ramodel.analyze(jset), sim.report()
    text = html_report.analysis_page([("net.npz", jset, rep_a), ("sim", sim, rep_b)], title="two <models>")
    page = parse(text)
    assert "<title>two &lt;models&gt;</title>" in text  # escaped
    assert len(page.imgs) == 6
    header = page.cells[: page.cells.index("threshold") + 3]
    assert header[-4:] == ["measure", "threshold", "net.npz", "sim"]


def test_theory_page(jset):
    rep = theory.check(jset, fitted=fit.fit_ujm(jset), chance_draws=2)
    page = parse(html_report.theory_page([("net.npz", jset, rep)]))
    alts = [i["alt"] for i in page.imgs]
    # measures per layer, fitted alignments, then RA2 and RA3 of the source
    assert [a.split(" ")[0] for a in alts] == ["Measures", "Alignment", "RA2", "RA3"]
    i = page.cells.index("asymmetry")
    assert page.cells[i - 1] == "T3"


def test_theory_page_without_source_or_fit(jset):
    rep = theory.check(jset, chance_draws=0)
    page = parse(html_report.theory_page([("a", None, rep), ("b", None, rep)]))
    assert len(page.imgs) == 2  # one measures panel per entry, no fit, no source figures
    assert page.cells[:5] == ["theorem", "measure", "predicted", "a", "b"]  # the side-by-side table


def test_layer_spectra_matches_per_layer_svd(sim, jset):
    ref = np.stack([np.linalg.svd(np.asarray(J), compute_uv=False) for J in sim.jacobians])
    np.testing.assert_allclose(html_report.layer_spectra(sim), ref, atol=1e-12)
    np.testing.assert_allclose(html_report.layer_spectra(jset), ref, atol=1e-12)
    S = np.sort(np.random.default_rng(0).random((2, 5, 3)), axis=-1)[..., ::-1]
    np.testing.assert_allclose(html_report.layer_spectra({"S": S}), S.mean(axis=1))
    assert html_report.layer_spectra({}) is None


def test_comparison_rows_carry_the_values_and_verdicts(sim, jset):
    reports = [ramodel.analyze(jset, k=1), sim.report()]
    rows = html_report.ra_comparison_rows(reports, ["a", "b"])
    assert rows[0] == ("measure", "threshold", "a", "b")
    by_name = {r[0].split(" ")[0]: r for r in rows[1:]}
    for rep, col in zip(reports, (2, 3)):
        for name, m in rep.metrics.items():
            cell = by_name[name][col]
            assert float(re.match(r"[-+0-9.e]+|inf|nan", cell).group()) == pytest.approx(m.value, rel=1e-3, abs=1e-300)
        for c in rep.checks:
            if c.passed is not None:
                assert by_name[c.metric][col].endswith("(pass)" if c.passed else "(FAIL)")
        for p, v in rep.verdicts.items():
            assert by_name[p][col] == {True: "holds", False: "fails", None: "undetermined"}[v]  # issue 15 wording
    assert by_name["across_inputs_left"][3] == "n/a"  # only per-input Jacobians have it
    with pytest.raises(ValueError, match="one name per report"):
        html_report.ra_comparison_rows(reports, ["a"])


def test_theory_comparison_rows(jset):
    a = theory.check(jset, chance_draws=1)
    b = theory.check(jset, fitted=fit.fit_ujm(jset), chance_draws=1)
    rows = html_report.theory_comparison_rows([a, b], ["a", "b"])
    assert rows[0] == ("theorem", "measure", "predicted", "a", "b")
    body = {r[1]: r for r in rows[1:]}
    assert body["subspace_alignment_left"][3] == "n/a" and body["subspace_alignment_left"][4].startswith("1 [")
    m = a.measures["linearity"]
    assert body["linearity"][3] == f"{html_report._fmt(m.value)} [{html_report._fmt(m.chance)}]"
    assert [r[0] for r in rows[1:]][-1] == "fit"  # fitted comparisons last


def test_write_html_is_atomic(tmp_path):
    path = html_report.write_html("<!DOCTYPE html><html></html>", tmp_path / "p.html")
    assert path.read_text() == "<!DOCTYPE html><html></html>"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.html"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        html_report.write_html("x", tmp_path / "missing" / "p.html")
    with pytest.raises(IsADirectoryError):
        html_report.write_html("x", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.html"]


def test_pages_need_an_entry():
    with pytest.raises(ValueError, match="at least one"):
        html_report.analysis_page([])
    with pytest.raises(ValueError, match="at least one"):
        html_report.theory_page([])
