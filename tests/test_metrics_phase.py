"""Phase portraits, rotation counts and the layer-shuffle null."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from metrics_reference import make_resid, paper_rotations

from tl_dynamics.metrics import (
    GRADIENT_SCHEMES,
    PhasePortrait,
    RotationNull,
    phase_portrait,
    rotation_null,
    rotations,
)
from tl_dynamics.metrics.phase import _angle_changes, _permutation_generators, _permutations


def sine_stack(turns: list[int], n_sublayers: int, batch: int = 1) -> torch.Tensor:
    """Unit ``u`` oscillates ``turns[u]`` whole times over depth: ``sin(2 pi k l / (S - 1))``."""
    depth = torch.arange(n_sublayers, dtype=torch.float64) / (n_sublayers - 1)
    waves = torch.stack([torch.sin(2 * math.pi * k * depth) for k in turns], dim=-1)
    return waves.expand(batch, n_sublayers, len(turns))


@pytest.fixture(scope="module")
def resid() -> torch.Tensor:
    return make_resid(batch=6, n_sublayers=12, d_model=5, seed=2, dtype=torch.float64)


def test_portrait_derivative_matches_numpy_gradient(resid):
    portrait = phase_portrait(resid)
    assert isinstance(portrait, PhasePortrait)
    assert portrait.gradient == "central"
    torch.testing.assert_close(portrait.activation, resid, rtol=0, atol=0)
    np.testing.assert_allclose(
        portrait.derivative.numpy(), np.gradient(resid.numpy(), axis=1), rtol=1e-12
    )


def test_forward_derivative_repeats_the_last_difference(resid):
    derivative = phase_portrait(resid, gradient="forward").derivative.numpy()
    step = np.diff(resid.numpy(), axis=1)
    np.testing.assert_allclose(derivative[:, :-1], step, rtol=1e-12)
    np.testing.assert_allclose(derivative[:, -1], step[:, -1], rtol=1e-12)


def test_portrait_frame_selects_units(resid):
    portrait = phase_portrait(resid.float())
    assert portrait.activation.dtype == torch.float32
    frame = portrait.to_frame(units=[3, 1])
    assert list(frame.columns) == ["sample", "sublayer", "unit", "activation", "derivative"]
    assert len(frame) == 6 * 12 * 2
    row = frame[(frame["sample"] == 4) & (frame["sublayer"] == 7) & (frame["unit"] == 3)].iloc[0]
    assert row["activation"] == portrait.activation[4, 7, 3].item()
    assert row["derivative"] == portrait.derivative[4, 7, 3].item()
    assert len(portrait.to_frame()) == 6 * 12 * 5


@pytest.mark.parametrize("gradient", GRADIENT_SCHEMES)
@pytest.mark.parametrize("signed", [True, False])
def test_rotations_match_the_paper_formula_in_numpy(gradient, signed):
    resid = make_resid(batch=8, n_sublayers=20, d_model=6, seed=4, dtype=torch.float64)
    counts = rotations(resid, signed=signed, gradient=gradient)
    assert counts.shape == (8, 6)
    assert counts.dtype == torch.float64
    expected = [
        [paper_rotations(resid[b, :, u].numpy(), gradient, signed) for u in range(6)]
        for b in range(8)
    ]
    np.testing.assert_allclose(counts.numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("gradient", GRADIENT_SCHEMES)
def test_k_oscillations_turn_k_times_clockwise(gradient):
    """(a, da/dl) of sin(2 pi k l / (S - 1)) is an ellipse traced clockwise k times."""
    turns = [1, 2, 3, 5]
    resid = sine_stack(turns, n_sublayers=128)
    signed = rotations(resid, gradient=gradient)[0]
    torch.testing.assert_close(signed, -torch.tensor(turns, dtype=torch.float64), rtol=0, atol=0.01)
    unsigned = rotations(resid, gradient=gradient, signed=False)[0]
    assert torch.all(unsigned >= signed.abs() - 1e-12)


@given(seed=st.integers(0, 2**16), n_sublayers=st.integers(3, 24))
@settings(max_examples=25, deadline=None)
def test_unsigned_count_bounds_the_signed_one(seed, n_sublayers):
    resid = make_resid(batch=3, n_sublayers=n_sublayers, d_model=4, seed=seed)
    signed = rotations(resid)
    assert torch.all(rotations(resid, signed=False) >= signed.abs() - 1e-12)


def test_mean_trajectory_counts_the_batch_mean(resid):
    counts = rotations(resid, trajectory="mean")
    assert counts.shape == (5,)
    torch.testing.assert_close(
        counts, rotations(resid.mean(0, keepdim=True))[0], rtol=0, atol=1e-12
    )


def test_repeated_points_add_no_turn():
    """A plateau makes zero-length tangents; the turn is measured across it."""
    wave = sine_stack([2], n_sublayers=40)[0, :, 0]
    plateau = torch.cat([wave[:10], wave[10].repeat(4), wave[10:]]).reshape(1, -1, 1)
    count = rotations(plateau)[0, 0].item()
    assert count == pytest.approx(paper_rotations(plateau[0, :, 0].numpy()), abs=1e-12)
    assert count == pytest.approx(-2.0, abs=0.1)
    assert rotations(torch.full((2, 9, 3), 0.7)).abs().max().item() == 0.0  # constant unit


def test_a_u_turn_is_wrapped_to_plus_pi():
    """Changes of angle are wrapped into (-pi, pi], like the paper's formula in numpy."""
    # Tangent (1, 0) then (-1, -1e-300): atan2(cross, dot) rounds to exactly -pi.
    dx = torch.tensor([1.0, -1.0], dtype=torch.float64)
    dy = torch.tensor([0.0, -1e-300], dtype=torch.float64)
    assert torch.atan2(dx[0] * dy[1] - dy[0] * dx[1], dx[0] * dx[1] + dy[0] * dy[1]) == -math.pi
    assert _angle_changes(dx, dy).tolist() == [math.pi]
    theta = np.arctan2(dy.numpy(), dx.numpy())
    assert np.pi - np.mod(np.pi - np.diff(theta), 2 * np.pi) == pytest.approx([math.pi])


def test_rotation_null_is_reproducible_and_seed_dependent(resid):
    first = rotation_null(resid, n_shuffles=30, seed=7)
    again = rotation_null(resid, n_shuffles=30, seed=7, chunk_size=4)
    other = rotation_null(resid, n_shuffles=30, seed=8)
    assert isinstance(first, RotationNull)
    assert torch.equal(first.null, rotation_null(resid, n_shuffles=30, seed=7).null)
    # Same permutations whatever the chunking; the float32 count may round differently
    # (vector lanes against loop tails) by ~1e-8 turns.
    torch.testing.assert_close(first.null, again.null, rtol=0, atol=1e-6)
    assert torch.equal(first.p_value, again.p_value)
    assert not torch.equal(first.null, other.null)
    assert torch.equal(first.observed, other.observed)


def test_rotation_null_shuffles_each_unit_and_recomputes_the_derivative(resid):
    """Rebuild the permutations from the seed and count them with the numpy formula.

    The null is counted in float32: within 1e-5 turns of the float64 formula.
    """
    result = rotation_null(resid, n_shuffles=3, seed=11, gradient="forward")
    traj = resid.mean(0).T.unsqueeze(0)
    order = _permutations(_permutation_generators(11), slice(0, 3), traj)
    assert torch.equal(order.sort(dim=-1).values, torch.arange(12).expand(3, 5, 12).int())
    mean = resid.mean(0).numpy()
    for shuffle in range(3):
        for unit in range(5):
            expected = paper_rotations(mean[order[shuffle, unit].numpy(), unit], "forward")
            assert result.null[shuffle, unit].item() == pytest.approx(expected, abs=1e-5)
    assert result.null[0, 0] != result.null[0, 1] or result.null[1, 0] != result.null[1, 1]


def test_shuffle_null_matches_the_float64_formula_with_central_differences():
    resid = make_resid(batch=4, n_sublayers=64, d_model=6, seed=5, dtype=torch.float64)
    result = rotation_null(resid, n_shuffles=20, seed=2, signed=False)
    order = _permutations(_permutation_generators(2), slice(0, 20), resid.mean(0).T.unsqueeze(0))
    mean = resid.mean(0).numpy()
    expected = [
        [paper_rotations(mean[order[k, u].numpy(), u], "central", False) for u in range(6)]
        for k in range(20)
    ]
    np.testing.assert_allclose(result.null.numpy(), expected, rtol=0, atol=1e-4)


def test_permutations_are_uniform():
    """Position of sublayer 0 over 4000 x 8 rows of 5 sublayers: flat within sampling error."""
    traj = torch.zeros(1, 8, 5)
    order = _permutations(_permutation_generators(0), slice(0, 4000), traj)
    counts = torch.bincount((order == 0).int().argmax(dim=-1).flatten(), minlength=5)
    expected = 4000 * 8 / 5
    assert ((counts - expected).abs() < 5 * math.sqrt(expected)).all()
    pairs = {tuple(row) for row in order.reshape(-1, 5)[:2000].tolist()}
    assert len(pairs) > 110  # all 120 permutations of 5 appear


def test_rotation_null_statistics(resid):
    result = rotation_null(resid, n_shuffles=50, seed=0)
    assert result.observed.shape == (5,)
    assert result.null.shape == (50, 5)
    torch.testing.assert_close(result.observed, rotations(resid, trajectory="mean"))
    centre = result.null.mean(0)
    extreme = ((result.null - centre).abs() >= (result.observed - centre).abs()).sum(0)
    torch.testing.assert_close(result.p_value, (1 + extreme).double() / 51)
    assert torch.all((result.p_value > 0) & (result.p_value <= 1))
    torch.testing.assert_close(result.z_score, (result.observed - centre) / result.null.std(0))
    assert (result.signed, result.trajectory, result.gradient) == (True, "mean", "central")
    assert (result.n_shuffles, result.seed) == (50, 0)


def test_rotation_null_per_sample_averages_over_samples(resid):
    result = rotation_null(resid, n_shuffles=5, seed=0, trajectory="sample", signed=False)
    torch.testing.assert_close(result.observed, rotations(resid, signed=False).mean(0))
    assert result.null.shape == (5, 5)
    assert torch.all(result.null >= 0)


def test_shuffle_null_of_a_smooth_oscillation_turns_more_not_zero():
    """What is true (docs/paper.md, metric 6, Caution): the null is *not* centred near 0.

    Three smooth oscillations over 64 sublayers turn -3 times. Shuffled, the sequence
    jumps up and down from one sublayer to the next and its (a, da/dl) portrait circles
    clockwise far more often: about -15 signed turns, many null spreads below the
    observed count, and far from 0 as well. The unsigned count tells the same story.
    """
    resid = sine_stack([3] * 8, n_sublayers=64)
    result = rotation_null(resid, n_shuffles=300, seed=0)
    summary = result.summary()
    assert summary.mean_observed == pytest.approx(-3.0, abs=0.05)
    assert summary.mean_null < summary.mean_observed - 5 * summary.std_null
    assert summary.mean_null < -5 * summary.std_null  # not centred near 0 either
    assert summary.mean_null == pytest.approx(-15.0, abs=1.5)
    assert summary.fraction_significant == 1.0
    unsigned = rotation_null(resid, n_shuffles=300, seed=0, signed=False).summary()
    assert unsigned.mean_null > unsigned.mean_observed + 5 * unsigned.std_null


def test_rotation_null_frame_and_summary(resid):
    result = rotation_null(resid, n_shuffles=20, seed=3)
    frame = result.to_frame()
    assert list(frame.columns) == [
        "unit",
        "observed",
        "null_mean",
        "null_std",
        "z_score",
        "p_value",
    ]
    assert len(frame) == 5
    assert frame["null_mean"].to_numpy() == pytest.approx(result.null.mean(0).numpy())
    summary = result.summary(alpha=0.1)
    assert summary.mean_observed == pytest.approx(result.observed.mean().item())
    assert summary.mean_null == pytest.approx(result.null.mean().item())
    assert summary.fraction_significant == pytest.approx(
        (result.p_value < 0.1).double().mean().item()
    )
    assert (summary.alpha, summary.n_units, summary.n_shuffles) == (0.1, 5, 20)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"gradient": "spline"}, ValueError, r"gradient must be one of \['central', 'forward'\]"),
        ({"trajectory": "median"}, ValueError, r"trajectory must be one of \['sample', 'mean'\]"),
        ({"signed": 1}, TypeError, "signed must be a bool; got int 1"),
    ],
)
def test_rotation_argument_errors(resid, kwargs, error, message):
    with pytest.raises(error, match=message):
        rotations(resid, **kwargs)
    with pytest.raises(error, match=message):
        rotation_null(resid, n_shuffles=2, **kwargs)


def test_rotation_null_specific_errors(resid):
    with pytest.raises(ValueError, match="n_shuffles must be an int >= 1; got 0"):
        rotation_null(resid, n_shuffles=0)
    with pytest.raises(TypeError, match="seed must be an int >= 0; got str"):
        rotation_null(resid, n_shuffles=2, seed="0")
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1; got -1"):
        rotation_null(resid, n_shuffles=2, chunk_size=-1)
    with pytest.raises(ValueError, match=r"gradient must be one of \['central', 'forward'\]"):
        phase_portrait(resid, gradient="backward")
