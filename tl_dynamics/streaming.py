"""Metrics of a store too large for memory, computed a shard at a time.

A mean, a variance or a correlation does not need every sample at once: it needs a few
sums that can be computed on each chunk of samples and *merged*. For every unit ``i``
at sublayer ``s`` a :class:`MomentSummary` keeps, over the samples it has seen,

* the count ``n`` and the mean ``mu_s``,
* the sum of squared deviations ``M2_s = sum (x_s - mu_s)^2``,
* the co-moment of successive sublayers ``C_t = sum (x_t - mu_t)(x_{t+1} - mu_{t+1})``,

and per sublayer or transition the sums of the per-sample geometry: vector norms,
cosines and velocities of successive vectors. Two summaries merge exactly (Chan, Golub &
LeVeque 1979: the deviation sums are corrected by the difference of the two means), all
in float64, so the Pearson correlation ``C_t / sqrt(M2_t M2_{t+1})`` of a store equals
that of the whole tensor to rounding, without the cancellation of raw sums of squares.

The same idea covers the two embeddings of the paper that learn from every residual
stream vector (each sample at each sublayer is one point in R^d_model):

* PCA (Fig 4): scikit-learn's ``IncrementalPCA`` updates its components batch by batch,
  and a second pass projects every trajectory (:func:`incremental_pca` returns the
  :class:`~tl_dynamics.embed.PCATrajectories` that :func:`~tl_dynamics.pca_trajectories`
  returns in memory, so ``tld.pca_grid`` and the plots take it);
* the compressing autoencoder (Fig 3): stochastic gradient descent only needs shuffled
  minibatches (:func:`iter_minibatches`), drawn across shards from a seed.

Every function takes a :class:`~tl_dynamics.store.DynamicsStore`, a
:class:`~tl_dynamics.cache.DynamicsCache`, a ``[sample, sublayer, d_model]`` tensor, or
any iterable of those chunks (e.g. a generator reading your own files).

Example::

    import tl_dynamics as tld
    from tl_dynamics import streaming
    from tl_dynamics.store import DynamicsStore

    store = DynamicsStore.open("smollm2-store")             # see tl_dynamics.store
    summary = streaming.moments(store)                      # one pass, a shard at a time
    summary.mean_velocity                                   # [transition] mean step length
    summary.unit_correlation()                              # [transition, d_model] Pearson r
    pca = streaming.incremental_pca(store, n_components=10)  # a PCATrajectories
    pca.cumulative_variance, pca.variance_per_sublayer      # Fig 4B, 4C
    grid = tld.pca_grid(pca, n=10)                          # teleport points
    for batch in streaming.iter_minibatches(store, batch_size=64, seed=0):
        ...                                                 # [64, d_model] training step
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Union

import torch
from einops import einsum, rearrange
from jaxtyping import Float
from sklearn.decomposition import IncrementalPCA
from torch import Tensor

from tl_dynamics._checks import check_int
from tl_dynamics._repr import compact_repr
from tl_dynamics.cache import DynamicsCache
from tl_dynamics.embed import DEFAULT_PCA_COMPONENTS, PCATrajectories
from tl_dynamics.errors import DynamicsInputError, InputTypeError
from tl_dynamics.metrics import STAT_DTYPE, cosine_similarity, norms, velocity  # every sum in float64
from tl_dynamics.store import DynamicsStore

__all__ = [
    "Chunk",
    "Source",
    "MomentSummary",
    "iter_chunks",
    "moments",
    "incremental_pca",
    "iter_minibatches",
]

PCA_BATCH_PER_FEATURE = 5
"""Default vectors per ``partial_fit`` batch, per unit: scikit-learn's own default
``batch_size = 5 * n_features`` of ``IncrementalPCA.fit``."""

SHUFFLE_WINDOW = 2
"""Shards shuffled together by :func:`iter_minibatches`: with the default shards of
:data:`tl_dynamics.store.SHARD_BYTES` (256 MiB), about 1 GiB of float32 in memory."""

Chunk = Union[Tensor, DynamicsCache]
Source = Union[DynamicsStore, Chunk, Iterable[Chunk]]
"""A store, a cache, a ``[sample, sublayer, d_model]`` tensor, or an iterable of chunks."""


def _resid(chunk: object) -> Tensor:
    if isinstance(chunk, DynamicsCache):
        return chunk.resid
    if isinstance(chunk, Tensor):
        return chunk
    raise InputTypeError(
        "source must be a DynamicsStore, a DynamicsCache, a [sample, sublayer, d_model] tensor "
        f"or an iterable of caches or tensors; got {type(chunk).__name__}"
    )


def iter_chunks(source: Source) -> Iterator[Float[Tensor, "sample sublayer d_model"]]:
    """The ``[sample, sublayer, d_model]`` tensors of ``source``, one chunk at a time."""
    if isinstance(source, DynamicsStore):
        yield from (chunk.resid for chunk in source.iter_shards())
    elif isinstance(source, Iterable) and not isinstance(source, (DynamicsCache, Tensor)):
        yield from (_resid(chunk) for chunk in source)
    else:
        yield _resid(source)


@dataclass(frozen=True, eq=False)
class MomentSummary:
    """Mergeable sufficient statistics of residual-stream trajectories (all float64).

    Attributes:
        n_samples: Number of samples summarised.
        mean: ``[sublayer, d_model]`` mean activation, in residual-stream units.
        m2: ``[sublayer, d_model]`` sum over samples of squared deviations from ``mean``.
        comoment: ``[transition, d_model]`` sum over samples of the product of the
            deviations at sublayers ``t`` and ``t + 1``.
        norm_sum: ``[sublayer]`` sum over samples of ``||h_s||_2``.
        cosine_sum: ``[transition]`` sum over samples of ``cos(h_t, h_{t+1})``.
        velocity_sum: ``[transition]`` sum over samples of ``||h_{t+1} - h_t||_2``.
    """

    __repr__ = compact_repr

    n_samples: int
    mean: Float[Tensor, "sublayer d_model"]
    m2: Float[Tensor, "sublayer d_model"]
    comoment: Float[Tensor, "transition d_model"]
    norm_sum: Float[Tensor, " sublayer"]
    cosine_sum: Float[Tensor, " transition"]
    velocity_sum: Float[Tensor, " transition"]

    @classmethod
    def of(cls, resid: Float[Tensor, "sample sublayer d_model"]) -> MomentSummary:
        """Summarise one chunk of at least one sample and two sublayers (any float dtype)."""
        x = resid.to(STAT_DTYPE)
        step = velocity(x)  # first: validates a finite [sample, sublayer >= 2, d_model] tensor
        mean = x.mean(dim=0)
        deviation = x - mean
        return cls(
            n_samples=int(x.shape[0]),
            mean=mean,
            m2=deviation.square().sum(dim=0),
            comoment=einsum(deviation[:, :-1], deviation[:, 1:], "sample t d, sample t d -> t d"),
            norm_sum=norms(x).sum(dim=0),
            cosine_sum=cosine_similarity(x).sum(dim=0),
            velocity_sum=step.sum(dim=0),
        )

    def merge(self, other: MomentSummary) -> MomentSummary:
        """The summary of both sets of samples (exact; commutative up to rounding).

        Raises:
            TypeError: ``other`` is no :class:`MomentSummary`.
            ValueError: the two have different numbers of sublayers or units.
        """
        if not isinstance(other, MomentSummary):
            raise InputTypeError(f"other must be a MomentSummary; got {type(other).__name__}")
        if other.mean.shape != self.mean.shape:
            raise DynamicsInputError(
                "cannot merge summaries of different shapes: [sublayer, d_model] "
                f"{tuple(self.mean.shape)} and {tuple(other.mean.shape)}"
            )
        n = self.n_samples + other.n_samples
        delta = other.mean - self.mean
        weight = self.n_samples * other.n_samples / n
        return MomentSummary(
            n_samples=n,
            mean=self.mean + delta * (other.n_samples / n),
            m2=self.m2 + other.m2 + delta.square() * weight,
            comoment=self.comoment + other.comoment + delta[:-1] * delta[1:] * weight,
            norm_sum=self.norm_sum + other.norm_sum,
            cosine_sum=self.cosine_sum + other.cosine_sum,
            velocity_sum=self.velocity_sum + other.velocity_sum,
        )

    @property
    def mean_activation(self) -> Float[Tensor, "sublayer d_model"]:
        """Mean of every unit at every sublayer (Fig 1B), in residual-stream units."""
        return self.mean

    @property
    def mean_norm(self) -> Float[Tensor, " sublayer"]:
        """Mean over samples of ``||h_s||_2``, in residual-stream units."""
        return self.norm_sum / self.n_samples

    @property
    def mean_cosine(self) -> Float[Tensor, " transition"]:
        """Mean over samples of ``cos(h_t, h_{t+1})`` (Fig 1E), dimensionless."""
        return self.cosine_sum / self.n_samples

    @property
    def mean_velocity(self) -> Float[Tensor, " transition"]:
        """Mean over samples of ``||h_{t+1} - h_t||_2`` (Fig 1F), residual-stream units."""
        return self.velocity_sum / self.n_samples

    def unit_correlation(self) -> Float[Tensor, "transition d_model"]:
        """Per-unit Pearson ``r`` across samples between sublayers ``t`` and ``t + 1`` (Fig 1C).

        As :func:`tl_dynamics.metrics.unit_correlation`: ``[sublayer - 1, d_model]``
        float64 in ``[-1, 1]``, NaN where the unit is constant at either sublayer.
        """
        scale = (self.m2[:-1] * self.m2[1:]).sqrt()
        r = torch.where(scale > 0, self.comoment / scale, math.nan)
        return r.clamp(-1.0, 1.0)


def moments(source: Source) -> MomentSummary:
    """One pass over ``source``, merging the :class:`MomentSummary` of each chunk.

    Raises:
        ValueError: ``source`` holds no chunk, or chunks of different shapes.
    """
    summaries = (MomentSummary.of(chunk) for chunk in iter_chunks(source))
    first = next(summaries, None)
    if first is None:
        raise DynamicsInputError("source holds no samples; collect some first")
    return reduce(MomentSummary.merge, summaries, first)


def _as_vectors(resid: Float[Tensor, "sample sublayer d_model"]) -> Float[Tensor, "vector d_model"]:
    """Every residual-stream vector (each sample at each sublayer) as one row."""
    return rearrange(resid, "sample sublayer d_model -> (sample sublayer) d_model")


def _fixed_batches(blocks: Iterable[Tensor], size: int, min_size: int) -> Iterator[Tensor]:
    """Re-cut row blocks into batches of ``size`` rows; a last batch shorter than
    ``min_size`` joins the one before (``sklearn.utils.gen_batches``' rule)."""
    held: Tensor | None = None  # a full batch, yielded once we know it is not the last
    rest: Tensor | None = None
    for block in blocks:
        rest = block if rest is None else torch.cat([rest, block])
        while len(rest) >= size:
            if held is not None:
                yield held
            held, rest = rest[:size], rest[size:]
    tail = rest if rest is not None and len(rest) else None
    if held is not None and tail is not None and len(tail) < min_size:
        held, tail = torch.cat([held, tail]), None
    yield from (batch for batch in (held, tail) if batch is not None)


def incremental_pca(
    source: Source, n_components: int = DEFAULT_PCA_COMPONENTS, *, batch_size: int | None = None
) -> PCATrajectories:
    """PCA of every residual-stream vector in ``source`` (samples x sublayers), chunk by chunk.

    The paper's PCA (Fig 4A-C) over the ``2NL x D`` matrix, fitted with scikit-learn's
    ``IncrementalPCA.partial_fit`` on float64 batches of ``batch_size`` vectors cut
    across chunks, so the fit equals ``IncrementalPCA(n_components,
    batch_size=batch_size).fit(all_vectors)``, with one batch in memory at a time. A
    second pass projects every trajectory and measures each sublayer's explained
    variance (around its own mean, and around the mean of all vectors) from mergeable
    sums (:class:`MomentSummary`), as :func:`~tl_dynamics.embed.explained_variance` does
    on the whole tensor.

    Args:
        source: A store, cache, tensor or sequence of chunks; it is read twice, so not a
            one-shot iterator or generator.
        n_components: Components to keep (at most ``d_model``).
        batch_size: Vectors per ``partial_fit``; default ``5 * d_model`` (scikit-learn's).
            At least ``n_components``.

    Returns:
        A :class:`~tl_dynamics.embed.PCATrajectories` (what
        :func:`~tl_dynamics.pca_trajectories` returns for the same data held in memory):
        ``pca`` is the fitted ``IncrementalPCA``; ``trajectories`` ``[sample, sublayer,
        k]`` float32 are in the order of ``source`` (a store's in text order, then
        position order, as its ``load()``).

    Raises:
        TypeError: ``source`` is a one-shot iterator.
        ValueError: ``batch_size < n_components``, or an empty ``source``.
    """
    if isinstance(source, Iterator):
        raise InputTypeError(
            "source must be readable twice (fit, then project): a DynamicsStore, a "
            "DynamicsCache, a tensor or a list of chunks, not a one-shot iterator or generator"
        )
    blocks = (_as_vectors(chunk) for chunk in iter_chunks(source))
    first = next(blocks, None)
    if first is None:
        raise DynamicsInputError("source holds no samples; collect some first")
    size = PCA_BATCH_PER_FEATURE * first.shape[-1] if batch_size is None else batch_size
    if isinstance(size, bool) or not isinstance(size, int) or size < n_components:
        raise DynamicsInputError(
            f"batch_size must be an int >= n_components ({n_components}); got {size!r}"
        )
    pca = IncrementalPCA(n_components=n_components)
    for batch in _fixed_batches(itertools.chain([first], blocks), size, n_components):
        pca.partial_fit(batch.to(STAT_DTYPE).numpy())
    return _projected(pca, source)


def _projected(pca: IncrementalPCA, source: Source) -> PCATrajectories:
    """Every trajectory of ``source`` on the components of ``pca``, and the variance kept."""
    coordinates, errors, summary = [], [], None
    for resid in iter_chunks(source):
        x = resid.to(STAT_DTYPE)
        points = pca.transform(_as_vectors(x).numpy())
        reconstruction = torch.from_numpy(pca.inverse_transform(points)).reshape(x.shape)
        errors.append((x - reconstruction).square().sum(dim=(0, 2)))
        coordinates.append(torch.from_numpy(points).reshape(*x.shape[:2], -1).float())
        chunk_summary = MomentSummary.of(x)
        summary = chunk_summary if summary is None else summary.merge(chunk_summary)
    trajectories = torch.cat(coordinates)
    if isinstance(source, DynamicsStore):  # shard order -> text order, then position order
        trajectories = trajectories[torch.argsort(torch.cat(source.load_targets()))]
    error = torch.stack(errors).sum(dim=0)
    own_spread = summary.m2.sum(dim=-1)
    offsets = (summary.mean - summary.mean.mean(dim=0)).square().sum(dim=-1)
    pooled_spread = own_spread + summary.n_samples * offsets  # around the mean of all vectors
    return PCATrajectories(
        pca=pca,
        trajectories=trajectories,
        mean_trajectory=trajectories.double().mean(dim=0).float(),
        cumulative_variance=torch.from_numpy(pca.explained_variance_ratio_.cumsum()),
        variance_per_sublayer=_kept_variance(error, own_spread),
        variance_per_sublayer_pooled=_kept_variance(error, pooled_spread),
        labels=_labels(source, trajectories.shape[1]),
    )


def _kept_variance(error: Tensor, spread: Tensor) -> Float[Tensor, " sublayer"]:
    """``1 - error / spread`` per sublayer, ``nan`` where there is no spread."""
    return torch.where(spread > 0, 1 - error / spread, torch.nan)


def _labels(source: Source, n_sublayers: int) -> tuple[str, ...]:
    """The sublayer labels of ``source``, or their indices where it has none (tensors)."""
    if isinstance(source, (DynamicsStore, DynamicsCache)):
        return tuple(source.labels)
    if isinstance(source, Sequence) and source and isinstance(source[0], DynamicsCache):
        return tuple(source[0].labels)
    return tuple(str(s) for s in range(n_sublayers))


def _chunk_reader(source: DynamicsStore | Sequence[Chunk]) -> tuple[int, Callable[[int], Chunk]]:
    """``(number of chunks, read(i))`` for random access to the chunks of ``source``."""
    if isinstance(source, DynamicsStore):
        return len(source.shards), source.read_shard
    if isinstance(source, Sequence) and not isinstance(source, str):
        return len(source), source.__getitem__
    raise InputTypeError(
        "source must be a DynamicsStore or a sequence of DynamicsCache or tensors (random "
        f"access is needed to shuffle); got {type(source).__name__}"
    )


def _samples_of(chunk: Chunk, texts: Tensor | None) -> Float[Tensor, "sample sublayer d_model"]:
    """The trajectories of ``chunk``, only those of ``texts`` when given."""
    resid = _resid(chunk)
    if texts is None:
        return resid
    if not isinstance(chunk, DynamicsCache):
        raise InputTypeError(
            "texts needs chunks that know their texts: a DynamicsStore or DynamicsCache chunks"
        )
    return resid[torch.isin(chunk.text_index, texts)]


def iter_minibatches(
    source: DynamicsStore | Sequence[Chunk],
    batch_size: int,
    seed: int,
    *,
    texts: Collection[int] | None = None,
    window: int = SHUFFLE_WINDOW,
    drop_last: bool = False,
) -> Iterator[Float[Tensor, "batch d_model"]]:
    """Shuffled minibatches of residual-stream vectors across the shards of a store.

    One epoch: every vector (each sample at each sublayer, the compressing autoencoder's
    unit of data) appears exactly once. The order of the shards is permuted, ``window``
    shards at a time are loaded and their vectors permuted together (with the leftover of
    the window before), so memory holds ``window`` shards. Reproducible from ``seed``;
    pass ``seed + epoch`` for a new order each epoch.

    Args:
        source: A store, or a sequence of caches or ``[sample, sublayer, d_model]`` tensors.
        batch_size: Vectors per minibatch.
        seed: Seed of every random choice.
        texts: Only the samples of these text indices, e.g. a training split that holds
            whole trajectories out for validation (successive sublayers of one sample are
            too alike to split); needs a store or caches.
        window: Shards shuffled together; larger mixes better and needs more memory.
        drop_last: Skip the last minibatch when it is shorter than ``batch_size``.

    Yields:
        ``[batch_size, d_model]`` float32 tensors (the last one possibly shorter).

    Raises:
        TypeError: ``source`` is neither a store nor a sequence of chunks, or ``texts``
            is given for tensors.
        ValueError: ``batch_size`` or ``window`` is not a positive int.
    """
    check_int(batch_size, "batch_size")
    check_int(window, "window")
    n_chunks, read = _chunk_reader(source)
    wanted = None if texts is None else torch.tensor(sorted(texts), dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_chunks, generator=generator).tolist()
    leftover: list[Tensor] = []  # vectors of the window before that filled no minibatch
    for start in range(0, n_chunks, window):
        blocks = [_as_vectors(_samples_of(read(i), wanted)) for i in order[start : start + window]]
        vectors = torch.cat([*leftover, *blocks])
        vectors = vectors[torch.randperm(len(vectors), generator=generator)]
        full = len(vectors) - len(vectors) % batch_size
        yield from vectors[:full].split(batch_size)
        leftover = [vectors[full:]]
    if not drop_last and leftover and len(leftover[0]):
        yield leftover[0]
