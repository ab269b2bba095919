"""Which TransformerLens hook points make up the residual-stream trajectory.

A transformer's residual stream is written to additively, first by the attention
sub-block and then by the MLP sub-block of every layer. Reading it *before* each of
them gives the paper's 2L "sublayers" (Fernando & Guitchounts 2025, section 2.1):

    blocks.0.hook_resid_pre  -> "0_pre"   input to attention of layer 0
    blocks.0.hook_resid_mid  -> "0_mid"   input to the MLP of layer 0
    blocks.1.hook_resid_pre  -> "1_pre"   ...

optionally followed by the last block's ``hook_resid_post`` ("final_post"). These are
TransformerLens's own names and labels (``ActivationCache.accumulated_resid``), shared by
``TransformerBridge`` (TransformerLens 3.x, 4.x) and 3.x's ``HookedTransformer``: this module
only needs a model with ``cfg.n_layers`` and a ``hook_dict``.

Models with parallel attention and MLP (GPT-NeoX/Pythia, GPT-J) read the same input in
both sub-blocks, so they have no ``hook_resid_mid``; collect them with ``sites=("pre",)``.

The paper reads the stream *before* each block's norm, which is where these hooks sit in
pre-LayerNorm decoders (Llama, Gemma, GPT-2). Post-LayerNorm encoders such as BERT
normalise *after* each residual addition, so what TransformerLens's bridge exposes as
``resid_pre``/``resid_mid`` there is a differently normalised stream: compare such a
model's within- and cross-layer transitions with the paper's with that in mind.

A ``DynamicsCache``'s sublayer axis follows the same order, so :func:`sublayer_hook_name`
turns an index on that axis (or its label) back into the hook point, e.g. to place an
intervention of your own where a trajectory changes.

Example::

    from tl_dynamics.hooks import sublayer_hook_name, trajectory_hooks
    hooks = trajectory_hooks(model)             # model: a TransformerBridge or HookedTransformer
    [h.label for h in hooks][:3]                # ['0_pre', '0_mid', '1_pre']
    sublayer_hook_name(model, 3)                # 'blocks.1.hook_resid_mid'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from tl_dynamics.errors import DynamicsInputError, InputTypeError
from tl_dynamics.labels import FINAL_LABEL

__all__ = [
    "SITES",
    "VALID_SITES",
    "TLModel",
    "StopForward",
    "TrajectoryHook",
    "model_name",
    "check_model",
    "validate_sites",
    "trajectory_hooks",
]

SITES = ("pre", "mid")
"""Residual-stream read points inside a block, in the order the stream passes them."""

VALID_SITES = (("pre", "mid"), ("pre",))
"""Site sets whose trajectories are residual streams read at successive points in depth
(``("mid",)`` alone would skip every attention sub-block's input)."""


@runtime_checkable
class TLModel(Protocol):
    """What tl-dynamics needs of a model: a TransformerLens ``TransformerBridge`` (TL 3.x,
    4.x) or ``HookedTransformer`` (TL 3.x), or anything else with these members.

    Attributes:
        cfg: The model's config; ``cfg.n_layers`` is its number of blocks.
        hook_dict: Hook points by name, e.g. ``"blocks.0.hook_resid_pre"``.

    :func:`check_model` refuses a model without them, naming what is missing.
    """

    cfg: Any
    hook_dict: dict[str, Any]

    def to_tokens(self, *args: Any, **kwargs: Any) -> Any:
        """Token ids of a text or a batch of texts."""

    def run_with_hooks(self, *args: Any, **kwargs: Any) -> Any:
        """A forward pass with forward hooks attached by hook-point name."""


class StopForward(Exception):
    """Raised by the last hook a run needs, and caught around the forward pass, to skip
    the layers after it."""


@dataclass(frozen=True)
class TrajectoryHook:
    """One hook point of the trajectory.

    Attributes:
        name: TransformerLens hook name, e.g. ``"blocks.3.hook_resid_mid"``.
        label: ``accumulated_resid`` label, e.g. ``"3_mid"`` or ``"final_post"``.
        layer: Block index the hook belongs to.
    """

    name: str
    label: str
    layer: int


def model_name(model: Any) -> str:
    """A readable name for ``model``: its config's ``model_name`` or its class name."""
    cfg = getattr(model, "cfg", None)
    return str(getattr(cfg, "model_name", None) or type(model).__name__)


def check_model(model: Any) -> None:
    """Raise ``TypeError`` unless ``model`` looks like a TransformerLens model.

    Duck-typed: a ``TransformerBridge`` (TL 3, 4) or ``HookedTransformer`` (TL 3) has a
    ``cfg`` with ``n_layers``, a ``hook_dict`` of hook points, ``to_tokens`` and
    ``run_with_hooks``.
    """
    missing = [
        attr
        for attr in ("cfg", "hook_dict", "to_tokens", "run_with_hooks")
        if not hasattr(model, attr)
    ]
    if missing or not hasattr(model.cfg, "n_layers"):
        raise InputTypeError(
            f"model must be a TransformerLens model (TransformerBridge or HookedTransformer); "
            f"got {type(model).__name__} without {', '.join(missing) or 'cfg.n_layers'}. "
            "Load one with transformer_lens.model_bridge.TransformerBridge.boot_transformers(...)."
        )


def validate_sites(sites: Sequence[str]) -> tuple[str, ...]:
    """Return ``sites`` as a tuple in stream order, or raise ``ValueError``."""
    if isinstance(sites, str):
        sites = (sites,)
    ordered = tuple(s for s in SITES if s in sites)
    if ordered not in VALID_SITES or len(set(sites)) != len(tuple(sites)):
        raise DynamicsInputError(
            f"sites must be ('pre', 'mid') (the paper's 2L sublayers) or ('pre',) (one point "
            f"per layer); got {tuple(sites)!r}"
        )
    return ordered


def trajectory_hooks(
    model: TLModel, sites: Sequence[str] = SITES, include_final: bool = False
) -> list[TrajectoryHook]:
    """The hook points to read, in depth order.

    Returns a list of ``n_layers * len(sites)`` hooks (plus ``final_post`` when
    ``include_final``), labelled as TransformerLens's ``accumulated_resid`` labels them.
    Raises ``ValueError`` naming the model when it lacks a requested hook, e.g.
    ``hook_resid_mid`` on a parallel-attention model.
    """
    check_model(model)
    sites = validate_sites(sites)
    n_layers = int(model.cfg.n_layers)
    hooks = [
        TrajectoryHook(f"blocks.{layer}.hook_resid_{site}", f"{layer}_{site}", layer)
        for layer in range(n_layers)
        for site in sites
    ]
    if include_final:
        hooks.append(
            TrajectoryHook(f"blocks.{n_layers - 1}.hook_resid_post", FINAL_LABEL, n_layers - 1)
        )
    missing = [h.name for h in hooks if h.name not in model.hook_dict]
    if missing:
        parallel = bool(getattr(model.cfg, "parallel_attn_mlp", False))
        hint = (
            " It computes attention and MLP in parallel (GPT-NeoX/Pythia, GPT-J style), so "
            "there is no residual stream between them: pass sites=('pre',)."
            if parallel and all("resid_mid" in name for name in missing)
            else ""
        )
        raise DynamicsInputError(
            f"model {model_name(model)!r} has no hook point {missing[0]!r}"
            f" ({len(missing)} of the {len(hooks)} needed are missing).{hint}"
        )
    return hooks


def sublayer_hook_name(model: Any, sublayer: int | str, sites: Sequence[str] = SITES) -> str:
    """The TransformerLens hook point of one sublayer of a trajectory.

    Args:
        model: A TransformerLens model.
        sublayer: An index on a :class:`~tl_dynamics.cache.DynamicsCache`'s sublayer axis
            (``0`` is ``"0_pre"``; ``n_layers * len(sites)``, one past the last block's
            sublayers, is ``"final_post"``), or a label such as ``"3_mid"``.
        sites: The sites the trajectory was read at (``dyn.metadata.sites``).

    Returns:
        The hook name, e.g. ``"blocks.1.hook_resid_mid"`` for sublayer 3 of the paper's 2L.

    Raises:
        ValueError: an index out of range, or a label the trajectory does not have.
    """
    hooks = trajectory_hooks(model, sites, include_final=True)
    if isinstance(sublayer, str):
        by_label = {hook.label: hook.name for hook in hooks}
        if sublayer not in by_label:
            raise DynamicsInputError(
                f"sublayer {sublayer!r} is no label of this trajectory; expected one of "
                f"{hooks[0].label!r} ... {hooks[-1].label!r}"
            )
        return by_label[sublayer]
    in_range = isinstance(sublayer, int) and 0 <= sublayer < len(hooks)
    if isinstance(sublayer, bool) or not in_range:
        raise DynamicsInputError(
            f"sublayer must be an int in [0, {len(hooks) - 1}] (index {len(hooks) - 1} is "
            f"{FINAL_LABEL!r}) or a label such as '0_pre'; got {sublayer!r}"
        )
    return hooks[sublayer].name
