"""Every public metric rejects bad ``resid`` the same way, naming the argument."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tl_dynamics import metrics
from tl_dynamics.metrics._validation import chunk_slices

# (function, fewest sublayers, fewest samples) for every function taking resid.
RESID_FUNCTIONS = [
    pytest.param(metrics.mean_activation, 1, 1, id="mean_activation"),
    pytest.param(metrics.unit_order, 1, 1, id="unit_order"),
    pytest.param(metrics.norms, 1, 1, id="norms"),
    pytest.param(metrics.cosine_similarity, 2, 1, id="cosine_similarity"),
    pytest.param(metrics.velocity, 2, 1, id="velocity"),
    pytest.param(metrics.unit_correlation, 2, 3, id="unit_correlation"),
    pytest.param(metrics.pairwise_unit_correlation, 2, 3, id="pairwise_unit_correlation"),
    pytest.param(metrics.correlation_distribution, 2, 3, id="correlation_distribution"),
    pytest.param(metrics.mutual_information, 2, 3, id="mutual_information"),
    pytest.param(metrics.phase_portrait, 2, 1, id="phase_portrait"),
    pytest.param(metrics.rotations, 3, 1, id="rotations"),
    pytest.param(
        lambda resid: metrics.rotation_null(resid, n_shuffles=2), 3, 1, id="rotation_null"
    ),
]
NEEDS_SUBLAYERS = [p for p in RESID_FUNCTIONS if p.values[1] > 1]
ARGS = ("function", "min_sublayers", "min_batch")


@pytest.mark.parametrize(ARGS, RESID_FUNCTIONS)
def test_valid_minimal_input_runs(function, min_sublayers, min_batch):
    function(torch.randn(max(min_batch, 3), min_sublayers, 4))


@pytest.mark.parametrize(ARGS, RESID_FUNCTIONS)
def test_rejects_non_tensor(function, min_sublayers, min_batch):
    with pytest.raises(TypeError, match=r"resid must be a torch.Tensor .* got ndarray"):
        function(np.zeros((4, 4, 4)))


@pytest.mark.parametrize(ARGS, RESID_FUNCTIONS)
def test_rejects_integer_dtype(function, min_sublayers, min_batch):
    expected = r"resid must be a floating tensor.*got dtype torch.int64"
    with pytest.raises(TypeError, match=expected):
        function(torch.zeros(4, 4, 4, dtype=torch.int64))


@pytest.mark.parametrize(ARGS, RESID_FUNCTIONS)
def test_rejects_wrong_ndim(function, min_sublayers, min_batch):
    with pytest.raises(ValueError, match=r"resid must have 3 dims .* got shape \(4, 4\)"):
        function(torch.zeros(4, 4))


@pytest.mark.parametrize(ARGS, NEEDS_SUBLAYERS)
def test_rejects_too_few_sublayers(function, min_sublayers, min_batch):
    expected = rf"at least {min_sublayers} sublayers .* got {min_sublayers - 1}"
    with pytest.raises(ValueError, match=expected):
        function(torch.randn(4, min_sublayers - 1, 3))


@pytest.mark.parametrize(ARGS, RESID_FUNCTIONS)
def test_rejects_too_few_samples(function, min_sublayers, min_batch):
    with pytest.raises(
        ValueError, match=rf"at least {min_batch} samples .* got {min_batch - 1}"
    ):
        function(torch.randn(min_batch - 1, 4, 3))


@pytest.mark.parametrize(ARGS, RESID_FUNCTIONS)
def test_rejects_empty_units(function, min_sublayers, min_batch):
    with pytest.raises(ValueError, match=r"at least 1 unit \(d_model"):
        function(torch.randn(4, 4, 0))


@pytest.mark.parametrize(ARGS, RESID_FUNCTIONS)
def test_rejects_non_finite_and_names_sublayers(function, min_sublayers, min_batch):
    resid = torch.randn(4, 5, 3)
    resid[1, 2, 0] = float("nan")
    resid[3, 4, 2] = float("inf")
    with pytest.raises(ValueError, match=r"non-finite values .* at sublayer index \[2, 4\]"):
        function(resid)


def test_chunk_slices_cover_the_range_and_check_chunk_size():
    chunks = [(s.start, s.stop) for s in chunk_slices(7, 1, chunk_size=3)]
    assert chunks == [(0, 3), (3, 6), (6, 7)]
    assert [(s.start, s.stop) for s in chunk_slices(5, 10**12)] == [(i, i + 1) for i in range(5)]
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1; got 0"):
        list(chunk_slices(5, 1, chunk_size=0))
    with pytest.raises(TypeError, match="chunk_size must be an int >= 1; got float"):
        list(chunk_slices(5, 1, chunk_size=2.0))
