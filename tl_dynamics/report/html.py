"""The HTML of reports and comparisons: one self-contained page, a finding's test in a cell.

:mod:`tl_dynamics.report` and :mod:`tl_dynamics.compare` both write one page that opens
offline: plotly's JavaScript is embedded once in the head, each figure is a ``<div>``
without its own copy, and every finding's statistical test is shown the same
way (effect, 95 % bootstrap interval, Holm-adjusted p; :mod:`tl_dynamics.findings`).

Example::

    import plotly.graph_objects as go
    from tl_dynamics._html import render_html

    figure = go.Figure(go.Scatter(y=[1, 3, 2]))
    page = render_html("Demo", "<p>one figure</p>", [("A line", "", [figure])])
    page.startswith("<!DOCTYPE html>")                # True
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import plotly.graph_objects as go
import plotly.offline

from tl_dynamics.findings import Finding

__all__ = ["STYLE", "effect_html", "render_html"]


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


def effect_html(finding: Finding) -> str:
    """``effect [95 % CI], Holm p`` of one finding as HTML (a dash when it was not tested)."""
    if finding.p_value != finding.p_value:  # NaN: not tested
        return "–"
    return (
        f"{finding.effect:+.3g}<br><small>[{finding.ci[0]:+.3g}, {finding.ci[1]:+.3g}]"
        f"</small><br><small>p = {finding.p_adjusted:.2g}</small>"
    )
