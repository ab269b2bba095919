"""Mutual information of a unit with itself one sublayer later.

Correlation (:mod:`~tl_dynamics.metrics.correlation`) only sees linear dependence. Mutual
information (MI) sees any: ``I(X; Y) = E[log p(x, y) / (p(x) p(y))]``, in nats, is 0 when
the unit's value at sublayer ``t + 1`` (``Y``) tells nothing about its value at ``t``
(``X``), and grows as one predicts the other better. The paper (Fig 1G, H) estimates it
per unit between successive sublayers and finds a sharp drop in early layers (steepest at
cross-layer transitions) while the linear correlation rises: units become more linearly
but less richly coupled.

``method="kde"`` (default) is the reference estimator of PAPER.md section 5:

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
(coarser for units whose range would need more than 160 cells, i.e. outliers),
convolved with the Gaussian by FFT (its variance reduced by the ``delta^2 / 3`` that
binning and interpolation add) and read back at the samples by linear interpolation.
Its MI is within ~0.1 % of the exact KDE on average (2 % at worst) on MiniLM activations
and heavy-tailed data. Its speed-up over the paper's per-pair scipy loop depends on the
data's shape (number of samples, outliers) and is measured on several shapes by
``benchmarks/bench_mutual_information.py`` (``benchmarks/RESULTS.md``).

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
from jaxtyping import Float
from torch import Tensor

from tl_dynamics._checks import check_int
from tl_dynamics.metrics._validation import (
    CHUNK_BYTES,
    STAT_DTYPE,
    check_choice,
    check_resid,
    chunk_slices,
)
from tl_dynamics.metrics.correlation import column_bytes, successive_correlation, unit_chunks

__all__ = [
    "MI_LOG_EPSILON",
    "MI_MIN_SAMPLES",
    "SINGULAR_TOLERANCE",
    "KDE_TEMPORARIES",
    "KDE_DTYPE",
    "BINNED_SPACING",
    "BINNED_MAX_CELLS",
    "BINNED_WRAP_WIDTHS",
    "BINNED_DTYPE",
    "BINNED_MIN_VARIANCE",
    "MI_COLUMN_COPIES",
    "MI_METHODS",
    "PER_SAMPLE_METHODS",
    "mutual_information",
    "mutual_information_per_sample",
]

MI_LOG_EPSILON = 1e-10  # PAPER.md section 5: added inside both logs
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
# At most this many cells per dimension and unit; wider ranges (outliers) get a coarser
# spacing, so a joint grid never exceeds ~(BINNED_MAX_CELLS + pad)^2 cells.
BINNED_MAX_CELLS = 160
# Empty kernel widths between the data's edges on the circular FFT grid: exp(-8^2 / 2)
# ~ 1e-14 of a kernel leaks around.
BINNED_WRAP_WIDTHS = 8.0
BINNED_DTYPE = torch.float32
# Spacings above ~1.2 kernel widths (extreme outliers) cannot be corrected fully.
BINNED_MIN_VARIANCE = 0.5
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
    """:func:`_kernel_sums` on a grid: linear binning, FFT convolution, linear interpolation.

    Each item gets its own spacing, :data:`BINNED_SPACING` kernel widths, or coarser
    where its range would need more than :data:`BINNED_MAX_CELLS` cells per dimension
    (outliers). Items are sorted by grid size and taken in groups of similar size, so a
    few wide units do not inflate the grids of the others. Binning and interpolation each
    smear a point by ``delta^2 / 6`` of variance on average, so the Gaussian applied on
    the grid has variance ``1 - delta^2 / 3``: the chain approximates the unit kernel to
    second order.
    """
    # Degenerate units (NaN / inf coordinates) are masked by the caller; keep them finite.
    coords = [torch.nan_to_num(c, nan=0.0, posinf=0.0, neginf=0.0) for c in coords]
    n_items, n = coords[0].shape
    lows = [c.amin(dim=1) for c in coords]
    spans = [c.amax(dim=1) - low for c, low in zip(coords, lows, strict=True)]
    spacing = torch.stack(spans).amax(dim=0).div(BINNED_MAX_CELLS - 1).clamp(min=BINNED_SPACING)
    pad = math.ceil(BINNED_WRAP_WIDTHS / BINNED_SPACING)
    cells = torch.stack([torch.ceil(span / spacing) for span in spans]).amax(dim=0).long() + 1
    sums = torch.empty(n_items, n, dtype=STAT_DTYPE, device=coords[0].device)
    order = torch.argsort(cells)
    start = 0
    dims = len(coords)
    while start < n_items:
        size = int(cells[order[start]])
        # Grow the group while the grids stay within 25 % of the smallest one and memory.
        stop = start + 1
        limit = int(size * 1.25) + 1
        while stop < n_items and int(cells[order[stop]]) <= limit:
            stop += 1
        length = int(cells[order[stop - 1]]) + pad
        length += length % 2
        per_item = (length**dims) * 16
        stop = min(stop, start + max(1, CHUNK_BYTES // per_item))
        items = order[start:stop]
        sums[items] = _grid_sums(
            [(c[items] - low[items].unsqueeze(-1)) / spacing[items].unsqueeze(-1)
             for c, low in zip(coords, lows, strict=True)],
            spacing[items],
            length,
        ).to(STAT_DTYPE)
        start = stop
    return sums


def _grid_sums(
    cells: Sequence[Float[Tensor, "item sample"]], spacing: Float[Tensor, " item"], length: int
) -> Float[Tensor, "item sample"]:
    """Binned kernel sums of points given in grid units (``0 .. length - pad``)."""
    n_items, n = cells[0].shape
    dims = len(cells)
    device = cells[0].device
    # Linear binning: corner offsets and weights per dimension.
    base = [torch.floor(c).clamp(max=length - 2) for c in cells]
    frac = [(c - b).to(BINNED_DTYPE) for c, b in zip(cells, base, strict=True)]
    base = [b.long() for b in base]
    strides = [length ** (dims - 1 - k) for k in range(dims)]
    flat_base = torch.arange(n_items, device=device).unsqueeze(-1) * length**dims
    for b, stride in zip(base, strides, strict=True):
        flat_base = flat_base + b * stride
    corners = []
    for corner in range(2**dims):
        index = flat_base
        weight = torch.ones(n_items, n, dtype=BINNED_DTYPE, device=device)
        for k in range(dims):
            if corner >> k & 1:
                index = index + strides[k]
                weight = weight * frac[k]
            else:
                weight = weight * (1 - frac[k])
        corners.append((index, weight))
    grid = torch.zeros(n_items * length**dims, dtype=BINNED_DTYPE, device=device)
    for index, weight in corners:
        grid.index_add_(0, index.reshape(-1), weight.reshape(-1))
    grid = grid.reshape(n_items, *([length] * dims))
    # Gaussian of variance 1 - delta^2 / 3 (in kernel widths), sampled on the grid.
    offset = torch.arange(length, device=device, dtype=BINNED_DTYPE)
    offset = torch.minimum(offset, length - offset)  # circular distance in cells
    delta = spacing.to(BINNED_DTYPE).unsqueeze(-1)
    variance = (1 - delta.square() / 3).clamp(min=BINNED_MIN_VARIANCE)
    kernel = torch.exp(-0.5 * (offset * delta).square() / variance) / variance.sqrt()
    if dims == 1:
        smooth = torch.fft.irfft(
            torch.fft.rfft(grid) * torch.fft.rfft(kernel).real, n=length
        )
    else:
        transfer = rearrange(torch.fft.fft(kernel).real, "item k -> item k 1") * rearrange(
            torch.fft.rfft(kernel).real, "item k -> item 1 k"
        )
        smooth = torch.fft.irfft2(torch.fft.rfft2(grid) * transfer, s=(length, length))
    smooth = smooth.reshape(-1)
    total = torch.zeros(n_items, n, dtype=BINNED_DTYPE, device=device)
    for index, weight in corners:
        total.addcmul_(smooth[index], weight)
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
    (:func:`_binned_kernel_sums`).
    """
    n = x.shape[0]
    sd = torch.std(x, dim=0, correction=1)  # [sublayer, unit], units of x
    u = rearrange(z * math.sqrt(n - 1), "batch s d -> s d batch")  # mean 0, sd 1 (ddof=1)
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
    z2 = rearrange((u[1:] - r.unsqueeze(-1) * u[:-1]) / (f * spread), "t d batch -> (t d) batch")
    sums = (
        _binned_kernel_sums([z1, z2])
        if binned
        else torch.cat(
            [_kernel_sums([z1[k], z2[k]]) for k in chunk_slices(len(z1), block_bytes, chunk_size)]
        )
    )
    norm = n * 2 * math.pi * f**2 * spread * (sd[:-1] * sd[1:]).unsqueeze(-1)
    joint = rearrange(sums, "(t d) batch -> t d batch", d=x.shape[2]) / norm

    return torch.log(joint + MI_LOG_EPSILON) - torch.log(
        marginal[:-1] * marginal[1:] + MI_LOG_EPSILON
    )


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
    PAPER.md section 5, as ``scipy.stats.gaussian_kde`` computes the densities),
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
