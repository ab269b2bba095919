"""Bootstrap intervals, p-values and Holm's correction: the statistics behind every verdict.

The report's claims (:mod:`tl_dynamics.findings`) and its "Beyond the paper" section
(:mod:`tl_dynamics.report.beyond`) both test their numbers with this module. A finding is a number computed from per-sample terms
(each text's mean |activation| at each sublayer, its cosine at each transition, its share
of a correlation, ...). The bootstrap over texts (Efron & Tibshirani 1993, *An
Introduction to the Bootstrap*) draws the texts again with replacement, ``n`` out of
``n``, and recomputes the number; the spread of the recomputed numbers is the number's
sampling uncertainty. Drawing texts with replacement is the same as giving each text a
multinomial count, so all resamples are one weight matrix ``W [resample, text]`` and the
per-sample means of every resample one matrix product ``W @ terms``; statistics that are
not means of per-sample terms (a rank correlation over depth, a ratio of two means) are
computed from those resampled means, row by row.

* :func:`bootstrap_weights`: the seeded weight matrix, texts expanded to their samples;
  :class:`Resampler` holds one and resamples means of per-sample terms with it.
* :func:`percentile_interval`: the percentile interval of the resampled statistic;
  :func:`basic_interval`, the basic interval the findings report (it corrects the
  bias the percentile interval repeats).
* :func:`bootstrap_p_value`: one-sided p-value against a bound from the resamples
  themselves, never below ``1 / (B + 1)``; :func:`permutation_p_value` the same from a
  permutation null.
* :func:`standard_error`: the spread of bootstrap replicates.
* :func:`normal_p_value`: two-sided p-value of ``effect = null_value`` from a resampled
  (or permuted) spread, by the normal approximation.
* :func:`holm`: Holm's (1979) step-down adjusted p-values, family-wise error control.

Example::

    import numpy as np
    import torch
    from tl_dynamics.stats import bootstrap_weights, holm, percentile_interval

    values = torch.randn(200, dtype=torch.float64) + 0.3
    weights = bootstrap_weights(torch.arange(200), n_resamples=1000, seed=0)
    means = (weights @ values).numpy()                  # 1000 bootstrap means
    percentile_interval(means)                          # ~ (0.16, 0.44)
    holm(np.array([0.01, 0.04, 0.03]))                  # [0.03, 0.06, 0.06]
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange
from jaxtyping import Float, Int
from scipy.stats import norm
from torch import Tensor

__all__ = [
    "N_RESAMPLES",
    "CONFIDENCE",
    "ALPHA",
    "WEIGHT_CHUNK",
    "bootstrap_weights",
    "Resampler",
    "percentile_interval",
    "basic_interval",
    "bootstrap_p_value",
    "permutation_p_value",
    "standard_error",
    "normal_p_value",
    "holm",
]

# Resamples per bootstrap. 1000 is the usual floor for a 95 % percentile interval
# (Efron & Tibshirani 1993, section 19.3). p-values counted from resamples are at least
# 1 / (B + 1): tests decided under a multiplicity correction need more (the findings
# use their own N_RESAMPLES).
N_RESAMPLES = 1000
CONFIDENCE = 0.95  # two-sided percentile interval
ALPHA = 0.01  # family-wise error rate of one report's findings, after Holm's correction
# Resamples drawn into one [chunk, text] weight block while expanding to samples.
WEIGHT_CHUNK = 256


def bootstrap_weights(
    groups: Int[Tensor, " sample"], n_resamples: int = N_RESAMPLES, seed: int = 0
) -> Float[Tensor, "resample sample"]:
    """Row-normalised bootstrap weights that resample whole groups (texts).

    Each row draws ``n_groups`` groups with replacement (a multinomial count per group,
    from numpy's seeded ``PCG64``); every sample gets its group's count, and the row is
    divided by its sum, so ``weights @ terms`` is the resample's mean of ``terms`` over
    samples. With one sample per group this is the ordinary bootstrap over samples.

    Returns float64 ``[n_resamples, n_samples]`` on the CPU; rows sum to 1.
    """
    codes, inverse = torch.unique(groups.cpu(), return_inverse=True)
    rng = np.random.default_rng(seed)
    n_groups = len(codes)
    counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_resamples)
    weights = torch.from_numpy(counts).to(torch.float64)[:, inverse]
    return weights / weights.sum(dim=1, keepdim=True)


@dataclass(frozen=True)
class Resampler:
    """Bootstrap-over-texts weights of one cache: ``[resample, sample]``, rows sum to 1.

    Attributes:
        weights: float64 ``[n_resamples, n_samples]`` from :func:`bootstrap_weights`.
    """

    weights: Float[Tensor, "resample sample"]

    @classmethod
    def of(cls, groups: Int[Tensor, " sample"], n_resamples: int, seed: int) -> Resampler:
        """The resampler of texts ``groups`` (one text index per sample), seeded."""
        return cls(bootstrap_weights(groups, n_resamples, seed))

    def means(self, terms: Float[Tensor, "sample k"]) -> tuple[np.ndarray, np.ndarray]:
        """``(point [k], replicates [resample, k])``: the mean of per-sample ``terms
        [sample, k]`` and its bootstrap replicates, float64 numpy."""
        terms = terms.detach().to("cpu", torch.float64)
        return terms.mean(0).numpy(), (self.weights @ terms).numpy()

    def mean_chunks(self, data: Float[Tensor, "sample ..."]) -> Iterator[Tensor]:
        """Resampled means of ``data [sample, ...]``, :data:`WEIGHT_CHUNK` resamples at a
        time: float32 ``[chunk, ...]`` blocks on the CPU."""
        flat = rearrange(data.detach().cpu().float(), "sample ... -> sample (...)")
        for start in range(0, len(self.weights), WEIGHT_CHUNK):
            block = self.weights[start : start + WEIGHT_CHUNK].float() @ flat
            yield block.reshape(-1, *data.shape[1:])


def standard_error(replicates: Float[np.ndarray, " resample"]) -> float:
    """Standard deviation (ddof 1) of the finite bootstrap replicates; NaN below two."""
    finite = replicates[np.isfinite(replicates)]
    return float(finite.std(ddof=1)) if len(finite) > 1 else math.nan


def percentile_interval(
    replicates: Float[np.ndarray, " resample"], confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """The ``confidence`` percentile interval of bootstrap replicates (NaNs dropped).

    Same definition as ``scipy.stats.bootstrap(method="percentile")``: the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles.
    """
    finite = replicates[np.isfinite(replicates)]
    if len(finite) == 0:
        return (math.nan, math.nan)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return (float(low), float(high))


def normal_p_value(effect: float, null_value: float, spread: float) -> float:
    """Two-sided p-value of ``effect = null_value`` given the statistic's standard error.

    ``2 * Phi(-|effect - null_value| / spread)``. A zero spread gives 0 when the effect
    differs from the null value and 1 when it equals it; NaN inputs give NaN.
    """
    if not all(math.isfinite(v) for v in (effect, null_value, spread)):
        return math.nan
    distance = abs(effect - null_value)
    if spread == 0:
        return 0.0 if distance > 0 else 1.0
    return float(2 * norm.sf(distance / spread))


def holm(p_values: Float[np.ndarray, " test"]) -> Float[np.ndarray, " test"]:
    """Holm's step-down adjusted p-values (Holm 1979), NaNs kept out of the family.

    Sorted ascending, the ``k``-th smallest of ``m`` p-values is multiplied by
    ``m - k + 1`` (``k`` from 1), made non-decreasing by a running maximum and capped
    at 1; a test is rejected at family-wise level ``alpha`` iff its adjusted p-value is
    ``<= alpha``. Same numbers as ``statsmodels.stats.multitest.multipletests(p,
    method="holm")[1]``.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m = len(order)
    scaled = (m - np.arange(m)) * p[order]
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return adjusted


def basic_interval(
    effect: float, replicates: Float[np.ndarray, " resample"], confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """The ``confidence`` basic bootstrap interval ``[2 e - q_hi, 2 e - q_lo]`` (NaNs dropped).

    The percentile interval repeats the bootstrap's bias (a statistic whose resamples sit
    above the estimate gets an interval above it); the basic interval reflects it back
    (Davison & Hinkley 1997, eq. 5.6; ``scipy.stats.bootstrap(method="basic")``).
    """
    low, high = percentile_interval(replicates, confidence)
    return (2 * effect - high, 2 * effect - low)


def bootstrap_p_value(
    effect: float, replicates: Float[np.ndarray, " resample"], bound: float, direction: int
) -> float:
    """One-sided bootstrap p-value of "``direction * (effect - bound) > 0``".

    The null is ``direction * (theta - bound) <= 0``; the resamples, centred on the
    estimate, stand for the estimate's error (as the basic interval reads them):
    ``(1 + #{direction * (r - effect) >= direction * (effect - bound)}) / (1 + B)``, never
    below ``1 / (B + 1)``. Inverting it gives the basic interval's one-sided bound. NaN
    when ``effect`` is not finite or no resample is.
    """
    finite = replicates[np.isfinite(replicates)]
    if not math.isfinite(effect) or len(finite) == 0:
        return math.nan
    extreme = np.sum(direction * (finite - effect) >= direction * (effect - bound))
    return float((1 + extreme) / (1 + len(finite)))


def permutation_p_value(observed: float, null: Float[np.ndarray, " permutation"], direction: int) -> float:
    """One-sided permutation p-value ``(1 + #{direction * null >= direction * observed}) /
    (1 + B)``: never 0, exact for exchangeable permutations (Phipson & Smyth 2010)."""
    finite = null[np.isfinite(null)]
    if not math.isfinite(observed) or len(finite) == 0:
        return math.nan
    return float((1 + np.sum(direction * finite >= direction * observed)) / (1 + len(finite)))
