"""jPCA: the closed-form skew fit against brute force, known rotations, noise, the null."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
import torch
from einops import rearrange
from sklearn.decomposition import PCA

import tl_dynamics as tld
from tl_dynamics import synthetic
from tl_dynamics.jpca import DEFAULT_SURROGATES, JPCAResult, jpca, skew_least_squares

pytestmark = pytest.mark.usefixtures("one_thread")


def rotating_population(
    angles: list[float], batch: int = 40, n_sublayers: int = 30, d_model: int = 12, seed: int = 0
) -> torch.Tensor:
    """Each sample starts at a random point and turns by ``angles[p]`` radians per step in
    plane ``p`` (planes embedded orthonormally in ``d_model``), plus a shared drift that
    the per-sublayer centring removes."""
    generator = np.random.default_rng(seed)
    k = 2 * len(angles)
    rotation = np.zeros((k, k))
    for p, theta in enumerate(angles):
        c, s = math.cos(theta), math.sin(theta)
        rotation[2 * p : 2 * p + 2, 2 * p : 2 * p + 2] = [[c, s], [-s, c]]  # row z -> z R
    z = np.empty((batch, n_sublayers, k))
    z[:, 0] = generator.standard_normal((batch, k)) * np.repeat(np.linspace(2, 1, len(angles)), 2)
    for step in range(1, n_sublayers):
        z[:, step] = z[:, step - 1] @ rotation
    embedding, _ = np.linalg.qr(generator.standard_normal((d_model, k)))
    drift = np.outer(np.arange(n_sublayers), generator.standard_normal(d_model))
    return torch.from_numpy(z @ embedding.T + drift)


def brute_force_skew(z_t: np.ndarray, dz: np.ndarray) -> np.ndarray:
    """numpy lstsq on the vectorised parameterisation M = sum_p beta_p (e_i e_j^T - e_j e_i^T)."""
    k = z_t.shape[1]
    generators = []
    for i, j in combinations(range(k), 2):
        e = np.zeros((k, k))
        e[i, j], e[j, i] = 1.0, -1.0
        generators.append(e)
    design = np.stack([(z_t @ e).reshape(-1) for e in generators], axis=1)
    beta = np.linalg.lstsq(design, dz.reshape(-1), rcond=None)[0]
    return np.tensordot(beta, np.array(generators), axes=1)


def steps(scores: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    z = scores.numpy()
    return (
        rearrange(z[:, :-1], "b t k -> (b t) k"),
        rearrange(z[:, 1:] - z[:, :-1], "b t k -> (b t) k"),
    )


@pytest.mark.parametrize("k", [2, 3, 5])
def test_closed_form_skew_fit_matches_brute_force_least_squares(k):
    generator = np.random.default_rng(k)
    z_t = generator.standard_normal((200, k)) @ generator.standard_normal((k, k))
    dz = generator.standard_normal((200, k))
    m = skew_least_squares(z_t, dz)
    np.testing.assert_allclose(m, -m.T, atol=1e-14)
    np.testing.assert_allclose(m, brute_force_skew(z_t, dz), atol=1e-10)


@pytest.fixture(scope="module")
def noisy_rotation():
    resid = rotating_population([0.3, 0.1], seed=1)
    resid = resid + 0.05 * torch.randn(resid.shape, generator=torch.Generator().manual_seed(0))
    return jpca(resid, k=6, n_shuffles=99, seed=0)


def test_jpca_fits_match_numpy_least_squares_on_its_scores(noisy_rotation):
    result = noisy_rotation
    z_t, dz = steps(result.scores)
    np.testing.assert_allclose(result.M_skew.numpy(), brute_force_skew(z_t, dz), atol=1e-10)
    m_full = np.linalg.lstsq(z_t, dz, rcond=None)[0]
    np.testing.assert_allclose(result.M_full.numpy(), m_full, atol=1e-10)
    r2 = 1 - np.sum((dz - z_t @ m_full) ** 2) / np.sum(dz**2)
    assert result.r2_full == pytest.approx(r2, abs=1e-12)
    assert result.r2_full >= result.r2_skew


def test_jpca_scores_are_sklearn_pca_of_the_per_sublayer_centred_states():
    resid = rotating_population([0.2], batch=10, n_sublayers=8, d_model=5, seed=3)
    resid = resid + torch.randn(resid.shape, generator=torch.Generator().manual_seed(1))
    result = jpca(resid, k=4, n_shuffles=5)
    centred = (resid - resid.mean(0)).numpy()
    scores = PCA(n_components=4).fit_transform(rearrange(centred, "b s d -> (b s) d"))
    expected = rearrange(scores, "(b s) k -> b s k", b=10)
    signs = np.sign((result.scores.numpy() * expected).sum(axis=(0, 1)))  # per-axis sign flips
    np.testing.assert_allclose(result.scores.numpy(), expected * signs, atol=1e-9)


@pytest.mark.parametrize("angles", [[0.2], [0.3, 0.1]])
def test_a_pure_rotation_is_skew_with_the_right_turns(angles):
    n_sublayers = 30
    result = jpca(rotating_population(angles, n_sublayers=n_sublayers), k=2 * len(angles),
                  n_shuffles=49)
    # A discrete rotation by theta has skew part sin(theta) and r2_skew cos^2(theta / 2)
    # when the states are isotropic in its plane; sampled states are nearly so.
    expected_r2 = np.mean([math.cos(a / 2) ** 2 for a in angles])
    assert result.r2_skew == pytest.approx(expected_r2, abs=0.01)
    assert result.r2_full == pytest.approx(1.0, abs=1e-9)
    expected_turns = sorted((math.sin(a) * (n_sublayers - 1) / (2 * math.pi) for a in angles),
                            reverse=True)
    np.testing.assert_allclose(result.rotations.numpy(), expected_turns, rtol=0.03)
    assert result.p_value == pytest.approx(1 / 50)


def test_jpc_planes_are_orthonormal_and_turn_counter_clockwise(noisy_rotation):
    result = noisy_rotation
    assert isinstance(result, JPCAResult)
    for pair, plane in enumerate(result.planes):
        np.testing.assert_allclose(plane.T @ plane, np.eye(2), atol=1e-10)
        flow = plane.T @ result.M_skew @ plane
        assert float(flow[0, 1]) == pytest.approx(float(result.frequencies[pair]), rel=1e-9)
    for pair in range(2):  # the two planes that really rotate; the third fits noise
        path = result.plane_trajectories(pair)
        # Signed area swept by each sample's path: positive for counter-clockwise turns.
        x, y = path[..., 0], path[..., 1]
        area = (x[:, :-1] * y[:, 1:] - x[:, 1:] * y[:, :-1]).sum(dim=1)
        assert bool((area > 0).all())


def test_jpca_on_iid_noise_does_not_beat_its_null():
    """Sublayers iid: the true order is one more shuffle, so p is uniform."""
    significant = 0
    for seed in range(20):
        noise = torch.randn(30, 10, 8, generator=torch.Generator().manual_seed(seed))
        significant += jpca(noise, k=4, n_shuffles=99, seed=seed).p_value < 0.01
    assert significant <= 3  # expected 0.2 of 20; P(>= 4 | uniform p) < 1e-4


def test_jpca_is_reproducible_and_seeded(noisy_rotation):
    resid = rotating_population([0.3, 0.1], seed=1)
    resid = resid + 0.05 * torch.randn(resid.shape, generator=torch.Generator().manual_seed(0))
    again = jpca(resid, k=6, n_shuffles=99, seed=0)
    torch.testing.assert_close(again.null_r2_skew, noisy_rotation.null_r2_skew)
    other = jpca(resid, k=6, n_shuffles=99, seed=1)
    assert not torch.equal(other.null_r2_skew, noisy_rotation.null_r2_skew)


def test_jpca_frame_and_exports(noisy_rotation):
    frame = noisy_rotation.to_frame()
    assert list(frame["pair"]) == [0, 1, 2]
    assert frame["frequency"].is_monotonic_decreasing
    assert tld.jpca is jpca and tld.JPCAResult is JPCAResult


def test_jpca_reads_a_dynamics_cache(minilm, texts):
    dyn = tld.collect(minilm, texts, progress=False)
    result = jpca(dyn, k=4, n_shuffles=19)
    assert result.labels == dyn.labels
    assert result.scores.shape == (len(texts), len(dyn.labels), 4)
    assert 0 <= result.r2_skew <= result.r2_full <= 1


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"k": 1}, ValueError, "k must be an int"),
        ({"k": 99}, ValueError, "k must be an int"),
        ({"n_shuffles": 0}, ValueError, "n_shuffles must be an int"),
        ({"seed": -1}, ValueError, "seed must be an int"),
    ],
)
def test_jpca_argument_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        jpca(torch.randn(5, 6, 8), **kwargs)


def test_jpca_rejects_too_short_or_rank_deficient_input():
    with pytest.raises(ValueError, match="3 sublayers"):
        jpca(torch.randn(5, 2, 4))
    flat = torch.randn(6, 5, 1).expand(6, 5, 3).clone()  # every state on one line
    with pytest.raises(ValueError, match="rank deficient"):
        jpca(flat, k=2, n_shuffles=1)


@pytest.mark.parametrize("panel", ["jpca_plane", "jpca_null"])
def test_jpca_plots_are_labelled_figures(noisy_rotation, panel):
    figure = getattr(tld.plot, panel)(noisy_rotation)
    assert figure.data and figure.layout.title.text
    assert figure.layout.xaxis.title.text and figure.layout.yaxis.title.text
    with pytest.raises(TypeError, match="result must be a JPCAResult"):
        getattr(tld.plot, panel)(noisy_rotation.scores)


def test_jpca_plane_draws_the_plane_trajectories(noisy_rotation):
    figure = tld.plot.jpca_plane(noisy_rotation, pair=1, samples=3)
    path = noisy_rotation.plane_trajectories(1)[2]
    np.testing.assert_allclose(figure.data[4].x, path[:, 0].numpy())


def test_null_from_sublayer_moments_equals_refitting_each_permuted_order(noisy_rotation):
    """The null's moment formulas against a refit on the permuted scores, same draws."""
    z = noisy_rotation.scores.numpy()
    generator = np.random.Generator(np.random.PCG64(noisy_rotation.seed))
    refits = []
    for _ in range(noisy_rotation.n_shuffles):
        permuted = torch.from_numpy(z[:, generator.permutation(z.shape[1])])
        z_t, dz = steps(permuted)
        m = brute_force_skew(z_t, dz)
        refits.append(1 - np.sum((dz - z_t @ m) ** 2) / np.sum(dz**2))
    np.testing.assert_allclose(noisy_rotation.null_r2_skew.numpy(), refits, rtol=0, atol=1e-10)


def test_bootstrap_r2_skew_equals_refitting_on_the_weighted_samples(noisy_rotation):
    """Integer weights repeat samples: the moment formula against a refit on the repeats."""
    from tl_dynamics.jpca import bootstrap_r2_skew

    counts = np.random.default_rng(0).multinomial(40, np.full(40, 1 / 40), size=3)
    weights = torch.from_numpy(counts / 40.0)
    expected = []
    for row in counts:
        z_t, dz = steps(noisy_rotation.scores[np.repeat(np.arange(40), row)])
        m = brute_force_skew(z_t, dz)
        expected.append(1 - np.sum((dz - z_t @ m) ** 2) / np.sum(dz**2))
    np.testing.assert_allclose(bootstrap_r2_skew(noisy_rotation, weights), expected, atol=1e-10)
    uniform = torch.full((1, 40), 1 / 40, dtype=torch.float64)
    assert bootstrap_r2_skew(noisy_rotation, uniform)[0] == pytest.approx(noisy_rotation.r2_skew, abs=1e-12)


# ----------------------------------------------------------------- the smooth null (step 8)


def smoothed_noise(seed, n=120, sublayers=16, d=12, width=2.5):
    """iid Gaussian noise smoothed over depth: smooth trajectories, no rotation."""
    from scipy.ndimage import gaussian_filter1d

    noise = np.random.default_rng(seed).standard_normal((n, sublayers, d))
    return torch.from_numpy(gaussian_filter1d(noise, width, axis=1))


def test_maximum_entropy_surrogates_keep_both_covariances():
    from tl_dynamics._surrogates import fit_maximum_entropy

    rng = np.random.default_rng(0)
    z = (rng.standard_normal((200, 10, 4)) @ rng.standard_normal((4, 4))).cumsum(axis=1)
    z = z - z.mean(0)
    model = fit_maximum_entropy(z)
    fake = model.sample(40000, np.random.default_rng(1))
    for pattern in ("bsk,buk->su", "bsk,bsl->kl"):
        target = np.einsum(pattern, z, z) / len(z)
        got = np.einsum(pattern, fake, fake) / len(fake)
        assert np.abs(got - target).max() < 0.03 * np.abs(target).max()
    # no rotation: the lagged cross-covariance of the units is symmetric
    lagged = np.einsum("bsk,bsl->kl", fake[:, :-1], fake[:, 1:]) / len(fake)
    assert np.abs(lagged - lagged.T).max() < 0.03 * np.abs(lagged).max()


@pytest.mark.parametrize("make", ["growth", "smooth"])
def test_smooth_flows_beat_the_layer_shuffles_but_not_the_smooth_null(make):
    """The issue's failure: any smooth ordered flow beat the layer-shuffle null (shown
    here: its p sits at the floor); the maximum-entropy null keeps the smoothness and is
    not beaten more often than chance."""
    shuffle_floor, beaten = 0, 0
    for seed in range(8):
        if make == "growth":
            x = synthetic.structured("growth", 120, 16, 12, seed).resid
        else:
            x = smoothed_noise(seed)
        result = jpca(x, k=4, n_shuffles=99, n_surrogates=99, seed=seed)
        shuffle_floor += result.p_value == pytest.approx(1 / 100)
        beaten += result.surrogate_p_value <= 0.01
    assert shuffle_floor >= 6
    assert beaten <= 1  # expected 0.08 of 8 under a uniform p


def test_a_planted_rotation_beats_the_smooth_null_and_holds_out_of_sample(noisy_rotation):
    assert noisy_rotation.surrogate_p_value == pytest.approx(1 / (1 + DEFAULT_SURROGATES))
    assert noisy_rotation.r2_skew_cv == pytest.approx(noisy_rotation.r2_skew, abs=0.05)
    assert noisy_rotation.r2_full_cv > 0.9


def test_held_out_fit_of_noise_explains_nothing():
    """On iid states dz = z_{t+1} - z_t, so M = -I explains half of ||dz||^2 whatever the
    order, out of sample too; the free fit's extra in-sample r2 is overfitting, and the
    skew fit explains nothing held out."""
    noise = torch.randn(60, 12, 10, generator=torch.Generator().manual_seed(0))
    result = jpca(noise, k=6, n_shuffles=9, n_surrogates=9)
    assert result.r2_full_cv == pytest.approx(0.5, abs=0.03)
    assert result.r2_full_cv < result.r2_full
    assert abs(result.r2_skew_cv) < 0.01 and result.r2_skew_cv < result.r2_skew


def test_halves_follow_texts_not_samples():
    """Two samples of one text never fall in different halves: a cache with every text
    repeated gives the held-out fit of the texts alone."""
    resid = rotating_population([0.3], batch=40, n_sublayers=12, d_model=6)
    resid = resid + 0.1 * torch.randn(resid.shape, generator=torch.Generator().manual_seed(0), dtype=resid.dtype)
    doubled = torch.cat([resid, resid]).float()
    labels = [str(s) for s in range(12)]
    cache = tld.DynamicsCache(doubled, labels, torch.arange(40).repeat(2), torch.zeros(80, dtype=torch.long))
    by_text = jpca(cache, k=2, n_shuffles=9, n_surrogates=9)
    by_sample = jpca(doubled, k=2, n_shuffles=9, n_surrogates=9)
    assert by_text.r2_full_cv < by_sample.r2_full_cv  # samples split across halves leak
