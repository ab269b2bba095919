"""Dynamical similarity (DSA): resampling, known answers, controls, the random twin."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tl_dynamics as tld
from tl_dynamics.similarity import (
    DynamicalSimilarity,
    dynamical_similarity,
    random_weight_twin,
    resample_depth,
)

pytest.importorskip("DSA")
pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"iters": 300, "n_components": 4, "n_points": 12}  # small problems converge fast


def linear_flow(theta: float, decay: float, seed: int, batch: int = 30, steps: int = 12,
                d_model: int = 8) -> torch.Tensor:
    """States turning by ``theta`` per step in one plane and decaying by ``decay`` in the
    others, seen through a random orthogonal embedding (its own per ``seed``)."""
    generator = np.random.default_rng(seed)
    operator = np.eye(4) * decay
    c, s = np.cos(theta), np.sin(theta)
    operator[:2, :2] = [[c, s], [-s, c]]
    z = np.empty((batch, steps, 4))
    z[:, 0] = generator.standard_normal((batch, 4))
    for t in range(1, steps):
        z[:, t] = z[:, t - 1] @ operator + 0.01 * generator.standard_normal((batch, 4))
    embedding, _ = np.linalg.qr(generator.standard_normal((d_model, 4)))
    return torch.from_numpy(z @ embedding.T)


def test_resample_depth_matches_numpy_interpolation():
    resid = torch.randn(3, 7, 2, dtype=torch.float64)
    resampled = resample_depth(resid, 11)
    depth = np.linspace(0, 1, 7)
    for b in range(3):
        for d in range(2):
            expected = np.interp(np.linspace(0, 1, 11), depth, resid[b, :, d].numpy())
            np.testing.assert_allclose(resampled[b, :, d].numpy(), expected, atol=1e-12)
    torch.testing.assert_close(resample_depth(resid, 7), resid)


def test_same_dynamics_in_other_coordinates_are_closer_than_other_dynamics():
    same_a = linear_flow(0.4, 0.9, seed=0)
    same_b = linear_flow(0.4, 0.9, seed=1) * 50  # other embedding, other scale
    other = linear_flow(0.05, 0.5, seed=2)
    result = dynamical_similarity({"a": same_a, "b": same_b, "other": other}, **FAST)
    assert isinstance(result, DynamicalSimilarity)
    assert result.between("a", "b") < 0.5 * result.between("a", "other")
    torch.testing.assert_close(result.distance, result.distance.T)
    assert torch.all(result.distance.diagonal() == 0)


def test_pair_form_and_frame():
    result = dynamical_similarity(linear_flow(0.4, 0.9, 0), linear_flow(0.1, 0.9, 1), **FAST)
    assert result.names == ("a", "b")
    frame = result.to_frame()
    assert list(frame.columns) == ["a", "b", "distance"] and len(frame) == 1
    assert frame["distance"][0] == pytest.approx(result.between("b", "a"))


def test_different_depth_and_width_are_compared_on_normalised_depth():
    shallow = linear_flow(0.4, 0.9, seed=0, steps=10, d_model=6)
    deep = resample_depth(linear_flow(0.4, 0.9, seed=0, steps=10, d_model=6), 19)
    result = dynamical_similarity(shallow, deep, **FAST)
    assert result.between("a", "b") < 0.05


def test_random_weight_twin_changes_every_weight_and_keeps_the_model(tiny_models):
    model = tiny_models["llama"]
    before = {name: p.detach().clone() for name, p in model.original_model.named_parameters()}
    twin = random_weight_twin(model, seed=3)
    again = random_weight_twin(model, seed=3)
    for name, param in model.original_model.named_parameters():
        torch.testing.assert_close(param.detach(), before[name])
    twin_params = dict(twin.original_model.named_parameters())
    changed = [name for name, value in before.items()
               if value.ndim == 2 and not torch.equal(twin_params[name].detach(), value)]
    assert changed == [name for name, value in before.items() if value.ndim == 2]
    for name, param in again.original_model.named_parameters():
        torch.testing.assert_close(param, twin_params[name])
    assert not twin.training
    dyn = tld.collect(twin, ["The cat sat on the mat."], progress=False)
    assert torch.isfinite(dyn.resid).all()


def test_argument_errors():
    x = linear_flow(0.4, 0.9, 0)
    with pytest.raises(TypeError, match="b is missing"):
        dynamical_similarity(x)
    with pytest.raises(ValueError, match="at least 2 conditions"):
        dynamical_similarity({"only": x})
    with pytest.raises(ValueError, match="n_components must be an int"):
        dynamical_similarity(x, x, n_components=99)
    with pytest.raises(TypeError, match="Hugging Face"):
        random_weight_twin(type("Fake", (), {"cfg": type("C", (), {"n_layers": 1})(),
                                             "hook_dict": {}, "to_tokens": None,
                                             "run_with_hooks": None})())


def test_dsa_matrix_plot():
    result = dynamical_similarity(linear_flow(0.4, 0.9, 0), linear_flow(0.1, 0.9, 1), **FAST)
    figure = tld.plot.dsa_matrix(result)
    assert figure.data[0].z[0][1] == pytest.approx(result.between("a", "b"))
    assert figure.layout.title.text and figure.layout.xaxis.title.text
    with pytest.raises(TypeError, match="DynamicalSimilarity"):
        tld.plot.dsa_matrix(result.distance)


# ------------------------------------------------------- noise floors and intervals


def test_noise_floors_separate_other_dynamics_from_other_texts():
    """Two draws of one flow (other embedding, other texts) sit at about the noise floor;
    a different flow sits far above it."""
    conditions = {"a": linear_flow(0.4, 0.9, 0, batch=40), "b": linear_flow(0.4, 0.9, 1, batch=40),
                  "other": linear_flow(0.05, 0.5, 2, batch=40)}
    result = dynamical_similarity(conditions, **FAST, n_splits=2, n_resamples=4, seed=0)
    assert result.noise_floor.shape == (3,) and bool((result.noise_floor > 0).all())
    assert result.distance_ci.shape == (3, 3, 2)
    assert bool((result.distance_ci[..., 0] <= result.distance_ci[..., 1]).all())
    assert bool((result.distance_ci[..., 0] >= 0).all())
    frame = result.to_frame().set_index(["a", "b"])
    assert not frame.loc[("a", "b"), "above_floors"]
    assert frame.loc[("a", "other"), "above_floors"] and frame.loc[("b", "other"), "above_floors"]
    again = dynamical_similarity(conditions, **FAST, n_splits=2, n_resamples=4, seed=0)
    torch.testing.assert_close(again.noise_floor, result.noise_floor)
    torch.testing.assert_close(again.distance_ci, result.distance_ci)


def test_without_resamples_there_is_no_floor_or_interval():
    result = dynamical_similarity(linear_flow(0.4, 0.9, 0), linear_flow(0.1, 0.9, 1), **FAST)
    assert result.noise_floor is None and result.distance_ci is None
    assert list(result.to_frame().columns) == ["a", "b", "distance"]


def test_halves_and_resamples_keep_a_texts_samples_together():
    from tl_dynamics.similarity import _bootstrap_rows, _halves

    texts = np.repeat(np.arange(10), 3)  # 3 samples per text
    first, second = _halves(texts, np.random.default_rng(0))
    assert not np.any(first & second) and np.all(first | second)
    assert set(texts[first]).isdisjoint(texts[second]) and len(set(texts[first])) == 5
    rows = _bootstrap_rows(texts, np.random.default_rng(0))
    assert len(rows) == 30
    counts = np.bincount(texts[rows], minlength=10)
    assert np.all(counts % 3 == 0)  # every drawn text brings its 3 samples


def test_a_floor_needs_four_texts_per_condition():
    few = torch.randn(3, 12, 8, dtype=torch.float64)
    with pytest.raises(tld.DynamicsInputError, match="at least 4 texts"):
        dynamical_similarity(few, few, **FAST, n_splits=1)
