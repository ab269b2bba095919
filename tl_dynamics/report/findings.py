"""The paper's findings, each a statistical test on this model's numbers.

Fernando & Guitchounts (2025) report qualitative findings on Llama 3.1 8B: activations
grow denser with depth, units keep their sign, successive sublayers correlate more and
more, within-layer transitions are smoother than cross-layer ones, the stream is flat
early and accelerates in the last third, information drops early (most at cross-layer
steps), units rotate in phase space, and mid-layer perturbations are pulled back. Each
function here turns one such sentence into a number, the *effect*, and tests it:

* the effect's 95 % interval is a bootstrap over texts (:mod:`tl_dynamics.stats`:
  texts drawn again with replacement, :data:`~tl_dynamics.stats.N_RESAMPLES`
  resamples, seeded). Effects that are functions of per-sample means are recomputed from
  the resampled means; effects of per-unit correlations and mutual information use each
  sample's linearised share (its influence), the delta-method bootstrap;
* the p-value is two-sided, against a null stated in words on every finding (no trend,
  no difference, chance agreement, the layer-shuffle null), from the normal
  approximation to the bootstrap (or shuffle) distribution; a depth trend's effect is a
  Spearman rho, but its p-value tests the curve's least-squares slope (:func:`_trend`);
* the p-values of one report are corrected together by Holm's method (:func:`decide`);
  the verdict is ``"yes"`` only if the null is rejected at family-wise
  :data:`~tl_dynamics.stats.ALPHA` = 0.01 in the paper's direction *and* the effect
  is at least the finding's minimum size (named constants below, with their reason);
  ``"no"`` if the null is rejected in the opposite direction or the whole interval lies
  short of the minimum size; ``"undecided"`` otherwise, and below :data:`MIN_TEXTS`
  texts, saying why.

Nothing is written by hand: a report states what the data show, including where they
disagree with the paper, and on iid noise no finding comes out "yes" (tests).

Example::

    from tl_dynamics.findings import dynamics_findings
    for finding in dynamics_findings(dyn):         # dyn from tld.collect(...), >= 30 texts
        print(finding.verdict, finding.key, finding.effect, finding.ci, finding.p_adjusted)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor

from tl_dynamics import metrics
from tl_dynamics.stats import (
    ALPHA,
    N_RESAMPLES,
    Resampler,
    holm,
    normal_p_value,
    percentile_interval,
    standard_error,
)
from tl_dynamics.cache import DynamicsCache
from tl_dynamics.errors import DynamicsInputError
from tl_dynamics.report.measures import MI_METHOD
from tl_dynamics.metrics.correlation import unit_correlation_per_sample
from tl_dynamics.metrics.information import mutual_information_per_sample

__all__ = [
    "MIN_TEXTS",
    "HIGH_CORRELATION",
    "LAST_THIRD",
    "EARLY_THIRD",
    "MIN_TREND_RHO",
    "MIN_LOG_RATIO",
    "MIN_KAPPA",
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
]

if TYPE_CHECKING:
    from tl_dynamics.embed import PCATrajectories
    from tl_dynamics.interventions import TeleportSweep

# Fewest texts (or teleport grid points) for a verdict: below ~30 the bootstrap
# distribution of a mean is visibly skewed and its percentile interval under-covers
# (Efron & Tibshirani 1993, section 13.3); findings are "undecided" there.
MIN_TEXTS = 30
HIGH_CORRELATION = 0.8  # the paper: r > 0.8 already in early layers (section 3, Fig 1C)
LAST_THIRD = 2 / 3  # the paper: velocity accelerates "in the last third" of depth (Fig 1F)
EARLY_THIRD = 1 / 3  # "early layers": the first third of depth (Fig 1G-H)
# Minimum effect sizes (the paper's direction must reach them for a "yes"):
# a depth trend is a Spearman rho of at least 0.5, Cohen's (1988) "large" correlation
# (depth orders most pairs of sublayers);
MIN_TREND_RHO = 0.5
# a contrast of two speeds or distances-from-identity is a factor of at least 1.25 (a
# quarter); the paper's curves change by factors of 2 and more (Fig 1E-F);
MIN_LOG_RATIO = math.log(1.25)
# sign agreement beyond chance is a Cohen's kappa of at least 0.4, the lower edge of
# "moderate" agreement (Landis & Koch 1977);
MIN_KAPPA = 0.4
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
        effect_unit: What ``effect`` is, e.g. ``"Spearman rho of ... with depth"``.
        ci: 95 % bootstrap percentile interval of ``effect`` (NaN when undecided early).
        p_value: Two-sided p-value of ``effect == null_value``, before correction.
        null: The null hypothesis in words, and how ``p_value`` was obtained.
        null_value: ``effect`` under the null.
        min_effect: The smallest effect in the paper's direction that counts as the
            finding (a named constant of this module).
        direction: ``+1`` if the paper says ``effect > min_effect``, ``-1`` if ``<``.
        alpha: Family-wise significance level (0.01).
        p_adjusted: ``p_value`` after Holm's correction across the family decided
            together (one report's findings; the finding alone when built alone).
        holds: ``True`` ("yes"), ``False`` ("no") or ``None`` ("undecided").
        numbers: Further numbers behind ``observed`` (JSON-ready).
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

    @property
    def verdict(self) -> str:
        """``"yes"``, ``"no"`` or ``"undecided"``."""
        return {True: "yes", False: "no", None: "undecided"}[self.holds]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict of the fields plus the verdict (NaN becomes ``None``)."""
        record = dataclasses.asdict(self) | {"ci": list(self.ci), "verdict": self.verdict}
        return {k: _json_number(v) for k, v in record.items()}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Finding:
        """Inverse of :meth:`to_json` (``None`` numbers become NaN). A record of an older
        ``metrics.json`` without a test's numbers gets NaN numbers and keeps its verdict."""
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            value = record.get(field.name)
            if field.name == "ci":
                value = tuple(math.nan if v is None else float(v) for v in (value or (None, None)))
            elif field.name in {"effect", "p_value", "null_value", "min_effect", "alpha", "p_adjusted"}:
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


def _verdict(
    effect: float, ci: tuple[float, float], p_adjusted: float, null_value: float,
    min_effect: float, direction: int, alpha: float,
) -> bool | None:
    """The module docstring's rule: yes / no / undecided from the corrected test."""
    if not (math.isfinite(effect) and math.isfinite(p_adjusted)):
        return None
    rejected = p_adjusted <= alpha
    towards = direction * (effect - null_value)
    short = direction * (max(ci, key=lambda c: direction * c) - min_effect) < 0
    if rejected and towards > 0 and direction * (effect - min_effect) >= 0:
        return True
    if (rejected and towards < 0) or short:
        return False
    return None


def decide(findings: list[Finding], alpha: float = ALPHA) -> list[Finding]:
    """Correct the p-values of ``findings`` together (Holm) and set every verdict.

    The family is the list given: pass all findings of one report at once. Findings
    without a p-value (undecided for lack of data) stay out of the family.
    """
    adjusted = holm(np.array([f.p_value for f in findings], dtype=float))
    return [
        dataclasses.replace(
            f,
            alpha=alpha,
            p_adjusted=float(p),
            holds=_verdict(f.effect, f.ci, float(p), f.null_value, f.min_effect, f.direction, alpha),
        )
        for f, p in zip(findings, adjusted, strict=True)
    ]


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
    spread: float | None = None,
    p_value: float | None = None,
) -> Finding:
    """A finding from its effect and bootstrap replicates, decided on its own (the
    builder of every claim here and of the report's "Beyond the paper" tests).

    ``spread`` is the standard error for the p-value (default: the replicates' std);
    ``p_value``, when given, is the p-value of a test computed by the caller instead.
    """
    ci = percentile_interval(replicates)
    if spread is None:
        spread = standard_error(replicates)
    p = normal_p_value(effect, null_value, spread) if p_value is None else p_value
    observed = (
        f"{description}; {effect_unit} = {effect:+.3g} (95% CI {ci[0]:+.3g} to {ci[1]:+.3g}), "
        f"p = {p:.2g} against {null_value:g}; the paper's direction needs "
        f"{'>=' if direction > 0 else '<='} {min_effect:+.3g}"
    )
    finding = Finding(
        key, claim, observed, float(effect), effect_unit, ci, p, null, float(null_value),
        float(min_effect), direction, ALPHA, p, None, numbers or {},
    )
    return decide([finding])[0]


# --------------------------------------------------------------------------- helpers


def _spearman_rows(values: np.ndarray) -> np.ndarray:
    """Spearman rho of every row of ``values [row, step]`` with the step index."""
    values = np.atleast_2d(values)
    ranks = rankdata(values, axis=1)
    ranks = ranks - ranks.mean(axis=1, keepdims=True)
    depth = np.arange(values.shape[1]) - (values.shape[1] - 1) / 2
    norm = np.sqrt((ranks**2).sum(axis=1) * (depth**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ranks * depth).sum(axis=1) / norm
    return np.where(np.isfinite(values).all(axis=1), rho, np.nan)


def _depth_slopes(values: np.ndarray) -> np.ndarray:
    """Least-squares slope of every row of ``values [row, step]`` against the step index
    (units of ``values`` per step)."""
    depth = np.arange(values.shape[-1]) - (values.shape[-1] - 1) / 2
    return np.atleast_2d(values) @ depth / (depth**2).sum()


def _trend(
    key: str, claim: str, point: np.ndarray, replicates: np.ndarray, name: str, direction: int
) -> Finding:
    """Spearman rho of a per-step measure with depth; the paper's sign is ``direction``.

    The effect is the rho of the measure's curve (with its bootstrap interval); the
    p-value tests the curve's least-squares slope over depth against 0, standardised by
    the slope's bootstrap standard error. The slope is a linear function of the curve,
    so its normal approximation holds (central limit over texts) where that of a
    bootstrapped rank correlation does not: rho is bounded and bunches up, and on noise
    its bootstrap spread under-states its spread under the null (p-values ~10x too small
    in the tests).
    """
    null = (
        f"{name} has no linear trend with depth (least-squares slope = 0); "
        "p from the bootstrap standard error of the slope over texts, normal approximation"
    )
    if len(point) < 3:
        return _undecided(key, claim, "too few sublayers for a trend", null, direction * MIN_TREND_RHO, direction)
    if not np.isfinite(point).all() or np.ptp(point) == 0:
        return _undecided(key, claim, f"{name} is constant or undefined across depth", null, direction * MIN_TREND_RHO, direction)
    rho = float(_spearman_rows(point)[0])
    description = (
        f"{name} {'tends to rise' if rho > 0 else 'tends to fall'} over {len(point)} steps "
        f"({point[0]:.3g} first, {point[-1]:.3g} last, range {point.min():.3g}-{point.max():.3g})"
    )
    slope, spread = float(_depth_slopes(point)[0]), standard_error(_depth_slopes(replicates))
    return tested(
        key, claim, description, rho, _spearman_rows(replicates),
        effect_unit="Spearman rho with depth", null=null, null_value=0.0,
        min_effect=direction * MIN_TREND_RHO, direction=direction,
        numbers={"values": point.tolist(), "slope_per_step": slope, "slope_se": spread},
        p_value=normal_p_value(slope, 0.0, spread),
    )


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
    """Mean over layers of ``contrast(within, cross)``, positive in the paper's direction."""
    null = (
        f"within- and cross-layer transitions do not differ in {name} (mean {effect_unit} = 0); "
        "p from the bootstrap over texts, normal approximation"
    )
    pairs = _paired_layers(kinds)
    if not pairs:
        return _undecided(key, claim, "no layer has both a within and a cross transition", null, MIN_LOG_RATIO, 1)
    within, cross = [w for w, _ in pairs], [c for _, c in pairs]
    per_layer = contrast(point[within], point[cross])
    effect = float(np.mean(per_layer))
    holding = int((per_layer > 0).sum())
    description = f"the paper's direction in {holding}/{len(pairs)} layers"
    return tested(
        key, claim, description, effect,
        contrast(replicates[:, within], replicates[:, cross]).mean(axis=1),
        effect_unit=effect_unit, null=null, null_value=0.0, min_effect=MIN_LOG_RATIO,
        direction=1,
        numbers={"within": point[within].tolist(), "cross": point[cross].tolist()},
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
    """Fig 1B: mean |activation| (per sample, over units) rises with depth."""
    point, replicates = resampler.means(dyn.resid.abs().double().mean(-1))
    return _trend(
        "activation_growth",
        CLAIMS["activation_growth"],
        point, replicates, "mean |activation| per sublayer", direction=1,
    )


def _sign_kappa(means: Tensor) -> Tensor:
    """Cohen's kappa of the signs of unit means over all sublayer pairs ``l < m``.

    ``means [resample, sublayer, unit]``. Observed agreement: the fraction of (unit,
    pair) whose two signs match, from the count ``k`` of positive sublayers per unit
    (``C(k, 2) + C(L - k, 2)`` matching pairs). Chance agreement: for each pair,
    ``q_l q_m + (1 - q_l)(1 - q_m)`` with ``q`` the fraction of positive units at a
    sublayer, averaged over pairs. Returns ``[resample]`` float64.
    """
    positive = (means > 0).double()
    n = positive.shape[1]
    pairs = n * (n - 1) / 2
    k = positive.sum(1)
    observed = ((k * (k - 1) + (n - k) * (n - k - 1)) / 2).mean(-1) / pairs
    q = positive.mean(-1)
    chance = (q.sum(1) ** 2 - q.square().sum(1) + (1 - q).sum(1) ** 2 - (1 - q).square().sum(1))
    chance = chance / (2 * pairs)
    return (observed - chance) / (1 - chance)


def sign_persistence(dyn: DynamicsCache, resampler: Resampler) -> Finding:
    """Fig 1B: each unit's mean keeps its sign across depth, beyond chance."""
    claim = CLAIMS["sign_persistence"]
    null = (
        "the sign of a unit's mean at one sublayer says nothing about its sign at another "
        "beyond the sublayers' balance of signs (Cohen's kappa = 0); p from the bootstrap "
        "over texts, normal approximation"
    )
    if dyn.resid.shape[1] < 2:
        return _undecided("sign_persistence", claim, "fewer than two sublayers", null, MIN_KAPPA, 1)
    kappa = float(_sign_kappa(dyn.resid.double().mean(0, keepdim=True))[0])
    replicates = torch.cat([_sign_kappa(m) for m in resampler.mean_chunks(dyn.resid)]).numpy()
    return tested(
        "sign_persistence", claim,
        f"signs of unit means compared over all {dyn.resid.shape[1]} sublayers' pairs",
        kappa, replicates, effect_unit="Cohen's kappa of sign agreement", null=null,
        null_value=0.0, min_effect=MIN_KAPPA, direction=1,
    )


def high_correlation(point: np.ndarray, replicates: np.ndarray) -> Finding:
    """Fig 1C: mean per-unit r over the first third of transitions is above 0.8."""
    early = _early(len(point))
    effect = float(point[:early].mean())
    return tested(
        "high_correlation",
        CLAIMS["high_correlation"],
        f"mean per-unit r over the first {early} transitions",
        effect, replicates[:, :early].mean(axis=1),
        effect_unit="mean per-unit Pearson r, first third",
        null=(
            f"the early mean per-unit r equals the paper's {HIGH_CORRELATION}; p from the "
            "linearised bootstrap over texts, normal approximation"
        ),
        null_value=HIGH_CORRELATION, min_effect=HIGH_CORRELATION, direction=1,
        numbers={"mean_r_per_transition": point.tolist()},
    )


def velocity_acceleration(point: np.ndarray, replicates: np.ndarray) -> Finding:
    """Fig 1F: flat early, faster in the last third.

    Effect: ``log(v_last / v_middle) - |log(v_middle / v_first)|`` over the mean speeds
    of the three thirds of the transitions: the late speed-up minus any early change. It
    is large only when the stream is about flat over the first two thirds *and* speeds
    up in the last one.
    """
    claim = CLAIMS["velocity_acceleration"]
    null = (
        "the late change of speed is no larger than the early one (effect = 0); p from the "
        "bootstrap over texts, normal approximation"
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
        "MI is the same at the first layer and at the end of the early layers (drop = 0 "
        "nats); p from the linearised bootstrap over texts, normal approximation"
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
    """Fig 1H: in early layers, MI drops more into a cross-layer step than out of it.

    For each early layer with transitions ``within_l, cross_l, within_{l+1}``: the drop
    into the cross step, ``I(within_l) - I(cross_l)``, minus the drop into the next
    within step, ``I(cross_l) - I(within_{l+1})``; averaged over those layers, nats.
    """
    claim = CLAIMS["information_drop_at_cross"]
    null = (
        "MI drops as much into within-layer steps as into cross-layer ones (difference = 0 "
        "nats); p from the linearised bootstrap over texts, normal approximation"
    )
    early = _early(len(point))
    triples = [
        (w, c, c + 1) for w, c in _paired_layers(kinds)
        if c + 1 < len(kinds) and kinds[c + 1] == "within" and c < early
    ]
    if not triples:
        return _undecided("information_drop_at_cross", claim, "no early layer with a following within step", null, MIN_MI_DIFFERENCE, 1)
    w, c, n = (list(t) for t in zip(*triples, strict=True))

    def contrast(mi: np.ndarray) -> np.ndarray:
        return ((mi[..., w] - mi[..., c]) - (mi[..., c] - mi[..., n])).mean(-1)

    return tested(
        "information_drop_at_cross", claim,
        f"over the first {len(triples)} layers",
        float(contrast(point)), contrast(replicates),
        effect_unit="drop into cross minus drop into within (nats)", null=null,
        null_value=0.0, min_effect=MIN_MI_DIFFERENCE, direction=1,
    )


def rotations_exceed_null(
    dyn: DynamicsCache, null: metrics.RotationNull, resampler: Resampler, seed: int = 0
) -> Finding:
    """Fig 2: units rotate more in the true layer order than in layer-shuffled orders.

    Effect: mean over units of ``|observed turns|`` minus its mean under the layer
    shuffles. p: from the shuffles (each gives one unit-averaged statistic, an average of
    ``d_model`` independent units, so near-normal). Interval: bootstrap over texts of the
    observed count on :data:`BOOTSTRAP_UNITS` seeded units (the null's mean held fixed).

    Limitation of the interval: noise left in the mean trajectory adds small turns, so
    its count is biased upward, and a resampled mean carries that noise twice; with the
    default ``trajectory="mean"`` the replicates then sit above the observed count, and
    the percentile interval can lie beside its point estimate. No simple interval fixes
    it: on a sine of 2 periods over 32 sublayers plus N(0, 1) noise (60 samples, 16
    units; noise-free count 1.94 turns, observed 2.11), ``scipy.stats.bootstrap`` gives
    percentile [2.48, 3.31], basic [0.90, 1.73] (misses the noise-free count too) and
    BCa NaN (every resample above the estimate) (tests). Read the interval as the
    count's spread under resampling texts, not as coverage of the noise-free count. The
    p-value does not use it (it comes from the shuffles); an interval pushed up makes a
    "no" for falling short of :data:`MIN_EXCESS_TURNS` rarer, not a "yes" likelier.
    """
    shuffled = null.null.abs().mean(-1).double().cpu().numpy()  # [shuffle]
    observed = float(null.observed.abs().mean())
    effect = observed - float(shuffled.mean())
    settings = {"signed": null.signed, "gradient": null.gradient}
    units = _unit_subset(dyn.resid.shape[-1], seed)
    resid = dyn.resid[:, :, units]
    if null.trajectory == "mean":
        counts = [
            metrics.rotations(m.double(), trajectory="sample", **settings).abs().mean(-1)
            for m in resampler.mean_chunks(resid)
        ]
        replicates = torch.cat(counts).numpy()
    else:
        per_sample = metrics.rotations(resid, trajectory="sample", **settings)
        replicates = (resampler.weights @ per_sample.double().cpu()).abs().mean(-1).numpy()
    replicates = replicates - float(null.observed[units.to(null.observed.device)].abs().mean())
    kind = "signed" if null.signed else "absolute"
    return tested(
        "rotations_exceed_null",
        CLAIMS["rotations_exceed_null"],
        f"mean |{kind} rotations| per unit {observed:.2f} vs {shuffled.mean():.2f} under "
        f"{null.n_shuffles} layer shuffles",
        effect, effect + replicates,
        effect_unit="mean |turns| minus the shuffled mean (turns)",
        null=(
            "the layer order does not matter: the true order turns as much as the "
            f"{null.n_shuffles} layer-shuffled orders; p from the shuffles' spread, normal "
            "approximation"
        ),
        null_value=0.0, min_effect=MIN_EXCESS_TURNS, direction=1,
        spread=float(shuffled.std(ddof=1)),
        numbers={"observed_mean_abs": observed, "null_mean_abs": float(shuffled.mean()), **settings},
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


def _unit_subset(d_model: int, seed: int) -> Tensor:
    """Sorted indices of :data:`BOOTSTRAP_UNITS` units drawn without replacement (seeded)."""
    units = np.random.default_rng(seed).permutation(d_model)[: min(BOOTSTRAP_UNITS, d_model)]
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
        rotation_null: Precomputed ``metrics.rotation_null(dyn.resid)``.
        unit_correlation: Precomputed ``metrics.unit_correlation(dyn.resid)``.
        seed: Seed of the bootstrap (and of the MI unit subset).
        n_resamples: Bootstrap resamples.
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
    null = metrics.rotation_null(dyn.resid) if rotation_null is None else rotation_null
    found = [
        activation_growth(dyn, resampler),
        sign_persistence(dyn, resampler),
        high_correlation(*correlation),
        _trend(
            "correlation_rises",
            CLAIMS["correlation_rises"],
            *correlation, "mean per-unit r", direction=1,
        ),
        _within_vs_cross(
            "correlation_within_above_cross",
            CLAIMS["correlation_within_above_cross"],
            *correlation, kinds, _log_distance_ratio, "log((1 - r cross) / (1 - r within))", "mean r",
        ),
        _trend(
            "cosine_rises",
            CLAIMS["cosine_rises"],
            *cosine, "mean cosine similarity", direction=1,
        ),
        _within_vs_cross(
            "cosine_within_above_cross",
            CLAIMS["cosine_within_above_cross"],
            *cosine, kinds, _log_distance_ratio, "log((1 - cos cross) / (1 - cos within))", "cosine",
        ),
        velocity_acceleration(*speed),
        _within_vs_cross(
            "velocity_cross_above_within",
            CLAIMS["velocity_cross_above_within"],
            *speed, kinds, _log_speed_ratio, "log(v cross / v within)", "velocity",
        ),
        information_falls(*information, kinds),
        information_drop_at_cross(*information, kinds),
        rotations_exceed_null(dyn, null, resampler, seed),
    ]
    return decide(found, alpha)


# --------------------------------------------------------------------------- Fig 4


def variance_concentrates_with_depth(pca: PCATrajectories, dyn: DynamicsCache, resampler: Resampler) -> Finding:
    """Fig 4C: later sublayers are better explained by the shared principal components.

    Per sublayer, the variance the ``k`` components keep around the pooled mean,
    ``sum_i ||coords_i||^2 / sum_i ||x_i - mean||^2`` (= ``variance_per_sublayer_pooled``
    for an orthonormal PCA), resampled as a ratio of two per-sample means with the
    components held fixed.
    """
    centre = torch.as_tensor(pca.pca.mean_, dtype=torch.float64)
    kept = pca.trajectories.double().square().sum(-1)
    spread = (dyn.resid.double().cpu() - centre).square().sum(-1)
    (kept_point, kept_reps), (spread_point, spread_reps) = resampler.means(kept), resampler.means(spread)
    return _trend(
        "variance_concentrates",
        CLAIMS["variance_concentrates"],
        kept_point / spread_point, kept_reps / spread_reps,
        f"explained variance from {pca.n_components} components", direction=1,
    )


def steps_lengthen_in_pca_plane(pca: PCATrajectories, resampler: Resampler) -> Finding:
    """Fig 4A: trajectories take longer steps later in depth (PC1-PC2 plane)."""
    plane = pca.trajectories[..., :2].double()
    steps = (plane[:, 1:] - plane[:, :-1]).norm(dim=-1)
    return _trend(
        "pca_steps_lengthen",
        CLAIMS["pca_steps_lengthen"],
        *resampler.means(steps), "mean step length in PC1-PC2", direction=1,
    )


def mid_layers_attract(sweep: TeleportSweep, n_resamples: int = N_RESAMPLES, seed: int = 0) -> Finding:
    """Fig 4D: mid-layer teleports are pulled back faster than first- and last-layer ones.

    Layers are followed for different numbers of sublayers, so they are compared by the
    pull *per sublayer*: ``-log(normalised distance at the end) / steps`` per grid point
    (0: no pull; 0.1: about 10 % closer per sublayer). Effect: the mean pull of the middle
    layers minus the stronger of the first and last layers' pulls. The bootstrap resamples
    the teleport grid points (the same points at every layer), not texts.
    """
    claim = CLAIMS["mid_layers_attract"]
    null = (
        "middle layers pull teleported points back no faster per sublayer than the faster "
        "of the first and last layers (effect = 0); p from the bootstrap over grid points, "
        "normal approximation"
    )
    results = list(sweep.results)
    if len(results) < 3:
        return _undecided("mid_layers_attract", claim, "fewer than three teleport layers", null, MIN_LOG_PULL, 1)
    pulls = []
    for result in results:
        recovery = result.recovery()
        steps = max(1, recovery.normalised.shape[1] - 1)
        pulls.append(-torch.log(recovery.normalised[:, -1].double().cpu()) / steps)
    pull = torch.stack(pulls, dim=1)  # [point, layer]
    pull = pull[torch.isfinite(pull).all(dim=1)]
    if len(pull) < MIN_TEXTS:
        return _undecided(
            "mid_layers_attract", claim,
            f"only {len(pull)} displaced grid points; at least {MIN_TEXTS} are needed", null, MIN_LOG_PULL, 1,
        )
    resampler = Resampler.of(torch.arange(len(pull)), n_resamples, seed)
    point, replicates = resampler.means(pull)

    def contrast(p: np.ndarray) -> np.ndarray:
        return p[..., 1:-1].mean(-1) - np.maximum(p[..., 0], p[..., -1])

    listing = ", ".join(f"layer {r.layer}: {v:.3f}" for r, v in zip(results, point, strict=True))
    return tested(
        "mid_layers_attract", claim, f"mean pull per sublayer {listing}",
        float(contrast(point)), contrast(replicates),
        effect_unit="middle minus strongest edge pull (log distance per sublayer)",
        null=null, null_value=0.0, min_effect=MIN_LOG_PULL, direction=1,
        numbers={"layers": [r.layer for r in results], "pull_per_sublayer": point.tolist()},
    )


TRAJECTORY_KEYS = tuple(CLAIMS)[12:]  # the Figure 4 findings


def trajectory_findings(
    pca: PCATrajectories,
    sweep: TeleportSweep,
    dyn: DynamicsCache,
    *,
    seed: int = 0,
    n_resamples: int = N_RESAMPLES,
    alpha: float = ALPHA,
) -> list[Finding]:
    """The Figure 4 findings, tested on a PCA of ``dyn`` and a teleport sweep of its model.

    ``pca`` must be fitted on ``dyn`` (its trajectories are ``dyn``'s samples). Decided
    together (Holm); to decide them with a report's other findings, pass the union to
    :func:`decide`.
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
        resampler = Resampler.of(dyn.text_index, n_resamples, seed)
        found = [
            variance_concentrates_with_depth(pca, dyn, resampler),
            steps_lengthen_in_pca_plane(pca, resampler),
        ]
    return decide(found + [mid_layers_attract(sweep, n_resamples, seed)], alpha)
