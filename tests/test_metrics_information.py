"""Mutual information against scipy's gaussian_kde, known Gaussian answers, invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from metrics_reference import kde_mutual_information_table, make_resid

from tl_dynamics.metrics import MI_METHODS, _validation, mutual_information

# The KDE estimator must agree with the scipy reference to this relative error (brief).
MAX_RELATIVE_ERROR = 0.02


@pytest.fixture(scope="module")
def resid() -> torch.Tensor:
    """40 units x 4 transitions of strongly, non-linearly coupled activations."""
    return make_resid(batch=200, n_sublayers=5, d_model=40, seed=0)


@pytest.fixture(scope="module")
def scipy_mi(resid) -> np.ndarray:
    return kde_mutual_information_table(resid)


def test_kde_matches_scipy_gaussian_kde(resid, scipy_mi):
    mi = mutual_information(resid)
    assert mi.shape == (4, 40)
    assert mi.dtype == torch.float64
    relative = np.abs(mi.numpy() - scipy_mi) / np.abs(scipy_mi)
    assert relative.max() < MAX_RELATIVE_ERROR
    assert relative.max() < 1e-4  # the same computation, with float32 kernel values


def test_chunking_does_not_change_the_estimate(resid, monkeypatch):
    expected = mutual_information(resid)
    torch.testing.assert_close(
        mutual_information(resid, chunk_size=37), expected, rtol=1e-12, atol=0
    )
    monkeypatch.setattr(_validation, "CHUNK_BYTES", 1)  # one unit at a time
    torch.testing.assert_close(
        mutual_information(resid, chunk_size=37), expected, rtol=1e-12, atol=0
    )


def test_half_precision_input_is_estimated_in_float64(resid):
    half = resid.to(torch.bfloat16)
    mi = mutual_information(half)
    assert mi.dtype == torch.float64
    torch.testing.assert_close(mi, mutual_information(half.double()), rtol=1e-12, atol=0)


def test_binned_matches_the_exact_kde(resid):
    exact = mutual_information(resid)
    binned = mutual_information(resid, method="binned")
    relative = (binned - exact).abs() / exact.abs()
    assert relative.mean() < MAX_RELATIVE_ERROR
    assert relative.mean() < 2e-3  # measured ~1e-4 at a spacing of half a kernel width


def test_binned_matches_the_exact_kde_with_heavy_tails_and_outliers():
    """Student-t noise plus a few samples 40x out: their kernels are summed exactly, beside the grid."""
    generator = torch.Generator().manual_seed(3)
    resid = make_resid(batch=400, n_sublayers=3, d_model=12, seed=3, dtype=torch.float64)
    resid[:4] *= 40
    t_noise = torch.randn(resid.shape, generator=generator, dtype=torch.float64) / torch.sqrt(
        torch.rand(resid.shape, generator=generator, dtype=torch.float64) + 0.01
    )
    resid = resid + 0.3 * t_noise
    exact = mutual_information(resid)
    binned = mutual_information(resid, method="binned")
    assert binned.isfinite().all()
    relative = (binned - exact).abs() / exact.abs()
    assert relative.mean() < MAX_RELATIVE_ERROR


@pytest.mark.parametrize("rho", [0.3, 0.6, 0.9])
def test_both_methods_recover_bivariate_gaussian_mi(rho):
    """On Gaussian data both estimators approach -1/2 log(1 - rho^2).

    The resubstitution KDE is biased upwards by a few hundredths of a nat at n = 500
    (each sample sees its own kernel), so it gets a looser tolerance than the closed form.
    """
    generator = torch.Generator().manual_seed(int(rho * 10))
    x = torch.randn(500, 20, generator=generator, dtype=torch.float64)
    noise = torch.randn(500, 20, generator=generator, dtype=torch.float64)
    resid = torch.stack([x, rho * x + math.sqrt(1 - rho**2) * noise], dim=1)
    truth = -0.5 * math.log(1 - rho**2)
    gaussian = mutual_information(resid, method="gaussian").mean().item()
    kde = mutual_information(resid, method="kde").mean().item()
    assert gaussian == pytest.approx(truth, abs=0.02)
    assert kde == pytest.approx(truth, abs=0.06)
    assert kde > gaussian - 0.01


def test_degenerate_units_give_nan_without_raising():
    resid = torch.randn(30, 3, 4, dtype=torch.float64)
    resid[:, 1, 0] = 2.5  # constant at sublayer 1: both transitions of unit 0
    resid[:, 2, 1] = 2 * resid[:, 1, 1] + 1  # collinear: transition 1 of unit 1
    for method in MI_METHODS:
        mi = mutual_information(resid, method=method)
        expected_nan = torch.zeros(2, 4, dtype=torch.bool)
        expected_nan[:, 0] = True
        expected_nan[1, 1] = True
        assert torch.equal(mi.isnan(), expected_nan)


@pytest.mark.parametrize("method", MI_METHODS)
def test_two_samples_are_refused_not_silently_nan(method):
    # two points are always collinear: every joint covariance would be singular
    with pytest.raises(ValueError, match="at least 3 samples"):
        mutual_information(torch.randn(2, 3, 4), method=method)


@given(seed=st.integers(0, 2**16))
@settings(max_examples=10, deadline=None)
def test_batch_permutation_leaves_mi_unchanged(seed):
    resid = make_resid(batch=40, n_sublayers=3, d_model=4, seed=seed)
    permuted = resid[torch.randperm(40, generator=torch.Generator().manual_seed(seed))]
    for method in MI_METHODS:
        # float32 kernel sums / grid accumulation: summation order moves the last bits.
        tolerance = 1e-10 if method == "gaussian" else 1e-5
        torch.testing.assert_close(
            mutual_information(permuted, method=method),
            mutual_information(resid, method=method),
            rtol=tolerance,
            atol=tolerance,
        )


@given(seed=st.integers(0, 2**16), unit=st.integers(0, 3), scale=st.floats(0.1, 10.0))
@settings(max_examples=10, deadline=None)
def test_positive_scaling_of_a_unit_leaves_its_mi_unchanged(seed, unit, scale):
    """Scott's bandwidth scales with the data, so MI is scale-free: exactly for the closed
    form, and for the KDE up to the 1e-10 offsets inside the logs, which the scaled
    densities feel at the 1e-6 level."""
    resid = make_resid(batch=40, n_sublayers=3, d_model=4, seed=seed, dtype=torch.float64)
    scaled = resid.clone()
    scaled[:, :, unit] *= scale
    torch.testing.assert_close(
        mutual_information(scaled), mutual_information(resid), rtol=0, atol=1e-4
    )
    torch.testing.assert_close(
        mutual_information(scaled, method="gaussian"),
        mutual_information(resid, method="gaussian"),
        rtol=1e-9,
        atol=1e-12,
    )


def test_invalid_method_lists_the_valid_ones():
    with pytest.raises(
        ValueError, match=r"method must be one of \['kde', 'binned', 'gaussian'\]; got 'knn'"
    ):
        mutual_information(torch.randn(5, 3, 2), method="knn")


def test_invalid_chunk_size():
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1; got 0"):
        mutual_information(torch.randn(5, 3, 2), method="gaussian", chunk_size=0)


@pytest.mark.parametrize("method", ["kde", "binned"])
def test_per_sample_terms_average_to_the_mean_mutual_information(method):
    from tl_dynamics.metrics.information import mutual_information_per_sample

    resid = torch.randn(60, 4, 5, dtype=torch.float64).cumsum(1)
    terms = mutual_information_per_sample(resid, method=method)
    assert terms.shape == (60, 3)
    expected = mutual_information(resid, method=method).nanmean(-1)
    torch.testing.assert_close(terms.mean(0), expected)
    with pytest.raises(ValueError, match="method must be one of"):
        mutual_information_per_sample(resid, method="gaussian")


@pytest.mark.parametrize("dims", [1, 2])
def test_binned_kernel_sums_match_the_exact_sums_with_far_outliers(dims):
    """Items of different spreads get grids of different lengths in one call, and points
    far outside an item's window (up to 400 kernel widths out) are summed exactly: every
    item's sums must be its own, and an outlier must not spoil the others' accuracy (a
    grid stretched to reach it would be 4 kernel widths coarse)."""
    from tl_dynamics.metrics.information import (
        BINNED_MAX_CELLS,
        BINNED_SPACING,
        _binned_kernel_sums,
        _kernel_sums,
    )

    generator = torch.Generator().manual_seed(5)
    spread = torch.tensor([1.0, 2.6, 6.0, 2.6, 2.6, 2.6])  # whitened sd, kernel widths
    coords = [
        torch.randn(len(spread), 300, generator=generator, dtype=torch.float64) * spread[:, None]
        for _ in range(dims)
    ]
    for item, far in ((3, 40.0), (4, 120.0), (5, 400.0)):
        for c in coords:
            c[item, :3] = torch.tensor([far, -far / 2, far / 3])
    assert float(coords[0][5].amax() - coords[0][5].amin()) > BINNED_SPACING * BINNED_MAX_CELLS
    exact = _kernel_sums(coords)
    binned = _binned_kernel_sums(coords).to(exact.dtype)
    relative = ((binned - exact).abs() / exact).mean(dim=1)
    assert relative.max() < 0.01, relative  # measured 0.0013-0.0034
    # Item 5's three far points lie outside its window: summed exactly (in float32).
    outliers = (binned[5, :3] - exact[5, :3]).abs() / exact[5, :3]
    assert outliers.max() < 1e-5
