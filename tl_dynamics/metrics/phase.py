"""Phase portraits of single units over depth, and how often they turn.

A pendulum is described by its position and its velocity; plotting one against the other
(its *phase portrait*) turns an oscillation into a loop. The paper (section 2.6, Fig 2)
does this for each unit ``i`` of the residual stream with depth as time: the points
``(a_l, da_l/dl)``, the unit's activation at sublayer ``l`` and its derivative along
depth, for ``l = 0 .. S-1``. :func:`phase_portrait` returns both coordinates.

Rotation count (:func:`rotations`), as docs/paper.md, metric 6 writes it:

1. Points ``p_l = (a_l, da_l/dl)``; the derivative uses central differences, one-sided
   at both ends (``numpy.gradient`` / ``torch.gradient``; ``gradient="central"``), or
   forward differences with the last one repeated (``gradient="forward"``).
2. Centre by subtracting the first point (this cancels in the next step, so it changes
   nothing and is not computed).
3. Tangent vectors between successive points, ``v_l = p_{l+1} - p_l``, their angles
   ``theta_l = atan2(dy, dx)``.
4. Each change of angle wrapped into ``(-pi, pi]``; ``R = sum(dtheta) / (2 pi)`` turns,
   positive counter-clockwise. ``signed=False`` sums ``|dtheta|`` instead.

The wrapped change of angle between ``v_l`` and ``v_{l+1}`` is computed directly as
``atan2(v_l x v_{l+1}, v_l . v_{l+1})``, which equals the wrapped difference of the two
``atan2`` angles and needs one ``atan2`` per step instead of two. A zero-length tangent
(two equal successive points) has no direction: it is skipped, i.e. the turn is measured
from the last non-zero tangent to the next one, so repeated points add no angle change
(and a unit constant over depth turns 0 times).

Null (:func:`rotation_null`): permute the sublayer order independently for every unit and
every shuffle, recompute the derivative on the permuted sequence, count again. It runs
vectorised over units and shuffles (permutations are sorts of random keys from a
seeded numpy ``PCG64`` stream, exactly uniform), in chunks of shuffles, counting in
float32 with depth as the first axis, and is reproducible for a seed.

Basis control (``basis=``). The residual stream has no privileged basis: nothing in a
transformer's additive updates singles out its coordinate axes, so a "unit" is one of
many equally valid coordinate systems, and a per-unit count may only describe the axes it
was read in. ``basis="random"`` counts the same statistic after a Haar-random orthogonal
change of coordinates of ``d_model`` (QR of a Gaussian matrix with the signs of ``R``'s
diagonal fixed, Mezzadri 2007, seeded by ``seed``); ``basis="pca"`` counts it along the
principal axes of all vectors (samples x sublayers), largest variance first. Counts are
invariant to a translation and to flipping an axis (a point reflection of the portrait),
so only the rotation of the axes matters. :func:`basis_matrix` returns the change of
basis.

Caution (docs/paper.md, metric 6). Any ``(x, dx/dl)`` portrait circulates clockwise: where
``dx/dl > 0`` the point moves right, where it is negative it moves left. So signed counts
are negative: ``a_l = sin(2 pi k l / (S - 1))``, ``k`` whole oscillations over depth,
turns ``-k`` times (to 0.01 with 128 sublayers). A shuffled sequence oscillates from
sublayer to sublayer, so it turns *more*, not zero times: for that sine with ``k = 3``
and 64 sublayers the null averages about -15 turns against the observed -3, and on
MiniLM (12 sublayers, 300 texts) about -2.4 against -1.5. The paper's "10.74 rotations vs
~0 for the null" does not follow from the formula as written; the choices it leaves open
are arguments here (``signed``, ``trajectory``, ``gradient``) so that reports state what
the data show.

Example::

    import math
    import torch
    from tl_dynamics.metrics import phase_portrait, rotation_null, rotations

    depth = torch.arange(64, dtype=torch.float64)
    wave = torch.sin(2 * math.pi * 3 * depth / 63)              # 3 oscillations over depth
    resid = wave.reshape(1, 64, 1).repeat(4, 1, 2)              # [batch, sublayer, d_model]
    phase_portrait(resid).derivative.shape                      # [4, 64, 2]
    rotations(resid)                                            # -2.99 everywhere
    null = rotation_null(resid, n_shuffles=200, seed=0)
    null.summary()                                              # observed -2.99, null ~ -15
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from einops import rearrange, reduce
from jaxtyping import Float, Int
from torch import Tensor

from tl_dynamics._checks import check_int
from tl_dynamics._repr import compact_repr
from tl_dynamics.errors import InputTypeError
from tl_dynamics.metrics._validation import (
    STAT_DTYPE,
    check_choice,
    check_resid,
    chunk_slices,
    working_dtype,
)

__all__ = [
    "GRADIENT_SCHEMES",
    "TRAJECTORIES",
    "BASES",
    "BASIS_STREAM",
    "FULL_TURN",
    "ROTATION_TEMPORARIES",
    "MIN_ROTATION_SUBLAYERS",
    "ROTATION_CHUNK_BYTES",
    "NULL_DTYPE",
    "NULL_PERMUTATION_BYTES",
    "NULL_CHUNK_BYTES",
    "NULL_BLOCK_ROWS",
    "basis_matrix",
    "PhasePortrait",
    "phase_portrait",
    "rotations",
    "RotationNullSummary",
    "RotationNull",
    "rotation_null",
]

GRADIENT_SCHEMES = ("central", "forward")
TRAJECTORIES = ("sample", "mean")
BASES = ("units", "random", "pca")
"""Coordinate systems rotations can be counted in: the model's own axes, a seeded
Haar-random rotation of them, the principal axes of the data."""
# Child of the seed's numpy SeedSequence that draws the random basis; children 0 and 1
# draw the shuffle null's permutations (_permutation_generators).
BASIS_STREAM = 2
FULL_TURN = 2 * math.pi  # radians in one rotation
# float64 [..., sublayer] tensors alive at once while counting turns (points, derivative,
# tangents, products, angles, permutation).
ROTATION_TEMPORARIES = 8
MIN_ROTATION_SUBLAYERS = 3  # 3 points -> 2 tangents -> 1 change of angle
# Memory of one chunk of trajectories or shuffles. Smaller than the 256 MB used elsewhere:
# 1000 shuffles x 64 x 4096 took about 9.5 s of CPU time in 64 MB chunks, 10-15 s in
# 256 MB chunks and 14-24 s in 512 MB ones (one thread on a 2-core machine; small
# temporaries stay in cache and are reused by the allocator).
ROTATION_CHUNK_BYTES = 64 * 2**20
# The shuffle null counts in float32: a count is a sum of ~S angle changes, each within
# ~1e-7 rad of float64, so counts move by ~1e-6 turns (tests bound it).
NULL_DTYPE = torch.float32
# Bytes per (shuffle, unit, sublayer) of one chunk of permutations: 8 (random 64-bit
# words), 4 (int32 order), 4 + 4 (flat int32 index and its transpose).
NULL_PERMUTATION_BYTES = 20
# Permutations are drawn for this many bytes of them at a time (numpy's sort and the
# int64 indices; 1000 x 4096 x 64 is ~40 chunks).
NULL_CHUNK_BYTES = 256 * 2**20
# (shuffle, unit) rows counted at once: 32768 x 64 float32 is 8 MB per temporary. With
# 1 thread 2048-32768 rows time the same (0.17-0.20 s per 40 x 4096 shuffles on a 2-core
# EPYC); with 2 threads on a loaded machine every op is a parallel region that may wait
# for a descheduled thread, so fewer, larger ops are the safer choice.
NULL_BLOCK_ROWS = 32768


def _derivative(a: Float[Tensor, "... sublayer"], gradient: str) -> Float[Tensor, "... sublayer"]:
    """``da/dl`` along the last axis, unit spacing, by the named scheme (module docstring)."""
    if gradient == "central":
        return torch.gradient(a, dim=-1)[0]
    step = a.diff(dim=-1)
    return torch.cat([step, step[..., -1:]], dim=-1)


def _skip_zero_tangents(
    dx: Float[Tensor, "... tangent"], dy: Float[Tensor, "... tangent"]
) -> tuple[Float[Tensor, "... tangent"], Float[Tensor, "... tangent"]]:
    """Replace each zero-length tangent by the last non-zero one before it.

    A repeated tangent turns by exactly 0, so the change of angle across a run of zero
    tangents is measured between its non-zero neighbours. Leading zero tangents stay zero
    (``atan2(0, 0) = 0``: no turn).
    """
    if not bool((dx == 0).any()):  # cheap common case: every tangent has a non-zero dx
        return dx, dy
    zero = (dx == 0) & (dy == 0)
    position = torch.arange(dx.shape[-1], device=dx.device).expand_as(dx)
    source = torch.where(zero, -1, position).cummax(dim=-1).values
    missing = source < 0
    source = source.clamp(min=0)
    return (
        dx.gather(-1, source).masked_fill(missing, 0.0),
        dy.gather(-1, source).masked_fill(missing, 0.0),
    )


def _angle_changes(
    dx: Float[Tensor, "... tangent"], dy: Float[Tensor, "... tangent"]
) -> Float[Tensor, "... step"]:
    """Change of angle from each tangent to the next, in radians, wrapped into ``(-pi, pi]``.

    ``atan2(cross, dot)`` of successive tangents equals the wrapped difference of their
    ``atan2`` angles. It returns ``-pi`` only for a U-turn (``dot < 0`` and ``cross`` zero or
    below rounding), which the half-open interval counts as ``+pi``.
    """
    dx, dy = _skip_zero_tangents(dx, dy)
    cross = dx[..., :-1] * dy[..., 1:] - dy[..., :-1] * dx[..., 1:]
    dot = dx[..., :-1] * dx[..., 1:] + dy[..., :-1] * dy[..., 1:]
    dtheta = torch.atan2(cross, dot)
    return torch.where(dtheta == -math.pi, math.pi, dtheta)


def _turns(a: Float[Tensor, "... sublayer"], gradient: str, signed: bool) -> Float[Tensor, "..."]:
    """Rotation count of the portrait ``(a_l, da_l/dl)`` along the last axis, in turns."""
    dtheta = _angle_changes(a.diff(dim=-1), _derivative(a, gradient).diff(dim=-1))
    return (dtheta if signed else dtheta.abs()).sum(dim=-1) / FULL_TURN


def _trajectories(
    resid: Float[Tensor, "batch sublayer d_model"], trajectory: str
) -> Float[Tensor, "trajectory d_model sublayer"]:
    """One trajectory per sample (a view of ``resid``), or the float64 batch mean as one."""
    if trajectory == "mean":
        return rearrange(resid.mean(dim=0, dtype=STAT_DTYPE), "s d -> 1 d s")
    return rearrange(resid, "b s d -> b d s")


def _as_rows(
    traj: Float[Tensor, "trajectory d_model sublayer"],
) -> Float[Tensor, "trajectory d_model sublayer"]:
    """Contiguous float64 copy, so that every step along depth reads adjacent memory."""
    return traj.to(STAT_DTYPE).contiguous()


def _trajectory_bytes(traj: Tensor) -> int:
    """Bytes of temporaries per trajectory while counting its turns."""
    return traj.shape[1] * traj.shape[2] * STAT_DTYPE.itemsize * ROTATION_TEMPORARIES


def _null_bytes(traj: Tensor) -> int:
    """Bytes per shuffle of the permutations (numpy keys and int64 indices) of a chunk."""
    return traj.shape[1] * traj.shape[2] * NULL_PERMUTATION_BYTES


def _rotation_counts(
    traj: Float[Tensor, "trajectory d_model sublayer"], gradient: str, signed: bool
) -> Float[Tensor, "trajectory d_model"]:
    """Turns of every trajectory and unit, in chunks of trajectories."""
    return torch.cat(
        [
            _turns(_as_rows(traj[rows]), gradient, signed)
            for rows in chunk_slices(
                len(traj), _trajectory_bytes(traj), budget=ROTATION_CHUNK_BYTES
            )
        ]
    )


def _depth_first_turns(
    a: Float[Tensor, "sublayer row"], gradient: str, signed: bool
) -> Float[Tensor, " row"]:
    """:func:`_turns` with depth along the *first* axis, for the shuffle null.

    Same formula, written out with slices so that every step is one pass over contiguous
    ``[row]`` vectors (``torch.gradient`` and slices along a short last axis are several
    times slower). The derivative's own differences follow from the tangents ``dx``:
    central differences give ``dy = numpy.gradient(dx) `` (halved one-sided ends),
    forward ones ``dy_l = dx_{l+1} - dx_l`` and a last ``dy`` of 0.
    """
    dx = a[1:] - a[:-1]
    dy = torch.empty_like(dx)
    if gradient == "central":
        torch.sub(dx[2:], dx[:-2], out=dy[1:-1])
        torch.sub(dx[1:2], dx[:1], out=dy[:1])
        torch.sub(dx[-1:], dx[-2:-1], out=dy[-1:])
        dy.mul_(0.5)
    else:
        torch.sub(dx[1:], dx[:-1], out=dy[:-1])
        dy[-1] = 0.0
    if bool(((dx == 0) & (dy == 0)).any()):  # rare: repeated values; general path
        dtheta = rearrange(_angle_changes(dx.T, dy.T), "row step -> step row")
    else:
        cross = dx[:-1] * dy[1:]
        cross.addcmul_(dy[:-1], dx[1:], value=-1.0)
        dot = dx[:-1] * dx[1:]
        dot.addcmul_(dy[:-1], dy[1:])
        dtheta = torch.atan2(cross, dot, out=cross)
        dtheta.masked_fill_(dtheta == -math.pi, math.pi)  # wrap into (-pi, pi]
    # Summed in float64: the float32 angles add exactly, in any order, so the counts do
    # not depend on how rows are blocked.
    return (dtheta if signed else dtheta.abs_()).sum(dim=0, dtype=STAT_DTYPE) / FULL_TURN


def _shuffled_counts(
    traj: Float[Tensor, "trajectory d_model sublayer"],
    order: Int[Tensor, "shuffle d_model sublayer"],
    gradient: str,
    signed: bool,
) -> Float[Tensor, "shuffle d_model"]:
    """Turns after reordering each unit's sublayers by ``order``, averaged over trajectories.

    Counted in float32 (:data:`NULL_DTYPE`), depth first, in sub-chunks of
    :data:`NULL_BLOCK_ROWS` (shuffle, unit) rows that stay in cache.
    """
    n_traj, d_model, n_sublayers = traj.shape
    values = rearrange(traj.to(NULL_DTYPE), "b d s -> b (d s)")
    offsets = torch.arange(d_model, dtype=order.dtype, device=order.device) * n_sublayers
    flat = rearrange(order + offsets.unsqueeze(-1), "n d s -> s (n d)").contiguous()
    total = torch.zeros(flat.shape[1], dtype=STAT_DTYPE, device=traj.device)
    rows_per_block = max(1, NULL_BLOCK_ROWS // n_traj)
    for start in range(0, flat.shape[1], rows_per_block):
        index = flat[:, start : start + rows_per_block]
        shuffled = rearrange(values[:, index], "b s r -> s (b r)")
        turns = _depth_first_turns(shuffled, gradient, signed)
        total[start : start + index.shape[1]] = reduce(
            turns, "(b r) -> r", "mean", b=n_traj
        )
    return rearrange(total, "(n d) -> n d", d=d_model)


def _permutation_generators(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Two independent PCG64 streams from ``seed``: sort keys, and redraws of tied rows."""
    keys, redraws = np.random.SeedSequence(seed).spawn(2)
    return np.random.Generator(np.random.PCG64(keys)), np.random.Generator(np.random.PCG64(redraws))


def _permutations(
    generators: tuple[np.random.Generator, np.random.Generator], shuffles: slice, traj: Tensor
) -> Int[Tensor, "shuffle d_model sublayer"]:
    """Independent uniform permutations of the sublayer axis, one per shuffle and unit.

    Each row sorts ``S`` random 32-bit keys whose low bits hold the sublayer index (so
    the sorted keys *are* the permutation; numpy sorts short unsigned rows far faster
    than ``argsort`` of floats). Keys of a row are iid, so a row without ties in its
    random high bits is a uniform permutation; the rare rows with a tie (probability
    below ``S^2 / 2^(33 - index bits)``, ~3e-5 at ``S = 64``) are redrawn with
    ``Generator.permutation`` from a second stream, which keeps every row exactly
    uniform. Every row uses a fixed share of each stream, in order, so the draws do not
    depend on how shuffles are chunked.
    """
    keys_rng, redraw_rng = generators
    _, d_model, n_sublayers = traj.shape
    rows = (shuffles.stop - shuffles.start) * d_model
    index_bits = max(1, (n_sublayers - 1).bit_length())
    index_mask = np.uint32((1 << index_bits) - 1)
    words = -(-n_sublayers // 2)  # 64-bit draws per row, two 32-bit keys each
    keys = keys_rng.bit_generator.random_raw((rows, words)).view(np.uint32)[:, :n_sublayers]
    keys &= ~index_mask
    keys |= np.arange(n_sublayers, dtype=np.uint32)
    keys.sort(axis=-1)
    # Adjacent sorted keys whose random high bits agree: a tie.
    tied = ((keys[:, 1:] ^ keys[:, :-1]) <= index_mask).any(axis=-1)
    keys &= index_mask
    for row in np.flatnonzero(tied):
        keys[row] = redraw_rng.permutation(n_sublayers)
    order = torch.from_numpy(keys.view(np.int32))
    return order.reshape(-1, d_model, n_sublayers).to(traj.device)


def _random_rotation(d_model: int, seed: int) -> Float[Tensor, "d_model d_model"]:
    """Haar-random orthogonal ``[d_model, d_model]`` float64 matrix (Mezzadri 2007)."""
    stream = np.random.SeedSequence(seed).spawn(BASIS_STREAM + 1)[BASIS_STREAM]
    gaussian = np.random.Generator(np.random.PCG64(stream)).standard_normal((d_model, d_model))
    q, r = np.linalg.qr(gaussian)
    return torch.from_numpy(q * np.sign(np.diag(r)))


def _principal_axes(resid: Float[Tensor, "batch sublayer d_model"]) -> Float[Tensor, "d_model d_model"]:
    """Principal axes of all ``batch * sublayer`` vectors as float64 columns, largest
    variance first, each signed so that its largest-magnitude entry is positive."""
    vectors = rearrange(resid.to(STAT_DTYPE), "b s d -> (b s) d")
    centred = vectors - vectors.mean(dim=0)
    variance, axes = torch.linalg.eigh(centred.T @ centred)
    axes = axes[:, variance.argsort(descending=True)]
    signs = torch.sign(axes.gather(0, axes.abs().argmax(dim=0, keepdim=True)))
    return axes * signs


def basis_matrix(
    resid: Float[Tensor, "batch sublayer d_model"], basis: str = "random", *, seed: int = 0
) -> Float[Tensor, "d_model d_model"]:
    """Orthogonal change of basis whose columns are the new axes (module docstring).

    ``resid @ basis_matrix(resid, basis)`` is the residual stream in the new coordinates.
    ``"units"``: the identity; ``"random"``: a Haar-random rotation drawn from ``seed``
    (it depends only on ``d_model`` and ``seed``); ``"pca"``: the principal axes of
    ``resid``'s vectors over samples and sublayers, largest variance first. Returns a
    float64 ``[d_model, d_model]`` tensor on ``resid``'s device.
    """
    check_resid(resid)
    check_choice(basis, "basis", BASES)
    check_int(seed, "seed", 0)
    d_model = resid.shape[2]
    if basis == "units":
        return torch.eye(d_model, dtype=STAT_DTYPE, device=resid.device)
    if basis == "random":
        return _random_rotation(d_model, seed).to(resid.device)
    return _principal_axes(resid)


def _basis_trajectories(
    resid: Float[Tensor, "batch sublayer d_model"], trajectory: str, basis: str, seed: int
) -> Float[Tensor, "trajectory d_model sublayer"]:
    """:func:`_trajectories` in the coordinates of ``basis``, rotated a chunk at a time
    (float64 products, stored in the trajectories' working dtype)."""
    traj = _trajectories(resid, trajectory)
    if basis == "units":
        return traj
    change = basis_matrix(resid, basis, seed=seed)
    dtype = working_dtype(traj)
    return torch.cat(
        [
            torch.einsum("tds,de->tes", traj[rows].to(STAT_DTYPE), change).to(dtype)
            for rows in chunk_slices(len(traj), _trajectory_bytes(traj), budget=ROTATION_CHUNK_BYTES)
        ]
    )


def _check_rotation_args(
    resid: Tensor, signed: object, trajectory: object, gradient: object, basis: object, seed: object
) -> None:
    """Validation shared by :func:`rotations` and :func:`rotation_null`."""
    check_resid(resid, min_sublayers=MIN_ROTATION_SUBLAYERS)
    if not isinstance(signed, bool):
        raise InputTypeError(f"signed must be a bool; got {type(signed).__name__} {signed!r}")
    check_choice(trajectory, "trajectory", TRAJECTORIES)
    check_choice(gradient, "gradient", GRADIENT_SCHEMES)
    check_choice(basis, "basis", BASES)
    check_int(seed, "seed", 0)


@dataclass(frozen=True, eq=False)
class PhasePortrait:
    """Every unit's phase portrait: activation and its derivative along depth.

    Attributes:
        activation: ``[batch, sublayer, d_model]`` the residual stream ``a_l``, in its
            units (float32, or float64 for float64 input).
        derivative: ``[batch, sublayer, d_model]`` ``da_l/dl``, residual-stream units per
            sublayer step.
        gradient: The difference scheme of ``derivative`` (``"central"`` or ``"forward"``).
    """

    __repr__ = compact_repr

    activation: Float[Tensor, "batch sublayer d_model"]
    derivative: Float[Tensor, "batch sublayer d_model"]
    gradient: str

    def to_frame(self, units: Sequence[int] | Tensor | None = None) -> pd.DataFrame:
        """Tidy table, one row per (sample, sublayer, unit): ``sample``, ``sublayer``,
        ``unit`` (index into ``d_model``), ``activation``, ``derivative``.

        ``units`` picks the units to include (``None``: all of them, which is
        ``batch * sublayer * d_model`` rows; pick a few for real models).
        """
        d_model = self.activation.shape[2]
        chosen = (
            torch.arange(d_model) if units is None else torch.as_tensor(units).reshape(-1).cpu()
        )
        activation = self.activation.detach().cpu()[:, :, chosen]
        derivative = self.derivative.detach().cpu()[:, :, chosen]
        index = np.indices(activation.shape).reshape(3, -1)
        return pd.DataFrame(
            {
                "sample": index[0],
                "sublayer": index[1],
                "unit": chosen.numpy()[index[2]],
                "activation": activation.reshape(-1).numpy(),
                "derivative": derivative.reshape(-1).numpy(),
            }
        )


def phase_portrait(
    resid: Float[Tensor, "batch sublayer d_model"], *, gradient: str = "central"
) -> PhasePortrait:
    """Activation and its derivative along depth for every sample and unit (Fig 2).

    ``gradient="central"``: central differences inside, one-sided at both ends
    (``torch.gradient`` / ``numpy.gradient`` with unit spacing); ``"forward"``:
    ``a_{l+1} - a_l`` with the last difference repeated at the last sublayer. Returns a
    :class:`PhasePortrait` on the input's device (float32, or float64 for float64 input).
    Needs at least 2 sublayers.
    """
    check_resid(resid, min_sublayers=2)
    check_choice(gradient, "gradient", GRADIENT_SCHEMES)
    activation = resid.to(working_dtype(resid))
    derivative = rearrange(
        _derivative(rearrange(activation, "b s d -> b d s"), gradient), "b d s -> b s d"
    )
    return PhasePortrait(activation=activation, derivative=derivative, gradient=gradient)


def rotations(
    resid: Float[Tensor, "batch sublayer d_model"],
    *,
    signed: bool = True,
    trajectory: str = "sample",
    gradient: str = "central",
    basis: str = "units",
    seed: int = 0,
) -> Float[Tensor, "*batch d_model"]:
    """Rotation count of every unit's phase portrait, in turns (docs/paper.md, metric 6).

    ``signed=True`` sums the wrapped changes of angle (counter-clockwise positive; smooth
    oscillations give negative counts, see the module docstring), ``signed=False`` sums
    their absolute values (always ``>= |signed count|``). ``trajectory="sample"`` counts
    every sample's own trajectory and returns float64 ``[batch, d_model]``;
    ``trajectory="mean"`` counts the batch-mean trajectory and returns float64
    ``[d_model]``. ``gradient`` is the derivative scheme (see :func:`phase_portrait`).
    ``basis`` picks the coordinates whose axes are counted (:data:`BASES`, see
    :func:`basis_matrix`; ``seed`` draws the ``"random"`` one): the ``d_model`` axis of
    the result then indexes the new axes. Results are on the input's device. Needs at
    least 3 sublayers.
    """
    _check_rotation_args(resid, signed, trajectory, gradient, basis, seed)
    counts = _rotation_counts(_basis_trajectories(resid, trajectory, basis, seed), gradient, signed)
    return counts[0] if trajectory == "mean" else counts


@dataclass(frozen=True)
class RotationNullSummary:
    """Population view of a :class:`RotationNull`, averaged over units.

    Attributes:
        mean_observed: mean over units of the observed rotation count, turns.
        mean_null: mean over units and shuffles of the null counts, turns.
        std_observed: spread (std) of the observed count across units, turns.
        std_null: spread (std) of the null counts across units and shuffles, turns.
        fraction_significant: fraction of units with ``p_value < alpha``.
        alpha: the significance level used.
        n_units: number of units.
        n_shuffles: shuffles per unit.
    """

    mean_observed: float
    mean_null: float
    std_observed: float
    std_null: float
    fraction_significant: float
    alpha: float
    n_units: int
    n_shuffles: int


@dataclass(frozen=True, eq=False)
class RotationNull:
    """Rotation counts of the true sublayer order against a layer-shuffle null.

    Attributes:
        observed: ``[d_model]`` rotation count of the true order, turns (averaged over
            samples when ``trajectory="sample"``).
        null: ``[shuffle, d_model]`` the same statistic after permuting each unit's
            sublayer order, one row per shuffle, turns.
        p_value: ``[d_model]`` two-sided permutation p-value with the +1 correction,
            ``(1 + #{|null - mean(null)| >= |observed - mean(null)|}) / (1 + n_shuffles)``.
        z_score: ``[d_model]`` ``(observed - mean(null)) / std(null)`` (``ddof=1``;
            NaN or inf where the null does not vary, e.g. for a constant unit).
        signed, trajectory, gradient: the settings of the count (see :func:`rotations`).
        n_shuffles: number of shuffles per unit.
        seed: seed of the numpy ``PCG64`` streams that drew the permutations (and the
            random basis).
        basis: the coordinates counted (:data:`BASES`); "units" are then its axes.
    """

    __repr__ = compact_repr

    observed: Float[Tensor, " d_model"]
    null: Float[Tensor, "shuffle d_model"]
    p_value: Float[Tensor, " d_model"]
    z_score: Float[Tensor, " d_model"]
    signed: bool
    trajectory: str
    gradient: str
    n_shuffles: int
    seed: int
    basis: str = "units"

    def to_frame(self) -> pd.DataFrame:
        """Tidy table, one row per unit: ``unit``, ``observed``, ``null_mean``, ``null_std``
        (turns), ``z_score``, ``p_value``."""
        null = self.null.detach().cpu()
        return pd.DataFrame(
            {
                "unit": np.arange(null.shape[1]),
                "observed": self.observed.detach().cpu().numpy(),
                "null_mean": null.mean(dim=0).numpy(),
                "null_std": null.std(dim=0).numpy(),
                "z_score": self.z_score.detach().cpu().numpy(),
                "p_value": self.p_value.detach().cpu().numpy(),
            }
        )

    def summary(self, alpha: float = 0.05) -> RotationNullSummary:
        """Mean observed count against mean null count over units; see
        :class:`RotationNullSummary`."""
        observed = self.observed.detach().cpu()
        null = self.null.detach().cpu()
        return RotationNullSummary(
            mean_observed=float(observed.mean()),
            mean_null=float(null.mean()),
            std_observed=float(observed.std()),
            std_null=float(null.std()),
            fraction_significant=float((self.p_value.detach().cpu() < alpha).double().mean()),
            alpha=alpha,
            n_units=len(observed),
            n_shuffles=self.n_shuffles,
        )


def rotation_null(
    resid: Float[Tensor, "batch sublayer d_model"],
    n_shuffles: int = 1000,
    seed: int = 0,
    *,
    signed: bool = True,
    trajectory: str = "mean",
    gradient: str = "central",
    basis: str = "units",
    chunk_size: int | None = None,
) -> RotationNull:
    """Rotation counts of the true sublayer order against a layer-shuffle null (Fig 2).

    For each of ``n_shuffles`` shuffles and each unit independently, the sublayer order is
    permuted (the same permutation for every sample of that unit), the derivative is
    recomputed on the permuted sequence and the rotation count taken again, averaged over
    samples when ``trajectory="sample"``. ``signed``, ``trajectory`` and ``gradient`` as in
    :func:`rotations` (the default ``trajectory="mean"`` counts the batch-mean
    trajectory, far cheaper). ``chunk_size`` shuffles are processed at once (``None``:
    about 256 MB of permutations, see :data:`NULL_CHUNK_BYTES`). Permutations come from
    numpy ``PCG64`` streams seeded with ``seed`` (:func:`_permutations`): the same seed
    draws the same permutations on every device and chunk size, and gives identical
    results for the same chunk size; the null is counted in float32, so other chunk sizes
    agree to ~1e-7 turns and the float64 formula to ~1e-5. ``basis`` as in
    :func:`rotations`: the data are first expressed in those coordinates (the
    ``"random"`` rotation drawn from ``seed``, the same one :func:`rotations` uses for
    that seed), then counted and shuffled per axis.

    Returns a :class:`RotationNull` of float64 tensors on the input's device.
    """
    _check_rotation_args(resid, signed, trajectory, gradient, basis, seed)
    check_int(n_shuffles, "n_shuffles")
    traj = _basis_trajectories(resid, trajectory, basis, seed)
    observed = _rotation_counts(traj, gradient, signed).mean(dim=0)

    generators = _permutation_generators(seed)
    null = torch.cat(
        [
            _shuffled_counts(traj, _permutations(generators, shuffles, traj), gradient, signed)
            for shuffles in chunk_slices(
                n_shuffles, _null_bytes(traj), chunk_size, budget=NULL_CHUNK_BYTES
            )
        ]
    )

    centre = null.mean(dim=0)
    extreme = (null - centre).abs() >= (observed - centre).abs()
    return RotationNull(
        observed=observed,
        null=null,
        p_value=(1 + extreme.sum(dim=0)).to(STAT_DTYPE) / (1 + n_shuffles),
        z_score=(observed - centre) / null.std(dim=0),
        signed=signed,
        trajectory=trajectory,
        gradient=gradient,
        n_shuffles=n_shuffles,
        seed=seed,
        basis=basis,
    )
