"""Mean activation, unit order, norms, cosine similarity and velocity against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from metrics_reference import make_resid

from tl_dynamics.metrics import cosine_similarity, mean_activation, norms, unit_order, velocity


@pytest.fixture(scope="module")
def resid() -> torch.Tensor:
    return make_resid(batch=16, n_sublayers=7, d_model=12, seed=3, dtype=torch.float64)


def test_mean_activation_matches_numpy(resid):
    np.testing.assert_allclose(
        mean_activation(resid).numpy(), resid.numpy().mean(axis=0), rtol=1e-12
    )


def test_unit_order_sorts_by_last_sublayer_mean(resid):
    expected = np.argsort(resid.numpy().mean(axis=0)[-1], kind="stable")
    order = unit_order(resid)
    assert order.dtype == torch.int64
    np.testing.assert_array_equal(order.numpy(), expected)
    assert torch.all(mean_activation(resid)[-1, order].diff() >= 0)


def test_norms_match_numpy(resid):
    np.testing.assert_allclose(
        norms(resid).numpy(), np.linalg.norm(resid.numpy(), axis=-1), rtol=1e-12
    )


def test_cosine_and_velocity_match_numpy(resid):
    h = resid.numpy()
    a, b = h[:, :-1], h[:, 1:]
    cosine = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    np.testing.assert_allclose(cosine_similarity(resid).numpy(), cosine, rtol=1e-12)
    np.testing.assert_allclose(velocity(resid).numpy(), np.linalg.norm(b - a, axis=-1), rtol=1e-12)


@given(
    batch=st.integers(1, 4),
    n_sublayers=st.integers(2, 6),
    d_model=st.integers(1, 9),
    scale=st.floats(1e-3, 1e3),
)
@settings(max_examples=25, deadline=None)
def test_identical_sublayers_have_cosine_one_and_velocity_zero(batch, n_sublayers, d_model, scale):
    h = scale * (torch.rand(batch, 1, d_model) + 0.1)
    resid = h.expand(batch, n_sublayers, d_model)
    torch.testing.assert_close(cosine_similarity(resid), torch.ones(batch, n_sublayers - 1))
    assert torch.equal(velocity(resid), torch.zeros(batch, n_sublayers - 1))


def test_opposite_vectors_have_cosine_minus_one_and_zero_vector_nan():
    resid = torch.tensor([[[1.0, 2.0], [-2.0, -4.0], [0.0, 0.0]]])
    cosine = cosine_similarity(resid)
    assert cosine[0, 0].item() == pytest.approx(-1.0)
    assert cosine[0, 1].isnan()
    assert velocity(resid)[0].tolist() == pytest.approx([45**0.5, 20**0.5])


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
    ],
)
def test_half_inputs_are_upcast(dtype, expected):
    resid = torch.randn(3, 4, 5).to(dtype)
    for function in (mean_activation, norms, cosine_similarity, velocity):
        out = function(resid)
        assert out.dtype == expected
        assert out.device == resid.device
    torch.testing.assert_close(velocity(resid), velocity(resid.to(expected)), rtol=0, atol=0)
