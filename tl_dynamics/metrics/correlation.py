"""Per-unit correlation across depth: does a unit keep telling the same story?

Fix one unit (one dimension of the residual stream) and two sublayers ``l`` and ``m``. Over
the batch of texts the unit takes a value at ``l`` and a value at ``m``; their Pearson
correlation ``r`` says how well the unit's value at ``m`` is predicted, linearly, from its
value at ``l``. Neuroscience asks the same of a neuron recorded at two moments.

* :func:`unit_correlation`: ``r`` between successive sublayers ``t`` and ``t + 1``, per
  unit (Fig 1C). The paper finds ``r > 0.8`` already in early layers, rising with depth,
  and higher within a layer (across attention) than across layers (across an MLP).
* :func:`pairwise_unit_correlation`: ``r`` for every pair ``l < m``, not only neighbours,
  in the order of :func:`sublayer_pairs` (``itertools.combinations``).
* :func:`unit_correlation_per_sample`: each sample's linearised share (its influence)
  of the mean over units of :func:`unit_correlation`, for a cheap bootstrap over texts.
* :func:`correlation_distribution`: for each unit, the histogram over all pairs ``l < m``
  of its ``r`` on ``[0, 1]`` (Fig 1D): a unit whose mass sits near 1 is stable across
  the whole depth.

How: standardise every (sublayer, unit) column over the batch once (centre, divide by the
L2 norm), then ``r`` is a plain dot product over the batch, so one ``einsum`` gives all
sublayers and units, or all pairs at once. Everything runs in float64, in chunks of units
so the float64 copy stays near 256 MB.

A unit that is constant over the batch at a sublayer has no correlation: its ``r`` is NaN
(numpy's ``corrcoef`` returns NaN too, with a warning, when a variance is exactly zero).
"Constant" is tested exactly (``max == min`` over the batch), so rounding in the mean
never turns a constant unit into a spurious ``r``.

Example::

    import torch
    from tl_dynamics.metrics import correlation_distribution, unit_correlation

    resid = torch.randn(64, 6, 10).cumsum(dim=1)   # [batch, sublayer, d_model] random walk
    unit_correlation(resid).shape                  # [transition, d_model] = [5, 10]
    dist = correlation_distribution(resid, bins=10)
    dist.fraction.sum(1) + dist.below + dist.above + dist.undefined   # all ones
    dist.to_frame().head()
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
import torch
from einops import einsum, rearrange, reduce
from jaxtyping import Float, Int
from torch import Tensor

from tl_dynamics._checks import check_int
from tl_dynamics._repr import compact_repr
from tl_dynamics.errors import DynamicsInputError
from tl_dynamics.metrics._validation import (
    STAT_DTYPE,
    check_resid,
    chunk_slices,
)

__all__ = [
    "CORRELATION_COLUMN_COPIES",
    "MIN_CORRELATION_SAMPLES",
    "sublayer_pairs",
    "unit_correlation",
    "unit_correlation_per_sample",
    "pairwise_unit_correlation",
    "CorrelationDistribution",
    "correlation_distribution",
]

# float64 [batch, sublayer] columns alive per unit while standardising (input, centred, z).
CORRELATION_COLUMN_COPIES = 3
# Two points always lie on a line: with 2 samples every non-constant unit has r = +-1,
# which says nothing about the unit. Three is the fewest that can show a weaker r.
MIN_CORRELATION_SAMPLES = 3


def centred_columns(
    x: Float[Tensor, "batch sublayer unit"],
) -> tuple[Float[Tensor, "batch sublayer unit"], Float[Tensor, "1 sublayer unit"]]:
    """``(x - batch mean, L2 norm of that over the batch)`` per (sublayer, unit) column.

    Same dtype and device as ``x``. The norm is a sum of squares (``torch.std`` and
    ``vector_norm`` along the batch are several times slower on a CPU); divided by
    ``sqrt(batch - 1)`` it is the standard deviation (ddof=1).
    """
    centred = x - reduce(x, "batch sublayer unit -> 1 sublayer unit", "mean")
    norm = reduce(centred.square(), "batch sublayer unit -> 1 sublayer unit", "sum").sqrt_()
    return centred, norm


def _standardise(
    x: Float[Tensor, "batch sublayer unit"],
) -> Float[Tensor, "batch sublayer unit"]:
    """Centre every (sublayer, unit) column over the batch and scale it to unit L2 norm.

    The dot product over the batch of two such columns is their Pearson ``r``. Columns
    that are exactly constant over the batch become NaN. Same dtype and device as ``x``.
    """
    centred, length = centred_columns(x)
    constant = x.amax(dim=0, keepdim=True) == x.amin(dim=0, keepdim=True)
    return torch.where(constant, math.nan, centred / length)


def unit_chunks(
    resid: Float[Tensor, "batch sublayer d_model"], bytes_per_unit: int
) -> Iterator[tuple[Float[Tensor, "batch sublayer unit"], Float[Tensor, "batch sublayer unit"]]]:
    """``(x, z)`` for successive chunks of units: float64 ``x`` and ``_standardise(x)``.

    ``bytes_per_unit`` counts everything the caller keeps per unit; chunks hold about
    256 MB of it.
    """
    for units in chunk_slices(resid.shape[2], bytes_per_unit):
        x = resid[:, :, units].to(STAT_DTYPE)
        yield x, _standardise(x)


def column_bytes(resid: Tensor, copies: int) -> int:
    """Bytes of ``copies`` float64 ``[batch, sublayer]`` columns: memory per unit."""
    return copies * resid.shape[0] * resid.shape[1] * STAT_DTYPE.itemsize


def successive_correlation(
    z: Float[Tensor, "batch sublayer unit"],
) -> Float[Tensor, "transition unit"]:
    """Pearson ``r`` between sublayers ``t`` and ``t + 1`` of :func:`_standardise`'s columns.

    A product and a sum over the batch (an ``einsum`` here becomes a batched matrix
    product of one-element outputs, about 5x slower on a CPU).
    """
    r = reduce(z[:, :-1] * z[:, 1:], "batch transition unit -> transition unit", "sum")
    return r.clamp(-1.0, 1.0)


def sublayer_pairs(n_sublayers: int) -> Int[Tensor, "pair 2"]:
    """All sublayer index pairs ``(l, m)`` with ``l < m``, in ``itertools.combinations`` order.

    Returns int64 ``[n_sublayers * (n_sublayers - 1) / 2, 2]`` on the CPU; row ``p``
    names the sublayers of row ``p`` of :func:`pairwise_unit_correlation`.
    """
    check_int(n_sublayers, "n_sublayers")
    return rearrange(torch.triu_indices(n_sublayers, n_sublayers, offset=1), "two pair -> pair two")


def unit_correlation(
    resid: Float[Tensor, "batch sublayer d_model"],
) -> Float[Tensor, "transition d_model"]:
    """Per-unit Pearson correlation across the batch between sublayers ``t`` and ``t + 1``.

    Fig 1C. Returns float64 ``[sublayer - 1, d_model]``, dimensionless in ``[-1, 1]``, on
    the input's device; NaN where the unit is constant over the batch at either sublayer.
    Needs at least :data:`MIN_CORRELATION_SAMPLES` (3) samples and 2 sublayers.
    """
    _check_correlation_input(resid)
    chunks = unit_chunks(resid, column_bytes(resid, CORRELATION_COLUMN_COPIES))
    return torch.cat([successive_correlation(z) for _, z in chunks], dim=-1)


def unit_correlation_per_sample(
    resid: Float[Tensor, "batch sublayer d_model"],
    correlation: Float[Tensor, "transition d_model"] | None = None,
) -> Float[Tensor, "batch transition"]:
    """Each sample's linearised share of the mean over units of :func:`unit_correlation`.

    The influence of sample ``i`` on a Pearson ``r`` is
    ``u_i v_i - r (u_i^2 + v_i^2) / 2`` (``u, v``: the two columns standardised with
    ``ddof=0``; Hampel et al. 1986, *Robust Statistics*, section 5.1); it averages to 0
    over the batch. This returns ``r + influence`` averaged over the units with a defined
    ``r``, so its mean over the batch is ``unit_correlation(resid).nanmean(-1)`` and a
    bootstrap that reweights its rows is the linearised (delta-method) bootstrap of that
    mean (:mod:`tl_dynamics.findings`).

    ``correlation`` is ``unit_correlation(resid)`` when the caller has it already (a
    report does), so that it is not computed a second time.

    Returns float64 ``[batch, sublayer - 1]``, dimensionless, on the input's device; NaN
    for a transition where every unit is constant.
    """
    _check_correlation_input(resid)
    expected = (resid.shape[1] - 1, resid.shape[2])
    if correlation is not None and tuple(correlation.shape) != expected:
        raise DynamicsInputError(
            f"correlation must be unit_correlation(resid), shape {list(expected)}; got "
            f"shape {list(correlation.shape)}"
        )
    total = count = 0
    scale = math.sqrt(resid.shape[0])  # L2-normalised columns -> ddof=0 z-scores
    bytes_per_unit = column_bytes(resid, CORRELATION_COLUMN_COPIES + 1)
    for units in chunk_slices(resid.shape[2], bytes_per_unit):
        z = _standardise(resid[:, :, units].to(STAT_DTYPE))
        r = successive_correlation(z) if correlation is None else correlation[:, units].to(z)
        defined = ~r.isnan()
        z = (z * scale).nan_to_num_(0.0)  # undefined units add nothing below
        r = r.nan_to_num(0.0)
        squares = z.square()
        share = (
            reduce(z[:, :-1] * z[:, 1:], "batch t unit -> batch t", "sum")
            - einsum(squares[:, :-1] + squares[:, 1:], r, "batch t unit, t unit -> batch t") / 2
            + r.sum(-1)
        )
        total = total + share
        count = count + reduce(defined.to(STAT_DTYPE), "t unit -> t", "sum")
    return total / count


def _check_correlation_input(resid: object) -> None:
    """``check_resid`` with the sample minimum of a per-unit correlation and its reason."""
    if isinstance(resid, Tensor) and resid.ndim == 3 and resid.shape[0] < MIN_CORRELATION_SAMPLES:
        raise DynamicsInputError(
            f"resid needs at least {MIN_CORRELATION_SAMPLES} samples (batch, dim 0) for a "
            f"per-unit correlation; got {resid.shape[0]} (shape {tuple(resid.shape)}): "
            "with 2 samples every unit would have r = +1 or -1"
        )
    check_resid(resid, min_sublayers=2, min_batch=MIN_CORRELATION_SAMPLES)


def pairwise_unit_correlation(
    resid: Float[Tensor, "batch sublayer d_model"],
) -> Float[Tensor, "pair d_model"]:
    """Per-unit Pearson correlation across the batch for every sublayer pair ``l < m``.

    Row ``p`` is the pair ``sublayer_pairs(n_sublayers)[p]``. Returns float64
    ``[n_sublayers * (n_sublayers - 1) / 2, d_model]``, dimensionless in ``[-1, 1]``, on
    the input's device; NaN where the unit is constant at either sublayer. Needs at least
    :data:`MIN_CORRELATION_SAMPLES` (3) samples.
    """
    _check_correlation_input(resid)
    n_sublayers = resid.shape[1]
    pairs = sublayer_pairs(n_sublayers).to(resid.device)
    gram_bytes = n_sublayers * n_sublayers * STAT_DTYPE.itemsize
    chunks = []
    for _, z in unit_chunks(resid, column_bytes(resid, CORRELATION_COLUMN_COPIES) + gram_bytes):
        gram = einsum(z, z, "batch l unit, batch m unit -> l m unit")
        chunks.append(gram[pairs[:, 0], pairs[:, 1]])
    return torch.cat(chunks, dim=-1).clamp(-1.0, 1.0)


@dataclass(frozen=True, eq=False)
class CorrelationDistribution:
    """Per-unit histogram of the correlations over all sublayer pairs (Fig 1D).

    Every fraction counts the ``n_pairs`` pairs ``l < m`` of one unit, so for each unit
    ``fraction.sum(1) + below + above + undefined == 1``.

    Attributes:
        fraction: ``[d_model, bin]`` fraction of the unit's pairs whose ``r`` falls in each
            bin. Bins are half-open ``[left, right)`` except the last, which includes its
            right edge (``numpy.histogram``'s convention).
        bin_edges: ``[bin + 1]`` float64 edges in units of ``r``.
        below: ``[d_model]`` fraction of pairs with ``r`` below the first edge.
        above: ``[d_model]`` fraction of pairs with ``r`` above the last edge.
        undefined: ``[d_model]`` fraction of pairs whose ``r`` is NaN (constant unit).
        n_pairs: number of sublayer pairs per unit.
    """

    __repr__ = compact_repr

    fraction: Float[Tensor, "d_model bin"]
    bin_edges: Float[Tensor, " edge"]
    below: Float[Tensor, " d_model"]
    above: Float[Tensor, " d_model"]
    undefined: Float[Tensor, " d_model"]
    n_pairs: int

    def to_frame(self) -> pd.DataFrame:
        """Tidy table, one row per (unit, bin): ``unit``, ``bin``, ``bin_left``,
        ``bin_right``, ``bin_centre`` (in units of ``r``) and ``fraction``."""
        d_model, bins = self.fraction.shape
        edges = self.bin_edges.cpu()
        return pd.DataFrame(
            {
                "unit": torch.arange(d_model).repeat_interleave(bins).numpy(),
                "bin": torch.arange(bins).repeat(d_model).numpy(),
                "bin_left": edges[:-1].repeat(d_model).numpy(),
                "bin_right": edges[1:].repeat(d_model).numpy(),
                "bin_centre": ((edges[:-1] + edges[1:]) / 2).repeat(d_model).numpy(),
                "fraction": self.fraction.detach().cpu().reshape(-1).numpy(),
            }
        )


def _check_range(value_range: object) -> tuple[float, float]:
    """``(low, high)`` as floats; ``ValueError`` unless two finite numbers with low < high."""
    bounds = tuple(value_range) if isinstance(value_range, (tuple, list)) else ()
    if not (
        len(bounds) == 2
        and all(isinstance(b, (int, float)) and math.isfinite(b) for b in bounds)
        and bounds[0] < bounds[1]
    ):
        raise DynamicsInputError(
            "value_range must be two finite numbers (low, high) with low < high; "
            f"got {value_range!r}"
        )
    return float(bounds[0]), float(bounds[1])


def correlation_distribution(
    resid: Float[Tensor, "batch sublayer d_model"],
    bins: int = 20,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> CorrelationDistribution:
    """For each unit, the distribution over all sublayer pairs ``l < m`` of its Pearson ``r``.

    Fig 1D: ``bins`` equal bins on ``value_range`` (default ``[0, 1]``); correlations
    outside the range are counted in ``below`` / ``above`` and NaN ones in ``undefined``,
    never dropped. Vectorised: all pairs of all units come from one ``einsum`` per chunk
    of units (:func:`pairwise_unit_correlation`) and one ``bincount``. Returns a
    :class:`CorrelationDistribution` of float64 tensors on the input's device.
    """
    check_int(bins, "bins")
    low, high = _check_range(value_range)
    r = pairwise_unit_correlation(resid)
    n_pairs, d_model = r.shape
    edges = torch.linspace(low, high, bins + 1, dtype=STAT_DTYPE, device=r.device)
    inside = (r >= low) & (r <= high)
    # bucketize(right=True) - 1 is the bin i with edges[i] <= r < edges[i + 1];
    # the clamp puts r == high into the last bin (outside values are masked below).
    bin_index = (torch.bucketize(r, edges, right=True) - 1).clamp(0, bins - 1)
    unit_index = torch.arange(d_model, device=r.device).expand(n_pairs, d_model)
    counts = torch.bincount((unit_index * bins + bin_index)[inside], minlength=d_model * bins)
    return CorrelationDistribution(
        fraction=rearrange(counts, "(unit bin) -> unit bin", bin=bins).to(STAT_DTYPE) / n_pairs,
        bin_edges=edges,
        below=reduce((r < low).to(STAT_DTYPE), "pair unit -> unit", "mean"),
        above=reduce((r > high).to(STAT_DTYPE), "pair unit -> unit", "mean"),
        undefined=reduce(r.isnan().to(STAT_DTYPE), "pair unit -> unit", "mean"),
        n_pairs=n_pairs,
    )
