"""PCA trajectories against scikit-learn and numpy; the autoencoder on a known 2-D manifold."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from einops import rearrange
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.decomposition import PCA
from torch import nn

import tl_dynamics as tld
from tl_dynamics.embed import (
    CAE_MAX_GRAD_NORM,
    CAE_MIN_WIDTH,
    AutoencoderTrajectories,
    CompressingAutoencoder,
    PCATrajectories,
    explained_variance,
    pca_trajectories,
)

N_TEXTS = 64  # MiniLM trajectories for the real-data checks: 64 x 12 = 768 vectors


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def minilm_dyn(minilm):
    return tld.collect(minilm, tld.data.python_docs()[:N_TEXTS], progress=False)


@pytest.fixture(scope="module")
def minilm_pca(minilm_dyn):
    return pca_trajectories(minilm_dyn, n_components=50)


def sheet(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """``n`` points of a curved 2-D sheet in ``d`` dims, far from the origin and large."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.rand(n, 2, generator=generator) * 2 - 1
    features = torch.cat([z, torch.sin(2 * z), z.prod(-1, keepdim=True)], dim=-1)
    return features @ torch.randn(5, d, generator=generator) * 30 + 5


# ----------------------------------------------------------------------------- PCA


def test_pca_matches_scikit_learn_on_minilm(minilm_dyn, minilm_pca):
    vectors = minilm_dyn.resid.reshape(-1, minilm_dyn.resid.shape[-1]).double().numpy()
    same = PCA(n_components=50, random_state=0).fit(vectors)  # the same (randomized) solver
    assert isinstance(minilm_pca, PCATrajectories) and minilm_pca.n_components == 50
    assert minilm_pca.labels == minilm_dyn.labels
    np.testing.assert_allclose(
        minilm_pca.cumulative_variance.numpy(),
        np.cumsum(same.explained_variance_ratio_),
        rtol=1e-12,
    )
    expected = same.transform(vectors).reshape(N_TEXTS, -1, 50)
    np.testing.assert_allclose(minilm_pca.trajectories.numpy(), expected, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(minilm_pca.mean_trajectory.numpy(), expected.mean(0), atol=1e-4)


def test_randomized_pca_is_close_to_the_exact_one(minilm_dyn, minilm_pca):
    vectors = minilm_dyn.resid.reshape(-1, minilm_dyn.resid.shape[-1]).double().numpy()
    exact = PCA(n_components=50, svd_solver="full").fit(vectors)
    assert minilm_pca.pca._fit_svd_solver == "randomized"  # 768 x 384 counts as large
    np.testing.assert_allclose(
        minilm_pca.cumulative_variance.numpy(),
        np.cumsum(exact.explained_variance_ratio_),
        atol=1e-4,
    )
    leading = exact.transform(vectors)[:, :10].reshape(N_TEXTS, -1, 10)
    ours = minilm_pca.trajectories[..., :10].double().numpy()
    signs = np.sign((leading * ours).sum((0, 1)))
    np.testing.assert_allclose(ours * signs, leading, atol=1e-4)


def test_variance_per_sublayer_matches_a_numpy_reconstruction(minilm_dyn, minilm_pca):
    resid = minilm_dyn.resid.double().numpy()
    basis, mean = minilm_pca.pca.components_, minilm_pca.pca.mean_
    reconstruction = (resid - mean) @ basis.T @ basis + mean
    error = ((resid - reconstruction) ** 2).sum((0, 2))
    spread = ((resid - resid.mean(0)) ** 2).sum((0, 2))
    pooled = ((resid - resid.mean((0, 1))) ** 2).sum((0, 2))
    ours = minilm_pca
    np.testing.assert_allclose(ours.variance_per_sublayer.numpy(), 1 - error / spread, atol=1e-9)
    np.testing.assert_allclose(
        ours.variance_per_sublayer_pooled.numpy(), 1 - error / pooled, atol=1e-9
    )
    assert (ours.variance_per_sublayer <= ours.variance_per_sublayer_pooled).all()


def test_n_components_is_clipped_to_the_rank_the_data_allow():
    generator = torch.Generator().manual_seed(0)
    with pytest.warns(UserWarning, match="fitting 5 components"):
        assert pca_trajectories(torch.randn(3, 2, 5, generator=generator)).n_components == 5
    with pytest.warns(UserWarning, match="fitting 4 components"):  # 4 vectors
        assert pca_trajectories(torch.randn(2, 2, 10, generator=generator)).n_components == 4


def test_large_data_use_the_seeded_randomized_solver():
    data = torch.randn(60, 10, 600, generator=torch.Generator().manual_seed(0))
    first, again = (
        pca_trajectories(data, n_components=10, seed=3),
        pca_trajectories(data, n_components=10, seed=3),
    )
    assert first.pca.svd_solver == "auto" and first.pca._fit_svd_solver == "randomized"
    torch.testing.assert_close(first.trajectories, again.trajectories, rtol=0, atol=0)


def test_project_and_inverse_are_the_pca_maps(minilm_dyn, minilm_pca):
    vectors = minilm_dyn.resid[:4]
    codes = minilm_pca.project(vectors)
    assert codes.shape == (4, 12, 50) and codes.dtype == torch.float32
    torch.testing.assert_close(codes, minilm_pca.trajectories[:4], atol=1e-3, rtol=1e-4)
    plane = torch.tensor([[1.0, -2.0], [0.0, 0.0]])
    back = minilm_pca.inverse(plane)
    torch.testing.assert_close(back[1], torch.from_numpy(minilm_pca.pca.mean_).float())
    projected = minilm_pca.project(back)
    torch.testing.assert_close(projected[:, :2], plane, atol=1e-4, rtol=0)
    assert projected[:, 2:].abs().max() < 1e-4
    full = pca_trajectories(minilm_dyn.resid[:, :, :8], n_components=8)  # k = d_model: lossless
    torch.testing.assert_close(
        full.inverse(full.project(minilm_dyn.resid[:2, :, :8])),
        minilm_dyn.resid[:2, :, :8],
        atol=1e-4,
        rtol=1e-5,
    )


def test_pca_frame_is_tidy(minilm_pca):
    frame = minilm_pca.to_frame(n_components=3)
    assert len(frame) == N_TEXTS * 12
    assert list(frame.columns) == ["sample", "sublayer", "label", "depth", "pc1", "pc2", "pc3"]
    row = frame.iloc[13]
    assert (row["sample"], row["sublayer"], row["label"]) == (1, 1, "0_mid")
    assert row["pc2"] == pytest.approx(float(minilm_pca.trajectories[1, 1, 1]))


@pytest.mark.parametrize(
    ("data", "kwargs", "error", "match"),
    [
        ([[1.0]], {}, TypeError, "dyn must be"),
        (torch.ones(2, 3, 4, 5), {}, ValueError, "shape"),
        (torch.ones(4, 0, 5), {}, ValueError, "empty axis"),
        (torch.full((2, 3, 4), torch.nan), {}, ValueError, "non-finite"),
        (torch.ones(2, 3, 4, dtype=torch.long), {}, TypeError, "floating"),
        (torch.ones(2, 3, 4), {"n_components": 0}, ValueError, "n_components"),
        (torch.ones(1, 1, 4), {}, ValueError, "two vectors"),
    ],
)
def test_bad_pca_input_is_refused(data, kwargs, error, match):
    with pytest.raises(error, match=match):
        pca_trajectories(data, **kwargs)


def test_project_refuses_vectors_of_another_width(minilm_pca):
    with pytest.raises(ValueError, match="vectors must have a last axis of 384"):
        minilm_pca.project(torch.ones(3, 64))
    with pytest.raises(ValueError, match="points must have between 1 and 50"):
        minilm_pca.inverse(torch.ones(3, 51))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), batch=st.integers(2, 6), sublayers=st.integers(1, 4))
def test_explained_variance_laws(seed, batch, sublayers):
    data = torch.randn(
        batch, sublayers, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    noisy = data + 0.1 * torch.randn_like(data)
    ones = torch.ones(sublayers, dtype=torch.float64)
    torch.testing.assert_close(explained_variance(data, data), ones)
    torch.testing.assert_close(explained_variance(data, data, around="pooled"), ones)
    torch.testing.assert_close(
        explained_variance(data, data.mean(0, keepdim=True).expand_as(data)),
        torch.zeros(sublayers, dtype=torch.float64),
    )
    order = torch.randperm(batch)
    torch.testing.assert_close(
        explained_variance(data[order], noisy[order]), explained_variance(data, noisy)
    )


# ---------------------------------------------------------------------- autoencoder


def test_widths_follow_the_papers_geometric_progression():
    ratio = (2 / 4096) ** (1 / 9)
    paper = [4096, *(round(4096 * ratio**i) for i in range(10))]
    assert paper[:2] == [4096, 4096] and paper[-1] == 2 and len(paper) == 11
    assert CompressingAutoencoder(min_width=1).widths(4096) == paper
    floored = CompressingAutoencoder().widths(4096)  # hidden widths floored at CAE_MIN_WIDTH
    assert floored == [*(max(w, CAE_MIN_WIDTH) for w in paper[:-1]), 2]
    assert CompressingAutoencoder(n_layers=3).widths(4) == [4, 4, 4, 2]  # floor capped by d_in


def test_every_layer_but_the_last_is_linear_layernorm_relu():
    cae = CompressingAutoencoder(n_layers=3, epochs=1, progress=False).fit(torch.randn(20, 32))
    for network, widths in ((cae.encoder_, [32, 32, 8, 2]), (cae.decoder_, [2, 8, 32, 32])):
        kinds = [type(layer) for layer in network]
        assert kinds == [nn.Linear, nn.LayerNorm, nn.ReLU] * 2 + [nn.Linear]
        linears = [layer for layer in network if isinstance(layer, nn.Linear)]
        assert [(lin.in_features, lin.out_features) for lin in linears] == list(
            itertools.pairwise(widths)
        )


def test_autoencoder_reconstructs_a_two_dimensional_manifold():
    data = sheet(1000, 32)
    cae = CompressingAutoencoder(n_layers=3, epochs=20, batch_size=32, progress=False).fit(data)
    explained = float(cae.held_out_.explained_variance[0])
    assert explained > 0.95, explained
    assert cae.history_.val_loss[-1] < cae.history_.val_loss[0]
    assert cae.transform(data[:5]).shape == (5, 2)
    assert cae.inverse_transform(cae.transform(data[:5])).shape == (5, 32)


def test_autoencoder_is_deterministic_for_a_seed():
    data = sheet(200, 16)
    fits = [
        CompressingAutoencoder(n_layers=3, epochs=2, random_state=s, progress=False).fit(data)
        for s in (1, 1, 2)
    ]
    same = [list(f.encoder_.state_dict().values()) for f in fits]
    assert all(torch.equal(a, b) for a, b in zip(same[0], same[1]))
    assert torch.equal(fits[0].validation_index_, fits[1].validation_index_)
    torch.testing.assert_close(
        fits[0].history_.train_loss, fits[1].history_.train_loss, rtol=0, atol=0
    )
    assert not all(torch.equal(a, b) for a, b in zip(same[0], same[2]))


def test_max_vectors_trains_on_a_seeded_subset_and_keeps_the_held_out_samples(monkeypatch):
    data = torch.randn(20, 6, 16, generator=torch.Generator().manual_seed(0))
    seen = []
    train = CompressingAutoencoder._train

    def record(self, vectors, *args):
        seen.append(vectors.clone())
        return train(self, vectors, *args)

    monkeypatch.setattr(CompressingAutoencoder, "_train", record)
    fits = [
        CompressingAutoencoder(
            n_layers=3, epochs=1, val_fraction=0.25, max_vectors=m, random_state=0, progress=False
        ).fit(data)
        for m in (None, 50, 50, 10_000)
    ]
    assert [len(v) for v in seen] == [15 * 6, 50, 50, 15 * 6]
    assert torch.equal(seen[1], seen[2]) and torch.equal(seen[0], seen[3])
    assert all(torch.equal(f.validation_index_, fits[0].validation_index_) for f in fits)
    assert all(f.scale_ == fits[0].scale_ for f in fits)  # standardised on every vector


def test_standardisation_makes_training_blind_to_scale():
    data = sheet(200, 16)
    small = CompressingAutoencoder(n_layers=3, epochs=3, progress=False).fit(data)
    large = CompressingAutoencoder(n_layers=3, epochs=3, progress=False).fit(data * 1000)
    train = torch.ones(200, dtype=torch.bool)
    train[small.validation_index_] = False
    torch.testing.assert_close(small.mean_, data[train].mean(0), atol=1e-3, rtol=1e-5)
    assert large.scale_ == pytest.approx(1000 * small.scale_, rel=1e-5)
    torch.testing.assert_close(
        large.held_out_.explained_variance, small.held_out_.explained_variance, atol=1e-3, rtol=0
    )


def test_autoencoder_reports_trajectories_of_held_out_samples(minilm_dyn):
    cae = CompressingAutoencoder(n_layers=4, epochs=1, val_fraction=0.25, progress=False).fit(
        minilm_dyn
    )
    held_out = cae.held_out_
    assert isinstance(held_out, AutoencoderTrajectories)
    assert len(cae.validation_index_) == N_TEXTS // 4 and held_out.labels == minilm_dyn.labels
    assert held_out.codes.shape == (N_TEXTS // 4, 12, 2)
    torch.testing.assert_close(
        held_out.codes, cae.transform(minilm_dyn.resid[cae.validation_index_])
    )
    torch.testing.assert_close(held_out.mean_trajectory, held_out.codes.mean(0))
    step = (held_out.codes[:, 1:] - held_out.codes[:, :-1]).norm(dim=-1)
    torch.testing.assert_close(held_out.step_distance, step)
    assert held_out.explained_variance.shape == held_out.explained_variance_pooled.shape == (12,)
    frame = held_out.to_frame()
    assert len(frame) == N_TEXTS // 4 * 12 and {"z1", "z2", "step_distance"} <= set(frame.columns)
    assert cae.history_.to_frame().shape == (1, 3)
    plain = cae.trajectories(minilm_dyn.resid[:3])
    assert plain.labels == tuple(str(s) for s in range(12))


@pytest.mark.parametrize(
    ("build", "fit_kwargs", "error", "match"),
    [
        ({"d_bottleneck": 9}, {}, ValueError, "d_in=8"),
        ({"n_layers": 1}, {}, ValueError, "n_layers"),
        ({"min_width": 0}, {}, ValueError, "min_width"),
        ({}, {"val_fraction": 1.0}, ValueError, "val_fraction"),
        ({}, {"epochs": 0}, ValueError, "epochs"),
        ({}, {"lr": -1.0}, ValueError, "lr"),
        ({}, {"max_vectors": 0}, ValueError, "max_vectors"),
    ],
)
def test_bad_autoencoder_settings_are_refused(build, fit_kwargs, error, match):
    with pytest.raises(error, match=match):
        CompressingAutoencoder(**build, **fit_kwargs, progress=False).fit(torch.randn(10, 8))


def test_explained_variance_refuses_an_unknown_baseline():
    with pytest.raises(ValueError, match="around must be one of"):
        explained_variance(torch.ones(2, 1, 3), torch.ones(2, 1, 3), around="global")


def test_unfitted_autoencoder_raises_sklearns_not_fitted_error():
    from sklearn.exceptions import NotFittedError

    for method in ("transform", "inverse_transform"):
        with pytest.raises(NotFittedError, match="not fitted"):
            getattr(CompressingAutoencoder(), method)(torch.randn(2, 8))


def test_autoencoder_transforms_what_it_fits():
    data = sheet(60, 16)
    cae = CompressingAutoencoder(n_layers=3, epochs=1, progress=False).fit(data.numpy())
    assert cae.n_features_in_ == 16
    codes = cae.transform(data.numpy())  # an array in, an array out
    assert isinstance(codes, np.ndarray) and codes.shape == (60, 2)
    np.testing.assert_array_equal(codes, cae.transform(data).numpy())
    trajectories = rearrange(data, "(b s) d -> b s d", s=2)
    assert cae.transform(trajectories).shape == (30, 2, 2)
    with pytest.raises(ValueError, match="d_in"):
        cae.transform(torch.randn(4, 15))
    with pytest.raises(ValueError, match=r"\[n, d_in\]"):
        cae.transform(torch.randn(16))
    with pytest.raises(ValueError, match="finite"):
        cae.transform(torch.full((2, 16), float("nan")))


def test_autoencoder_transforms_a_cache(minilm_dyn):
    cae = CompressingAutoencoder(n_layers=3, epochs=1, progress=False).fit(minilm_dyn)
    assert cae.transform(minilm_dyn).shape == (N_TEXTS, 12, 2)


# sklearn.utils.estimator_checks that do not apply, and why. The autoencoder's data are
# residual-stream states: dense floating tensors or arrays, encoded by a float32 network.
NOT_APPLICABLE = {
    # integer, object and complex data are no residual stream: refused as not floating
    "check_estimators_dtypes": "integer inputs are refused",
    "check_dtype_object": "object arrays are refused",
    "check_complex_data": "complex data are refused, in the project's one error wording",
    # array-likes that are neither tensors nor arrays (lists, _NotAnArray) are refused
    "check_transformer_data_not_an_array": "takes a cache, a tensor or an array only",
    # sparse input: the network takes dense tensors
    "check_estimator_sparse_tag": "dense input only",
    "check_estimator_sparse_array": "dense input only",
    "check_estimator_sparse_matrix": "dense input only",
    # the codes are float32 (the network's dtype) whatever the input's dtype
    "check_transformer_preserve_dtypes": "codes are float32 by design",
    # errors are raised, but worded by the project's rule, not sklearn's message patterns
    "check_estimators_empty_data_messages": "refused with the project's wording",
    "check_n_features_in_after_fitting": "refused with the project's wording",
    "check_fit2d_predict1d": "1-D input is refused with the project's wording",
    # one feature cannot hold a 2-D code: a compressing autoencoder needs d_in >= d_bottleneck
    "check_fit2d_1feature": "d_bottleneck=2 exceeds one feature; refused as such",
}


def test_autoencoder_passes_sklearns_estimator_checks_that_apply():
    import warnings

    from sklearn.utils.estimator_checks import check_estimator

    estimator = CompressingAutoencoder(n_layers=2, epochs=1, val_fraction=0.0, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(estimator, on_fail=None)
    failed = {r["check_name"] for r in results if r["status"] == "failed"}
    passed = {r["check_name"] for r in results if r["status"] == "passed"}
    assert failed <= set(NOT_APPLICABLE), failed - set(NOT_APPLICABLE)
    assert {"check_estimators_unfitted", "check_set_params", "check_fit_idempotent",
            "check_estimator_cloneable", "check_transformer_general"} <= passed


def test_pca_warns_when_it_fits_fewer_components_than_asked(minilm_dyn):
    small = minilm_dyn.select(slice(0, 3))  # 3 samples x 12 sublayers = 36 vectors
    with pytest.warns(UserWarning, match="fitting 36 components"):
        pca = tld.pca_trajectories(small, n_components=100)
    assert pca.n_components == 36


def test_autoencoder_follows_the_scikit_learn_estimator_contract():
    from sklearn.base import clone

    data = sheet(60, 16)
    cae = CompressingAutoencoder(n_layers=3, epochs=2, random_state=3, progress=False)
    assert cae.get_params()["random_state"] == 3 and cae.get_params()["epochs"] == 2
    twin = clone(cae).set_params(epochs=1)
    assert twin.epochs == 1 and not hasattr(twin, "encoder_")
    lazy = CompressingAutoencoder(epochs=0)  # settings are validated by fit, not __init__
    assert clone(lazy).get_params() == lazy.get_params()
    assert clone(lazy).set_params(epochs=2, d_bottleneck=3).get_params()["d_bottleneck"] == 3
    with pytest.raises(ValueError, match="epochs"):
        lazy.fit(data)
    assert cae.fit(data) is cae
    codes = clone(cae).fit_transform(data)
    torch.testing.assert_close(codes, cae.transform(data), rtol=0, atol=0)
    assert codes.shape == (60, 2)
    trajectories = torch.stack([data[:30], data[30:]], dim=1)  # [30 samples, 2 sublayers, 16]
    assert clone(cae).fit_transform(trajectories).shape == (30, 2, 2)


def test_autoencoder_clips_each_gradient_before_the_adam_step(monkeypatch):
    calls = []
    clip = nn.utils.clip_grad_norm_

    def record(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        calls.append((len(parameters), max_norm))
        return clip(parameters, max_norm, *args, **kwargs)

    monkeypatch.setattr(nn.utils, "clip_grad_norm_", record)
    cae = CompressingAutoencoder(n_layers=3, epochs=2, batch_size=20, progress=False).fit(sheet(60, 16))
    n_parameters = len(list(cae.encoder_.parameters())) + len(list(cae.decoder_.parameters()))
    assert calls == [(n_parameters, CAE_MAX_GRAD_NORM)] * (2 * 3)  # 51 training vectors: 3 batches


def test_autoencoder_learning_rate_decays_to_zero_by_a_cosine(monkeypatch):
    rates = []
    step = torch.optim.Adam.step

    def record(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", record)
    CompressingAutoencoder(n_layers=3, epochs=2, batch_size=20, lr=0.01, progress=False).fit(sheet(60, 16))
    expected = [0.005 * (1 + math.cos(math.pi * t / 6)) for t in range(6)]  # 2 epochs x 3 batches
    assert rates == pytest.approx(expected, rel=1e-6)
