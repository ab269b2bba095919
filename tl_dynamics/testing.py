"""Checks for course exercises: compare a student's answer with the library's, say what differs.

The teaching notebooks (``notebooks/``) ask students to compute the paper's measures
themselves from ``dyn.resid`` before calling the library (the ARENA manner: a stub, a
check, a hint, a solution). Each ``check_*`` function here recomputes the library's
answer from the same input and compares. On agreement it prints one line saying what
matched; on disagreement it raises :class:`AssertionError` whose message says what
differs: the type, the shape (with the axis names), or the first entry that differs,
named by sample, transition (``"3_mid -> 4_pre"``) or unit, with the expected and the
received value. Comparisons are ``torch.allclose``-style with tolerances loose enough for
float32 answers to a float64 reference (:data:`RTOL`, :data:`ATOL_FRACTION`), and NaN
where the library gives NaN (a constant unit has no correlation).

Checks (docs/paper.md, metrics 3-6 and 9):

* :func:`check_velocity`, :func:`check_cosine_similarity`: ``[sample, transition]``;
* :func:`check_unit_correlation`: ``[transition, d_model]`` Pearson r;
* :func:`check_mutual_information`: one unit, one transition, in nats (Gaussian KDE);
* :func:`check_rotations`: rotation count of one unit's mean trajectory, in turns;
* :func:`check_teleport`: the trajectory of one teleported run, ``[sublayer, d_model]``;
* :func:`check_recovery`: a teleport's normalised distance to the control, ``[run, step]``;
* :func:`check_norms`: ``[sample, sublayer]`` norms of the state;
* :func:`check_normalised_depth`: the position of every sublayer on normalised depth;
* :func:`check_transition_kinds`: ``"within"`` / ``"cross"`` of every transition;
* :func:`check_read_tokens`: the token each text is read at, as ``collect`` tokenizes it
  (optionally shuffled, as the paper's control);
* :func:`check_order_only_shuffle`: a control that permutes a text's tokens but keeps its
  first and last (the read token) in place;
* :func:`check_order_null`: a student's permutation p-value for "rises with depth",
  checked by what it must do on monotone sequences and on noise.

Checks of exercises that are not a computation:

* :func:`check_prediction`: a prediction written down (one of the choices) before the
  cell that tests it; given the outcome, it says whether the prediction matched;
* :func:`check_answer`: an answer in words about a figure, against accepted answers.

Example::

    import tl_dynamics as tld
    from tl_dynamics import testing

    model = tld.models.load_model()
    dyn = tld.collect(model, tld.data.python_docs()[:32], progress=False)
    mine = (dyn.resid[:, 1:] - dyn.resid[:, :-1]).norm(dim=-1)
    testing.check_velocity(mine, dyn)          # prints a line starting with "Passed"
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from tl_dynamics._batching import tokenize
from tl_dynamics._checks import check_int
from tl_dynamics.cache import DynamicsCache
from tl_dynamics.errors import InputTypeError
from tl_dynamics.hooks import TLModel
from tl_dynamics.interventions import DEFAULT_PROMPT, TeleportResult, teleport
from tl_dynamics.regimes import Regimes
from tl_dynamics.report.compare import normalised_depth
from tl_dynamics.metrics import (
    cosine_similarity,
    default_labels,
    mutual_information,
    norms,
    rotations,
    transition_kinds,
    unit_correlation,
    velocity,
)

RTOL = 1e-4
"""Relative tolerance: a float32 answer to a float64 reference agrees to ~1e-6; 1e-4 leaves
room for a different but correct order of operations."""
ATOL_FRACTION = 1e-5
"""Absolute tolerance as a fraction of the largest expected magnitude, so that values
near zero in a stream whose norm reaches hundreds compare on the stream's scale."""
ATOL_FLOOR = 1e-6
"""Absolute tolerance never goes below this (an all-zero expected answer)."""
PASS_MARK = "Passed"
"""First word of every success line."""

ORDER_NULL_SHUFFLES = 199
"""Shuffles :func:`check_order_null` asks for: a p-value's resolution is 1 / (1 + 199)."""
ORDER_NULL_NOISE_RUNS = 40
"""Independent noise sequences :func:`check_order_null` tests the null on."""

__all__ = [
    "ATOL_FRACTION",
    "ORDER_NULL_NOISE_RUNS",
    "ORDER_NULL_SHUFFLES",
    "RTOL",
    "check_answer",
    "check_cosine_similarity",
    "check_mutual_information",
    "check_normalised_depth",
    "check_norms",
    "check_order_null",
    "check_order_only_shuffle",
    "check_prediction",
    "check_read_tokens",
    "check_recovery",
    "check_regime_single_r2",
    "check_rotations",
    "check_teleport",
    "check_transition_kinds",
    "check_unit_correlation",
    "check_velocity",
]


def _resid_and_labels(dyn: Any) -> tuple[Tensor, list[str]]:
    """``(resid, labels)`` from a :class:`DynamicsCache` or a ``[batch, sublayer, d_model]`` tensor."""
    if isinstance(dyn, DynamicsCache):
        return dyn.resid, list(dyn.labels)
    if isinstance(dyn, Tensor) and dyn.ndim == 3:
        return dyn, default_labels(dyn.shape[1])
    got = f"a tensor of shape {tuple(dyn.shape)}" if isinstance(dyn, Tensor) else type(dyn).__name__
    raise InputTypeError(
        f"dyn must be a DynamicsCache or a [batch, sublayer, d_model] tensor; got {got}"
    )


def _as_tensor(mine: Any, what: str) -> Tensor:
    """The student's answer as a CPU float64 tensor, or an AssertionError saying what it is."""
    if isinstance(mine, np.ndarray | float | int) and not isinstance(mine, bool):
        mine = torch.as_tensor(mine)
    if not isinstance(mine, Tensor):
        raise AssertionError(
            f"{what}: expected a torch.Tensor, got {type(mine).__name__} ({mine!r:.80}). "
            "Did the function end without a `return`?"
        )
    if not (mine.is_floating_point() or mine.dtype in (torch.int32, torch.int64)):
        raise AssertionError(f"{what}: expected a floating tensor, got dtype {mine.dtype}")
    return mine.detach().to("cpu", torch.float64)


def _transition_names(labels: Sequence[str]) -> list[str]:
    return [f"{a} -> {b}" for a, b in zip(labels[:-1], labels[1:])]


def _describe(index: tuple[int, ...], dims: Sequence[str], names: dict[str, list[str]]) -> str:
    """``"sample 3, transition 5 (2_mid -> 3_pre)"`` for an index into a result."""
    parts = []
    for i, dim in zip(index, dims):
        label = names.get(dim)
        parts.append(f"{dim} {i}" + (f" ({label[i]})" if label else ""))
    return ", ".join(parts)


def _compare(
    mine: Any,
    expected: Tensor,
    *,
    what: str,
    dims: Sequence[str],
    names: dict[str, list[str]] | None = None,
    units: str = "",
) -> None:
    """Raise AssertionError unless ``mine`` matches ``expected``; print the success line."""
    names = names or {}
    got = _as_tensor(mine, what)
    expected = expected.detach().to("cpu", torch.float64)
    shape_text = f"[{', '.join(dims)}]" if dims else "a scalar"
    if got.shape != expected.shape:
        advice = (
            f" It has the right number of entries: reshape it to {tuple(expected.shape)}."
            if got.numel() == expected.numel()
            else ""
        )
        raise AssertionError(
            f"{what}: expected shape {tuple(expected.shape)} {shape_text}, "
            f"got {tuple(got.shape)}.{advice}"
        )
    nan_expected, nan_got = expected.isnan(), got.isnan()
    if not torch.equal(nan_expected, nan_got):
        where = (nan_expected ^ nan_got).nonzero()[0].tolist()
        raise AssertionError(
            f"{what}: NaN in the wrong place at {_describe(tuple(where), dims, names)}: "
            f"expected {float(expected[tuple(where)]):.6g}, got {float(got[tuple(where)]):.6g}"
        )
    finite = ~nan_expected
    scale = float(expected[finite].abs().max()) if bool(finite.any()) else 0.0
    atol = max(ATOL_FLOOR, ATOL_FRACTION * scale)
    bad = finite & ((got - expected).abs() > atol + RTOL * expected.abs())
    if bool(bad.any()):
        where = tuple(bad.nonzero()[0].tolist())
        values = f"expected {float(expected[where]):.6g}{units}, got {float(got[where]):.6g}{units}"
        if not dims:
            raise AssertionError(f"{what}: {values}")
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {expected.numel()} entries differ; first at "
            f"{_describe(where, dims, names)}: {values}"
        )
    max_diff = float((got - expected)[finite].abs().max()) if bool(finite.any()) else 0.0
    print(
        f"{PASS_MARK}: {what} matches the library "
        f"(shape {tuple(expected.shape)}, max |difference| {max_diff:.2g}{units})."
    )


def _per_transition(mine: Any, dyn: Any, metric: Any, what: str) -> None:
    resid, labels = _resid_and_labels(dyn)
    _compare(
        mine,
        metric(resid),
        what=what,
        dims=("sample", "transition"),
        names={"transition": _transition_names(labels)},
    )


def check_velocity(mine: Float[Tensor, "sample transition"], dyn: DynamicsCache | Tensor) -> None:
    """Check ``mine`` against :func:`tl_dynamics.metrics.velocity` of ``dyn`` (Fig 1F).

    ``mine``: ``[sample, transition]`` step lengths ``||h_{t+1} - h_t||_2``. Prints a success
    line, or raises AssertionError saying what differs.
    """
    _per_transition(mine, dyn, velocity, "velocity")


def check_cosine_similarity(
    mine: Float[Tensor, "sample transition"], dyn: DynamicsCache | Tensor
) -> None:
    """Check ``mine`` against :func:`tl_dynamics.metrics.cosine_similarity` (Fig 1E).

    ``mine``: ``[sample, transition]`` cosines of successive states. Prints a success line,
    or raises AssertionError saying what differs.
    """
    _per_transition(mine, dyn, cosine_similarity, "cosine similarity")


def check_unit_correlation(
    mine: Float[Tensor, "transition d_model"], dyn: DynamicsCache | Tensor
) -> None:
    """Check ``mine`` against :func:`tl_dynamics.metrics.unit_correlation` (Fig 1C).

    ``mine``: ``[transition, d_model]`` Pearson r across samples of every unit between
    sublayers ``t`` and ``t + 1`` (NaN for a unit constant over the samples). Prints a
    success line, or raises AssertionError saying what differs.
    """
    resid, labels = _resid_and_labels(dyn)
    _compare(
        mine,
        unit_correlation(resid),
        what="per-unit correlation",
        dims=("transition", "unit"),
        names={"transition": _transition_names(labels)},
    )


def _check_index(value: Any, name: str, size: int, axis: str) -> int:
    return check_int(value, name, 0, size - 1, f" ({axis})")


def check_mutual_information(
    mine: float | Tensor, dyn: DynamicsCache | Tensor, *, unit: int, transition: int
) -> None:
    """Check one unit's mutual information across one transition, in nats (Fig 1G).

    ``mine``: MI between ``resid[:, transition, unit]`` and ``resid[:, transition + 1,
    unit]`` by the paper's estimator (Gaussian KDE with Scott's bandwidth, evaluated at
    the samples, ``1e-10`` inside the logarithm), a float or a 0-dim tensor. Compared with
    :func:`tl_dynamics.metrics.mutual_information`. Prints a success line, or raises
    AssertionError saying what differs.
    """
    resid, labels = _resid_and_labels(dyn)
    unit = _check_index(unit, "unit", resid.shape[2], "d_model")
    transition = _check_index(transition, "transition", resid.shape[1] - 1, "transitions")
    pair = resid[:, transition : transition + 2, unit : unit + 1]
    expected = mutual_information(pair)[0, 0]
    name = _transition_names(labels)[transition]
    _compare(mine, expected, what=f"MI of unit {unit} across {name}", dims=(), units=" nats")


def check_rotations(mine: float | Tensor, dyn: DynamicsCache | Tensor, *, unit: int) -> None:
    """Check the signed rotation count of one unit's mean trajectory, in turns (Fig 2B).

    ``mine``: turns of the phase portrait ``(a_l, da_l/dl)`` of unit ``unit`` of the
    batch-mean trajectory (central differences, wrapped changes of tangent angle summed
    and divided by ``2 pi``), a float or a 0-dim tensor. Compared with
    :func:`tl_dynamics.metrics.rotations` (``trajectory="mean"``). Prints a success line,
    or raises AssertionError saying what differs.
    """
    resid, _ = _resid_and_labels(dyn)
    unit = _check_index(unit, "unit", resid.shape[2], "d_model")
    expected = rotations(resid[:, :, unit : unit + 1], trajectory="mean")[0]
    _compare(mine, expected, what=f"rotation count of unit {unit}", dims=(), units=" turns")


def check_teleport(
    mine: Float[Tensor, "sublayer d_model"],
    model: TLModel,
    *,
    layer: int,
    point: Float[Tensor, " d_model"],
    prompt: str = DEFAULT_PROMPT,
) -> None:
    """Check the trajectory of one teleported run against :func:`tl_dynamics.teleport`.

    ``mine``: ``[sublayer, d_model]`` residual stream at the prompt's last token, at every
    ``hook_resid_pre`` / ``hook_resid_mid`` in order, of a run in which
    ``blocks.{layer}.hook_resid_pre`` at the last token was overwritten with ``point``.
    Prints a success line, or raises AssertionError saying what differs.
    """
    if not isinstance(point, Tensor) or point.ndim != 1:
        got = f"shape {tuple(point.shape)}" if isinstance(point, Tensor) else type(point).__name__
        raise InputTypeError(f"point must be a [d_model] tensor; got {got}")
    result = teleport(model, prompt, layer=layer, points=point[None])
    _compare(
        mine,
        result.trajectories[0],
        what=f"teleported trajectory (layer {layer})",
        dims=("sublayer", "unit"),
        names={"sublayer": list(result.labels)},
    )


def check_recovery(mine: Float[Tensor, "run step"], result: TeleportResult) -> None:
    """Check a teleport's normalised distance to the control (:meth:`TeleportResult.recovery`).

    ``mine``: ``[run, step]`` distance of every run to the control at every sublayer from
    the injection on (step 0 is the injection), divided by that run's distance at the
    injection: 1 at step 0, below 1 where the run is pulled back. Prints a success line,
    or raises AssertionError saying what differs.
    """
    recovery = result.recovery()
    _compare(
        mine,
        recovery.normalised,
        what="normalised distance to the control",
        dims=("run", "step"),
        names={"step": list(recovery.labels)},
    )


def check_norms(mine: Float[Tensor, "sample sublayer"], dyn: DynamicsCache | Tensor) -> None:
    """Check ``mine`` against :func:`tl_dynamics.metrics.norms` of ``dyn``.

    ``mine``: ``[sample, sublayer]`` Euclidean norm of the state. Prints a success line,
    or raises AssertionError saying what differs.
    """
    resid, labels = _resid_and_labels(dyn)
    _compare(mine, norms(resid), what="norm of the state", dims=("sample", "sublayer"),
             names={"sublayer": labels})


def check_normalised_depth(mine: Sequence[float] | Tensor, labels: Sequence[str]) -> None:
    """Check the normalised depth of every sublayer ``labels`` names, as
    :func:`tl_dynamics.report.compare.normalised_depth` places it (``tl-dynamics compare``'s axis).

    ``mine``: one number per label, a list or a ``[sublayer]`` tensor. Prints a success line,
    or raises AssertionError naming the first sublayer that differs.
    """
    if isinstance(mine, Sequence) and not isinstance(mine, str):
        mine = torch.as_tensor([float(v) for v in mine])
    _compare(mine, torch.tensor(normalised_depth(labels), dtype=torch.float64), what="normalised depth",
             dims=("sublayer",), names={"sublayer": list(labels)})


def _as_words(value: Any, what: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise AssertionError(f"{what}: expected a list of strings, got {type(value).__name__} ({value!r:.80})")
    return [str(v) for v in value]


def _compare_words(mine: list[str], expected: list[str], what: str, item: str) -> None:
    if len(mine) != len(expected):
        raise AssertionError(f"{what}: expected {len(expected)} entries (one per {item}), got {len(mine)}")
    wrong = [i for i, (a, b) in enumerate(zip(mine, expected)) if a != b]
    if wrong:
        i = wrong[0]
        raise AssertionError(
            f"{what}: {len(wrong)} of {len(expected)} entries differ; first at {item} {i}: "
            f"expected {expected[i]!r}, got {mine[i]!r}"
        )
    print(f"{PASS_MARK}: {what} matches the library ({len(expected)} entries).")


def check_transition_kinds(mine: Sequence[str], dyn: DynamicsCache | Tensor) -> None:
    """Check the kind of every transition of ``dyn``: ``"within"`` (``l_pre -> l_mid``, across
    attention) or ``"cross"`` (``l_mid -> (l+1)_pre``, across an MLP), in order.

    Compared with :func:`tl_dynamics.metrics.transition_kinds` of the labels. Prints a
    success line, or raises AssertionError naming the first transition that differs.
    """
    _, labels = _resid_and_labels(dyn)
    _compare_words(_as_words(mine, "transition kinds"), transition_kinds(labels), "transition kinds",
                   "transition")


def check_read_tokens(
    mine: Sequence[str], model: TLModel, texts: Sequence[str], *, shuffle: bool = False, seed: int = 0
) -> None:
    """Check the token at which ``collect`` reads each text: its last token, as a string.

    The tokens are those ``collect(model, texts, shuffle=shuffle, seed=seed)`` runs (BOS
    prepended; with ``shuffle``, the paper's control, permuted after the leading special
    tokens). Prints a success line, or raises AssertionError naming the first text whose
    token differs.
    """
    expected = [model.to_str_tokens(tokens)[-1] for tokens in tokenize(model, texts, shuffle=shuffle, seed=seed)]
    what = "last tokens of the shuffled texts" if shuffle else "last tokens"
    _compare_words(_as_words(mine, what), expected, what, "text")


def _order_p_values(my_p_value: Callable[..., Any], sequences: Tensor) -> list[float]:
    """``my_p_value`` of every row, each checked to be a number in (0, 1]."""
    p_values = []
    for seed, values in enumerate(sequences):
        p = my_p_value(values.clone(), ORDER_NULL_SHUFFLES, seed)
        if isinstance(p, Tensor) and p.numel() == 1:
            p = p.item()
        if not isinstance(p, float | int) or isinstance(p, bool):
            raise AssertionError(f"order null: expected a float p-value, got {type(p).__name__} ({p!r:.80})")
        if p == 0:
            raise AssertionError(
                "order null: a p-value of 0 claims more than a finite number of shuffles can show: "
                "count the observed order as one of the orders, (1 + #{null >= observed}) / (1 + n_shuffles)"
            )
        if not 0 < p <= 1:
            raise AssertionError(f"order null: a p-value lies in (0, 1]; got {p!r}")
        p_values.append(float(p))
    return p_values


def check_order_null(my_p_value: Callable[[Tensor, int, int], float], *, length: int = 30) -> None:
    """Check a permutation test of "the values rise with their order" by what it must do.

    ``my_p_value(values, n_shuffles, seed)``: ``values`` ``[point]``, the one-sided p-value
    of the hypothesis that they rise with their position, against the null that their order
    does not matter (``n_shuffles`` random orders drawn from ``seed``, the observed order
    counted as one of them). A permutation test draws its own orders, so no single number
    can be compared; instead, on sequences of ``length`` points: a strictly rising one
    must get the smallest p-value ``n_shuffles`` allow (at most ``2 / (1 + n_shuffles)``), a
    strictly falling one a p-value above 0.9, and :data:`ORDER_NULL_NOISE_RUNS` sequences
    of iid Gaussian noise p-values spread as a uniform's (mean within [0.3, 0.7], at most a
    quarter below 0.05). Prints a success line, or raises AssertionError saying which
    property failed.
    """
    length = check_int(length, "length", 5)
    rising = torch.linspace(0, 1, length, dtype=torch.float64)
    smallest = 2 / (1 + ORDER_NULL_SHUFFLES)
    (p_rising,) = _order_p_values(my_p_value, rising[None])
    if p_rising > smallest:
        raise AssertionError(
            f"order null: a strictly rising sequence should get p <= {smallest:.3g} (no shuffle rises "
            f"more), got {p_rising:.3g}"
        )
    (p_falling,) = _order_p_values(my_p_value, rising.flip(0)[None])
    if p_falling <= 0.9:
        raise AssertionError(
            f"order null: the test is one-sided (rises with depth); a strictly falling sequence "
            f"should get p > 0.9, got {p_falling:.3g}"
        )
    noise = torch.randn(ORDER_NULL_NOISE_RUNS, length, generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64)
    p_noise = np.array(_order_p_values(my_p_value, noise))
    low = float((p_noise < 0.05).mean())
    if not 0.3 <= p_noise.mean() <= 0.7 or low > 0.25:
        raise AssertionError(
            f"order null: on iid noise p-values should be spread evenly over (0, 1]; got mean "
            f"{p_noise.mean():.3g} and {low:.0%} below 0.05"
        )
    print(
        f"{PASS_MARK}: order null: rising p = {p_rising:.3g}, falling p = {p_falling:.3g}, "
        f"{len(p_noise)} noise sequences: mean p {p_noise.mean():.2f}, {low:.0%} below 0.05."
    )


def check_order_only_shuffle(my_shuffle: Callable[[Tensor, torch.Generator], Tensor]) -> None:
    """Check a control that shuffles a text's order but not the token it is read at.

    ``my_shuffle(tokens, generator)``: ``tokens`` ``[pos]`` int64 (BOS first), returns the
    same tokens with those strictly between the first and the last permuted by
    ``generator``. Checked on texts of 2 to 40 distinct tokens: the first and last stay, the
    inner ones are a permutation of themselves, the order changes for a long text, and the
    same seed gives the same order. Prints a success line, or raises AssertionError saying
    which property failed.
    """
    for length in (2, 3, 10, 40):
        tokens = torch.arange(100, 100 + length)
        out = my_shuffle(tokens.clone(), torch.Generator().manual_seed(length))
        if not isinstance(out, Tensor) or out.shape != tokens.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise AssertionError(f"order-only shuffle: expected a tensor of shape {tuple(tokens.shape)}, got {got}")
        if out[0] != tokens[0] or out[-1] != tokens[-1]:
            raise AssertionError(
                f"order-only shuffle of {length} tokens: the first and the last token must stay; "
                f"got first {int(out[0])} (was {int(tokens[0])}), last {int(out[-1])} (was {int(tokens[-1])})"
            )
        if not torch.equal(out.sort().values, tokens):
            raise AssertionError(f"order-only shuffle of {length} tokens: not a permutation of the input tokens")
        again = my_shuffle(tokens.clone(), torch.Generator().manual_seed(length))
        if not torch.equal(out, again):
            raise AssertionError("order-only shuffle: the same generator seed must give the same order")
    if torch.equal(out, tokens):
        raise AssertionError("order-only shuffle: 40 tokens came back in their original order")
    print(f"{PASS_MARK}: order-only shuffle keeps the first and last token and permutes the rest.")


def _words(text: Any) -> str:
    """Lower case, single spaces, no surrounding quotes or final full stop."""
    return re.sub(r"\s+", " ", str(text)).strip().strip("'\"").rstrip(".").strip().lower()


def check_prediction(prediction: Any, choices: Sequence[str], *, outcome: str | None = None) -> None:
    """Check that a prediction is written down before the cell that tests it.

    ``prediction`` must be one of ``choices`` (case and surrounding spaces ignored); a
    missing one (``...``, ``None``, ``""``) or any other raises AssertionError, since a
    prediction made after seeing the outcome teaches nothing. With ``outcome`` (one of
    ``choices``, computed by the cell that tests it), prints whether the prediction
    matched; a wrong prediction is not an error, it is what the exercise is for.
    """
    options = {_words(c): c for c in choices}
    if outcome is not None and _words(outcome) not in options:
        raise InputTypeError(f"outcome must be one of {list(choices)}; got {outcome!r}")
    if prediction is None or prediction is ... or _words(prediction) not in options:
        raise AssertionError(
            f"prediction: write one of {list(choices)} in `prediction` before running on; got {prediction!r:.80}"
        )
    if outcome is None:
        print(f"{PASS_MARK}: prediction {options[_words(prediction)]!r} written down; the cell below tests it.")
    elif _words(prediction) == _words(outcome):
        print(f"{PASS_MARK}: you predicted {options[_words(prediction)]!r}, and the run agrees.")
    else:
        print(
            f"You predicted {options[_words(prediction)]!r}; the run says {outcome!r}. "
            "Read the explanation below: a wrong prediction is where the learning is."
        )


def check_answer(answer: Any, accepted: Sequence[str], *, question: str) -> None:
    """Check an answer in words against ``accepted`` answers (case, spaces, quotes and a
    final full stop ignored). Prints a success line, or raises AssertionError (an answer
    missing or not accepted; the message does not give the accepted ones away)."""
    if not isinstance(answer, str) or not _words(answer):
        raise AssertionError(f"{question}: write your answer as a string in `answer`; got {answer!r:.80}")
    if _words(answer) not in {_words(a) for a in accepted}:
        raise AssertionError(
            f"{question}: {answer!r} is not one of the accepted answers; look at the figure again "
            "(the first hint says where)"
        )
    print(f"{PASS_MARK}: {question}: {answer!r} is right.")


def check_regime_single_r2(mine: float | Tensor, result: Any) -> None:
    """Check a held-out one-step R2 of one linear system against ``result.r2_single``.

    ``result`` is a :class:`~tl_dynamics.Regimes`: the student projects every state with its
    PCA (``(x - result.mean) @ result.components.T``), fits ``z_{t+1} = A z_t + b`` by least
    squares on the training texts (``~result.heldout``) and scores the held-out ones with
    ``R2 = 1 - sum ||z_{t+1} - z_hat||^2 / sum ||z_{t+1} - mean||^2``.
    """
    if not isinstance(result, Regimes):
        raise InputTypeError(f"result must be a Regimes; got {type(result).__name__}")
    _compare(mine, torch.tensor(result.r2_single, dtype=torch.float64), what="held-out R2 of one linear system", dims=())
