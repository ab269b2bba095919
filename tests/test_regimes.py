"""tld.regimes: a planted switching system is recovered; the HMM parts agree with references."""

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from sklearn.metrics import adjusted_rand_score

import tl_dynamics as tld
from tl_dynamics.errors import DynamicsInputError, InputTypeError
from tl_dynamics.regimes import MAX_REGIMES, AutoregressiveHMM, forecast, token_trajectories

N_PLANTED = 3  # regimes of the planted system
LATENT = 4  # its state's dimension, embedded in D_MODEL
D_MODEL = 32


def planted_switching(n=48, t=60, k=N_PLANTED, stay=0.95, noise=0.05, seed=0):
    """``[n, t, D_MODEL]`` trajectories of a sticky switching linear system and ``[n, t - 1]``
    regimes: regime ``j`` rotates two planes by ``0.3 + 0.5 j`` rad per step (radius 0.97)
    and adds its own offset."""
    rng = np.random.default_rng(seed)
    matrices = []
    for j in range(k):
        basis, _ = np.linalg.qr(rng.normal(size=(LATENT, LATENT)))
        c, s = np.cos(0.3 + 0.5 * j), np.sin(0.3 + 0.5 * j)
        rotation = np.zeros((LATENT, LATENT))
        rotation[:2, :2] = [[c, -s], [s, c]]
        rotation[2:, 2:] = [[c, s], [-s, c]]
        matrices.append(0.97 * basis @ rotation @ basis.T)
    offsets = rng.normal(size=(k, LATENT)) * 0.3
    leave = (1 - stay) / (k - 1)
    transition = np.full((k, k), leave) + np.eye(k) * (stay - leave)
    x, z = np.zeros((n, t, LATENT)), np.zeros((n, t - 1), dtype=int)
    for i in range(n):
        x[i, 0] = rng.normal(size=LATENT)
        regime = rng.integers(k)
        for step in range(t - 1):
            z[i, step] = regime
            x[i, step + 1] = matrices[regime] @ x[i, step] + offsets[regime] + noise * rng.normal(size=LATENT)
            regime = rng.choice(k, p=transition[regime])
    embed, _ = np.linalg.qr(rng.normal(size=(D_MODEL, LATENT)))
    observed = x @ embed.T + 0.01 * rng.normal(size=(n, t, D_MODEL))
    return torch.tensor(observed, dtype=torch.float32), z


def shuffle_steps(trajectories, seed=0):
    """Each trajectory's steps in a random order: the same states, no dynamics."""
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([row[torch.randperm(len(row), generator=generator)] for row in trajectories])


@pytest.fixture(scope="module")
def planted():
    trajectories, truth = planted_switching()
    result = tld.regimes(trajectories, rank=LATENT, seed=0, control=shuffle_steps(trajectories))
    return trajectories, truth, result


def test_planted_regimes_are_recovered(planted):
    _, truth, result = planted
    assert result.candidates == tuple(range(1, MAX_REGIMES + 1))
    assert result.n_regimes == N_PLANTED
    assert adjusted_rand_score(truth.ravel(), result.states.numpy().ravel()) >= 0.8
    assert result.r2_heldout > result.r2_single + 0.1
    assert result.states.shape == truth.shape and result.states.dtype == torch.int64


def test_control_without_dynamics_gains_nothing(planted):
    _, _, result = planted
    control = result.control
    assert control.n_regimes == result.n_regimes and control.control is None
    assert control.r2_heldout < result.r2_heldout - 0.5
    assert control.r2_heldout < 0.2


def test_result_shapes_frame_and_json(planted):
    trajectories, truth, result = planted
    k, r = result.n_regimes, result.rank
    assert result.dynamics.shape == (k, r, r) and result.noise.shape == (k, r, r)
    assert torch.allclose(result.transition.sum(1), torch.ones(k, dtype=torch.float64))
    assert result.project(trajectories).shape == (len(trajectories), trajectories.shape[1], r)
    frame = result.to_frame()
    assert list(frame.regime) == list(range(k))
    assert frame.occupancy.sum() == pytest.approx(1.0)
    assert (frame.mean_dwell > 5).all()  # the planted regimes last 20 steps on average
    record = result.to_json()
    assert record["n_regimes"] == k and record["control"]["n_regimes"] == k
    assert 0 < result.explained_variance <= 1


def test_dynamics_matrices_predict_like_the_fit(planted):
    trajectories, _, result = planted
    z = result.project(trajectories)
    regime = result.states[:, 0]
    predicted = torch.einsum("nij,nj->ni", result.dynamics[regime], z[:, 0]) + result.offsets[regime]
    error = (predicted - z[:, 1]).norm(dim=1) / (z[:, 1] - z[:, 1].mean(0)).norm(dim=1)
    assert error.median() < 0.2


def test_same_seed_same_fit_and_heldout_split_by_text():
    trajectories, _ = planted_switching(n=16, t=30, seed=1)
    first = tld.regimes(trajectories, n_regimes=2, rank=LATENT, seed=3)
    again = tld.regimes(trajectories, n_regimes=2, rank=LATENT, seed=3)
    assert torch.equal(first.states, again.states) and first.r2_heldout == again.r2_heldout
    assert first.candidates == () and first.validation_log_likelihood == ()
    other = tld.regimes(trajectories, n_regimes=2, rank=LATENT, seed=4)
    assert not torch.equal(first.heldout, other.heldout)


def test_cache_samples_of_one_text_stay_together():
    trajectories, _ = planted_switching(n=24, t=12, seed=2)
    text_index = torch.arange(24) // 3  # three samples (tokens) per text
    metadata = tld.DynamicsMetadata(model_name="planted", n_layers=6, d_model=D_MODEL)
    dyn = tld.DynamicsCache(
        resid=trajectories,
        labels=tuple(f"{i // 2}_{'pre' if i % 2 == 0 else 'mid'}" for i in range(12)),
        text_index=text_index,
        position=torch.arange(24) % 3,
        metadata=metadata,
    )
    result = tld.regimes(dyn, n_regimes=2, rank=LATENT)
    per_text = result.heldout.reshape(8, 3)
    assert (per_text.all(1) | ~per_text.any(1)).all() and per_text.any()


def test_emission_log_likelihood_matches_scipy():
    rng = np.random.default_rng(0)
    rank, k = 3, 2
    model = AutoregressiveHMM(k)
    model.n_features = 2 * rank
    model.coef_ = rng.normal(size=(k, rank + 1, rank))
    factors = rng.normal(size=(k, rank, rank))
    model.covars_ = factors @ factors.transpose(0, 2, 1) + np.eye(rank)
    rows = rng.normal(size=(20, 2 * rank))
    design = np.hstack([rows[:, :rank], np.ones((20, 1))])
    expected = np.stack(
        [multivariate_normal(np.zeros(rank), model.covars_[j]).logpdf(rows[:, rank:] - design @ model.coef_[j]) for j in range(k)],
        axis=1,
    )
    np.testing.assert_allclose(model._compute_log_likelihood(rows), expected, rtol=1e-10)


def test_forecast_filter_matches_hmmlearn_score(planted):
    trajectories, _, result = planted
    z = result.project(trajectories[:10]).numpy()
    steps = np.concatenate([z[:, :-1], z[:, 1:]], axis=-1)
    rows = steps.reshape(-1, 2 * LATENT)
    model = AutoregressiveHMM(2, random_state=0, n_iter=5).fit(rows, [steps.shape[1]] * 10)
    predictions, log_likelihood = forecast(model, steps)
    for i in range(3):
        assert log_likelihood[i] == pytest.approx(model.score(steps[i]), rel=1e-9)
    assert predictions.shape == (10, steps.shape[1], LATENT)
    single = AutoregressiveHMM(1).fit(rows, [steps.shape[1]] * 10)
    design = np.hstack([rows[:, :LATENT], np.ones((len(rows), 1))])
    least_squares = np.linalg.lstsq(design, rows[:, LATENT:], rcond=None)[0]
    np.testing.assert_allclose(
        forecast(single, steps)[0].reshape(-1, LATENT), design @ least_squares, atol=1e-4
    )  # the ridge (RIDGE, relative 1e-6 of the Gram's trace) moves the fit by ~1e-5


def test_token_trajectories_read_one_sublayer(minilm, texts):
    dyn = tld.collect(minilm, texts[:6], positions="all", progress=False)
    tokens = token_trajectories(dyn, "2_mid", n_tokens=5)
    long_enough = [t for t in range(6) if int((dyn.text_index == t).sum()) >= 6]
    assert tokens.shape == (len(long_enough), 5, dyn.resid.shape[-1])
    first = long_enough[0]
    rows = (dyn.text_index == first) & (dyn.position >= 1) & (dyn.position <= 5)
    assert torch.equal(tokens[0], dyn.resid[rows, dyn.labels.index("2_mid")])


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda x: tld.regimes(x[:3]), DynamicsInputError, "at least 4 texts"),
        (lambda x: tld.regimes(x[:, :2]), DynamicsInputError, "at least 3 steps"),
        (lambda x: tld.regimes(x, rank=10_000), DynamicsInputError, "rank must be an int in"),
        (lambda x: tld.regimes(x, n_regimes=True), InputTypeError, "n_regimes must be an int"),
        (lambda x: tld.regimes(x, seed=-1), DynamicsInputError, "seed must be an int"),
        (lambda x: tld.regimes("text"), InputTypeError, "trajectories must be"),
        (lambda x: token_trajectories(x, "0_pre", 4), DynamicsInputError, "positions='all'"),
    ],
)
def test_bad_input_is_refused_before_work(call, error, words):
    trajectories, _ = planted_switching(n=8, t=6, seed=3)
    with pytest.raises(error, match=words):
        call(trajectories)


def test_regime_figures_and_report_section(planted):
    _, _, result = planted
    strip = tld.plot.regime_strip(result, n_texts=5)
    assert strip.data[0].z.shape == (5, result.states.shape[1])
    assert strip.layout.xaxis.title.text and strip.layout.yaxis.title.text
    matrix = tld.plot.regime_transitions(result)
    assert np.allclose(np.asarray(matrix.data[0].z), result.transition.numpy())
    title, text, figures = tld.plot.regimes_section(result)
    assert title and "control" in text and len(figures) == 2
    with pytest.raises(InputTypeError, match="result must be a Regimes"):
        tld.plot.regime_strip(None)
