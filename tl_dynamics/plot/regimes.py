"""Regimes: which linear rule moves each trajectory at each step, and how rules follow.

Figures of a :class:`~tl_dynamics.Regimes` fit (:func:`tl_dynamics.regimes`), and the
report's section on it: one function per panel, each returning a plotly ``Figure``.

=========================  ===================================================
function                   shows
=========================  ===================================================
regime_strip               each text's regime at each step (a coloured strip
                           per text; held-out texts marked)
regime_transitions         the transition matrix P(next regime | regime)
regimes_section            the report's section: a table of R2 against one
                           system and the control, and both figures
=========================  ===================================================

Example::

    import tl_dynamics as tld

    dyn = tld.collect(tld.models.load_model(), tld.data.python_docs()[:64])
    result = tld.regimes(dyn, n_regimes=2, rank=4, seed=0)    # over depth
    tld.plot.regime_strip(result).show()
    tld.plot.regime_transitions(result).show()
"""

from __future__ import annotations

import html

import plotly.graph_objects as go

from tl_dynamics._checks import check_int
from tl_dynamics.errors import InputTypeError
from tl_dynamics.regimes import Regimes

TEMPLATE = "plotly_white"
DEFAULT_TEXTS = 40  # strips drawn: enough to see the switching, few enough to read
SECTION_TITLE = "Regimes (switching linear dynamics)"

__all__ = ["regime_strip", "regime_transitions", "regimes_section"]


def _check(result: object) -> Regimes:
    if not isinstance(result, Regimes):
        raise InputTypeError(f"result must be a Regimes (tld.regimes); got {type(result).__name__}")
    return result


def regime_strip(result: Regimes, n_texts: int = DEFAULT_TEXTS) -> go.Figure:
    """Each of the first ``n_texts`` samples' regime at every transition, one row per sample.

    Rows of held-out texts are labelled ``"held out"``: their regimes come from the fit on
    the other texts.
    """
    result = _check(result)
    n_texts = min(check_int(n_texts, "n_texts"), result.states.shape[0])
    labels = [
        f"{i}{' (held out)' if bool(result.heldout[i]) else ''}" for i in range(n_texts)
    ]
    figure = go.Figure(
        go.Heatmap(
            z=result.states[:n_texts].numpy(),
            y=labels,
            colorscale="Viridis",
            zmin=0,
            zmax=max(result.n_regimes - 1, 1),
            colorbar={"title": "regime", "dtick": 1},
            hovertemplate="sample %{y}<br>step %{x}<br>regime %{z}<extra></extra>",
        )
    )
    figure.update_layout(
        template=TEMPLATE,
        title=f"Regime of each step ({result.n_regimes} regimes, rank {result.rank})",
        xaxis_title="transition (step t to t + 1)",
        yaxis_title="sample",
        yaxis_autorange="reversed",
    )
    return figure


def regime_transitions(result: Regimes) -> go.Figure:
    """The fitted transition matrix: row ``i``, column ``j`` is ``P(z_{t+1} = j | z_t = i)``."""
    result = _check(result)
    matrix = result.transition.numpy()
    figure = go.Figure(
        go.Heatmap(
            z=matrix,
            x=[str(k) for k in range(result.n_regimes)],
            y=[str(k) for k in range(result.n_regimes)],
            zmin=0,
            zmax=1,
            colorscale="Blues",
            text=[[f"{p:.2f}" for p in row] for row in matrix],
            texttemplate="%{text}",
            colorbar={"title": "probability"},
        )
    )
    figure.update_layout(
        template=TEMPLATE,
        title="Transitions between regimes",
        xaxis_title="next regime",
        yaxis_title="regime",
        yaxis_autorange="reversed",
    )
    return figure


def _row(name: str, result: Regimes) -> str:
    return (
        f"<tr><td>{html.escape(name)}</td><td>{result.n_regimes}</td><td>{result.rank} "
        f"({result.explained_variance:.0%})</td><td>{result.r2_heldout:.3f}</td>"
        f"<td>{result.r2_single:.3f}</td><td>{int(result.heldout.sum())}</td></tr>"
    )


def regimes_section(result: Regimes) -> tuple[str, str, list[go.Figure]]:
    """The report's section: ``(title, HTML text, figures)`` as the page renderer takes it.

    The text is a table of the fit and its control (K, rank and its share of variance,
    held-out R2 of the regimes and of one linear system, held-out samples); the figures
    are :func:`regime_strip` and :func:`regime_transitions`. The numbers themselves are
    ``result.to_json()``.
    """
    result = _check(result)
    rows = [_row("texts", result)]
    if result.control is not None:
        rows.append(_row("control", result.control))
    text = (
        "<p>An autoregressive hidden Markov model (one linear rule per regime) fitted on "
        "training texts; R2 is the one-step-ahead forecast on held-out texts.</p><table>"
        "<tr><th>trajectories</th><th>K</th><th>rank (variance)</th><th>R2 regimes</th>"
        "<th>R2 one system</th><th>held-out samples</th></tr>" + "".join(rows) + "</table>"
    )
    return SECTION_TITLE, text, [regime_strip(result), regime_transitions(result)]
