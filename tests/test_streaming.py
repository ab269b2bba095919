"""Streaming metrics over shards equal the in-memory metrics; PCA and minibatches likewise."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.decomposition import PCA, IncrementalPCA

import tl_dynamics as tld
from tl_dynamics import metrics
from tl_dynamics.collect import CollectSettings
from tl_dynamics.embed import PCATrajectories, explained_variance
from tl_dynamics.store import collect_to_store
from tl_dynamics.streaming import MomentSummary, incremental_pca, iter_minibatches, moments

RELATIVE = 1e-6  # streaming vs in-memory, relative to the scale of each result


def assert_relative_close(got, expected):
    scale = expected.abs().nan_to_num().max().clamp_min(1e-30)
    torch.testing.assert_close(
        got, expected, rtol=RELATIVE, atol=RELATIVE * float(scale), equal_nan=True
    )


def assert_matches_metrics(summary, resid):
    exact = resid.double()
    assert summary.n_samples == len(resid)
    assert_relative_close(summary.mean_activation, metrics.mean_activation(exact))
    assert_relative_close(summary.mean_norm, metrics.norms(exact).mean(0))
    assert_relative_close(summary.mean_cosine, metrics.cosine_similarity(exact).mean(0))
    assert_relative_close(summary.mean_velocity, metrics.velocity(exact).mean(0))
    assert_relative_close(summary.unit_correlation(), metrics.unit_correlation(exact))


@pytest.fixture(scope="module")
def store(tiny_models, texts, tmp_path_factory):
    folder = tmp_path_factory.mktemp("store")
    return collect_to_store(
        tiny_models["llama"],
        texts,
        folder,
        CollectSettings(positions="all", batch_size=3, progress=False),
        shard_size=150,
    )


def test_moments_of_a_store_equal_the_metrics_of_its_tensor(store):
    assert len(store.shards) > 2
    assert_matches_metrics(moments(store), store.load().resid)


def test_moments_resist_cancellation_of_large_offsets():
    generator = torch.Generator().manual_seed(0)
    walk = torch.randn(500, 6, 8, generator=generator, dtype=torch.float64).cumsum(dim=1)
    resid = (walk + 1e4).float()  # |mean| / std ~ 1e4: raw sums of squares would lose digits
    assert_matches_metrics(moments(list(resid.split(37))), resid)


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(1, 39), max_size=5, unique=True))
def test_any_split_into_chunks_gives_the_same_summary(cuts):
    resid = torch.randn(40, 4, 3, generator=torch.Generator().manual_seed(1)) * 5 + 2
    bounds = [0, *sorted(cuts), len(resid)]
    chunks = [resid[a:b] for a, b in itertools.pairwise(bounds)]
    assert_matches_metrics(moments(chunks), resid)
    backwards = moments(chunks[::-1])
    assert_relative_close(backwards.unit_correlation(), moments(resid).unit_correlation())


def test_constant_units_have_undefined_correlation_like_the_metric():
    resid = torch.randn(20, 3, 4, generator=torch.Generator().manual_seed(2))
    resid[:, 1, 2] = 7.0
    r = moments(list(resid.split(6))).unit_correlation()
    assert r[:, 2].isnan().all() and not r[:, [0, 1, 3]].isnan().any()
    assert_relative_close(r, metrics.unit_correlation(resid.double()))


def test_summaries_refuse_what_does_not_merge():
    summary = MomentSummary.of(torch.randn(5, 3, 4))
    with pytest.raises(ValueError, match="different shapes"):
        summary.merge(MomentSummary.of(torch.randn(5, 3, 2)))
    with pytest.raises(TypeError, match="MomentSummary"):
        summary.merge(torch.randn(5, 3, 4))
    with pytest.raises(ValueError, match="no samples"):
        moments([])
    with pytest.raises(TypeError, match="source must be"):
        moments([np.zeros((5, 3, 4))])
    with pytest.raises(ValueError, match="non-finite"):
        MomentSummary.of(torch.full((5, 3, 4), float("nan")))


def test_incremental_pca_equals_scikit_learn_on_the_whole_matrix(store):
    in_shard_order = torch.cat([chunk.resid for chunk in store.iter_shards()])
    vectors = in_shard_order.reshape(-1, store.metadata.d_model).double().numpy()
    streamed = incremental_pca(store, n_components=10, batch_size=300).pca
    whole = IncrementalPCA(n_components=10, batch_size=300).fit(vectors)
    np.testing.assert_allclose(streamed.components_, whole.components_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(streamed.explained_variance_, whole.explained_variance_, rtol=1e-9)
    # keeping every component, the incremental fit is exact PCA
    full = incremental_pca(store, n_components=store.metadata.d_model).pca
    exact = PCA().fit(vectors)
    np.testing.assert_allclose(full.explained_variance_, exact.explained_variance_, rtol=RELATIVE)
    np.testing.assert_allclose(full.mean_, exact.mean_, rtol=RELATIVE, atol=1e-12)


def test_incremental_pca_gives_the_pca_trajectories_of_the_whole_tensor(store):
    """The same PCATrajectories as pca_trajectories, on the fitted components: coordinates,
    mean trajectory, cumulative variance and both per-sublayer explained variances."""
    streamed = incremental_pca(store, n_components=10, batch_size=300)
    assert isinstance(streamed, PCATrajectories) and streamed.n_components == 10
    whole = store.load()
    resid = whole.resid.double()
    vectors = resid.reshape(-1, store.metadata.d_model).numpy()
    coordinates = torch.from_numpy(streamed.pca.transform(vectors)).reshape(*resid.shape[:2], -1)
    reconstruction = streamed.pca.inverse_transform(coordinates.reshape(len(vectors), -1).numpy())
    reconstruction = torch.from_numpy(reconstruction).reshape(resid.shape)
    assert streamed.labels == whole.labels
    torch.testing.assert_close(streamed.trajectories, coordinates.float())  # load() order
    torch.testing.assert_close(streamed.mean_trajectory, coordinates.mean(0).float())
    torch.testing.assert_close(streamed.cumulative_variance,
                               torch.from_numpy(np.cumsum(streamed.pca.explained_variance_ratio_)))
    for around, kept in (("sublayer", streamed.variance_per_sublayer),
                         ("pooled", streamed.variance_per_sublayer_pooled)):  # fmt: skip
        assert_relative_close(kept, explained_variance(resid, reconstruction, around))
    grid = tld.pca_grid(streamed, n=3)  # what the in-memory PCA feeds
    assert grid.points.shape == (9, store.metadata.d_model)
    # keeping every component, it is the exact PCA of pca_trajectories
    exact = tld.pca_trajectories(whole, n_components=store.metadata.d_model)
    full = incremental_pca(list(store.iter_shards()), n_components=store.metadata.d_model)
    assert_relative_close(full.cumulative_variance, exact.cumulative_variance)
    with pytest.raises(TypeError, match="readable twice"):
        incremental_pca(iter(store.iter_shards()), n_components=2)


def test_incremental_pca_refuses_batches_smaller_than_the_components(store):
    with pytest.raises(ValueError, match="batch_size must be an int >= n_components"):
        incremental_pca(store, n_components=10, batch_size=5)


def test_minibatches_visit_every_vector_once_in_a_seeded_order(store):
    vectors = store.load().resid.reshape(-1, store.metadata.d_model)
    batches = list(iter_minibatches(store, batch_size=64, seed=0))
    assert all(len(b) == 64 for b in batches[:-1]) and 0 < len(batches[-1]) <= 64
    seen = torch.cat(batches)
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, vectors.tolist()))
    assert not torch.equal(seen, vectors)
    again = torch.cat(list(iter_minibatches(store, batch_size=64, seed=0)))
    other = torch.cat(list(iter_minibatches(store, batch_size=64, seed=1)))
    assert torch.equal(seen, again) and not torch.equal(seen, other)
    kept = list(iter_minibatches(store, batch_size=64, seed=0, window=1, drop_last=True))
    assert all(len(b) == 64 for b in kept) and len(kept) == len(vectors) // 64


def test_minibatches_of_chosen_texts_hold_out_whole_trajectories(store):
    dyn = store.load()
    train = [t for t in range(store.n_texts) if t % 4]
    vectors = dyn.resid[torch.isin(dyn.text_index, torch.tensor(train))].reshape(
        -1, store.metadata.d_model
    )
    seen = torch.cat(list(iter_minibatches(store, batch_size=50, seed=0, texts=train)))
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, vectors.tolist()))
    with pytest.raises(TypeError, match="texts needs chunks that know their texts"):
        next(iter_minibatches([dyn.resid], batch_size=50, seed=0, texts=train))


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"window": -1}, {"batch_size": True}])
def test_minibatches_refuse_bad_sizes(store, bad):
    with pytest.raises(ValueError, match=r"(batch_size|window) must be an int >= 1; got"):
        next(iter_minibatches(store, **{"batch_size": 8, "seed": 0, **bad}))


def test_minibatches_need_random_access(store):
    with pytest.raises(TypeError, match="random access"):
        next(iter_minibatches(iter(store.iter_shards()), batch_size=8, seed=0))
