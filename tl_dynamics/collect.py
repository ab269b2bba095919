"""Run a model over texts and keep the residual-stream trajectory of chosen tokens.

For every text the model reads, the residual stream at a token position is a point in
``d_model``-dimensional space before each attention and each MLP sub-block: 2L points
that trace the token's trajectory over depth (Fernando & Guitchounts 2025, section 2.1).
:func:`collect` records those trajectories for many texts at once:

* texts are tokenized one by one with the model's own ``to_tokens`` (BOS as the model
  prepends it), optionally shuffled after BOS (the paper's control), sorted by length and
  batched with right padding *and* an attention mask, so a padded batch gives the same
  vectors as running each text alone (an encoder such as BERT attends to padding
  otherwise, and a causal model only hides the mistake);
* hooks on ``blocks.{l}.hook_resid_pre`` / ``hook_resid_mid`` copy only the kept
  positions (by default the last *real* token of each text), so memory is
  ``samples x 2L x d_model``, and the forward pass stops at the last hook it needs;
* results are float32 on CPU whatever the model's dtype, and non-finite values (fp16
  overflow) are reported with the sublayer where they first appear.

Example::

    import tl_dynamics as tld
    model = tld.models.load_model()                     # SmolLM2-135M, offline
    dyn = tld.collect(model, tld.data.python_docs()[:200], batch_size=16)
    dyn.resid.shape, dyn.labels[:3]                     # (200, 60, 576), ("0_pre", ...)
    control = tld.collect(model, tld.data.python_docs()[:200], shuffle=True, seed=0)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from tl_dynamics._batching import PackedTokens, forward_trajectories, pad_token_id, pad_tokens
from tl_dynamics._checks import check_int
from tl_dynamics._repr import compact_repr
from tl_dynamics.cache import DynamicsCache, DynamicsMetadata
from tl_dynamics.errors import DynamicsInputError, InputTypeError
from tl_dynamics.hooks import (
    SITES,
    TrajectoryHook,
    check_model,
    model_name,
    trajectory_hooks,
    validate_sites,
)

__all__ = [
    "Positions",
    "CollectedBatch",
    "CollectSettings",
    "validate_texts",
    "check_eval",
    "iter_batches",
    "collect_metadata",
    "collect",
    "cache_dynamics",
]

Positions = Union[str, int, Sequence[int]]
"""``"last"`` (last real token), ``"all"`` (every token) or token indices; negative
indices count back from the last real token (``-1`` is the last)."""


@dataclass(frozen=True)
class CollectedBatch:
    """Trajectories of one forward pass.

    Attributes:
        resid: ``[row, sublayer, d_model]`` float32 on CPU.
        text_index: ``[row]`` index into the texts passed to :func:`iter_batches`.
        position: ``[row]`` token position of each row.
    """

    __repr__ = compact_repr

    resid: Float[Tensor, "row sublayer d_model"]
    text_index: Int[Tensor, " row"]
    position: Int[Tensor, " row"]


def validate_texts(texts: Any) -> list[str]:
    """Return ``texts`` as a list, or raise ``TypeError``/``ValueError`` naming the problem."""
    if isinstance(texts, str):
        raise InputTypeError("texts must be a list of strings, got a single str; wrap it: [text]")
    if isinstance(texts, Mapping):
        raise InputTypeError(
            "texts must be a list of strings, got a dict (iterating it gives its keys); "
            "pass list(texts.values()) or the list itself"
        )
    try:
        texts = list(texts)
    except TypeError as error:
        raise InputTypeError(
            f"texts must be a list of strings, got {type(texts).__name__}"
        ) from error
    if not texts:
        raise DynamicsInputError("texts is empty; pass at least one text")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputTypeError(f"texts[{i}] must be a str, got {type(text).__name__}")
        if not text.strip():
            raise DynamicsInputError(f"texts[{i}] is empty or only whitespace")
    return texts


def _validate_positions(positions: Positions) -> str | list[int]:
    if positions in ("last", "all"):
        return str(positions)
    if isinstance(positions, int) and not isinstance(positions, bool):
        return [positions]
    if isinstance(positions, Sequence) and not isinstance(positions, str) and positions:
        if all(isinstance(p, int) and not isinstance(p, bool) for p in positions):
            return list(positions)
    raise DynamicsInputError(
        f"positions must be 'last', 'all', an int or a non-empty list of ints, got {positions!r}"
    )


def _validate_fwd_hooks(fwd_hooks: Any) -> list[tuple[Any, Callable]]:
    """``fwd_hooks`` as a list of ``(hook name or name filter, hook function)`` pairs."""
    try:
        pairs = list(fwd_hooks)
    except TypeError:
        pairs = None
    if pairs is None or not all(
        isinstance(pair, tuple)
        and len(pair) == 2
        and (isinstance(pair[0], str) or callable(pair[0]))
        and callable(pair[1])
        for pair in pairs
    ):
        raise DynamicsInputError(
            "fwd_hooks must be a list of (hook name, hook function) pairs as "
            f"model.run_with_hooks takes them; got {fwd_hooks!r}"
        )
    return pairs


def _validate_subset(subset: Sequence[int] | None, n_texts: int) -> list[int]:
    if subset is None:
        return list(range(n_texts))
    indices = list(subset)
    if any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n_texts for i in indices):
        raise DynamicsInputError(f"subset must hold text indices in [0, {n_texts}), got {subset!r}")
    if len(set(indices)) != len(indices):
        raise DynamicsInputError("subset must not repeat a text index")
    return indices


def _kept_positions(length: int, positions: str | Sequence[int], text: int) -> list[int]:
    if positions == "last":
        return [length - 1]
    if positions == "all":
        return list(range(length))
    resolved = [p if p >= 0 else length + p for p in positions]
    if any(not 0 <= p < length for p in resolved):
        raise DynamicsInputError(
            f"positions {list(positions)} fall outside text {text}, which has {length} tokens"
        )
    return resolved


@dataclass(frozen=True)
class CollectSettings:
    """How trajectories are collected: the keywords of :func:`collect`, checked once.

    :func:`collect` builds one from its keywords; the on-disk path takes one whole
    (:func:`tl_dynamics.store.collect_to_store`,
    :func:`tl_dynamics.distributed.collect_distributed`).

    Attributes:
        batch_size: Texts per forward pass, >= 1.
        positions: ``"last"``, ``"all"`` or token indices (a tuple; an int becomes one).
        shuffle: The paper's control: permute each text's tokens after BOS.
        seed: Seed of the shuffle.
        include_final: Append the last block's ``resid_post`` (``"final_post"``).
        sites: ``("pre", "mid")`` or ``("pre",)``, in stream order.
        corpus: Name of the text source, recorded in the metadata.
        keep_texts: Store the texts in the metadata (and in saved files).
        progress: Show a progress bar.

    Raises:
        ValueError: any field out of its range or of the wrong type, naming it.
    """

    batch_size: int = 16
    positions: str | tuple[int, ...] = "last"
    shuffle: bool = False
    seed: int = 0
    include_final: bool = False
    sites: tuple[str, ...] = SITES
    corpus: str | None = None
    keep_texts: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch_size", check_int(self.batch_size, "batch_size"))
        object.__setattr__(self, "seed", check_int(self.seed, "seed", 0))
        for name in ("shuffle", "include_final", "keep_texts", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise DynamicsInputError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.corpus is not None and not isinstance(self.corpus, str):
            raise DynamicsInputError(f"corpus must be a str or None, got {self.corpus!r}")
        positions = _validate_positions(self.positions)
        if positions not in ("last", "all"):
            positions = tuple(positions)
        object.__setattr__(self, "positions", positions)
        object.__setattr__(self, "sites", validate_sites(self.sites))


def _check_finite(resid: Tensor, hooks: list[TrajectoryHook], text_index: Tensor, model: Any):
    finite = torch.isfinite(resid).all(dim=-1)  # [row, sublayer]
    if bool(finite.all()):
        return
    first = int((~finite).any(dim=0).nonzero()[0])
    texts = sorted({int(t) for t in text_index[~finite[:, first]]})
    dtype = str(next(iter(model.parameters())).dtype) if hasattr(model, "parameters") else "?"
    raise FloatingPointError(
        f"non-finite activations (inf/nan) first appear at sublayer {hooks[first].label!r} "
        f"({hooks[first].name}) for texts {texts[:10]} of model {model_name(model)!r} in "
        f"{dtype}; fp16 overflows easily: load the model in float32 or bfloat16"
    )


def check_eval(model: Any) -> None:
    """Raise ``ValueError`` if ``model`` is in training mode (dropout would be active)."""
    if getattr(model, "training", False):
        raise DynamicsInputError(
            f"model {model_name(model)!r} is in training mode, so dropout would make its "
            "residual stream random: call model.eval() first"
        )


def iter_batches(
    model: Any,
    texts: Sequence[str],
    settings: CollectSettings = CollectSettings(),
    *,
    subset: Sequence[int] | None = None,
    fwd_hooks: Sequence[tuple[str | Callable[[str], bool], Callable]] = (),
) -> Iterator[CollectedBatch]:
    """Yield the trajectories of ``texts`` one forward pass at a time (longest texts first).

    Arguments are those of :func:`collect` (``settings`` holding its keywords), and
    ``subset``: indices of the texts to run (default all; ``text_index`` still counts in
    ``texts``). Every text is tokenized
    either way, so a shuffled control permutes each text the same whatever the subset
    (a resumed or data-parallel run equals a whole one). Each text run appears in
    exactly one batch; rows of the same text are contiguous and in position order.
    """
    check_model(model)
    texts = validate_texts(texts)
    fwd_hooks = _validate_fwd_hooks(fwd_hooks)
    check_eval(model)
    hooks = trajectory_hooks(model, settings.sites, settings.include_final)
    tokens = PackedTokens(model, texts, shuffle=settings.shuffle, seed=settings.seed)
    for i, length in enumerate(tokens.lengths):  # a bad position fails before any pass
        _kept_positions(length, settings.positions, i)
    order = sorted(_validate_subset(subset, len(texts)), key=lambda i: -tokens.lengths[i])
    pad_id = pad_token_id(model)
    bar = tqdm(total=len(order), desc="collect", unit="text", disable=not settings.progress)
    for start in range(0, len(order), settings.batch_size):
        batch = order[start : start + settings.batch_size]
        padded, mask = pad_tokens([tokens[i] for i in batch], pad_id)
        kept_rows = {i: _kept_positions(tokens.lengths[i], settings.positions, i) for i in batch}
        batch_rows = torch.tensor([row for row, i in enumerate(batch) for _ in kept_rows[i]])
        token_rows = torch.tensor([p for i in batch for p in kept_rows[i]])
        resid, _ = forward_trajectories(
            model, padded, mask, (batch_rows, token_rows), hooks, extra_hooks=fwd_hooks
        )
        text_index = torch.tensor([i for i in batch for _ in kept_rows[i]])
        _check_finite(resid, hooks, text_index, model)
        yield CollectedBatch(resid, text_index, token_rows)
        bar.update(len(batch))
    bar.close()


def intervention_names(fwd_hooks: Sequence[tuple[Any, Callable]]) -> tuple[str, ...]:
    """``"<hook point>: <function>"`` for each ``(name or name filter, hook)`` pair, as
    :class:`DynamicsMetadata` records interventions (a filter shows as ``<filter f>``)."""

    def name(function: Any) -> str:
        function = getattr(function, "func", function)  # functools.partial
        return getattr(function, "__qualname__", type(function).__qualname__)

    return tuple(
        f"{point if isinstance(point, str) else f'<filter {name(point)}>'}: {name(hook)}"
        for point, hook in _validate_fwd_hooks(fwd_hooks)
    )


def collect_metadata(
    model: Any,
    texts: Sequence[str],
    settings: CollectSettings = CollectSettings(),
    fwd_hooks: Sequence[tuple[Any, Callable]] = (),
) -> DynamicsMetadata:
    """The :class:`DynamicsMetadata` that :func:`collect` records for these settings."""
    positions = settings.positions
    return DynamicsMetadata(
        model_name=model_name(model),
        n_layers=int(model.cfg.n_layers),
        d_model=int(model.cfg.d_model),
        positions=positions if positions in ("last", "all") else list(positions),
        sites=settings.sites,
        corpus=settings.corpus,
        shuffle=settings.shuffle,
        seed=settings.seed,
        model_dtype=str(next(iter(model.parameters())).dtype).removeprefix("torch."),
        texts=tuple(texts) if settings.keep_texts else None,
        provenance=getattr(model, "tl_dynamics_provenance", None),
        interventions=intervention_names(fwd_hooks),
    )


def collect(
    model: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 16,
    positions: Positions = "last",
    shuffle: bool = False,
    seed: int = 0,
    include_final: bool = False,
    sites: Sequence[str] = SITES,
    corpus: str | None = None,
    keep_texts: bool = True,
    progress: bool = True,
    fwd_hooks: Sequence[tuple[str | Callable[[str], bool], Callable]] = (),
) -> DynamicsCache:
    """Residual-stream trajectories of ``texts`` through ``model``.

    Args:
        model: A TransformerLens ``TransformerBridge`` (or TransformerLens 3's ``HookedTransformer``) in
            eval mode.
        texts: Non-empty texts.
        batch_size: Texts per forward pass.
        positions: ``"last"`` (the last real token of each text, the paper's choice),
            ``"all"`` (every token: whole sequences), or token indices (negative ones count
            back from the last real token). Each kept (text, position) is one sample.
        shuffle: The paper's control: permute each text's tokens after BOS.
        seed: Seed of the shuffle.
        include_final: Append the last block's ``resid_post`` (label ``"final_post"``).
        sites: ``("pre", "mid")`` for the paper's 2L sublayers; ``("pre",)`` for one point
            per layer (the only choice for parallel-attention models such as Pythia).
        corpus: Name of the text source, recorded in the metadata.
        keep_texts: Store the texts in the metadata (and in saved files).
        progress: Show a progress bar.
        fwd_hooks: Interventions of your own, as ``model.run_with_hooks`` takes them:
            ``(hook name, hook function)`` pairs (e.g. a steering vector added at a
            layer, :func:`~tl_dynamics.teleport_hook`, an ablation), active in every
            forward pass; at a hook point that is also read, they run first, so the
            trajectory holds what they wrote. The passes hold right-padded batches of
            texts sorted by length (longest first), so a hook that writes one token
            position should count from the start, or run ``batch_size=1``. Hooks already
            on the model (``with model.hooks(...)``) apply as well. The metadata records
            each pair's hook point and function name (``metadata.interventions``).

    Returns:
        A :class:`DynamicsCache` with ``resid`` of shape ``[sample, sublayer, d_model]``
        (float32, CPU), samples in text order (then position order), labels as
        ``ActivationCache.accumulated_resid(incl_mid=True)`` gives them. To stream them
        to disk instead of memory, see :func:`tl_dynamics.store.collect_to_store`.

    Raises:
        TypeError: ``model`` is no TransformerLens model, or ``texts`` are not strings.
        ValueError: empty ``texts`` or text, ``batch_size < 1``, bad ``positions`` or
            ``fwd_hooks``, a model in training mode, or a site the model lacks (parallel
            attention).
        FloatingPointError: non-finite activations, naming the sublayer.
    """
    settings = CollectSettings(
        batch_size=batch_size,
        positions=positions,
        shuffle=shuffle,
        seed=seed,
        include_final=include_final,
        sites=sites,
        corpus=corpus,
        keep_texts=keep_texts,
        progress=progress,
    )
    batches = list(iter_batches(model, texts, settings, fwd_hooks=fwd_hooks))
    resid = torch.cat([b.resid for b in batches])
    text_index = torch.cat([b.text_index for b in batches])
    position = torch.cat([b.position for b in batches])
    order = torch.argsort(text_index * (int(position.max()) + 1) + position)
    hooks = trajectory_hooks(model, settings.sites, settings.include_final)
    return DynamicsCache(
        resid=resid[order],
        labels=tuple(h.label for h in hooks),
        text_index=text_index[order],
        position=position[order],
        metadata=collect_metadata(model, texts, settings, fwd_hooks),
    )


def cache_dynamics(
    cache: Any,
    *,
    positions: int = -1,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    include_final: bool = False,
    sites: Sequence[str] = SITES,
) -> DynamicsCache:
    """A :class:`DynamicsCache` from an existing TransformerLens ``ActivationCache``.

    Registered as ``ActivationCache.dynamics``. Uses ``cache.accumulated_resid`` at token
    ``positions`` (an int; default the last). With right-padded batches pass the
    ``attention_mask`` of the run: positions then count from each row's last real token.

    Returns:
        ``[batch, sublayer, d_model]`` float32 CPU trajectories with TL's labels.
    """
    sites = tuple(s for s in SITES if s in sites)
    incl_mid = "mid" in sites
    stack, labels = cache.accumulated_resid(incl_mid=incl_mid, return_labels=True)
    if not cache.has_batch_dim:
        stack = stack.unsqueeze(1)
    stack = einops.rearrange(stack, "sublayer batch pos d_model -> batch pos sublayer d_model")
    n_batch, n_pos = stack.shape[:2]
    if attention_mask is None:
        if n_batch > 1:
            warnings.warn(
                "cache.dynamics() without attention_mask reads position "
                f"{positions} of the padded batch: rows shorter than the longest text give "
                "padding there. Pass the attention_mask of the run, or use tl_dynamics.collect",
                stacklevel=2,
            )
        lengths = torch.full((n_batch,), n_pos)
    else:
        lengths = attention_mask.to("cpu").long().sum(-1)
    token = torch.tensor([_kept_positions(int(n), [positions], b)[0] for b, n in enumerate(lengths)])
    resid = stack[torch.arange(n_batch), token.to(stack.device)].float().to("cpu")
    if not include_final:
        resid, labels = resid[:, :-1], labels[:-1]
    model = cache.model
    kept = "last" if positions == -1 else [positions]
    settings = CollectSettings(positions=kept, sites=sites, keep_texts=False)
    metadata = collect_metadata(model, [], settings)
    return DynamicsCache(resid, tuple(labels), torch.arange(n_batch), token, metadata)
