"""Regimes over tokens on the offline models, with the token-shuffled control, and their cost.

For each offline model, :data:`N_TEXTS` texts of the bundled corpus are collected with
``positions="all"``; :func:`tl_dynamics.token_trajectories` keeps tokens 1..``N_TOKENS``
(after BOS) of every text long enough at the middle block's ``mid`` sublayer, and
:func:`tl_dynamics.regimes` fits an autoregressive HMM on a rank-:data:`RANK` projection,
``K`` chosen by held-out likelihood, beside the same texts with their tokens shuffled
(same ``K``). Over depth, the last token's trajectory of the same texts is fitted as well.
Prints K, held-out R2 against one linear system, the control's R2 and the seconds each
stage took (collection and fits, wall clock on this machine).

Run from the repository root::

    python benchmarks/bench_regimes.py [minilm smollm2-135m]
"""

from __future__ import annotations

import sys
import time

import torch
from _common import machine

import tl_dynamics as tld

N_TEXTS = 96
N_TOKENS = 32
RANK = 16
SEED = 0


def _line(name: str, result: tld.Regimes, seconds: float) -> str:
    control = result.control
    tail = "" if control is None else f", shuffled R2 {control.r2_heldout:.3f} (single {control.r2_single:.3f})"
    return (
        f"{name}: K={result.n_regimes}, rank {result.rank} ({result.explained_variance:.0%} of variance), "
        f"held-out R2 {result.r2_heldout:.3f} vs single {result.r2_single:.3f}{tail}; "
        f"validation nats/step {[round(v, 2) for v in result.validation_log_likelihood]}; fit {seconds:.1f} s"
    )


def run(preset: str) -> None:
    model = tld.models.load_model(preset)
    texts = tld.data.python_docs()[:N_TEXTS]
    sublayer = f"{model.cfg.n_layers // 2}_mid"
    start = time.perf_counter()
    dyn = tld.collect(model, texts, positions="all", progress=False)
    shuffled = tld.collect(model, texts, positions="all", shuffle=True, seed=SEED, progress=False)
    collected = time.perf_counter() - start
    tokens = tld.token_trajectories(dyn, sublayer, N_TOKENS)
    control = tld.token_trajectories(shuffled, sublayer, N_TOKENS)
    print(f"{preset}: collect {collected:.1f} s; {len(tokens)} texts of >= {N_TOKENS + 1} tokens at {sublayer}")
    start = time.perf_counter()
    over_tokens = tld.regimes(tokens, rank=RANK, seed=SEED, control=control)
    print(_line(f"{preset} over tokens", over_tokens, time.perf_counter() - start))
    last = tld.collect(model, texts, progress=False)
    last_shuffled = tld.collect(model, texts, shuffle=True, seed=SEED, progress=False)
    start = time.perf_counter()
    over_depth = tld.regimes(last, rank=RANK, seed=SEED, control=last_shuffled)
    print(_line(f"{preset} over depth", over_depth, time.perf_counter() - start))


if __name__ == "__main__":
    print(machine(), f"torch threads {torch.get_num_threads()}")
    for preset in sys.argv[1:] or ["minilm", "smollm2-135m"]:
        run(preset)
