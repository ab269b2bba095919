"""Regimes: a switching linear dynamical system fitted to trajectories.

One linear system ``x_{t+1} = A x_t + b + noise`` describes a trajectory only if the
same rule moves the state at every step. Carson & Reisizadeh (2025, *A statistical
physics of language model reasoning*) find that the hidden states of a language model,
read from sentence to sentence, are better described by a few rules that take turns: a
*switching* linear dynamical system, four regimes on a rank-40 projection, held-out R2
about 0.68 against a single system's lower one. :func:`regimes` fits the same kind of
model to trajectories over tokens (the stream at one sublayer, token after token) or over
depth (one token's stream, sublayer after sublayer):

1. the texts are split into training and held-out texts (the text is the independent
   unit, so no held-out text lends a step to the fit);
2. PCA (scikit-learn) fitted on the training texts' states only projects every state to
   ``rank`` dimensions;
3. an *autoregressive hidden Markov model* (ARHMM: each step's regime ``z_t`` follows a
   Markov chain, and ``x_{t+1} = A_z x_t + b_z + e``, ``e ~ N(0, Q_z)``) is fitted by
   expectation-maximisation. The hidden Markov machinery (forward-backward, the
   transition matrix's update, Viterbi decoding, multiple sequences) is hmmlearn's
   ``BaseHMM``; the observation of a step is the pair ``[x_t, x_{t+1}]`` and its
   emission model, written here, is the regime's Gaussian linear regression of
   ``x_{t+1}`` on ``x_t`` (weighted least squares in the M step);
4. with ``n_regimes=None`` the number of regimes ``K`` is the one, among
   ``1..MAX_REGIMES``, whose fit on part of the training texts gives the highest
   log-likelihood per step on the rest (each extra regime must earn
   ``MIN_GAIN_NATS`` nats per step), refitted then on all training texts;
5. ``r2_heldout`` is the one-step-ahead forecast on held-out texts: the regime
   probabilities given the steps so far (the forward filter, never the step being
   predicted) weigh each regime's prediction, and
   ``R2 = 1 - sum ||x_{t+1} - x_hat||^2 / sum ||x_{t+1} - mean||^2`` in the projection;
   ``r2_single`` is the same forecast of one linear system (``K = 1``) on the same texts;
6. ``control`` (e.g. the token-shuffled texts) is fitted the same way with the same
   ``K``, so a gain over one system that word order does not explain shows as a gap
   between the two fits.

Each step's regime (``states``) is the Viterbi path of every sample, training or held out.

Over tokens, collect every token and keep one sublayer (:func:`token_trajectories`);
over depth, pass the cache itself (its samples are the tokens, its steps the sublayers).

Example::

    import tl_dynamics as tld

    model = tld.models.load_model("minilm")
    texts = tld.data.python_docs()[:64]
    dyn = tld.collect(model, texts, positions="all")
    shuffled = tld.collect(model, texts, positions="all", shuffle=True)
    tokens = tld.token_trajectories(dyn, "3_mid", n_tokens=16)   # [text, 16, d_model]
    control = tld.token_trajectories(shuffled, "3_mid", n_tokens=16)
    result = tld.regimes(tokens, rank=8, control=control, seed=0)
    result.n_regimes, result.r2_heldout, result.r2_single, result.control.r2_heldout
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import einops
import numpy as np
import pandas as pd
import torch
from hmmlearn.base import BaseHMM
from jaxtyping import Bool, Float, Int
from scipy.linalg import cho_factor, cho_solve
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from torch import Tensor

from tl_dynamics._checks import check_int
from tl_dynamics._repr import compact_repr
from tl_dynamics.cache import DynamicsCache
from tl_dynamics.embed import as_trajectories
from tl_dynamics.errors import DynamicsInputError

__all__ = [
    "DEFAULT_RANK",
    "MAX_REGIMES",
    "HELDOUT_FRACTION",
    "MIN_GAIN_NATS",
    "Regimes",
    "AutoregressiveHMM",
    "forecast",
    "token_trajectories",
    "regimes",
]

DEFAULT_RANK = 16  # a projection that 2 CPU cores fit in seconds; Carson & Reisizadeh use 40
MAX_REGIMES = 6  # candidates 1..6: Carson & Reisizadeh find 4 regimes
HELDOUT_FRACTION = 0.25  # a quarter of the texts held out, for R2 and for choosing K
MIN_GAIN_NATS = 0.01  # held-out nats per step an extra regime must add to be kept
N_ITER = 100  # EM iterations at most
TOLERANCE = 1e-2  # EM stops when the log-likelihood gains less (nats, whole data; hmmlearn's default)
N_INIT = 3  # EM restarts from different k-means seeds; the best training fit is kept
STICKY = 0.9  # initial probability of staying in a regime (regimes last several steps)
RIDGE = 1e-6  # relative ridge on each regression's normal equations (trace-scaled)
COVARIANCE_FLOOR = 1e-6  # relative floor on each noise covariance (trace-scaled)
PSEUDOCOUNT = 1e-2  # Dirichlet pseudocount on start and transition counts: no regime's row empties
MIN_TEXTS = 4  # fewest texts: two for training, one for choosing K, one held out
MIN_STEPS = 3  # fewest states per trajectory: two transitions


class AutoregressiveHMM(BaseHMM):
    """hmmlearn's HMM with Gaussian autoregressive emissions (an ARHMM).

    Each row of ``X`` is one step ``[x_t, x_{t+1}]`` (``2 * rank`` features); in regime
    ``k``, ``x_{t+1} ~ N([x_t, 1] @ coef_[k], covars_[k])``. Fitted attributes besides
    hmmlearn's ``startprob_`` and ``transmat_``: ``coef_`` ``[K, rank + 1, rank]`` (the
    last row is the offset) and ``covars_`` ``[K, rank, rank]``. Parameters ``"c"``
    (coefficients) and ``"v"`` (covariances) join hmmlearn's ``"s"`` and ``"t"``.
    Emission parameters start from k-means of ``[x_t, x_{t+1} - x_t]``: one
    least-squares regression per cluster.
    """

    def __init__(
        self,
        n_components: int = 1,
        random_state: Any = None,
        n_iter: int = N_ITER,
        tol: float = TOLERANCE,
        params: str = "stcv",
        init_params: str = "stcv",
        implementation: str = "log",
    ) -> None:
        super().__init__(
            n_components=n_components,
            random_state=random_state,
            n_iter=n_iter,
            tol=tol,
            params=params,
            init_params=init_params,
            implementation=implementation,
            startprob_prior=1 + PSEUDOCOUNT,
            transmat_prior=1 + PSEUDOCOUNT,
        )

    def _rank(self) -> int:
        return self.n_features // 2

    def _split(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rank = self._rank()
        design = np.hstack([X[:, :rank], np.ones((len(X), 1))])
        return design, X[:, rank:]

    def _get_n_fit_scalars_per_param(self) -> dict[str, int]:
        k, r = self.n_components, self._rank()
        return {"s": k - 1, "t": k * (k - 1), "c": k * (r + 1) * r, "v": k * r * (r + 1) // 2}

    def _init(self, X: np.ndarray, lengths: Any = None) -> None:
        super()._init(X, lengths)
        k = self.n_components
        if "t" in self.init_params:
            off = (1 - STICKY) / (k - 1) if k > 1 else 0.0
            self.transmat_ = np.full((k, k), off) + np.eye(k) * (STICKY - off if k > 1 else 1.0)
        if "s" in self.init_params:
            self.startprob_ = np.full(k, 1.0 / k)
        design, nxt = self._split(X)
        if k == 1:
            labels = np.zeros(len(X), dtype=int)
        else:
            features = np.hstack([design[:, :-1], nxt - design[:, :-1]])
            seed = self.random_state if isinstance(self.random_state, int) else None
            labels = KMeans(k, n_init=1, random_state=seed).fit_predict(features)
        onehot = np.eye(k)[labels]
        self._emission_mstep(self._gram(X, onehot), onehot.sum(0))

    def _check(self) -> None:
        super()._check()
        self.coef_ = np.asarray(self.coef_)
        self.covars_ = np.asarray(self.covars_)

    def _compute_log_likelihood(self, X: np.ndarray) -> np.ndarray:
        design, nxt = self._split(X)
        chol = np.linalg.cholesky(self.covars_)  # [K, r, r]
        residual = nxt[None] - design[None] @ self.coef_  # [K, n, r]
        whitened = residual @ np.linalg.inv(chol).transpose(0, 2, 1)
        log_det = 2 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(1)  # [K]
        log_like = -0.5 * ((whitened**2).sum(-1) + log_det[:, None] + nxt.shape[1] * math.log(2 * math.pi))
        return log_like.T

    def _gram(self, X: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """``[K, 2r + 1, 2r + 1]`` weighted Gram matrices of the rows ``[x_t, 1, x_{t+1}]``."""
        design, nxt = self._split(X)
        rows = np.hstack([design, nxt])
        return np.stack([(rows * weights[:, [k]]).T @ rows for k in range(weights.shape[1])])

    def _initialize_sufficient_statistics(self) -> dict[str, Any]:
        stats = super()._initialize_sufficient_statistics()
        width = 2 * self._rank() + 1
        stats["gram"] = np.zeros((self.n_components, width, width))
        stats["post"] = np.zeros(self.n_components)
        return stats

    def _accumulate_sufficient_statistics(
        self, stats: dict[str, Any], X: np.ndarray, lattice: Any, posteriors: np.ndarray, fwdlattice: Any, bwdlattice: Any
    ) -> None:
        super()._accumulate_sufficient_statistics(stats, X, lattice, posteriors, fwdlattice, bwdlattice)
        stats["gram"] += self._gram(X, posteriors)
        stats["post"] += posteriors.sum(0)

    def _emission_mstep(self, gram: np.ndarray, post: np.ndarray) -> None:
        """Each regime's weighted least squares (ridge) and residual covariance (floored)."""
        k, r = self.n_components, self._rank()
        coef, covars = np.empty((k, r + 1, r)), np.empty((k, r, r))
        for j in range(k):
            xx, xy, yy = gram[j, : r + 1, : r + 1], gram[j, : r + 1, r + 1 :], gram[j, r + 1 :, r + 1 :]
            n = max(post[j], 1.0)
            ridge = RIDGE * (np.trace(xx) / (r + 1) + 1e-12)
            coef[j] = cho_solve(cho_factor(xx + ridge * np.eye(r + 1)), xy)
            residual = (yy - coef[j].T @ xy - xy.T @ coef[j] + coef[j].T @ xx @ coef[j]) / n
            floor = COVARIANCE_FLOOR * (np.trace(yy) / (n * r) + 1e-12)
            covars[j] = (residual + residual.T) / 2 + floor * np.eye(r)
        if "c" in self.params:
            self.coef_ = coef
        if "v" in self.params:
            self.covars_ = covars

    def _do_mstep(self, stats: dict[str, Any]) -> None:
        super()._do_mstep(stats)
        self._emission_mstep(stats["gram"], stats["post"])


def forecast(
    model: AutoregressiveHMM, steps: Float[np.ndarray, "sample step two_rank"]
) -> tuple[Float[np.ndarray, "sample step rank"], Float[np.ndarray, " sample"]]:
    """One-step-ahead predictions of ``x_{t+1}`` for equal-length sequences of steps.

    Each step's prediction weighs the regimes' predictions by their probability given
    the *earlier* steps only (the normalised forward filter pushed through the
    transition matrix; the start distribution at the first step).

    Returns:
        ``(predictions, log_likelihood)``: ``[sample, step, rank]`` and each sequence's
        log-likelihood in nats (the sum of the filter's log normalisers, which equals
        hmmlearn's ``score`` of the sequence).
    """
    n, t, _ = steps.shape
    rows = einops.rearrange(steps, "n t f -> (n t) f")
    log_like = einops.rearrange(model._compute_log_likelihood(rows), "(n t) k -> n t k", n=n)
    design, _ = model._split(rows)
    predictions = einops.rearrange(design[None] @ model.coef_, "k (n t) r -> n t k r", n=n)
    prior = np.broadcast_to(model.startprob_, (n, model.n_components))
    out, evidence = np.empty((n, t, predictions.shape[-1])), np.zeros(n)
    for step in range(t):
        out[:, step] = np.einsum("nk,nkr->nr", prior, predictions[:, step])
        joint = np.log(np.maximum(prior, np.finfo(float).tiny)) + log_like[:, step]
        top = joint.max(1, keepdims=True)
        posterior = np.exp(joint - top)
        evidence += top[:, 0] + np.log(posterior.sum(1))
        prior = (posterior / posterior.sum(1, keepdims=True)) @ model.transmat_
    return out, evidence


def _r2(truth: np.ndarray, predicted: np.ndarray) -> float:
    truth = einops.rearrange(truth, "n t r -> (n t) r")
    predicted = einops.rearrange(predicted, "n t r -> (n t) r")
    total = ((truth - truth.mean(0)) ** 2).sum()
    return float(1 - ((truth - predicted) ** 2).sum() / total)


@dataclass(frozen=True, eq=False)
class Regimes:
    """An autoregressive HMM fitted to trajectories (see the module docstring).

    Attributes:
        states: ``[sample, step - 1]`` int64, each transition's regime (Viterbi path).
        dynamics: ``[regime, rank, rank]`` the matrices ``A_k`` of
            ``x_{t+1} = A_k x_t + b_k`` in the projection (column vectors).
        offsets: ``[regime, rank]`` the ``b_k``.
        noise: ``[regime, rank, rank]`` each regime's noise covariance ``Q_k``.
        transition: ``[regime, regime]`` ``P(z_{t+1} = j | z_t = i)`` (rows sum to 1).
        start: ``[regime]`` the first transition's regime probabilities.
        components: ``[rank, d_model]`` the PCA axes (fitted on the training texts).
        mean: ``[d_model]`` the training states' mean, removed before projecting.
        explained_variance: Fraction of the training states' variance in the projection.
        heldout: ``[sample]`` bool, the samples of the held-out texts.
        r2_heldout: One-step-ahead R2 of the regimes on the held-out texts.
        r2_single: The same R2 of one linear system fitted to the same training texts.
        log_likelihood_heldout: Held-out log-likelihood, nats per transition.
        candidates: Numbers of regimes tried (empty when ``n_regimes`` was given).
        validation_log_likelihood: Nats per transition of each candidate on the
            texts kept out of its fit (within the training texts).
        control: The same fit (same ``K`` and rank) on the control trajectories, or None.
        seed: Seed of the split, the PCA and the EM restarts.
    """

    __repr__ = compact_repr

    states: Int[Tensor, "sample transition"]
    dynamics: Float[Tensor, "regime rank rank"]
    offsets: Float[Tensor, "regime rank"]
    noise: Float[Tensor, "regime rank rank"]
    transition: Float[Tensor, "regime regime"]
    start: Float[Tensor, " regime"]
    components: Float[Tensor, "rank d_model"]
    mean: Float[Tensor, " d_model"]
    explained_variance: float
    heldout: Bool[Tensor, " sample"]
    r2_heldout: float
    r2_single: float
    log_likelihood_heldout: float
    candidates: tuple[int, ...]
    validation_log_likelihood: tuple[float, ...]
    control: Regimes | None
    seed: int

    @property
    def n_regimes(self) -> int:
        """Number of regimes ``K``."""
        return int(self.transition.shape[0])

    @property
    def rank(self) -> int:
        """Dimension of the projection."""
        return int(self.components.shape[0])

    def project(self, trajectories: Any) -> Float[Tensor, "sample step rank"]:
        """``trajectories`` (a cache or ``[sample, step, d_model]``) in the fitted projection."""
        resid, _ = as_trajectories(trajectories, "trajectories")
        return (resid - self.mean.double()) @ self.components.double().T

    def to_frame(self) -> pd.DataFrame:
        """One row per regime: ``regime``, ``occupancy`` (fraction of transitions),
        ``mean_dwell`` (mean run length, transitions), ``spectral_radius`` of ``A_k``
        and ``stay`` (``P(z_{t+1} = k | z_t = k)``)."""
        states = self.states.numpy()
        change = np.diff(states, axis=1) != 0
        runs = [np.split(row, np.flatnonzero(c) + 1) for row, c in zip(states, change)]
        lengths = [(int(run[0]), len(run)) for row in runs for run in row]
        rows = []
        for k in range(self.n_regimes):
            dwell = [n for regime, n in lengths if regime == k]
            rows.append(
                {
                    "regime": k,
                    "occupancy": float((states == k).mean()),
                    "mean_dwell": float(np.mean(dwell)) if dwell else float("nan"),
                    "spectral_radius": float(torch.linalg.eigvals(self.dynamics[k]).abs().max()),
                    "stay": float(self.transition[k, k]),
                }
            )
        return pd.DataFrame(rows)

    def to_json(self) -> dict[str, Any]:
        """The numbers a report records: K, rank, R2s, choice of K, per-regime rows, control."""
        return {
            "n_regimes": self.n_regimes,
            "rank": self.rank,
            "explained_variance": self.explained_variance,
            "r2_heldout": self.r2_heldout,
            "r2_single": self.r2_single,
            "log_likelihood_heldout": self.log_likelihood_heldout,
            "candidates": list(self.candidates),
            "validation_log_likelihood": list(self.validation_log_likelihood),
            "transition": self.transition.tolist(),
            "regimes": self.to_frame().to_dict(orient="records"),
            "n_heldout": int(self.heldout.sum()),
            "seed": self.seed,
            "control": None if self.control is None else self.control.to_json(),
        }


def token_trajectories(
    dyn: DynamicsCache, sublayer: str, n_tokens: int, skip: int = 1
) -> Float[Tensor, "text token d_model"]:
    """Every text's stream at one sublayer, token after token: ``[text, n_tokens, d_model]``.

    Args:
        dyn: A cache collected with ``positions="all"``.
        sublayer: A label of ``dyn.labels`` (e.g. ``"3_mid"``).
        n_tokens: Tokens kept per text, from position ``skip`` on; texts with fewer are
            dropped (the rest stay in text order).
        skip: Leading positions left out (default 1: BOS, whose stream is an outlier).

    Returns:
        float32 on CPU, one row per text with at least ``skip + n_tokens`` tokens.

    Raises:
        DynamicsInputError: a cache not collected with ``positions="all"``, an unknown
            sublayer, or no text long enough.
    """
    if not isinstance(dyn, DynamicsCache) or dyn.metadata.positions != "all":
        raise DynamicsInputError(f"dyn must be a DynamicsCache collected with positions='all'; got {dyn!r}")
    if sublayer not in dyn.labels:
        raise DynamicsInputError(f"sublayer must be one of {list(dyn.labels)}; got {sublayer!r}")
    n_tokens = check_int(n_tokens, "n_tokens", MIN_STEPS)
    skip = check_int(skip, "skip", 0)
    column = dyn.labels.index(sublayer)
    rows = []
    for text in torch.unique(dyn.text_index):
        keep = (dyn.text_index == text) & (dyn.position >= skip) & (dyn.position < skip + n_tokens)
        if int(keep.sum()) == n_tokens:
            rows.append(dyn.resid[keep, column][torch.argsort(dyn.position[keep])])
    if not rows:
        raise DynamicsInputError(f"n_tokens must leave at least one text of {skip + n_tokens} tokens; got {n_tokens}")
    return torch.stack(rows).float()


def _groups(trajectories: Any, n_samples: int) -> np.ndarray:
    if isinstance(trajectories, DynamicsCache):
        return trajectories.text_index.numpy()
    return np.arange(n_samples)


def _split_groups(groups: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of the samples whose group falls in a random ``fraction`` of groups."""
    unique = np.unique(groups)
    n_out = min(max(1, round(fraction * len(unique))), len(unique) - 1)
    out = rng.permutation(unique)[:n_out]
    return np.isin(groups, out)


def _steps(z: Float[np.ndarray, "sample step rank"]) -> Float[np.ndarray, "sample transition two_rank"]:
    return np.concatenate([z[:, :-1], z[:, 1:]], axis=-1)


def _fit(steps: np.ndarray, k: int, seed: int) -> AutoregressiveHMM:
    """The best of ``N_INIT`` EM runs (highest training log-likelihood)."""
    rows = einops.rearrange(steps, "n t f -> (n t) f")
    lengths = [steps.shape[1]] * steps.shape[0]
    best, best_score = None, -np.inf
    logger = logging.getLogger("hmmlearn.base")
    level = logger.level
    logger.setLevel(logging.ERROR)  # the ridge, floor and pseudocounts let EM's unpenalised likelihood dip
    try:
        for restart in range(N_INIT if k > 1 else 1):
            model = AutoregressiveHMM(k, random_state=seed + restart).fit(rows, lengths)
            score = model.score(rows, lengths)
            if score > best_score:
                best, best_score = model, score
    finally:
        logger.setLevel(level)
    return best


def _per_step(model: AutoregressiveHMM, steps: np.ndarray) -> float:
    rows = einops.rearrange(steps, "n t f -> (n t) f")
    return float(model.score(rows, [steps.shape[1]] * steps.shape[0]) / len(rows))


def _choose_k(steps: np.ndarray, groups: np.ndarray, seed: int) -> tuple[int, list[float]]:
    validation = _split_groups(groups, HELDOUT_FRACTION, np.random.default_rng(seed + 1))
    scores: list[float] = []
    for k in range(1, MAX_REGIMES + 1):
        scores.append(_per_step(_fit(steps[~validation], k, seed), steps[validation]))
    chosen = 1
    for k in range(2, MAX_REGIMES + 1):
        if scores[k - 1] > scores[chosen - 1] + MIN_GAIN_NATS:
            chosen = k
    return chosen, scores


def regimes(
    trajectories: Any,
    n_regimes: int | None = None,
    rank: int = DEFAULT_RANK,
    seed: int = 0,
    *,
    control: Any = None,
) -> Regimes:
    """Fit a switching linear dynamical system (an autoregressive HMM) to trajectories.

    Args:
        trajectories: A :class:`~tl_dynamics.DynamicsCache` (its samples over depth;
            samples of one text stay together in the split) or a ``[sample, step,
            d_model]`` tensor, one sample per text (e.g. :func:`token_trajectories`).
        n_regimes: ``K``; None chooses it among ``1..MAX_REGIMES`` by held-out likelihood.
        rank: Dimension of the PCA projection the dynamics live in.
        seed: Seed of the held-out split, the PCA and the EM restarts.
        control: Trajectories of a control (e.g. token-shuffled texts), fitted the same
            way with the same ``K``; None skips it.

    Returns:
        A :class:`Regimes` (tensors float64 on CPU).

    Raises:
        DynamicsInputError: too few texts or steps, a rank above what the training
            states span, a bad ``n_regimes`` or ``seed``.
    """
    resid, _ = as_trajectories(trajectories, "trajectories")
    n_samples, n_steps, d_model = resid.shape
    seed = check_int(seed, "seed", 0)
    if n_regimes is not None:
        n_regimes = check_int(n_regimes, "n_regimes")
    if n_steps < MIN_STEPS:
        raise DynamicsInputError(f"trajectories must have at least {MIN_STEPS} steps; got {n_steps}")
    groups = _groups(trajectories, n_samples)
    if len(np.unique(groups)) < MIN_TEXTS:
        raise DynamicsInputError(
            f"trajectories must come from at least {MIN_TEXTS} texts; got {len(np.unique(groups))}"
        )
    rng = np.random.default_rng(seed)
    heldout = _split_groups(groups, HELDOUT_FRACTION, rng)
    n_train_states = int((~heldout).sum()) * n_steps
    rank = check_int(rank, "rank", 1, min(d_model, n_train_states - 1), " (d_model and the training states)")

    flat = einops.rearrange(resid[~heldout].numpy(), "n t d -> (n t) d")
    pca = PCA(rank, random_state=seed).fit(flat)
    z = einops.rearrange(pca.transform(einops.rearrange(resid.numpy(), "n t d -> (n t) d")), "(n t) r -> n t r", n=n_samples)
    steps = _steps(z)
    train = steps[~heldout]

    candidates: tuple[int, ...] = ()
    scores: list[float] = []
    if n_regimes is None:
        n_regimes, scores = _choose_k(train, groups[~heldout], seed)
        candidates = tuple(range(1, MAX_REGIMES + 1))
    model = _fit(train, n_regimes, seed)
    single = _fit(train, 1, seed)
    truth = z[heldout][:, 1:]
    rows = einops.rearrange(steps, "n t f -> (n t) f")
    states = model.predict(rows, [steps.shape[1]] * n_samples).reshape(n_samples, -1)
    fitted_control = None
    if control is not None:
        fitted_control = regimes(control, n_regimes, rank, seed)
    return Regimes(
        states=torch.from_numpy(states).long(),
        dynamics=torch.from_numpy(einops.rearrange(model.coef_[:, :-1], "k i j -> k j i").copy()),
        offsets=torch.from_numpy(model.coef_[:, -1].copy()),
        noise=torch.from_numpy(model.covars_.copy()),
        transition=torch.from_numpy(model.transmat_.copy()),
        start=torch.from_numpy(model.startprob_.copy()),
        components=torch.from_numpy(pca.components_.copy()),
        mean=torch.from_numpy(pca.mean_.copy()),
        explained_variance=float(pca.explained_variance_ratio_.sum()),
        heldout=torch.from_numpy(heldout),
        r2_heldout=_r2(truth, forecast(model, steps[heldout])[0]),
        r2_single=_r2(truth, forecast(single, steps[heldout])[0]),
        log_likelihood_heldout=_per_step(model, steps[heldout]),
        candidates=candidates,
        validation_log_likelihood=tuple(scores),
        control=fitted_control,
        seed=seed,
    )
