"""Figures 3 and 4 of the paper: trajectories in two dimensions, and teleport recovery.

The residual stream's path over depth is drawn in a plane: the 2-D bottleneck of a
compressing autoencoder (Fig 3) or the first two principal components (Fig 4). One
function per panel, each taking the result object of :mod:`tl_dynamics.embed` or
:mod:`tl_dynamics.interventions` and returning a plotly ``Figure`` with labelled axes
and units. Depth is coloured from dark (first sublayer) to light (last).

=========================  =====  ==================================================
function                   panel  shows
=========================  =====  ==================================================
cae_trajectory             3B     mean trajectory through the 2-D bottleneck
cae_step_distance          3C     distance between successive sublayers' codes
cae_explained_variance     3D     held-out explained variance per sublayer
pca_plane                  4A     a few trajectories and the mean in PC1-PC2
pca_cumulative_variance    4B     cumulative explained variance vs components
pca_variance_per_sublayer  4C     explained variance per sublayer with k components
teleport_quiver            4D     teleported runs over the next 12 sublayers
teleport_recovery          --     normalised distance to the control after injection
=========================  =====  ==================================================

Example::

    import tl_dynamics as tld
    from tl_dynamics.embed import pca_trajectories
    from tl_dynamics.interventions import teleport_sweep
    from tl_dynamics.plot import trajectories as plots

    model = tld.models.load_model()
    pca = pca_trajectories(tld.collect(model, tld.data.python_docs()[:128]))
    plots.pca_plane(pca).show()
    plots.teleport_quiver(teleport_sweep(model, pca)).write_html("fig4d.html")
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import plotly.graph_objects as go
import torch
from einops import rearrange
from jaxtyping import Float
from plotly.subplots import make_subplots
from torch import Tensor

from tl_dynamics._checks import check_int
from tl_dynamics.embed import AutoencoderTrajectories, CompressingAutoencoder, PCATrajectories
from tl_dynamics.errors import DynamicsInputError, InputTypeError
from tl_dynamics.plot.dynamics import SEQUENTIAL, transition_traces
from tl_dynamics.plot.results import is_result

if TYPE_CHECKING:  # result types only: interventions runs models (plot.results)
    from tl_dynamics.interventions import TeleportResult, TeleportSweep

QUIVER_STEPS = 12  # the paper's arrows follow the next 12 sublayers after injection (Fig 4D)
DEFAULT_SAMPLES = 5  # single trajectories drawn under the mean in Fig 4A
ARROW_SCALE = 0.25  # arrow-head length as a fraction of the arrow (plotly's default is 0.3)
ARROW_ANGLE = torch.pi / 9  # between the shaft and each side of the head, radians (plotly's default)
CONTROL_COLOUR = "#7f7f7f"  # the unperturbed run, grey as in the paper's Fig 4D
RUN_COLOUR = "#1f77b4"
TEMPLATE = "plotly_white"

__all__ = [
    "cae_trajectory",
    "cae_step_distance",
    "cae_explained_variance",
    "pca_plane",
    "pca_cumulative_variance",
    "pca_variance_per_sublayer",
    "teleport_quiver",
    "teleport_recovery",
]


def _held_out(result: AutoencoderTrajectories | CompressingAutoencoder) -> AutoencoderTrajectories:
    """The trajectories to draw: a result as is, a fitted autoencoder's held-out report."""
    if isinstance(result, CompressingAutoencoder):
        held_out = getattr(result, "held_out_", None)
        if held_out is None:
            raise DynamicsInputError(
                "result is a CompressingAutoencoder without held-out trajectories: fit it "
                "with val_fraction > 0, or pass cae.trajectories(dyn)"
            )
        return held_out
    if not isinstance(result, AutoencoderTrajectories):
        raise InputTypeError(
            "result must be an AutoencoderTrajectories or a fitted CompressingAutoencoder; "
            f"got {type(result).__name__}"
        )
    return result


def _check_pca(pca: object) -> PCATrajectories:
    if not isinstance(pca, PCATrajectories):
        raise InputTypeError(
            f"pca must be a PCATrajectories (from pca_trajectories); got {type(pca).__name__}"
        )
    return pca


def _depth_path(
    points: torch.Tensor,
    labels: Sequence[str],
    name: str,
    colour: str,
    width: float,
    colourbar: bool,
) -> go.Scatter:
    """A path through the plane, markers coloured by sublayer index."""
    return go.Scatter(
        x=points[:, 0].tolist(),
        y=points[:, 1].tolist(),
        mode="lines+markers",
        name=name,
        line={"color": colour, "width": width},
        marker={
            "color": list(range(len(labels))),
            "colorscale": SEQUENTIAL,
            "size": 4 + width,
            "showscale": colourbar,
            "colorbar": {"title": "sublayer"},
        },
        text=list(labels),
        hovertemplate="%{text}<br>(%{x:.4g}, %{y:.4g})<extra>" + name + "</extra>",
    )


def _per_sublayer(
    own: torch.Tensor, pooled: torch.Tensor, labels: Sequence[str], title: str
) -> go.Figure:
    """Explained variance per sublayer around the sublayer's own mean and the pooled mean."""
    figure = go.Figure()
    for values, name, dash in (
        (own, "around each sublayer's mean", "solid"),
        (pooled, "around the mean of all vectors", "dot"),
    ):
        figure.add_trace(
            go.Scatter(
                x=list(range(len(labels))),
                y=values.double().tolist(),
                mode="lines+markers",
                name=name,
                line={"dash": dash},
                text=list(labels),
                hovertemplate="%{text}: %{y:.4f}<extra>" + name + "</extra>",
            )
        )
    figure.update_layout(
        title=title,
        xaxis={
            "title": "sublayer (depth)",
            "tickmode": "array",
            "tickvals": list(range(len(labels))),
            "ticktext": list(labels),
        },
        yaxis_title="explained variance (fraction, 1 = perfect)",
        legend={"orientation": "h", "y": -0.2},
        template=TEMPLATE,
    )
    return figure


def cae_trajectory(result: AutoencoderTrajectories | CompressingAutoencoder) -> go.Figure:
    """Fig 3B: the mean trajectory through the autoencoder's 2-D bottleneck.

    Takes :meth:`CompressingAutoencoder.trajectories` output, or a fitted autoencoder
    (its held-out samples). Only the first two bottleneck axes are drawn.
    """
    result = _held_out(result)
    if result.codes.shape[-1] < 2:
        raise DynamicsInputError(
            f"result must have a bottleneck of at least 2 dims to draw; it has "
            f"{result.codes.shape[-1]}"
        )
    figure = go.Figure(
        _depth_path(result.mean_trajectory, result.labels, "mean trajectory", "#444", 2, True)
    )
    figure.update_layout(
        title="Fig 3B · mean trajectory in the autoencoder bottleneck"
        f"<br><sup>{result.codes.shape[0]} samples</sup>",
        xaxis_title="bottleneck z1 (arbitrary units)",
        yaxis_title="bottleneck z2 (arbitrary units)",
        template=TEMPLATE,
    )
    return figure


def cae_step_distance(result: AutoencoderTrajectories | CompressingAutoencoder) -> go.Figure:
    """Fig 3C: distance in the bottleneck between the codes of sublayers t and t+1.

    Mean ± one standard deviation over samples; split into within-layer and cross-layer
    transitions when the labels are TransformerLens sublayer labels.
    """
    result = _held_out(result)
    steps = result.step_distance.double()
    figure = go.Figure(
        transition_traces(
            steps.mean(0), steps.std(0, correction=0), result.labels, "distance", "samples"
        )
    )
    figure.update_layout(
        title="Fig 3C · step distance in the autoencoder bottleneck",
        xaxis_title="transition t (sublayer t → t+1)",
        yaxis_title="‖z(t+1) − z(t)‖ (bottleneck units, mean ± sd over samples)",
        legend={"orientation": "h", "y": -0.2},
        template=TEMPLATE,
    )
    return figure


def cae_explained_variance(result: AutoencoderTrajectories | CompressingAutoencoder) -> go.Figure:
    """Fig 3D: explained variance of the autoencoder's reconstruction, per sublayer.

    Two traces: around each sublayer's own mean and around the mean of all vectors (see
    :func:`tl_dynamics.embed.explained_variance`). With a fitted autoencoder, on its
    held-out samples.
    """
    result = _held_out(result)
    return _per_sublayer(
        result.explained_variance,
        result.explained_variance_pooled,
        result.labels,
        "Fig 3D · explained variance of the autoencoder's reconstruction",
    )


def pca_plane(pca: PCATrajectories, samples: int = DEFAULT_SAMPLES) -> go.Figure:
    """Fig 4A: trajectories in the PC1-PC2 plane, the first ``samples`` and the mean.

    Returns a figure with ``samples + 1`` traces (fewer samples if the PCA has fewer).
    """
    pca = _check_pca(pca)
    samples = check_int(samples, "samples", 0)
    figure = go.Figure()
    for i in range(min(samples, pca.trajectories.shape[0])):
        figure.add_trace(
            _depth_path(pca.trajectories[i], pca.labels, f"sample {i}", "#c7c7c7", 1, False)
        )
    figure.add_trace(_depth_path(pca.mean_trajectory, pca.labels, "mean", "#444", 3, True))
    figure.update_layout(
        title=f"Fig 4A · trajectories on the first two principal components<br><sup>"
        f"{pca.trajectories.shape[0]} samples</sup>",
        xaxis_title="PC1 (residual-stream units)",
        yaxis_title="PC2 (residual-stream units)",
        template=TEMPLATE,
    )
    return figure


def pca_cumulative_variance(pca: PCATrajectories) -> go.Figure:
    """Fig 4B: fraction of the variance of all vectors held by the first k components."""
    pca = _check_pca(pca)
    k = pca.n_components
    figure = go.Figure(
        go.Scatter(
            x=list(range(1, k + 1)),
            y=pca.cumulative_variance.tolist(),
            mode="lines+markers",
            marker={"size": 4},
            hovertemplate="%{x} components: %{y:.4f}<extra></extra>",
            showlegend=False,
        )
    )
    figure.update_layout(
        title="Fig 4B · cumulative explained variance",
        xaxis_title="number of principal components k",
        yaxis_title="cumulative explained variance (fraction)",
        yaxis_range=[0, 1.02],
        template=TEMPLATE,
    )
    return figure


def pca_variance_per_sublayer(pca: PCATrajectories) -> go.Figure:
    """Fig 4C: explained variance of each sublayer reconstructed from the k components.

    Two traces, as in :func:`cae_explained_variance`.
    """
    pca = _check_pca(pca)
    return _per_sublayer(
        pca.variance_per_sublayer,
        pca.variance_per_sublayer_pooled,
        pca.labels,
        f"Fig 4C · explained variance per sublayer with {pca.n_components} components",
    )


def _teleports(
    results: TeleportSweep | TeleportResult | Sequence[TeleportResult],
) -> list[TeleportResult]:
    if is_result(results, "TeleportSweep"):
        results = results.results
    if is_result(results, "TeleportResult"):
        results = [results]
    results = list(results) if isinstance(results, Sequence) else [results]
    if not results or not all(is_result(r, "TeleportResult") for r in results):
        raise InputTypeError(
            "results must be a TeleportSweep, a TeleportResult or a non-empty list of them; "
            f"got {[type(r).__name__ for r in results] or 'an empty list'}"
        )
    return results


def quiver_lines(
    starts: Float[Tensor, "arrow 2"], moves: Float[Tensor, "arrow 2"]
) -> tuple[list[float | None], list[float | None]]:
    """The ``(x, y)`` line coordinates of one arrow per row: ``start -> start + move``,
    then a head of two sides :data:`ARROW_SCALE` as long as the arrow at
    :data:`ARROW_ANGLE` to it, each piece ended by ``None``.

    The lines plotly's ``figure_factory.create_quiver(scale=1, scaleratio=1)`` draws (all
    shafts first, then all heads), computed at once: plotly's own loop is quadratic in the
    number of arrows (about 7 s for each Fig 4D of the default report).
    """
    ends = starts + moves
    length = ARROW_SCALE * torch.linalg.vector_norm(moves, dim=-1)
    angle = torch.atan2(moves[:, 1], moves[:, 0])
    sides = [
        ends - length[:, None] * torch.stack([torch.cos(angle + turn), torch.sin(angle + turn)], -1)
        for turn in (ARROW_ANGLE, -ARROW_ANGLE)
    ]
    gap = torch.full_like(starts, torch.nan)
    shafts = rearrange([starts, ends, gap], "piece arrow xy -> (arrow piece) xy")
    heads = rearrange([sides[0], ends, sides[1], gap], "piece arrow xy -> (arrow piece) xy")
    lines = torch.cat([shafts, heads]).to(torch.float64).tolist()
    x, y = ([None if math.isnan(value) else value for value in column] for column in zip(*lines))
    return x, y


def teleport_quiver(
    results: TeleportSweep | TeleportResult | Sequence[TeleportResult],
    pca: PCATrajectories | None = None,
    steps: int = QUIVER_STEPS,
) -> go.Figure:
    """Fig 4D: where teleported states go over the next ``steps`` sublayers, one panel per layer.

    In the PC1-PC2 plane of ``pca`` (default: each result's own), every run gets one
    arrow per sublayer from the injection on (blue), its injected point a dot, and the
    control run's whole path is drawn in grey. Each panel holds three traces: arrows,
    injected points, control.

    Raises:
        ValueError: no PCA given and a result was run without one; bad ``steps``.
    """
    results = _teleports(results)
    steps = check_int(steps, "steps", 1, why=" (sublayers after injection)")
    if pca is not None:
        _check_pca(pca)
    elif any(result.pca is None for result in results):
        raise DynamicsInputError(
            "pca is needed: a result was run without one, so it has no plane to draw in"
        )
    columns = min(3, len(results))
    rows = -(-len(results) // columns)
    figure = make_subplots(
        rows=rows,
        cols=columns,
        subplot_titles=[f"layer {r.layer} ({r.labels[r.injection]})" for r in results],
    )
    for i, result in enumerate(results):
        plane = pca or result.pca
        end = min(result.injection + steps, len(result.labels) - 1)
        runs = plane.project(result.trajectories[:, result.injection : end + 1])[..., :2]
        control = plane.project(result.control)[:, :2]
        where = {"row": i // columns + 1, "col": i % columns + 1}
        starts, moves = runs[:, :-1].reshape(-1, 2), (runs[:, 1:] - runs[:, :-1]).reshape(-1, 2)
        x, y = quiver_lines(starts, moves)
        arrows = go.Scatter(
            x=x,
            y=y,
            mode="lines",
            name="teleported runs",
            line={"color": RUN_COLOUR, "width": 1},
            showlegend=i == 0,
            hoverinfo="skip",
        )
        figure.add_trace(arrows, **where)
        figure.add_trace(
            go.Scatter(
                x=runs[:, 0, 0].tolist(),
                y=runs[:, 0, 1].tolist(),
                mode="markers",
                name="injected points",
                marker={"color": RUN_COLOUR, "size": 4},
                showlegend=i == 0,
                hovertemplate="injected (%{x:.4g}, %{y:.4g})<extra></extra>",
            ),
            **where,
        )
        figure.add_trace(
            go.Scatter(
                x=control[:, 0].tolist(),
                y=control[:, 1].tolist(),
                mode="lines+markers",
                name="control",
                line={"color": CONTROL_COLOUR, "width": 2},
                marker={"color": CONTROL_COLOUR, "size": 5},
                text=list(result.labels),
                showlegend=i == 0,
                hovertemplate="control %{text}<br>(%{x:.4g}, %{y:.4g})<extra></extra>",
            ),
            **where,
        )
    figure.update_xaxes(title_text="PC1 (residual-stream units)")
    figure.update_yaxes(title_text="PC2 (residual-stream units)")
    figure.update_layout(
        title=f"Fig 4D · teleported states over the next {steps} sublayers<br><sup>"
        f"{results[0].model_name} · {results[0].prompt!r}</sup>",
        legend={"orientation": "h", "y": -0.15},
        height=360 * rows,
        template=TEMPLATE,
    )
    return figure


def teleport_recovery(
    results: TeleportSweep | TeleportResult | Sequence[TeleportResult],
) -> go.Figure:
    """Distance to the control after teleporting, over the sublayers after the injection.

    One line per injection layer: the median over runs of the distance to the control
    divided by the displacement at injection (1 at the injection; below 1, pulled back).
    """
    results = _teleports(results)
    figure = go.Figure()
    for result in results:
        recovery = result.recovery()
        figure.add_trace(
            go.Scatter(
                x=list(range(len(recovery.labels))),
                y=recovery.normalised.nanquantile(0.5, dim=0).tolist(),
                mode="lines+markers",
                name=f"layer {result.layer}",
                text=list(recovery.labels),
                hovertemplate="%{text}: %{y:.3f}<extra>layer " + str(result.layer) + "</extra>",
            )
        )
    figure.add_hline(y=1, line_dash="dash", line_color=CONTROL_COLOUR)
    figure.update_layout(
        title="Teleport recovery · distance to the control relative to the displacement",
        xaxis_title="sublayers after injection",
        yaxis_title="‖x − control‖ / displacement at injection (median over runs)",
        template=TEMPLATE,
    )
    return figure
