"""jPCA: rotations of the whole population, in planes found from the data.

The paper counts rotations unit by unit (Fig 2), in the residual stream's coordinate
axes, which carry no special meaning. Churchland et al. (2012, *Neural population
dynamics during reaching*, Nature 487:51) ask the population-level question instead:
is the flow of the state along time well described by a *rotation*, ``dz = z M`` with
``M`` skew-symmetric (``M = -M^T``), whose eigenvalues come in pairs ``+-i w``? With
depth as time, :func:`jpca` does exactly this:

1. ``X[b, s] = resid[b, s]`` minus the mean over samples at sublayer ``s`` (the
   condition-independent part is removed, as Churchland et al. do);
2. PCA (scikit-learn) of ``X`` stacked over samples and sublayers, to ``k`` components:
   ``Z [sample, sublayer, k]``;
3. ``Z_t = Z[:, :-1]`` and ``dZ = Z[:, 1:] - Z[:, :-1]`` stacked over samples and steps;
4. least squares ``dZ ~ Z_t M`` with ``M`` free (``M_full``) and with ``M`` skew-symmetric
   (``M_skew``). The skew fit is linear in the ``k (k - 1) / 2`` free entries and solved
   exactly: setting the skew part of the gradient to zero gives the Lyapunov equation
   ``C M + M C = A - A^T`` with ``C = Z_t^T Z_t`` and ``A = Z_t^T dZ``; in the eigenbasis
   ``C = U diag(l) U^T`` it is solved entrywise, ``M'_ij = (U^T (A - A^T) U)_ij / (l_i + l_j)``;
5. ``r2 = 1 - ||dZ - Z_t M||^2 / ||dZ||^2`` for both fits;
6. each conjugate pair ``+-i w`` of ``M_skew`` turns ``w (S - 1) / (2 pi)`` times over the
   ``S - 1`` steps of depth; its *jPC plane* is spanned by the real and imaginary parts of
   the eigenvector, oriented so that the fitted flow turns counter-clockwise (jPC1 to
   jPC2) and rotated within the plane so that jPC1 lies along the largest spread of the
   first sublayer's states, as Churchland et al. orient it;
7. a layer-shuffle null: one permutation of the sublayers, shared by all samples, per
   shuffle; ``r2_skew`` is refitted on the permuted ``Z`` (the PCA and the per-sublayer
   centring do not depend on the order) and the p-value is one-sided,
   ``(1 + #{null >= observed}) / (1 + n_shuffles)``. Any smooth ordered flow beats this
   null (a pure growth of scale, smoothed noise): shuffling destroys smoothness, not
   rotation;
8. the null to decide on keeps smoothness: surrogate populations with ``Z``'s covariance
   over sublayers (each trajectory's smoothness) and over components, maximal entropy
   otherwise (Elsayed & Cunningham 2017, :mod:`tl_dynamics._surrogates`), each of as
   many samples as ``Z``; such a population has no rotation, so ``r2_skew`` beating it
   is evidence of one. ``surrogate_p_value = (1 + #{surrogate >= observed}) / (1 +
   n_surrogates)``;
9. a cross-validated fit: the texts split in two halves (seeded); the centring, the PCA
   and ``M`` fitted on one half score ``1 - ||dZ - Z_t M||^2 / ||dZ||^2`` on the other,
   both ways, averaged (``r2_skew_cv``, ``r2_full_cv``): an in-sample ``r2`` rises with
   ``k`` whatever the flow.

A discrete rotation by ``theta`` per step is ``dz = z (R - I)``, whose skew part has
``w = sin(theta)`` and whose symmetric part ``(cos(theta) - 1) I`` is left over, so a pure
rotation gives ``r2_skew = cos^2(theta / 2)``: 0.99 for 0.2 rad per step.

Example::

    import tl_dynamics as tld

    dyn = tld.collect(tld.models.load_model(), tld.data.python_docs()[:128])
    result = tld.jpca(dyn, k=6, n_shuffles=1000, seed=0)
    result.r2_skew, result.surrogate_p_value, result.rotations   # fit, against the smooth null, turns
    result.r2_skew_cv                                     # the skew fit on held-out texts
    result.to_frame()                                     # one row per jPC plane
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import einops
import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from sklearn.decomposition import PCA
from torch import Tensor

from tl_dynamics._checks import check_int
from tl_dynamics._repr import compact_repr
from tl_dynamics._surrogates import fit_maximum_entropy
from tl_dynamics.cache import DynamicsCache
from tl_dynamics.embed import as_trajectories
from tl_dynamics.errors import DynamicsInputError

__all__ = [
    "DEFAULT_COMPONENTS",
    "DEFAULT_SHUFFLES",
    "DEFAULT_SURROGATES",
    "MIN_SUBLAYERS",
    "FULL_TURN",
    "JPCAResult",
    "skew_least_squares",
    "jpca",
]

DEFAULT_COMPONENTS = 6  # Churchland et al. (2012) fit jPCA in the top 6 PCs
DEFAULT_SHUFFLES = 1000  # the paper's size of a layer-shuffle null (section 2.6)
DEFAULT_SURROGATES = 500  # maximum-entropy surrogates: p resolves to 1/501, at ~20 ms each
# at SmolLM2's report size (823 texts x 60 sublayers x 6 components)
SURROGATE_CHUNK = 16  # surrogate populations drawn at once
MIN_SUBLAYERS = 3  # a shuffle of 2 sublayers only reverses time
FULL_TURN = 2 * math.pi  # radians in one rotation


@dataclass(frozen=True, eq=False)
class JPCAResult:
    """A jPCA fit of the residual stream's flow over depth (module docstring).

    Attributes:
        components: ``[k, d_model]`` float64 principal axes (unit vectors in the residual
            stream) of the per-sublayer-centred states.
        explained_variance_ratio: ``[k]`` fraction of the centred states' variance each
            component holds.
        scores: ``[sample, sublayer, k]`` float64 ``Z``, the centred states in those
            components, residual-stream units.
        M_full: ``[k, k]`` least-squares ``M`` of ``dZ ~ Z_t M``, per sublayer step.
        M_skew: ``[k, k]`` the same with ``M`` skew-symmetric (exact).
        r2_full, r2_skew: fraction of ``||dZ||^2`` each fit explains.
        frequencies: ``[pair]`` ``w`` of each eigenvalue pair ``+-i w`` of ``M_skew``,
            radians per sublayer step, descending.
        rotations: ``[pair]`` turns over the whole depth, ``w (S - 1) / (2 pi)``.
        planes: ``[pair, k, 2]`` orthonormal (jPC1, jPC2) of each pair, in ``Z``
            coordinates; ``components.T @ planes[p]`` gives them in the residual stream.
        null_r2_skew: ``[shuffle]`` ``r2_skew`` after each layer shuffle.
        p_value: one-sided permutation p-value of ``r2_skew`` against the layer shuffles
            (beaten by any smooth flow: describe with it, decide on ``surrogate_p_value``).
        surrogate_r2_skew: ``[surrogate]`` ``r2_skew`` of each maximum-entropy surrogate.
        surrogate_p_value: one-sided Monte Carlo p-value of ``r2_skew`` against them.
        r2_skew_cv, r2_full_cv: the fits' ``r2`` on held-out texts (module docstring,
            step 9); NaN with fewer than 4 texts.
        labels: labels of the sublayers.
        n_shuffles: number of layer shuffles.
        seed: seed of the PCA's solver and of the shuffles (numpy ``PCG64``).
    """

    __repr__ = compact_repr

    components: Float[Tensor, "k d_model"]
    explained_variance_ratio: Float[Tensor, " k"]
    scores: Float[Tensor, "sample sublayer k"]
    M_full: Float[Tensor, "k k"]
    M_skew: Float[Tensor, "k k"]
    r2_full: float
    r2_skew: float
    frequencies: Float[Tensor, " pair"]
    rotations: Float[Tensor, " pair"]
    planes: Float[Tensor, "pair k 2"]
    null_r2_skew: Float[Tensor, " shuffle"]
    p_value: float
    surrogate_r2_skew: Float[Tensor, " surrogate"]
    surrogate_p_value: float
    r2_skew_cv: float
    r2_full_cv: float
    labels: tuple[str, ...]
    n_shuffles: int
    seed: int

    def plane_trajectories(self, pair: int = 0) -> Float[Tensor, "sample sublayer 2"]:
        """Every sample's trajectory in jPC plane ``pair`` (0: the fastest), residual-stream
        units."""
        pair = check_int(pair, "pair", 0, len(self.frequencies) - 1)
        return self.scores @ self.planes[pair]

    def to_frame(self) -> pd.DataFrame:
        """One row per jPC plane: ``pair``, ``frequency`` (radians per sublayer step),
        ``rotations`` (turns over depth), with the fit's ``r2_skew``, ``r2_full`` and
        ``p_value``, ``surrogate_p_value`` and ``r2_skew_cv`` repeated on every row."""
        return pd.DataFrame(
            {
                "pair": np.arange(len(self.frequencies)),
                "frequency": self.frequencies.numpy(),
                "rotations": self.rotations.numpy(),
                "r2_skew": self.r2_skew,
                "r2_full": self.r2_full,
                "p_value": self.p_value,
                "surrogate_p_value": self.surrogate_p_value,
                "r2_skew_cv": self.r2_skew_cv,
            }
        )


def _r2(z_t: np.ndarray, dz: np.ndarray, m: np.ndarray) -> float:
    """``1 - ||dz - z_t m||^2 / ||dz||^2``."""
    return float(1.0 - np.sum((dz - z_t @ m) ** 2) / np.sum(dz**2))


def skew_least_squares(
    z_t: Float[np.ndarray, "row k"], dz: Float[np.ndarray, "row k"]
) -> Float[np.ndarray, "k k"]:
    """The skew-symmetric ``M`` minimising ``||dz - z_t M||_F``, in closed form.

    Solves ``C M + M C = A - A^T`` (``C = z_t^T z_t``, ``A = z_t^T dz``) in the eigenbasis
    of ``C`` (module docstring, step 4). ``z_t`` must have full column rank.
    """
    return _skew_from_moments(z_t.T @ z_t, z_t.T @ dz)


def _skew_from_moments(
    c: Float[np.ndarray, "*batch k k"], a: Float[np.ndarray, "*batch k k"]
) -> Float[np.ndarray, "*batch k k"]:
    """:func:`skew_least_squares` from the moments ``C = z_t^T z_t`` and ``A = z_t^T dz``
    (batched over leading axes)."""
    variance, basis = np.linalg.eigh(c)
    if np.any(variance.min(-1) <= variance.max(-1) * np.finfo(float).eps * variance.shape[-1]):
        raise DynamicsInputError(
            "the states do not span all k components (z_t is rank deficient); lower k"
        )
    basis_t = np.swapaxes(basis, -1, -2)
    rotated = basis_t @ (a - np.swapaxes(a, -1, -2)) @ basis
    return basis @ (rotated / (variance[..., :, None] + variance[..., None, :])) @ basis_t


def _steps(z: Float[np.ndarray, "sample sublayer k"]) -> tuple[np.ndarray, np.ndarray]:
    """``(Z_t, dZ)`` stacked over samples and steps."""
    z_t = einops.rearrange(z[:, :-1], "b t k -> (b t) k")
    dz = einops.rearrange(z[:, 1:] - z[:, :-1], "b t k -> (b t) k")
    return z_t, dz


def _planes(
    m_skew: np.ndarray, first: Float[np.ndarray, "sample k"]
) -> tuple[np.ndarray, np.ndarray]:
    """``(frequencies [pair], planes [pair, k, 2])`` of ``M_skew``'s eigenvalue pairs."""
    values, vectors = np.linalg.eig(m_skew)
    positive = np.flatnonzero(values.imag > 0)
    positive = positive[np.argsort(-values.imag[positive], kind="stable")]
    planes = []
    for index in positive:
        plane, _ = np.linalg.qr(np.stack([vectors[:, index].real, vectors[:, index].imag], 1))
        if (plane.T @ m_skew @ plane)[0, 1] < 0:  # dz = z M turns jPC1 -> jPC2
            plane[:, 1] *= -1
        # Rotate within the plane (this commutes with the flow) so that jPC1 lies along
        # the largest spread of the first sublayer's states.
        spread = first @ plane
        _, _, axes = np.linalg.svd(spread - spread.mean(0), full_matrices=False)
        direction = axes[0] * np.sign(axes[0][0] or 1.0)
        rotation = np.array([[direction[0], -direction[1]], [direction[1], direction[0]]])
        planes.append(plane @ rotation)
    k = m_skew.shape[0]
    return values.imag[positive], np.array(planes).reshape(len(positive), k, 2)


def _shuffled_r2(z: np.ndarray, n_shuffles: int, seed: int) -> np.ndarray:
    """``r2_skew`` after ``n_shuffles`` permutations of the sublayer axis (numpy PCG64).

    Every quantity of a refit is a sum over steps of blocks of the sublayer Gram tensor
    ``G[s, u] = Z[:, s]^T Z[:, u]`` (summed over samples): for the order ``p``,
    ``C = sum_t G[p_t, p_t]``, ``A = sum_t G[p_t, p_t+1] - C``, ``||dZ||^2 = sum_t
    tr(G[p_t+1, p_t+1] - 2 G[p_t, p_t+1] + G[p_t, p_t])`` and ``||dZ - Z_t M||^2 =
    ||dZ||^2 - 2 tr(M^T A) + tr(M^T C M)``. ``G`` is formed once, so a shuffle costs
    ``O(S k^2)`` instead of a pass over all samples (the same numbers as refitting on the
    permuted ``Z``, to rounding; tests).
    """
    n_samples, n_sublayers, k = z.shape
    flat = einops.rearrange(z, "b s k -> b (s k)")
    gram = einops.rearrange(flat.T @ flat, "(s k) (u l) -> s u k l", s=n_sublayers, u=n_sublayers)
    own = gram[np.arange(n_sublayers), np.arange(n_sublayers)]  # [sublayer, k, k]
    own_trace = np.trace(own, axis1=-2, axis2=-1)
    generator = np.random.Generator(np.random.PCG64(seed))
    orders = np.stack([generator.permutation(n_sublayers) for _ in range(n_shuffles)])
    first, last = orders[:, 0], orders[:, -1]
    c = own.sum(0) - own[last]  # [shuffle, k, k]
    cross = gram[orders[:, :-1], orders[:, 1:]].sum(1)
    a = cross - c
    total = 2 * own_trace.sum() - own_trace[first] - own_trace[last]
    change = total - 2 * np.trace(cross, axis1=-2, axis2=-1)
    return _skew_r2_from_moments(c, a, change)


def _skew_r2_from_moments(
    c: Float[np.ndarray, "*batch k k"], a: Float[np.ndarray, "*batch k k"],
    change: Float[np.ndarray, "*batch"],
) -> Float[np.ndarray, "*batch"]:
    """``r2_skew`` from ``C = Z_t^T Z_t``, ``A = Z_t^T dZ`` and ``||dZ||^2``, batched:
    ``1 - (||dZ||^2 - 2 tr(M^T A) + tr(M^T C M)) / ||dZ||^2`` for the skew fit ``M``."""
    m = _skew_from_moments(c, a)
    m_t = np.swapaxes(m, -1, -2)
    left = change - 2 * np.trace(m_t @ a, axis1=-2, axis2=-1)
    left = left + np.trace(m_t @ c @ m, axis1=-2, axis2=-1)
    return 1.0 - left / change


def _moments(z: Float[np.ndarray, "*batch sample sublayer k"]) -> tuple[np.ndarray, ...]:
    """``(C, A, ||dZ||^2)`` of populations ``z``: ``Z_t^T Z_t``, ``Z_t^T dZ`` summed over
    samples and steps, batched over leading axes."""
    z_t, dz = z[..., :-1, :], z[..., 1:, :] - z[..., :-1, :]
    # As matrix products over (sample, step) rows, by BLAS: 3x faster than einsum here
    # (16 surrogates of 823 x 60 x 6: 0.036 s against 0.118 s).
    z_t = einops.rearrange(z_t, "... b t k -> ... (b t) k")
    dz = einops.rearrange(dz, "... b t k -> ... (b t) k")
    z_t_transposed = np.swapaxes(z_t, -1, -2)
    return z_t_transposed @ z_t, z_t_transposed @ dz, np.square(dz).sum(axis=(-2, -1))


def _surrogate_r2(z: np.ndarray, n_surrogates: int, seed: int) -> np.ndarray:
    """``r2_skew`` of ``n_surrogates`` maximum-entropy surrogates of ``z`` (step 8).

    ``r2_skew`` does not change under an orthogonal change of the components, so each
    surrogate stays in the eigenbasis of the components' covariance."""
    model = fit_maximum_entropy(z)
    rng = np.random.default_rng([seed, 1])
    r2 = []
    for start in range(0, n_surrogates, SURROGATE_CHUNK):
        size = min(SURROGATE_CHUNK, n_surrogates - start)
        coefficients = rng.standard_normal((size, *z.shape)) * np.sqrt(model.variance)
        r2.append(_skew_r2_from_moments(*_moments(model.time_basis @ coefficients)))
    return np.concatenate(r2)


def _held_out_r2(resid: np.ndarray, groups: np.ndarray, k: int, seed: int) -> tuple[float, float]:
    """``(r2_skew_cv, r2_full_cv)``: fitted on one half of the texts, scored on the other,
    both ways, averaged (step 9); NaN when a half has fewer than 2 texts or k states."""
    texts = np.unique(groups)
    order = np.random.default_rng([seed, 2]).permutation(texts)
    halves = [np.isin(groups, order[: len(order) // 2]), np.isin(groups, order[len(order) // 2 :])]
    if min(len(texts) // 2, min(int(h.sum()) for h in halves) * resid.shape[1] // k) < 2:
        return math.nan, math.nan
    scores = []
    for train, test in (halves, halves[::-1]):
        centre = resid[train].mean(0)
        fit = resid[train] - centre
        pca = PCA(n_components=k, random_state=seed).fit(einops.rearrange(fit, "b s d -> (b s) d"))
        z_fit = (fit - pca.mean_) @ pca.components_.T
        z_test = (resid[test] - centre - pca.mean_) @ pca.components_.T
        z_t, dz = _steps(z_fit)
        held_t, held_dz = _steps(z_test)
        models = (skew_least_squares(z_t, dz), np.linalg.lstsq(z_t, dz, rcond=None)[0])
        scores.append([_r2(held_t, held_dz, m) for m in models])
    skew, full = np.mean(scores, axis=0)
    return float(skew), float(full)


def bootstrap_r2_skew(
    result: JPCAResult, weights: Float[Tensor, "resample sample"]
) -> Float[np.ndarray, " resample"]:
    """``r2_skew`` refitted on resampled samples, the principal axes held fixed.

    ``weights [resample, sample]`` (rows summing to 1, e.g. a bootstrap over texts) weigh
    each sample's moments ``Z_t^T Z_t``, ``Z_t^T dZ`` and ``||dZ||^2``; the skew fit and its
    ``r2`` are then solved per resample, exactly as :func:`jpca` solves them on all samples.
    Returns float64 ``[resample]``.
    """
    z = result.scores.numpy()
    z_t, dz = z[:, :-1], z[:, 1:] - z[:, :-1]
    w = weights.to(torch.float64).numpy()
    if w.shape[-1] != len(z):
        raise ValueError(
            f"weights must have one column per sample ({len(z)}); got shape {w.shape}"
        )
    c = np.einsum("rb,btk,btl->rkl", w, z_t, z_t, optimize=True)
    a = np.einsum("rb,btk,btl->rkl", w, z_t, dz, optimize=True)
    change = w @ np.square(dz).sum(axis=(1, 2))
    return _skew_r2_from_moments(c, a, change)


def jpca(
    dyn: Any,
    k: int = DEFAULT_COMPONENTS,
    *,
    n_shuffles: int = DEFAULT_SHUFFLES,
    n_surrogates: int = DEFAULT_SURROGATES,
    seed: int = 0,
) -> JPCAResult:
    """Fit jPCA (Churchland et al. 2012) to the flow over depth, against a layer-shuffle
    null and a smooth maximum-entropy null, with a held-out fit.

    Args:
        dyn: A :class:`~tl_dynamics.DynamicsCache` or a ``[sample, sublayer, d_model]``
            tensor; at least 2 samples and 3 sublayers.
        k: Principal components to fit in (even ``k`` pairs them all; Churchland et al.
            use 6); at most ``d_model`` and the number of centred vectors.
        n_shuffles: Layer shuffles of the null, >= 1.
        n_surrogates: Maximum-entropy surrogate populations, >= 1.
        seed: Seeds the PCA's randomised solver (used for large inputs), the shuffles,
            the surrogates and the split into halves (by ``dyn.text_index`` for a cache,
            by sample for a tensor).

    Returns:
        A :class:`JPCAResult` of float64 CPU tensors.

    Raises:
        TypeError, ValueError: a bad ``dyn``, ``k``, ``n_shuffles`` or ``seed``; states
            that do not span ``k`` components.
    """
    resid, labels = as_trajectories(dyn)
    n_samples, n_sublayers, d_model = resid.shape
    if n_samples < 2 or n_sublayers < MIN_SUBLAYERS:
        raise DynamicsInputError(
            f"dyn needs at least 2 samples and {MIN_SUBLAYERS} sublayers for jPCA; got "
            f"shape {tuple(resid.shape)}"
        )
    k = check_int(k, "k", 2, min(d_model, (n_samples - 1) * n_sublayers),
                   f" (d_model {d_model}, {n_samples} samples x {n_sublayers} sublayers)")
    n_shuffles = check_int(n_shuffles, "n_shuffles", 1)
    n_surrogates = check_int(n_surrogates, "n_surrogates", 1)
    seed = check_int(seed, "seed", 0)
    groups = dyn.text_index.cpu().numpy() if isinstance(dyn, DynamicsCache) else np.arange(n_samples)

    centred = (resid - resid.mean(dim=0)).numpy()
    pca = PCA(n_components=k, random_state=seed)
    z = pca.fit_transform(einops.rearrange(centred, "b s d -> (b s) d"))
    z = einops.rearrange(z, "(b s) k -> b s k", b=n_samples)
    z_t, dz = _steps(z)
    m_full = np.linalg.lstsq(z_t, dz, rcond=None)[0]
    m_skew = skew_least_squares(z_t, dz)
    r2_skew = _r2(z_t, dz, m_skew)
    frequencies, planes = _planes(m_skew, z[:, 0])
    null = _shuffled_r2(z, n_shuffles, seed)
    surrogate = _surrogate_r2(z, n_surrogates, seed)
    r2_skew_cv, r2_full_cv = _held_out_r2(resid.numpy(), groups, k, seed)
    return JPCAResult(
        components=torch.from_numpy(pca.components_.astype(np.float64)),
        explained_variance_ratio=torch.from_numpy(pca.explained_variance_ratio_.astype(np.float64)),
        scores=torch.from_numpy(z),
        M_full=torch.from_numpy(m_full),
        M_skew=torch.from_numpy(m_skew),
        r2_full=_r2(z_t, dz, m_full),
        r2_skew=r2_skew,
        frequencies=torch.from_numpy(frequencies.copy()),
        rotations=torch.from_numpy(frequencies * (n_sublayers - 1) / FULL_TURN),
        planes=torch.from_numpy(planes),
        null_r2_skew=torch.from_numpy(null),
        p_value=float((1 + np.sum(null >= r2_skew)) / (1 + n_shuffles)),
        surrogate_r2_skew=torch.from_numpy(surrogate),
        surrogate_p_value=float((1 + np.sum(surrogate >= r2_skew)) / (1 + n_surrogates)),
        r2_skew_cv=r2_skew_cv,
        r2_full_cv=r2_full_cv,
        labels=labels,
        n_shuffles=n_shuffles,
        seed=seed,
    )
