"""Transitions between successive sublayers, and their kinds.

The residual stream is read twice per layer: ``"l_pre"`` is the input of the attention
sub-block of layer ``l`` and ``"l_mid"`` the input of its MLP sub-block (TransformerLens
``accumulated_resid(incl_mid=True)`` labels, optionally ending with ``"final_post"``, the
stream after the last block). Transition ``t`` goes from sublayer ``t`` to ``t + 1``, so a
stack of ``S`` sublayers has ``S - 1`` transitions, and every per-transition metric
(correlation, cosine, velocity, mutual information) has that length along its transition
axis.

A transition is one of three kinds, because the paper (Fig 1C-H) finds they behave
differently:

* ``"within"``: ``l_pre -> l_mid``, across an attention sub-block, inside layer ``l``;
* ``"cross"``: ``l_mid -> {l+1}_pre`` (or the last ``_mid -> final_post``), across an MLP
  sub-block, from one layer into the next;
* ``"layer"``: ``l_pre -> {l+1}_pre`` (or the last ``_pre -> final_post``), a whole
  block at once, when only the ``_pre`` points were collected.

:func:`select_transitions` keeps the transitions of one kind along an axis;
:func:`transition_frame` turns a per-transition result into a tidy long table for
plotting, with each row's source and target labels, kind and normalised depth.

Example::

    import torch
    from tl_dynamics.metrics import (
        default_labels, select_transitions, transition_frame, transition_kinds,
    )

    labels = default_labels(6)          # ['0_pre', '0_mid', '1_pre', '1_mid', '2_pre', '2_mid']
    transition_kinds(labels)            # ['within', 'cross', 'within', 'cross', 'within']
    speed = torch.rand(10, 5)           # e.g. velocity, [batch, transition]
    select_transitions(speed, labels, "cross").shape   # torch.Size([10, 2])
    frame = transition_frame(speed, labels, "velocity", dims=("sample", "transition"))
    frame.groupby("kind")["velocity"].mean()
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from tl_dynamics._checks import check_int
from tl_dynamics.errors import DynamicsInputError, InputTypeError
from tl_dynamics.labels import FINAL_LABEL
from tl_dynamics.metrics._validation import check_choice

__all__ = [
    "TRANSITION_KINDS",
    "FINAL_LABEL",
    "FRAME_COLUMNS",
    "default_labels",
    "transition_kinds",
    "select_transitions",
    "transition_frame",
]

TRANSITION_KINDS = ("within", "cross", "layer")
# Columns that transition_frame always writes; other dims and the value may not reuse them.
FRAME_COLUMNS = ("transition", "source", "target", "kind", "depth")

_SUBLAYER_LABEL = re.compile(r"^(\d+)_(pre|mid)$")
_EXPECTED_PAIRS = (
    "'l_pre' -> 'l_mid' (within), 'l_mid' -> '{l+1}_pre' (cross), "
    "'l_pre' -> '{l+1}_pre' (layer), or the last '_mid'/'_pre' -> 'final_post'"
)


def default_labels(n_sublayers: int) -> list[str]:
    """Interleaved labels ``["0_pre", "0_mid", "1_pre", ...]`` of length ``n_sublayers``.

    The labels TransformerLens gives the pre/mid stack (without ``"final_post"``); an odd
    ``n_sublayers`` ends on a ``_pre`` label.
    """
    check_int(n_sublayers, "n_sublayers")
    return [f"{i // 2}_{'pre' if i % 2 == 0 else 'mid'}" for i in range(n_sublayers)]


def _parse_label(label: object, position: int) -> tuple[int, str] | None:
    """``(layer, "pre" | "mid")`` for a sublayer label, ``None`` for ``"final_post"``."""
    if label == FINAL_LABEL:
        return None
    match = _SUBLAYER_LABEL.match(label) if isinstance(label, str) else None
    if match is None:
        raise DynamicsInputError(
            f"labels[{position}] = {label!r} is not a sublayer label; expected "
            f"'<layer>_pre', '<layer>_mid' or {FINAL_LABEL!r}"
        )
    return int(match.group(1)), match.group(2)


def _pair_kind(source: tuple[int, str] | None, target: tuple[int, str] | None) -> str | None:
    """Kind of the transition ``source -> target``, ``None`` if they are not successive."""
    if source is None:  # nothing comes after final_post
        return None
    layer, point = source
    if target is None:
        return "cross" if point == "mid" else "layer"
    next_layer, next_point = target
    if point == "pre" and next_point == "mid" and next_layer == layer:
        return "within"
    if next_point == "pre" and next_layer == layer + 1:
        return "cross" if point == "mid" else "layer"
    return None


def transition_kinds(labels: Sequence[str]) -> list[str]:
    """Kind of every transition between successive labels, length ``len(labels) - 1``.

    Each entry is ``"within"``, ``"cross"`` or ``"layer"`` (see the module docstring).
    Raises ``ValueError`` for an unknown label or a pair that is not two successive
    sublayers (out of order, repeated, or a layer skipped).
    """
    if isinstance(labels, str) or not isinstance(labels, Iterable):
        raise InputTypeError(
            f"labels must be a sequence of sublayer labels; got {type(labels).__name__}"
        )
    labels = list(labels)
    parsed = [_parse_label(label, i) for i, label in enumerate(labels)]
    kinds = []
    for t, (source, target) in enumerate(itertools.pairwise(parsed)):
        kind = _pair_kind(source, target)
        if kind is None:
            raise DynamicsInputError(
                f"labels[{t}] -> labels[{t + 1}] = {labels[t]!r} -> {labels[t + 1]!r} is not "
                f"a transition between successive sublayers; expected {_EXPECTED_PAIRS}"
            )
        kinds.append(kind)
    return kinds


def _check_tensor(values: object) -> None:
    """Raise ``TypeError`` unless ``values`` is a tensor."""
    if not isinstance(values, Tensor):
        raise InputTypeError(f"values must be a torch.Tensor; got {type(values).__name__}")


def _check_transition_axis(values: Tensor, labels: Sequence[str], dim: int) -> list[str]:
    """Kinds of ``labels``; raise unless ``values`` has one entry per transition on ``dim``."""
    kinds = transition_kinds(labels)
    if not -values.ndim <= dim < values.ndim:
        raise DynamicsInputError(
            f"dim must index one of the {values.ndim} dims of values (shape "
            f"{tuple(values.shape)}); got {dim}"
        )
    if values.shape[dim] != len(kinds):
        raise DynamicsInputError(
            f"values must have len(labels) - 1 = {len(kinds)} transitions along dim {dim}; "
            f"got shape {tuple(values.shape)}"
        )
    return kinds


def select_transitions(values: Tensor, labels: Sequence[str], kind: str, dim: int = -1) -> Tensor:
    """The entries of ``values`` along ``dim`` whose transition is of ``kind``.

    ``values`` has ``len(labels) - 1`` entries along ``dim`` (one per transition, e.g. the
    ``[batch, transition]`` output of :func:`~tl_dynamics.metrics.velocity` with
    ``dim=-1`` or the ``[transition, d_model]`` output of
    :func:`~tl_dynamics.metrics.unit_correlation` with ``dim=0``). Returns the same
    tensor with only the ``kind`` transitions kept along ``dim``, in depth order (empty
    along ``dim`` if there are none), same dtype, device and units.
    """
    check_choice(kind, "kind", TRANSITION_KINDS)
    _check_tensor(values)
    kinds = _check_transition_axis(values, labels, dim)
    keep = torch.tensor(
        [t for t, k in enumerate(kinds) if k == kind], dtype=torch.long, device=values.device
    )
    return values.index_select(dim, keep)


def _infer_dims(values: Tensor, labels: Sequence[str]) -> tuple[str, ...]:
    """Axis names of a metric's output: ``[transition]``, ``[sample, transition]`` or
    ``[transition, unit]``; ``ValueError`` when the shape does not say which."""
    n_transitions = len(labels) - 1
    candidates = {
        1: [("transition",)],
        2: [("sample", "transition"), ("transition", "unit")],
    }.get(values.ndim, [])
    axis = {("transition",): 0, ("sample", "transition"): 1, ("transition", "unit"): 0}
    fits = [dims for dims in candidates if values.shape[axis[dims]] == n_transitions]
    if len(fits) != 1:
        raise DynamicsInputError(
            f"cannot tell which axis of values (shape {tuple(values.shape)}) holds the "
            f"{n_transitions} transitions; pass dims, e.g. ('sample', 'transition')"
        )
    return fits[0]


def transition_frame(
    values: Tensor,
    labels: Sequence[str],
    value_name: str = "value",
    dims: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Tidy long table of a per-transition result, one row per entry of ``values``.

    ``dims`` names every axis of ``values`` and must contain ``"transition"`` once; by
    default it is inferred from the shape as the metrics return them, e.g.
    ``("transition",)`` for ``[transition]``, ``("sample", "transition")`` for the
    ``[batch, transition]`` output of ``velocity``, ``("transition", "unit")`` for the
    ``[transition, d_model]`` output of ``unit_correlation``.

    Columns: ``transition`` (int ``t``, sublayer ``t -> t + 1``), ``source`` and
    ``target`` (labels), ``kind`` (see :func:`transition_kinds`), ``depth`` (``(t + 1) /
    (len(labels) - 1)``: the target's depth, 1 at the last sublayer), one integer index
    column per other name in ``dims``, and ``value_name`` with the values (their units).
    """
    _check_tensor(values)
    dims = _infer_dims(values, labels) if dims is None else tuple(dims)
    if len(dims) != values.ndim or dims.count("transition") != 1:
        raise DynamicsInputError(
            f"dims must name each of the {values.ndim} dims of values (shape "
            f"{tuple(values.shape)}) and contain 'transition' exactly once, e.g. "
            f"('sample', 'transition') or ('transition', 'unit'); got {dims}"
        )
    names_used = (*dims, value_name)
    if len(set(names_used)) != len(names_used) or set(names_used) & set(FRAME_COLUMNS[1:]):
        raise DynamicsInputError(
            f"dims and value_name must be distinct and must not reuse the columns "
            f"{list(FRAME_COLUMNS[1:])}; got dims={dims}, value_name={value_name!r}"
        )
    kinds = np.asarray(_check_transition_axis(values, labels, dims.index("transition")))
    data = values.detach().cpu()
    if data.dtype in (torch.float16, torch.bfloat16):
        data = data.float()
    flat_values = data.numpy().reshape(-1)
    index = np.indices(values.shape).reshape(values.ndim, -1)
    t = index[dims.index("transition")]
    names = np.asarray(list(labels), dtype=object)
    columns = {
        "transition": t,
        "source": names[t],
        "target": names[t + 1],
        "kind": kinds[t],
        "depth": (t + 1) / (len(names) - 1),
    }
    columns.update({name: index[axis] for axis, name in enumerate(dims) if name != "transition"})
    columns[value_name] = flat_values
    return pd.DataFrame(columns)
