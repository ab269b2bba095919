"""Checks for course exercises: compare a student's answer with the library's, say what differs.

The teaching notebooks (``notebooks/``) ask students to compute the paper's measures
themselves from ``dyn.resid`` before calling the library (the ARENA manner: a stub, a
check, a hint, a solution). Each ``check_*`` function here recomputes the library's
answer from the same input and compares. On agreement it prints one line saying what
matched; on disagreement it raises :class:`AssertionError` whose message says what
differs: the type, the shape (with the axis names), or the first entry that differs,
named by sample, transition (``"3_mid -> 4_pre"``) or unit, with the expected and the
received value. Comparisons are ``torch.allclose``-style with tolerances loose enough for
float32 answers to a float64 reference (:data:`RTOL`, :data:`ATOL_FRACTION`), and NaN
where the library gives NaN (a constant unit has no correlation).

Checks (docs/paper.md, metrics 3-6 and 9):

* :func:`check_velocity`, :func:`check_cosine_similarity`: ``[sample, transition]``;
* :func:`check_unit_correlation`: ``[transition, d_model]`` Pearson r;
* :func:`check_mutual_information`: one unit, one transition, in nats (Gaussian KDE);
* :func:`check_rotations`: rotation count of one unit's mean trajectory, in turns;
* :func:`check_teleport`: the trajectory of one teleported run, ``[sublayer, d_model]``.

Example::

    import tl_dynamics as tld
    from tl_dynamics import testing

    model = tld.models.load_model()
    dyn = tld.collect(model, tld.data.python_docs()[:32], progress=False)
    mine = (dyn.resid[:, 1:] - dyn.resid[:, :-1]).norm(dim=-1)
    testing.check_velocity(mine, dyn)          # prints a line starting with "Passed"
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from tl_dynamics._checks import check_int
from tl_dynamics.cache import DynamicsCache
from tl_dynamics.errors import InputTypeError
from tl_dynamics.hooks import TLModel
from tl_dynamics.interventions import DEFAULT_PROMPT, teleport
from tl_dynamics.metrics import (
    cosine_similarity,
    default_labels,
    mutual_information,
    rotations,
    unit_correlation,
    velocity,
)

RTOL = 1e-4
"""Relative tolerance: a float32 answer to a float64 reference agrees to ~1e-6; 1e-4 leaves
room for a different but correct order of operations."""
ATOL_FRACTION = 1e-5
"""Absolute tolerance as a fraction of the largest expected magnitude, so that values
near zero in a stream whose norm reaches hundreds compare on the stream's scale."""
ATOL_FLOOR = 1e-6
"""Absolute tolerance never goes below this (an all-zero expected answer)."""
PASS_MARK = "Passed"
"""First word of every success line."""

__all__ = [
    "ATOL_FRACTION",
    "RTOL",
    "check_cosine_similarity",
    "check_mutual_information",
    "check_rotations",
    "check_teleport",
    "check_unit_correlation",
    "check_velocity",
]


def _resid_and_labels(dyn: Any) -> tuple[Tensor, list[str]]:
    """``(resid, labels)`` from a :class:`DynamicsCache` or a ``[batch, sublayer, d_model]`` tensor."""
    if isinstance(dyn, DynamicsCache):
        return dyn.resid, list(dyn.labels)
    if isinstance(dyn, Tensor) and dyn.ndim == 3:
        return dyn, default_labels(dyn.shape[1])
    got = f"a tensor of shape {tuple(dyn.shape)}" if isinstance(dyn, Tensor) else type(dyn).__name__
    raise InputTypeError(
        f"dyn must be a DynamicsCache or a [batch, sublayer, d_model] tensor; got {got}"
    )


def _as_tensor(mine: Any, what: str) -> Tensor:
    """The student's answer as a CPU float64 tensor, or an AssertionError saying what it is."""
    if isinstance(mine, np.ndarray | float | int) and not isinstance(mine, bool):
        mine = torch.as_tensor(mine)
    if not isinstance(mine, Tensor):
        raise AssertionError(
            f"{what}: expected a torch.Tensor, got {type(mine).__name__} ({mine!r:.80}). "
            "Did the function end without a `return`?"
        )
    if not (mine.is_floating_point() or mine.dtype in (torch.int32, torch.int64)):
        raise AssertionError(f"{what}: expected a floating tensor, got dtype {mine.dtype}")
    return mine.detach().to("cpu", torch.float64)


def _transition_names(labels: Sequence[str]) -> list[str]:
    return [f"{a} -> {b}" for a, b in zip(labels[:-1], labels[1:])]


def _describe(index: tuple[int, ...], dims: Sequence[str], names: dict[str, list[str]]) -> str:
    """``"sample 3, transition 5 (2_mid -> 3_pre)"`` for an index into a result."""
    parts = []
    for i, dim in zip(index, dims):
        label = names.get(dim)
        parts.append(f"{dim} {i}" + (f" ({label[i]})" if label else ""))
    return ", ".join(parts)


def _compare(
    mine: Any,
    expected: Tensor,
    *,
    what: str,
    dims: Sequence[str],
    names: dict[str, list[str]] | None = None,
    units: str = "",
) -> None:
    """Raise AssertionError unless ``mine`` matches ``expected``; print the success line."""
    names = names or {}
    got = _as_tensor(mine, what)
    expected = expected.detach().to("cpu", torch.float64)
    shape_text = f"[{', '.join(dims)}]" if dims else "a scalar"
    if got.shape != expected.shape:
        advice = (
            f" It has the right number of entries: reshape it to {tuple(expected.shape)}."
            if got.numel() == expected.numel()
            else ""
        )
        raise AssertionError(
            f"{what}: expected shape {tuple(expected.shape)} {shape_text}, "
            f"got {tuple(got.shape)}.{advice}"
        )
    nan_expected, nan_got = expected.isnan(), got.isnan()
    if not torch.equal(nan_expected, nan_got):
        where = (nan_expected ^ nan_got).nonzero()[0].tolist()
        raise AssertionError(
            f"{what}: NaN in the wrong place at {_describe(tuple(where), dims, names)}: "
            f"expected {float(expected[tuple(where)]):.6g}, got {float(got[tuple(where)]):.6g}"
        )
    finite = ~nan_expected
    scale = float(expected[finite].abs().max()) if bool(finite.any()) else 0.0
    atol = max(ATOL_FLOOR, ATOL_FRACTION * scale)
    bad = finite & ((got - expected).abs() > atol + RTOL * expected.abs())
    if bool(bad.any()):
        where = tuple(bad.nonzero()[0].tolist())
        values = f"expected {float(expected[where]):.6g}{units}, got {float(got[where]):.6g}{units}"
        if not dims:
            raise AssertionError(f"{what}: {values}")
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {expected.numel()} entries differ; first at "
            f"{_describe(where, dims, names)}: {values}"
        )
    max_diff = float((got - expected)[finite].abs().max()) if bool(finite.any()) else 0.0
    print(
        f"{PASS_MARK}: {what} matches the library "
        f"(shape {tuple(expected.shape)}, max |difference| {max_diff:.2g}{units})."
    )


def _per_transition(mine: Any, dyn: Any, metric: Any, what: str) -> None:
    resid, labels = _resid_and_labels(dyn)
    _compare(
        mine,
        metric(resid),
        what=what,
        dims=("sample", "transition"),
        names={"transition": _transition_names(labels)},
    )


def check_velocity(mine: Float[Tensor, "sample transition"], dyn: DynamicsCache | Tensor) -> None:
    """Check ``mine`` against :func:`tl_dynamics.metrics.velocity` of ``dyn`` (Fig 1F).

    ``mine``: ``[sample, transition]`` step lengths ``||h_{t+1} - h_t||_2``. Prints a success
    line, or raises AssertionError saying what differs.
    """
    _per_transition(mine, dyn, velocity, "velocity")


def check_cosine_similarity(
    mine: Float[Tensor, "sample transition"], dyn: DynamicsCache | Tensor
) -> None:
    """Check ``mine`` against :func:`tl_dynamics.metrics.cosine_similarity` (Fig 1E).

    ``mine``: ``[sample, transition]`` cosines of successive states. Prints a success line,
    or raises AssertionError saying what differs.
    """
    _per_transition(mine, dyn, cosine_similarity, "cosine similarity")


def check_unit_correlation(
    mine: Float[Tensor, "transition d_model"], dyn: DynamicsCache | Tensor
) -> None:
    """Check ``mine`` against :func:`tl_dynamics.metrics.unit_correlation` (Fig 1C).

    ``mine``: ``[transition, d_model]`` Pearson r across samples of every unit between
    sublayers ``t`` and ``t + 1`` (NaN for a unit constant over the samples). Prints a
    success line, or raises AssertionError saying what differs.
    """
    resid, labels = _resid_and_labels(dyn)
    _compare(
        mine,
        unit_correlation(resid),
        what="per-unit correlation",
        dims=("transition", "unit"),
        names={"transition": _transition_names(labels)},
    )


def _check_index(value: Any, name: str, size: int, axis: str) -> int:
    return check_int(value, name, 0, size - 1, f" ({axis})")


def check_mutual_information(
    mine: float | Tensor, dyn: DynamicsCache | Tensor, *, unit: int, transition: int
) -> None:
    """Check one unit's mutual information across one transition, in nats (Fig 1G).

    ``mine``: MI between ``resid[:, transition, unit]`` and ``resid[:, transition + 1,
    unit]`` by the paper's estimator (Gaussian KDE with Scott's bandwidth, evaluated at
    the samples, ``1e-10`` inside the logarithm), a float or a 0-dim tensor. Compared with
    :func:`tl_dynamics.metrics.mutual_information`. Prints a success line, or raises
    AssertionError saying what differs.
    """
    resid, labels = _resid_and_labels(dyn)
    unit = _check_index(unit, "unit", resid.shape[2], "d_model")
    transition = _check_index(transition, "transition", resid.shape[1] - 1, "transitions")
    pair = resid[:, transition : transition + 2, unit : unit + 1]
    expected = mutual_information(pair)[0, 0]
    name = _transition_names(labels)[transition]
    _compare(mine, expected, what=f"MI of unit {unit} across {name}", dims=(), units=" nats")


def check_rotations(mine: float | Tensor, dyn: DynamicsCache | Tensor, *, unit: int) -> None:
    """Check the signed rotation count of one unit's mean trajectory, in turns (Fig 2B).

    ``mine``: turns of the phase portrait ``(a_l, da_l/dl)`` of unit ``unit`` of the
    batch-mean trajectory (central differences, wrapped changes of tangent angle summed
    and divided by ``2 pi``), a float or a 0-dim tensor. Compared with
    :func:`tl_dynamics.metrics.rotations` (``trajectory="mean"``). Prints a success line,
    or raises AssertionError saying what differs.
    """
    resid, _ = _resid_and_labels(dyn)
    unit = _check_index(unit, "unit", resid.shape[2], "d_model")
    expected = rotations(resid[:, :, unit : unit + 1], trajectory="mean")[0]
    _compare(mine, expected, what=f"rotation count of unit {unit}", dims=(), units=" turns")


def check_teleport(
    mine: Float[Tensor, "sublayer d_model"],
    model: TLModel,
    *,
    layer: int,
    point: Float[Tensor, " d_model"],
    prompt: str = DEFAULT_PROMPT,
) -> None:
    """Check the trajectory of one teleported run against :func:`tl_dynamics.teleport`.

    ``mine``: ``[sublayer, d_model]`` residual stream at the prompt's last token, at every
    ``hook_resid_pre`` / ``hook_resid_mid`` in order, of a run in which
    ``blocks.{layer}.hook_resid_pre`` at the last token was overwritten with ``point``.
    Prints a success line, or raises AssertionError saying what differs.
    """
    if not isinstance(point, Tensor) or point.ndim != 1:
        got = f"shape {tuple(point.shape)}" if isinstance(point, Tensor) else type(point).__name__
        raise InputTypeError(f"point must be a [d_model] tensor; got {got}")
    result = teleport(model, prompt, layer=layer, points=point[None])
    _compare(
        mine,
        result.trajectories[0],
        what=f"teleported trajectory (layer {layer})",
        dims=("sublayer", "unit"),
        names={"sublayer": list(result.labels)},
    )
