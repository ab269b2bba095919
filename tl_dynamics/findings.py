"""The paper's findings, checked on this model's numbers.

Fernando & Guitchounts (2025) report a list of qualitative findings on Llama 3.1 8B:
activations grow denser with depth, successive sublayers correlate more and more,
within-layer transitions are smoother than cross-layer ones, the stream accelerates in
the last third, information drops early, units rotate in phase space, and mid-layer
perturbations are pulled back. Each function here turns one such sentence into a test
on the measured numbers and returns a :class:`Finding` that says what was observed,
e.g. "within-layer cosine > cross-layer: yes in 5/6 layers". Nothing is written by hand:
a report states what the data show, including where they disagree with the paper.

Example::

    from tl_dynamics.findings import dynamics_findings
    for finding in dynamics_findings(dyn):         # dyn from tld.collect(...)
        print(finding.verdict, finding.claim, "-", finding.observed)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import Tensor

from tl_dynamics import metrics
from tl_dynamics.cache import DynamicsCache

HIGH_CORRELATION = 0.8  # the paper: r > 0.8 already in early layers (section 3, Fig 1C)
LAST_THIRD = 2 / 3  # the paper: velocity accelerates "in the last third" of depth (Fig 1F)
MAJORITY = 0.5  # a per-layer comparison "holds" when it holds in more than half the layers


@dataclass(frozen=True)
class Finding:
    """One of the paper's findings, tested on this model.

    Attributes:
        key: Stable identifier, e.g. ``"cosine_within_above_cross"``.
        claim: The paper's finding in one sentence.
        observed: What this model shows, with numbers.
        holds: Whether the model shows it (``None`` when it cannot be decided, e.g. too
            few layers).
        numbers: The numbers behind ``observed`` (JSON-ready).
    """

    key: str
    claim: str
    observed: str
    holds: bool | None
    numbers: dict[str, Any]

    @property
    def verdict(self) -> str:
        """``"yes"``, ``"no"`` or ``"undecided"``."""
        return {True: "yes", False: "no", None: "undecided"}[self.holds]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict of the fields plus the verdict."""
        return {**dataclasses.asdict(self), "verdict": self.verdict}


def _paired_layers(kinds: list[str]) -> list[tuple[int, int]]:
    """(within transition, following cross transition) index pairs, one per layer."""
    return [
        (t, t + 1)
        for t in range(len(kinds) - 1)
        if kinds[t] == "within" and kinds[t + 1] == "cross"
    ]


def _within_vs_cross(
    key: str, claim: str, per_transition: Tensor, kinds: list[str], name: str, within_above: bool
) -> Finding:
    """Compare a per-transition mean between the two transitions of each layer."""
    pairs = _paired_layers(kinds)
    if not pairs:
        return Finding(key, claim, "no layer has both a within and a cross transition", None, {})
    sign = 1 if within_above else -1
    wins = [bool(sign * (per_transition[w] - per_transition[c]) > 0) for w, c in pairs]
    relation = ">" if within_above else "<"
    observed = f"within-layer {name} {relation} cross-layer: yes in {sum(wins)}/{len(pairs)} layers"
    numbers = {
        "within": [float(per_transition[w]) for w, _ in pairs],
        "cross": [float(per_transition[c]) for _, c in pairs],
        "layers_holding": sum(wins),
        "layers": len(pairs),
    }
    return Finding(key, claim, observed, sum(wins) > MAJORITY * len(pairs), numbers)


def _trend(key: str, claim: str, per_step: Tensor, name: str, rising: bool) -> Finding:
    """Spearman rank correlation of a per-step measure with depth."""
    values = per_step.double().cpu().numpy()
    if len(values) < 3:
        return Finding(key, claim, "too few sublayers for a trend", None, {})
    if np.ptp(values) == 0 or not np.isfinite(values).all():
        return Finding(key, claim, f"{name} is constant or undefined across depth", None, {})
    rho = float(spearmanr(range(len(values)), values).statistic)
    direction = "tends to rise" if rho > 0 else "tends to fall"
    observed = (
        f"{name} {direction} with depth (Spearman ρ = {rho:+.2f} over {len(values)} steps; "
        f"{values[0]:.3g} at the start, {values[-1]:.3g} at the end, range "
        f"{values.min():.3g}-{values.max():.3g})"
    )
    holds = rho > 0 if rising else rho < 0
    return Finding(key, claim, observed, holds, {"spearman_rho": rho, "values": values.tolist()})


def activation_growth(dyn: DynamicsCache) -> Finding:
    """Fig 1B: mean |activation| grows with depth."""
    magnitude = metrics.mean_activation(dyn.resid).abs().mean(-1)
    return _trend(
        "activation_growth",
        "Activations grow denser with depth: mean |activation| increases (Fig 1B).",
        magnitude,
        "mean |activation|",
        rising=True,
    )


def sign_persistence(dyn: DynamicsCache) -> Finding:
    """Fig 1B: units keep the sign of their mean activation across depth."""
    mean = metrics.mean_activation(dyn.resid)
    same = (torch.sign(mean) == torch.sign(mean[-1])).double().mean(-1)  # per sublayer
    second_half = float(same[len(same) // 2 :].mean())
    observed = (
        f"{100 * second_half:.0f}% of units have the sign of their last-sublayer mean over "
        f"the second half of depth ({100 * float(same.mean()):.0f}% over all sublayers)"
    )
    return Finding(
        "sign_persistence",
        "Units keep their sign across depth (Fig 1B).",
        observed,
        second_half > MAJORITY,
        {"fraction_same_sign_per_sublayer": same.tolist()},
    )


def high_correlation(dyn: DynamicsCache) -> Finding:
    """Fig 1C: successive sublayers correlate with r > 0.8, rising with depth."""
    median = metrics.unit_correlation(dyn.resid).nanmedian(dim=-1).values
    above = int((median > HIGH_CORRELATION).sum())
    high, rising = above > MAJORITY * len(median), None
    rho = float("nan")
    if len(median) >= 3 and np.ptp(median.cpu().numpy()) > 0:
        rho = float(spearmanr(range(len(median)), median.cpu().numpy()).statistic)
        rising = rho > 0
    parts = [
        f"median per-unit r > {HIGH_CORRELATION} in {above}/{len(median)} transitions "
        f"({'holds' if high else 'fails'})",
        f"trend with depth ρ = {rho:+.2f} ({'undecided' if rising is None else 'holds' if rising else 'fails'})",
    ]
    observed = f"{'; '.join(parts)}; first {float(median[0]):.2f}, last {float(median[-1]):.2f}"
    return Finding(
        "high_correlation",
        f"Per-unit correlation of successive sublayers is > {HIGH_CORRELATION} early and rises with depth (Fig 1C).",
        observed,
        None if rising is None else high and rising,
        {"median_r": median.tolist(), "spearman_rho": rho},
    )


def dynamics_findings(
    dyn: DynamicsCache,
    mutual_information: Tensor | None = None,
    rotation_null: metrics.RotationNull | None = None,
) -> list[Finding]:
    """Every Figure 1-2 finding of the paper, tested on ``dyn``.

    Args:
        dyn: Trajectories of the original (unshuffled) texts.
        mutual_information: Precomputed ``metrics.mutual_information(dyn.resid)``.
        rotation_null: Precomputed ``metrics.rotation_null(dyn.resid)``.

    Returns:
        Findings in the paper's order.
    """
    kinds = dyn.transition_kinds
    correlation = metrics.unit_correlation(dyn.resid).nanmean(-1)
    cosine = metrics.cosine_similarity(dyn.resid).mean(0)
    speed = metrics.velocity(dyn.resid).mean(0)
    information = (
        metrics.mutual_information(dyn.resid) if mutual_information is None else mutual_information
    ).nanmean(-1)
    null = metrics.rotation_null(dyn.resid) if rotation_null is None else rotation_null
    return [
        activation_growth(dyn),
        sign_persistence(dyn),
        high_correlation(dyn),
        _within_vs_cross(
            "correlation_within_above_cross",
            "Within-layer transitions (pre → mid) correlate more than cross-layer ones (Fig 1C).",
            correlation, kinds, "mean r", within_above=True,
        ),
        _trend(
            "cosine_rises",
            "Cosine similarity of successive sublayers rises with depth (Fig 1E).",
            cosine, "mean cosine similarity", rising=True,
        ),
        _within_vs_cross(
            "cosine_within_above_cross",
            "Within-layer cosine similarity is above cross-layer (Fig 1E).",
            cosine, kinds, "cosine", within_above=True,
        ),
        velocity_acceleration(speed),
        _within_vs_cross(
            "velocity_cross_above_within",
            "Cross-layer transitions are faster than within-layer ones (Fig 1F).",
            speed, kinds, "velocity", within_above=False,
        ),
        _trend(
            "information_falls",
            "Mutual information between successive sublayers drops in early layers (Fig 1G-H).",
            information, "mean MI (nats)", rising=False,
        ),
        _within_vs_cross(
            "information_drop_at_cross",
            "The MI drop is steepest at cross-layer transitions: cross-layer MI is lower (Fig 1H).",
            information, kinds, "MI", within_above=True,
        ),
        rotations_exceed_null(null),
    ]


def velocity_acceleration(speed: Tensor) -> Finding:
    """Fig 1F: velocity is flat early and accelerates in the last third of depth."""
    cut = int(round(LAST_THIRD * len(speed)))
    if cut < 1 or cut >= len(speed):
        return Finding("velocity_acceleration", "", "too few transitions", None, {})
    early, late = float(speed[:cut].mean()), float(speed[cut:].mean())
    observed = (
        f"mean velocity {late:.3g} in the last third vs {early:.3g} before "
        f"(ratio {late / early:.2f})"
    )
    return Finding(
        "velocity_acceleration",
        "Velocity is flat early and accelerates in the last third of depth (Fig 1F).",
        observed,
        late > early,
        {"early_mean": early, "late_mean": late, "per_transition": speed.tolist()},
    )


def rotations_exceed_null(null: metrics.RotationNull) -> Finding:
    """Fig 2: units rotate more in the true layer order than in layer-shuffled orders."""
    observed_turns = float(null.observed.abs().mean())
    null_turns = float(null.null.abs().mean())
    significant = float((null.p_value < 0.05).double().mean())
    kind = "signed" if null.signed else "absolute"
    observed = (
        f"mean |{kind} rotations| per unit {observed_turns:.2f} vs {null_turns:.2f} under "
        f"{null.n_shuffles} layer shuffles; {100 * significant:.0f}% of units differ from "
        f"the null at p < 0.05 (the paper: 10.74 vs about 0)"
    )
    return Finding(
        "rotations_exceed_null",
        "Units rotate in phase space far more than a layer-shuffled null (Fig 2, 10.74 turns vs ~0).",
        observed,
        observed_turns > null_turns,
        {
            "observed_mean_abs": observed_turns,
            "null_mean_abs": null_turns,
            "fraction_significant": significant,
            "signed": null.signed,
            "trajectory": null.trajectory,
        },
    )


def variance_concentrates_with_depth(pca: Any) -> Finding:
    """Fig 4C: later sublayers are better explained by the shared principal components."""
    return _trend(
        "variance_concentrates",
        "Early layers spread variance over more dimensions than late ones: the explained "
        "variance per sublayer from the top components rises with depth (Fig 4C).",
        pca.variance_per_sublayer_pooled,
        f"explained variance from {pca.n_components} components",
        rising=True,
    )


def steps_lengthen_in_pca_plane(pca: Any) -> Finding:
    """Fig 4A: trajectories take longer steps later in depth (PC1-PC2 plane)."""
    plane = pca.trajectories[..., :2].double()
    steps = (plane[:, 1:] - plane[:, :-1]).norm(dim=-1).mean(0)
    return _trend(
        "pca_steps_lengthen",
        "Trajectories in the PC1-PC2 plane take longer steps late in depth (Fig 4A).",
        steps,
        "mean step length in PC1-PC2",
        rising=True,
    )


def mid_layers_attract(sweep: Any) -> Finding:
    """Fig 4D: mid-layer teleports are pulled back faster than first- and last-layer ones.

    Layers are followed for different numbers of sublayers (11 after layer 0 of a 6-layer
    model, 1 after its last), so they are compared by the contraction *per sublayer*,
    ``contraction ** (1 / steps)``: the geometric mean factor by which the distance to the
    control shrinks at each step.
    """
    table = sweep.to_frame()
    if len(table) < 3:
        return Finding("mid_layers_attract", "", "fewer than three teleport layers", None, {})
    rate = (table["contraction"] ** (1 / table["steps"].clip(lower=1))).tolist()
    middle = sum(rate[1:-1]) / len(rate[1:-1])
    edges = min(rate[0], rate[-1])
    listing = ", ".join(f"layer {l}: {r:.2f}" for l, r in zip(table["layer"], rate))
    observed = (
        f"distance to the control shrinks per sublayer by a factor {listing} "
        f"(mid-layer mean {middle:.2f} vs first/last {rate[0]:.2f}/{rate[-1]:.2f})"
    )
    return Finding(
        "mid_layers_attract",
        "Teleported states are pulled back towards the control path at middle layers "
        "(attractor-like), not at the first or last layer (Fig 4D).",
        observed,
        middle < edges,
        {
            "layers": table["layer"].tolist(),
            "contraction": table["contraction"].tolist(),
            "steps": table["steps"].tolist(),
            "contraction_per_sublayer": rate,
        },
    )


def trajectory_findings(pca: Any, sweep: Any) -> list[Finding]:
    """The Figure 4 findings, tested on a PCA and a teleport sweep of the same model."""
    return [variance_concentrates_with_depth(pca), steps_lengthen_in_pca_plane(pca), mid_layers_attract(sweep)]
