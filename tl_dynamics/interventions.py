"""Perturb the residual stream mid-flight and watch whether the dynamics pull it back.

If depth is time, a perturbation experiment asks what the system does after a kick.
Fernando & Guitchounts (2025, section 2.9, Fig 4D) *teleport* the residual stream: they
run one standard prompt, and at one layer they overwrite the stream at the last token
with a point of their choosing, then let the remaining layers run. The unperturbed run
is the control. Points come from an ``n x n`` grid in the plane of the first two
principal components (:func:`pca_grid`), mapped back to the residual stream by the
inverse PCA, ``x = z V[:2]^T + mu``. If later layers bring teleported states back
towards the control path, the dynamics behave like an attractor (self-correcting); the
paper finds this for middle layers but not for the first or the penultimate one.

:func:`teleport` writes every point through a TransformerLens hook on
``blocks.{layer}.hook_resid_{site}`` at one token position, many points per batched
forward pass (each row of the batch is the same prompt with a different point), and
records the whole ``2L``-sublayer trajectory of every run plus the control, and the
logits at that position. :meth:`TeleportResult.recovery` measures, at every sublayer
from the injection on, how far each run is from the control, divided by how far it was
put (1 at the injection; below 1 means pulled back), and the paper's mean squared error
against the control. :func:`teleport_sweep` repeats this for several layers, by default
those the paper shows scaled to the model's depth (:func:`teleport_layers`).

Layers are followed for different numbers of sublayers, so the report's Fig 4D finding
compares the pull per sublayer (``contraction ** (1 / steps)``), not ``contraction``
itself. On a post-LayerNorm encoder, which renormalises the stream after every
sub-block, runs are pulled back at every default layer, but the pull per sublayer is
weakest after the first layer and strongest after the last: not the paper's mid-layer
pattern; small random kicks (:func:`inject_noise`) shrink after early injections and
grow after late ones. In pre-norm decoders the stream's norm grows with depth, so
:attr:`Recovery.relative` measures distance against the stream's own norm.

Two subtler kicks the paper names as future work reuse the same machinery and measure:
:func:`inject_noise` adds random noise of a chosen relative size to the control's own
state, and :func:`swap_activations` writes the states other prompts have at that point.

Each write is also a plain TransformerLens hook for your own forward passes:
:func:`teleport_hook`, :func:`noise_hook` and :func:`swap_hook` return the function
``hook(activation, hook)`` that the functions above use, for
``model.run_with_hooks(tokens, fwd_hooks=[(name, hook)])``, ``model.hooks(...)`` or
``tld.collect(model, texts, fwd_hooks=[(name, hook)])`` (trajectories of the intervened
model); :func:`~tl_dynamics.hooks.sublayer_hook_name` names the hook point of a sublayer.
These hooks write *in place*. On a ``TransformerBridge`` (transformer-lens 3.9 and 4.3)
``hook_resid_mid`` is an alias of the MLP norm's input (``ln2.hook_in``), a tensor that is
also the residual the block adds the MLP's output to: changing it in place changes the
residual stream, as on a ``HookedTransformer``, while a hook of your own that *returns a
new tensor* there (``return activation + v``) reaches the MLP alone and the stream past
the block keeps the unwritten value. Write in place (``activation += v``) there. In a
``run_with_cache`` of the same pass, a write at ``blocks.{l}.hook_resid_pre`` also shows in
``blocks.{l-1}.hook_resid_post``: the same point of the stream, the same tensor.

Example::

    import tl_dynamics as tld
    from tl_dynamics.embed import pca_trajectories
    from tl_dynamics.interventions import pca_grid, teleport, teleport_sweep

    model = tld.models.load_model()                         # SmolLM2-135M, 30 layers
    texts = tld.data.python_docs()[:128]
    pca = pca_trajectories(tld.collect(model, texts))
    result = teleport(model, layer=15, points=pca_grid(pca, n=10), pca=pca)
    result.recovery().contraction                           # < 1: pulled back
    sweep = teleport_sweep(model, pca)                      # layers [0, 7, 14, 22, 29]
    sweep.to_frame()                                        # one row per layer
    kick = tld.noise_hook(0.1, seed=0)                      # the same kicks, your own run
    kicked = tld.collect(model, texts, fwd_hooks=[("blocks.15.hook_resid_pre", kick)])
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import einops
import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from tl_dynamics._batching import forward_trajectories, pad_token_id, pad_tokens, prompt_tokens
from tl_dynamics._checks import check_finite, check_int
from tl_dynamics._repr import compact_repr
from tl_dynamics.collect import collect
from tl_dynamics.data import validate_texts
from tl_dynamics.embed import PCATrajectories
from tl_dynamics.errors import DynamicsInputError, InputTypeError
from tl_dynamics.hooks import SITES, TLModel, TrajectoryHook, check_model, model_name, trajectory_hooks

__all__ = [
    "DEFAULT_PROMPT",
    "DEFAULT_PROMPTS",
    "PROMPT_GRID",
    "DEFAULT_GRID",
    "DEFAULT_BATCH_SIZE",
    "NORM_LIMIT",
    "TELEPORT_FRACTIONS",
    "HookFn",
    "teleport_layers",
    "TeleportGrid",
    "pca_grid",
    "Recovery",
    "TeleportResult",
    "TeleportSweep",
    "teleport",
    "teleport_sweep",
    "inject_noise",
    "swap_activations",
    "teleport_hook",
    "noise_hook",
    "swap_hook",
]

DEFAULT_PROMPT = "I'm sorry, Dave. I'm afraid I can't do that."  # the paper's prompt (2.9)
DEFAULT_GRID = 10  # points per axis of the paper's teleport grid ("n ~ 10", section 2.9)
# The paper's line and seven more of other kinds (prose, code, a list, a question,
# dialogue, numbers, a definition): teleports and Jacobians are measured per prompt, and
# the prompt is the independent unit of their tests (grid points of one prompt are not).
DEFAULT_PROMPTS = (
    DEFAULT_PROMPT,
    "The river rose slowly through the night, and by morning the bridge was gone.",
    "def mean(values):\n    return sum(values) / len(values)",
    "Ingredients: two eggs, a cup of flour, a pinch of salt and some milk.",
    "Why does the moon always show the same face to the Earth?",
    '"Are you coming tonight?" she asked. "Only if it stops raining," he said.',
    "In 1969, 3 astronauts flew 384,400 km to the Moon and back in 8 days.",
    "A prime number is a natural number greater than one with no other divisors.",
)
PROMPT_GRID = 4  # points per axis of each prompt's grid when teleports are compared over prompts
DEFAULT_BATCH_SIZE = 32  # perturbed runs per forward pass
TELEPORT_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)
NORM_LIMIT = 1e3
"""Teleported points may have norms of at most this many times the largest norm of the
prompt's own residual stream (any sublayer): far beyond it, float32 overflows on the way
through the model and the recovery is NaN, not a measurement."""
"""Depths of the paper's teleport layers 0, 7, 15, 23, 31 of 32 (Fig 4D): the first layer
and the last layer of the first quarter, half, three quarters and whole model."""


def teleport_layers(n_layers: int) -> list[int]:
    """The paper's teleport layers scaled to a model of ``n_layers`` blocks.

    Layer ``max(0, ceil(f * n_layers) - 1)`` for each ``f`` in
    :data:`TELEPORT_FRACTIONS`, without repeats: ``[0, 7, 15, 23, 31]`` for 32 layers,
    ``[0, 1, 2, 4, 5]`` for 6 (MiniLM), ``[0, 1, 2, 3]`` for 4.

    Returns:
        Sorted distinct layer indices.
    """
    n_layers = check_int(n_layers, "n_layers", 1)
    return sorted({max(0, math.ceil(f * n_layers) - 1) for f in TELEPORT_FRACTIONS})


# ----------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class TeleportGrid:
    """An ``n x n`` grid in the PC1-PC2 plane and its residual-stream vectors.

    Attributes:
        plane_points: ``[n * n, 2]`` float32 (PC1, PC2) coordinates, PC1 varying slowest,
            in residual-stream units.
        points: ``[n * n, d_model]`` float32 vectors ``z V[:2]^T + mu``: the PCA mean
            plus the plane coordinates, with every other component zero.
    """

    __repr__ = compact_repr

    plane_points: Float[Tensor, "point 2"]
    points: Float[Tensor, "point d_model"]


def _axis_range(
    values: Float[Tensor, " value"], r_min: float | None, r_max: float | None
) -> tuple[float, float]:
    low = float(values.min()) if r_min is None else r_min
    high = float(values.max()) if r_max is None else r_max
    return low, high


def pca_grid(
    pca: PCATrajectories,
    n: int = DEFAULT_GRID,
    r_min: float | None = None,
    r_max: float | None = None,
) -> TeleportGrid:
    """The paper's teleport grid: ``n`` evenly spaced values per axis of the PC1-PC2 plane.

    Args:
        pca: A fitted :class:`~tl_dynamics.embed.PCATrajectories` with at least 2
            components.
        n: Points per axis (``n * n`` in all), at least 1; 10 in the paper.
        r_min, r_max: Range of both axes, in residual-stream units. Left out, each axis
            spans the range its component takes over all the PCA's trajectories.

    Returns:
        A :class:`TeleportGrid`.
    """
    if not isinstance(pca, PCATrajectories):
        raise InputTypeError(
            f"pca must be a PCATrajectories (from pca_trajectories); got {type(pca).__name__}"
        )
    if pca.n_components < 2:
        raise DynamicsInputError(
            f"pca must have at least 2 components for a plane; it has {pca.n_components}"
        )
    n = check_int(n, "n", 1, why=" (points per axis)")
    for name, value in (("r_min", r_min), ("r_max", r_max)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise DynamicsInputError(f"{name} must be a finite number or None; got {value!r}")
    axes = []
    for component in range(2):
        low, high = _axis_range(pca.trajectories[..., component], r_min, r_max)
        if low > high:
            raise DynamicsInputError(f"r_min must not exceed r_max; got range [{low}, {high}]")
        axes.append(torch.linspace(low, high, n))
    plane = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    plane = einops.rearrange(plane, "i j c -> (i j) c")
    return TeleportGrid(plane_points=plane, points=pca.inverse(plane))


# ------------------------------------------------------------------------- teleport


@dataclass(frozen=True)
class Recovery:
    """How far teleported runs stay from the control, at every sublayer from the injection.

    Step 0 is the injection sublayer itself, where the distance is the displacement.

    Attributes:
        layer: Layer of the injection.
        labels: Labels of the sublayers from the injection to the last one.
        sublayers: ``[step]`` their indices in the full trajectory.
        distance: ``[point, step]`` float64 Euclidean distance ``||x - c||`` to the control,
            in residual-stream units.
        normalised: ``[point, step]`` ``distance`` divided by the displacement at the
            injection (1 at step 0; below 1 means pulled back); ``nan`` for points that
            were not displaced.
        mse: ``[point, step]`` mean over units of ``(x - c)^2``, the paper's measure, in
            squared residual-stream units.
        relative: ``[point, step]`` ``distance`` as a fraction of the control's norm at
            that sublayer. Unlike ``normalised`` it ignores the stream growing or
            shrinking with depth (a post-LayerNorm model such as BERT rescales it at
            every sublayer).
        plane_distance, plane_normalised: ``distance`` and ``normalised`` measured in the
            PC1-PC2 plane of the PCA given to :func:`teleport`; ``None`` without one.
        contraction: Median over points of ``normalised`` at the last sublayer: below 1,
            the model pulls teleported states back towards the control.
        relative_contraction: Median over points of ``relative`` at the last sublayer
            divided by ``relative`` at the injection: the same question, scale-free.
    """

    __repr__ = compact_repr

    layer: int
    labels: tuple[str, ...]
    sublayers: Int[Tensor, " step"]
    distance: Float[Tensor, "point step"]
    normalised: Float[Tensor, "point step"]
    mse: Float[Tensor, "point step"]
    relative: Float[Tensor, "point step"]
    plane_distance: Float[Tensor, "point step"] | None
    plane_normalised: Float[Tensor, "point step"] | None
    contraction: float
    relative_contraction: float

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per (point, step).

        Columns ``layer``, ``point``, ``step`` (sublayers after the injection),
        ``sublayer``, ``label``, ``distance``, ``normalised``, ``mse``, ``relative`` and,
        with a PCA, ``plane_distance`` and ``plane_normalised``.
        """
        n_points, n_steps = self.distance.shape
        columns = {
            "layer": self.layer,
            "point": np.repeat(np.arange(n_points), n_steps),
            "step": np.tile(np.arange(n_steps), n_points),
            "sublayer": np.tile(self.sublayers.numpy(), n_points),
            "label": np.tile(np.array(self.labels, dtype=object), n_points),
        }
        names = ("distance", "normalised", "mse", "relative", "plane_distance", "plane_normalised")
        for name in names:
            values = getattr(self, name)
            if values is not None:
                columns[name] = values.reshape(-1).numpy()
        return pd.DataFrame(columns)


def _distances(
    runs: Float[Tensor, "point step width"], control: Float[Tensor, "step width"]
) -> tuple[Tensor, Tensor]:
    """Distance to the control and the same divided by the step-0 displacement."""
    distance = (runs - control).norm(dim=-1)
    return distance, _per_first(distance)


def _per_first(values: Float[Tensor, "point step"]) -> Float[Tensor, "point step"]:
    """Each row divided by its step-0 value; ``nan`` in rows that start at 0."""
    first = values[:, :1]
    return torch.where(first > 0, values / first, torch.nan)


def _final_median(ratios: Float[Tensor, "point step"] | None) -> float:
    """Median over points of the last step, ignoring ``nan``; ``nan`` if none is finite."""
    return math.nan if ratios is None else _median(ratios[:, -1])


def _median(values: Float[Tensor, " point"]) -> float:
    """The median (mean of the middle two for an even count), ignoring ``nan``."""
    return float(torch.nanquantile(values.double(), 0.5))


@dataclass(frozen=True)
class TeleportResult:
    """Runs of one prompt with the residual stream overwritten at one layer and position.

    Attributes:
        model_name: The model's name.
        prompt: The prompt.
        layer: Layer whose ``hook_resid_{site}`` was overwritten.
        site: ``"pre"`` (input of the attention sub-block, the paper's choice) or
            ``"mid"`` (input of the MLP sub-block).
        position: Token index (0-based, BOS included) that was overwritten and is read.
        injection: Index of the overwritten sublayer in the trajectory (``2 * layer``
            for ``"pre"``, ``2 * layer + 1`` for ``"mid"``).
        labels: Labels of the ``2L`` sublayers.
        points: ``[point, d_model]`` float32 vectors written, in residual-stream units.
        plane_points: ``[point, 2]`` their PC1-PC2 coordinates when they came from a
            :class:`TeleportGrid`, else ``None``.
        trajectories: ``[point, sublayer, d_model]`` float32 trajectory of each run at
            ``position`` (equal to ``points`` at ``injection``).
        control: ``[sublayer, d_model]`` float32 trajectory of the unperturbed run.
        logits: ``[point, vocab]`` float32 output logits of each run at ``position``.
        control_logits: ``[vocab]`` logits of the unperturbed run at ``position``.
        pca: The PCA that places trajectories in the plane, if one was given.
    """

    __repr__ = compact_repr

    model_name: str
    prompt: str
    layer: int
    site: str
    position: int
    injection: int
    labels: tuple[str, ...]
    points: Float[Tensor, "point d_model"]
    plane_points: Float[Tensor, "point 2"] | None
    trajectories: Float[Tensor, "point sublayer d_model"]
    control: Float[Tensor, "sublayer d_model"]
    logits: Float[Tensor, "point vocab"]
    control_logits: Float[Tensor, " vocab"]
    pca: PCATrajectories | None = None

    @property
    def n_points(self) -> int:
        """Number of perturbed runs."""
        return int(self.points.shape[0])

    def recovery(self) -> Recovery:
        """Distance of every run to the control from the injection on; see :class:`Recovery`."""
        runs = self.trajectories[:, self.injection :].double()
        control = self.control[self.injection :].double()
        distance, normalised = _distances(runs, control)
        plane_distance = plane_normalised = None
        if self.pca is not None:
            plane_distance, plane_normalised = _distances(
                self.pca.project(runs)[..., :2].double(),
                self.pca.project(control)[..., :2].double(),
            )
        relative = distance / control.norm(dim=-1)
        return Recovery(
            layer=self.layer,
            labels=self.labels[self.injection :],
            sublayers=torch.arange(self.injection, len(self.labels)),
            distance=distance,
            normalised=normalised,
            mse=(runs - control).pow(2).mean(-1),
            relative=relative,
            plane_distance=plane_distance,
            plane_normalised=plane_normalised,
            contraction=_final_median(normalised),
            relative_contraction=_final_median(_per_first(relative)),
        )


def _points(points: Any, d_model: int) -> tuple[Tensor, Tensor | None]:
    """``(points [n, d_model] float32, plane coordinates or None)`` from a grid or tensor."""
    plane = None
    if isinstance(points, TeleportGrid):
        points, plane = points.points, points.plane_points
    if not isinstance(points, Tensor) or not points.is_floating_point():
        got = f"a {points.dtype} tensor" if isinstance(points, Tensor) else type(points).__name__
        raise InputTypeError(
            f"points must be a TeleportGrid or a floating tensor [n_points, d_model]; "
            f"got {got}"
        )
    if points.ndim != 2 or points.shape[1] != d_model:
        raise DynamicsInputError(
            f"points must have shape [n_points, {d_model}] (the model's d_model); "
            f"got {tuple(points.shape)}"
        )
    if points.shape[0] == 0:
        raise DynamicsInputError("points is empty; pass at least one point")
    check_finite(points, "points")
    return points.detach().to("cpu", torch.float32), plane


def _check_norms(points: Float[Tensor, "point d_model"], stream: Float[Tensor, "..."]) -> None:
    """Refuse points whose norm exceeds :data:`NORM_LIMIT` times the stream's largest."""
    largest = float(stream.double().norm(dim=-1).max())
    norms = points.double().norm(dim=-1)
    worst = int(norms.argmax())
    if not float(norms[worst]) <= NORM_LIMIT * largest:
        raise DynamicsInputError(
            f"points must have norms of at most {NORM_LIMIT * largest:.4g} ({NORM_LIMIT:g} x "
            f"{largest:.4g}, the largest norm of the prompt's residual stream); got point "
            f"{worst} of norm {float(norms[worst]):.4g}"
        )


def _keeps_logits(model: TLModel) -> bool:
    """Whether ``model`` runs a Hugging Face model whose forward takes ``logits_to_keep``
    (TransformerBridge over a decoder; not BERT, not TransformerLens's own classes)."""
    original = getattr(model, "original_model", None)
    forward = getattr(original, "forward", None)
    return forward is not None and "logits_to_keep" in inspect.signature(forward).parameters


HookFn = Callable[[Tensor, Any], Tensor]
"""A TransformerLens forward hook: ``hook(activation, hook=hook_point)`` returns the
activation the model carries on with."""


def _write(
    activation: Float[Tensor, "batch pos d_model"],
    hook: Any,
    *,
    position: int,
    values: Float[Tensor, "row d_model"],
) -> Float[Tensor, "batch pos d_model"]:
    """``activation`` with ``values`` written in place at ``position`` of every batch row.

    In place, because on a ``TransformerBridge`` the tensor at ``hook_resid_mid`` is also
    the residual the block adds its MLP's output to: a new tensor returned there would
    reach the MLP only.
    """
    n_batch, n_pos, width = activation.shape
    if values.shape[-1] != width or len(values) not in (1, n_batch):
        raise DynamicsInputError(
            f"values of shape {tuple(values.shape)} cannot be written at {_where(hook)}, whose "
            f"activation is [batch={n_batch}, pos={n_pos}, d_model={width}]: pass [{width}] or "
            f"[{n_batch}, {width}]"
        )
    _check_inside(position, n_pos, hook)
    activation[:, position] = values.to(activation.device, activation.dtype)
    return activation


def _where(hook: Any) -> str:
    """The hook point's name for a message (``hook`` is ``None`` when called by hand)."""
    return repr(getattr(hook, "name", None) or "the hook point")


def _check_inside(position: int, n_pos: int, hook: Any) -> None:
    if not -n_pos <= position < n_pos:
        raise DynamicsInputError(f"position {position} is outside the {n_pos} positions at {_where(hook)}")


def _check_values(values: Any) -> Float[Tensor, "row d_model"]:
    """``values`` as ``[row, d_model]`` (a ``[d_model]`` vector as one row), or an error."""
    if not isinstance(values, Tensor) or not values.is_floating_point():
        got = f"a {values.dtype} tensor" if isinstance(values, Tensor) else type(values).__name__
        raise InputTypeError(
            f"values must be a floating tensor [d_model] or [batch, d_model]; got {got}"
        )
    if values.ndim not in (1, 2) or values.numel() == 0:
        raise DynamicsInputError(
            f"values must have shape [d_model] or [batch, d_model]; got {tuple(values.shape)}"
        )
    check_finite(values, "values")
    return values if values.ndim == 2 else values[None]


def teleport_hook(values: Float[Tensor, "*row d_model"], position: int = -1) -> HookFn:
    """A TransformerLens hook that overwrites the residual stream at one token position.

    The write behind :func:`teleport`, for your own forward passes: put it on a
    residual-stream hook point (:func:`~tl_dynamics.hooks.sublayer_hook_name` names the
    one of a sublayer) with ``model.run_with_hooks(tokens, fwd_hooks=[(name, hook)])``,
    ``with model.hooks(fwd_hooks=[(name, hook)]):`` or
    ``tld.collect(model, texts, fwd_hooks=[(name, hook)])``. Works on
    ``TransformerBridge`` and ``HookedTransformer`` alike.

    Args:
        values: ``[d_model]``, written into every batch row, or ``[batch, d_model]``,
            row ``i`` into batch row ``i``; residual-stream units.
        position: Token index in the batch that reaches the hook; negative counts from
            the end of the (padded) batch, so ``-1`` is the last token of every row only
            when the rows have the same length.

    Returns:
        ``hook(activation, hook)``: the ``[batch, pos, d_model]`` activation with
        ``values`` written in place at ``position`` (see the module's docstring for why).

    Raises:
        TypeError, ValueError: ``values`` not a finite floating tensor of 1 or 2 axes, or
            ``position`` not an int; when called, a width or batch size other than the
            activation's, or a position outside it.
    """
    values = _check_values(values)
    return functools.partial(_write, position=_check_position(position), values=values)


def _check_position(position: Any) -> int:
    if isinstance(position, bool) or not isinstance(position, (int, np.integer)):
        raise DynamicsInputError(f"position must be an int (a token index); got {position!r}")
    return int(position)


def _check_point(model: TLModel, layer: Any, site: Any) -> tuple[int, str]:
    """``(layer, site)`` of a residual-stream hook point of ``model`` (in eval mode), checked."""
    check_model(model, require_eval=True)
    n_layers = int(model.cfg.n_layers)
    layer = check_int(
        layer, "layer", 0, n_layers - 1, f" (model {model_name(model)!r} has {n_layers} layers)"
    )
    if site not in SITES:
        raise DynamicsInputError(f"site must be one of {SITES}; got {site!r}")
    return layer, site


def _hook_index(hooks: Sequence[TrajectoryHook], layer: int, site: str) -> int:
    """Index in ``hooks`` of ``blocks.{layer}.hook_resid_{site}``."""
    return [hook.name for hook in hooks].index(f"blocks.{layer}.hook_resid_{site}")


@dataclass(frozen=True)
class _Injection:
    """A checked (model, prompt, hook point, position): runs the prompt, with or without writes."""

    model: TLModel
    prompt: str
    tokens: Int[Tensor, " pos"]
    layer: int
    site: str
    position: int
    hooks: tuple[TrajectoryHook, ...]
    injection: int

    @classmethod
    def check(cls, model: TLModel, prompt: Any, layer: Any, site: Any, position: Any) -> _Injection:
        layer, site = _check_point(model, layer, site)
        tokens = prompt_tokens(model, prompt)
        n_tokens = len(tokens)
        position = check_int(
            position, "position", -n_tokens, n_tokens - 1, f" (the prompt has {n_tokens} tokens)"
        )
        hooks = tuple(trajectory_hooks(model))
        injection = _hook_index(hooks, layer, site)
        return cls(model, prompt, tokens, layer, site, position % n_tokens, hooks, injection)

    def at(self, layer: Any) -> _Injection:
        """The same prompt, site and position, injected at ``layer`` (checked); the hooks
        are reused, not looked up on the model again."""
        layer, _ = _check_point(self.model, layer, self.site)
        return dataclasses.replace(self, layer=layer, injection=_hook_index(self.hooks, layer, self.site))

    def run(self, values: Float[Tensor, "row d_model"] | None) -> tuple[Tensor, Tensor]:
        """``(trajectories [row, sublayer, d_model], logits [row, vocab])`` at ``position``.

        ``values=None`` is the control: one unperturbed row.
        """
        rows = 1 if values is None else len(values)
        batch, mask = pad_tokens([self.tokens] * rows, pad_token_id(self.model))
        writes = []
        if values is not None:
            writes.append((self.hooks[self.injection].name, teleport_hook(values, self.position)))
        index = (torch.arange(rows), torch.full((rows,), self.position))
        # Unembed only the read position where the model can (the vocabulary is the widest
        # matrix of a small model: 262k x 640 for Gemma-3); otherwise every position.
        keep = _keeps_logits(self.model)
        resid, logits = forward_trajectories(
            self.model,
            batch,
            mask,
            index,
            self.hooks,
            extra_hooks=writes,
            return_type="logits",
            forward_kwargs={"logits_to_keep": torch.tensor([self.position])} if keep else None,
        )
        return resid, logits[:, 0 if keep else self.position].float().to("cpu")

    def run_points(
        self,
        points: Any,
        batch_size: Any,
        pca: Any,
        progress: bool,
        control: tuple[Tensor, Tensor] | None = None,
    ) -> TeleportResult:
        """Run every point, ``batch_size`` per pass, next to the control (run here if not given)."""
        d_model = int(self.model.cfg.d_model)
        if pca is not None and not isinstance(pca, PCATrajectories):
            raise InputTypeError(
                f"pca must be a PCATrajectories or None; got {type(pca).__name__}"
            )
        if pca is not None and pca.d_model != d_model:
            raise DynamicsInputError(
                f"pca was fitted on vectors of width {pca.d_model}, but model "
                f"{model_name(self.model)!r} has d_model={d_model}; fit it on this model's "
                "trajectories"
            )
        points, plane = _points(points, d_model)
        batch_size = check_int(batch_size, "batch_size", 1)
        control_resid, control_logits = control or self.run(None)
        _check_norms(points, control_resid)
        # Passes of nearly equal size (100 points at 32: 34, 33, 33, not 32, 32, 32, 4): a
        # pass of a few rows costs almost twice as much per row on CPU.
        chunks = tqdm(
            points.tensor_split(math.ceil(len(points) / batch_size)),
            desc=f"teleport L{self.layer}",
            disable=not progress,
        )
        runs = [self.run(chunk) for chunk in chunks]
        return TeleportResult(
            model_name=model_name(self.model),
            prompt=self.prompt,
            layer=self.layer,
            site=self.site,
            position=self.position,
            injection=self.injection,
            labels=tuple(hook.label for hook in self.hooks),
            points=points,
            plane_points=plane,
            trajectories=torch.cat([resid for resid, _ in runs]),
            control=control_resid[0],
            logits=torch.cat([logits for _, logits in runs]),
            control_logits=control_logits[0],
            pca=pca,
        )


def teleport(
    model: TLModel,
    prompt: str = DEFAULT_PROMPT,
    *,
    layer: int,
    points: TeleportGrid | Float[Tensor, "point d_model"],
    site: str = "pre",
    position: int = -1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    pca: PCATrajectories | None = None,
    progress: bool = True,
) -> TeleportResult:
    """Overwrite the residual stream with each point in turn and record the runs (Fig 4D).

    One unperturbed forward pass gives the control; then the points, ``batch_size`` at a
    time, each fill one row of a batch of copies of the prompt: a hook on
    ``blocks.{layer}.hook_resid_{site}`` writes row ``i``'s point at ``position`` before
    the trajectory is read, and the rest of the model runs on. ``n`` points take
    ``ceil(n / batch_size)`` passes, plus one for the control.

    Args:
        model: A TransformerLens model in eval mode.
        prompt: The text to run; the paper's HAL 9000 line by default.
        layer: Block whose input (``"pre"``) or mid-point (``"mid"``) is overwritten,
            in ``[0, n_layers - 1]``.
        points: A :class:`TeleportGrid` (see :func:`pca_grid`) or a
            ``[n_points, d_model]`` tensor of residual-stream vectors.
        site: ``"pre"`` (the paper's choice) or ``"mid"``.
        position: Token index to overwrite and read; negative counts from the end
            (``-1``, the last token, as in the paper).
        batch_size: Perturbed runs per forward pass.
        pca: A PCA of the same model's trajectories: :meth:`TeleportResult.recovery`
            then also measures distances in its PC1-PC2 plane, and plots can draw the
            runs there.
        progress: Show a progress bar over the batches.

    Returns:
        A :class:`TeleportResult`.

    Raises:
        TypeError: not a TransformerLens model; ``points``, ``prompt`` or ``pca`` of the
            wrong type.
        ValueError: ``layer``, ``site``, ``position`` or ``batch_size`` out of range;
            ``points`` of the wrong width, empty, non-finite or with a norm beyond
            :data:`NORM_LIMIT` times the stream's largest; an empty prompt; a
            ``pca`` fitted on another width; a model in training mode.
    """
    setup = _Injection.check(model, prompt, layer, site, position)
    return setup.run_points(points, batch_size, pca, progress)


@dataclass(frozen=True)
class TeleportSweep:
    """Teleports of one grid at several layers (the panels of Fig 4D).

    Attributes:
        results: One :class:`TeleportResult` per layer, in layer order.
    """

    __repr__ = compact_repr

    results: tuple[TeleportResult, ...]

    @property
    def layers(self) -> list[int]:
        """The injection layers."""
        return [result.layer for result in self.results]

    def recovery_frame(self) -> pd.DataFrame:
        """All layers' :meth:`Recovery.to_frame` tables stacked (told apart by ``layer``)."""
        return pd.concat(
            [result.recovery().to_frame() for result in self.results], ignore_index=True
        )

    def to_frame(self) -> pd.DataFrame:
        """One row per layer: the summary of its recovery.

        Columns ``layer``, ``label`` (injection sublayer), ``steps`` (sublayers after the
        injection), ``displacement`` (median distance put from the control, residual-
        stream units), ``contraction`` and ``relative_contraction`` (see
        :class:`Recovery`; < 1: pulled back), ``plane_contraction`` (``contraction`` in
        the PC1-PC2 plane, ``nan`` without a PCA) and ``final_mse`` (median over points
        of the paper's MSE at the last sublayer).
        """
        rows = []
        for result in self.results:
            recovery = result.recovery()
            rows.append(
                {
                    "layer": result.layer,
                    "label": recovery.labels[0],
                    "steps": len(recovery.labels) - 1,
                    "displacement": _median(recovery.distance[:, 0]),
                    "contraction": recovery.contraction,
                    "relative_contraction": recovery.relative_contraction,
                    "plane_contraction": _final_median(recovery.plane_normalised),
                    "final_mse": _median(recovery.mse[:, -1]),
                }
            )
        return pd.DataFrame(rows)


def teleport_sweep(
    model: TLModel,
    pca: PCATrajectories,
    *,
    layers: Sequence[int] | None = None,
    n: int = DEFAULT_GRID,
    prompt: str = DEFAULT_PROMPT,
    r_min: float | None = None,
    r_max: float | None = None,
    site: str = "pre",
    position: int = -1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
) -> TeleportSweep:
    """Teleport the same ``n x n`` PCA grid at several layers (Fig 4D).

    Args:
        model: A TransformerLens model in eval mode.
        pca: A PCA of this model's trajectories; gives the grid and the plane.
        layers: Injection layers; :func:`teleport_layers` of the model's depth when
            ``None``.
        n, r_min, r_max: The grid, see :func:`pca_grid`.
        prompt, site, position, batch_size: See :func:`teleport`.
        progress: Show a progress bar over layers.

    Returns:
        A :class:`TeleportSweep`.
    """
    check_model(model)
    layers = teleport_layers(int(model.cfg.n_layers)) if layers is None else list(layers)
    if not layers:
        raise DynamicsInputError("layers is empty; pass at least one layer or None for the default")
    grid = pca_grid(pca, n=n, r_min=r_min, r_max=r_max)
    first = _Injection.check(model, prompt, layers[0], site, position)
    setups = [first, *(first.at(layer) for layer in layers[1:])]
    control = setups[0].run(None)  # the unperturbed run is the same for every layer
    results = [
        setup.run_points(grid, batch_size, pca, progress=False, control=control)
        for setup in tqdm(setups, desc="teleport", unit="layer", disable=not progress)
    ]
    return TeleportSweep(tuple(results))


# --------------------------------------------------------------- subtler perturbations


def _kick(
    states: Float[Tensor, "row d_model"], scale: float, seed: int
) -> Float[Tensor, "row d_model"]:
    """``states`` (float32) plus isotropic random directions of length ``scale * ||state||``.

    The directions are drawn on the CPU from ``seed`` (row ``i`` gets the ``i``-th draw),
    so the same rows get the same kicks on any device.
    """
    states = states.float()
    noise = torch.randn(states.shape, generator=torch.Generator().manual_seed(seed))
    noise = noise.to(states.device) / noise.norm(dim=-1, keepdim=True).to(states.device)
    return states + noise * (scale * states.norm(dim=-1, keepdim=True))


def _noise(
    activation: Float[Tensor, "batch pos d_model"],
    hook: Any,
    *,
    position: int,
    scale: float,
    seed: int,
) -> Float[Tensor, "batch pos d_model"]:
    """``activation`` with every row's state at ``position`` kicked by :func:`_kick`, in place."""
    _check_inside(position, activation.shape[1], hook)
    kicked = _kick(activation[:, position], scale, seed)
    return _write(activation, hook, position=position, values=kicked)


def _check_scale(scale: Any) -> float:
    if isinstance(scale, bool) or not (
        isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0
    ):
        raise DynamicsInputError(
            f"scale must be a positive number (relative to the state's norm); got {scale!r}"
        )
    return float(scale)


def noise_hook(scale: float, *, seed: int = 0, position: int = -1) -> HookFn:
    """A TransformerLens hook that kicks the residual stream by noise of a relative size.

    The kick of :func:`inject_noise`, for your own forward passes (see
    :func:`teleport_hook` for where to put it): each batch row's state ``x`` at
    ``position`` becomes ``x + scale * ||x|| * u``, ``u`` an isotropic random unit
    direction, row ``i`` getting the ``i``-th direction drawn from ``seed`` (the same on
    every call, so a run is reproducible).

    Args:
        scale: Displacement relative to the norm of the state, > 0 (``0.1``: 10%).
        seed: Seeds the directions.
        position: Token index in the batch that reaches the hook (see :func:`teleport_hook`).

    Returns:
        ``hook(activation, hook)``: the activation, kicked in place.
    """
    return functools.partial(
        _noise,
        position=_check_position(position),
        scale=_check_scale(scale),
        seed=check_int(seed, "seed", 0),
    )


def _donor_states(
    model: TLModel, donors: Any, layer: int, site: str, batch_size: int
) -> Float[Tensor, "donor d_model"]:
    """The donors' states at ``blocks.{layer}.hook_resid_{site}``, at each one's last token."""
    try:
        donated = collect(model, validate_texts(donors), batch_size=batch_size, progress=False)
    except (TypeError, ValueError) as error:
        raise type(error)(f"donors: {error}") from error
    return donated.resid[:, donated.labels.index(f"{layer}_{site}")]


def swap_hook(
    model: TLModel,
    donors: Sequence[str],
    *,
    layer: int,
    site: str = "pre",
    position: int = -1,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> HookFn:
    """A TransformerLens hook that writes other texts' states: activation patching.

    The write of :func:`swap_activations`, for your own forward passes: each donor text
    is run alone now, and the hook writes its state at ``blocks.{layer}.hook_resid_{site}``
    (at the donor's last token) at ``position``; put the hook on that same hook point
    (``f"blocks.{layer}.hook_resid_{site}"``).

    Args:
        model: The TransformerLens model the donors run through (eval mode).
        donors: One text, written into every batch row, or one text per batch row.
        layer, site: The hook point whose states are taken (see :func:`teleport`).
        position: Token index in the batch that reaches the hook (see :func:`teleport_hook`).
        batch_size: Donors per forward pass.

    Returns:
        ``hook(activation, hook)``: the activation with the donors' states written in place.
    """
    layer, site = _check_point(model, layer, site)
    position = _check_position(position)
    batch_size = check_int(batch_size, "batch_size", 1)
    return teleport_hook(_donor_states(model, donors, layer, site, batch_size), position)


def inject_noise(
    model: TLModel,
    prompt: str = DEFAULT_PROMPT,
    *,
    layer: int,
    scale: float,
    n: int,
    seed: int = 0,
    site: str = "pre",
    position: int = -1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    pca: PCATrajectories | None = None,
) -> TeleportResult:
    """Kick the control's own state by random noise of a given relative size.

    Each of the ``n`` points is the control's residual stream at the injection plus an
    isotropic Gaussian direction rescaled to length ``scale * ||control state||``, so
    ``scale=0.1`` displaces every run by 10% of the stream's norm there. Runs and
    :meth:`~TeleportResult.recovery` are those of :func:`teleport`.

    Args:
        scale: Displacement relative to the norm of the control's state, > 0.
        n: Number of noisy runs, >= 1.
        seed: Seeds the noise directions.
        Others: See :func:`teleport`.

    Returns:
        A :class:`TeleportResult` whose ``points`` are the noisy states.
    """
    scale = _check_scale(scale)
    n = check_int(n, "n", 1)
    seed = check_int(seed, "seed", 0)
    setup = _Injection.check(model, prompt, layer, site, position)
    control = setup.run(None)
    points = _kick(control[0][0, setup.injection].expand(n, -1), scale, seed)
    return setup.run_points(points, batch_size, pca, progress=False, control=control)


def swap_activations(
    model: TLModel,
    prompt: str = DEFAULT_PROMPT,
    *,
    layer: int,
    donors: Sequence[str],
    site: str = "pre",
    position: int = -1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    pca: PCATrajectories | None = None,
) -> TeleportResult:
    """Write the states other texts have at the same point into the prompt's run.

    Each donor text is run alone (:func:`~tl_dynamics.collect`); its residual stream at
    ``blocks.{layer}.hook_resid_{site}`` at its last token replaces the prompt's at
    ``position``, one run per donor. Do the later layers carry the donor's state on, or
    return to the prompt's own path?

    Args:
        donors: Texts whose states are swapped in.
        Others: See :func:`teleport`.

    Returns:
        A :class:`TeleportResult` whose ``points`` are the donors' states.
    """
    setup = _Injection.check(model, prompt, layer, site, position)
    batch_size = check_int(batch_size, "batch_size", 1)
    donated = _donor_states(model, donors, setup.layer, setup.site, batch_size)
    return setup.run_points(donated, batch_size, pca, progress=False)
