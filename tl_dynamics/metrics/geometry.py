"""Geometry of the residual-stream trajectory: where it is, how it turns, how fast it moves.

Treat depth as time. For one text, the residual stream at its last token is a point
``h_s`` in R^d_model at every sublayer ``s``; successive points form a trajectory. The
paper (Fig 1B, E, F) looks at it three ways:

* **Mean activation** per unit and sublayer, averaged over texts (Fig 1B). Sorting units
  by their mean at the last sublayer (:func:`unit_order`) shows that magnitudes grow with
  depth while each unit keeps its sign.
* **Cosine similarity** of successive points, ``cos(h_t, h_{t+1})`` (Fig 1E): how much the
  direction changes in one step. It rises with depth, and within-layer transitions
  (across attention) stay more aligned than cross-layer ones (across an MLP).
* **Velocity** ``||h_{t+1} - h_t||_2`` (Fig 1F): the length of one step, in the units of
  the residual stream. Flat early, accelerating in the last third of the network.

:func:`norms` gives ``||h_s||_2`` for reference: a velocity is only large or small
relative to the norm of the stream it moves.

All functions accept any floating dtype on any device; half-precision inputs are upcast
to float32 (float32 and float64 keep their dtype) and results stay on the input's
device. Split per-transition results by kind with
:func:`~tl_dynamics.metrics.select_transitions`.

Example::

    import torch
    from tl_dynamics.metrics import cosine_similarity, default_labels, select_transitions, velocity

    resid = torch.randn(32, 8, 16).cumsum(dim=1)     # [batch, sublayer, d_model] random walk
    cosine_similarity(resid).mean(0)                  # [transition], rises along the walk
    step = velocity(resid)                            # [batch, transition]
    select_transitions(step, default_labels(8), "within").mean()
"""

from __future__ import annotations

import torch
from einops import einsum, reduce
from jaxtyping import Float, Int
from torch import Tensor

from tl_dynamics.metrics._validation import check_resid, working_dtype

__all__ = ["mean_activation", "unit_order", "norms", "cosine_similarity", "velocity"]


def mean_activation(
    resid: Float[Tensor, "batch sublayer d_model"],
) -> Float[Tensor, "sublayer d_model"]:
    """Mean of every unit at every sublayer over the batch (Fig 1B).

    Returns ``[sublayer, d_model]`` in the units of the residual stream (float32, or
    float64 for float64 input), on the input's device.
    """
    check_resid(resid)
    return reduce(resid.to(working_dtype(resid)), "batch sublayer d -> sublayer d", "mean")


def unit_order(resid: Float[Tensor, "batch sublayer d_model"]) -> Int[Tensor, " d_model"]:
    """Unit indices sorted by their mean activation at the last sublayer, ascending.

    The paper's sort order for Fig 1B: ``mean_activation(resid)[:, unit_order(resid)]``
    puts the most negative units first. Returns int64 ``[d_model]`` (a stable sort, so
    ties keep index order) on the input's device.
    """
    return torch.argsort(mean_activation(resid)[-1], stable=True)


def norms(resid: Float[Tensor, "batch sublayer d_model"]) -> Float[Tensor, "batch sublayer"]:
    """Euclidean norm ``||h_s||_2`` of every residual-stream vector.

    Returns ``[batch, sublayer]`` in the units of the residual stream (float32, or float64
    for float64 input), on the input's device.
    """
    check_resid(resid)
    return torch.linalg.vector_norm(resid.to(working_dtype(resid)), dim=-1)


def cosine_similarity(
    resid: Float[Tensor, "batch sublayer d_model"],
) -> Float[Tensor, "batch transition"]:
    """Cosine of the angle between successive vectors, ``cos(h_t, h_{t+1})`` (Fig 1E).

    Returns ``[batch, sublayer - 1]``, dimensionless in ``[-1, 1]`` (clamped against
    rounding), float32 or float64 for float64 input, on the input's device. A transition
    from or to an all-zero vector has no angle and gives NaN.
    """
    check_resid(resid, min_sublayers=2)
    h = resid.to(working_dtype(resid))
    dot = einsum(h[:, :-1], h[:, 1:], "batch transition d, batch transition d -> batch transition")
    length = torch.linalg.vector_norm(h, dim=-1)
    return (dot / (length[:, :-1] * length[:, 1:])).clamp(-1.0, 1.0)


def velocity(resid: Float[Tensor, "batch sublayer d_model"]) -> Float[Tensor, "batch transition"]:
    """Step length ``||h_{t+1} - h_t||_2`` between successive sublayers (Fig 1F).

    Returns ``[batch, sublayer - 1]`` in the units of the residual stream (per sublayer
    step), float32 or float64 for float64 input, on the input's device.
    """
    check_resid(resid, min_sublayers=2)
    return torch.linalg.vector_norm(resid.to(working_dtype(resid)).diff(dim=1), dim=-1)
