"""Low-dimensional views of residual-stream trajectories: PCA and a compressing autoencoder.

A trajectory lives in ``d_model`` dimensions (4096 for Llama 3.1 8B), too many to look
at. Fernando & Guitchounts (2025, sections 2.7-2.8) squeeze it into two dimensions in
two ways, and both treat *every* residual-stream vector, of every sample at every
sublayer, as one data point:

* **PCA** (:func:`pca_trajectories`, Fig 4A-C). scikit-learn's ``PCA`` is fitted on all
  ``samples x sublayers`` vectors at once, so one set of axes serves the whole depth and
  a trajectory becomes a path through PC space. How much of the variance the first ``k``
  components hold (cumulative explained variance), and how well ``k`` components
  reconstruct each sublayer on its own, say how many dimensions the stream really uses
  at each depth; the paper finds early layers spread their variance over more
  dimensions than late ones.
* **A compressing autoencoder** (:class:`CompressingAutoencoder`, Fig 3): a non-linear
  encoder narrows ``d_model`` geometrically down to a 2-D bottleneck and a mirrored
  decoder widens it back, trained to reproduce its input (mean squared error). The 2-D
  codes of a trajectory give its path in a learned plane; the distance between the codes
  of successive sublayers is its speed there; and the explained variance of the
  reconstruction, on samples held out of training, says how much of each sublayer a
  2-D description keeps.

Explained variance per sublayer is the same number for both (:func:`explained_variance`):
``1 - sum ||x - x_hat||^2 / sum ||x - m||^2`` over the samples of sublayer ``s``. The paper
does not say which mean ``m`` it takes, and the choice matters, so both are reported:

* ``m`` = the sublayer's own mean (``around="sublayer"``, the default): how much of the
  sample-to-sample variation *at that depth* is kept. A method gets no credit for
  knowing the depth; 1 is perfect, 0 is no better than that mean, and it can be negative.
* ``m`` = the mean of all vectors (``around="pooled"``, the baseline PCA itself uses):
  the offsets between sublayers count as explained too, so the numbers are higher.

The two can disagree widely: two principal components can keep most of each sublayer's
variance around the pooled mean yet less than nothing (a negative number) around the
sublayers' own means, when a 2-D view mostly tells depths apart rather than samples.
A 2-D autoencoder can do better on both; the report shows both numbers for each.

Example::

    import tl_dynamics as tld
    from tl_dynamics.embed import CompressingAutoencoder, pca_trajectories

    model = tld.models.load_model()                        # SmolLM2-135M, offline
    dyn = tld.collect(model, tld.data.python_docs()[:128])
    pca = pca_trajectories(dyn, n_components=100)
    pca.trajectories.shape                                 # (128, 60, 100)
    pca.cumulative_variance[:3], pca.variance_per_sublayer
    cae = CompressingAutoencoder(random_state=0).fit(dyn)
    cae.held_out_.mean_trajectory.shape                    # (60, 2): Fig 3B
    cae.held_out_.explained_variance                       # Fig 3D, per sublayer
    codes = CompressingAutoencoder(epochs=5).fit_transform(dyn)  # (128, 60, 2)
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass
from typing import Any, Union

import einops
import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted
from sklearn.decomposition import PCA
from torch import Tensor, nn
from tqdm.auto import tqdm

from tl_dynamics._checks import check_int
from tl_dynamics._repr import compact_repr
from tl_dynamics.cache import DynamicsCache
from tl_dynamics.errors import DynamicsInputError, InputTypeError

__all__ = [
    "DEFAULT_PCA_COMPONENTS",
    "CAE_LAYERS",
    "CAE_BOTTLENECK",
    "CAE_LEARNING_RATE",
    "CAE_BATCH_SIZE",
    "CAE_VAL_FRACTION",
    "CAE_EPOCHS",
    "CAE_MIN_WIDTH",
    "EXPLAINED_VARIANCE_BASELINES",
    "as_trajectories",
    "explained_variance",
    "PCATrajectories",
    "pca_trajectories",
    "AutoencoderTrajectories",
    "TrainingHistory",
    "CompressingAutoencoder",
]

DEFAULT_PCA_COMPONENTS = 100  # the paper reconstructs each sublayer from 100 PCs (Fig 4C)

CAE_LAYERS = 10  # encoder and decoder layers each, as in the paper (section 2.7)
CAE_BOTTLENECK = 2  # the paper's 2-D bottleneck (Fig 3B)
CAE_LEARNING_RATE = 1e-3  # Adam learning rate of the paper (section 2.7)
CAE_BATCH_SIZE = 64  # vectors per training batch in the paper (section 2.7)
CAE_VAL_FRACTION = 0.15  # the paper trains on 85k batches and tests on 15k (section 2.7)
CAE_EPOCHS = 10
"""Passes over the training vectors. The learning rate decays from ``lr`` to 0 over them
(cosine, Loshchilov & Hutter 2017): on SmolLM2 (12,288 training vectors, seeds 0 and 1)
10 decayed epochs reach held-out losses 0.143 and 0.171 (pooled explained variance 0.85
and 0.83), where 20 epochs at the constant rate reached 0.152 and 0.171 (0.84, 0.82)."""
CAE_MAX_GRAD_NORM = 1.0
"""Gradients are clipped to this global norm before each Adam step (Pascanu et al. 2013).
Without it, one large step of the 20-layer network could collapse it to the mean (held-out
loss ~1) from one run to the next on SmolLM2, depending only on the thread count."""
CAE_MIN_WIDTH = 8
"""Narrowest hidden layer. LayerNorm takes two degrees of freedom (mean, scale) from a
layer, so the paper's progression down to 6 -> 4 -> 2 units can collapse to predicting
the mean (a held-out loss near 1 on standardised inputs), where a floor of 8 units
trains. ``min_width=1`` restores the paper's exact widths."""

EXPLAINED_VARIANCE_BASELINES = ("sublayer", "pooled")
"""Means that :func:`explained_variance` can measure variance around (see module doc)."""

_TRAJECTORY_SHAPE = "[batch, sublayer, d_model]"


def as_trajectories(data: Any, name: str = "dyn") -> tuple[Tensor, tuple[str, ...]]:
    """Trajectories and sublayer labels of a ``DynamicsCache`` or a tensor.

    Args:
        data: A :class:`~tl_dynamics.DynamicsCache`, a ``[batch, sublayer, d_model]``
            tensor, or a ``[n, d_model]`` tensor of loose vectors (one sublayer).
        name: Argument name used in error messages.

    Returns:
        ``(resid, labels)``: ``[batch, sublayer, d_model]`` float64 on CPU, and the
        cache's labels (sublayer indices ``"0", "1", ...`` for a bare tensor).

    Raises:
        TypeError: neither a cache nor a floating tensor.
        ValueError: wrong number of dims, an empty axis or non-finite values.
    """
    resid = data.resid if isinstance(data, DynamicsCache) else data
    if not isinstance(resid, Tensor) or not resid.is_floating_point():
        got = f"a {resid.dtype} tensor" if isinstance(resid, Tensor) else type(resid).__name__
        raise InputTypeError(
            f"{name} must be a DynamicsCache or a floating tensor {_TRAJECTORY_SHAPE} or "
            f"[n, d_model]; got {got}"
        )
    if resid.ndim not in (2, 3) or 0 in resid.shape:
        raise DynamicsInputError(
            f"{name} must have shape {_TRAJECTORY_SHAPE} or [n, d_model] with no empty axis; "
            f"got shape {tuple(resid.shape)}"
        )
    if not bool(torch.isfinite(resid).all()):
        raise DynamicsInputError(f"{name} holds non-finite values (inf or nan)")
    if resid.ndim == 2:
        resid = einops.rearrange(resid, "n d_model -> n 1 d_model")
    if isinstance(data, DynamicsCache):
        labels = data.labels
    else:
        labels = tuple(str(s) for s in range(resid.shape[1]))
    return resid.detach().to("cpu", torch.float64), tuple(labels)


def explained_variance(
    data: Float[Tensor, "batch sublayer d_model"],
    reconstruction: Float[Tensor, "batch sublayer d_model"],
    around: str = "sublayer",
) -> Float[Tensor, " sublayer"]:
    """Fraction of each sublayer's variance that a reconstruction keeps.

    ``1 - sum_b ||x_bs - xhat_bs||^2 / sum_b ||x_bs - m_s||^2`` for every sublayer ``s``,
    where ``m_s`` is the sublayer's own mean over samples (``around="sublayer"``) or the
    mean of all ``batch * sublayer`` vectors (``around="pooled"``).

    Returns:
        ``[sublayer]`` float64 on CPU, unitless, at most 1 (negative when the
        reconstruction is worse than the mean); ``nan`` where a sublayer has no spread
        (e.g. a single sample around its own mean).
    """
    if around not in EXPLAINED_VARIANCE_BASELINES:
        raise DynamicsInputError(
            f"around must be one of {EXPLAINED_VARIANCE_BASELINES}; got {around!r}"
        )
    data, reconstruction = data.double().cpu(), reconstruction.double().cpu()
    if data.shape != reconstruction.shape:
        raise DynamicsInputError(
            f"reconstruction must have the shape of data {tuple(data.shape)}; "
            f"got {tuple(reconstruction.shape)}"
        )
    mean = data.mean(0) if around == "sublayer" else data.mean((0, 1))
    error = einops.reduce((data - reconstruction) ** 2, "b s d -> s", "sum")
    spread = einops.reduce((data - mean) ** 2, "b s d -> s", "sum")
    return torch.where(spread > 0, 1 - error / spread, torch.nan)


Trajectories = Union[DynamicsCache, Float[Tensor, "... d_in"], Float[np.ndarray, "... d_in"]]
"""What the compressing autoencoder fits and transforms: a cache, or ``[n, d_in]`` /
``[n, sublayer, d_in]`` vectors as a tensor or a numpy array."""


def _as_tensor(data: Any) -> Any:
    """A numpy array as a tensor (sharing its memory when it is writable, else a copy);
    anything else as it is."""
    if not isinstance(data, np.ndarray):
        return data
    return torch.from_numpy(data) if data.flags.writeable else torch.tensor(data)


def _check_width(tensor: Any, width: int, name: str, axis_name: str) -> Tensor:
    if not isinstance(tensor, Tensor):
        raise InputTypeError(
            f"{name} must be a torch.Tensor [..., {axis_name}]; got {type(tensor).__name__}"
        )
    if tensor.ndim == 0 or tensor.shape[-1] != width:
        raise DynamicsInputError(
            f"{name} must have a last axis of {width} ({axis_name}); got shape "
            f"{tuple(tensor.shape)}"
        )
    return tensor.detach().to("cpu", torch.float64)


# --------------------------------------------------------------------------- PCA


@dataclass(frozen=True)
class PCATrajectories:
    """Trajectories in the principal components of all residual-stream vectors (Fig 4A-C).

    Attributes:
        pca: The fitted ``sklearn.decomposition.PCA`` (``components_ [k, d_model]``,
            ``mean_ [d_model]``, ``explained_variance_ratio_ [k]``).
        trajectories: ``[batch, sublayer, k]`` float32 coordinates of every sample's
            trajectory on the first ``k`` principal components, in residual-stream units.
        mean_trajectory: ``[sublayer, k]`` float32 mean of ``trajectories`` over samples.
        cumulative_variance: ``[k]`` float64 fraction (0-1) of the variance of all
            vectors held by the first ``1, 2, ..., k`` components (Fig 4B).
        variance_per_sublayer: ``[sublayer]`` float64 explained variance (at most 1) of
            each sublayer reconstructed from all ``k`` components, around the sublayer's
            own mean (Fig 4C; see :func:`explained_variance`).
        variance_per_sublayer_pooled: The same around the mean of all vectors.
        labels: Sublayer labels, e.g. ``("0_pre", "0_mid", ...)``.
    """

    __repr__ = compact_repr

    pca: PCA
    trajectories: Float[Tensor, "batch sublayer component"]
    mean_trajectory: Float[Tensor, "sublayer component"]
    cumulative_variance: Float[Tensor, " component"]
    variance_per_sublayer: Float[Tensor, " sublayer"]
    variance_per_sublayer_pooled: Float[Tensor, " sublayer"]
    labels: tuple[str, ...]

    @property
    def n_components(self) -> int:
        """Number of components kept, ``k``."""
        return int(self.pca.n_components_)

    @property
    def d_model(self) -> int:
        """Width of the residual stream the PCA was fitted on."""
        return int(self.pca.n_features_in_)

    def project(self, vectors: Float[Tensor, "... d_model"]) -> Float[Tensor, "... component"]:
        """Coordinates ``(x - mu) V^T`` of residual-stream vectors on all ``k`` components.

        Returns:
            ``[..., k]`` float32 on CPU, in residual-stream units.
        """
        vectors = _check_width(vectors, self.d_model, "vectors", "d_model")
        components = torch.from_numpy(self.pca.components_).double()
        centred = vectors - torch.from_numpy(self.pca.mean_).double()
        return einops.einsum(centred, components, "... d, k d -> ... k").float()

    def inverse(self, points: Float[Tensor, "... j"]) -> Float[Tensor, "... d_model"]:
        """Residual-stream vectors ``x = z V[:j]^T + mu`` of points on the first ``j <= k`` PCs.

        The paper maps its teleport grid from the PC1-PC2 plane back this way (``j = 2``);
        the missing components are set to zero, i.e. to the mean.

        Returns:
            ``[..., d_model]`` float32 on CPU, in residual-stream units.
        """
        if not isinstance(points, Tensor) or points.ndim == 0:
            raise InputTypeError(
                f"points must be a torch.Tensor [..., j]; got {type(points).__name__}"
            )
        j = points.shape[-1]
        if not 1 <= j <= self.n_components:
            raise DynamicsInputError(
                f"points must have between 1 and {self.n_components} coordinates on its last "
                f"axis (the fitted components); got shape {tuple(points.shape)}"
            )
        points = points.detach().to("cpu", torch.float64)
        components = torch.from_numpy(self.pca.components_[:j]).double()
        mean = torch.from_numpy(self.pca.mean_).double()
        return (einops.einsum(points, components, "... j, j d -> ... d") + mean).float()

    def to_frame(self, n_components: int = 2) -> pd.DataFrame:
        """Tidy table of the trajectories: one row per (sample, sublayer).

        Columns ``sample``, ``sublayer`` (index), ``label``, ``depth`` (0 at the first
        sublayer, 1 at the last) and ``pc1 ... pc{n_components}``.
        """
        n_components = min(check_int(n_components, "n_components", 1), self.n_components)
        batch, sublayers, _ = self.trajectories.shape
        coordinates = einops.rearrange(self.trajectories[..., :n_components], "b s k -> (b s) k")
        frame = pd.DataFrame(
            {
                "sample": np.repeat(np.arange(batch), sublayers),
                "sublayer": np.tile(np.arange(sublayers), batch),
                "label": np.tile(np.array(self.labels, dtype=object), batch),
                "depth": np.tile(np.linspace(0, 1, sublayers), batch),
            }
        )
        for c in range(n_components):
            frame[f"pc{c + 1}"] = coordinates[:, c].double().numpy()
        return frame


def pca_trajectories(
    dyn: DynamicsCache | Float[Tensor, "batch sublayer d_model"],
    n_components: int = DEFAULT_PCA_COMPONENTS,
    seed: int = 0,
) -> PCATrajectories:
    """Fit a PCA on every residual-stream vector of every sample and sublayer (Fig 4A-C).

    The ``batch * sublayer`` vectors are stacked into one ``[batch * sublayer, d_model]``
    matrix (float64) and given to ``sklearn.decomposition.PCA(svd_solver="auto")``, whose
    policy picks the randomized solver (seeded by ``seed``) when the data are large
    (more than 500 x 500 and ``k`` under 80% of the smaller side) and an exact solver
    otherwise.

    Args:
        dyn: A :class:`~tl_dynamics.DynamicsCache` or a ``[batch, sublayer, d_model]``
            tensor.
        n_components: Components to keep. Clipped to ``min(batch * sublayer, d_model)``,
            the most a PCA of that matrix has; the kept number is
            :attr:`PCATrajectories.n_components`.
        seed: Seed of the randomized solver.

    Returns:
        A :class:`PCATrajectories`.

    Raises:
        TypeError, ValueError: bad ``dyn``; ``n_components`` not a positive int; fewer
            than two vectors.
    """
    resid, labels = as_trajectories(dyn)
    n_components = check_int(n_components, "n_components", 1)
    seed = check_int(seed, "seed", 0)
    batch, sublayers, d_model = resid.shape
    if batch * sublayers < 2:
        raise DynamicsInputError(
            f"dyn must hold at least two vectors for a PCA; got shape {tuple(resid.shape)}"
        )
    k = min(n_components, batch * sublayers, d_model)
    if k < n_components:
        warnings.warn(
            f"n_components={n_components} exceeds what {batch * sublayers} vectors of width "
            f"{d_model} support; fitting {k} components",
            stacklevel=2,
        )
    vectors = einops.rearrange(resid, "b s d -> (b s) d").numpy()
    pca = PCA(n_components=k, svd_solver="auto", random_state=seed).fit(vectors)
    coordinates = torch.from_numpy(pca.transform(vectors))
    reconstruction = torch.from_numpy(pca.inverse_transform(coordinates.numpy()))
    reconstruction = einops.rearrange(reconstruction, "(b s) d -> b s d", b=batch)
    trajectories = einops.rearrange(coordinates, "(b s) k -> b s k", b=batch)
    return PCATrajectories(
        pca=pca,
        trajectories=trajectories.float(),
        mean_trajectory=trajectories.mean(0).float(),
        cumulative_variance=torch.from_numpy(np.cumsum(pca.explained_variance_ratio_)),
        variance_per_sublayer=explained_variance(resid, reconstruction),
        variance_per_sublayer_pooled=explained_variance(resid, reconstruction, "pooled"),
        labels=labels,
    )


# ------------------------------------------------------------ compressing autoencoder


@dataclass(frozen=True)
class AutoencoderTrajectories:
    """Trajectories through the bottleneck of a :class:`CompressingAutoencoder` (Fig 3).

    Attributes:
        codes: ``[batch, sublayer, d_bottleneck]`` float32 bottleneck coordinates of
            every sample's trajectory (unitless: the encoder's own axes).
        mean_trajectory: ``[sublayer, d_bottleneck]`` mean of ``codes`` over samples
            (Fig 3B).
        step_distance: ``[batch, sublayer - 1]`` Euclidean distance in the bottleneck
            between the codes of sublayers ``t`` and ``t + 1`` of each sample (Fig 3C).
        explained_variance: ``[sublayer]`` float64 explained variance of the
            reconstruction of each sublayer, around the sublayer's own mean (Fig 3D; see
            :func:`explained_variance`).
        explained_variance_pooled: The same around the mean of all the vectors given.
        labels: Sublayer labels.
    """

    __repr__ = compact_repr

    codes: Float[Tensor, "batch sublayer bottleneck"]
    mean_trajectory: Float[Tensor, "sublayer bottleneck"]
    step_distance: Float[Tensor, "batch transition"]
    explained_variance: Float[Tensor, " sublayer"]
    explained_variance_pooled: Float[Tensor, " sublayer"]
    labels: tuple[str, ...]

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per (sample, sublayer) with ``z1 ... z{d_bottleneck}``.

        Columns ``sample``, ``sublayer``, ``label``, ``z1, z2, ...`` and ``step_distance``
        (distance to the next sublayer; ``nan`` at the last).
        """
        batch, sublayers, width = self.codes.shape
        codes = einops.rearrange(self.codes, "b s z -> (b s) z").double().numpy()
        step = torch.cat([self.step_distance, torch.full((batch, 1), torch.nan)], dim=1)
        frame = pd.DataFrame(
            {
                "sample": np.repeat(np.arange(batch), sublayers),
                "sublayer": np.tile(np.arange(sublayers), batch),
                "label": np.tile(np.array(self.labels, dtype=object), batch),
            }
        )
        for z in range(width):
            frame[f"z{z + 1}"] = codes[:, z]
        frame["step_distance"] = step.reshape(-1).double().numpy()
        return frame


@dataclass(frozen=True)
class TrainingHistory:
    """Mean squared error per epoch, on standardised inputs (unit overall variance).

    Attributes:
        train_loss: ``[epoch]`` mean training loss over the epoch's batches.
        val_loss: ``[epoch]`` loss on the held-out vectors after the epoch (``nan``
            without a held-out set).
    """

    __repr__ = compact_repr

    train_loss: Float[Tensor, " epoch"]
    val_loss: Float[Tensor, " epoch"]

    def to_frame(self) -> pd.DataFrame:
        """Columns ``epoch`` (1-based), ``train_loss``, ``val_loss``."""
        return pd.DataFrame(
            {
                "epoch": np.arange(1, len(self.train_loss) + 1),
                "train_loss": self.train_loss.double().numpy(),
                "val_loss": self.val_loss.double().numpy(),
            }
        )


def _stack(widths: list[int]) -> nn.Sequential:
    """Linear -> LayerNorm -> ReLU between successive widths, a plain Linear at the end."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(widths) - 2:
            layers += [nn.LayerNorm(d_out), nn.ReLU()]
    return nn.Sequential(*layers)


class CompressingAutoencoder(TransformerMixin, BaseEstimator):
    """The paper's compressing autoencoder (CAE, section 2.7), a scikit-learn estimator.

    The encoder has ``n_layers`` linear layers whose output widths follow the geometric
    progression ``d_i = d_in * r**i`` (``d_in``: the data's width, learned in
    :meth:`fit`), ``i = 0 .. n_layers - 1``, with
    ``r = (d_bottleneck / d_in) ** (1 / (n_layers - 1))``: the first layer keeps the
    width ``d_in`` and the last outputs the ``d_bottleneck``-wide code. Hidden widths
    are rounded and floored at ``min(min_width, d_in)`` (see :data:`CAE_MIN_WIDTH`; the
    paper has no floor). The decoder mirrors the encoder back to ``d_in``. Every layer is
    Linear -> LayerNorm -> ReLU except the last of the encoder and of the decoder, which
    are plain Linear.

    Inputs are standardised inside the model: the per-unit mean and one overall scale
    (the root mean square of the centred training vectors) are learned in ``fit``. A
    single scale keeps the units' relative weights, so the training loss is the squared
    error in the model's own units up to a constant, and the residual stream's size
    (tens to thousands) does not upset Adam.

    It follows scikit-learn's estimator contract: every setting is an ``__init__``
    argument stored as given and validated by :meth:`fit` (so ``get_params``,
    ``set_params`` and ``sklearn.base.clone`` work), the data's width is learned by
    :meth:`fit` (``n_features_in_``), :meth:`fit` takes ``(X, y=None)`` and returns
    ``self``, :meth:`transform` takes what :meth:`fit` takes (a cache, ``[n, d_in]`` or
    ``[n, sublayer, d_in]``, as a tensor or a numpy array, answered in kind), and an
    unfitted estimator raises ``sklearn.exceptions.NotFittedError``.

    Args:
        d_bottleneck: Width of the code, 2 in the paper.
        n_layers: Layers of the encoder and of the decoder, each (``k``; 10 in the
            paper), at least 2.
        min_width: Narrowest hidden layer; 1 gives the paper's exact progression.
        epochs: Passes over the training vectors.
        batch_size: Vectors per Adam step (64 in the paper).
        lr: Adam's initial learning rate (1e-3 in the paper), decayed to 0 over the
            training steps by a cosine schedule (see :data:`CAE_EPOCHS`).
        val_fraction: Fraction of samples held out, in ``[0, 1)``; at least one sample
            is held out when it is positive.
        max_vectors: Train on a seeded random subset of at most this many training
            vectors (``None``: all of them). Bounds the cost of one epoch when there are
            many samples and sublayers; the standardisation still uses every training
            vector, and the held-out samples are unaffected.
        random_state: Seeds the split, the initial weights and the batch order: the same
            seed gives the same model on CPU.
        progress: Show a tqdm bar over epochs with the current losses.

    Attributes (after :meth:`fit`):
        n_features_in_: ``d_in``, the width of the vectors fitted on (``d_model``).
        encoder_, decoder_: The trained ``torch.nn.Sequential`` networks (float32, CPU).
        mean_: ``[d_in]`` float32 per-unit training mean.
        scale_: Overall training scale, in the input's units.
        history_: :class:`TrainingHistory` of the losses.
        validation_index_: ``[n_val]`` indices of the samples held out of training.
        held_out_: :class:`AutoencoderTrajectories` of the held-out samples (``None``
            when ``val_fraction`` is 0).
    """

    def __init__(
        self,
        d_bottleneck: int = CAE_BOTTLENECK,
        n_layers: int = CAE_LAYERS,
        min_width: int = CAE_MIN_WIDTH,
        *,
        epochs: int = CAE_EPOCHS,
        batch_size: int = CAE_BATCH_SIZE,
        lr: float = CAE_LEARNING_RATE,
        val_fraction: float = CAE_VAL_FRACTION,
        max_vectors: int | None = None,
        random_state: int = 0,
        progress: bool = True,
    ):
        self.d_bottleneck = d_bottleneck
        self.n_layers = n_layers
        self.min_width = min_width
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.val_fraction = val_fraction
        self.max_vectors = max_vectors
        self.random_state = random_state
        self.progress = progress

    def widths(self, d_in: int) -> list[int]:
        """Widths from the input to the code for vectors of width ``d_in``:
        ``[d_in, d_0, d_1, ..., d_{k-1}]``."""
        self._check_architecture(d_in)
        ratio = (self.d_bottleneck / d_in) ** (1 / (self.n_layers - 1))
        floor = max(self.d_bottleneck, min(self.min_width, d_in))
        hidden = [max(floor, round(d_in * ratio**i)) for i in range(self.n_layers - 1)]
        return [d_in, *hidden, self.d_bottleneck]

    def _check_architecture(self, d_in: int) -> None:
        check_int(d_in, "d_in", 1)
        check_int(self.d_bottleneck, "d_bottleneck", 1)
        check_int(self.n_layers, "n_layers", 2)
        check_int(self.min_width, "min_width", 1)
        if self.d_bottleneck > d_in:
            raise DynamicsInputError(
                f"d_bottleneck must not exceed d_in={d_in} (the data's width) for a "
                f"compressing autoencoder; got {self.d_bottleneck}"
            )

    def _check_training(self) -> None:
        check_int(self.epochs, "epochs", 1)
        check_int(self.batch_size, "batch_size", 1)
        if self.max_vectors is not None:
            check_int(self.max_vectors, "max_vectors", 1)
        check_int(self.random_state, "random_state", 0)
        lr, val_fraction = self.lr, self.val_fraction
        if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and lr > 0):
            raise DynamicsInputError(f"lr must be a positive number; got {lr!r}")
        if not (isinstance(val_fraction, (int, float)) and 0 <= val_fraction < 1):
            raise DynamicsInputError(f"val_fraction must be a number in [0, 1); got {val_fraction!r}")

    def fit(self, X: Trajectories, y: None = None) -> CompressingAutoencoder:
        """Train with Adam on the mean squared reconstruction error of single vectors.

        Every residual-stream vector (any sample, any sublayer) is one training example.
        The held-out set is a random ``val_fraction`` of the *samples*, whole
        trajectories, because successive sublayers of one sample are so alike that
        holding out single vectors would leak them into training. Every setting is
        checked before training starts.

        Args:
            X: A :class:`~tl_dynamics.DynamicsCache`, a ``[batch, sublayer, d_in]``
                tensor or array, or ``[n, d_in]`` loose vectors (each its own sample).
            y: Ignored (scikit-learn's signature for unsupervised estimators).

        Returns:
            ``self``, fitted.
        """
        resid, labels = as_trajectories(_as_tensor(X), "X")
        widths = self.widths(resid.shape[-1])  # checks the architecture
        self._check_training()
        n_samples = resid.shape[0]
        val_fraction = self.val_fraction
        n_val = max(1, round(val_fraction * n_samples)) if val_fraction > 0 else 0
        if n_samples - n_val < 1:
            raise DynamicsInputError(
                f"val_fraction={val_fraction} holds out all {n_samples} samples of X; "
                "pass more samples or a smaller val_fraction"
            )
        generator = torch.Generator().manual_seed(int(self.random_state))
        order = torch.randperm(n_samples, generator=generator)
        self.n_features_in_ = resid.shape[-1]
        self.validation_index_: Int[Tensor, " n_val"] = order[:n_val].sort().values
        train = einops.rearrange(resid[order[n_val:]], "b s d -> (b s) d")
        self.mean_ = train.mean(0).float()
        self.scale_ = float((train - train.mean(0)).pow(2).mean().sqrt()) or 1.0
        if self.max_vectors is not None and len(train) > self.max_vectors:
            train = train[torch.randperm(len(train), generator=generator)[: self.max_vectors]]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.random_state))
            self.encoder_ = _stack(widths)
            self.decoder_ = _stack(widths[::-1])
        val = einops.rearrange(resid[self.validation_index_], "b s d -> (b s) d")
        self.history_ = self._train(self._standardise(train), self._standardise(val), generator)
        self.held_out_ = self._report(resid[self.validation_index_], labels) if n_val else None
        return self

    def fit_transform(self, X: Trajectories, y: None = None) -> Tensor | np.ndarray:
        """:meth:`fit` on ``X``, then the bottleneck codes of all of it (:meth:`transform`).

        Returns:
            ``[batch, sublayer, d_bottleneck]`` (or ``[n, d_bottleneck]`` for loose
            vectors) float32 on CPU; a numpy array when ``X`` is one.
        """
        return self.fit(X).transform(X)

    def _train(self, train: Tensor, val: Tensor, generator: torch.Generator) -> TrainingHistory:
        network = nn.Sequential(self.encoder_, self.decoder_).train()
        # The fused kernel is the same Adam update, a third cheaper per step on CPU than
        # the default loop over parameter tensors (benchmarks/RESULTS.md, run 6).
        optimiser = torch.optim.Adam(network.parameters(), lr=self.lr, fused=True)
        steps = self.epochs * math.ceil(len(train) / self.batch_size)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
        train_loss, val_loss = [], []
        bar = tqdm(range(self.epochs), desc="autoencoder", unit="epoch", disable=not self.progress)
        for _ in bar:
            losses = []
            for batch in torch.randperm(len(train), generator=generator).split(self.batch_size):
                loss = nn.functional.mse_loss(network(train[batch]), train[batch])
                optimiser.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(network.parameters(), CAE_MAX_GRAD_NORM)
                optimiser.step()
                schedule.step()
                losses.append(loss.item())
            train_loss.append(sum(losses) / len(losses))
            with torch.no_grad():
                val_loss.append(
                    nn.functional.mse_loss(network(val), val).item() if len(val) else math.nan
                )
            bar.set_postfix(train=f"{train_loss[-1]:.4f}", val=f"{val_loss[-1]:.4f}")
        network.eval()
        return TrainingHistory(torch.tensor(train_loss), torch.tensor(val_loss))

    def _standardise(self, vectors: Tensor) -> Tensor:
        return ((vectors - self.mean_.double()) / self.scale_).float()

    def transform(self, X: Trajectories) -> Tensor | np.ndarray:
        """Bottleneck codes of ``X``: a cache, or vectors of width ``d_in`` (``[n, d_in]``,
        ``[n, sublayer, d_in]``, any leading axes) as a tensor or a numpy array.

        Returns:
            ``[..., d_bottleneck]`` float32 on CPU (a cache's ``[batch, sublayer,
            d_bottleneck]``); a numpy array when ``X`` is one.

        Raises:
            sklearn.exceptions.NotFittedError: before :meth:`fit`.
        """
        check_is_fitted(self, "encoder_")
        vectors = X.resid if isinstance(X, DynamicsCache) else _as_tensor(X)
        vectors = _check_width(vectors, self.n_features_in_, "X", "d_in")
        if vectors.ndim not in (2, 3):
            raise DynamicsInputError(
                f"X must have shape [n, d_in] or [n, sublayer, d_in]; got shape {tuple(vectors.shape)}"
            )
        if not bool(torch.isfinite(vectors).all()):
            raise DynamicsInputError("X must hold finite values; got inf or nan")
        with torch.no_grad():
            codes = self.encoder_(self._standardise(vectors))
        return codes.numpy() if isinstance(X, np.ndarray) else codes

    def inverse_transform(
        self, codes: Float[Tensor, "... bottleneck"]
    ) -> Float[Tensor, "... d_in"]:
        """Reconstructed vectors, in the input's units, from bottleneck codes.

        Returns:
            ``[..., d_in]`` float32 on CPU.
        """
        check_is_fitted(self, "encoder_")
        codes = _check_width(codes, self.d_bottleneck, "codes", "d_bottleneck").float()
        with torch.no_grad():
            return self.decoder_(codes) * self.scale_ + self.mean_

    def trajectories(
        self, dyn: DynamicsCache | Float[Tensor, "batch sublayer d_in"] | Float[Tensor, "n d_in"]
    ) -> AutoencoderTrajectories:
        """Codes, step distances and explained variance of the trajectories of ``dyn``.

        ``fit`` already reports the held-out samples in :attr:`held_out_`; call this for
        other data, e.g. the shuffled-token control.

        Returns:
            An :class:`AutoencoderTrajectories`.
        """
        return self._report(*as_trajectories(_as_tensor(dyn)))

    def _report(
        self, resid: Float[Tensor, "batch sublayer d_in"], labels: tuple[str, ...]
    ) -> AutoencoderTrajectories:
        codes = self.transform(resid)
        reconstruction = self.inverse_transform(codes)
        return AutoencoderTrajectories(
            codes=codes,
            mean_trajectory=codes.mean(0),
            step_distance=(codes[:, 1:] - codes[:, :-1]).norm(dim=-1),
            explained_variance=explained_variance(resid, reconstruction),
            explained_variance_pooled=explained_variance(resid, reconstruction, "pooled"),
            labels=labels,
        )
