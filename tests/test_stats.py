"""Bootstrap, p-values and Holm's correction against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from tl_dynamics.stats import (
    basic_interval,
    bootstrap_p_value,
    permutation_p_value,
    Resampler,
    standard_error,
    bootstrap_weights,
    holm,
    normal_p_value,
    percentile_interval,
)


def holm_reference(p, alpha):
    """Holm (1979) as written: reject the smallest p-values while p_(k) <= alpha / (m - k + 1)."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    rejected = [False] * len(p)
    for k, i in enumerate(order):
        if p[i] > alpha / (len(p) - k):
            break
        rejected[i] = True
    return rejected


@pytest.mark.parametrize("seed", range(20))
def test_holm_rejects_what_the_step_down_procedure_rejects(seed):
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(0, 0.003, 4), rng.uniform(0, 1, 10)])
    rng.shuffle(p)
    adjusted = holm(p)
    for alpha in (0.001, 0.01, 0.05):
        assert list(adjusted <= alpha) == holm_reference(list(p), alpha)
    assert (adjusted >= p).all() and (adjusted <= 1).all()


def test_holm_known_values_and_nan():
    # statsmodels.stats.multitest.multipletests([0.01, 0.04, 0.03, 0.005], method="holm")[1]
    assert holm(np.array([0.01, 0.04, 0.03, 0.005])) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = holm(np.array([0.01, np.nan, 0.02]))
    assert np.isnan(adjusted[1]) and adjusted[[0, 2]] == pytest.approx([0.02, 0.02])


def test_percentile_interval_of_the_mean_matches_scipy():
    values = np.random.default_rng(0).exponential(size=150)
    weights = bootstrap_weights(torch.arange(150), n_resamples=20000, seed=1)
    ours = percentile_interval((weights @ torch.from_numpy(values)).numpy())
    theirs = stats.bootstrap(
        (values,), np.mean, n_resamples=20000, method="percentile", random_state=2
    ).confidence_interval
    width = theirs.high - theirs.low
    assert ours[0] == pytest.approx(theirs.low, abs=0.03 * width)
    assert ours[1] == pytest.approx(theirs.high, abs=0.03 * width)


def test_bootstrap_weights_resample_groups_reproducibly():
    groups = torch.tensor([7, 7, 3, 3, 3, 9])
    weights = bootstrap_weights(groups, n_resamples=500, seed=4)
    assert torch.equal(weights, bootstrap_weights(groups, n_resamples=500, seed=4))
    assert weights.sum(1) == pytest.approx(torch.ones(500, dtype=torch.float64))
    assert torch.equal(weights[:, 0], weights[:, 1]) and torch.equal(weights[:, 2], weights[:, 4])
    assert not torch.equal(weights, bootstrap_weights(groups, n_resamples=500, seed=5))


def test_normal_p_value():
    assert normal_p_value(1.96, 0.0, 1.0) == pytest.approx(0.05, abs=1e-3)
    assert normal_p_value(0.3, 0.3, 0.0) == 1.0 and normal_p_value(0.4, 0.3, 0.0) == 0.0
    assert np.isnan(normal_p_value(float("nan"), 0.0, 1.0))


def test_resampler_means_are_the_weighted_means_of_its_weights():
    groups = torch.tensor([0, 0, 1, 2, 2, 2])
    resampler = Resampler.of(groups, n_resamples=50, seed=4)
    terms = torch.arange(12, dtype=torch.float64).reshape(6, 2)
    point, replicates = resampler.means(terms)
    np.testing.assert_allclose(point, terms.mean(0).numpy())
    np.testing.assert_allclose(replicates, (bootstrap_weights(groups, 50, 4) @ terms).numpy())
    chunks = torch.cat(list(resampler.mean_chunks(terms.reshape(6, 2, 1))))
    np.testing.assert_allclose(chunks.squeeze(-1).numpy(), replicates, rtol=1e-6)


def test_standard_error_drops_non_finite_replicates():
    replicates = np.array([1.0, 2.0, 3.0, np.nan, np.inf])
    assert standard_error(replicates) == pytest.approx(1.0)
    assert np.isnan(standard_error(np.array([1.0, np.nan])))


def test_basic_interval_reflects_the_percentile_interval_about_the_estimate():
    replicates = np.random.default_rng(0).normal(1.5, 0.2, 4000)  # biased up from 1.0
    low, high = percentile_interval(replicates)
    assert basic_interval(1.0, replicates) == pytest.approx((2.0 - high, 2.0 - low))
    assert basic_interval(1.0, replicates)[1] < 1.0 < low  # the percentile one lies above


def test_bootstrap_p_values_are_one_sided_floored_and_invert_the_basic_interval():
    rng = np.random.default_rng(1)
    replicates = 0.5 + 0.1 * rng.standard_normal(999)
    floor = 1 / 1000
    assert bootstrap_p_value(0.5, replicates, 0.0, 1) == pytest.approx(floor)  # 5 sd above 0
    assert bootstrap_p_value(0.5, replicates, 0.0, -1) == pytest.approx(1.0)
    assert bootstrap_p_value(0.5, np.full(999, 0.5), 0.0, 1) == pytest.approx(floor)  # never 0
    low = basic_interval(0.5, replicates, confidence=0.9)[0]  # one-sided 95 % bound
    assert bootstrap_p_value(0.5, replicates, low - 0.01, 1) < 0.05 < bootstrap_p_value(0.5, replicates, low + 0.01, 1)
    assert np.isnan(bootstrap_p_value(float("nan"), replicates, 0.0, 1))


def test_permutation_p_value_counts_the_observed_among_the_null():
    null = np.arange(99, dtype=float)  # 0..98
    assert permutation_p_value(98.5, null, 1) == pytest.approx(1 / 100)
    assert permutation_p_value(49.0, null, 1) == pytest.approx((1 + 50) / 100)
    assert permutation_p_value(-1.0, null, -1) == pytest.approx(1 / 100)
