"""Structured nulls and planted effects (tl_dynamics.synthetic) and the calibration harness."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tl_dynamics as tld
from tl_dynamics import findings, metrics, synthetic


@pytest.mark.parametrize("kind", synthetic.NULLS + synthetic.PLANTED)
def test_every_process_is_seeded_and_shaped_like_collect(kind):
    dyn = synthetic.structured(kind, n_texts=20, n_sublayers=8, d_model=6, seed=3)
    assert isinstance(dyn, tld.DynamicsCache)
    assert dyn.resid.shape == (20, 8, 6) and dyn.resid.dtype == torch.float32
    assert dyn.labels[:3] == ("0_pre", "0_mid", "1_pre")
    assert torch.equal(dyn.text_index, torch.arange(20))
    assert dyn.metadata.model_name == f"synthetic:{kind}"
    again = synthetic.structured(kind, n_texts=20, n_sublayers=8, d_model=6, seed=3)
    other = synthetic.structured(kind, n_texts=20, n_sublayers=8, d_model=6, seed=4)
    assert torch.equal(dyn.resid, again.resid) and not torch.equal(dyn.resid, other.resid)


def test_unknown_kind_and_bad_sizes_are_refused():
    with pytest.raises(tld.DynamicsInputError, match="kind must be one of"):
        synthetic.structured("brownian")
    with pytest.raises(tld.DynamicsInputError, match="n_texts must be"):
        synthetic.structured("gaussian", n_texts=1)


def test_random_walk_has_iid_unit_steps_and_ar1_is_stationary():
    walk = synthetic.structured("random_walk", 2000, 10, 8, seed=0).resid.double()
    steps = walk[:, 1:] - walk[:, :-1]
    assert abs(steps.std().item() - 1) < 0.02
    lag = torch.corrcoef(torch.stack([steps[:, 3].flatten(), steps[:, 4].flatten()]))[0, 1]
    assert abs(lag) < 0.05
    ar = synthetic.structured("ar1", 4000, 12, 8, seed=0).resid.double()
    stationary = 1 / (1 - synthetic.AR_PHI**2)
    assert ar[:, 0].var().item() == pytest.approx(stationary, rel=0.05)
    assert ar[:, -1].var().item() == pytest.approx(stationary, rel=0.05)
    r = torch.corrcoef(torch.stack([ar[:, 5].flatten(), ar[:, 6].flatten()]))[0, 1].item()
    assert r == pytest.approx(synthetic.AR_PHI, abs=0.02)


def test_growth_and_decay_change_only_the_scale():
    growth = synthetic.structured("growth", 500, 9, 16, seed=0).resid.double()
    decay = synthetic.structured("decay", 500, 9, 16, seed=0).resid.double()
    ratio = growth[:, -1].abs().mean() / growth[:, 0].abs().mean()
    assert ratio.item() == pytest.approx(synthetic.SCALE_CHANGE, rel=0.03)
    assert (decay[:, 0].abs().mean() / decay[:, -1].abs().mean()).item() == pytest.approx(
        synthetic.SCALE_CHANGE, rel=0.03
    )
    # the direction of the state does not move: cosine of first and last sublayer ~ 1
    cosine = torch.nn.functional.cosine_similarity(growth[:, 0], growth[:, -1], dim=-1)
    assert cosine.mean().item() > 0.98
    assert abs(growth.mean().item()) < 0.05  # unit means are 0


def test_massive_dimension_dominates_the_norm():
    x = synthetic.structured("massive_dimension", 200, 4, 64, seed=0).resid.double()
    share = (x[..., 0] ** 2).sum() / (x**2).sum()
    assert 0.85 < share.item() < 0.98


def test_rank_one_units_share_one_factor_and_forget_depth():
    x = synthetic.structured("rank_one", 3000, 6, 12, seed=0).resid.double()
    within = torch.corrcoef(x[:, 2].T).abs()
    assert within[~torch.eye(12, dtype=bool)].mean().item() > 0.1  # units correlate (iid: ~0.015)
    across = torch.corrcoef(torch.stack([x[:, 2, 0], x[:, 3, 0]]))[0, 1].item()
    assert abs(across) < 0.06  # depth carries nothing


@pytest.mark.parametrize("cycles", [2, 5])
def test_rotations_turn_the_planted_number_of_times(cycles):
    dyn = synthetic.structured(f"rotation_{cycles}", 200, 41, 8, seed=0)
    turns = metrics.rotations(dyn.resid, trajectory="mean", signed=True)
    assert turns.abs().mean().item() == pytest.approx(cycles, abs=0.3)


def test_within_steady_walk_has_short_within_steps():
    dyn = synthetic.structured("within_steady", 400, 12, 16, seed=0)
    speed = metrics.velocity(dyn.resid).mean(0).double()
    kinds = np.array(dyn.transition_kinds)
    ratio = speed[kinds == "within"].mean() / speed[kinds == "cross"].mean()
    assert ratio.item() == pytest.approx(synthetic.WITHIN_STEP, rel=0.05)


def test_calibrate_counts_verdicts_per_process_shape_and_key():
    seen = []

    def verdicts(dyn):
        seen.append(tuple(dyn.resid.shape))
        grows = dyn.resid[:, -1].abs().mean() > 1.5 * dyn.resid[:, 0].abs().mean()
        return {"grows": "yes" if grows else "no"}

    table = synthetic.calibrate(
        verdicts, ["growth", "gaussian"], shapes=[(30, 6, 4), (20, 4, 4)], seeds=[0, 1, 2]
    )
    assert len(seen) == 12 and (30, 6, 4) in seen and (20, 4, 4) in seen
    counts = table.set_index(["kind", "n_texts", "key", "verdict"])["count"]
    assert counts[("growth", 30, "grows", "yes")] == 3
    assert counts[("gaussian", 20, "grows", "no")] == 3
    assert (table["runs"] == 3).all()
    with pytest.raises(tld.DynamicsInputError, match="at least one"):
        synthetic.calibrate(verdicts, [], seeds=[0])
    assert math.isfinite(float(table["count"].sum()))


# ------------------------------------------------------------------ acceptance


# The findings each process really has (docs/calibration.md says why); any other "yes"
# on a null is a false positive.
GENUINE = {
    "gaussian": set(),
    "heavy_tailed": set(),
    "massive_dimension": set(),
    "rank_one": set(),
    "random_walk": {"activation_growth", "high_correlation", "correlation_rises", "cosine_rises"},
    "ar1": {"high_correlation"},
    "growth": {"activation_growth", "high_correlation", "pca_steps_lengthen"},
    "decay": {"high_correlation"},
}
PLANTED = {  # planted effect -> findings that must say "yes" at n = 100
    "within_steady": {
        "correlation_within_above_cross", "cosine_within_above_cross",
        "velocity_cross_above_within", "information_drop_at_cross",
    },
    "growth": {"activation_growth"},
}


def verdicts(dyn):
    mi = metrics.mutual_information(dyn.resid, method="binned")
    found = findings.dynamics_findings(dyn, mutual_information=mi)
    pca = tld.pca_trajectories(dyn, n_components=8)
    found += findings.trajectory_findings(pca, None, dyn)
    return {f.key: f.verdict for f in findings.decide(found)}


@pytest.mark.parametrize("kind", list(GENUINE))
def test_nulls_say_yes_only_where_the_process_has_the_property(kind):
    said = verdicts(synthetic.structured(kind, n_texts=100, n_sublayers=12, d_model=16, seed=1))
    assert said["mid_layers_attract"] == "undecided"  # no teleports
    assert {key for key, verdict in said.items() if verdict == "yes"} <= GENUINE[kind]


@pytest.mark.parametrize("kind", list(PLANTED))
def test_planted_effects_come_out_yes_at_100_texts(kind):
    said = verdicts(synthetic.structured(kind, n_texts=100, n_sublayers=12, d_model=16, seed=2))
    assert all(said[key] == "yes" for key in PLANTED[kind]), said
