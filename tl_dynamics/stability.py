"""Local stability over depth: singular values of the Jacobian between two sublayers.

The paper reads "attractor-like" dynamics off teleports in a 2-D PCA plane (Fig 4D). A
direct local test asks how the map from the residual stream at one sublayer to a later
one, ``F: x_start -> x_stop`` (one token position; every other position's state at
``start`` held fixed), stretches small perturbations: its Jacobian ``J = dF/dx`` at the
unperturbed run. Singular values ``sigma_i < 1`` shrink a kick along the matching
direction, ``> 1`` grow it. Over ``n = stop - start`` sublayer steps the *finite-time
Lyapunov exponents* are ``log(sigma_i) / n`` nats per step (negative: contracting).

The residual stream's norm grows with depth (by 100x or more in Gemma-3), so even
an exact copy of every state would "expand" kicks in absolute units. The *normalised*
singular values ``sigma_i * ||x_start|| / ||x_stop||`` measure the growth of a kick
relative to the state's own growth: below 1, nearby states converge relative to the
state, which is what an attractor means for a stream whose scale drifts. But a few
*massive* units hold most of ``||x||^2`` (67-70 % in MiniLM's three), so that ratio
follows them, not the stream. The *robust* normalisation divides by the growth of the
median ``|x_i|`` over units instead, ``sigma_i * median|x_start| / median|x_stop|``
(a pure rescaling ``x -> c x`` gives 1 in every direction under either), which a few
massive units cannot move.

The whole spectrum (``k = d_model``: then ``J`` is formed from ``d_model`` reverse-mode
rows and its SVD is exact) answers what the top few cannot: how many directions expand
(:attr:`JacobianSpectrum.n_expanding`, ``sigma > 1``) and how volume changes
(:attr:`JacobianSpectrum.log_volume`, ``sum log sigma_i``), the latter only over
singular values above :data:`NULL_FLOOR` times the largest: a LayerNorm'd map has null
directions at rounding level (MiniLM's two at 1e-9 and 4e-9) whose logs are noise.
:func:`jacobian_sweep` measures them layer by layer over several prompts and positions
(:data:`DEFAULT_PROMPTS`) and gives intervals over prompts; :func:`kick_growth` checks
them causally: finite random kicks propagated through the model grow by the root mean
square of the singular values, as the linearisation predicts.

``J`` is never formed. A randomised block Krylov SVD (Halko, Martinsson & Tropp 2011,
algorithms 4.4 and 5.1, keeping every iterate as Musco & Musco 2015 do: a Gaussian
sketch, ``n_iter`` rounds of subspace iteration, an SVD of ``J`` projected on all the
iterates) needs only products ``J V`` and ``J^T U`` with blocks of ``k + oversample``
vectors. Residual maps are close to the identity plus a low-rank update, so their
spectra are flat; keeping the iterates matters there: on MiniLM the top 10 singular
values agree with the dense Jacobian's to 3e-5 (relative) with the defaults, against
2e-2 for plain subspace iteration with the same products. ``J V`` is a forward-mode product (``torch.autograd.forward_ad``
dual numbers written into the stream), ``J^T U`` a reverse-mode one
(``torch.autograd.grad``); each block is one batched forward pass of the prompt with one
row per vector, so the cost does not grow with ``d_model`` beyond the forward pass
itself. The value is written and read through TransformerLens hooks, as teleports write
it (:mod:`tl_dynamics.interventions`); parameters are frozen during the passes, as
TransformerLens 4's ``tools/analysis/jacobian_lens.py`` does, which also gives the
convention ``J[i, j] = d x_stop[i] / d x_start[j]`` (rows: outputs).

:func:`map_spectrum` does the same for any batched differentiable map, so the method
can be checked on maps whose Jacobian is known. :func:`jacobian_sweep` repeats the
measure layer by layer.

Example::

    import tl_dynamics as tld

    model = tld.models.load_model()                       # SmolLM2-135M, 30 layers
    spectrum = tld.jacobian_spectrum(model, tld.DEFAULT_PROMPT, 20, 26, k=10)
    spectrum.lyapunov, spectrum.normalised_lyapunov      # nats per sublayer step
    full = tld.jacobian_spectrum(model, start=20, stop=22, k=model.cfg.d_model)
    full.n_expanding, full.log_volume                     # directions, nats
    tld.jacobian_sweep(model, layers=[5, 15], k=model.cfg.d_model).to_frame()
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.autograd.forward_ad as forward_ad
from jaxtyping import Float
from scipy.stats import t as student_t
from torch import Tensor
from tqdm.auto import tqdm

from tl_dynamics._batching import prompt_tokens
from tl_dynamics._checks import check_int
from tl_dynamics._repr import compact_repr
from tl_dynamics.errors import DynamicsInputError
from tl_dynamics.hooks import StopForward, TLModel, check_model, model_name, trajectory_hooks
from tl_dynamics.interventions import DEFAULT_PROMPT, DEFAULT_PROMPTS, teleport_hook

__all__ = [
    "DEFAULT_K",
    "DEFAULT_OVERSAMPLE",
    "DEFAULT_ITERATIONS",
    "SVD_DTYPE",
    "NULL_FLOOR",
    "CONFIDENCE",
    "DEFAULT_PROMPTS",
    "DEFAULT_POSITIONS",
    "map_spectrum",
    "JacobianSpectrum",
    "jacobian_spectrum",
    "JacobianSweep",
    "jacobian_sweep",
    "kick_growth",
]

DEFAULT_K = 10  # singular values kept
# Halko, Martinsson & Tropp (2011) section 4.2: 5-10 extra sketch vectors make failure
# negligible. 6 block Krylov rounds: relative error of the top 10 singular values on
# MiniLM's sublayer maps 0-2, 4-6, 10-12 below 3e-5 (4 rounds: 2e-3) against the dense
# Jacobian.
DEFAULT_OVERSAMPLE = 10
DEFAULT_ITERATIONS = 6
SVD_DTYPE = torch.float64  # the sketches and the small SVD, whatever the model's dtype
# Singular values below this fraction of the largest are null directions: float32
# products carry relative rounding ~1e-7, and MiniLM's post-LayerNorm maps have two
# singular values at 1e-9 and 4e-9 of ~1.
NULL_FLOOR = 1e-6
CONFIDENCE = 0.95  # Student t interval over prompts
# The paper's line and seven more prompts of other kinds (prose, code, a list, a
# question, dialogue, numbers, a definition): a Jacobian at one prompt is one sample.
DEFAULT_POSITIONS = (-1, -3)  # the last token and one two before it

Map = Callable[[Float[Tensor, "row d_in"]], Float[Tensor, "row d_out"]]


# ----------------------------------------------------------------- matrix-free SVD


def _jvp(fn: Map, x: Float[Tensor, " d_in"], vectors: Float[Tensor, "row d_in"]) -> Tensor:
    """``J v`` for each row ``v``: one forward-mode pass of a batch of copies of ``x``."""
    with forward_ad.dual_level():
        dual = forward_ad.make_dual(x.expand(len(vectors), -1).clone(), vectors.to(x.dtype))
        return forward_ad.unpack_dual(fn(dual)).tangent.to(SVD_DTYPE)


def _vjp(fn: Map, x: Float[Tensor, " d_in"], covectors: Float[Tensor, "row d_out"]) -> Tensor:
    """``J^T u`` for each row ``u``: one reverse-mode pass of a batch of copies of ``x``."""
    rows = x.expand(len(covectors), -1).clone().requires_grad_(True)
    with torch.enable_grad():
        output = fn(rows)
        (grad,) = torch.autograd.grad(output, rows, covectors.to(output.dtype))
    return grad.to(SVD_DTYPE)


def _orthonormal(columns: Float[Tensor, "dim m"]) -> Float[Tensor, "dim m"]:
    return torch.linalg.qr(columns).Q


def map_spectrum(
    fn: Map,
    x: Float[Tensor, " d_in"],
    k: int = DEFAULT_K,
    *,
    oversample: int = DEFAULT_OVERSAMPLE,
    n_iter: int = DEFAULT_ITERATIONS,
    seed: int = 0,
) -> tuple[Float[Tensor, " k"], Float[Tensor, "d_out k"], Float[Tensor, "d_in k"]]:
    """Top-``k`` singular triplets of the Jacobian of ``fn`` at ``x``, matrix-free.

    Args:
        fn: A differentiable map applied row by row: ``[row, d_in] -> [row, d_out]``
            (rows must not interact); it must accept forward-mode dual tensors.
        x: The point, ``[d_in]``.
        k: Singular values wanted, at most ``min(d_in, d_out)``.
        oversample: Extra sketch vectors (the sketch has ``min(k + oversample, d_in,
            d_out)`` columns).
        n_iter: Rounds of block Krylov iteration, each one forward- and one
            reverse-mode block; a last reverse-mode block of up to ``(n_iter + 1) *
            (k + oversample)`` rows projects ``J``.
        seed: Seeds the Gaussian sketch.

    Returns:
        ``(singular_values [k], left [d_out, k], right [d_in, k])``, float64 CPU, singular
        values descending, ``J right[:, i] = singular_values[i] * left[:, i]``.
    """
    n_iter = check_int(n_iter, "n_iter", 0)
    oversample = check_int(oversample, "oversample", 0)
    seed = check_int(seed, "seed", 0)
    d_in = x.shape[-1]
    d_out = fn(x.detach()[None]).shape[-1]
    k = check_int(k, "k", 1, min(d_in, d_out), f" (the map is {d_out} x {d_in})")
    width = min(k + oversample, d_in, d_out)
    x = x.detach()
    if width == min(d_in, d_out):  # the whole spectrum: form J from d_out rows, exactly
        identity = torch.eye(d_out, dtype=SVD_DTYPE, device=x.device)
        left, values, right_t = torch.linalg.svd(_vjp(fn, x, identity).cpu(), full_matrices=False)
        return values[:k], left[:, :k], right_t[:k].T
    generator = torch.Generator().manual_seed(seed)
    sketch = torch.randn(d_in, width, generator=generator, dtype=SVD_DTYPE)
    block = _orthonormal(_jvp(fn, x, sketch.T.to(x.device)).T.cpu())  # J sketch: [d_out, m]
    blocks = [block]
    for _ in range(n_iter):
        row_space = _orthonormal(_vjp(fn, x, block.T.to(x.device)).T.cpu())
        block = _orthonormal(_jvp(fn, x, row_space.T.to(x.device)).T.cpu())
        blocks.append(block)
    # Block Krylov (Musco & Musco 2015): keep every iterate, not only the last one.
    basis = _orthonormal(torch.cat(blocks, dim=1)[:, : min(d_out, d_in)])
    projected = _vjp(fn, x, basis.T.to(x.device)).cpu()  # B = Q^T J: [m, d_in]
    left, values, right_t = torch.linalg.svd(projected, full_matrices=False)
    return values[:k], (basis @ left)[:, :k], right_t[:k].T


# ------------------------------------------------------------------ on a model


@contextmanager
def _frozen_parameters(model: TLModel):
    """Parameters stop requiring gradients (the graph then starts at the written state)."""
    saved = [(param, param.requires_grad) for param in model.parameters()]
    for param, _ in saved:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param, flag in saved:
            param.requires_grad_(flag)


@dataclass(frozen=True)
class _SublayerMap:
    """The map from the stream at sublayer ``start`` to ``stop`` at one token position."""

    model: TLModel
    tokens: Tensor
    start_hook: str
    stop_hook: str
    position: int

    def state(self, hook: str) -> Float[Tensor, " d_model"]:
        """The unperturbed residual stream at ``hook`` and the position."""
        return self._run(hook, None)[0]

    def __call__(self, x: Float[Tensor, "row d_model"]) -> Float[Tensor, "row d_model"]:
        return self._run(self.stop_hook, x)

    def _run(self, read: str, x: Tensor | None) -> Tensor:
        """One pass of ``len(x)`` copies of the prompt, ``x`` written at ``start_hook``
        (nothing written for ``None``), the stream at ``read`` and the position returned."""
        rows = 1 if x is None else len(x)
        captured = []

        def read_hook(activation: Tensor, hook: Any) -> None:
            captured.append(activation[:, self.position])
            raise StopForward

        hooks = [(read, read_hook)]
        if x is not None:
            hooks.insert(0, (self.start_hook, teleport_hook(x, self.position)))
        device = getattr(self.model.cfg, "device", None) or "cpu"
        try:
            self.model.run_with_hooks(
                self.tokens.expand(rows, -1).to(device), fwd_hooks=hooks, return_type=None
            )
        except StopForward:
            pass
        return captured[0]


@dataclass(frozen=True)
class JacobianSpectrum:
    """Top singular values of the Jacobian from sublayer ``start`` to ``stop``.

    Attributes:
        model_name: The model's name.
        prompt: The prompt.
        position: Token index (0-based, BOS included) perturbed and read.
        start, stop: Sublayer indices (into a DynamicsCache's sublayer axis; ``2L`` is
            ``final_post``) of the map's input and output.
        start_label, stop_label: Their labels, e.g. ``"3_pre"``.
        singular_values: ``[k]`` descending, output units per input unit (both
            residual-stream units).
        left_vectors: ``[d_model, k]`` unit output directions at ``stop``.
        right_vectors: ``[d_model, k]`` unit input directions at ``start``.
        lyapunov: ``[k]`` finite-time Lyapunov exponents ``log(sigma) / (stop - start)``,
            nats per sublayer step (negative: contracting).
        start_norm, stop_norm: ``||x_start||``, ``||x_stop||`` of the unperturbed run.
        normalised_singular_values: ``[k]`` ``sigma * start_norm / stop_norm``: a kick's
            growth relative to the state's (below 1: converging relative to the state).
        normalised_lyapunov: ``[k]`` ``log(normalised_singular_values) / (stop - start)``,
            nats per sublayer step.
        start_median, stop_median: median ``|x_i|`` over units of the unperturbed states,
            the robust scale (module docstring).

    The counts and volumes below are over the ``k`` singular values kept: they describe
    the map only with the whole spectrum (``k = d_model``, :attr:`complete`).
    """

    __repr__ = compact_repr

    model_name: str
    prompt: str
    position: int
    start: int
    stop: int
    start_label: str
    stop_label: str
    singular_values: Float[Tensor, " k"]
    left_vectors: Float[Tensor, "d_model k"]
    right_vectors: Float[Tensor, "d_model k"]
    lyapunov: Float[Tensor, " k"]
    start_norm: float
    stop_norm: float
    normalised_singular_values: Float[Tensor, " k"]
    normalised_lyapunov: Float[Tensor, " k"]
    start_median: float
    stop_median: float

    @property
    def steps(self) -> int:
        """Sublayer steps from ``start`` to ``stop``."""
        return self.stop - self.start

    @property
    def complete(self) -> bool:
        """Whether every singular value was kept (``k = d_model``)."""
        return len(self.singular_values) == len(self.right_vectors)

    @property
    def robust_singular_values(self) -> Float[Tensor, " k"]:
        """``sigma * start_median / stop_median``: growth relative to the median unit's."""
        return self.singular_values * self.start_median / self.stop_median

    @property
    def n_null(self) -> int:
        """Singular values below :data:`NULL_FLOOR` times the largest (null directions)."""
        return int((self.singular_values < NULL_FLOOR * self.singular_values[0]).sum())

    @property
    def n_expanding(self) -> int:
        """Directions a kick grows along, in residual-stream units (``sigma > 1``)."""
        return int((self.singular_values > 1).sum())

    @property
    def n_expanding_robust(self) -> int:
        """Directions a kick grows along faster than the median unit (robust ``> 1``)."""
        return int((self.robust_singular_values > 1).sum())

    @property
    def log_volume(self) -> float:
        """``sum log sigma_i`` over the singular values above the null floor: the log of
        the factor by which the map changes volume in those directions (nats)."""
        kept = self.singular_values[: len(self.singular_values) - self.n_null]
        return float(kept.log().sum())

    @property
    def log_volume_robust(self) -> float:
        """:attr:`log_volume` with each direction's growth taken relative to the median
        unit's (nats): negative where the map shrinks volume beyond a rescaling."""
        kept = len(self.singular_values) - self.n_null
        return self.log_volume - kept * math.log(self.stop_median / self.start_median)

    def to_frame(self) -> pd.DataFrame:
        """One row per singular value: ``rank``, ``start``/``stop`` labels,
        ``singular_value``, ``lyapunov``, ``normalised_singular_value``,
        ``normalised_lyapunov``."""
        return pd.DataFrame(
            {
                "rank": range(len(self.singular_values)),
                "start": self.start_label,
                "stop": self.stop_label,
                "singular_value": self.singular_values.numpy(),
                "lyapunov": self.lyapunov.numpy(),
                "normalised_singular_value": self.normalised_singular_values.numpy(),
                "normalised_lyapunov": self.normalised_lyapunov.numpy(),
            }
        )


def _sublayer_map(model: TLModel, prompt: Any, start: Any, stop: Any, position: Any):
    """Validated ``(map, hooks)`` for :func:`jacobian_spectrum`."""
    check_model(model, require_eval=True)
    hooks = trajectory_hooks(model, include_final=True)
    last = len(hooks) - 1
    start = check_int(start, "start", 0, last - 1, f" (sublayer index; {model_name(model)!r} "
                       f"has sublayers 0..{last}, {last} being final_post)")
    stop = check_int(stop, "stop", start + 1, last, f" (a later sublayer than start={start})")
    tokens = prompt_tokens(model, prompt)
    n_tokens = len(tokens)
    position = check_int(position, "position", -n_tokens, n_tokens - 1,
                          f" (the prompt has {n_tokens} tokens)") % n_tokens
    sublayer_map = _SublayerMap(model, tokens[None], hooks[start].name, hooks[stop].name, position)
    return sublayer_map, hooks, start, stop


def jacobian_spectrum(
    model: TLModel,
    prompt: str = DEFAULT_PROMPT,
    start: int = 0,
    stop: int = 1,
    *,
    k: int = DEFAULT_K,
    position: int = -1,
    oversample: int = DEFAULT_OVERSAMPLE,
    n_iter: int = DEFAULT_ITERATIONS,
    seed: int = 0,
) -> JacobianSpectrum:
    """Top-``k`` singular values of ``d x_stop / d x_start`` at one position (module docstring).

    Args:
        model: A TransformerLens model in eval mode.
        prompt: The text to run; the paper's HAL 9000 line by default.
        start, stop: Sublayer indices, ``0 <= start < stop <= 2L`` (``2L``: final_post),
            as on a DynamicsCache's sublayer axis.
        k: Singular values to keep.
        position: Token index written and read; negative counts from the end.
        oversample, n_iter, seed: The randomised SVD (see :func:`map_spectrum`).

    Returns:
        A :class:`JacobianSpectrum` of float64 CPU tensors. Products run in the model's
        dtype on its device.

    Raises:
        TypeError, ValueError: not a TransformerLens model, a model in training mode, an
            empty prompt, or ``start``, ``stop``, ``position``, ``k`` out of range.
    """
    sublayer_map, hooks, start, stop = _sublayer_map(model, prompt, start, stop, position)
    with _frozen_parameters(model), torch.no_grad():
        x_start = sublayer_map.state(hooks[start].name)
        x_stop = sublayer_map.state(hooks[stop].name)
    with _frozen_parameters(model):
        values, left, right = map_spectrum(
            sublayer_map, x_start, k, oversample=oversample, n_iter=n_iter, seed=seed
        )
    start_norm, stop_norm = float(x_start.double().norm()), float(x_stop.double().norm())
    normalised = values * start_norm / stop_norm
    steps = stop - start
    return JacobianSpectrum(
        model_name=model_name(model),
        prompt=prompt,
        position=sublayer_map.position,
        start=start,
        stop=stop,
        start_label=hooks[start].label,
        stop_label=hooks[stop].label,
        singular_values=values,
        left_vectors=left,
        right_vectors=right,
        lyapunov=values.log() / steps,
        start_norm=start_norm,
        stop_norm=stop_norm,
        normalised_singular_values=normalised,
        normalised_lyapunov=normalised.log() / steps,
        start_median=float(x_start.double().abs().median()),
        stop_median=float(x_stop.double().abs().median()),
    )


# Per-layer quantities of a sweep's frame, each with an interval over prompts.
_SWEEP_MEASURES = {
    "top_singular_value": lambda s: float(s.singular_values[0]),
    "top_lyapunov": lambda s: float(s.lyapunov[0]),
    "top_normalised_singular_value": lambda s: float(s.normalised_singular_values[0]),
    "top_normalised_lyapunov": lambda s: float(s.normalised_lyapunov[0]),
    "top_robust_singular_value": lambda s: float(s.robust_singular_values[0]),
    "mean_lyapunov": lambda s: float(s.lyapunov.mean()),
    "mean_normalised_lyapunov": lambda s: float(s.normalised_lyapunov.mean()),
    "n_expanding": lambda s: float(s.n_expanding),
    "n_expanding_robust": lambda s: float(s.n_expanding_robust),
    "log_volume": lambda s: s.log_volume,
    "log_volume_robust": lambda s: s.log_volume_robust,
}


def _t_interval(values: np.ndarray) -> tuple[float, float]:
    """Student t :data:`CONFIDENCE` interval of the mean of ``values`` (NaN below two)."""
    if len(values) < 2:
        return (math.nan, math.nan)
    half = student_t.ppf((1 + CONFIDENCE) / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return (float(values.mean() - half), float(values.mean() + half))


@dataclass(frozen=True)
class JacobianSweep:
    """Jacobian spectra from the input of each layer (Fig 4D's question, locally), at
    several prompts and positions.

    Attributes:
        spectra: One :class:`JacobianSpectrum` per (layer, prompt, position), layer by
            layer, then prompt by prompt.
        prompts: The prompts, the sweep's independent samples.
        positions: Token positions measured in each prompt (negative: from the end).
    """

    __repr__ = compact_repr

    spectra: tuple[JacobianSpectrum, ...]
    prompts: tuple[str, ...] = (DEFAULT_PROMPT,)
    positions: tuple[int, ...] = (-1,)

    def spectra_frame(self) -> pd.DataFrame:
        """One row per spectrum: ``layer``, ``prompt`` (its index), ``position``, and each
        per-layer measure of :meth:`to_frame`."""
        return pd.DataFrame(
            [
                {"layer": s.start // 2, "prompt": self.prompts.index(s.prompt), "position": s.position}
                | {name: measure(s) for name, measure in _SWEEP_MEASURES.items()}
                for s in self.spectra
            ]
        )

    def to_frame(self) -> pd.DataFrame:
        """One row per layer: ``layer``, ``start``, ``stop`` (labels), ``steps``,
        ``n_prompts`` and, for every measure (``top_singular_value``, ``top_lyapunov``,
        ``top_normalised_singular_value``, ``top_normalised_lyapunov``,
        ``top_robust_singular_value``, ``mean_lyapunov``, ``mean_normalised_lyapunov``,
        ``n_expanding``, ``n_expanding_robust``, ``log_volume``, ``log_volume_robust``),
        its mean over prompts (each prompt's positions averaged first) and a Student t
        95 % interval over prompts in ``<measure>_ci_low`` / ``_ci_high`` (NaN with one
        prompt). Counts and volumes need the whole spectrum (``k = d_model``)."""
        per_spectrum = self.spectra_frame()
        per_prompt = per_spectrum.groupby(["layer", "prompt"], sort=False).mean(numeric_only=True)
        rows = []
        for layer, group in per_prompt.groupby(level="layer", sort=False):
            first = next(s for s in self.spectra if s.start // 2 == layer)
            row: dict[str, Any] = {
                "layer": layer, "start": first.start_label, "stop": first.stop_label,
                "steps": first.steps, "n_prompts": len(group),
            }
            for name in _SWEEP_MEASURES:
                values = group[name].to_numpy()
                low, high = _t_interval(values)
                row |= {name: float(values.mean()), f"{name}_ci_low": low, f"{name}_ci_high": high}
            rows.append(row)
        return pd.DataFrame(rows)


def jacobian_sweep(
    model: TLModel,
    prompt: str | Sequence[str] = DEFAULT_PROMPT,
    *,
    layers: Sequence[int] | None = None,
    to_end: bool = False,
    k: int = DEFAULT_K,
    positions: Sequence[int] = (-1,),
    seed: int = 0,
    progress: bool = True,
) -> JacobianSweep:
    """:func:`jacobian_spectrum` from the input (``resid_pre``) of each layer, at every
    prompt and position.

    Each map runs from sublayer ``2 l`` to the next layer's input ``2 l + 2`` (the last
    layer: to ``final_post``), or with ``to_end`` to the last block's ``resid_mid``
    (sublayer ``2 L - 1``, the last sublayer a teleport at layer ``l`` is followed to, so
    both measure the same span). ``layers``: all by default. ``prompt``: one prompt or
    several (:data:`DEFAULT_PROMPTS` for the sweep the report uses); ``positions``: token
    indices measured in each. ``k = model.cfg.d_model`` gives the whole spectrum, which
    the counts and volumes of :meth:`JacobianSweep.to_frame` need.

    Returns:
        A :class:`JacobianSweep`.
    """
    check_model(model)
    n_layers = int(model.cfg.n_layers)
    layers = range(n_layers) if layers is None else layers
    layers = [check_int(layer, "layers", 0, n_layers - 1) for layer in layers]
    prompts = (prompt,) if isinstance(prompt, str) else tuple(prompt)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise DynamicsInputError(f"prompt must be a string or a non-empty sequence of strings; got {prompt!r}")
    positions = tuple(positions)
    if not positions:
        raise DynamicsInputError(f"positions must name at least one token index; got {positions!r}")
    for index, text in enumerate(prompts):  # every position in every prompt, before any work
        n_tokens = len(prompt_tokens(model, text))
        for position in positions:
            check_int(position, "positions", -n_tokens, n_tokens - 1,
                      f" (prompt {index} has {n_tokens} tokens)")
    jobs = [(layer, p, position) for layer in layers for p in prompts for position in positions]
    spectra = [
        jacobian_spectrum(model, p, 2 * layer, 2 * n_layers - 1 if to_end else 2 * layer + 2,
                          k=k, position=position, seed=seed)
        for layer, p, position in tqdm(jobs, desc="jacobian", unit="map", disable=not progress)
    ]
    return JacobianSweep(tuple(spectra), prompts, positions)


def kick_growth(
    model: TLModel,
    prompt: str = DEFAULT_PROMPT,
    start: int = 0,
    stop: int = 1,
    *,
    position: int = -1,
    n_kicks: int = 64,
    scale: float = 1e-3,
    seed: int = 0,
) -> Float[Tensor, " kick"]:
    """How much finite random kicks grow from sublayer ``start`` to ``stop`` (a causal check).

    Each kick is a Gaussian direction ``u`` scaled to ``scale * ||x_start||``, written at
    ``start`` (as a teleport writes) and propagated through the model; its growth is
    ``||F(x + u) - F(x)|| / ||u||``. For small kicks the linearisation predicts a mean
    squared growth of ``mean(sigma_i^2)`` over the whole spectrum (an isotropic ``u``
    sees every singular direction equally), so the root mean square of the returned
    ratios should match ``sigma.square().mean().sqrt()`` of :func:`jacobian_spectrum`
    with ``k = d_model`` (tests).

    Returns:
        ``[n_kicks]`` float64 growth ratios (output units per input unit), CPU.
    """
    sublayer_map, hooks, start, stop = _sublayer_map(model, prompt, start, stop, position)
    n_kicks = check_int(n_kicks, "n_kicks", 1)
    seed = check_int(seed, "seed", 0)
    if not (isinstance(scale, (int, float)) and 0 < scale < 1):
        raise DynamicsInputError(f"scale must be a number in (0, 1); got {scale!r}")
    with _frozen_parameters(model), torch.no_grad():
        x_start = sublayer_map.state(hooks[start].name)
        base = sublayer_map(x_start[None]).double()
        generator = torch.Generator().manual_seed(seed)
        kicks = torch.randn(n_kicks, x_start.shape[-1], generator=generator, dtype=SVD_DTYPE)
        kicks = kicks / kicks.norm(dim=-1, keepdim=True) * scale * float(x_start.double().norm())
        moved = sublayer_map((x_start.double() + kicks.to(x_start.device)).to(x_start.dtype)).double()
    applied = (x_start.double() + kicks.to(x_start.device)).to(x_start.dtype).double() - x_start.double()
    return ((moved - base).norm(dim=-1) / applied.norm(dim=-1)).cpu()
