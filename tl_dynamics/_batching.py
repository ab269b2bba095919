"""Token ids, padded batches and one hooked forward pass: the batching shared by
:mod:`tl_dynamics.collect` (many texts) and :mod:`tl_dynamics.interventions` (one prompt,
many rows).

Internal: nothing here is part of the public API, and names may change.

Example::

    import tl_dynamics as tld
    from tl_dynamics._batching import pad_token_id, pad_tokens, tokenize
    model = tld.models.load_model()
    tokens = tokenize(model, ["def f(x):", "return x"])    # 1-D int64, BOS first
    batch, mask = pad_tokens(tokens, pad_token_id(model))   # right-padded, 1 on real tokens
"""

from __future__ import annotations

import functools
import warnings
from array import array
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_dynamics.data import shuffle_tokens
from tl_dynamics.errors import DynamicsInputError, InputTypeError
from tl_dynamics.hooks import StopForward, TrajectoryHook

__all__ = [
    "tokenize",
    "prompt_tokens",
    "PackedTokens",
    "pad_token_id",
    "pad_tokens",
    "forward_trajectories",
]


def tokenize(
    model: Any, texts: Sequence[str], *, shuffle: bool = False, seed: int = 0
) -> list[Int[Tensor, " pos"]]:
    """Token ids of each text as the model would see it alone (BOS as it prepends it).

    Texts longer than the model's context ``cfg.n_ctx`` are truncated to ``n_ctx``
    tokens with one warning that counts them: their first tokens, then the special tokens
    the tokenizer ends every text with (BERT's ``[SEP]``), so that a model read at its
    last token (MiniLM at ``[SEP]``) is read there whatever the text's length. With ``shuffle``, the tokens
    between the leading and trailing special tokens are permuted, reproducibly from
    ``seed`` and independently of batching.

    Returns:
        One 1-D int64 CPU tensor per text.
    """
    token_lists, truncated = [], 0
    for tokens, cut in _iter_tokens(model, texts, shuffle=shuffle, seed=seed):
        token_lists.append(tokens)
        truncated += cut
    _warn_truncated(model, truncated, len(texts))
    return token_lists


def _iter_tokens(
    model: Any, texts: Sequence[str], *, shuffle: bool, seed: int
) -> Iterator[tuple[Int[Tensor, " pos"], bool]]:
    """``(token ids, truncated)`` of each text in turn, as :func:`tokenize` makes them."""
    n_ctx = getattr(model.cfg, "n_ctx", None)
    generator = torch.Generator().manual_seed(seed)
    special_ids = list(getattr(model.tokenizer, "all_special_ids", []))
    for i, text in enumerate(texts):
        tokens = model.to_tokens(text, truncate=False)[0].to("cpu")
        if len(tokens) == 0:
            raise DynamicsInputError(f"texts[{i}] tokenizes to no tokens")
        truncated = n_ctx is not None and len(tokens) > n_ctx
        if truncated:
            tokens = _truncate(tokens, n_ctx, special_ids)
        if shuffle:
            tokens = shuffle_tokens(tokens, special_ids, generator)
        yield tokens, truncated


def _truncate(
    tokens: Int[Tensor, " pos"], n_ctx: int, special_ids: Sequence[int]
) -> Int[Tensor, " keep"]:
    """The first tokens of ``tokens`` and its trailing special tokens, ``n_ctx`` in all."""
    special = torch.isin(tokens, torch.as_tensor(special_ids, dtype=tokens.dtype))
    trailing = 0
    while trailing < min(len(tokens), n_ctx - 1) and special[len(tokens) - 1 - trailing]:
        trailing += 1
    return torch.cat([tokens[: n_ctx - trailing], tokens[len(tokens) - trailing :]])


def _warn_truncated(model: Any, truncated: int, n_texts: int) -> None:
    """One warning counting the texts cut to the model's context (stack: the caller's caller)."""
    if truncated:
        n_ctx = model.cfg.n_ctx
        warnings.warn(
            f"{truncated} of {n_texts} texts are longer than the model's context of "
            f"{n_ctx} tokens and were truncated to {n_ctx} tokens (their first ones, then "
            "the special tokens that end every text)",
            stacklevel=4,
        )


class PackedTokens:
    """The token ids of many texts in one flat int32 buffer (4 bytes a token).

    A list of one small tensor per text costs about 1.5 KiB a text (each a view that keeps
    ``to_tokens``'s ``[1, pos]`` result alive); packed, a text of 25 tokens costs 0.1 KiB,
    so a collection streamed to a store holds little more than one shard. Token ids fit
    in int32 (vocabularies have fewer than 2^31 entries); a text comes out as int64.
    """

    def __init__(self, model: Any, texts: Sequence[str], *, shuffle: bool, seed: int):
        ids, self.starts, self.lengths = array("i"), array("q"), array("q")
        truncated = 0
        for tokens, cut in _iter_tokens(model, texts, shuffle=shuffle, seed=seed):
            self.starts.append(len(ids))
            self.lengths.append(len(tokens))
            ids.extend(tokens.tolist())
            truncated += cut
        _warn_truncated(model, truncated, len(texts))
        self.flat = (
            torch.frombuffer(ids, dtype=torch.int32) if len(ids) else torch.zeros(0, dtype=torch.int32)
        )

    def __getitem__(self, i: int) -> Int[Tensor, " pos"]:
        return self.flat[self.starts[i] : self.starts[i] + self.lengths[i]].long()


def pad_token_id(model: Any) -> int:
    """The tokenizer's padding id (0 when it has none: the mask hides padding anyway)."""
    return getattr(model.tokenizer, "pad_token_id", None) or 0


def pad_tokens(
    token_lists: Sequence[Int[Tensor, " pos"]], pad_id: int
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Right-pad 1-D token tensors into a batch.

    Returns:
        ``(tokens, attention_mask)``, both ``[batch, longest]`` int64; the mask is 1 on
        real tokens and 0 on padding.
    """
    lengths = torch.tensor([len(t) for t in token_lists])
    padded = torch.full((len(token_lists), int(lengths.max())), pad_id, dtype=torch.long)
    for row, tokens in enumerate(token_lists):
        padded[row, : len(tokens)] = tokens
    mask = (torch.arange(padded.shape[1]) < lengths[:, None]).long()
    return padded, mask


def _capture(
    activation: Tensor,
    hook: Any,
    *,
    sublayer: int,
    out: Tensor,
    rows: tuple[Tensor, Tensor],
    stop: bool,
) -> None:
    out[:, sublayer] = activation[rows].float()
    if stop:
        raise StopForward


def forward_trajectories(
    model: Any,
    tokens: Int[Tensor, "batch pos"],
    attention_mask: Int[Tensor, "batch pos"],
    rows: tuple[Int[Tensor, " row"], Int[Tensor, " row"]],
    hooks: Sequence[TrajectoryHook],
    *,
    extra_hooks: Sequence[tuple[str, Any]] = (),
    return_type: str | None = None,
    forward_kwargs: Mapping[str, Any] | None = None,
) -> tuple[Float[Tensor, "row sublayer d_model"], Any]:
    """One hooked forward pass that reads the trajectory at chosen (batch, position) rows.

    Args:
        model: A TransformerLens model in eval mode.
        tokens: Right-padded token ids.
        attention_mask: 1 for real tokens, 0 for padding.
        rows: ``(batch_index, token_index)`` of each row to read, 1-D int tensors.
        hooks: The hook points to read, in depth order (see
            :func:`tl_dynamics.hooks.trajectory_hooks`).
        extra_hooks: ``(hook name, fn)`` pairs run before the readers at the same hook
            point, e.g. interventions that write the residual stream.
        return_type: Passed to the model; ``None`` stops the pass at the last read hook.
        forward_kwargs: More keyword arguments for the model's forward pass.

    Returns:
        ``(resid, output)``: ``[row, sublayer, d_model]`` float32 on CPU, and the model's
        output (``None`` when ``return_type`` is ``None``).
    """
    device = getattr(model.cfg, "device", None) or "cpu"
    out = torch.empty(len(rows[0]), len(hooks), int(model.cfg.d_model), device=device)
    rows = (rows[0].to(device), rows[1].to(device))
    readers = [
        (
            hook.name,
            functools.partial(
                _capture,
                sublayer=s,
                out=out,
                rows=rows,
                stop=return_type is None and s == len(hooks) - 1,
            ),
        )
        for s, hook in enumerate(hooks)
    ]
    output = None
    with torch.inference_mode():
        try:
            output = model.run_with_hooks(
                tokens.to(device),
                fwd_hooks=[*extra_hooks, *readers],
                attention_mask=attention_mask.to(device),
                return_type=return_type,
                **(forward_kwargs or {}),
            )
        except StopForward:
            pass
    return out.to("cpu"), output


def prompt_tokens(model: Any, prompt: Any) -> Int[Tensor, " pos"]:
    """The token ids of one prompt (:func:`tokenize`), 1-D int64; a non-string or blank
    prompt, or one the tokenizer refuses, is bad input naming the prompt."""
    if not isinstance(prompt, str):
        raise InputTypeError(f"prompt must be a str; got {type(prompt).__name__}")
    if not prompt.strip():
        raise DynamicsInputError("prompt is empty or only whitespace; pass some text")
    try:
        return tokenize(model, [prompt])[0]
    except ValueError as error:
        raise DynamicsInputError(f"prompt {prompt!r} cannot be run: {error}") from error
