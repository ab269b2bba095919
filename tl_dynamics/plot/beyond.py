"""Beyond the paper: basis control, population rotations, local stability, similarity.

Figures for the measures that test the paper's two dynamical claims with tools that do
not depend on the residual stream's coordinate axes (issue 13). One function per panel,
each taking a result object and returning a plotly ``Figure`` with labelled axes.

=========================  ===================================================
function                   shows
=========================  ===================================================
rotation_bases             per-axis rotations against the null, per basis
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

import plotly.graph_objects as go

from tl_dynamics.metrics import RotationNull

TEMPLATE = "plotly_white"
OBSERVED_COLOUR = "#1f77b4"
NULL_COLOUR = "#7f7f7f"
ALPHA = 0.05  # significance level shown in the rotation_bases labels (the summary's default)

__all__ = ["rotation_bases"]


def _check_sequence(values: object, name: str, kind: type) -> list:
    items = list(values) if isinstance(values, Sequence) else [values]
    if not items or not all(isinstance(item, kind) for item in items):
        raise TypeError(
            f"{name} must be a {kind.__name__} or a non-empty sequence of them; received "
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
