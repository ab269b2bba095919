"""Per-unit correlations against numpy.corrcoef and numpy.histogram; invariance laws."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from metrics_reference import make_resid

from tl_dynamics.metrics import (
    _validation,
    correlation_distribution,
    pairwise_unit_correlation,
    sublayer_pairs,
    unit_correlation,
)


@pytest.fixture(scope="module")
def resid() -> torch.Tensor:
    return make_resid(batch=50, n_sublayers=6, d_model=9, seed=1)


def numpy_correlations(resid: torch.Tensor) -> np.ndarray:
    """``[d_model, sublayer, sublayer]``: numpy.corrcoef of each unit's sublayers."""
    data = resid.double().numpy()
    return np.stack([np.corrcoef(data[:, :, u], rowvar=False) for u in range(data.shape[2])])


def test_unit_correlation_matches_numpy(resid):
    full = numpy_correlations(resid)
    successive = np.stack(
        [np.diagonal(full, offset=1, axis1=1, axis2=2)[u] for u in range(9)], axis=1
    )
    r = unit_correlation(resid)
    assert r.shape == (5, 9)
    assert r.dtype == torch.float64
    np.testing.assert_allclose(r.numpy(), successive, rtol=1e-10, atol=1e-12)


def test_pairwise_correlation_matches_numpy_in_combinations_order(resid):
    full = numpy_correlations(resid)
    pairs = list(itertools.combinations(range(6), 2))
    assert sublayer_pairs(6).tolist() == [list(p) for p in pairs]
    expected = np.array([[full[u, first, second] for u in range(9)] for first, second in pairs])
    np.testing.assert_allclose(
        pairwise_unit_correlation(resid).numpy(), expected, rtol=1e-10, atol=1e-12
    )


def test_small_chunks_give_the_same_result(resid, monkeypatch):
    expected_r = unit_correlation(resid)
    expected_pairs = pairwise_unit_correlation(resid)
    monkeypatch.setattr(_validation, "CHUNK_BYTES", 1)  # one unit per chunk
    torch.testing.assert_close(unit_correlation(resid), expected_r, rtol=0, atol=1e-15)
    torch.testing.assert_close(pairwise_unit_correlation(resid), expected_pairs, rtol=0, atol=1e-15)


def test_constant_unit_gives_nan():
    resid = torch.randn(20, 3, 2, dtype=torch.float64)
    resid[:, 1, 0] = 0.1  # constant at sublayer 1: transitions 0 and 1 are undefined
    r = unit_correlation(resid)
    assert r[:, 0].isnan().all()
    assert r[:, 1].isfinite().all()


def test_sublayer_pairs_rejects_bad_count():
    with pytest.raises(ValueError, match="n_sublayers must be an int >= 1; got 0"):
        sublayer_pairs(0)


@given(seed=st.integers(0, 2**16), batch=st.integers(3, 30))
@settings(max_examples=20, deadline=None)
def test_batch_permutation_leaves_correlation_unchanged(seed, batch):
    resid = make_resid(batch=batch, n_sublayers=4, d_model=5, seed=seed)
    permuted = resid[torch.randperm(batch, generator=torch.Generator().manual_seed(seed))]
    torch.testing.assert_close(
        unit_correlation(permuted), unit_correlation(resid), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(
        pairwise_unit_correlation(permuted), pairwise_unit_correlation(resid), rtol=0, atol=1e-12
    )


@given(
    seed=st.integers(0, 2**16),
    unit=st.integers(0, 4),
    scale=st.floats(1e-3, 1e3),
    shift=st.floats(-10.0, 10.0),
)
@settings(max_examples=20, deadline=None)
def test_positive_affine_map_of_a_unit_leaves_its_correlation_unchanged(seed, unit, scale, shift):
    resid = make_resid(batch=25, n_sublayers=4, d_model=5, seed=seed, dtype=torch.float64)
    mapped = resid.clone()
    mapped[:, :, unit] = scale * mapped[:, :, unit] + shift
    torch.testing.assert_close(unit_correlation(mapped), unit_correlation(resid), rtol=0, atol=1e-9)
    negated = resid.clone()
    negated[:, 2, unit] *= -scale  # flipping one sublayer flips the sign of its correlations
    flipped = unit_correlation(negated)[1:3, unit]
    torch.testing.assert_close(flipped, -unit_correlation(resid)[1:3, unit], rtol=0, atol=1e-9)


def test_distribution_matches_numpy_histogram(resid):
    dist = correlation_distribution(resid, bins=8, value_range=(0.7, 0.9))
    r = pairwise_unit_correlation(resid).numpy()
    edges = dist.bin_edges.numpy()
    np.testing.assert_allclose(edges, np.linspace(0.7, 0.9, 9))
    for u in range(r.shape[1]):
        counts, _ = np.histogram(r[:, u], bins=edges)
        np.testing.assert_allclose(dist.fraction[u].numpy(), counts / r.shape[0])
        assert dist.below[u].item() == pytest.approx(np.mean(r[:, u] < 0.7))
        assert dist.above[u].item() == pytest.approx(np.mean(r[:, u] > 0.9))
    assert dist.n_pairs == 15
    # The range was chosen so that some correlations fall on either side of it.
    assert dist.below.sum() > 0 and dist.above.sum() > 0
    torch.testing.assert_close(
        dist.fraction.sum(1) + dist.below + dist.above + dist.undefined,
        torch.ones(9, dtype=torch.float64),
    )


def test_distribution_counts_outside_and_undefined_values():
    resid = torch.randn(40, 4, 3, dtype=torch.float64)
    resid[:, :, 1] = resid[:, :1, 1] * torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    resid[:, 0, 2] = 3.0  # constant at sublayer 0: pairs (0, 1), (0, 2), (0, 3) undefined
    dist = correlation_distribution(resid, bins=4)
    # unit 1: r = +1 for pairs (0,2), (1,3) (the edge 1.0 joins the last bin), -1 for the other 4.
    assert dist.fraction[1].tolist() == [0.0, 0.0, 0.0, 2 / 6]
    assert dist.below[1].item() == pytest.approx(4 / 6)
    assert dist.undefined[2].item() == pytest.approx(3 / 6)
    shifted = correlation_distribution(resid, bins=4, value_range=(-2.0, -1.5))
    assert shifted.above[1].item() == pytest.approx(1.0)


def test_distribution_frame_is_tidy(resid):
    dist = correlation_distribution(resid, bins=5)
    frame = dist.to_frame()
    assert list(frame.columns) == ["unit", "bin", "bin_left", "bin_right", "bin_centre", "fraction"]
    assert len(frame) == 9 * 5
    row = frame[(frame["unit"] == 4) & (frame["bin"] == 3)].iloc[0]
    assert row["fraction"] == dist.fraction[4, 3].item()
    assert (row["bin_left"], row["bin_right"]) == pytest.approx((0.6, 0.8))


@pytest.mark.parametrize("value_range", [(1.0, 0.0), (0.0, 0.5, 1.0), (0.0, float("inf")), "01"])
def test_distribution_rejects_bad_ranges(resid, value_range):
    with pytest.raises(ValueError, match=r"value_range must be two finite numbers \(low, high\)"):
        correlation_distribution(resid, value_range=value_range)


def test_distribution_rejects_bad_bin_counts(resid):
    with pytest.raises(ValueError, match="bins must be an int >= 1; got 0"):
        correlation_distribution(resid, bins=0)


def test_two_samples_are_refused_with_the_reason():
    from tl_dynamics.metrics.correlation import unit_correlation_per_sample

    for function in (unit_correlation, unit_correlation_per_sample):
        with pytest.raises(ValueError, match=r"at least 3 samples .* got 2.*r = \+1 or -1"):
            function(torch.randn(2, 4, 3))


def test_per_sample_shares_average_to_the_mean_correlation():
    from tl_dynamics.metrics.correlation import unit_correlation_per_sample

    resid = torch.randn(40, 5, 7, dtype=torch.float64).cumsum(1)
    resid[:, 2, 3] = 1.0  # a constant unit: NaN r, left out of the mean
    shares = unit_correlation_per_sample(resid)
    assert shares.shape == (40, 4)
    expected = unit_correlation(resid).nanmean(-1)
    torch.testing.assert_close(shares.mean(0), expected)


def test_per_sample_shares_reuse_a_given_correlation_exactly():
    from tl_dynamics.metrics.correlation import unit_correlation_per_sample

    resid = torch.randn(30, 5, 6, dtype=torch.float64).cumsum(1)
    resid[:, 1, 2] = 0.5  # a constant unit
    given = unit_correlation_per_sample(resid, unit_correlation(resid))
    assert torch.equal(given, unit_correlation_per_sample(resid))
    with pytest.raises(ValueError, match=r"correlation must be unit_correlation\(resid\), shape \[4, 6\]"):
        unit_correlation_per_sample(resid, unit_correlation(resid)[:, :5])
