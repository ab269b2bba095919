"""Rotation counts in other bases: units, a seeded random rotation, principal axes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from einops import rearrange
from hypothesis import given, settings
from hypothesis import strategies as st
from metrics_reference import make_resid, paper_rotations
from sklearn.decomposition import PCA

from tl_dynamics.metrics import BASES, basis_matrix, rotation_null, rotations

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def resid() -> torch.Tensor:
    return make_resid(batch=5, n_sublayers=10, d_model=6, seed=3, dtype=torch.float64)


def numpy_counts(resid: np.ndarray) -> np.ndarray:
    """Paper formula per (sample, axis) of a ``[batch, sublayer, axis]`` array."""
    return np.array(
        [[paper_rotations(resid[b, :, d]) for d in range(resid.shape[2])] for b in range(len(resid))]
    )


@pytest.mark.parametrize("basis", BASES)
def test_basis_matrix_is_orthogonal(resid, basis):
    change = basis_matrix(resid, basis, seed=1)
    assert change.shape == (6, 6) and change.dtype == torch.float64
    torch.testing.assert_close(change.T @ change, torch.eye(6, dtype=torch.float64))


def test_units_basis_is_the_identity_and_the_default(resid):
    torch.testing.assert_close(basis_matrix(resid, "units"), torch.eye(6, dtype=torch.float64))
    torch.testing.assert_close(rotations(resid, basis="units"), rotations(resid))


def test_random_basis_depends_on_seed_and_width_only(resid):
    other = torch.randn(3, 4, 6)
    torch.testing.assert_close(basis_matrix(resid, seed=5), basis_matrix(other, seed=5))
    assert not torch.allclose(basis_matrix(resid, seed=5), basis_matrix(resid, seed=6))


def test_random_rotation_is_haar_distributed():
    """Under Haar measure on O(n), tr(Q) has mean 0 and variance 1 (Diaconis & Shahshahani
    1994); QR without fixing the signs of R's diagonal is biased and fails this."""
    resid = torch.zeros(1, 1, 8)
    traces = np.array([float(basis_matrix(resid, seed=s).trace()) for s in range(600)])
    assert abs(traces.mean()) < 4 / math.sqrt(600)
    assert 0.75 < traces.var() < 1.3


def test_random_basis_counts_the_rotated_stream(resid):
    change = basis_matrix(resid, "random", seed=2)
    rotated = (resid @ change).numpy()
    np.testing.assert_allclose(
        rotations(resid, basis="random", seed=2).numpy(), numpy_counts(rotated), atol=1e-9
    )


def test_pca_basis_counts_sklearn_principal_components(resid):
    vectors = rearrange(resid, "b s d -> (b s) d").numpy()
    scores = PCA(n_components=6).fit_transform(vectors).reshape(resid.shape)
    # Counts ignore translations and axis flips, so sklearn's centring and signs agree.
    np.testing.assert_allclose(
        rotations(resid, basis="pca").numpy(), numpy_counts(scores), atol=1e-9
    )


def test_pca_basis_of_axis_aligned_data_reorders_the_units():
    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(30 * 7, 4, generator=generator, dtype=torch.float64)
    vectors = vectors - vectors.mean(dim=0)
    # Whitened exactly (covariance = identity), then scaled: the principal axes are the
    # unit axes, in the order 1, 3, 0, 2 of decreasing variance.
    whitened = vectors @ torch.linalg.inv(torch.linalg.cholesky(vectors.T @ vectors)).T
    scales = torch.tensor([1.0, 5.0, 0.2, 2.0], dtype=torch.float64)
    resid = rearrange(whitened * scales, "(b s) d -> b s d", b=30)
    torch.testing.assert_close(
        rotations(resid, basis="pca"), rotations(resid)[:, [1, 3, 0, 2]], atol=1e-9, rtol=0
    )


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_pca_counts_do_not_depend_on_the_basis_of_the_input(seed):
    resid = make_resid(batch=6, n_sublayers=8, d_model=4, seed=seed, dtype=torch.float64)
    rotated = resid @ basis_matrix(resid, "random", seed=seed)
    torch.testing.assert_close(
        rotations(rotated, basis="pca"), rotations(resid, basis="pca"), atol=1e-6, rtol=0
    )


def test_one_oscillating_direction_turns_the_same_on_every_axis():
    """A single wave along one direction: every axis of any basis sees a scaled copy."""
    depth = torch.arange(40, dtype=torch.float64) / 39
    wave = torch.sin(2 * math.pi * 2 * depth)
    direction = torch.tensor([0.6, -0.8, 0.0], dtype=torch.float64)
    resid = (wave[:, None] * direction).expand(2, 40, 3) + torch.tensor([1.0, 2.0, 3.0])
    counts = rotations(resid, basis="random", seed=4)
    torch.testing.assert_close(counts, torch.full_like(counts, -2.0), atol=0.02, rtol=0)


@pytest.mark.parametrize("trajectory", ["mean", "sample"])
@pytest.mark.parametrize("basis", ["random", "pca"])
def test_rotation_null_in_a_basis_observes_the_same_counts(resid, basis, trajectory):
    null = rotation_null(resid, n_shuffles=20, seed=7, basis=basis, trajectory=trajectory)
    assert null.basis == basis
    counts = rotations(resid, basis=basis, seed=7, trajectory=trajectory)
    expected = counts if trajectory == "mean" else counts.mean(dim=0)
    torch.testing.assert_close(null.observed, expected)
    rotated = resid @ basis_matrix(resid, basis, seed=7)
    plain = rotation_null(rotated, n_shuffles=20, seed=7, trajectory=trajectory)
    torch.testing.assert_close(null.null, plain.null, atol=1e-5, rtol=0)


def test_units_null_is_unchanged_by_the_basis_argument(resid):
    default = rotation_null(resid, n_shuffles=15, seed=3)
    explicit = rotation_null(resid, n_shuffles=15, seed=3, basis="units")
    assert default.basis == "units"
    torch.testing.assert_close(default.null, explicit.null)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"basis": "neurons"}, ValueError, "basis must be one of"),
        ({"basis": "random", "seed": 1.5}, TypeError, "seed must be an int"),
    ],
)
def test_basis_argument_errors(resid, kwargs, error, message):
    with pytest.raises(error, match=message):
        rotations(resid, **kwargs)
    with pytest.raises(error, match=message):
        rotation_null(resid, n_shuffles=2, **kwargs)


def test_rotation_bases_plot_groups_every_basis(resid):
    import tl_dynamics as tld

    nulls = [rotation_null(resid, n_shuffles=10, basis=b) for b in BASES]
    figure = tld.plot.rotation_bases(nulls)
    assert len(figure.data) == 2 * len(BASES)
    assert {trace.x[0].split("<br>")[0] for trace in figure.data} == set(BASES)
    assert figure.layout.xaxis.title.text and figure.layout.yaxis.title.text
    with pytest.raises(TypeError, match="nulls must be a RotationNull"):
        tld.plot.rotation_bases([])
