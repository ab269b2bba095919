"""Figures 1 and 2 of the paper: unit statistics, geometry and phase portraits over depth.

One function per panel, each taking a :class:`~tl_dynamics.DynamicsCache` and returning a
plotly ``Figure``. Panels that summarise a per-transition measure plot its mean over
samples (or units) against the transition, with the paper's split into *within-layer*
transitions (``l_pre -> l_mid``, across an attention sub-block) and *cross-layer* ones
(``l_mid -> (l+1)_pre``, across an MLP sub-block). A function whose measure is costly
(mutual information, the rotation null) accepts the precomputed result so that a report
computes it once.

=========================  =====  ==================================================
function                   panel  shows
=========================  =====  ==================================================
mean_activation            1B     mean activation per unit and sublayer, sorted units
unit_correlation           1C     Pearson r of each unit between successive sublayers
correlation_distribution   1D     each unit's distribution of r over sublayer pairs
cosine_similarity          1E     cosine of successive RS vectors, within vs cross
velocity                   1F     step length ||h_{t+1} - h_t|| per transition
mutual_information         1G     MI of each unit between successive sublayers
mutual_information_depth   1H     mean MI and mean r per transition, within vs cross
phase_portrait             2A     (a_l, da_l/dl) paths of a few units
rotations                  2B     distribution of per-unit rotation counts
rotation_null              2C     observed rotations against the layer-shuffle null
=========================  =====  ==================================================

Example::

    import tl_dynamics as tld
    fig = tld.plot.velocity(dyn)        # dyn from tld.collect(...)
    fig.write_html("velocity.html")
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
import torch
from jaxtyping import Float
from plotly.subplots import make_subplots
from torch import Tensor

from tl_dynamics import metrics
from tl_dynamics.cache import DynamicsCache
from tl_dynamics.errors import DynamicsInputError, InputTypeError

KIND_COLOURS = {"within": "#1f77b4", "cross": "#d62728", "layer": "#2ca02c", "unknown": "#555"}
KIND_NAMES = {
    "within": "within layer (pre → mid)",
    "cross": "cross layer (mid → next pre)",
    "layer": "layer to layer (pre → next pre)",
    "unknown": "transition",
}
DIVERGING = "RdBu_r"
SEQUENTIAL = "Viridis"
DEFAULT_PHASE_UNITS = 6  # portraits drawn in Fig 2A when no units are named
HISTOGRAM_BINS = 60  # bins of the rotation histograms (Fig 2B, 2C)
# Fig 1B's colour range: the 1st-99th percentile of the means, made symmetric about 0. A few
# "massive activation" units of a decoder (hundreds of times the rest) would otherwise take the
# whole linear scale and leave almost every cell white; the units beyond it are named.
COLOUR_PERCENTILE = 99.0
NAMED_CLIPPED_UNITS = 5  # clipped units named in Fig 1B's caption, largest first
# A curve whose positive values span more than this many decades is drawn on a log axis
# (velocities and norms of decoders grow by two to four decades over depth).
LOG_AXIS_DECADES = 2.0

__all__ = [
    "mean_activation",
    "unit_correlation",
    "correlation_distribution",
    "cosine_similarity",
    "velocity",
    "mutual_information",
    "mutual_information_depth",
    "phase_portrait",
    "rotations",
    "rotation_null",
]


def _check_dyn(dyn: object) -> DynamicsCache:
    if not isinstance(dyn, DynamicsCache):
        raise InputTypeError(
            f"dyn must be a DynamicsCache (from tl_dynamics.collect); got {type(dyn).__name__}"
        )
    return dyn


def _title(dyn: DynamicsCache, panel: str) -> str:
    control = " · shuffled tokens" if dyn.metadata.shuffle else ""
    return f"{panel}<br><sup>{dyn.metadata.model_name} · {dyn.n_samples} samples{control}</sup>"


def _transition_names(labels: Sequence[str]) -> list[str]:
    return [f"{a}→{b}" for a, b in zip(labels[:-1], labels[1:])]


def transition_traces(
    mean: Float[Tensor, " transition"],
    spread: Float[Tensor, " transition"],
    labels: Sequence[str],
    value_name: str,
    row_name: str,
) -> list[go.Scatter]:
    """Mean ± spread per transition, one marker trace per transition kind.

    Labels that are not TransformerLens sublayer labels get one neutral trace.
    """
    try:
        kinds = metrics.transition_kinds(labels)
    except ValueError:  # e.g. labels of a bare tensor: no within/cross split
        kinds = ["unknown"] * len(mean)
    names = _transition_names(labels)
    traces = []
    for kind in dict.fromkeys(kinds):
        keep = [t for t, k in enumerate(kinds) if k == kind]
        traces.append(
            go.Scatter(
                x=keep,
                y=mean[keep].tolist(),
                error_y={"type": "data", "array": spread[keep].tolist(), "thickness": 1},
                mode="markers+lines",
                name=KIND_NAMES[kind],
                marker={"color": KIND_COLOURS[kind], "size": 7},
                line={"color": KIND_COLOURS[kind], "width": 1, "dash": "dot"},
                text=[names[t] for t in keep],
                hovertemplate=f"%{{text}}<br>{value_name}: %{{y:.4g}}<extra>mean over {row_name}</extra>",
            )
        )
    return traces


def _per_transition(
    dyn: DynamicsCache,
    values: Float[Tensor, "row transition"],
    panel: str,
    y_title: str,
    row_name: str = "samples",
) -> go.Figure:
    """Mean ± one standard deviation over rows, one trace per transition kind."""
    values = values.detach().double().cpu()
    mean = values.nanmean(0)
    figure = go.Figure(transition_traces(mean, _nanstd(values), dyn.labels, y_title, row_name))
    figure.update_layout(
        title=_title(dyn, panel),
        xaxis_title="transition t (sublayer t → t+1)",
        yaxis_title=f"{y_title} (mean ± sd over {row_name})",
        yaxis_type="log" if spans_decades(mean) else "linear",
        legend={"orientation": "h", "y": -0.2},
        template="plotly_white",
    )
    return figure


def spans_decades(curve: Float[Tensor, " point"], decades: float = LOG_AXIS_DECADES) -> bool:
    """Whether a curve is positive and its largest value exceeds its smallest by more than
    ``10 ** decades``: such a curve is drawn on a log axis, where a linear one would flatten
    everything but its last points."""
    finite = curve[torch.isfinite(curve)]
    if finite.numel() < 2 or bool((finite <= 0).any()):
        return False
    return bool(torch.log10(finite.max() / finite.min()) > decades)


def log_facets(figure: go.Figure, decades: float = LOG_AXIS_DECADES) -> go.Figure:
    """Put on a log scale every y axis of ``figure`` whose traces, pooled, :func:`spans_decades`.

    For faceted figures (``plotly.express`` with ``facet_col``), where one quantity (a norm,
    a velocity) spans decades and the next (a cosine) does not. Returns ``figure``, changed
    in place.
    """
    pooled: dict[str, list[float]] = {}
    for trace in figure.data:
        if getattr(trace, "y", None) is not None:
            pooled.setdefault(trace.yaxis or "y", []).extend(float(v) for v in trace.y if v is not None)
    for axis, values in pooled.items():
        if spans_decades(torch.tensor(values, dtype=torch.float64), decades):
            figure.layout[axis.replace("y", "yaxis", 1)].type = "log"
    return figure


def symmetric_colour_range(
    values: Float[Tensor, "row column"], percentile: float = COLOUR_PERCENTILE
) -> float:
    """Half-width of a colour range centred on 0 that holds the ``100 - percentile`` to
    ``percentile`` percentiles of ``values`` (the larger magnitude of the two): cells beyond
    it take the end colours, so that a few extreme cells do not wash out the rest."""
    finite = values[torch.isfinite(values)]
    if finite.numel() == 0:
        return 1.0
    low, high = torch.quantile(finite, torch.tensor([100 - percentile, percentile], dtype=finite.dtype) / 100)
    bound = float(max(abs(low), abs(high)))
    return bound if bound > 0 else float(finite.abs().max()) or 1.0


def _nanstd(values: Tensor) -> Tensor:
    centred = values - values.nanmean(0, keepdim=True)
    return centred.pow(2).nanmean(0).sqrt()


def _unit_heatmap(
    dyn: DynamicsCache,
    values: Float[Tensor, "row d_model"],
    row_labels: Sequence[str],
    panel: str,
    colour_title: str,
    colours: str,
    zmid: float | None = None,
    colour_range: float | None = None,
) -> go.Figure:
    """Heatmap of a per-(row, unit) measure with units in the paper's Fig 1B order; with
    ``colour_range``, the colours run over ``[-colour_range, colour_range]`` (hover still
    shows each cell's value)."""
    order = metrics.unit_order(dyn.resid)
    z = values.detach().double().cpu()[:, order]
    limits = {} if colour_range is None else {"zmin": -colour_range, "zmax": colour_range}
    figure = go.Figure(
        go.Heatmap(
            z=z.tolist(),
            y=list(row_labels),
            colorscale=colours,
            zmid=zmid,
            **limits,
            colorbar={"title": colour_title},
            hovertemplate="unit rank %{x}<br>%{y}<br>" + colour_title + ": %{z:.4g}<extra></extra>",
        )
    )
    figure.update_layout(
        title=_title(dyn, panel),
        xaxis_title="unit (sorted by mean activation at the last sublayer)",
        yaxis_title="sublayer" if len(row_labels) == len(dyn.labels) else "transition",
        yaxis={"autorange": "reversed"},
        template="plotly_white",
    )
    return figure


def mean_activation(dyn: DynamicsCache, percentile: float = COLOUR_PERCENTILE) -> go.Figure:
    """Fig 1B: mean activation of every unit at every sublayer, in residual-stream units.

    Units are sorted by their mean at the last sublayer; the paper finds magnitudes grow
    with depth while units keep their sign. The colour scale is symmetric about 0 and spans
    the ``100 - percentile`` to ``percentile`` percentiles of all means (``percentile=100``:
    the full range); units with a mean beyond it are clipped to the end colours and named in
    the caption under the figure, with their largest absolute mean.
    """
    dyn = _check_dyn(dyn)
    if not isinstance(percentile, (int, float)) or isinstance(percentile, bool) or not 50 < percentile <= 100:
        raise DynamicsInputError(f"percentile must be a number in (50, 100]; got {percentile!r}")
    means = metrics.mean_activation(dyn.resid).detach().double().cpu()
    bound = symmetric_colour_range(means, percentile)
    figure = _unit_heatmap(
        dyn,
        means,
        dyn.labels,
        "Fig 1B · mean activation per unit",
        "mean activation",
        DIVERGING,
        zmid=0.0,
        colour_range=bound,
    )
    figure.add_annotation(
        text=_clipped_caption(means, bound, percentile),
        xref="paper", yref="paper", x=0, y=-0.12, xanchor="left", yanchor="top",
        showarrow=False, align="left",
    )
    figure.update_layout(margin={"b": 110})
    return figure


def _clipped_caption(means: Float[Tensor, "sublayer d_model"], bound: float, percentile: float) -> str:
    """The caption of Fig 1B: the colour range and the units whose means lie beyond it."""
    peak = means.abs().nan_to_num(0.0).amax(0)
    clipped = torch.nonzero(peak > bound).flatten()
    clipped = clipped[torch.argsort(peak[clipped], descending=True)]
    text = f"colour range ±{bound:.3g} (percentiles {100 - percentile:g} to {percentile:g} of the means)"
    if clipped.numel() == 0:
        return text + "; no unit beyond it"
    named = ", ".join(f"unit {int(u)} (|mean| up to {float(peak[u]):.3g})" for u in clipped[:NAMED_CLIPPED_UNITS])
    more = clipped.numel() - NAMED_CLIPPED_UNITS
    return f"{text}; {clipped.numel()} units clipped: {named}" + (f" and {more} more" if more > 0 else "")


def unit_correlation(dyn: DynamicsCache) -> go.Figure:
    """Fig 1C: Pearson r across samples of each unit between sublayers t and t+1."""
    dyn = _check_dyn(dyn)
    return _unit_heatmap(
        dyn,
        metrics.unit_correlation(dyn.resid),
        _transition_names(dyn.labels),
        "Fig 1C · per-unit correlation between successive sublayers",
        "Pearson r",
        DIVERGING,
        zmid=0.0,
    )


def correlation_distribution(dyn: DynamicsCache, bins: int = 20) -> go.Figure:
    """Fig 1D: for each unit, the fraction of sublayer pairs l < m with r in each bin of [0, 1].

    Units are ordered by their median bin, so the figure reads as a sorted stack of
    histograms; the paper finds most mass above r = 0.8.
    """
    dyn = _check_dyn(dyn)
    distribution = metrics.correlation_distribution(dyn.resid, bins=bins)
    fraction = distribution.fraction.detach().double().cpu()
    centres = ((distribution.bin_edges[:-1] + distribution.bin_edges[1:]) / 2).cpu()
    median_bin = (fraction.cumsum(1) < fraction.sum(1, keepdim=True) / 2).sum(1)
    order = torch.argsort(median_bin.double() + fraction @ centres.double() * 1e-3)
    figure = go.Figure(
        go.Heatmap(
            z=fraction[order].T.tolist(),
            y=[round(float(c), 3) for c in centres],
            colorscale=SEQUENTIAL,
            colorbar={"title": "fraction of pairs"},
            hovertemplate="unit rank %{x}<br>r ≈ %{y}<br>fraction %{z:.3f}<extra></extra>",
        )
    )
    figure.update_layout(
        title=_title(dyn, f"Fig 1D · distribution of r over all {distribution.n_pairs} sublayer pairs"),
        xaxis_title="unit (sorted by median r)",
        yaxis_title="Pearson r (bin centre)",
        template="plotly_white",
    )
    return figure


def cosine_similarity(dyn: DynamicsCache) -> go.Figure:
    """Fig 1E: cosine similarity of successive residual-stream vectors (unitless)."""
    dyn = _check_dyn(dyn)
    return _per_transition(
        dyn, metrics.cosine_similarity(dyn.resid), "Fig 1E · cosine similarity", "cosine similarity"
    )


def velocity(dyn: DynamicsCache) -> go.Figure:
    """Fig 1F: velocity ||h_{t+1} - h_t||_2 per transition, in residual-stream units."""
    dyn = _check_dyn(dyn)
    return _per_transition(
        dyn, metrics.velocity(dyn.resid), "Fig 1F · velocity", "‖h(t+1) − h(t)‖₂"
    )


def mutual_information(
    dyn: DynamicsCache, values: Float[Tensor, "transition d_model"] | None = None
) -> go.Figure:
    """Fig 1G: mutual information (nats) of each unit between sublayers t and t+1.

    ``values`` is the precomputed ``metrics.mutual_information(dyn.resid)``, if at hand.
    """
    dyn = _check_dyn(dyn)
    values = metrics.mutual_information(dyn.resid) if values is None else values
    return _unit_heatmap(
        dyn,
        values,
        _transition_names(dyn.labels),
        "Fig 1G · per-unit mutual information between successive sublayers",
        "MI (nats)",
        SEQUENTIAL,
    )


def mutual_information_depth(
    dyn: DynamicsCache, values: Float[Tensor, "transition d_model"] | None = None
) -> go.Figure:
    """Fig 1H: mean over units of MI (nats, left) and of Pearson r (right) per transition.

    The paper finds MI dropping sharply in early layers, steepest at cross-layer
    transitions, while linear correlation rises.
    """
    dyn = _check_dyn(dyn)
    values = metrics.mutual_information(dyn.resid) if values is None else values
    correlation = metrics.unit_correlation(dyn.resid)
    figure = make_subplots(
        rows=1, cols=2, subplot_titles=("mutual information (nats)", "Pearson r"), shared_xaxes=True
    )
    for col, measure in ((1, values), (2, correlation)):
        panel = _per_transition(dyn, measure.T, "", "", row_name="units")
        for trace in panel.data:
            trace.showlegend = col == 1
            figure.add_trace(trace, row=1, col=col)
    figure.update_xaxes(title_text="transition t (sublayer t → t+1)")
    figure.update_yaxes(title_text="MI (nats), mean ± sd over units", row=1, col=1)
    figure.update_yaxes(title_text="r, mean ± sd over units", row=1, col=2)
    figure.update_layout(
        title=_title(dyn, "Fig 1H · information and correlation over depth"),
        legend={"orientation": "h", "y": -0.2},
        template="plotly_white",
    )
    return figure


def _pick_units(dyn: DynamicsCache, units: Sequence[int] | None) -> list[int]:
    if units is None:  # spread over the Fig 1B order: most negative to most positive
        order = metrics.unit_order(dyn.resid)
        picks = torch.linspace(0, len(order) - 1, DEFAULT_PHASE_UNITS).round().long()
        return [int(order[i]) for i in picks]
    d_model = dyn.resid.shape[-1]
    bad = [u for u in units if not 0 <= int(u) < d_model]
    if bad or not units:
        raise DynamicsInputError(
            f"units must be a non-empty list of indices in [0, {d_model}); got {units}"
        )
    return [int(u) for u in units]


def phase_portrait(
    dyn: DynamicsCache, units: Sequence[int] | None = None, gradient: str = "central"
) -> go.Figure:
    """Fig 2A: phase portraits (a_l, da_l/dl) of the mean trajectory of a few units.

    Each line follows one unit over the sublayers (markers coloured by depth, the first
    sublayer marked with a circle). ``units`` defaults to six spread over the Fig 1B order.
    """
    dyn = _check_dyn(dyn)
    picks = _pick_units(dyn, units)
    mean_trajectory = dyn.resid.mean(0, keepdim=True)
    portrait = metrics.phase_portrait(mean_trajectory, gradient=gradient)
    columns = min(3, len(picks))
    rows = -(-len(picks) // columns)
    figure = make_subplots(rows=rows, cols=columns, subplot_titles=[f"unit {u}" for u in picks])
    depth = list(range(len(dyn.labels)))
    for i, unit in enumerate(picks):
        x = portrait.activation[0, :, unit].tolist()
        y = portrait.derivative[0, :, unit].tolist()
        figure.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines+markers",
                line={"color": "#888", "width": 1},
                marker={"color": depth, "colorscale": SEQUENTIAL, "size": 6, "showscale": i == 0,
                        "colorbar": {"title": "sublayer"}},
                text=list(dyn.labels),
                hovertemplate="%{text}<br>a = %{x:.4g}<br>da/dl = %{y:.4g}<extra></extra>",
                showlegend=False,
            ),
            row=i // columns + 1,
            col=i % columns + 1,
        )
    figure.update_xaxes(title_text="activation a")
    figure.update_yaxes(title_text="da/dl (per sublayer)")
    figure.update_layout(
        title=_title(dyn, "Fig 2A · phase portraits of the mean trajectory"),
        template="plotly_white",
        height=320 * rows,
    )
    return figure


def _shared_bin_edges(*samples: Tensor, bins: int = HISTOGRAM_BINS) -> Tensor:
    finite = torch.cat([s[torch.isfinite(s)] for s in samples])
    return torch.linspace(float(finite.min()), float(finite.max()) + 1e-9, bins + 1, dtype=torch.float64)


def _binned_histogram(values: Tensor, edges: Tensor, name: str, colour: str) -> go.Bar:
    """A histogram binned here, so a figure of millions of values stays small."""
    values = values[torch.isfinite(values)]
    counts = torch.histogram(values, bins=edges).hist
    return go.Bar(
        x=((edges[:-1] + edges[1:]) / 2).tolist(),
        y=(counts / max(len(values), 1)).tolist(),
        width=float(edges[1] - edges[0]),
        name=name,
        marker={"color": colour},
        opacity=0.65,
        hovertemplate="%{x:.2f} turns: %{y:.3f}<extra>" + name + "</extra>",
    )


def rotations(
    dyn: DynamicsCache,
    values: Float[Tensor, "batch d_model"] | None = None,
    signed: bool = True,
) -> go.Figure:
    """Fig 2B: distribution over units of the rotation count (turns), mean over samples.

    ``values`` is a precomputed ``metrics.rotations(dyn.resid, signed=...)``.
    """
    dyn = _check_dyn(dyn)
    values = metrics.rotations(dyn.resid, signed=signed) if values is None else values
    per_unit = values.double().reshape(-1, values.shape[-1]).mean(0).cpu()
    figure = go.Figure(
        _binned_histogram(per_unit, _shared_bin_edges(per_unit), "units", "#1f77b4")
    )
    mean = float(per_unit.mean())
    figure.add_vline(x=mean, line_dash="dash", annotation_text=f"mean {mean:.2f}")
    kind = "signed" if signed else "absolute"
    figure.update_layout(
        title=_title(dyn, f"Fig 2B · {kind} rotations per unit in phase space"),
        xaxis_title=f"{kind} rotations (turns), mean over samples",
        yaxis_title="fraction of units",
        bargap=0,
        template="plotly_white",
    )
    return figure


def rotation_null(dyn: DynamicsCache, null: metrics.RotationNull | None = None) -> go.Figure:
    """Fig 2C: per-unit rotations of the true layer order against the layer-shuffle null.

    ``null`` is a precomputed ``metrics.rotation_null(dyn.resid, ...)``; by default 1000
    shuffles with seed 0. Both histograms are over units; the null pools all shuffles.
    """
    dyn = _check_dyn(dyn)
    null = metrics.rotation_null(dyn.resid) if null is None else null
    observed = null.observed.double().cpu()
    shuffled = null.null.double().cpu().reshape(-1)
    edges = _shared_bin_edges(observed, shuffled)
    figure = go.Figure()
    for values, name, colour in (
        (observed, "true layer order", "#1f77b4"),
        (shuffled, f"layer order shuffled ({null.n_shuffles}×)", "#7f7f7f"),
    ):
        figure.add_trace(_binned_histogram(values, edges, name, colour))
        figure.add_vline(x=float(values.mean()), line_dash="dash", line_color=colour)
    figure.update_layout(
        barmode="overlay",
        bargap=0,
        title=_title(dyn, "Fig 2C · rotations against the layer-shuffle null"),
        xaxis_title=f"{'signed' if null.signed else 'absolute'} rotations (turns) per unit",
        yaxis_title="fraction of units",
        legend={"orientation": "h", "y": -0.2},
        template="plotly_white",
    )
    return figure
