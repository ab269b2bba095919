"""The HTML of reports and comparisons: one self-contained page, a finding's test in a cell.

:func:`tl_dynamics.report.run_report` and :func:`tl_dynamics.report.compare.run_compare`
both write one page that opens
offline: plotly's JavaScript is embedded once in the head, each figure is a ``<div>``
without its own copy, and every finding's statistical test is shown the same
way (effect, 95 % bootstrap interval, Holm-adjusted p; :mod:`tl_dynamics.findings`).
The report's text blocks live here too: its findings table, the "Beyond the paper"
section, the weights' provenance line. A new section's text goes here.

Example::

    import plotly.graph_objects as go
    from tl_dynamics.report.html import render_html

    figure = go.Figure(go.Scatter(y=[1, 3, 2]))
    page = render_html("Demo", "<p>one figure</p>", [("A line", "", [figure])])
    page.startswith("<!DOCTYPE html>")                # True
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.offline

from tl_dynamics.report.beyond import BeyondMeasures, contraction_table
from tl_dynamics.report.findings import Contrast, Finding
from tl_dynamics.stats import ALPHA

__all__ = [
    "STYLE",
    "TRAJECTORY_TEXT",
    "BEYOND_TEXT",
    "effect_html",
    "render_html",
    "write_page",
    "findings_table",
    "provenance_note",
    "beyond_section_html",
]


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { margin-bottom: 0; } .sub { color: #666; margin-top: .3em; }
table { border-collapse: collapse; width: 100%; font-size: 90%; }
td, th { border: 1px solid #ddd; padding: 4px 8px; vertical-align: top; text-align: left; }
td.yes { background: #e6f4ea; } td.no { background: #fce8e6; } td.undecided { background: #f1f3f4; }
.figure { margin: 1.5em 0; } nav a { margin-right: 1em; }
"""


def render_html(title: str, intro: str, sections: Sequence[tuple[str, str, Sequence[go.Figure]]]) -> str:
    """A self-contained page: plotly.js embedded once, then each section's figures.

    Args:
        title: Page title.
        intro: HTML shown under the title.
        sections: ``(anchor title, HTML text, figures)`` per section.
    """
    body = [f"<h1>{html.escape(title)}</h1>", intro, "<nav>"]
    body += [f"<a href='#s{i}'>{html.escape(name)}</a>" for i, (name, _, _) in enumerate(sections)]
    body.append("</nav>")
    for i, (name, text, figures) in enumerate(sections):
        body.append(f"<h2 id='s{i}'>{html.escape(name)}</h2>{text}")
        for figure in figures:
            figure_html = figure.to_html(full_html=False, include_plotlyjs=False)
            body.append(f"<div class='figure'>{figure_html}</div>")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style>"
        f"<script type='text/javascript'>{plotly.offline.get_plotlyjs()}</script>"
        "</head><body>" + "\n".join(body) + "</body></html>"
    )


def write_page(
    path: Path, title: str, intro: str, sections: Sequence[tuple[str, str, Sequence[go.Figure]]]
) -> None:
    """Write the page of :func:`render_html` to ``path`` (UTF-8)."""
    path.write_text(render_html(title, intro, sections), encoding="utf-8")


def effect_html(finding: Finding) -> str:
    """``effect [95 % CI], Holm p`` of one finding as HTML (a dash when it was not tested)."""
    if finding.p_value != finding.p_value:  # NaN: not tested
        return "–"
    return (
        f"{finding.effect:+.3g}<br><small>[{finding.ci[0]:+.3g}, {finding.ci[1]:+.3g}]"
        f"</small><br><small>p = {finding.p_adjusted:.2g}</small>"
    )


def _test_cells(finding: Finding) -> str:
    """Verdict, effect with its interval, and Holm-adjusted p of one finding, as cells."""
    return (
        f"<td class='{finding.verdict}'>{finding.verdict}</td><td>{effect_html(finding)}</td>"
        f"<td>{html.escape(finding.observed)}</td>"
    )


def _contrast_cell(contrast: Contrast | None) -> str:
    """A paired contrast's verdict, effect, interval and Holm p as one cell."""
    if contrast is None:  # the control was not run, or not on this finding (the twin: Figs 1-2)
        return "<td>not tested</td>"
    if contrast.p_value != contrast.p_value:  # NaN: not tested
        return f"<td class='undecided'>{contrast.verdict}</td>"
    return (
        f"<td class='{contrast.verdict}'>{contrast.verdict}<br>{contrast.effect:+.3g}<br><small>"
        f"[{contrast.ci[0]:+.3g}, {contrast.ci[1]:+.3g}]</small><br><small>p = "
        f"{contrast.p_adjusted:.2g}</small></td>"
    )


CONTROL_NAMES = {"shuffled": "token-shuffled texts", "random_twin": "random-weight twin"}


def findings_table(
    original: list[Finding], shuffled: list[Finding],
    contrasts: dict[str, list[Contrast] | None] | None = None,
) -> str:
    """The findings of both conditions (verdict, effect [95 % CI], Holm p, in words) and,
    per finding, the paired contrasts original minus control: against the shuffled text
    (``contrasts["shuffled"]``: language-specific) and the random-weight twin
    (``contrasts["random_twin"]``: training-specific)."""
    contrasts = contrasts or {}
    by_control = {
        name: None if found is None else {c.key: c for c in found}
        for name, found in contrasts.items()
    }
    rows = []
    for mine, control in zip(original, shuffled):
        cells = "".join(
            _contrast_cell(None if by_control.get(name) is None else by_control[name].get(mine.key))
            for name in ("shuffled", "random_twin")
        )
        rows.append(
            "<tr>"
            f"<td>{html.escape(mine.claim)}<br><small>effect: {html.escape(mine.effect_unit)}; "
            f"null: {html.escape(mine.null)}</small></td>"
            f"{_test_cells(mine)}{cells}{_test_cells(control)}"
            "</tr>"
        )
    alpha = original[0].alpha if original else ALPHA
    return (
        f"<p>Each finding is a test: effect [95 % basic bootstrap interval over texts], and "
        f"two one-sided p-values against the finding's minimum effect, corrected together "
        f"(Holm) across the condition's findings; <i>yes</i> needs p &le; {alpha:g} that the "
        "effect passes the minimum in the paper's direction, <i>no</i> the same that it "
        "falls short (see <code>tl_dynamics.findings</code>). Any process with an order over "
        "depth has some of these properties; what sets a language model apart is the "
        "<i>contrast</i> with matched controls on the same texts (paired bootstrap, Holm per "
        "control): <i>language-specific</i> is original minus token-shuffled text, "
        "<i>training-specific</i> original minus a random-weight twin; <i>higher</i> / "
        "<i>lower</i> when the difference is significant, <i>same</i> when its interval lies "
        "within the finding's minimum effect.</p>"
        "<table class='findings'><thead><tr><th>the paper's finding</th>"
        "<th>this model</th><th>effect [CI], p</th><th>observed</th>"
        "<th>language-specific</th><th>training-specific</th>"
        "<th>shuffled control</th><th>effect [CI], p</th><th>observed (control)</th>"
        "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


TRAJECTORY_TEXT = (
    "<p>PCA is fitted on every residual-stream vector of every sample and sublayer; the "
    "compressing autoencoder's numbers are on held-out samples. Teleports write points of "
    "a square grid in the PC1–PC2 plane into the residual stream "
    "of the paper's prompt at the input of the attention sub-block of the chosen layers, "
    "then follow the runs; <i>contraction</i> is the final distance to the unperturbed run "
    "divided by the displacement (below 1: pulled back). In a post-LayerNorm model such "
    "as BERT the normalisation alone pulls distant points in. The attractor finding "
    "repeats a 4 &times; 4 grid in each of 8 prompts of different kinds and resamples "
    "prompts, since the grid points of one prompt are not independent.</p>"
)


def provenance_note(provenance: dict[str, Any] | None) -> str:
    """A line saying where a preset's weights came from (empty for other models)."""
    if not provenance:
        return ""
    quantised = not str(provenance["quantisation"]).startswith("none")
    caveat = (
        " These are the real trained weights with 4-bit quantisation noise, not the "
        "original bf16 checkpoint."
        if quantised
        else ""
    )
    return (
        f"<p class='sub'>Weights: preset {html.escape(str(provenance['preset']))}, "
        f"{html.escape(str(provenance['source_file']))} from the "
        f"{html.escape(str(provenance['source_package']))} package "
        f"({html.escape(str(provenance['quantisation']))}).{caveat}</p>"
    )


BEYOND_TEXT = (
    "<p>Tests the paper does not run (see <code>tl_dynamics.report.beyond</code>), on the original "
    "texts, decided together (Holm): the per-unit rotation test of Fig 2 again after a "
    "seeded Haar-random rotation of the residual stream's basis, which has no privileged "
    "axes; and jPCA (Churchland et al. 2012), whether the whole population's flow over "
    "depth is a rotation, against smooth maximum-entropy surrogates with the same "
    "smoothness and covariance (layer-shuffled orders, which any smooth flow beats, are "
    "shown for reference).</p>"
)


def beyond_section_html(measures: BeyondMeasures) -> str:
    """The "Beyond the paper" section's text: the basis verdicts, the tests, the contraction."""
    units, (random_basis, rotational) = measures.units_finding, measures.findings
    survives = "survives" if measures.basis_survives else "does not survive"
    rows = "".join(
        f"<tr><td>{html.escape(f.claim)}<br><small>effect: {html.escape(f.effect_unit)}; null: "
        f"{html.escape(f.null)}</small></td>{_test_cells(f)}</tr>"
        for f in (units, random_basis, rotational)
    )
    table = (
        f"<p><b>The per-unit rotation result {survives} a change of basis</b>: "
        f"<i>{units.verdict}</i> in the model's own axes (the paper's test), "
        f"<i>{random_basis.verdict}</i> in a random basis.</p>"
        "<table class='findings'><thead><tr><th>test</th><th>verdict</th>"
        "<th>effect [CI], p</th><th>observed</th></tr></thead><tbody>" + rows + "</tbody></table>"
    )
    return BEYOND_TEXT + table + _jpca_controls_html(measures) + _contraction_html(measures)


def _jpca_controls_html(measures: BeyondMeasures) -> str:
    """One line: the jPCA test on the original texts and on each matched control."""
    if not measures.jpca_controls:
        return ""
    tests = {"original texts": measures.findings[1]} | {
        CONTROL_NAMES.get(name, name): f for name, f in measures.jpca_controls.items()
    }
    listed = "; ".join(
        f"{html.escape(name)}: r2_skew {f.numbers['r2_skew']:.3f} vs surrogates "
        f"{f.numbers['surrogate_mean']:.3f} (p = {f.numbers['surrogate_p']:.2g}), held-out "
        f"{f.numbers['r2_skew_cv']:.3f}, <i>{f.verdict}</i>"
        for name, f in tests.items()
    )
    return f"<p><b>jPCA beside its matched controls.</b> {listed}.</p>"


def _contraction_html(measures: BeyondMeasures) -> str:
    """Per teleported layer: the teleports' contraction and, when measured, the Jacobian's."""
    table = contraction_table(measures)
    with_jacobian = measures.jacobian is not None
    columns = [("layer", "layer", "{}"), ("steps", "sublayers followed", "{}"),
               ("teleport_contraction", "teleports: contraction", "{:.3g}"),
               ("teleport_relative_contraction", "teleports: relative to the norm", "{:.3g}")]
    if with_jacobian:
        columns += [("jacobian_top_singular_value", "Jacobian: top &sigma;", "{:.3g}"),
                    ("jacobian_top_normalised_singular_value",
                     "Jacobian: top &sigma; &times; |x<sub>start</sub>| / |x<sub>stop</sub>|", "{:.3g}"),
                    ("jacobian_top_robust_singular_value",
                     "Jacobian: top &sigma; &times; median|x<sub>start</sub>| / median|x<sub>stop</sub>|", "{:.3g}"),
                    ("jacobian_n_expanding", "expanding directions (&sigma; &gt; 1)", "{:.1f}"),
                    ("jacobian_log_volume", "log-volume change (nats)", "{:.1f}")]
    head = "".join(f"<th>{title}</th>" for _, title, _ in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{fmt.format(row[key])}</td>" for key, _, fmt in columns) + "</tr>"
        for row in table
    )
    note = (
        "The Jacobian of the map from each teleported layer's input to the last sublayer the "
        "teleport is followed to, the whole spectrum at 8 prompts and two token positions "
        "(means over prompts): top singular value raw, relative to the state's norm (which a "
        "few massive units dominate) and to its median unit; the number of directions a kick "
        "grows along; and the log-volume change over the singular values above 1e-6 of the "
        "largest (below 0: the map shrinks volume)."
        if with_jacobian
        else "The Jacobian contraction was not computed: it is opt-in "
        "(<code>tl-dynamics report --jacobian</code>, <code>ReportSettings(jacobian=True)"
        "</code>), since every map runs the model once per direction (minutes per layer on SmolLM2)."
    )
    return (
        "<p><b>Contraction per layer.</b> Teleports: median final distance to the unperturbed "
        f"run over the displacement (below 1: pulled back). {note}</p>"
        f"<table class='findings'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )
