"""Beyond the paper: basis control, population rotations, local stability, similarity.

Figures for the measures that test the paper's two dynamical claims with tools that do
not depend on the residual stream's coordinate axes. One function per panel,
each taking a result object and returning a plotly ``Figure`` with labelled axes.

=========================  ===================================================
function                   shows
=========================  ===================================================
rotation_bases             per-axis rotations against the null, per basis
jpca_plane                 trajectories in the top jPC plane, depth coloured
jpca_null                  r2 of the skew fit against the layer-shuffle null
jacobian_contraction       Lyapunov exponents per layer, raw and normalised,
                           beside the teleport contraction per sublayer step
dsa_matrix                 DSA distances between models and their controls
=========================  ===================================================

Example::

    import tl_dynamics as tld
    from tl_dynamics.metrics import rotation_null
    from tl_dynamics.plot import beyond

    nulls = [rotation_null(dyn.resid, 200, basis=b) for b in ("units", "random", "pca")]
    beyond.rotation_bases(nulls).show()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
import torch

from tl_dynamics.errors import InputTypeError
from tl_dynamics.metrics import RotationNull
from tl_dynamics.plot.dynamics import SEQUENTIAL
from tl_dynamics.plot.results import is_result

if TYPE_CHECKING:  # result types only: their modules run models (plot.results)
    from tl_dynamics.interventions import TeleportSweep
    from tl_dynamics.jpca import JPCAResult
    from tl_dynamics.similarity import DynamicalSimilarity
    from tl_dynamics.stability import JacobianSweep

TEMPLATE = "plotly_white"
OBSERVED_COLOUR = "#1f77b4"
NULL_COLOUR = "#7f7f7f"
ALPHA = 0.05  # significance level shown in the rotation_bases labels (the summary's default)

DEFAULT_SAMPLES = 20  # trajectories drawn in jpca_plane: enough to see the flow, few to read

__all__ = ["rotation_bases", "jpca_plane", "jpca_null", "jacobian_contraction", "dsa_matrix"]


def _check_sequence(values: object, name: str, kind: type) -> list:
    items = list(values) if isinstance(values, Sequence) else [values]
    if not items or not all(isinstance(item, kind) for item in items):
        raise InputTypeError(
            f"{name} must be a {kind.__name__} or a non-empty sequence of them; got "
            f"{type(values).__name__}"
        )
    return items


def rotation_bases(nulls: RotationNull | Sequence[RotationNull]) -> go.Figure:
    """Per-axis rotation counts of the true order beside the null's, one group per basis.

    ``nulls`` are :func:`~tl_dynamics.metrics.rotation_null` results computed with
    different ``basis`` values. Each group shows two boxes over axes: the observed count
    and the mean null count of that axis (turns); the label gives the fraction of axes
    with ``p < 0.05``. If the per-unit result is about the dynamics rather than the
    coordinates, the groups look alike.
    """
    nulls = _check_sequence(nulls, "nulls", RotationNull)
    figure = go.Figure()
    for values, name, colour in (
        ([n.observed.double().cpu() for n in nulls], "true layer order", OBSERVED_COLOUR),
        ([n.null.double().cpu().mean(dim=0) for n in nulls], "layer order shuffled", NULL_COLOUR),
    ):
        for null, per_axis in zip(nulls, values):
            label = f"{null.basis}<br>{null.summary(ALPHA).fraction_significant:.0%} axes p<{ALPHA}"
            figure.add_trace(
                go.Box(
                    y=per_axis.tolist(),
                    x=[label] * len(per_axis),
                    name=name,
                    legendgroup=name,
                    showlegend=null is nulls[0],
                    marker_color=colour,
                    boxpoints=False,
                )
            )
    kind = "signed" if nulls[0].signed else "absolute"
    figure.update_layout(
        boxmode="group",
        title="Rotations per axis in three bases<br><sup>does the per-unit count survive a "
        "change of basis?</sup>",
        xaxis_title="basis",
        yaxis_title=f"{kind} rotations (turns) per axis",
        legend={"orientation": "h", "y": -0.2},
        template=TEMPLATE,
    )
    return figure


def _check_result(result: object, kind: str, origin: str) -> None:
    if not is_result(result, kind):
        raise InputTypeError(f"result must be a {kind} (from {origin}); got {type(result).__name__}")


def jpca_plane(result: JPCAResult, pair: int = 0, samples: int = DEFAULT_SAMPLES) -> go.Figure:
    """Trajectories of the first ``samples`` samples in jPC plane ``pair`` (0: fastest).

    Lines are samples; markers are coloured by sublayer, a ring marks the first one. A
    rotational flow shows as paths that circle the origin counter-clockwise.
    """
    _check_result(result, "JPCAResult", "tl_dynamics.jpca")
    paths = result.plane_trajectories(pair)[:samples]
    depth = torch.arange(paths.shape[1]).tolist()
    figure = go.Figure()
    for sample, path in enumerate(paths):
        figure.add_trace(
            go.Scatter(
                x=path[:, 0].tolist(),
                y=path[:, 1].tolist(),
                mode="lines+markers",
                line={"color": "rgba(120,120,120,0.5)", "width": 1},
                marker={"color": depth, "colorscale": SEQUENTIAL, "size": 5,
                        "showscale": sample == 0, "colorbar": {"title": "sublayer"}},
                text=list(result.labels),
                hovertemplate="%{text}<extra>sample " + str(sample) + "</extra>",
                showlegend=False,
            )
        )
        figure.add_trace(
            go.Scatter(x=[float(path[0, 0])], y=[float(path[0, 1])], mode="markers",
                       marker={"symbol": "circle-open", "size": 10, "color": "black"},
                       showlegend=False, hoverinfo="skip")
        )
    turns = float(result.rotations[pair])
    figure.update_layout(
        title=f"jPCA plane {pair + 1}: {turns:.2f} turns over depth<br><sup>r2 skew "
        f"{result.r2_skew:.3f} (full {result.r2_full:.3f}), layer-shuffle p = "
        f"{result.p_value:.3g}</sup>",
        xaxis_title="jPC1 (residual-stream units)",
        yaxis_title="jPC2 (residual-stream units)",
        yaxis={"scaleanchor": "x"},
        template=TEMPLATE,
    )
    return figure


def jpca_null(result: JPCAResult) -> go.Figure:
    """Histogram of ``r2_skew`` over layer shuffles, with the true order's value."""
    _check_result(result, "JPCAResult", "tl_dynamics.jpca")
    figure = go.Figure(
        go.Histogram(x=result.null_r2_skew.tolist(), name=f"{result.n_shuffles} layer shuffles",
                     marker_color=NULL_COLOUR, histnorm="probability")
    )
    figure.add_vline(x=result.r2_skew, line_color=OBSERVED_COLOUR, line_dash="dash",
                     annotation_text=f"true order {result.r2_skew:.3f} (p = {result.p_value:.3g})")
    figure.update_layout(
        title="jPCA: rotational fit against the layer-shuffle null",
        xaxis_title="r2 of the skew-symmetric fit (fraction of ||dZ||^2)",
        yaxis_title="fraction of shuffles",
        template=TEMPLATE,
    )
    return figure


def jacobian_contraction(sweep: JacobianSweep, teleports: TeleportSweep | None = None) -> go.Figure:
    """Per layer, the largest finite-time Lyapunov exponent, raw and normalised by the
    state's growth (nats per sublayer step; below 0: every direction contracts), and the
    mean over the top k; with ``teleports``, ``log(contraction) / steps`` of the teleport
    sweep (absolute and relative to the stream's norm) on the same scale.

    Do the layers whose Jacobians contract also pull teleports back?
    """
    _check_result(sweep, "JacobianSweep", "tl_dynamics.jacobian_sweep")
    frame = sweep.to_frame()
    figure = go.Figure()
    series = [
        ("top_lyapunov", "Jacobian: largest exponent", "#1f77b4", "solid"),
        ("top_normalised_lyapunov", "Jacobian: largest, normalised", "#ff7f0e", "solid"),
        ("mean_lyapunov", "Jacobian: mean of top k", "#1f77b4", "dot"),
        ("mean_normalised_lyapunov", "Jacobian: mean, normalised", "#ff7f0e", "dot"),
    ]
    for column, name, colour, dash in series:
        figure.add_trace(go.Scatter(x=frame["layer"], y=frame[column], name=name,
                                    mode="lines+markers", line={"color": colour, "dash": dash}))
    if teleports is not None:
        _check_result(teleports, "TeleportSweep", "tl_dynamics.teleport_sweep")
        moves = teleports.to_frame()
        steps = moves["steps"].clip(lower=1)
        for column, name, colour in (
            ("contraction", "teleports: log(contraction) / steps", "#2ca02c"),
            ("relative_contraction", "teleports: relative, per step", "#d62728"),
        ):
            figure.add_trace(go.Scatter(x=moves["layer"], y=np.log(moves[column]) / steps,
                                        name=name, mode="markers",
                                        marker={"color": colour, "size": 10, "symbol": "diamond"}))
    figure.add_hline(y=0, line_color=NULL_COLOUR, line_dash="dash")
    first = sweep.spectra[0]
    figure.update_layout(
        title=f"Local stability per layer: {first.model_name}<br><sup>Jacobian from each "
        f"layer's input over {first.steps} sublayers; below 0 contracts</sup>",
        xaxis_title="layer",
        yaxis_title="finite-time Lyapunov exponent (nats per sublayer step)",
        legend={"orientation": "h", "y": -0.25},
        template=TEMPLATE,
    )
    return figure


def dsa_matrix(result: DynamicalSimilarity) -> go.Figure:
    """Heatmap of DSA distances between conditions (radians for the angular score)."""
    _check_result(result, "DynamicalSimilarity", "tl_dynamics.dynamical_similarity")
    names = list(result.names)
    figure = go.Figure(
        go.Heatmap(
            z=result.distance.tolist(), x=names, y=names, colorscale=SEQUENTIAL,
            colorbar={"title": "distance"}, texttemplate="%{z:.3f}",
            hovertemplate="%{y} vs %{x}: %{z:.4f}<extra></extra>",
        )
    )
    figure.update_layout(
        title=f"Dynamical similarity (DSA, {result.score_method})<br><sup>{result.n_points} "
        f"points of normalised depth, {result.n_components} principal axes per condition"
        "</sup>",
        xaxis_title="condition",
        yaxis_title="condition",
        yaxis={"autorange": "reversed"},
        template=TEMPLATE,
    )
    return figure
