"""Metrics of the residual stream as a dynamical system over depth (docs/paper.md, metrics 1-6).

Every function takes ``resid``, the residual stream at the last token of each text, as a
``[batch, sublayer, d_model]`` tensor with the sublayers interleaved ``0_pre, 0_mid,
1_pre, ...`` (optionally ending with ``final_post``), and returns tensors on the same
device, or a frozen dataclass with a ``.to_frame()`` tidy view. Transition ``t`` goes from
sublayer ``t`` to ``t + 1``. They know nothing of models: any tensor of that shape works.

* :mod:`~tl_dynamics.metrics.transitions`: labels, transition kinds (within / cross /
  layer), selecting and tabulating per-transition results.
* :mod:`~tl_dynamics.metrics.geometry`: mean activation, unit order, norms, cosine
  similarity and velocity of successive vectors (Fig 1B, E, F).
* :mod:`~tl_dynamics.metrics.correlation`: per-unit Pearson correlation between
  sublayers and its distribution over sublayer pairs (Fig 1C, D).
* :mod:`~tl_dynamics.metrics.information`: per-unit mutual information between successive
  sublayers, Gaussian-KDE reference estimator (Fig 1G, H).
* :mod:`~tl_dynamics.metrics.phase`: phase portraits, rotation counts and their
  layer-shuffle null (Fig 2).

Example::

    import torch
    from tl_dynamics import metrics

    resid = torch.randn(64, 8, 16).cumsum(dim=1)      # [batch, sublayer, d_model]
    labels = metrics.default_labels(8)
    r = metrics.unit_correlation(resid)               # [transition, d_model]
    frame = metrics.transition_frame(r, labels, "r", dims=("transition", "unit"))
    frame.groupby("kind")["r"].mean()
    metrics.rotations(resid, trajectory="mean").mean()
"""

from tl_dynamics.metrics.correlation import (
    CorrelationDistribution,
    correlation_distribution,
    pairwise_unit_correlation,
    sublayer_pairs,
    unit_correlation,
)
from tl_dynamics.metrics.geometry import (
    cosine_similarity,
    mean_activation,
    norms,
    unit_order,
    velocity,
)
from tl_dynamics.metrics.information import MI_LOG_EPSILON, MI_METHODS, mutual_information
from tl_dynamics.metrics.phase import (
    BASES,
    GRADIENT_SCHEMES,
    TRAJECTORIES,
    PhasePortrait,
    RotationNull,
    RotationNullSummary,
    basis_matrix,
    phase_portrait,
    rotation_null,
    rotations,
)
from tl_dynamics.metrics._validation import STAT_DTYPE
from tl_dynamics.metrics.transitions import (
    FINAL_LABEL,
    TRANSITION_KINDS,
    default_labels,
    select_transitions,
    transition_frame,
    transition_kinds,
)

__all__ = [
    "BASES",
    "FINAL_LABEL",
    "GRADIENT_SCHEMES",
    "MI_LOG_EPSILON",
    "MI_METHODS",
    "STAT_DTYPE",
    "TRAJECTORIES",
    "TRANSITION_KINDS",
    "CorrelationDistribution",
    "PhasePortrait",
    "RotationNull",
    "RotationNullSummary",
    "basis_matrix",
    "correlation_distribution",
    "cosine_similarity",
    "default_labels",
    "mean_activation",
    "mutual_information",
    "norms",
    "pairwise_unit_correlation",
    "phase_portrait",
    "rotation_null",
    "rotations",
    "select_transitions",
    "sublayer_pairs",
    "transition_frame",
    "transition_kinds",
    "unit_correlation",
    "unit_order",
    "velocity",
]
