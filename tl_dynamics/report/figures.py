"""The report's and the comparison's figures, one function per section.

Each function takes results already computed (:mod:`tl_dynamics.report.measures`,
:mod:`tl_dynamics.report.beyond`, the curves of :mod:`tl_dynamics.report.compare`) and
returns plotly figures drawn by :mod:`tl_dynamics.plot`; nothing here runs a model. A new
figure of a section goes into its function here (its drawing, when reusable, into
:mod:`tl_dynamics.plot`).

Example::

    from tl_dynamics.report.figures import depth_curve_figures
    curves = {"model": [{"condition": "original", "quantity": "norms_mean",
                         "depth": [0.0, 0.5, 1.0], "values": [1.0, 2.0, 4.0]}]}
    [figure] = depth_curve_figures(curves, [("norms_mean", "mean norm")])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go

from tl_dynamics import plot
from tl_dynamics.cache import DynamicsCache

if TYPE_CHECKING:
    from tl_dynamics.metrics import RotationNull
    from tl_dynamics.report.beyond import BeyondMeasures
    from tl_dynamics.report.measures import ConditionMeasures, TrajectoryMeasures

__all__ = [
    "CONDITION_DASH",
    "condition_figures",
    "trajectory_figures",
    "beyond_figures",
    "depth_curve_figures",
]

CONDITION_DASH = {"original": "solid", "shuffled": "dot"}
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def condition_figures(dyn: DynamicsCache, measures: ConditionMeasures) -> list[go.Figure]:
    """The Figure 1-2 panels of one condition."""
    return [
        plot.mean_activation(dyn),
        plot.unit_correlation(dyn),
        plot.correlation_distribution(dyn),
        plot.cosine_similarity(dyn),
        plot.velocity(dyn),
        plot.mutual_information(dyn, values=measures.mutual_information),
        plot.mutual_information_depth(dyn, values=measures.mutual_information),
        plot.phase_portrait(dyn),
        plot.rotations(dyn, values=measures.rotations),
        plot.rotation_null(dyn, null=measures.rotation_null),
    ]


def trajectory_figures(measures: TrajectoryMeasures) -> list[go.Figure]:
    """The Figure 3-4 panels."""
    held_out = measures.autoencoder.held_out_
    return [
        plot.cae_trajectory(held_out),
        plot.cae_step_distance(held_out),
        plot.cae_explained_variance(held_out),
        plot.pca_plane(measures.pca),
        plot.pca_cumulative_variance(measures.pca),
        plot.pca_variance_per_sublayer(measures.pca),
        plot.teleport_quiver(measures.sweep, pca=measures.pca),
        plot.teleport_recovery(measures.sweep),
    ]


def beyond_figures(measures: BeyondMeasures, units_null: RotationNull) -> list[go.Figure]:
    """The "Beyond the paper" panels: rotations in both bases, jPCA's null and top plane,
    and (with the Jacobian) local contraction beside the teleports'."""
    figures = [
        plot.rotation_bases([units_null, measures.random_null]),
        plot.jpca_null(measures.jpca),
        plot.jpca_plane(measures.jpca),
    ]
    if measures.jacobian is not None:
        figures.append(plot.jacobian_contraction(measures.jacobian, measures.teleports))
    return figures


def depth_curve_figures(
    reports: dict[str, list[dict[str, Any]]], quantities: Sequence[tuple[str, str]]
) -> list[go.Figure]:
    """The comparison's overlays: one figure per ``(quantity, title)``, one line per report
    and condition over normalised depth (``reports``: label -> its depth curves, as
    :func:`tl_dynamics.report.compare.depth_curves` returns them)."""
    figures = []
    for key, title in quantities:
        figure = go.Figure()
        for colour, (name, curves) in enumerate(reports.items()):
            for curve in (c for c in curves if c["quantity"] == key):
                figure.add_trace(
                    go.Scatter(
                        x=curve["depth"],
                        y=curve["values"],
                        mode="lines+markers",
                        name=f"{name} · {curve['condition']}",
                        line={"dash": CONDITION_DASH.get(curve["condition"], "solid"),
                              "color": PALETTE[colour % len(PALETTE)]},
                    )
                )
        figure.update_layout(
            title=title,
            xaxis_title="normalised depth (sublayer / number of sublayers)",
            yaxis_title=title,
            template="plotly_white",
        )
        figures.append(figure)
    return figures
