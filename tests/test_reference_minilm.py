"""Metrics on real MiniLM activations against references nobody here wrote.

The synthetic-data tests (tests/test_metrics_*.py) pin the formulas; these check that
the vectorised code agrees with numpy and scipy on the activations users will feed it:
real pretrained weights, real text, heavy-tailed units.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metrics_reference import kde_mutual_information_table, paper_rotations

import tl_dynamics as tld

MI_RELATIVE_TOLERANCE = 0.02  # issue: within 2 % of scipy's gaussian_kde on real activations
N_TEXTS = 200
N_UNITS = 24  # units checked against the slow per-unit scipy loop


@pytest.fixture(scope="module")
def minilm_resid(minilm):
    dyn = tld.collect(minilm, tld.data.python_docs()[:N_TEXTS], progress=False)
    return dyn.resid


@pytest.fixture(scope="module")
def units(minilm_resid):
    return torch.randperm(minilm_resid.shape[-1], generator=torch.Generator().manual_seed(0))[:N_UNITS]


def test_mutual_information_matches_scipy_gaussian_kde(minilm_resid, units):
    subset = minilm_resid[:, :, units]
    ours = tld.metrics.mutual_information(subset).double().numpy()
    reference = kde_mutual_information_table(subset)
    relative = np.abs(ours - reference) / np.abs(reference)
    assert np.isfinite(ours).all()
    assert relative.max() <= MI_RELATIVE_TOLERANCE, relative.max()


def test_binned_mutual_information_is_within_2_percent_of_scipy(minilm_resid, units):
    subset = minilm_resid[:, :, units]
    binned = tld.metrics.mutual_information(subset, method="binned").double().numpy()
    reference = kde_mutual_information_table(subset)
    relative = np.abs(binned - reference) / np.abs(reference)
    assert relative.mean() <= MI_RELATIVE_TOLERANCE and relative.max() <= 2 * MI_RELATIVE_TOLERANCE


def test_unit_correlation_matches_numpy_corrcoef(minilm_resid, units):
    ours = tld.metrics.unit_correlation(minilm_resid).double()
    data = minilm_resid.double().numpy()
    for t in range(data.shape[1] - 1):
        for u in units.tolist():
            expected = np.corrcoef(data[:, t, u], data[:, t + 1, u])[0, 1]
            assert ours[t, u].item() == pytest.approx(expected, abs=1e-10)


def test_cosine_and_velocity_match_numpy(minilm_resid):
    data = minilm_resid.double().numpy()
    steps = data[:, 1:] - data[:, :-1]
    np.testing.assert_allclose(
        tld.metrics.velocity(minilm_resid).double().numpy(), np.linalg.norm(steps, axis=-1), rtol=1e-5
    )
    a, b = data[:, :-1], data[:, 1:]
    cosine = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    np.testing.assert_allclose(
        tld.metrics.cosine_similarity(minilm_resid).double().numpy(), cosine, rtol=1e-5, atol=1e-6
    )


def test_rotations_match_the_papers_formula_in_numpy(minilm_resid, units):
    ours = tld.metrics.rotations(minilm_resid[:20, :, units]).double().numpy()
    data = minilm_resid[:20, :, units].double().numpy()
    for sample in range(data.shape[0]):
        for column in range(data.shape[2]):
            expected = paper_rotations(data[sample, :, column])
            assert ours[sample, column] == pytest.approx(expected, abs=1e-9)
