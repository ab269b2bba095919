"""Mutual information of a unit with itself one sublayer later.

Correlation (:mod:`~tl_dynamics.metrics.correlation`) only sees linear dependence. Mutual
information (MI) sees any: ``I(X; Y) = E[log p(x, y) / (p(x) p(y))]``, in nats, is 0 when
the unit's value at sublayer ``t + 1`` (``Y``) tells nothing about its value at ``t``
(``X``), and grows as one predicts the other better. The paper (Fig 1G, H) estimates it
per unit between successive sublayers and finds a sharp drop in early layers (steepest at
cross-layer transitions) while the linear correlation rises: units become more linearly
but less richly coupled.

``method="kde"`` (default) is the reference estimator of docs/paper.md, metric 5:

1. Estimate ``p(x, y)``, ``p(x)`` and ``p(y)`` with Gaussian kernel density estimates,
   exactly as ``scipy.stats.gaussian_kde`` builds them: Scott's bandwidth factor
   ``n ** (-1 / (d + 4))`` (``d = 2`` for the joint, 1 for the marginals) and kernel
   covariance ``factor**2 * sample covariance`` (``ddof=1``; the full 2 x 2 covariance
   for the joint, so the kernel is tilted along the correlation).
2. Evaluate them at the samples themselves (resubstitution; each sample's own kernel is
   included, so no density is ever 0).
3. ``MI = mean_i log((p(x_i, y_i) + 1e-10) / (p(x_i) p(y_i) + 1e-10))``.

It is vectorised in torch over units and transitions. Each sample is whitened by the
kernel covariance (for the joint: ``z1 = u / f``, ``z2 = (v - r u) / (f sqrt(1 - r^2))``
with ``u, v`` the standardised values, ``f`` Scott's factor, ``r`` the Pearson
correlation), so every density is a sum of ``exp(-|z_i - z_j|^2 / 2)`` over one
``[chunk, n, n]`` block; chunks are sized to keep the blocks near 256 MB (and units are
taken in chunks, so the float64 copies of the data stay near 256 MB too). Marginal
densities are computed once per sublayer and shared by the two transitions that use it.
Cost grows as ``n^2`` per unit: 1000 texts x 4096 units x 64 sublayers is hours on a CPU,
MiniLM-sized data seconds.

The kernel values are computed in float32 and summed in float64 (within ~1e-6
relative of scipy's float64 numbers; about as fast as scipy's compiled loop on 2 CPU
cores, so still O(n^2) per unit).

``method="binned"`` approximates the same kernel sums on a grid, O(n + grid) per unit:
the whitened points are linearly binned onto a grid of spacing half a kernel width
(at most 160 cells around the unit's mean; the kernels of outliers beyond that window
are summed exactly), smoothed with the Gaussian (its variance reduced by the
``delta^2 / 3`` that binning and interpolation add) and read back at the samples by
linear interpolation. In whitened coordinates the kernel is separable, so smoothing a
joint grid ``G`` is ``K G K`` with ``K`` the Gaussian between every two cells: units
whose grids have the same length share ``K``, and all of them are smoothed by two matrix
products. Its MI is within ~0.1 % of the exact KDE on average (2 % at worst) on MiniLM
activations and heavy-tailed data. Its speed-up over the paper's per-pair scipy loop
depends on the data's shape (number of samples, outliers) and is measured on several
shapes by ``benchmarks/bench_mutual_information.py`` (``benchmarks/RESULTS.md``).

``method="gaussian"`` is the closed form for a bivariate Gaussian,
``-1/2 log(1 - r^2)``, from the Pearson ``r``: a linear baseline that the KDE estimate
matches on Gaussian data and exceeds where the dependence is non-linear.

Degenerate units give NaN with every method, never an error: a unit that is constant over
the batch at either sublayer (no density), or perfectly collinear across the transition
(``1 - r^2 < 1e-12``: the joint covariance is singular). Fewer than
:data:`MI_MIN_SAMPLES` (3) samples are refused: two points always lie on a line.

Example::

    import torch
    from tl_dynamics.metrics import mutual_information
    from tl_dynamics.metrics.information import mutual_information_per_sample

    x = torch.randn(200, 1, 8)
    resid = torch.cat([x, x + 0.5 * torch.randn(200, 1, 8), torch.randn(200, 1, 8)], dim=1)
    mi = mutual_information(resid)          # [transition, d_model] = [2, 8], nats
    mi.mean(1)                              # high for the coupled step, ~0 for the independent one
    mutual_information(resid, method="gaussian").mean(1)   # -1/2 log(1 - r^2) = 0.80 and ~0
    mutual_information_per_sample(resid).mean(0)   # = mi.nanmean(1): each sample's share
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
from einops import rearrange, reduce
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tl_dynamics._checks import check_int
from tl_dynamics.metrics._validation import (
    STAT_DTYPE,
    check_choice,
    check_resid,
    chunk_slices,
)
from tl_dynamics.metrics.correlation import (
    centred_columns,
    column_bytes,
    successive_correlation,
    unit_chunks,
)

__all__ = [
    "MI_LOG_EPSILON",
    "MI_MIN_SAMPLES",
    "SINGULAR_TOLERANCE",
    "KDE_TEMPORARIES",
    "KDE_DTYPE",
    "BINNED_SPACING",
    "BINNED_MAX_CELLS",
    "BINNED_LENGTH_STEP",
    "BINNED_DTYPE",
    "BINNED_CHUNK_BYTES",
    "MI_COLUMN_COPIES",
    "MI_METHODS",
    "PER_SAMPLE_METHODS",
    "mutual_information",
    "mutual_information_per_sample",
]

MI_LOG_EPSILON = 1e-10  # docs/paper.md, metric 5: added inside both logs
MI_MIN_SAMPLES = 3  # two samples always make the 2x2 joint covariance singular
# 1 - r**2 below this: the joint covariance is singular to float64 precision -> NaN.
SINGULAR_TOLERANCE = 1e-12
# [chunk, batch, batch] blocks alive at once in _kernel_sums.
KDE_TEMPORARIES = 3
# The exact kernel sums run in float32 (summed in float64): each kernel value is within
# ~1e-7 relative of float64, so the MI moves by ~1e-6 relative, far below the 2 %
# tolerance against scipy, and float32 exp runs about twice as fast.
KDE_DTYPE = torch.float32
# method="binned": grid spacing in kernel widths (the kernel is 1 wide in whitened
# units). 0.5 keeps the MI within ~1 % of the exact KDE (see tests and RESULTS.md).
BINNED_SPACING = 0.5
# Grids span at most this many cells per dimension (79 kernel widths, about 25 standard
# deviations of the whitened data at 1000 samples); points outside the window around
# their unit's mean are outliers, whose kernels are summed exactly.
BINNED_MAX_CELLS = 160
# Grid lengths are rounded up to multiples of 8 cells, so that units share grids: each
# length is smoothed with one kernel matrix in one matrix product.
BINNED_LENGTH_STEP = 8
BINNED_DTYPE = torch.float32
# Units binned per call: about 16 MiB of grids and per-point temporaries. Smaller blocks
# stay in cache and reuse freed pages: 1000 samples x 13 sublayers x 64 units took 112 ms
# instead of 187 ms in blocks of 256 MiB (4 MiB: 106 ms, 1 MiB: 172 ms; 2 CPU cores).
BINNED_CHUNK_BYTES = 16 * 2**20
# float64 [batch, sublayer] columns alive per unit (input, standardised, densities, logs).
MI_COLUMN_COPIES = 8

# (x: float64 [batch, sublayer, unit], z: x standardised by _standardise, r: [transition,
# unit] Pearson r, chunk_size) -> MI in nats, [transition, unit].
Estimator = Callable[[Tensor, Tensor, Tensor, int | None], Tensor]


def _scott_factor(n_samples: int, n_dims: int) -> float:
    """Scott's bandwidth factor, ``scipy.stats.gaussian_kde``'s default for equal weights."""
    return n_samples ** (-1.0 / (n_dims + 4))


def _kernel_sums(coords: Sequence[Float[Tensor, "item sample"]]) -> Float[Tensor, "item sample"]:
    """``sum_j exp(-|p_i - p_j|^2 / 2)`` for every sample ``i`` of every item.

    ``coords`` holds the whitened coordinates of the points, one ``[item, sample]`` tensor
    per dimension.
    """
    squared = None
    for c in coords:
        c = c.to(KDE_DTYPE)
        gap = rearrange(c, "item i -> item i 1") - rearrange(c, "item j -> item 1 j")
        gap.square_()
        squared = gap if squared is None else squared.add_(gap)
    return squared.mul_(-0.5).exp_().sum(dim=-1, dtype=STAT_DTYPE)


def _binned_kernel_sums(
    coords: Sequence[Float[Tensor, "item sample"]],
) -> Float[Tensor, "item sample"]:
    """:func:`_kernel_sums` on a grid: linear binning, Gaussian smoothing, linear interpolation.

    Each item's points are binned onto a grid of :data:`BINNED_SPACING` kernel widths
    that spans their range, or at most :data:`BINNED_MAX_CELLS` cells around their mean;
    points outside that window (outliers) are not binned, and their kernels are summed
    exactly instead (:func:`_add_outlier_sums`), so an outlier never coarsens the grid of the
    others. Items whose grids have the same length (rounded up to
    :data:`BINNED_LENGTH_STEP` cells) share one kernel matrix and are smoothed together
    (:func:`_grid_sums`).
    """
    # Degenerate units (NaN / inf coordinates) are masked by the caller; keep them finite.
    coords = [
        torch.nan_to_num(c, nan=0.0, posinf=0.0, neginf=0.0).to(BINNED_DTYPE) for c in coords
    ]
    n_items, n = coords[0].shape
    reach = (BINNED_MAX_CELLS - 2) * BINNED_SPACING / 2  # kernel widths either side of the mean
    windows = []  # (low, high) per dimension, [item] each
    clean = True  # no outliers: nothing to mask, nothing to add
    for c in coords:
        centre, smallest, largest = c.mean(dim=1), c.amin(1), c.amax(1)
        low, high = centre - reach, centre + reach
        clean = clean and bool(((smallest >= low) & (largest <= high)).all())
        windows.append((torch.maximum(smallest, low), torch.minimum(largest, high)))
    inlier = None if clean else torch.stack(
        [
            (c >= low.unsqueeze(1)) & (c <= high.unsqueeze(1))
            for c, (low, high) in zip(coords, windows, strict=True)
        ]
    ).all(dim=0)
    span = torch.stack([high - low for low, high in windows]).amax(dim=0)
    # One cell more than the span needs: the upper corner of the last point's cell.
    length = (span / BINNED_SPACING).floor().long() + 2
    length = length.add(BINNED_LENGTH_STEP - 1).div(BINNED_LENGTH_STEP, rounding_mode="floor")
    lengths, group_of = torch.unique(length * BINNED_LENGTH_STEP, return_inverse=True)
    sums = torch.empty(n_items, n, dtype=BINNED_DTYPE, device=coords[0].device)
    dims = len(coords)
    for g, group_length in enumerate(lengths.tolist()):
        # The grid, its smoothed copy and a product in float32; indices, weights per point.
        per_item = 3 * group_length**dims * 4 + n * 2**dims * (8 + 4)
        members = (group_of == g).nonzero().squeeze(1)
        for items in members.split(max(1, BINNED_CHUNK_BYTES // per_item)):
            cells = [
                c[items].sub_(low[items].unsqueeze(-1)).div_(BINNED_SPACING)
                .clamp_(0.0, group_length - 1.0)
                for c, (low, _) in zip(coords, windows, strict=True)
            ]
            sums[items] = _grid_sums(cells, None if inlier is None else inlier[items], group_length)
    if inlier is not None:
        _add_outlier_sums(sums, coords, inlier)
    return sums


def _add_outlier_sums(
    sums: Float[Tensor, "item sample"],
    coords: Sequence[Float[Tensor, "item sample"]],
    inlier: Bool[Tensor, "item sample"],
) -> None:
    """Complete the grid's sums, which saw only inliers, with the exact outlier kernels.

    Every point gains ``sum_{j outlier} exp(-|p_i - p_j|^2 / 2)``; an outlier, which the
    grid cannot read, gets its whole exact sum over all points instead. The work is
    ``outliers x samples`` per item (items padded to the one with most outliers), taken
    in chunks of items.
    """
    n_items, n = inlier.shape
    outliers = (~inlier).sum(dim=1)
    most = int(outliers.max())
    per_item = most * n * 4 * (len(coords) + 2)
    every_item = torch.arange(n_items, device=inlier.device)
    for items in every_item.split(max(1, BINNED_CHUNK_BYTES // per_item)):
        chosen = torch.topk((~inlier[items]).to(BINNED_DTYPE), most, dim=1).indices  # [item, m]
        real = (~inlier[items]).gather(1, chosen)  # False: padding of items with fewer
        squared = None
        for c in coords:
            gap = rearrange(c[items].gather(1, chosen), "i m -> i m 1") - rearrange(
                c[items], "i n -> i 1 n"
            )
            squared = gap.square_() if squared is None else squared.add_(gap.square_())
        kernel = squared.mul_(-0.5).exp_().mul_(rearrange(real, "i m -> i m 1"))  # [item, m, n]
        block = sums[items] + kernel.sum(dim=1)
        exact = torch.where(real, kernel.sum(dim=2), block.gather(1, chosen))
        sums[items] = block.scatter_(1, chosen, exact)


def _grid_kernel(length: int, device: torch.device) -> Float[Tensor, "cell cell"]:
    """The Gaussian between every two cells of a grid of :data:`BINNED_SPACING` kernel widths.

    Its variance is ``1 - delta^2 / 3`` kernel widths squared (``delta`` the spacing):
    binning and interpolation each smear a point by ``delta^2 / 6`` on average, so the
    chain approximates the unit kernel to second order. Scaled by ``1 / sqrt(variance)``,
    so that the smoothed mass of a point equals the unit kernel's.
    """
    offset = torch.arange(length, device=device, dtype=BINNED_DTYPE)
    gap = rearrange(offset, "i -> i 1") - rearrange(offset, "j -> 1 j")
    variance = 1 - BINNED_SPACING**2 / 3
    return torch.exp(-0.5 * (gap * BINNED_SPACING).square() / variance) / math.sqrt(variance)


def _grid_sums(
    cells: list[Float[Tensor, "item sample"]],
    binned: Bool[Tensor, "item sample"] | None,
    length: int,
) -> Float[Tensor, "item sample"]:
    """Kernel sums over the ``binned`` points (``None``: all), read at those points.

    ``cells`` hold the points' coordinates in cells (``0 <= cell <= length - 1``). The
    ``binned`` points are linearly binned onto one ``length``-cell grid per item
    (``length^2`` in 2-D), smoothed by the Gaussian matrix ``K`` of :func:`_grid_kernel`
    and read back at every binned point by linear interpolation (the others read 0). The
    Gaussian is separable in whitened coordinates, so smoothing a 2-D grid ``G`` is
    ``K G K``: two matrix products shared by every item (no FFT, no wrap-around, no
    padding). ``cells`` are overwritten.
    """
    n_items = cells[0].shape[0]
    device = cells[0].device
    kernel = _grid_kernel(length, device)
    lower = [torch.floor(c).clamp_(max=length - 2) for c in cells]
    upper = [c.sub_(low) for c, low in zip(cells, lower, strict=True)]  # weights of cell + 1
    below = [1 - up for up in upper]
    if binned is not None:  # points left out weigh nothing in the first coordinate
        mass = binned.to(BINNED_DTYPE)
        upper[0].mul_(mass)
        below[0].mul_(mass)
    first = rearrange(torch.arange(n_items, device=device) * length ** len(cells), "i -> i 1")
    if len(cells) == 1:
        index = lower[0].long().add_(first)
        weights = {0: below[0], 1: upper[0]}  # flat offset of a corner -> its weights
        grid = _bin(index, weights, n_items * length, device)
        return _interpolate((grid.view(n_items, length) @ kernel).view(-1), index, weights)
    row, col = (low.long() for low in lower)
    # Flat offset of a corner -> its weights: +1 is the next column, +length the next row.
    weights = {
        0: below[0] * below[1], 1: below[0] * upper[1],
        length: upper[0] * below[1], length + 1: upper[0] * upper[1],
    }
    index = row.mul_(length).add_(col).add_(first)
    grid = _bin(index, weights, n_items * length**2, device)
    # K (G K): one product over every row of every grid, then one batched product with K.
    smooth = torch.matmul(kernel, (grid.view(-1, length) @ kernel).view(n_items, length, length))
    return _interpolate(smooth.view(-1), index, weights)


def _bin(
    index: Int[Tensor, "item sample"], weights: dict[int, Tensor], size: int, device: torch.device
) -> Float[Tensor, " cell"]:
    """A flat grid of ``size`` cells holding ``weights[offset]`` at ``index + offset``.

    Each corner is added through a view of the grid shifted by its offset, so no index
    tensor is built per corner.
    """
    grid = torch.zeros(size, dtype=BINNED_DTYPE, device=device)
    flat = index.reshape(-1)
    for offset, weight in weights.items():
        grid[offset:].index_add_(0, flat, weight.reshape(-1))
    return grid


def _interpolate(
    grid: Float[Tensor, " cell"], index: Int[Tensor, "item sample"], weights: dict[int, Tensor]
) -> Float[Tensor, "item sample"]:
    """The sum over corners of ``weights[offset] * grid[index + offset]``: the inverse of
    :func:`_bin`'s linear binning."""
    total = torch.zeros(index.shape, dtype=BINNED_DTYPE, device=grid.device)
    for offset, weight in weights.items():
        total.addcmul_(grid[offset:].take(index), weight)
    return total


def _kde_log_ratios(
    x: Float[Tensor, "batch sublayer unit"],
    z: Float[Tensor, "batch sublayer unit"],
    r: Float[Tensor, "transition unit"],
    chunk_size: int | None,
    binned: bool = False,
) -> Float[Tensor, "transition unit batch"]:
    """Each sample's term ``log((p(x_i, y_i) + eps) / (p(x_i) p(y_i) + eps))``, nats.

    Their mean over the batch is the resubstitution KDE estimate of MI (module
    docstring). ``binned=True`` takes the kernel sums from the grid
    (:func:`_binned_kernel_sums`), whose whitened coordinates are float32 like its grid
    (the exact sums take float64 coordinates).
    """
    n = x.shape[0]
    sd = centred_columns(x)[1][0] / math.sqrt(n - 1)  # ddof=1, [sublayer, unit], units of x
    coordinate_dtype = BINNED_DTYPE if binned else STAT_DTYPE
    u = rearrange(  # mean 0, sd 1 (ddof=1)
        (z * math.sqrt(n - 1)).to(coordinate_dtype), "batch s d -> s d batch"
    )
    block_bytes = KDE_TEMPORARIES * n * n * KDE_DTYPE.itemsize

    # Marginal densities p(x_i) of every sublayer, in units of 1 / x.
    h = _scott_factor(n, 1)
    items = rearrange(u, "s d batch -> (s d) batch") / h
    sums = (
        _binned_kernel_sums([items])
        if binned
        else torch.cat(
            [_kernel_sums([items[k]]) for k in chunk_slices(len(items), block_bytes, chunk_size)]
        )
    )
    marginal = rearrange(sums, "(s d) batch -> s d batch", d=x.shape[2]) / (
        n * h * math.sqrt(2 * math.pi) * sd.unsqueeze(-1)
    )

    # Joint densities p(x_i, y_i) of every transition, in units of 1 / (x y).
    f = _scott_factor(n, 2)
    spread = torch.sqrt((1 - r) * (1 + r)).unsqueeze(-1)  # sqrt(1 - r^2), [transition, d, 1]
    z1 = rearrange(u[:-1] / f, "t d batch -> (t d) batch")
    slope, scale = r.unsqueeze(-1).to(coordinate_dtype), (f * spread).to(coordinate_dtype)
    z2 = rearrange((u[1:] - slope * u[:-1]) / scale, "t d batch -> (t d) batch")
    sums = (
        _binned_kernel_sums([z1, z2])
        if binned
        else torch.cat(
            [_kernel_sums([z1[k], z2[k]]) for k in chunk_slices(len(z1), block_bytes, chunk_size)]
        )
    )
    norm = n * 2 * math.pi * f**2 * spread * (sd[:-1] * sd[1:]).unsqueeze(-1)
    joint = rearrange(sums, "(t d) batch -> t d batch", d=x.shape[2]) / norm

    return torch.log((joint + MI_LOG_EPSILON) / (marginal[:-1] * marginal[1:] + MI_LOG_EPSILON))


def _kde_mutual_information(
    x: Float[Tensor, "batch sublayer unit"],
    z: Float[Tensor, "batch sublayer unit"],
    r: Float[Tensor, "transition unit"],
    chunk_size: int | None,
    binned: bool = False,
) -> Float[Tensor, "transition unit"]:
    """Resubstitution KDE estimate of MI (module docstring), nats, ``[transition, unit]``."""
    return reduce(_kde_log_ratios(x, z, r, chunk_size, binned), "t d batch -> t d", "mean")


def _binned_mutual_information(
    x: Float[Tensor, "batch sublayer unit"],
    z: Float[Tensor, "batch sublayer unit"],
    r: Float[Tensor, "transition unit"],
    chunk_size: int | None,
) -> Float[Tensor, "transition unit"]:
    """The KDE estimate with binned kernel sums (module docstring); ``chunk_size`` unused."""
    return _kde_mutual_information(x, z, r, chunk_size, binned=True)


def _gaussian_mutual_information(
    x: Float[Tensor, "batch sublayer unit"],
    z: Float[Tensor, "batch sublayer unit"],
    r: Float[Tensor, "transition unit"],
    chunk_size: int | None,
) -> Float[Tensor, "transition unit"]:
    """Closed-form MI of a bivariate Gaussian with correlation ``r``: ``-1/2 log(1 - r^2)``.

    Needs only ``r``; the other arguments are part of the estimator signature.
    """
    return -0.5 * torch.log1p(-r.square())


# Estimators by name; add one here to offer a new ``method``.
_ESTIMATORS: dict[str, Estimator] = {
    "kde": _kde_mutual_information,
    "binned": _binned_mutual_information,
    "gaussian": _gaussian_mutual_information,
}
MI_METHODS = tuple(_ESTIMATORS)
PER_SAMPLE_METHODS = ("kde", "binned")  # estimators with per-sample terms


def mutual_information(
    resid: Float[Tensor, "batch sublayer d_model"],
    *,
    method: str = "kde",
    chunk_size: int | None = None,
) -> Float[Tensor, "transition d_model"]:
    """Per-unit mutual information between sublayers ``t`` and ``t + 1``, in nats (Fig 1G, H).

    ``method`` is ``"kde"`` (the reference Gaussian-KDE resubstitution estimator of
    docs/paper.md, metric 5, as ``scipy.stats.gaussian_kde`` computes the densities),
    ``"binned"`` (the same estimate from grid-binned kernel sums, far faster, ~0.1 %
    off) or ``"gaussian"`` (``-1/2 log(1 - r^2)``, a linear baseline); see the module
    docstring. ``chunk_size`` is the number of (sublayer, unit) columns per
    ``[chunk, batch, batch]`` kernel block of the KDE; ``None`` keeps blocks near 256 MB.

    Returns float64 ``[sublayer - 1, d_model]`` in nats, on the input's device. NaN for
    degenerate units: constant over the batch at either sublayer, or perfectly collinear
    across the transition (singular joint covariance). Needs at least
    :data:`MI_MIN_SAMPLES` (3) samples and 2 sublayers.
    """
    _check_arguments(resid, method, chunk_size, MI_METHODS)
    estimator = _ESTIMATORS[method]
    pieces = []
    for x, z, r, degenerate in _transition_chunks(resid):
        pieces.append(estimator(x, z, r, chunk_size).masked_fill(degenerate, math.nan))
    return torch.cat(pieces, dim=-1)


def mutual_information_per_sample(
    resid: Float[Tensor, "batch sublayer d_model"],
    *,
    method: str = "kde",
    chunk_size: int | None = None,
) -> Float[Tensor, "batch transition"]:
    """Each sample's share of the mean MI over units: its log density ratio, in nats.

    For every sample ``i`` and transition ``t``, the mean over the non-degenerate units of
    ``log((p(x_i, y_i) + eps) / (p(x_i) p(y_i) + eps))``, the terms whose mean over the
    batch is :func:`mutual_information` averaged over units (``nanmean``). A bootstrap
    over samples that reweights these terms (densities held fixed) is the linearised
    bootstrap of the mean MI (:mod:`tl_dynamics.findings`). ``method`` is ``"kde"`` or
    ``"binned"`` (the Gaussian closed form has no per-sample terms).

    Returns float64 ``[batch, sublayer - 1]`` in nats, on the input's device; NaN for a
    transition where every unit is degenerate.
    """
    _check_arguments(resid, method, chunk_size, PER_SAMPLE_METHODS)
    total = count = 0
    for x, z, r, degenerate in _transition_chunks(resid):
        ratios = _kde_log_ratios(x, z, r, chunk_size, binned=method == "binned")
        ratios = ratios.masked_fill(degenerate.unsqueeze(-1), 0.0)
        total = total + reduce(ratios, "t d batch -> batch t", "sum")
        count = count + reduce((~degenerate).to(STAT_DTYPE), "t d -> t", "sum")
    return total / count


def _check_arguments(
    resid: object, method: object, chunk_size: object, methods: Sequence[str]
) -> None:
    """Validate the arguments shared by the public MI functions, before any work."""
    check_resid(resid, min_sublayers=2, min_batch=MI_MIN_SAMPLES)
    check_choice(method, "method", methods)
    if chunk_size is not None:
        check_int(chunk_size, "chunk_size")


def _transition_chunks(
    resid: Float[Tensor, "batch sublayer d_model"],
) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """``(x, z, r, degenerate)`` per chunk of units: float64 data, standardised columns,
    Pearson ``r [transition, unit]`` and the mask of units whose MI is undefined."""
    for x, z in unit_chunks(resid, column_bytes(resid, MI_COLUMN_COPIES)):
        r = successive_correlation(z)
        degenerate = r.isnan() | ((1 - r) * (1 + r) < SINGULAR_TOLERANCE)
        yield x, z, r, degenerate
