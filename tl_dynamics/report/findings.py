"""The paper's findings, each a statistical test on this model's numbers.

Fernando & Guitchounts (2025) report qualitative findings on Llama 3.1 8B: activations
grow denser with depth, units keep their sign, successive sublayers correlate more and
more, within-layer transitions are smoother than cross-layer ones, the stream is flat
early and accelerates in the last third, information drops early (most at cross-layer
steps), units rotate in phase space, and mid-layer perturbations are pulled back. Each
function here turns one such sentence into a number, the *effect*, and tests it. One
rule for all (:mod:`tl_dynamics.stats`):

* the interval, the p-values and the effect come from the same quantity: the effect is
  recomputed on :data:`N_RESAMPLES` bootstrap resamples of the texts (seeded); the 95 %
  interval is the *basic* interval ``[2 e - q_97.5, 2 e - q_2.5]``, which corrects the
  bias the percentile interval repeats;
* two one-sided tests against the finding's minimum effect ``m`` (named constants
  below, with their reason): ``p_value`` tests "the effect passes ``m`` in the paper's
  direction" (null: it does not), ``p_short`` tests "the effect falls short of ``m``"
  (null: it reaches it); both from the centred resamples, ``(1 + #{resample at least
  as far}) / (1 + B)``, so never below ``1 / (B + 1)``. Where a permutation null exists
  (layer orders, sign flips of whole texts) the "yes" test must also beat it: its
  ``p_value`` is the larger of the two (an intersection-union test);
* the ``p_value`` and ``p_short`` of one report are corrected together by Holm's method
  (:func:`decide`), and the verdict is ``"yes"`` when ``p_adjusted <= alpha``
  (:data:`~tl_dynamics.stats.ALPHA` = 0.01), ``"no"`` when ``p_short_adjusted <=
  alpha``, ``"undecided"`` otherwise, when the resamples do not vary (a zero spread
  says nothing) and below :data:`MIN_TEXTS` texts, saying why.

The designs keep an order over depth from passing for the paper's structure (checked
on structured nulls, :mod:`tl_dynamics.synthetic`; docs/calibration.md): trends compare
the last third of depth with the first third (so a pre/mid zig-zag cannot drive them);
a within-layer step is compared with the mean of *both* neighbouring cross-layer steps
(so a linear trend cancels); the MI drop at cross steps is the cross-step second
difference *minus* the within-step one (so a convex curve cancels); signs persist only
over cells whose means are significantly non-zero, against sign flips of whole texts;
the rotation null permutes the sublayers of all units together; PCA axes are fitted on
held-out texts; the teleport contrast resamples prompts.

Nothing is written by hand: a report states what the data show, including where they
disagree with the paper.

Example::

    from tl_dynamics.findings import dynamics_findings
    for finding in dynamics_findings(dyn):         # dyn from tld.collect(...), >= 30 texts
        print(finding.verdict, finding.key, finding.effect, finding.ci, finding.p_adjusted)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from einops import rearrange
from scipy.stats import norm
from sklearn.decomposition import PCA
from torch import Tensor

from tl_dynamics import metrics
from tl_dynamics.cache import DynamicsCache
from tl_dynamics.errors import DynamicsInputError
from tl_dynamics.metrics.correlation import unit_correlation_per_sample
from tl_dynamics.metrics.information import mutual_information_per_sample
from tl_dynamics.report.measures import MI_METHOD
from tl_dynamics.stats import (
    ALPHA,
    Resampler,
    basic_interval,
    bootstrap_p_value,
    bootstrap_weights,
    holm,
    permutation_p_value,
    standard_error,
)

__all__ = [
    "N_RESAMPLES",
    "MIN_TEXTS",
    "MIN_PROMPTS",
    "HIGH_CORRELATION",
    "LAST_THIRD",
    "EARLY_THIRD",
    "MIN_LOG_RATIO",
    "MIN_KAPPA",
    "SIGN_Z",
    "MIN_MI_DIFFERENCE",
    "MIN_EXCESS_TURNS",
    "MIN_LOG_PULL",
    "BOOTSTRAP_UNITS",
    "MI_BOOTSTRAP_METHOD",
    "CLAIMS",
    "Finding",
    "decide",
    "tested",
    "activation_growth",
    "sign_persistence",
    "high_correlation",
    "velocity_acceleration",
    "information_falls",
    "information_drop_at_cross",
    "rotations_exceed_null",
    "DYNAMICS_KEYS",
    "dynamics_findings",
    "variance_concentrates_with_depth",
    "steps_lengthen_in_pca_plane",
    "mid_layers_attract",
    "TRAJECTORY_KEYS",
    "trajectory_findings",
    "CONTROL_MARGIN",
    "CONTRAST_VERDICTS",
    "Contrast",
    "contrasts",
]

if TYPE_CHECKING:
    from tl_dynamics.embed import PCATrajectories
    from tl_dynamics.interventions import TeleportSweep

# Resamples (and permutations) per test. A p-value from B resamples is at least
# 1 / (B + 1), and Holm multiplies the smallest of m by m: a report's ~32 one-sided
# tests need B + 1 >= 32 / ALPHA = 3200 for any to pass; 4999 leaves room.
N_RESAMPLES = 4999
# Fewest texts (or teleport grid points) for a verdict: below ~30 the bootstrap
# distribution of a mean is visibly skewed and its percentile interval under-covers
# (Efron & Tibshirani 1993, section 13.3); findings are "undecided" there.
MIN_TEXTS = 30
MIN_PROMPTS = 8  # teleports: prompts are the unit of the pull-back contrast
HIGH_CORRELATION = 0.8  # the paper: r > 0.8 already in early layers (section 3, Fig 1C)
LAST_THIRD = 2 / 3  # the paper: velocity accelerates "in the last third" of depth (Fig 1F)
EARLY_THIRD = 1 / 3  # "early layers": the first third of depth (Fig 1G-H)
# Minimum effect sizes (the paper's direction must reach them for a "yes"):
# a depth trend (last third against first third), a contrast of two speeds or of two
# distances-from-identity is a factor of at least 1.25 (a quarter); the paper's curves
# change by factors of 2 and more (Fig 1E-F);
MIN_LOG_RATIO = math.log(1.25)
# sign agreement beyond chance is a Cohen's kappa of at least 0.4, the lower edge of
# "moderate" agreement (Landis & Koch 1977);
MIN_KAPPA = 0.4
# a cell (sublayer, unit) takes part in sign persistence when its mean over texts is
# non-zero at the two-sided 1 % level, |t| > 2.576 (a selection, not a test);
SIGN_Z = float(norm.isf(0.005))
# a difference of mutual information is at least 0.02 nats: the binned estimator is
# within 2 % of the exact KDE, ~0.02 nats at the 0.5-1 nats of real models;
MIN_MI_DIFFERENCE = 0.02
# rotations beyond the null are at least one full turn per unit (the paper: 10.74 vs ~0);
MIN_EXCESS_TURNS = 1.0
# a faster pull-back per sublayer is at least 0.05 in log distance (5 % per sublayer).
MIN_LOG_PULL = 0.05
# Per-unit statistics too costly to recompute on all units for every resample (the MI's
# per-sample terms, the rotation counts of resampled mean trajectories) are resampled
# on this many seeded units and the interval is the point estimate of all units plus
# the subset's bootstrap deviations. A mean over fewer units varies more from text to
# text unless units are negatively dependent, so the interval is typically wider
# (conservative). 32 keeps the findings stage near 10 s at SmolLM2 size (benchmarks).
BOOTSTRAP_UNITS = 32
MI_BOOTSTRAP_METHOD = MI_METHOD  # the report's estimator, so the bootstrap resamples its MI
ROTATION_CHUNK = 256  # layer orders (or resamples) counted at once
SPREAD_FLOOR = 1e-12  # resamples spread less than this (relative) do not vary: rounding
# The rotation test counts this many seeded units (the mean over units of a count is
# what it tests; 128 of SmolLM2's 576 keep its null and bootstrap near 10 s).
ROTATION_UNITS = 128

# The paper's findings in one sentence each, by key, in the paper's order.
CLAIMS = {
    "activation_growth": "Activations grow denser with depth: mean |activation| increases (Fig 1B).",
    "sign_persistence": (
        "Units keep their sign across depth: a unit's mean has the same sign at every "
        "sublayer (Fig 1B)."
    ),
    "high_correlation": "Per-unit correlation of successive sublayers is > 0.8 already in early layers (Fig 1C).",
    "correlation_rises": "Per-unit correlation of successive sublayers rises with depth (Fig 1C).",
    "correlation_within_above_cross": "Within-layer transitions (pre → mid) correlate more than cross-layer ones (Fig 1C).",
    "cosine_rises": "Cosine similarity of successive sublayers rises with depth (Fig 1E).",
    "cosine_within_above_cross": "Within-layer cosine similarity is above cross-layer (Fig 1E).",
    "velocity_acceleration": "Velocity is flat early and accelerates in the last third of depth (Fig 1F).",
    "velocity_cross_above_within": "Cross-layer transitions are faster than within-layer ones (Fig 1F).",
    "information_falls": "Mutual information between successive sublayers drops in early layers (Fig 1G-H).",
    "information_drop_at_cross": "The MI drop is steepest at cross-layer transitions (Fig 1H).",
    "rotations_exceed_null": "Units rotate in phase space far more than a layer-shuffled null (Fig 2, 10.74 turns vs ~0).",
    "variance_concentrates": (
        "Early layers spread variance over more dimensions than late ones: the explained "
        "variance per sublayer from the top components rises with depth (Fig 4C)."
    ),
    "pca_steps_lengthen": "Trajectories in the PC1-PC2 plane take longer steps late in depth (Fig 4A).",
    "mid_layers_attract": (
        "Teleported states are pulled back towards the control path at middle layers "
        "(attractor-like), not at the first or the last layer teleported (Fig 4D: layers "
        "0-31 of Llama's 32, where the paper calls 31 the penultimate; its abstract places "
        "the attractor-like dynamics in the lower layers)."
    ),
}


@dataclass(frozen=True)
class Finding:
    """One of the paper's findings, tested on this model.

    Attributes:
        key: Stable identifier, e.g. ``"cosine_within_above_cross"``.
        claim: The paper's finding in one sentence.
        observed: What this model shows, in words with the numbers (or why undecided).
        effect: The measured quantity, in the units ``effect_unit`` names.
        effect_unit: What ``effect`` is, e.g. ``"log(last third / first third)"``.
        ci: 95 % basic bootstrap interval of ``effect`` (NaN when undecided early).
        p_value: One-sided p-value of "``effect`` passes ``min_effect`` in the paper's
            direction" (the null: it does not), before correction; with a permutation
            null, the larger of that and the permutation p.
        null: The null hypotheses in words, and how the p-values were obtained.
        null_value: ``effect`` when there is no effect at all (for reading, not tested).
        min_effect: The smallest effect in the paper's direction that counts as the
            finding (a named constant of this module).
        direction: ``+1`` if the paper says ``effect > min_effect``, ``-1`` if ``<``.
        alpha: Family-wise significance level (0.01).
        p_adjusted: ``p_value`` after Holm's correction across the family decided
            together (one report's tests; the finding alone when built alone).
        holds: ``True`` ("yes"), ``False`` ("no") or ``None`` ("undecided").
        numbers: Further numbers behind ``observed`` (JSON-ready).
        p_short: One-sided p-value of "``effect`` falls short of ``min_effect``" (the
            null: it reaches it), before correction.
        p_short_adjusted: ``p_short`` after the same Holm correction.
        replicates: ``[resample]`` the effect's bootstrap replicates, for paired
            contrasts with a control (:func:`contrasts`); not written to JSON.
    """

    key: str
    claim: str
    observed: str
    effect: float
    effect_unit: str
    ci: tuple[float, float]
    p_value: float
    null: str
    null_value: float
    min_effect: float
    direction: int
    alpha: float
    p_adjusted: float
    holds: bool | None
    numbers: dict[str, Any]
    p_short: float = math.nan
    p_short_adjusted: float = math.nan
    replicates: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def verdict(self) -> str:
        """``"yes"``, ``"no"`` or ``"undecided"``."""
        return {True: "yes", False: "no", None: "undecided"}[self.holds]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict of the fields plus the verdict (NaN becomes ``None``)."""
        record = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "replicates"}
        record |= {"ci": list(self.ci), "numbers": dict(self.numbers), "verdict": self.verdict}
        return {k: _json_number(v) for k, v in record.items()}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Finding:
        """Inverse of :meth:`to_json` (``None`` numbers become NaN). A record of an older
        ``metrics.json`` without a test's numbers gets NaN numbers and keeps its verdict."""
        values: dict[str, Any] = {}
        numeric = {"effect", "p_value", "null_value", "min_effect", "alpha", "p_adjusted",
                   "p_short", "p_short_adjusted"}
        for field in dataclasses.fields(cls):
            if field.name == "replicates":
                continue
            value = record.get(field.name)
            if field.name == "ci":
                value = tuple(math.nan if v is None else float(v) for v in (value or (None, None)))
            elif field.name in numeric:
                value = math.nan if value is None else float(value)
            elif field.name == "numbers":
                value = value or {}
            elif field.name in {"effect_unit", "null"}:
                value = value or ""
            elif field.name == "direction":
                value = int(value or 0)
            values[field.name] = value
        return cls(**values)


def _json_number(value: Any) -> Any:
    """NaN and inf floats (also inside lists and dicts) as ``None``, for strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_json_number(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_number(v) for k, v in value.items()}
    return value


def decide(findings: list[Finding], alpha: float = ALPHA) -> list[Finding]:
    """Correct the ``p_value`` and ``p_short`` of ``findings`` together (Holm) and set
    every verdict: ``"yes"`` iff ``p_adjusted <= alpha``, ``"no"`` iff
    ``p_short_adjusted <= alpha`` (module docstring).

    The family is the list given: pass all findings of one report at once. Findings
    without p-values (undecided for lack of data or spread) stay out of the family.
    """
    both = np.array([f.p_value for f in findings] + [f.p_short for f in findings], dtype=float)
    adjusted = holm(both)
    decided = []
    for f, p_yes, p_no in zip(findings, adjusted[: len(findings)], adjusted[len(findings) :], strict=True):
        holds = True if p_yes <= alpha else False if p_no <= alpha else None
        decided.append(dataclasses.replace(
            f, alpha=alpha, p_adjusted=float(p_yes), p_short_adjusted=float(p_no), holds=holds,
        ))
    return decided


def _undecided(key: str, claim: str, reason: str, null: str, min_effect: float, direction: int) -> Finding:
    """A finding that cannot be tested, with the reason as ``observed``."""
    nan = math.nan
    return Finding(
        key, claim, reason, nan, "", (nan, nan), nan, null, nan, min_effect, direction,
        ALPHA, nan, None, {},
    )


def tested(
    key: str,
    claim: str,
    description: str,
    effect: float,
    replicates: np.ndarray,
    *,
    effect_unit: str,
    null: str,
    null_value: float,
    min_effect: float,
    direction: int,
    numbers: dict[str, Any] | None = None,
    null_p_value: float | None = None,
) -> Finding:
    """A finding from its effect and bootstrap replicates, decided on its own (the
    builder of every claim here and of the report's "Beyond the paper" tests).

    ``null_p_value``: the p-value of a permutation test of "no effect at all" in the
    paper's direction, when there is one; the "yes" test must also beat it.
    """
    finite = replicates[np.isfinite(replicates)]
    spread = standard_error(replicates)
    still = not (spread > SPREAD_FLOOR * max(1.0, abs(effect)))
    if not math.isfinite(effect) or still or len(finite) < 0.9 * len(replicates):
        why = "the resamples do not vary" if still else "the effect is undefined on resamples"
        found = _undecided(key, claim, f"{description}; undecided: {why}", null, min_effect, direction)
        return dataclasses.replace(found, effect=float(effect), effect_unit=effect_unit,
                                   numbers=numbers or {}, replicates=replicates)
    ci = basic_interval(effect, finite)
    p_yes = bootstrap_p_value(effect, finite, min_effect, direction)
    if null_p_value is not None:
        p_yes = max(p_yes, null_p_value)
    p_no = bootstrap_p_value(effect, finite, min_effect, -direction)
    observed = (
        f"{description}; {effect_unit} = {effect:+.3g} (95% CI {ci[0]:+.3g} to {ci[1]:+.3g}); "
        f"the paper's direction needs {'>=' if direction > 0 else '<='} {min_effect:+.3g}: "
        f"p = {p_yes:.2g} that it does, {p_no:.2g} that it falls short"
    )
    finding = Finding(
        key, claim, observed, float(effect), effect_unit, ci, p_yes, null, float(null_value),
        float(min_effect), direction, ALPHA, p_yes, None, numbers or {}, p_no, p_no, replicates,
    )
    return decide([finding])[0]


# --------------------------------------------------------------------------- designs


def _thirds(n: int) -> tuple[slice, slice]:
    """The first and the last third of ``n`` steps (at least one step each)."""
    size = max(1, int(round(n / 3)))
    return slice(0, size), slice(n - size, n)


def _third_ratio(values: np.ndarray, closeness: bool = False) -> np.ndarray:
    """``log(mean of the last third / mean of the first third)`` of every row of
    ``values [..., step]``; with ``closeness``, of the distances from 1 the other way
    round, ``log((1 - first) / (1 - last))`` (positive when the last third is nearer 1)."""
    first, last = _thirds(values.shape[-1])
    a, b = values[..., first].mean(-1), values[..., last].mean(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log((1 - a) / (1 - b)) if closeness else np.log(b / a)


def _trend(
    key: str, claim: str, point: np.ndarray, replicates: np.ndarray, name: str,
    closeness: bool = False,
) -> Finding:
    """A measure rises with depth: its last third against its first third (log ratio).

    Thirds of a pre/mid stack hold both sites, so a zig-zag between them does not move
    the effect; ``closeness`` compares distances from 1 (correlations, cosines)."""
    null = (
        f"{name} is no larger (nearer 1) in the last third of depth than in the first by a "
        f"factor {math.exp(MIN_LOG_RATIO):.2f}; p from the bootstrap over texts"
    )
    if len(point) < 3:
        return _undecided(key, claim, "too few sublayers for thirds", null, MIN_LOG_RATIO, 1)
    first, last = _thirds(len(point))
    description = (
        f"{name}: {point[first].mean():.3g} over the first third, {point[last].mean():.3g} over "
        f"the last ({len(point)} steps, range {np.nanmin(point):.3g}-{np.nanmax(point):.3g})"
    )
    unit = "log((1 - first third) / (1 - last third))" if closeness else "log(last third / first third)"
    return tested(
        key, claim, description, float(_third_ratio(point, closeness)),
        _third_ratio(replicates, closeness), effect_unit=unit, null=null, null_value=0.0,
        min_effect=MIN_LOG_RATIO, direction=1, numbers={"values": point.tolist()},
    )


def _within_steps(kinds: list[str]) -> list[int]:
    """Within-layer transitions with a cross-layer transition on both sides."""
    return [
        t for t in range(1, len(kinds) - 1)
        if kinds[t] == "within" and kinds[t - 1] == "cross" and kinds[t + 1] == "cross"
    ]


def _paired_layers(kinds: list[str]) -> list[tuple[int, int]]:
    """(within transition, following cross transition) index pairs, one per layer."""
    return [
        (t, t + 1)
        for t in range(len(kinds) - 1)
        if kinds[t] == "within" and kinds[t + 1] == "cross"
    ]


def _within_vs_cross(
    key: str,
    claim: str,
    point: np.ndarray,
    replicates: np.ndarray,
    kinds: list[str],
    contrast: Callable[[np.ndarray, np.ndarray], np.ndarray],
    effect_unit: str,
    name: str,
) -> Finding:
    """Mean over layers of ``contrast(within, mean of both neighbouring cross steps)``,
    positive in the paper's direction; a linear trend over depth cancels."""
    null = (
        f"within-layer steps differ from the mean of their two neighbouring cross-layer "
        f"steps in {name} by less than a factor {math.exp(MIN_LOG_RATIO):.2f}; p from the "
        "bootstrap over texts"
    )
    within = _within_steps(kinds)
    if not within:
        return _undecided(key, claim, "no within-layer step between two cross-layer steps", null, MIN_LOG_RATIO, 1)
    before, after = [t - 1 for t in within], [t + 1 for t in within]

    def effect(values: np.ndarray) -> np.ndarray:
        cross = (values[..., before] + values[..., after]) / 2
        return contrast(values[..., within], cross)

    per_layer = effect(point)
    description = f"the paper's direction in {int((per_layer > 0).sum())}/{len(within)} layers"
    return tested(
        key, claim, description, float(np.mean(per_layer)), effect(replicates).mean(axis=-1),
        effect_unit=effect_unit, null=null, null_value=0.0, min_effect=MIN_LOG_RATIO,
        direction=1,
        numbers={"within": point[within].tolist(), "cross_neighbours": ((point[before] + point[after]) / 2).tolist()},
    )


def _log_distance_ratio(within: np.ndarray, cross: np.ndarray) -> np.ndarray:
    """``log((1 - cross) / (1 - within))``: how many times further from a perfect match
    (1) the cross-layer step is; positive when within-layer is closer to 1."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log((1 - cross) / (1 - within))


def _log_speed_ratio(within: np.ndarray, cross: np.ndarray) -> np.ndarray:
    """``log(cross / within)``: positive when the cross-layer step is longer."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log(cross / within)


def _early(n_transitions: int) -> int:
    """Number of transitions in the first third of depth (at least 1)."""
    return max(1, int(round(EARLY_THIRD * n_transitions)))


# --------------------------------------------------------------------------- Fig 1-2


def activation_growth(dyn: DynamicsCache, resampler: Resampler) -> Finding:
    """Fig 1B: mean |activation| (per sample, over units) is larger in the last third of
    depth than in the first."""
    point, replicates = resampler.means(dyn.resid.abs().double().mean(-1))
    return _trend(
        "activation_growth", CLAIMS["activation_growth"], point, replicates,
        "mean |activation| per sublayer",
    )


def _text_means(dyn: DynamicsCache, units: Tensor) -> tuple[Tensor, Tensor]:
    """``(texts, means [text, sublayer * unit])``: each text's mean over its samples of
    the ``units`` (float32), texts in ascending order of ``text_index``."""
    texts, inverse = torch.unique(dyn.text_index.cpu(), return_inverse=True)
    flat = rearrange(dyn.resid[:, :, units].detach().cpu().float(), "b s u -> b (s u)")
    sums = torch.zeros(len(texts), flat.shape[1]).index_add_(0, inverse, flat)
    counts = torch.bincount(inverse, minlength=len(texts)).float()
    return texts, sums / counts[:, None]


def _sign_kappa(mean: Tensor, second: Tensor, n_texts: int, n_sublayers: int) -> tuple[Tensor, Tensor]:
    """``(kappa, net)`` per row: Cohen's kappa of the signs of significantly non-zero cell
    means, and the net share of persistent cells.

    ``mean``, ``second``: ``[row, sublayer * unit]`` means over texts of the text means
    and of their squares. A cell takes part when ``|t| > SIGN_Z`` (``t`` the mean over its
    standard error across texts); within each unit every pair of such cells (sublayers)
    agrees or not in sign; chance agreement ``q^2 + (1 - q)^2`` from the fraction ``q``
    of positive cells among them (rows without a pair: kappa 0, no evidence). ``net``:
    ``sum over units |sum over its significant cells of t| / #cells``, the mean strength
    of persistent signs: large when many cells are far from 0 with their unit's sign.
    (Counts of cells would not do for the sign-flip null: a flip of whole texts whose
    signs mostly agree makes every cell significant at once with ``|t|`` near the
    threshold, so ``|t|`` has to count.)
    """
    variance = (second - mean.square()).clamp(min=0) * n_texts / max(n_texts - 1, 1)
    t = mean / (variance / n_texts).sqrt().clamp(min=torch.finfo(mean.dtype).tiny)
    significant = rearrange(t.abs() > SIGN_Z, "r (s u) -> r s u", s=n_sublayers).double()
    positive = significant * rearrange(mean > 0, "r (s u) -> r s u", s=n_sublayers).double()
    n, k = significant.sum(1), positive.sum(1)  # [row, unit]
    pairs = (n * (n - 1) / 2).sum(-1)
    agree = ((k * (k - 1) + (n - k) * (n - k - 1)) / 2).sum(-1)
    q = k.sum(-1) / n.sum(-1).clamp(min=1)
    chance = q.square() + (1 - q).square()
    kappa = (agree / pairs.clamp(min=1) - chance) / (1 - chance).clamp(min=1e-12)
    signed_t = rearrange(t.double(), "r (s u) -> r s u", s=n_sublayers) * significant
    net = signed_t.sum(1).abs().sum(-1) / mean.shape[-1]
    return torch.where(pairs > 0, kappa, torch.zeros_like(kappa)), net


def sign_persistence(dyn: DynamicsCache, n_resamples: int = N_RESAMPLES, seed: int = 0) -> Finding:
    """Fig 1B: units whose means are non-zero keep their sign across depth.

    Effect: Cohen's kappa of sign agreement between the sublayers of a unit, over the
    cells (sublayer, unit) whose mean over texts is significantly non-zero
    (:func:`_sign_kappa`), on :data:`BOOTSTRAP_UNITS` seeded units. The "yes" test must
    beat two nulls: the bootstrap against :data:`MIN_KAPPA`, and sign flips of whole
    texts (every cell of a text multiplied by one random sign: the null "every mean is
    0", which keeps the dependence between a text's sublayers: a random walk's means
    are 0, yet where one cell's mean strays from 0 its neighbours stray the same way) on
    the net strength of persistent signs (kappa itself does not change when every sign
    flips, so a flip that keeps the cells significant keeps it).
    """
    claim = CLAIMS["sign_persistence"]
    null = (
        "every cell's mean is 0 (text-level sign flips of the net persistent |t| per "
        f"cell, permutation p) or the agreement of significant cells' signs is below kappa "
        f"{MIN_KAPPA} (bootstrap over texts)"
    )
    n_sublayers = dyn.resid.shape[1]
    if n_sublayers < 2:
        return _undecided("sign_persistence", claim, "fewer than two sublayers", null, MIN_KAPPA, 1)
    units = _unit_subset(dyn.resid.shape[-1], seed)
    texts, x = _text_means(dyn, units)
    n_texts = len(texts)
    square = x.square()
    second = square.mean(0, keepdim=True)
    kappa, net = (float(v[0]) for v in _sign_kappa(x.mean(0, keepdim=True), second, n_texts, n_sublayers))
    weights = bootstrap_weights(texts, n_resamples, seed).float()
    rng = np.random.default_rng([seed, 4])
    replicates, flipped = [], []
    for start in range(0, n_resamples, ROTATION_CHUNK):
        w = weights[start : start + ROTATION_CHUNK]
        replicates.append(_sign_kappa(w @ x, w @ square, n_texts, n_sublayers)[0])
        signs = torch.from_numpy(rng.choice([-1.0, 1.0], size=(len(w), n_texts))).float()
        flipped.append(_sign_kappa(signs @ x / n_texts, second, n_texts, n_sublayers)[1])
    null_net = torch.cat(flipped).numpy()
    cells = int((_significant_cells(x, n_texts)).sum())
    return tested(
        "sign_persistence", claim,
        f"{cells} of {x.shape[1]} cells ({len(units)} units x {n_sublayers} sublayers) have "
        f"means non-zero at |t| > {SIGN_Z:.2f}, net persistent |t| per cell {net:.3g} (under text "
        f"sign flips {null_net.mean():.3f} on average)",
        kappa, torch.cat(replicates).numpy(), effect_unit="Cohen's kappa of significant cells' signs",
        null=null, null_value=0.0, min_effect=MIN_KAPPA, direction=1,
        numbers={"significant_cells": cells, "units": len(units), "net_persistent": net,
                 "flip_null_mean": float(null_net.mean())},
        null_p_value=permutation_p_value(net, null_net, 1),
    )


def _significant_cells(x: Tensor, n_texts: int) -> Tensor:
    """``[cell]`` whether each cell's mean over the text means ``x`` is non-zero at SIGN_Z."""
    mean, sd = x.mean(0), x.std(0)
    return mean.abs() > SIGN_Z * sd / math.sqrt(n_texts)


def high_correlation(point: np.ndarray, replicates: np.ndarray) -> Finding:
    """Fig 1C: mean per-unit r over the first third of transitions is above 0.8."""
    early = _early(len(point))
    return tested(
        "high_correlation",
        CLAIMS["high_correlation"],
        f"mean per-unit r over the first {early} transitions",
        float(point[:early].mean()), replicates[:, :early].mean(axis=1),
        effect_unit="mean per-unit Pearson r, first third",
        null=(
            f"the early mean per-unit r is at most the paper's {HIGH_CORRELATION} (or at "
            "least it, for the test of falling short); p from the linearised bootstrap over texts"
        ),
        null_value=HIGH_CORRELATION, min_effect=HIGH_CORRELATION, direction=1,
        numbers={"mean_r_per_transition": point.tolist()},
    )


def velocity_acceleration(point: np.ndarray, replicates: np.ndarray) -> Finding:
    """Fig 1F: flat early, faster in the last third.

    Effect: ``log(v_last / v_middle) - |log(v_middle / v_first)|`` over the mean speeds of
    the three thirds of the transitions: the signed late change of speed (a late
    slow-down is negative) minus the early change in either direction. It is large only
    when the stream is about flat over the first two thirds *and* speeds up in the last
    one; a constant rate of change (a pure exponential growth) gives 0 or less.
    """
    claim = CLAIMS["velocity_acceleration"]
    null = (
        f"the late speed-up exceeds the early change of speed by less than "
        f"log {math.exp(MIN_LOG_RATIO):.2f}; p from the bootstrap over texts"
    )
    n = len(point)
    first, cut = int(round(n / 3)), int(round(LAST_THIRD * n))
    if first < 1 or cut <= first or cut >= n:
        return _undecided("velocity_acceleration", claim, "too few transitions for thirds", null, MIN_LOG_RATIO, 1)

    def contrast(v: np.ndarray) -> np.ndarray:
        early, middle, late = v[..., :first].mean(-1), v[..., first:cut].mean(-1), v[..., cut:].mean(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.log(late / middle) - np.abs(np.log(middle / early))

    thirds = [float(point[s].mean()) for s in (slice(0, first), slice(first, cut), slice(cut, n))]
    return tested(
        "velocity_acceleration", claim,
        f"mean velocity {thirds[0]:.3g} / {thirds[1]:.3g} / {thirds[2]:.3g} over the three thirds",
        float(contrast(point)), contrast(replicates),
        effect_unit="log(late / middle speed) - |log(middle / first)|", null=null,
        null_value=0.0, min_effect=MIN_LOG_RATIO, direction=1,
        numbers={"per_transition": point.tolist(), "thirds": thirds},
    )


def information_falls(point: np.ndarray, replicates: np.ndarray, kinds: list[str]) -> Finding:
    """Fig 1G-H: MI of successive sublayers drops over the early layers.

    MI alternates between within- and cross-layer transitions, so layers are compared
    whole: the effect is the mean MI of the first layer's two transitions minus that of
    the layer that ends the first third of depth (at least the second layer), in nats;
    positive is a drop.
    """
    claim = CLAIMS["information_falls"]
    null = (
        f"MI drops by less than {MIN_MI_DIFFERENCE} nats from the first layer to the end of "
        "the early layers; p from the linearised bootstrap over texts"
    )
    pairs = _paired_layers(kinds)
    if len(pairs) < 2:
        return _undecided("information_falls", claim, "fewer than two layers", null, MIN_MI_DIFFERENCE, 1)
    last = max(1, int(round(EARLY_THIRD * len(pairs))) - 1)
    first_layer, last_layer = list(pairs[0]), list(pairs[last])

    def drop(mi: np.ndarray) -> np.ndarray:
        return mi[..., first_layer].mean(-1) - mi[..., last_layer].mean(-1)

    return tested(
        "information_falls", claim,
        f"mean MI {point[first_layer].mean():.3g} nats in layer 0, "
        f"{point[last_layer].mean():.3g} in layer {last}",
        float(drop(point)), drop(replicates),
        effect_unit=f"MI of layer 0 minus MI of layer {last} (nats)", null=null,
        null_value=0.0, min_effect=MIN_MI_DIFFERENCE, direction=1,
        numbers={"mean_mi_per_transition": point.tolist()},
    )




def information_drop_at_cross(point: np.ndarray, replicates: np.ndarray, kinds: list[str]) -> Finding:
    """Fig 1H: in early layers, MI dips at cross-layer steps more than at within-layer ones.

    The second difference of the MI curve at a step, ``I(t - 1) - 2 I(t) + I(t + 1)``, is
    positive where the curve dips. Effect: half the mean second difference at the early
    cross-layer steps minus that at the early within-layer steps (each with both
    neighbours), in nats. A convex (or any smooth) curve has about equal second
    differences at both kinds and cancels; a zig-zag whose cross steps lie ``a`` nats
    below its within steps gives ``2 a``.
    """
    claim = CLAIMS["information_drop_at_cross"]
    null = (
        f"MI dips at early cross-layer steps by less than {MIN_MI_DIFFERENCE} nats more than "
        "at within-layer ones; p from the linearised bootstrap over texts"
    )
    early = _early(len(point))
    inner = [t for t in range(1, min(early + 1, len(kinds) - 1))]
    cross = [t for t in inner if kinds[t] == "cross"]
    within = [t for t in inner if kinds[t] == "within"]
    if not cross or not within:
        return _undecided("information_drop_at_cross", claim, "no early cross- and within-layer steps with both neighbours", null, MIN_MI_DIFFERENCE, 1)

    def dip(mi: np.ndarray, steps: list[int]) -> np.ndarray:
        at = np.array(steps)
        return (mi[..., at - 1] - 2 * mi[..., at] + mi[..., at + 1]).mean(-1)

    def contrast(mi: np.ndarray) -> np.ndarray:
        return (dip(mi, cross) - dip(mi, within)) / 2

    return tested(
        "information_drop_at_cross", claim,
        f"mean second difference {dip(point, cross):+.3g} nats at {len(cross)} early cross "
        f"steps, {dip(point, within):+.3g} at {len(within)} within steps",
        float(contrast(point)), contrast(replicates),
        effect_unit="(cross minus within second difference) / 2 (nats)", null=null,
        null_value=0.0, min_effect=MIN_MI_DIFFERENCE, direction=1,
    )


def _turning(trajectories: Tensor, signed: bool, gradient: str) -> Tensor:
    """``[row]`` how much the units of each trajectory ``[row, sublayer, unit]`` turn
    together: signed, ``|mean over units of the signed turns|`` (a smooth oscillation
    turns every unit the same way, clockwise; turns of noise cancel); unsigned, the mean
    over units of the absolute turns."""
    turns = metrics.rotations(trajectories, trajectory="sample", signed=signed, gradient=gradient)
    return turns.mean(-1).abs().double().cpu() if signed else turns.mean(-1).double().cpu()


def _shared_order_null(
    trajectory: Tensor, n_shuffles: int, seed: int, signed: bool, gradient: str
) -> np.ndarray:
    """:func:`_turning` of ``trajectory [sublayer, unit]`` after each of ``n_shuffles``
    permutations of the sublayers, one permutation shared by all units (numpy PCG64 from
    ``seed``): ``[shuffle]`` float64."""
    rng = np.random.default_rng([seed, 5])
    orders = torch.from_numpy(np.stack([rng.permutation(len(trajectory)) for _ in range(n_shuffles)]))
    return torch.cat([
        _turning(trajectory[orders[start : start + ROTATION_CHUNK]], signed, gradient)
        for start in range(0, n_shuffles, ROTATION_CHUNK)
    ]).numpy()


def rotations_exceed_null(
    dyn: DynamicsCache, null: metrics.RotationNull | None, resampler: Resampler, seed: int = 0,
    n_shuffles: int = N_RESAMPLES,
) -> Finding:
    """Fig 2: units rotate more in the true sublayer order than in shuffled orders.

    On :data:`ROTATION_UNITS` seeded units (all when there are fewer): effect, how much
    the units of the mean trajectory turn together (:func:`_turning`: the absolute mean
    over units of the signed turns, as the paper's 10.74 against ~0) minus its mean
    under ``n_shuffles`` shuffles of the sublayer order, *one shuffle shared by all units*, so
    that units correlated with each other stay so (the per-unit shuffles of ``null``
    are not used: they break the units' correlation, and made rank-1 units iid over
    depth "rotate"; ``null`` gives the count settings ``signed`` and ``gradient``,
    ``None`` the defaults). The "yes" test must beat the shuffles (permutation p) and
    the bootstrap over texts against :data:`MIN_EXCESS_TURNS`.

    Limitation of the interval: noise left in the mean trajectory adds small turns, so
    its count is biased upward, and a resampled mean carries that noise twice; the
    basic interval reflects that bias back below the estimate. Read the interval as the
    count's spread under resampling texts.
    """
    settings = {"signed": getattr(null, "signed", True), "gradient": getattr(null, "gradient", "central")}
    units = _unit_subset(dyn.resid.shape[-1], seed, ROTATION_UNITS)
    resid = dyn.resid[:, :, units]
    mean_trajectory = resid.double().mean(0)
    observed = float(_turning(mean_trajectory[None], **settings)[0])
    shuffled = _shared_order_null(mean_trajectory, n_shuffles, seed, **settings)
    replicates = torch.cat([_turning(m.double(), **settings) for m in resampler.mean_chunks(resid)]).numpy()
    effect = observed - float(shuffled.mean())
    kind = "signed" if settings["signed"] else "absolute"
    return tested(
        "rotations_exceed_null",
        CLAIMS["rotations_exceed_null"],
        f"units turn together by {observed:.2f} ({kind}) vs {shuffled.mean():.2f} under "
        f"{n_shuffles} shuffles of the sublayer order shared by all units ({len(units)} units)",
        effect, replicates - float(shuffled.mean()),
        effect_unit="|mean signed turns| minus its shuffled mean (turns)" if settings["signed"]
        else "mean turns minus the shuffled mean (turns)",
        null=(
            "the sublayer order does not matter (the true order turns no more than shuffled "
            f"orders shared by all units; permutation p) or the excess is below "
            f"{MIN_EXCESS_TURNS:g} turn (bootstrap over texts)"
        ),
        null_value=0.0, min_effect=MIN_EXCESS_TURNS, direction=1,
        numbers={"observed": observed, "null_mean": float(shuffled.mean()),
                 "units": len(units), **settings},
        null_p_value=permutation_p_value(observed, shuffled, 1),
    )


def _information_terms(
    dyn: DynamicsCache, mutual_information: Tensor | None, resampler: Resampler, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(point [transition], replicates)`` of the mean MI over units per transition."""
    if mutual_information is None:
        return resampler.means(mutual_information_per_sample(dyn.resid))
    point = mutual_information.double().nanmean(-1).cpu().numpy()
    d_model = dyn.resid.shape[-1]
    terms = mutual_information_per_sample(
        dyn.resid[:, :, _unit_subset(d_model, seed)], method=MI_BOOTSTRAP_METHOD
    )
    subset, replicates = resampler.means(terms)
    return point, point + (replicates - subset)


def _unit_subset(d_model: int, seed: int, size: int = BOOTSTRAP_UNITS) -> Tensor:
    """Sorted indices of ``size`` units drawn without replacement (seeded; all if fewer)."""
    units = np.random.default_rng(seed).permutation(d_model)[: min(size, d_model)]
    return torch.from_numpy(np.sort(units))


def _too_few_texts(dyn: DynamicsCache) -> str | None:
    """Why no verdict is possible on ``dyn``, or ``None``."""
    n_texts = len(torch.unique(dyn.text_index))
    if n_texts < MIN_TEXTS:
        return f"only {n_texts} texts; at least {MIN_TEXTS} are needed for a bootstrap interval"
    return None


DYNAMICS_KEYS = tuple(CLAIMS)[:12]  # the Figure 1-2 findings


def dynamics_findings(
    dyn: DynamicsCache,
    mutual_information: Tensor | None = None,
    rotation_null: metrics.RotationNull | None = None,
    *,
    unit_correlation: Tensor | None = None,
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
    alpha: float = ALPHA,
) -> list[Finding]:
    """Every Figure 1-2 finding of the paper, tested on ``dyn`` and decided together.

    Args:
        dyn: Trajectories of the original (unshuffled) texts.
        mutual_information: Precomputed ``metrics.mutual_information(dyn.resid, ...)``
            (the report's binned estimate); its interval then comes from
            :data:`BOOTSTRAP_UNITS` seeded units. ``None``: the exact KDE per sample.
        rotation_null: A ``metrics.rotation_null(dyn.resid)``, for its count settings
            (``signed``, ``gradient``); ``None``: the defaults.
        unit_correlation: Precomputed ``metrics.unit_correlation(dyn.resid)``.
        seed: Seed of the bootstrap, the permutations and the unit subsets.
        n_resamples: Bootstrap resamples (and permutations) per test.
        alpha: Family-wise level of Holm's correction over these findings.

    Returns:
        Findings in the paper's order (:data:`DYNAMICS_KEYS`). To decide them together
        with other findings of the same report, pass the union to :func:`decide`.
    """
    reason = _too_few_texts(dyn)
    if reason is not None:
        return [_undecided(key, CLAIMS[key], reason, "", math.nan, 1) for key in DYNAMICS_KEYS]
    resampler = Resampler.of(dyn.text_index, n_resamples, seed)
    kinds = dyn.transition_kinds
    correlation = resampler.means(unit_correlation_per_sample(dyn.resid, unit_correlation))
    cosine = resampler.means(metrics.cosine_similarity(dyn.resid))
    speed = resampler.means(metrics.velocity(dyn.resid))
    information = _information_terms(dyn, mutual_information, resampler, seed)
    found = [
        activation_growth(dyn, resampler),
        sign_persistence(dyn, n_resamples, seed),
        high_correlation(*correlation),
        _trend("correlation_rises", CLAIMS["correlation_rises"], *correlation, "mean per-unit r", closeness=True),
        _within_vs_cross(
            "correlation_within_above_cross",
            CLAIMS["correlation_within_above_cross"],
            *correlation, kinds, _log_distance_ratio,
            "log((1 - r cross) / (1 - r within)), cross the mean of both neighbours", "mean r",
        ),
        _trend("cosine_rises", CLAIMS["cosine_rises"], *cosine, "mean cosine similarity", closeness=True),
        _within_vs_cross(
            "cosine_within_above_cross",
            CLAIMS["cosine_within_above_cross"],
            *cosine, kinds, _log_distance_ratio,
            "log((1 - cos cross) / (1 - cos within)), cross the mean of both neighbours", "cosine",
        ),
        velocity_acceleration(*speed),
        _within_vs_cross(
            "velocity_cross_above_within",
            CLAIMS["velocity_cross_above_within"],
            *speed, kinds, _log_speed_ratio,
            "log(v cross / v within), cross the mean of both neighbours", "velocity",
        ),
        information_falls(*information, kinds),
        information_drop_at_cross(*information, kinds),
        rotations_exceed_null(dyn, rotation_null, resampler, seed, n_resamples),
    ]
    return decide(found, alpha)


# --------------------------------------------------------------------------- Fig 4


def _held_out(dyn: DynamicsCache, n_components: int, seed: int) -> tuple[PCA, DynamicsCache]:
    """A PCA fitted on one seeded half of the texts, and the other half's trajectories.

    Axes fitted on the texts they then describe explain those texts' variance better than
    new texts' (and the gain can follow depth): on a random walk the in-sample curve of
    Fig 4C rises while a held-out one is flat at ``k / d_model``."""
    texts = np.unique(dyn.text_index.cpu().numpy())
    fit = np.random.default_rng([seed, 6]).permutation(texts)[: len(texts) // 2]
    in_fit = torch.from_numpy(np.isin(dyn.text_index.cpu().numpy(), fit))
    train = rearrange(dyn.resid[in_fit].double().cpu(), "b s d -> (b s) d").numpy()
    k = min(n_components, *train.shape)
    return PCA(n_components=k, random_state=seed).fit(train), dyn.select(~in_fit)


def variance_concentrates_with_depth(
    pca: PCATrajectories, dyn: DynamicsCache, n_resamples: int = N_RESAMPLES, seed: int = 0
) -> Finding:
    """Fig 4C: later sublayers are better explained by shared principal components.

    ``pca.n_components`` axes are refitted on half of the texts (:func:`_held_out`); per
    sublayer of the other half, the variance they keep around the fitted mean,
    ``sum_i ||coords_i||^2 / sum_i ||x_i - mean||^2``, resampled over those texts as a
    ratio of two means; the trend is its last third against its first third.
    """
    fitted, held = _held_out(dyn, pca.n_components, seed)
    centred = held.resid.double().cpu() - torch.from_numpy(fitted.mean_)
    kept = (centred @ torch.from_numpy(fitted.components_).T).square().sum(-1)
    spread = centred.square().sum(-1)
    resampler = Resampler.of(held.text_index, n_resamples, seed)
    (kept_point, kept_reps), (spread_point, spread_reps) = resampler.means(kept), resampler.means(spread)
    return _trend(
        "variance_concentrates", CLAIMS["variance_concentrates"],
        kept_point / spread_point, kept_reps / spread_reps,
        f"held-out explained variance from {fitted.n_components_} components",
    )


def steps_lengthen_in_pca_plane(
    pca: PCATrajectories, dyn: DynamicsCache, n_resamples: int = N_RESAMPLES, seed: int = 0
) -> Finding:
    """Fig 4A: trajectories take longer steps later in depth in the PC1-PC2 plane (axes
    refitted on half of the texts, steps measured on the other half)."""
    fitted, held = _held_out(dyn, 2, seed)
    plane = (held.resid.double().cpu() - torch.from_numpy(fitted.mean_)) @ torch.from_numpy(fitted.components_).T
    steps = (plane[:, 1:] - plane[:, :-1]).norm(dim=-1)
    resampler = Resampler.of(held.text_index, n_resamples, seed)
    return _trend(
        "pca_steps_lengthen", CLAIMS["pca_steps_lengthen"], *resampler.means(steps),
        "mean step length in a held-out PC1-PC2 plane",
    )


def _prompt_pulls(sweep: TeleportSweep) -> np.ndarray:
    """``[layer]`` mean pull per sublayer of one prompt's teleports, over finite grid points."""
    pulls = []
    for result in sweep.results:
        recovery = result.recovery()
        steps = max(1, recovery.normalised.shape[1] - 1)
        pull = -torch.log(recovery.normalised[:, -1].double().cpu()) / steps
        pulls.append(float(pull[torch.isfinite(pull)].mean()))
    return np.array(pulls)


def mid_layers_attract(
    sweep: TeleportSweep | Sequence[TeleportSweep] | None,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> Finding:
    """Fig 4D: mid-layer teleports are pulled back faster than first- and last-layer ones.

    Layers are followed for different numbers of sublayers, so they are compared by the
    pull *per sublayer*: ``-log(normalised distance at the end) / steps`` per grid point
    (0: no pull; 0.1: about 10 % closer per sublayer), averaged over a prompt's grid
    points. Effect: the mean pull of the middle layers minus the stronger of the first
    and last layers' pulls. The grid points of one prompt are neighbours whose pulls
    move together, so the unit is the prompt: ``sweep`` is one teleport sweep per
    prompt (the same layers), at least :data:`MIN_PROMPTS`, resampled by the bootstrap.
    ``None`` or fewer prompts: undecided.
    """
    claim = CLAIMS["mid_layers_attract"]
    null = (
        f"middle layers pull teleported points back less than {MIN_LOG_PULL} per sublayer "
        "faster than the faster of the first and last layers; p from the bootstrap over prompts"
    )
    sweeps = [] if sweep is None else [sweep] if hasattr(sweep, "results") else list(sweep)
    layers = {tuple(s.layers) for s in sweeps}
    if len(sweeps) < MIN_PROMPTS or len(layers) != 1 or len(next(iter(layers))) < 3:
        reason = (
            f"teleports at {len(sweeps)} prompt(s); at least {MIN_PROMPTS} prompts with the "
            "same three or more layers are needed (grid points of one prompt are not independent)"
        )
        return _undecided("mid_layers_attract", claim, reason, null, MIN_LOG_PULL, 1)
    pull = np.stack([_prompt_pulls(s) for s in sweeps])  # [prompt, layer]
    resampler = Resampler.of(torch.arange(len(pull)), n_resamples, seed)
    point, replicates = resampler.means(torch.from_numpy(pull))

    def contrast(p: np.ndarray) -> np.ndarray:
        return p[..., 1:-1].mean(-1) - np.maximum(p[..., 0], p[..., -1])

    layer_list = sweeps[0].layers
    listing = ", ".join(f"layer {layer}: {v:.3f}" for layer, v in zip(layer_list, point, strict=True))
    return tested(
        "mid_layers_attract", claim, f"mean pull per sublayer over {len(pull)} prompts: {listing}",
        float(contrast(point)), contrast(replicates),
        effect_unit="middle minus strongest edge pull (log distance per sublayer)",
        null=null, null_value=0.0, min_effect=MIN_LOG_PULL, direction=1,
        numbers={"layers": list(layer_list), "pull_per_sublayer": point.tolist(), "n_prompts": len(pull)},
    )


TRAJECTORY_KEYS = tuple(CLAIMS)[12:]  # the Figure 4 findings


def trajectory_findings(
    pca: PCATrajectories,
    sweep: TeleportSweep | Sequence[TeleportSweep] | None,
    dyn: DynamicsCache,
    *,
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
    alpha: float = ALPHA,
) -> list[Finding]:
    """The Figure 4 findings, tested on ``dyn`` (PCA axes refitted on half of its texts,
    with ``pca``'s number of components) and on teleport sweeps of its model, one per
    prompt (``None``: the teleport finding is undecided). Decided together (Holm); to
    decide them with a report's other findings, pass the union to :func:`decide`.
    """
    if pca.trajectories.shape[:2] != dyn.resid.shape[:2]:
        raise DynamicsInputError(
            "pca must be fitted on dyn: pca.trajectories has [batch, sublayer] "
            f"{tuple(pca.trajectories.shape[:2])}, dyn.resid {tuple(dyn.resid.shape[:2])}"
        )
    reason = _too_few_texts(dyn)
    if reason is not None:
        found = [_undecided(key, CLAIMS[key], reason, "", math.nan, 1) for key in TRAJECTORY_KEYS[:2]]
    else:
        found = [
            variance_concentrates_with_depth(pca, dyn, n_resamples, seed),
            steps_lengthen_in_pca_plane(pca, dyn, n_resamples, seed),
        ]
    return decide(found + [mid_layers_attract(sweep, n_resamples, seed)], alpha)


# --------------------------------------------------------------------------- controls


CONTROL_MARGIN = {"high_correlation": 0.05}  # a level finding: 0.05 of r is a difference
CONTRAST_VERDICTS = ("higher", "lower", "same", "undecided")


@dataclass(frozen=True)
class Contrast:
    """One finding's effect on the original texts minus its effect on a matched control.

    The control runs the same texts (token-shuffled text through the same model, or the
    same text through a random-weight twin), so both effects are resampled with the same
    bootstrap draws of texts: the replicates of the difference are paired.

    Attributes:
        key: The finding's key.
        control: ``"shuffled"`` or ``"random_twin"``.
        effect: Original minus control, in the finding's ``effect_unit``.
        ci: 95 % basic bootstrap interval of ``effect``.
        p_value: Two-sided bootstrap p-value of "no difference", before correction.
        p_adjusted: Holm-corrected over the family (one control, all findings).
        margin: The smallest difference that matters (the finding's minimum effect).
        verdict: ``"same"`` when the interval lies inside ``+-margin`` (equivalence),
            else ``"higher"`` / ``"lower"`` when ``p_adjusted <= alpha``, else
            ``"undecided"`` (also when either effect is undefined).
    """

    key: str
    control: str
    effect: float
    ci: tuple[float, float]
    p_value: float
    p_adjusted: float
    margin: float
    verdict: str

    def to_json(self) -> dict[str, Any]:
        """``{key, control, effect, ci, p_value, p_adjusted, verdict, margin}``, NaN as ``None``."""
        return _json_number({
            "key": self.key, "control": self.control, "effect": self.effect, "ci": list(self.ci),
            "p_value": self.p_value, "p_adjusted": self.p_adjusted, "verdict": self.verdict,
            "margin": self.margin,
        })

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Contrast:
        """Inverse of :meth:`to_json` (``None`` numbers become NaN; a record written
        before ``control`` was recorded gets ``""``).

        Raises:
            DynamicsInputError: a verdict outside :data:`CONTRAST_VERDICTS`.
        """
        verdict = record.get("verdict")
        if verdict not in CONTRAST_VERDICTS:
            raise DynamicsInputError(f"a contrast's verdict must be one of {list(CONTRAST_VERDICTS)}; got {verdict!r}")
        number = {name: math.nan if record.get(name) is None else float(record[name])
                  for name in ("effect", "p_value", "p_adjusted", "margin")}
        low, high = (math.nan if v is None else float(v) for v in (record.get("ci") or (None, None)))
        return cls(key=str(record["key"]), control=str(record.get("control") or ""), ci=(low, high),
                   verdict=verdict, **number)


def contrasts(
    original: Sequence[Finding], control: Sequence[Finding], name: str, alpha: float = ALPHA
) -> list[Contrast]:
    """Paired contrasts ``original - control`` of findings computed with the same seed and
    resamples on the same texts (:func:`dynamics_findings` / :func:`trajectory_findings`
    of both conditions), Holm-corrected over the family, one per finding of ``original``.

    The difference's replicates are the two findings' replicates subtracted draw by
    draw; its p-value ``(1 + #{|d* - d| >= |d|}) / (1 + B)``; verdicts as
    :class:`Contrast` says.
    """
    by_key = {f.key: f for f in control}
    rows = []
    for finding in original:
        other = by_key.get(finding.key)
        margin = CONTROL_MARGIN.get(finding.key, abs(finding.min_effect))
        a, b = finding.replicates, None if other is None else other.replicates
        if a is None or b is None or len(a) != len(b):
            rows.append((finding.key, math.nan, (math.nan, math.nan), math.nan, margin))
            continue
        effect = finding.effect - other.effect
        replicates = (a - b)[np.isfinite(a - b)]
        if not math.isfinite(effect) or len(replicates) < 0.9 * len(a):
            rows.append((finding.key, effect, (math.nan, math.nan), math.nan, margin))
            continue
        extreme = np.sum(np.abs(replicates - effect) >= abs(effect))
        rows.append((finding.key, effect, basic_interval(effect, replicates),
                     float((1 + extreme) / (1 + len(replicates))), margin))
    adjusted = holm(np.array([row[3] for row in rows], dtype=float))
    decided = []
    for (key, effect, ci, p, margin), p_adj in zip(rows, adjusted, strict=True):
        if not math.isfinite(p_adj):
            verdict = "undecided"
        elif -margin < ci[0] and ci[1] < margin:
            verdict = "same"
        elif p_adj <= alpha:
            verdict = "higher" if effect > 0 else "lower"
        else:
            verdict = "undecided"
        decided.append(Contrast(key, name, float(effect), ci, float(p), float(p_adj), float(margin), verdict))
    return decided
