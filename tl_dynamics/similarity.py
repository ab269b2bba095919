"""Dynamical similarity between models: do two residual streams follow the same dynamics?

Comparing two models' representations state by state (CKA, RSA) asks whether they
*hold* the same geometry. Dynamical Similarity Analysis (Ostrow, Eisen, Kozachkov & Fiete
2023, *Beyond geometry: comparing the temporal structure of computation in neural
circuits with dynamical similarity analysis*, NeurIPS; the authors' package
``dsa-metric``, imported as ``DSA``) asks whether they *move* the same way: it fits a
linear operator to each system's flow (a HAVOK/DMD model on delay-embedded states) and
measures how far one operator is from the other up to a change of basis,
``min_C angle(A, C B C^-1)`` over orthogonal ``C`` (the "angular" score, in radians: 0
for conjugate operators). Two models whose flows differ only in coordinates, scale or
width are at distance ~0.

Depth is time. To compare models of different depth and width,
:func:`dynamical_similarity` first resamples every trajectory to ``n_points`` equally
spaced points of *normalised* depth (linear interpolation between sublayers, first and
last sublayer kept), then reduces each model's states to its own ``n_components``
principal axes (scikit-learn PCA over all samples and points) scaled to unit total
variance, and hands ``[sample, point, component]`` arrays to ``DSA``.

Controls, so a distance can be read (:func:`random_weight_twin` and
``tld.collect(..., shuffle=True)``): each model against its own shuffled-text condition
(same weights, text without word order) and against a random-weight twin (same
architecture, HF's own initialisation). Models that share dynamics are closer to each
other than to these controls.

A distance is measured on finitely many texts, so even one condition is not at 0 from
itself on other texts. Two readings of that noise:

* a *noise floor* per condition (``n_splits > 0``): the distance between two disjoint
  halves of its texts (each half through the same pipeline: its own resampling, PCA and
  operator), the mean over ``n_splits`` seeded splits. A half holds half the texts, so the floor is an
  upper estimate of the noise in a distance between two full conditions; a distance is
  only read as a difference of dynamics where it clears both conditions' floors;
* a *bootstrap interval* of every distance (``n_resamples > 0``): texts drawn again with
  replacement within each condition, the whole matrix refitted ``n_resamples`` times; the basic interval
  ``[2 d - q_97.5, 2 d - q_2.5]`` (clipped at 0), which corrects the upward bias noise
  gives a distance where the percentile interval would repeat it.

``dsa-metric`` is an optional dependency: ``pip install "tl-dynamics[dsa]"``.

Example::

    import tl_dynamics as tld

    model = tld.models.load_model()
    texts = tld.data.python_docs()[:128]
    conditions = {
        "minilm": tld.collect(model, texts),
        "minilm shuffled": tld.collect(model, texts, shuffle=True),
        "minilm random": tld.collect(tld.random_weight_twin(model), texts),
    }
    result = tld.dynamical_similarity(conditions, n_splits=2, n_resamples=10)
    result.to_frame()                 # one row per pair: radians, interval, both floors
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
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
from tl_dynamics.cache import DynamicsCache
from tl_dynamics.embed import as_trajectories
from tl_dynamics.errors import DynamicsInputError, InputTypeError, MissingDependencyError
from tl_dynamics.hooks import TLModel, check_model

__all__ = [
    "DEFAULT_POINTS",
    "DEFAULT_COMPONENTS",
    "DEFAULT_DELAYS",
    "DEFAULT_ITERATIONS",
    "DEFAULT_LR",
    "SCORE_METHOD",
    "CONFIDENCE",
    "resample_depth",
    "DynamicalSimilarity",
    "dynamical_similarity",
    "random_weight_twin",
]

DEFAULT_POINTS = 16  # normalised-depth samples: MiniLM has 12 sublayers, SmolLM2 60
DEFAULT_COMPONENTS = 10  # principal axes per model (DSA's operators are this size)
DEFAULT_DELAYS = 1  # no delay embedding: the residual stream is the full state
# The package's own defaults for the similarity-transform optimisation (dsa-metric 2.0,
# SimilarityTransformDistConfig): 1500 Adam iterations at learning rate 5e-3.
DEFAULT_ITERATIONS = 1500
DEFAULT_LR = 5e-3
SCORE_METHOD = "angular"  # Ostrow et al. (2023) report angular distances, in radians
CONFIDENCE = 0.95  # two-sided bootstrap interval of a distance
MIN_SPLIT_TEXTS = 4  # a split-half floor needs two texts per half


def _require_dsa() -> Any:
    try:
        import DSA
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise MissingDependencyError(
            "dynamical_similarity needs the dsa-metric package (Ostrow et al. 2023): "
            'pip install "tl-dynamics[dsa]" or pip install dsa-metric'
        ) from error
    return DSA


def resample_depth(
    resid: Float[Tensor, "batch sublayer d_model"], n_points: int = DEFAULT_POINTS
) -> Float[Tensor, "batch point d_model"]:
    """Trajectories at ``n_points`` equally spaced points of normalised depth ``[0, 1]``.

    Sublayer ``s`` of ``S`` sits at depth ``s / (S - 1)``; values between sublayers are
    linearly interpolated. Returns float64 on the input's device.
    """
    n_points = check_int(n_points, "n_points", 2)
    resid = resid.to(torch.float64)
    n_sublayers = resid.shape[1]
    if n_sublayers < 2:
        raise DynamicsInputError(
            f"resid needs at least 2 sublayers to resample; got {n_sublayers}"
        )
    position = torch.linspace(0, n_sublayers - 1, n_points, dtype=torch.float64,
                              device=resid.device)
    below = position.floor().long().clamp(max=n_sublayers - 2)
    weight = (position - below)[None, :, None]
    return resid[:, below] * (1 - weight) + resid[:, below + 1] * weight


def _texts(dyn: Any) -> np.ndarray:
    """``[sample]`` text of each sample: ``dyn.text_index`` of a cache, else one per sample."""
    if isinstance(dyn, DynamicsCache):
        return dyn.text_index.cpu().numpy()
    return np.arange(len(dyn))


def _states(dyn: Any, name: str, n_points: int, n_components: int, seed: int) -> np.ndarray:
    """``[sample, point, component]`` states of one condition, unit total variance."""
    resid, _ = as_trajectories(dyn, name)
    return _project(resample_depth(resid, n_points), name, n_components, seed)


def _project(resampled: Tensor, name: str, n_components: int, seed: int) -> np.ndarray:
    """Depth-resampled trajectories ``[sample, point, d_model]`` in their own ``n_components``
    principal axes, scaled to unit total variance."""
    batch, n_points, d_model = resampled.shape
    k = check_int(n_components, "n_components", 1, min(d_model, batch * n_points),
                   f" ({name} has width {d_model} and {batch} samples x {n_points} points)")
    vectors = einops.rearrange(resampled, "b p d -> (b p) d").numpy()
    scores = PCA(n_components=k, random_state=seed).fit_transform(vectors)
    scores /= np.sqrt((scores**2).sum(axis=1).mean())
    return einops.rearrange(scores, "(b p) k -> b p k", b=batch)


@dataclass(frozen=True, eq=False)
class DynamicalSimilarity:
    """DSA distances between conditions (trajectories of models or controls).

    Attributes:
        names: The conditions, in matrix order.
        distance: ``[condition, condition]`` symmetric DSA distance (``score_method``
            "angular": radians in ``[0, pi]``; 0 on the diagonal).
        n_points: Points of normalised depth each trajectory was resampled to.
        n_components: Principal axes kept per condition (the size of DSA's operators).
        n_delays: Delay embedding of the DMD (1: none).
        score_method: DSA's score ("angular").
        iters: Optimisation steps of the similarity transform.
        seed: Seeds the PCA solver and torch's generator for DSA's optimisation.
        noise_floor: ``[condition]`` distance between disjoint halves of each condition's
            texts (mean over ``n_splits`` splits; module docstring), or ``None``.
        distance_ci: ``[condition, condition, 2]`` basic bootstrap interval of each
            distance over texts (0 on the diagonal), or ``None``.
        n_splits: Splits behind ``noise_floor`` (0: not computed).
        n_resamples: Bootstrap resamples behind ``distance_ci`` (0: not computed).
    """

    __repr__ = compact_repr

    names: tuple[str, ...]
    distance: Float[Tensor, "condition condition"]
    n_points: int
    n_components: int
    n_delays: int
    score_method: str
    iters: int
    seed: int
    noise_floor: Float[Tensor, " condition"] | None = None
    distance_ci: Float[Tensor, "condition condition 2"] | None = None
    n_splits: int = 0
    n_resamples: int = 0

    def between(self, a: str, b: str) -> float:
        """The distance between conditions ``a`` and ``b``."""
        for name in (a, b):
            if name not in self.names:
                raise KeyError(f"no condition {name!r}; the conditions are {list(self.names)}")
        return float(self.distance[self.names.index(a), self.names.index(b)])

    def to_frame(self) -> pd.DataFrame:
        """One row per unordered pair: ``a``, ``b``, ``distance``; with an interval also
        ``ci_low``, ``ci_high``; with noise floors also ``floor_a``, ``floor_b`` and
        ``above_floors`` (the distance, or with an interval its lower end, above both
        conditions' floors)."""
        rows = []
        for a, b in itertools.combinations(self.names, 2):
            i, j = self.names.index(a), self.names.index(b)
            row: dict[str, Any] = {"a": a, "b": b, "distance": self.between(a, b)}
            if self.distance_ci is not None:
                row |= dict(zip(("ci_low", "ci_high"), self.distance_ci[i, j].tolist(), strict=True))
            if self.noise_floor is not None:
                floors = float(self.noise_floor[i]), float(self.noise_floor[j])
                row |= {"floor_a": floors[0], "floor_b": floors[1],
                        "above_floors": row.get("ci_low", row["distance"]) > max(floors)}
            rows.append(row)
        return pd.DataFrame(rows)


def dynamical_similarity(
    a: Any,
    b: Any = None,
    *,
    n_points: int = DEFAULT_POINTS,
    n_components: int = DEFAULT_COMPONENTS,
    n_delays: int = DEFAULT_DELAYS,
    iters: int = DEFAULT_ITERATIONS,
    lr: float = DEFAULT_LR,
    seed: int = 0,
    n_splits: int = 0,
    n_resamples: int = 0,
) -> DynamicalSimilarity:
    """DSA distance between two conditions, or between every pair of several.

    Args:
        a: A :class:`~tl_dynamics.DynamicsCache` or ``[sample, sublayer, d_model]``
            tensor, or a mapping ``{name: cache or tensor}`` of several conditions (then
            leave ``b`` out).
        b: The second condition when ``a`` is one.
        n_points: Points of normalised depth per trajectory (see :func:`resample_depth`).
        n_components: Principal axes kept per condition.
        n_delays: Delays of DSA's Hankel embedding.
        iters, lr: DSA's similarity-transform optimisation (the package's defaults).
        seed: Seeds the PCA solver, DSA's optimisation, the splits and the resamples.
        n_splits: Split halves per condition for its noise floor (module docstring); 0:
            none. Each costs one fit per condition.
        n_resamples: Bootstrap resamples of the matrix for its intervals; 0: none. Each
            costs one more fit of every pair: ~10 give a usable interval, not a precise one.

    Returns:
        A :class:`DynamicalSimilarity`; conditions are named ``"a"``, ``"b"`` for a pair.

    Raises:
        ImportError: dsa-metric is not installed.
        TypeError, ValueError: bad conditions or options.
    """
    if isinstance(a, Mapping):
        if b is not None:
            raise InputTypeError(
                "pass either a mapping of conditions as a, or two conditions a and b"
            )
        conditions = dict(a)
    else:
        if b is None:
            raise InputTypeError("b is missing: pass two conditions, or a mapping of them as a")
        conditions = {"a": a, "b": b}
    if len(conditions) < 2:
        raise DynamicsInputError(
            f"need at least 2 conditions to compare; got {len(conditions)}"
        )
    n_delays = check_int(n_delays, "n_delays", 1)
    iters = check_int(iters, "iters", 1)
    seed = check_int(seed, "seed", 0)
    n_splits = check_int(n_splits, "n_splits", 0)
    n_resamples = check_int(n_resamples, "n_resamples", 0)
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise DynamicsInputError(f"lr must be a positive number; got {lr!r}")
    names = [f"condition {name!r}" for name in conditions]
    resampled = [
        resample_depth(as_trajectories(dyn, name)[0], n_points)
        for name, dyn in zip(names, conditions.values(), strict=True)
    ]
    states = [_project(r, name, n_components, seed) for r, name in zip(resampled, names, strict=True)]
    texts = [_texts(dyn) for dyn in conditions.values()]
    fewest = min(len(np.unique(t)) for t in texts)
    if n_splits and fewest < MIN_SPLIT_TEXTS:
        raise DynamicsInputError(
            f"every condition must have at least {MIN_SPLIT_TEXTS} texts for a split-half "
            f"noise floor; got {fewest}"
        )
    dsa = _require_dsa()

    def fit(x: list[np.ndarray]) -> Tensor:
        """The symmetric distance matrix of the states ``x``."""
        rank = min(s.shape[2] for s in x) * n_delays
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            score = dsa.DSA(x, n_delays=n_delays, rank=rank, score_method=SCORE_METHOD,
                            iters=iters, lr=lr).fit_score()
        return _symmetric(torch.as_tensor(np.asarray(score, dtype=np.float64)))

    distance = fit(states)
    floor = ci = None
    rng = np.random.default_rng([seed, 3])
    if n_splits:

        def split_distance(r: Tensor, t: np.ndarray, name: str) -> float:
            halves = [_project(r[half], name, n_components, seed) for half in _halves(t, rng)]
            return float(fit(halves)[0, 1])

        floor = torch.tensor([
            np.mean([split_distance(r, t, name) for _ in range(n_splits)])
            for r, t, name in zip(resampled, texts, names, strict=True)
        ], dtype=torch.float64)
    if n_resamples:
        replicates = torch.stack([
            fit([
                _project(r[_bootstrap_rows(t, rng)], name, n_components, seed)
                for r, t, name in zip(resampled, texts, names, strict=True)
            ])
            for _ in range(n_resamples)
        ])
        ci = _basic_interval(distance, replicates)
    return DynamicalSimilarity(
        names=tuple(str(name) for name in conditions),
        distance=distance,
        n_points=n_points,
        n_components=min(s.shape[2] for s in states),
        n_delays=n_delays,
        score_method=SCORE_METHOD,
        iters=iters,
        seed=seed,
        noise_floor=floor,
        distance_ci=ci,
        n_splits=n_splits,
        n_resamples=n_resamples,
    )


def _symmetric(distance: Tensor) -> Tensor:
    """DSA's matrix made symmetric (it fills both triangles from one fit each), 0 diagonal."""
    distance = (distance + distance.T) / 2
    return distance.fill_diagonal_(0.0)


def _halves(texts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sample masks of two disjoint, seeded halves of the texts (a text's samples together)."""
    unique = rng.permutation(np.unique(texts))
    first = np.isin(texts, unique[: len(unique) // 2])
    return first, ~first


def _bootstrap_rows(texts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sample indices of one bootstrap resample: texts drawn with replacement, each drawn
    text bringing all its samples."""
    unique = np.unique(texts)
    drawn = rng.choice(unique, size=len(unique), replace=True)
    by_text = {text: np.flatnonzero(texts == text) for text in unique}
    return np.concatenate([by_text[text] for text in drawn])


def _basic_interval(point: Tensor, replicates: Tensor) -> Tensor:
    """``[..., 2]`` basic bootstrap interval ``[2 d - q_hi, 2 d - q_lo]``, clipped at 0."""
    tail = (1 - CONFIDENCE) / 2
    quantiles = torch.quantile(replicates, torch.tensor([1 - tail, tail], dtype=replicates.dtype), dim=0)
    return (2 * point - quantiles).clamp(min=0.0).movedim(0, -1)


def check_twin_model(model: TLModel) -> None:
    """Raise ``InputTypeError`` unless :func:`random_weight_twin` can copy ``model``."""
    check_model(model)
    hf_model = getattr(model, "original_model", None)
    if hf_model is None or not hasattr(hf_model, "_init_weights"):
        raise InputTypeError(
            f"model must be a TransformerBridge over a Hugging Face model (original_model "
            f"with _init_weights); got {type(model).__name__}"
        )


def random_weight_twin(model: TLModel, seed: int = 0) -> TLModel:
    """A copy of ``model`` with the same architecture and freshly initialised weights.

    Deep-copies the TransformerLens model and re-runs the Hugging Face model's own
    ``_init_weights`` on every module (the initialisation the architecture trains from),
    under ``torch.manual_seed(seed)``; ``model`` is untouched. The twin is the control
    for "dynamics of a trained model" against "dynamics of the architecture".
    """
    check_twin_model(model)
    seed = check_int(seed, "seed", 0)
    twin = copy.deepcopy(model)
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        twin.original_model.apply(twin.original_model._init_weights)
    return twin.eval()
