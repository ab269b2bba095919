"""The report's opt-in "Regimes over tokens" stage: a switching linear system over tokens.

The report reads each text at its last token, so its trajectories run over depth. This
stage reads the other direction, as notebook ``06_regimes_over_tokens`` does: at the
sublayer in the middle of depth, the stream of token 1, token 2, ... of a text is one
trajectory (:func:`tl_dynamics.token_trajectories`), and an autoregressive hidden Markov
model (:func:`tl_dynamics.regimes`, after Carson & Reisizadeh 2025) fitted to the first
:data:`REGIMES_TEXTS` texts says whether a few linear rules taking turns forecast the
next token's state better than one, on held-out texts, beside the same fit on the
token-shuffled texts (the control: word order removed).

Cost: one more forward pass over those texts in each condition with every position kept
in memory (``texts x tokens x sublayers x d_model`` float32, about 0.6 GB for 64 texts of
SmolLM2-135M; one condition at a time), and the ARHMM fits (``K`` chosen among
``1..MAX_REGIMES`` with EM restarts, on a rank-:data:`REGIMES_RANK` projection: seconds).

Example::

    import tl_dynamics as tld
    from tl_dynamics.report.tokens import token_regimes

    model = tld.models.load_model("minilm")
    result = token_regimes(model, tld.data.python_docs()[:64], seed=0)
    result.n_regimes, result.r2_heldout, result.r2_single, result.control.r2_heldout
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from tl_dynamics.collect import collect
from tl_dynamics.hooks import TLModel
from tl_dynamics.regimes import Regimes, regimes, token_trajectories

__all__ = ["REGIMES_TEXTS", "REGIMES_TOKENS", "REGIMES_RANK", "REGIMES_TEXT", "token_regimes"]

REGIMES_TEXTS = 64  # texts read at every token: notebook 06's number, fitted in seconds
REGIMES_TOKENS = 16  # tokens per trajectory after the first (notebook 06)
REGIMES_RANK = 8  # PCA dimensions of the fit (notebook 06; tl_dynamics.regimes: 16 by default)
REGIMES_TEXT = (  # the report section's opening words, before the fit's table
    f"<p>Trajectories over tokens: at the sublayer in the middle of depth, tokens 1 to "
    f"{REGIMES_TOKENS} of each of the first {REGIMES_TEXTS} texts (shorter texts left out); "
    "the control is the same texts with their tokens shuffled.</p>"
)


def _tokens(model: TLModel, texts: Sequence[str], shuffle: bool, seed: int, batch_size: int,
            corpus: str | None, progress: bool) -> Tensor:
    """``[text, REGIMES_TOKENS, d_model]`` trajectories over tokens at the middle sublayer."""
    dyn = collect(model, texts, batch_size=batch_size, positions="all", shuffle=shuffle, seed=seed,
                  corpus=corpus, progress=progress)
    return token_trajectories(dyn, dyn.labels[len(dyn.labels) // 2], n_tokens=REGIMES_TOKENS)


def token_regimes(
    model: TLModel,
    texts: Sequence[str],
    seed: int = 0,
    *,
    batch_size: int = 16,
    corpus: str | None = None,
    progress: bool = False,
) -> Regimes:
    """Regimes over tokens of the first :data:`REGIMES_TEXTS` texts, with the shuffled control.

    Args:
        model: A TransformerLens model in eval mode.
        texts: The report's texts; the first :data:`REGIMES_TEXTS` are read at every
            token, and those shorter than ``REGIMES_TOKENS + 1`` tokens are left out.
        seed: Seed of the token shuffle, the held-out split, the PCA and the EM restarts.
        batch_size: Texts per forward pass.
        corpus: Name of the texts' source, for the caches' metadata.
        progress: Show the forward passes' progress bars.

    Returns:
        The :class:`~tl_dynamics.Regimes` fit (``K`` chosen by held-out likelihood) with
        ``control`` the same fit on the token-shuffled texts.

    Raises:
        DynamicsInputError: fewer than 4 texts of ``REGIMES_TOKENS + 1`` tokens.
    """
    subset = list(texts[:REGIMES_TEXTS])
    original, shuffled = (
        _tokens(model, subset, shuffle, seed, batch_size, corpus, progress) for shuffle in (False, True)
    )
    return regimes(original, rank=REGIMES_RANK, seed=seed, control=shuffled)
