"""Checkpoint series: each finding, each per-depth curve and DSA against the training step.

Figures of a :class:`~tl_dynamics.report.series.Series` (:func:`tl_dynamics.report.series.run_series`),
and the sections of ``series.html``. The training step is drawn on a log axis as
``step + 1`` (so that the initialisation, step 0, has a place).

=========================  ===================================================
function                   shows
=========================  ===================================================
finding_over_training      one finding's effect and 95 % interval per step,
                           original texts beside the token-shuffled control
contrast_over_training     one finding's paired contrast (original minus
                           shuffled) and 95 % interval per step, each marker
                           its verdict (higher, lower, same, undecided)
depth_over_training        one per-depth curve per checkpoint, coloured by step
dsa_over_training          DSA between successive checkpoints and its noise
                           floor (split-half distance within a checkpoint)
series_sections            the sections of series.html
=========================  ===================================================

Example::

    from tl_dynamics.plot import series as series_plots
    series_plots.finding_over_training(series, "activation_growth").show()
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import plotly.colors
import plotly.graph_objects as go

from tl_dynamics.errors import DynamicsInputError

if TYPE_CHECKING:  # the result type only: plots never import code that runs a model
    from tl_dynamics.report.series import Series

TEMPLATE = "plotly_white"
STEP_AXIS = "training step + 1 (log)"
CONDITION_COLOURS = {"original": "#1f77b4", "shuffled": "#7f7f7f"}
COLOURSCALE = "Viridis"
VERDICT_MARKERS = {  # a contrast's verdict -> (marker symbol, colour)
    "higher": ("triangle-up", "#2ca02c"),
    "lower": ("triangle-down", "#d62728"),
    "same": ("square", "#1f77b4"),
    "undecided": ("circle-open", "#7f7f7f"),
}

__all__ = [
    "finding_over_training",
    "contrast_over_training",
    "depth_over_training",
    "dsa_over_training",
    "series_sections",
]


def _x(series: Series) -> list[int]:
    return [step + 1 for step in series.steps]


def _interval_bars(found: list[Any]) -> dict[str, Any]:
    """Plotly ``error_y`` drawing each effect's 95 % interval ``ci`` (findings or contrasts)."""
    return {
        "type": "data",
        "symmetric": False,
        "array": [f.ci[1] - f.effect for f in found],
        "arrayminus": [f.effect - f.ci[0] for f in found],
    }


def finding_over_training(series: Series, key: str) -> go.Figure:
    """Effect of finding ``key`` (with its 95 % bootstrap interval) at every checkpoint,
    on the original texts and on the token-shuffled control."""
    keys = [f.key for f in series.findings[0]]
    if key not in keys:
        raise DynamicsInputError(f"key must be one of {keys}; got {key!r}")
    figure = go.Figure()
    for condition, per_checkpoint in (("original", series.findings), ("shuffled", series.control)):
        found = [next(f for f in fs if f.key == key) for fs in per_checkpoint]
        figure.add_trace(
            go.Scatter(
                x=_x(series),
                y=[f.effect for f in found],
                error_y=_interval_bars(found),
                text=[f.verdict for f in found],
                mode="lines+markers",
                name=condition,
                line={"color": CONDITION_COLOURS[condition]},
                hovertemplate="step+1 %{x}<br>effect %{y:.3g}<br>holds: %{text}<extra></extra>",
            )
        )
    first = series.findings[0][keys.index(key)]
    if math.isfinite(first.min_effect):
        figure.add_hline(y=first.min_effect, line_dash="dot", annotation_text="smallest effect that counts")
    figure.update_layout(
        template=TEMPLATE,
        title=f"{key}: {first.claim}",
        xaxis={"title": STEP_AXIS, "type": "log"},
        yaxis_title=first.effect_unit,
    )
    return figure


def contrast_over_training(series: Series, key: str) -> go.Figure:
    """Paired contrast of finding ``key``, original minus token-shuffled (with its 95 %
    bootstrap interval), at every checkpoint; each marker's shape and colour is the
    contrast's verdict, and the dotted lines are ``+-margin`` (inside them: "same")."""
    keys = [c.key for c in series.contrasts[0]]
    if key not in keys:
        raise DynamicsInputError(f"key must be one of {keys}; got {key!r}")
    found = [next(c for c in cs if c.key == key) for cs in series.contrasts]
    figure = go.Figure(
        go.Scatter(
            x=_x(series),
            y=[c.effect for c in found],
            error_y=_interval_bars(found),
            text=[c.verdict for c in found],
            mode="lines+markers",
            name="original - shuffled",
            line={"color": VERDICT_MARKERS["undecided"][1]},
            marker={
                "size": 11,
                "symbol": [VERDICT_MARKERS[c.verdict][0] for c in found],
                "color": [VERDICT_MARKERS[c.verdict][1] for c in found],
            },
            hovertemplate="step+1 %{x}<br>contrast %{y:.3g}<br>verdict: %{text}<extra></extra>",
        )
    )
    figure.add_hline(y=0.0, line_color="black", line_width=1)
    margin = found[-1].margin
    if math.isfinite(margin):
        for side in (-margin, margin):
            figure.add_hline(y=side, line_dash="dot", line_color="grey")
    unit = next(f.effect_unit for f in series.findings[0] if f.key == key)
    figure.update_layout(
        template=TEMPLATE,
        title=f"{key}: original minus token-shuffled control",
        xaxis={"title": STEP_AXIS, "type": "log"},
        yaxis_title=f"difference of {unit}" if unit else "difference",
    )
    return figure


def depth_over_training(series: Series, measure: str) -> go.Figure:
    """One curve of ``measure`` (a key of ``series.depth``) over depth per checkpoint,
    coloured from the first checkpoint (dark) to the last (light) on a log-step scale."""
    if measure not in series.depth:
        raise DynamicsInputError(f"measure must be one of {sorted(series.depth)}; got {measure!r}")
    values = series.depth[measure]
    logs = [math.log(x) for x in _x(series)]
    span = (max(logs) - min(logs)) or 1.0
    colours = plotly.colors.sample_colorscale(COLOURSCALE, [(v - min(logs)) / span for v in logs])
    per_sublayer = values.shape[1] == len(series.sublayers)
    positions = list(series.sublayers) if per_sublayer else [
        f"{a}->{b}" for a, b in zip(series.sublayers, series.sublayers[1:])
    ]
    figure = go.Figure()
    for row, label, colour in zip(values.tolist(), series.labels, colours):
        figure.add_trace(go.Scatter(x=positions, y=row, mode="lines", name=label, line={"color": colour}))
    figure.update_layout(
        template=TEMPLATE,
        title=f"Mean {measure} over depth, one line per checkpoint",
        xaxis_title="sublayer" if per_sublayer else "transition",
        yaxis_title=measure,
    )
    return figure


def dsa_over_training(series: Series) -> go.Figure:
    """DSA distance from each checkpoint to the next, beside the split-half noise floor."""
    x = _x(series)[1:]
    figure = go.Figure()
    for values, name, colour in (
        (series.dsa_successive, "successive checkpoints", CONDITION_COLOURS["original"]),
        (series.dsa_floor, "noise floor (two halves of the texts)", CONDITION_COLOURS["shuffled"]),
    ):
        figure.add_trace(go.Scatter(x=x, y=values.tolist(), mode="lines+markers", name=name, line={"color": colour}))
    figure.update_layout(
        template=TEMPLATE,
        title="Dynamical similarity (DSA) between successive checkpoints",
        xaxis={"title": "later checkpoint's " + STEP_AXIS, "type": "log"},
        yaxis_title="DSA distance",
    )
    return figure


def series_sections(series: Series) -> list[tuple[str, str, list[go.Figure]]]:
    """``series.html``'s sections as ``(title, HTML text, figures)``: findings, their
    contrasts with the control, per-depth curves, DSA."""
    return [
        (
            "Findings over training",
            "<p>Each finding's effect and 95 % bootstrap interval over texts at every "
            "checkpoint; grey: the same test on the token-shuffled texts.</p>",
            [finding_over_training(series, f.key) for f in series.findings[0]],
        ),
        (
            "Contrasts with the shuffled control over training",
            "<p>Each finding's effect on the original texts minus its effect on the "
            "token-shuffled texts, paired over the same bootstrap draws of texts, with its "
            "95 % interval. Marker: the contrast's verdict (▲ higher, ▼ lower, "
            "■ same: the interval lies inside the dotted ±margin, ○ undecided; "
            "Holm-corrected over a checkpoint's findings).</p>",
            [contrast_over_training(series, c.key) for c in series.contrasts[0]],
        ),
        ("Depth profiles over training", "", [depth_over_training(series, m) for m in series.depth]),
        (
            "Dynamical similarity over training",
            "<p>DSA distance between successive checkpoints; a change of the dynamics "
            "shows as a distance above the floor.</p>",
            [dsa_over_training(series)],
        ),
    ]
